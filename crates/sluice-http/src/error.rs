//! The one error type of this crate.

/// Why a header value could not be encoded or parsed. Every variant names the header and
/// the part at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The value does not follow the header's grammar.
    #[error("invalid {header} header: {reason} at `{part}`")]
    Malformed {
        /// The header's name, e.g. `RateLimit-Policy`.
        header: &'static str,
        /// The piece of the value at fault (the rest of the value from the fault on, or the
        /// whole list item), at most [`MAX_PART_LEN`](crate::MAX_PART_LEN) bytes.
        part: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A list item lacks a parameter this crate needs.
    #[error("invalid {header} header: item `{item}` has no `{param}` parameter")]
    MissingParameter {
        /// The header's name.
        header: &'static str,
        /// The whole list item.
        item: String,
        /// The missing parameter's key, e.g. `q`.
        param: &'static str,
    },
    /// One header of a set that must come together is absent (legacy `X-RateLimit-*`).
    #[error("missing {header} header")]
    Missing {
        /// The absent header's name.
        header: &'static str,
    },
    /// A policy name cannot be written as a structured-field string.
    #[error("policy name {name:?} cannot be sent in a header: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The longest `part` an error carries, in bytes.
pub const MAX_PART_LEN: usize = 64;

/// `text` cut to at most [`MAX_PART_LEN`] bytes on a character boundary.
pub(crate) fn part(text: &str) -> String {
    let mut end = text.len().min(MAX_PART_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}
