//! Tokens: what a call may use, estimated from its JSON request, and what the upstream
//! says it used, from its JSON answer.

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

/// The completion budget assumed when a request names none: OpenAI's chat models may
/// answer at length without `max_tokens`, and an estimate that is too low costs 429s while
/// one that is too high is settled back after the answer.
pub const DEFAULT_COMPLETION_TOKENS: u64 = 1024;

/// The tokens an LLM request may use, for pacing before it is sent: its prompt (about one
/// token per 4 characters of text, plus 4 per message for the chat framing) plus its
/// completion budget (`max_completion_tokens`, `max_tokens`, or `max_output_tokens`, else
/// [`DEFAULT_COMPLETION_TOKENS`]). Understands OpenAI chat (`messages`, string or parts
/// content), completions and embeddings (`prompt`, `input`), and Anthropic messages
/// (`system`, `messages`). `None` when the body is not a JSON object.
pub fn estimate_tokens(body: &[u8]) -> Option<u64> {
    if body.len() > MAX_USAGE_BODY * 16 || !body.trim_ascii_start().starts_with(b"{") {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    let mut chars: u64 = 0;
    let mut messages: u64 = 0;
    for field in ["system", "prompt", "input", "instructions"] {
        if let Some(v) = object.get(field) {
            chars = chars.saturating_add(text_chars(v));
        }
    }
    if let Some(list) = object.get("messages").and_then(Value::as_array) {
        for message in list {
            messages += 1;
            let content = message.get("content").unwrap_or(&Value::Null);
            chars = chars.saturating_add(text_chars(content));
        }
    }
    let completion = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|name| object.get(*name).and_then(Value::as_u64))
        .unwrap_or(DEFAULT_COMPLETION_TOKENS);
    let prompt = chars.div_ceil(4).saturating_add(messages.saturating_mul(4));
    Some(prompt.saturating_add(completion))
}

/// The characters of text in a JSON value: a string, or the strings inside arrays and
/// objects (content parts, `{"type":"text","text":…}`), bounded in depth.
fn text_chars(value: &Value) -> u64 {
    fn walk(value: &Value, depth: u8) -> u64 {
        match value {
            Value::String(s) => s.chars().count() as u64,
            Value::Array(items) if depth < 8 => items
                .iter()
                .map(|v| walk(v, depth + 1))
                .fold(0, u64::saturating_add),
            Value::Object(fields) if depth < 8 => fields
                .iter()
                .filter(|(k, _)| matches!(k.as_str(), "text" | "content" | "input"))
                .map(|(_, v)| walk(v, depth + 1))
                .fold(0, u64::saturating_add),
            _ => 0,
        }
    }
    walk(value, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_chat_requests() {
        let chat = br#"{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello there, sluice!"}],"max_tokens":100}"#;
        // 9 + 20 characters → 8 tokens, 2 messages → 8 more, 100 to answer.
        assert_eq!(estimate_tokens(chat), Some(116));
        let parts = br#"{"messages":[{"role":"user","content":[{"type":"text","text":"abcdefgh"},{"type":"image_url","image_url":{"url":"http://x"}}]}],"max_completion_tokens":10}"#;
        assert_eq!(estimate_tokens(parts), Some(2 + 4 + 10));
        let anthropic =
            br#"{"system":"abcd","messages":[{"role":"user","content":"abcd"}],"max_tokens":5}"#;
        assert_eq!(estimate_tokens(anthropic), Some(2 + 4 + 5));
        let embeddings = br#"{"input":["abcd","efgh"]}"#;
        assert_eq!(
            estimate_tokens(embeddings),
            Some(2 + DEFAULT_COMPLETION_TOKENS)
        );
        assert_eq!(estimate_tokens(b"[]"), None);
        assert_eq!(estimate_tokens(b"nope"), None);
    }

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
            let _ = estimate_tokens(&body);
        }
    }
}
