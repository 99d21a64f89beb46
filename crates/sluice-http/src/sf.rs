//! A minimal RFC 8941 structured-field List parser, and the sf-string serialiser.
//!
//! It parses every bare item type except inner lists (integers, decimals, strings, tokens,
//! byte sequences, booleans), so that unknown parameters of any type can be skipped, and
//! keeps only the values this crate reads.

/// A bare item. Decimals and byte sequences are recognised but their values are not kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Bare {
    Integer(i64),
    Decimal,
    String(String),
    Token(String),
    Bytes,
    Bool(bool),
}

/// One list member: a bare item with its parameters, and where it sits in the input.
#[derive(Clone, Debug)]
pub(crate) struct Item {
    pub(crate) bare: Bare,
    pub(crate) params: Vec<(String, Bare)>,
    /// The item's text (bare item and parameters).
    pub(crate) text: String,
}

impl Item {
    /// The value of parameter `key`, if present.
    pub(crate) fn param(&self, key: &str) -> Option<&Bare> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Where and why parsing stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SfError {
    /// The rest of the input from the fault on.
    pub(crate) rest: String,
    pub(crate) reason: &'static str,
}

/// The largest sf-integer (15 digits).
pub const SF_INTEGER_MAX: u64 = 999_999_999_999_999;

/// Parses a List (RFC 8941 §4.2.1). Leading and trailing spaces are ignored; an empty
/// input is an empty list.
pub(crate) fn parse_list(input: &str) -> Result<Vec<Item>, SfError> {
    let mut p = Parser {
        s: input.trim_matches(' '),
        pos: 0,
    };
    let mut items = Vec::new();
    while p.peek().is_some() {
        let start = p.pos;
        let bare = p.bare_or_inner()?;
        let params = p.params()?;
        let text = p.s.get(start..p.pos).unwrap_or_default().to_owned();
        items.push(Item { bare, params, text });
        p.skip_ows();
        match p.peek() {
            None => break,
            Some(b',') => p.pos += 1,
            Some(_) => return Err(p.err("expected ',' between items")),
        }
        p.skip_ows();
        if p.peek().is_none() {
            return Err(p.err("trailing ',' after the last item"));
        }
    }
    Ok(items)
}

/// Appends `value` as an sf-string: quoted, with `"` and `\` escaped.
pub(crate) fn write_string(out: &mut String, value: &str) -> Result<(), &'static str> {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            c if c.is_ascii_control() => return Err("contains a control character"),
            _ => return Err("contains a non-ASCII character"),
        }
    }
    out.push('"');
    Ok(())
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn err(&self, reason: &'static str) -> SfError {
        let mut at = self.pos.min(self.s.len());
        while !self.s.is_char_boundary(at) {
            at -= 1;
        }
        SfError {
            rest: self.s.get(at..).unwrap_or_default().to_owned(),
            reason,
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn bare_or_inner(&mut self) -> Result<Bare, SfError> {
        if self.peek() == Some(b'(') {
            return Err(self.err("inner lists are not supported"));
        }
        self.bare()
    }

    fn bare(&mut self) -> Result<Bare, SfError> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'"') => self.string(),
            Some(b'*' | b'a'..=b'z' | b'A'..=b'Z') => Ok(self.token()),
            Some(b':') => self.bytes(),
            Some(b'?') => self.boolean(),
            None => Err(self.err("expected an item")),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn number(&mut self) -> Result<Bare, SfError> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let mut value: i64 = 0;
        let mut digits = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            if digits == 15 {
                self.pos = start;
                return Err(self.err("integer longer than 15 digits"));
            }
            value = value * 10 + i64::from(d - b'0');
            digits += 1;
            self.pos += 1;
        }
        if digits == 0 {
            return Err(self.err("expected a digit"));
        }
        if self.peek() != Some(b'.') {
            return Ok(Bare::Integer(if negative { -value } else { value }));
        }
        if digits > 12 {
            self.pos = start;
            return Err(self.err("decimal with more than 12 integer digits"));
        }
        self.pos += 1;
        let mut fraction = 0;
        while let Some(b'0'..=b'9') = self.peek() {
            fraction += 1;
            self.pos += 1;
        }
        if !(1..=3).contains(&fraction) {
            self.pos = start;
            return Err(self.err("decimal needs 1 to 3 fractional digits"));
        }
        Ok(Bare::Decimal)
    }

    fn string(&mut self) -> Result<Bare, SfError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    self.pos = start;
                    return Err(self.err("unterminated string"));
                }
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Bare::String(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => out.push(char::from(c)),
                        _ => return Err(self.err("only \\\" and \\\\ may be escaped in a string")),
                    }
                }
                Some(c @ b' '..=b'~') => out.push(char::from(c)),
                Some(_) => return Err(self.err("control or non-ASCII character in string")),
            }
            self.pos += 1;
        }
    }

    fn token(&mut self) -> Bare {
        let start = self.pos;
        self.pos += 1;
        while let Some(c) = self.peek() {
            if !(c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&c)) {
                break;
            }
            self.pos += 1;
        }
        Bare::Token(self.s.get(start..self.pos).unwrap_or_default().to_owned())
    }

    fn bytes(&mut self) -> Result<Bare, SfError> {
        let start = self.pos;
        self.pos += 1;
        while let Some(c) = self.peek() {
            if !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=')) {
                break;
            }
            self.pos += 1;
        }
        if self.peek() != Some(b':') {
            self.pos = start;
            return Err(self.err("unterminated byte sequence"));
        }
        self.pos += 1;
        Ok(Bare::Bytes)
    }

    fn boolean(&mut self) -> Result<Bare, SfError> {
        self.pos += 1;
        let value = match self.peek() {
            Some(b'0') => false,
            Some(b'1') => true,
            _ => return Err(self.err("a boolean is ?0 or ?1")),
        };
        self.pos += 1;
        Ok(Bare::Bool(value))
    }

    fn params(&mut self) -> Result<Vec<(String, Bare)>, SfError> {
        let mut params: Vec<(String, Bare)> = Vec::new();
        while self.peek() == Some(b';') {
            self.pos += 1;
            while self.peek() == Some(b' ') {
                self.pos += 1;
            }
            let key = self.key()?;
            let value = if self.peek() == Some(b'=') {
                self.pos += 1;
                self.bare()?
            } else {
                Bare::Bool(true)
            };
            match params.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => params.push((key, value)),
            }
        }
        Ok(params)
    }

    fn key(&mut self) -> Result<String, SfError> {
        let start = self.pos;
        if !matches!(self.peek(), Some(b'a'..=b'z' | b'*')) {
            return Err(self.err("expected a parameter key (lowercase letter or '*')"));
        }
        self.pos += 1;
        while let Some(b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*') = self.peek() {
            self.pos += 1;
        }
        Ok(self.s.get(start..self.pos).unwrap_or_default().to_owned())
    }
}
