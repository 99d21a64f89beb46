//! Reading the usage of a streamed answer from its server-sent events, as they pass.

use serde_json::Value;

use crate::usage::{MAX_USAGE_BODY, reported_tokens};

/// Finds the tokens a server-sent event stream reports, fed its bytes in whatever pieces
/// they arrive.
///
/// It reads the `data:` lines that mention `"usage"` and keeps what the last ones say:
///
/// - OpenAI (`stream_options.include_usage`): the final chunk's top-level `usage`
///   (`total_tokens`, else `prompt_tokens + completion_tokens`);
/// - Anthropic: `message_start` carries `message.usage` (the input tokens, cache reads and
///   writes included), each `message_delta` a top-level `usage` with the output tokens so
///   far; the total is the input plus the last output.
///
/// A line longer than [`MAX_USAGE_BODY`] is skipped, so memory stays bounded whatever the
/// stream holds.
///
/// ```
/// use sluice_egress::proxy::UsageScanner;
///
/// let mut scanner = UsageScanner::default();
/// scanner.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\nda");
/// scanner.feed(b"ta: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\r\n\r\n");
/// scanner.feed(b"data: [DONE]\n\n");
/// assert_eq!(scanner.tokens(), Some(7));
/// ```
#[derive(Debug, Default)]
pub struct UsageScanner {
    /// The current line so far.
    line: Vec<u8>,
    /// The current line is longer than the bound: skip it to its end.
    skipping: bool,
    /// The last top-level usage, read as a whole (OpenAI, or a generic total).
    last: Option<u64>,
    /// Anthropic's input tokens from `message_start`.
    input: Option<u64>,
    /// Anthropic's output tokens from the last `message_delta`.
    output: Option<u64>,
}

impl UsageScanner {
    /// Reads the next bytes of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            let (part, rest) = bytes.split_at(end);
            self.push(part);
            if !self.skipping {
                let line = std::mem::take(&mut self.line);
                self.line_done(&line);
                self.line = line;
            }
            self.line.clear();
            self.skipping = false;
            bytes = &rest[1..];
        }
        self.push(bytes);
    }

    /// The tokens the stream reported so far, if it reported any.
    pub fn tokens(&self) -> Option<u64> {
        match (self.input, self.output) {
            (Some(input), Some(output)) => Some(input.saturating_add(output)),
            _ => self.last,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.skipping {
            return;
        }
        if self.line.len() + bytes.len() > MAX_USAGE_BODY {
            self.skipping = true;
            self.line.clear();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn line_done(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.trim_ascii();
        if !contains(data, b"\"usage\"") {
            return;
        }
        let Ok(value) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        if let Some(usage) = value.pointer("/message/usage") {
            // Anthropic's message_start.
            let field = |name: &str| usage.get(name).and_then(Value::as_u64).unwrap_or(0);
            self.input = Some(
                field("input_tokens")
                    .saturating_add(field("cache_creation_input_tokens"))
                    .saturating_add(field("cache_read_input_tokens")),
            );
            self.output = usage.get("output_tokens").and_then(Value::as_u64);
            return;
        }
        let Some(usage) = value.get("usage").filter(|u| u.is_object()) else {
            return;
        };
        if value.get("type").and_then(Value::as_str) == Some("message_delta") {
            if let Some(output) = usage.get("output_tokens").and_then(Value::as_u64) {
                self.output = Some(output);
            }
            return;
        }
        if let Some(tokens) = reported_tokens(data) {
            self.last = Some(tokens);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(pieces: &[&[u8]]) -> Option<u64> {
        let mut scanner = UsageScanner::default();
        for piece in pieces {
            scanner.feed(piece);
        }
        scanner.tokens()
    }

    #[test]
    fn reads_openai_final_usage_across_pieces() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n\
            data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":30,\"total_tokens\":42}}\n\n\
            data: [DONE]\n\n";
        assert_eq!(scan(&[stream]), Some(42));
        // Cut anywhere, byte by byte.
        let pieces: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(scan(&pieces), Some(42));
        let pieces: Vec<&[u8]> = stream.chunks(7).collect();
        assert_eq!(scan(&pieces), Some(42));
    }

    #[test]
    fn reads_anthropic_start_and_deltas() {
        let stream = b"event: message_start\n\
            data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n\
            event: content_block_delta\n\
            data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hi\"}}\n\n\
            event: message_delta\n\
            data: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":15}}\n\n";
        assert_eq!(scan(&[stream]), Some(45));
    }

    #[test]
    fn no_usage_is_none_and_long_lines_are_skipped() {
        assert_eq!(scan(&[b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n"]), None);
        assert_eq!(scan(&[b"data: {\"usage\":null}\n\n"]), None);
        let mut long = b"data: {\"usage\":{\"total_tokens\":1},\"pad\":\"".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_USAGE_BODY));
        long.extend_from_slice(b"\"}\n\ndata: {\"usage\":{\"total_tokens\":9}}\n\n");
        assert_eq!(scan(&[&long]), Some(9));
    }
}
