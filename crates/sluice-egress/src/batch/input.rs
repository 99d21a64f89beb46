//! The input file: a pass to count and hash it, then a streaming reader of its lines.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::BatchError;
use super::ids::IdKey;
use crate::Priority;
use crate::job::parse_priority;

/// The longest id accepted, in bytes.
pub(crate) const MAX_ID: usize = 1024;

/// What one pass over the input found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Lines that are not blank.
    pub(crate) items: u64,
    /// SHA-256 of the whole file, lowercase hex.
    pub(crate) digest: String,
}

/// Counts the input's non-blank lines and hashes it.
pub(crate) fn scan(path: &Path) -> Result<Scan, BatchError> {
    let error = |e| BatchError::io("cannot read the input file", path, e);
    let mut file = File::open(path).map_err(error)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0_u8; 1 << 16];
    let mut items = 0_u64;
    let mut blank = true;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(error(e)),
        };
        let chunk = &buf[..n];
        hasher.update(chunk);
        for &byte in chunk {
            if byte == b'\n' {
                if !blank {
                    items += 1;
                }
                blank = true;
            } else if !byte.is_ascii_whitespace() {
                blank = false;
            }
        }
    }
    if !blank {
        items += 1;
    }
    Ok(Scan {
        items,
        digest: hex(&hasher.finalize()),
    })
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    text
}

/// One request of the input.
#[derive(Debug)]
pub(crate) struct Item {
    /// Its line, from 1.
    pub(crate) line: u64,
    pub(crate) id: String,
    pub(crate) method: Method,
    /// Starts with `/`; appended to the base URL.
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    /// Compact JSON, or empty.
    pub(crate) body: Bytes,
    pub(crate) priority: Priority,
}

/// A line that is not a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub(crate) line: u64,
    /// The id, when the line had a usable one.
    pub(crate) id: Option<String>,
    /// Why; never a header value.
    pub(crate) reason: String,
}

/// A line of the input.
#[derive(Debug)]
pub(crate) enum Line {
    Item(Box<Item>),
    Invalid(Invalid),
}

/// Reads the input a line at a time, remembering the ids seen to refuse repeats.
pub(crate) struct Reader {
    file: BufReader<File>,
    path: PathBuf,
    line: u64,
    max_line: usize,
    /// The first line of each id seen, by the id's key.
    seen: HashMap<IdKey, u64>,
    buf: Vec<u8>,
}

impl Reader {
    /// Opens the input.
    pub(crate) fn open(path: &Path, max_line: usize) -> Result<Self, BatchError> {
        let file =
            File::open(path).map_err(|e| BatchError::io("cannot read the input file", path, e))?;
        Ok(Self {
            file: BufReader::with_capacity(1 << 16, file),
            path: path.to_owned(),
            line: 0,
            max_line,
            seen: HashMap::new(),
            buf: Vec::new(),
        })
    }

    /// The next line that is not blank, or `None` at the end.
    pub(crate) fn next_line(&mut self) -> Result<Option<Line>, BatchError> {
        loop {
            self.buf.clear();
            let Some(too_long) = self.read_line()? else {
                return Ok(None);
            };
            self.line += 1;
            let line = self.line;
            if too_long {
                return Ok(Some(Line::Invalid(Invalid {
                    line,
                    id: None,
                    reason: format!("longer than {} bytes", self.max_line),
                })));
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(match self.parse(line) {
                Ok(item) => Line::Item(Box::new(item)),
                Err(invalid) => Line::Invalid(invalid),
            }));
        }
    }

