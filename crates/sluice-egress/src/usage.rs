//! How many tokens an upstream says a call used, from its JSON answer.

use serde_json::Value;

/// The most of a body read for its usage: an LLM answer's `usage` comes at the top level
/// of a body of a few KiB; a larger body is not worth parsing on every call.
pub const MAX_USAGE_BODY: usize = 1 << 20;

/// The tokens a JSON answer reports in its `usage` object: `total_tokens` (OpenAI), else
/// `prompt_tokens + completion_tokens`, else `input_tokens + output_tokens` (Anthropic,
/// including cache reads and writes when reported). `None` when the body is not JSON, is
/// larger than [`MAX_USAGE_BODY`], or reports no usage.
pub fn reported_tokens(body: &[u8]) -> Option<u64> {
    if body.len() > MAX_USAGE_BODY || !body.trim_ascii_start().starts_with(b"{") {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    let usage = value.get("usage")?;
    let field = |name: &str| usage.get(name).and_then(Value::as_u64);
    if let Some(total) = field("total_tokens") {
        return Some(total);
    }
    let sum = |names: &[&str]| -> Option<u64> {
        let parts: Vec<u64> = names.iter().filter_map(|n| field(n)).collect();
        (!parts.is_empty()).then(|| parts.iter().fold(0u64, |a, b| a.saturating_add(*b)))
    };
    sum(&["prompt_tokens", "completion_tokens"]).or_else(|| {
        sum(&[
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        ])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_openai_and_anthropic_usage() {
        let openai =
            br#"{"id":"x","usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}"#;
        assert_eq!(reported_tokens(openai), Some(42));
        let no_total = br#"{"usage":{"prompt_tokens":12,"completion_tokens":30}}"#;
        assert_eq!(reported_tokens(no_total), Some(42));
        let anthropic =
            br#"{"usage":{"input_tokens":10,"output_tokens":5,"cache_read_input_tokens":100}}"#;
        assert_eq!(reported_tokens(anthropic), Some(115));
    }

    #[test]
    fn anything_else_reports_nothing() {
        for body in [
            &b""[..],
            b"not json",
            b"[1,2]",
            br#"{"usage":null}"#,
            br#"{"usage":{"total_tokens":-1}}"#,
            br#"{"choices":[]}"#,
            b"{\"usage\":{\"total_tokens\":",
        ] {
            assert_eq!(
                reported_tokens(body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = reported_tokens(&body);
        }
    }
}
