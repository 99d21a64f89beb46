//! What a client asks, whichever protocol it came by, and how it is validated.
//!
//! gRPC and HTTP JSON both decode into a [`CheckRequest`]; [`CheckRequest::validate`] is the
//! one place the bounds are enforced, and its errors name the field as a JSON path.

use serde::{Deserialize, Serialize};

/// Most descriptors in one request.
pub const MAX_DESCRIPTORS: usize = 64;
/// Most entries in one descriptor (the longest key sluice builds).
pub const MAX_ENTRIES: usize = sluice_core::key::MAX_ENTRIES;
/// Largest number of hits one request may add (keeps every sum far from overflow).
pub const MAX_HITS: u64 = 1 << 40;

/// "May these descriptors of `domain` pass, at `hits` units each?"
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// The configuration domain, e.g. `api`.
    pub domain: String,
    /// One or more descriptors, each checked against the rule it matches.
    pub descriptors: Vec<Descriptor>,
    /// Units each descriptor adds; absent or 0 means 1.
    #[serde(default)]
    pub hits: Option<u64>,
}

/// One descriptor: an ordered list of entries.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptor {
    /// The entries, outermost first.
    pub entries: Vec<EntryRequest>,
    /// Units this descriptor adds, overriding the request's `hits`.
    #[serde(default)]
    pub hits: Option<u64>,
}

/// One `key`/`value` entry as sent over JSON (`value` may be omitted).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EntryRequest {
    /// The entry's key.
    pub key: String,
    /// The entry's value.
    #[serde(default)]
    pub value: String,
}

/// A request that is well-formed but out of bounds, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidRequest {
    /// JSON path of the offending field, e.g. `descriptors[0].entries[1].key`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl InvalidRequest {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl CheckRequest {
    /// Checks every bound; the first violation is returned.
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        if self.domain.is_empty() {
            return Err(InvalidRequest::new("domain", "must not be empty"));
        }
        if self.descriptors.is_empty() {
            return Err(InvalidRequest::new(
                "descriptors",
                "must hold at least one descriptor",
            ));
        }
        if self.descriptors.len() > MAX_DESCRIPTORS {
            return Err(InvalidRequest::new(
                "descriptors",
                format!(
                    "at most {MAX_DESCRIPTORS} descriptors, got {}",
                    self.descriptors.len()
                ),
            ));
        }
        check_hits("hits", self.hits)?;
        for (i, descriptor) in self.descriptors.iter().enumerate() {
            let entries = &descriptor.entries;
            if entries.is_empty() {
                return Err(InvalidRequest::new(
                    format!("descriptors[{i}].entries"),
                    "must hold at least one entry",
                ));
            }
            if entries.len() > MAX_ENTRIES {
                return Err(InvalidRequest::new(
                    format!("descriptors[{i}].entries"),
                    format!("at most {MAX_ENTRIES} entries, got {}", entries.len()),
                ));
            }
            if let Some(j) = entries.iter().position(|e| e.key.is_empty()) {
                return Err(InvalidRequest::new(
                    format!("descriptors[{i}].entries[{j}].key"),
                    "must not be empty",
                ));
            }
            check_hits(&format!("descriptors[{i}].hits"), descriptor.hits)?;
        }
        Ok(())
    }

    /// Units descriptor `i` adds: its own hits, else the request's, with 0 meaning 1.
    pub fn hits_of(&self, i: usize) -> u64 {
        let own = self.descriptors.get(i).and_then(|d| d.hits);
        match own.or(self.hits) {
            None | Some(0) => 1,
            Some(n) => n,
        }
    }
}

fn check_hits(field: &str, hits: Option<u64>) -> Result<(), InvalidRequest> {
    match hits {
        Some(n) if n > MAX_HITS => Err(InvalidRequest::new(
            field,
            format!("at most {MAX_HITS}, got {n}"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> CheckRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn bounds_name_the_field() {
        for (json, field) in [
            (r#"{"domain":"","descriptors":[]}"#, "domain"),
            (r#"{"domain":"a","descriptors":[]}"#, "descriptors"),
            (
                r#"{"domain":"a","descriptors":[{"entries":[]}]}"#,
                "descriptors[0].entries",
            ),
            (
                r#"{"domain":"a","descriptors":[{"entries":[{"key":"k"}]},{"entries":[{"key":"x"},{"key":""}]}]}"#,
                "descriptors[1].entries[1].key",
            ),
            (
                r#"{"domain":"a","descriptors":[{"entries":[{"key":"k"}]}],"hits":2000000000000}"#,
                "hits",
            ),
            (
                r#"{"domain":"a","descriptors":[{"entries":[{"key":"k"}],"hits":2000000000000}]}"#,
                "descriptors[0].hits",
            ),
        ] {
            let err = request(json).validate().unwrap_err();
            assert_eq!(err.field, field, "{json}: {err}");
        }
    }

    #[test]
    fn hits_default_to_one_and_descriptors_override() {
        let r = request(
            r#"{"domain":"a","descriptors":[{"entries":[{"key":"k"}]},{"entries":[{"key":"k"}],"hits":5}],"hits":0}"#,
        );
        r.validate().unwrap();
        assert_eq!((r.hits_of(0), r.hits_of(1)), (1, 5));
    }
}