    /// Reads one line into `buf` (without its newline), keeping at most `max_line` bytes:
    /// `Some(true)` when it was longer, `None` at the end of the file.
    fn read_line(&mut self) -> Result<Option<bool>, BatchError> {
        let mut too_long = false;
        let mut any = false;
        loop {
            let available = match self.file.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BatchError::io("cannot read the input file", &self.path, e)),
            };
            if available.is_empty() {
                return Ok(any.then_some(too_long));
            }
            any = true;
            let (chunk, end) = match available.iter().position(|&b| b == b'\n') {
                Some(at) => (&available[..at], Some(at + 1)),
                None => (available, None),
            };
            if !too_long {
                if self.buf.len() + chunk.len() > self.max_line {
                    too_long = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(chunk);
                }
            }
            let used = end.unwrap_or(available.len());
            self.file.consume(used);
            if end.is_some() {
                return Ok(Some(too_long));
            }
        }
    }

    fn parse(&mut self, line: u64) -> Result<Item, Invalid> {
        let invalid = |id: Option<&str>, reason: String| Invalid {
            line,
            id: id.map(str::to_owned),
            reason,
        };
        let value: Value = serde_json::from_slice(&self.buf)
            .map_err(|e| invalid(None, format!("not valid JSON: {e}")))?;
        let Value::Object(mut object) = value else {
            return Err(invalid(None, "not a JSON object".to_owned()));
        };
        let id = match take(&mut object, "id", "custom_id") {
            None => return Err(invalid(None, "no id (\"id\" is required)".to_owned())),
            Some(Value::String(id)) if id.is_empty() => {
                return Err(invalid(None, "id: empty".to_owned()));
            }
            Some(Value::String(id)) if id.len() > MAX_ID => {
                return Err(invalid(None, format!("id: longer than {MAX_ID} bytes")));
            }
            Some(Value::String(id)) => id,
            Some(other) => {
                return Err(invalid(
                    None,
                    format!("id: expected a string, got {}", kind(&other)),
                ));
            }
        };
        match self.seen.entry(IdKey::of(&id)) {
            Entry::Occupied(first) => {
                return Err(invalid(
                    Some(&id),
                    format!("duplicate id (first on line {})", first.get()),
                ));
            }
            Entry::Vacant(slot) => {
                slot.insert(line);
            }
        }
        let id = id.as_str();
        let fail = |reason: String| invalid(Some(id), reason);

        let method = match take(&mut object, "method", "method") {
            None | Some(Value::Null) => Method::POST,
            Some(Value::String(text)) => Method::from_bytes(text.trim().as_bytes())
                .map_err(|_| fail(format!("method: {text:?} is not an HTTP method")))?,
            Some(other) => {
                return Err(fail(format!(
                    "method: expected a string, got {}",
                    kind(&other)
                )));
            }
        };
        let path = match take(&mut object, "path", "url") {
            Some(Value::String(path)) if path.starts_with('/') => path,
            Some(Value::String(path)) => {
                return Err(fail(format!("path: {path:?} must start with /")));
            }
            None | Some(Value::Null) => {
                return Err(fail("no path (\"path\" is required)".to_owned()));
            }
            Some(other) => {
                return Err(fail(format!(
                    "path: expected a string, got {}",
                    kind(&other)
                )));
            }
        };
        if path.parse::<http::uri::PathAndQuery>().is_err() {
            return Err(fail(format!("path: {path:?} is not a valid URL path")));
        }
        let headers = match take(&mut object, "headers", "headers") {
            None | Some(Value::Null) => HeaderMap::new(),
            Some(Value::Object(map)) => headers(map).map_err(fail)?,
            Some(other) => {
                return Err(fail(format!(
                    "headers: expected an object, got {}",
                    kind(&other)
                )));
            }
        };
        let body = match take(&mut object, "body", "body") {
            None | Some(Value::Null) => Bytes::new(),
            Some(body) => {
                Bytes::from(serde_json::to_vec(&body).map_err(|e| fail(format!("body: {e}")))?)
            }
        };
        let priority = match take(&mut object, "priority", "priority") {
            None | Some(Value::Null) => Priority::BATCH,
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .map(Priority)
                .ok_or_else(|| fail(format!("priority: {n} is not a number from 0 to 255")))?,
            Some(Value::String(text)) => parse_priority(&text).ok_or_else(|| {
                fail(format!(
                    "priority: {text:?} is not batch, interactive or a number from 0 to 255"
                ))
            })?,
            Some(other) => {
                return Err(fail(format!(
                    "priority: expected a number, got {}",
                    kind(&other)
                )));
            }
        };
        Ok(Item {
            line,
            id: id.to_owned(),
            method,
            path,
            headers,
            body,
            priority,
        })
    }
}

/// Removes `name` (or else `alias`) from `object`.
fn take(object: &mut Map<String, Value>, name: &str, alias: &str) -> Option<Value> {
    object.remove(name).or_else(|| object.remove(alias))
}

/// The item's headers. Errors name the header, never its value.
fn headers(map: Map<String, Value>) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::with_capacity(map.len());
    for (name, value) in map {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("headers: {name:?} is not a header name"))?;
        let Value::String(text) = value else {
            return Err(format!(
                "headers.{name}: expected a string, got {}",
                kind(&value)
            ));
        };
        let mut value = HeaderValue::from_str(&text)
            .map_err(|_| format!("headers.{name}: the value is not a valid header value"))?;
        // Debug output then shows "Sensitive" instead of the value (API keys).
        value.set_sensitive(true);
        headers.append(header, value);
    }
    Ok(headers)
}

/// The JSON type of a value, for errors.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
