//! What the fake upstream reads and writes: OpenAI's request and response bodies.

use serde_json::{Value, json};

/// Tokens charged per message on top of its text, as OpenAI's own estimate adds a few
/// tokens of framing per message.
pub(super) const TOKENS_PER_MESSAGE: u64 = 4;
/// Characters per token in the estimate (OpenAI's rule of thumb for English text).
pub(super) const CHARS_PER_TOKEN: u64 = 4;
/// Completion tokens when a request gives no `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u64 = 16;
/// The model [`chat_body`](super::chat_body) asks for and `GET /v1/models` lists.
pub const FAKE_MODEL: &str = "gpt-fake";

/// The fake upstream's estimate of a chat completion request's prompt tokens:
/// `ceil(C / 4) + 4 × M`, where `M` is the number of entries in `messages` and `C` the
/// number of characters (Unicode scalar values) of their text: each `content` string, or
/// the `text` of each part when `content` is an array of parts. Anything else (a missing
/// `messages`, a `null` content) counts no characters.
///
/// Deterministic, so a test can compute what a request will cost:
///
/// ```
/// use sluice_testkit::upstream::{chat_body, prompt_tokens};
///
/// // 12 characters: ceil(12 / 4) + 4 for the one message.
/// assert_eq!(prompt_tokens(&chat_body("Hello, world", None)), 7);
/// ```
pub fn prompt_tokens(body: &Value) -> u64 {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return 0;
    };
    let chars: u64 = messages
        .iter()
        .map(|message| match message.get("content") {
            Some(Value::String(text)) => count_chars(text),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .map(count_chars)
                .sum(),
            _ => 0,
        })
        .sum();
    let count = u64::try_from(messages.len()).unwrap_or(u64::MAX);
    chars
        .div_ceil(CHARS_PER_TOKEN)
        .saturating_add(count.saturating_mul(TOKENS_PER_MESSAGE))
}

fn count_chars(text: &str) -> u64 {
    u64::try_from(text.chars().count()).unwrap_or(u64::MAX)
}

/// A chat completion request the fake accepts.
#[derive(Debug)]
pub(super) struct Chat {
    pub(super) model: String,
    pub(super) prompt_tokens: u64,
    /// `max_completion_tokens`, else `max_tokens`, else [`DEFAULT_MAX_TOKENS`].
    pub(super) max_tokens: u64,
}

/// Why a request body was refused: an OpenAI `invalid_request_error`.
#[derive(Debug)]
pub(super) struct Invalid {
    pub(super) message: String,
    pub(super) param: Option<&'static str>,
}

impl Invalid {
    fn new(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self {
            message: message.into(),
            param,
        }
    }
}

/// Reads a chat completion request body.
pub(super) fn parse_chat(bytes: &[u8]) -> Result<Chat, Invalid> {
    let body: Value = serde_json::from_slice(bytes).map_err(|err| {
        Invalid::new(
            format!(
                "We could not parse the JSON body of your request. (HINT: This likely means \
                 you aren't using your HTTP library correctly. The OpenAI API expects a JSON \
                 payload, but what was sent was not valid JSON.) {err}"
            ),
            None,
        )
    })?;
    if !body.is_object() {
        return Err(Invalid::new(
            "The request body must be a JSON object.",
            None,
        ));
    }
    let model = match body.get("model") {
        Some(Value::String(model)) => model.clone(),
        _ => {
            return Err(Invalid::new(
                "you must provide a model parameter",
                Some("model"),
            ));
        }
    };
    if !body.get("messages").is_some_and(Value::is_array) {
        return Err(Invalid::new(
            "'messages' is a required property and must be an array",
            Some("messages"),
        ));
    }
    let mut max_tokens = DEFAULT_MAX_TOKENS;
    for param in ["max_tokens", "max_completion_tokens"] {
        match body.get(param) {
            None | Some(Value::Null) => {}
            Some(value) => {
                max_tokens = value.as_u64().ok_or_else(|| {
                    Invalid::new(
                        format!("{value} is not a valid non-negative integer - '{param}'"),
                        Some(param),
                    )
                })?;
            }
        }
    }
    Ok(Chat {
        model,
        prompt_tokens: prompt_tokens(&body),
        max_tokens,
    })
}

/// OpenAI's error body.
pub(super) fn error_body(
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Value {
    json!({
        "error": {
            "message": message,
            "type": kind,
            "param": param,
            "code": code,
        }
    })
}

/// A chat completion's 200 body.
pub(super) fn completion_body(
    id: u64,
    created_secs: u64,
    model: &str,
    prompt_tokens: u64,
    completion_tokens: u64,
) -> Value {
    json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": created_secs,
        "model": model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": completion_text(completion_tokens) },
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens.saturating_add(completion_tokens),
        },
    })
}

/// `tokens` four-character words (`"tok "`), the last without its space.
fn completion_text(tokens: u64) -> String {
    let words = usize::try_from(tokens).unwrap_or(usize::MAX).min(1 << 20);
    let mut text = "tok ".repeat(words);
    text.pop();
    text
}

/// `GET /v1/models`.
pub(super) fn models_body() -> Value {
    json!({
        "object": "list",
        "data": [{
            "id": FAKE_MODEL,
            "object": "model",
            "created": 0,
            "owned_by": "sluice-testkit",
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_tokens_counts_characters_and_messages() {
        let body = json!({
            "messages": [
                {"role": "system", "content": "abcde"},
                {"role": "user", "content": [{"type": "text", "text": "fgh"}, {"type": "image_url"}]},
                {"role": "assistant", "content": null},
            ]
        });
        // 8 characters -> 2 tokens, plus 3 × 4.
        assert_eq!(prompt_tokens(&body), 14);
        assert_eq!(prompt_tokens(&json!({"messages": [{"content": "é"}]})), 5);
        assert_eq!(prompt_tokens(&json!({})), 0);
    }

    #[test]
    fn parse_reads_max_tokens_and_refuses_bad_bodies() {
        let chat =
            parse_chat(br#"{"model":"m","messages":[],"max_completion_tokens":7}"#).expect("valid");
        assert_eq!(
            (chat.model.as_str(), chat.prompt_tokens, chat.max_tokens),
            ("m", 0, 7)
        );
        let chat = parse_chat(br#"{"model":"m","messages":[]}"#).expect("valid");
        assert_eq!(chat.max_tokens, DEFAULT_MAX_TOKENS);
        assert!(parse_chat(b"{").is_err());
        assert!(parse_chat(b"[]").is_err());
        assert_eq!(
            parse_chat(br#"{"messages":[]}"#)
                .err()
                .and_then(|e| e.param),
            Some("model")
        );
        assert_eq!(
            parse_chat(br#"{"model":"m"}"#).err().and_then(|e| e.param),
            Some("messages")
        );
        assert_eq!(
            parse_chat(br#"{"model":"m","messages":[],"max_tokens":-1}"#)
                .err()
                .and_then(|e| e.param),
            Some("max_tokens")
        );
    }

    #[test]
    fn completion_text_has_one_word_per_token() {
        assert_eq!(completion_text(0), "");
        assert_eq!(completion_text(3), "tok tok tok");
    }
}
