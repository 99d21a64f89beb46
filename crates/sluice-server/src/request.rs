//! What a client asks, whichever protocol it came by, and how it is validated.
//!
//! gRPC and HTTP JSON both decode into a [`CheckRequest`], the `/v1/check` body of
//! [`sluice_http::check`] (HTTP decodes it as is, strictly; gRPC translates Envoy's
//! message into it); [`validate`] is the one place the bounds are enforced, and its errors
//! name the field as a JSON path.

use sluice_http::check;

/// Most descriptors in one request.
pub(crate) const MAX_DESCRIPTORS: usize = 64;
/// Most entries in one descriptor (the longest key sluice builds).
pub(crate) const MAX_ENTRIES: usize = sluice_core::key::MAX_ENTRIES;
/// Largest number of hits one request may add (keeps every sum far from overflow).
pub(crate) const MAX_HITS: u64 = 1 << 40;

/// "May these descriptors of `domain` pass, at `hits` units each?", with owned text.
pub type CheckRequest = check::CheckRequest<'static>;

/// One descriptor: an ordered list of entries.
pub type Descriptor = check::Descriptor<'static>;

/// One `key`/`value` entry as sent over JSON (`value` may be omitted).
pub type EntryRequest = check::Entry<'static>;

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

/// Checks every bound of `request`; the first violation is returned.
pub(crate) fn validate(request: &CheckRequest) -> Result<(), InvalidRequest> {
    if request.domain.is_empty() {
        return Err(InvalidRequest::new("domain", "must not be empty"));
    }
    if request.descriptors.is_empty() {
        return Err(InvalidRequest::new(
            "descriptors",
            "must hold at least one descriptor",
        ));
    }
    if request.descriptors.len() > MAX_DESCRIPTORS {
        return Err(InvalidRequest::new(
            "descriptors",
            format!(
                "at most {MAX_DESCRIPTORS} descriptors, got {}",
                request.descriptors.len()
            ),
        ));
    }
    check_hits("hits", request.hits)?;
    for (i, descriptor) in request.descriptors.iter().enumerate() {
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
            let err = validate(&request(json)).unwrap_err();
            assert_eq!(err.field, field, "{json}: {err}");
        }
    }

    #[test]
    fn hits_default_to_one_and_descriptors_override() {
        let r = request(
            r#"{"domain":"a","descriptors":[{"entries":[{"key":"k"}]},{"entries":[{"key":"k"}],"hits":5}],"hits":0}"#,
        );
        validate(&r).unwrap();
        assert_eq!((r.hits_of(0), r.hits_of(1)), (1, 5));
    }
}
