//! Keys: a domain plus an ordered list of descriptor entries, canonicalised once.
//!
//! The canonical form is `domain|key=value|key=value`, readable in dashboards and logs.
//! Characters that would make it ambiguous (`%`, `|`, `=`, `{`, `}`, control characters)
//! are percent-encoded, and any component longer than [`MAX_COMPONENT_LEN`] bytes is
//! replaced by `#` and the first 128 bits of its SHA-256 in hex, so a client that controls a
//! value cannot make a key, or the memory behind it, grow without bound. The same input
//! gives the same key in every process and every version, which shared stores rely on.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// Longest component (domain, entry key or entry value) kept verbatim, in bytes after
/// escaping.
pub const MAX_COMPONENT_LEN: usize = 64;

/// Most descriptor entries in one key.
pub const MAX_ENTRIES: usize = 16;

/// Why a key could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The domain was empty.
    #[error("domain must not be empty")]
    EmptyDomain,
    /// More than [`MAX_ENTRIES`] descriptor entries.
    #[error("a key has at most {MAX_ENTRIES} descriptor entries, got {0}")]
    TooManyEntries(usize),
    /// A descriptor entry's key was empty.
    #[error("descriptor entry {index} has an empty key")]
    EmptyEntryKey {
        /// Position of the entry.
        index: usize,
    },
}

/// A canonical limiter key. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    canonical: Arc<str>,
}

impl Key {
    /// The key for `domain` and its descriptor `entries`, in order.
    pub fn new<K, V>(
        domain: &str,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, KeyError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        if domain.is_empty() {
            return Err(KeyError::EmptyDomain);
        }
        let mut canonical = String::with_capacity(domain.len() + 32);
        push_component(&mut canonical, domain);
        let mut count = 0;
        for (index, (key, value)) in entries.into_iter().enumerate() {
            count = index + 1;
            if count > MAX_ENTRIES {
                continue; // keep counting for the error message
            }
            let key = key.as_ref();
            if key.is_empty() {
                return Err(KeyError::EmptyEntryKey { index });
            }
            canonical.push('|');
            push_component(&mut canonical, key);
            canonical.push('=');
            push_component(&mut canonical, value.as_ref());
        }
        if count > MAX_ENTRIES {
            return Err(KeyError::TooManyEntries(count));
        }
        Ok(Self {
            canonical: canonical.into(),
        })
    }

    /// A key made of one free-form name (e.g. `sluice check --key NAME`), escaped and bounded
    /// like any component.
    pub fn named(name: &str) -> Self {
        let mut canonical = String::with_capacity(name.len().min(MAX_COMPONENT_LEN));
        push_component(&mut canonical, name);
        Self {
            canonical: canonical.into(),
        }
    }

    /// The canonical form.
    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    /// The descriptor entries after the domain, as `(key, value)` pairs in order (none for
    /// a [`named`](Self::named) key).
    ///
    /// Components come back as the key holds them: escaped (`a|b` is `a%7Cb`) and bounded
    /// (a long one is `#` and a hash), not as they were given to [`new`](Self::new). That
    /// is what lets the canonical form be split again without ambiguity: a `|` or `=`
    /// inside a component is always escaped, so every `|` separates entries and the first
    /// `=` of an entry separates its key from its value: the entries are exactly those
    /// the key was built from, one for one.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut components = self.canonical.split('|');
        components.next(); // the domain
        components.map(|entry| entry.split_once('=').unwrap_or((entry, "")))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", &*self.canonical)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

fn needs_escape(c: char) -> bool {
    matches!(c, '%' | '|' | '=' | '{' | '}') || c.is_control()
}

fn push_component(out: &mut String, raw: &str) {
    // The common case (short, nothing to escape) is one copy.
    if raw.len() <= MAX_COMPONENT_LEN && !raw.chars().any(needs_escape) {
        out.push_str(raw);
        return;
    }
    let escaped_len: usize = raw
        .chars()
        .map(|c| {
            if needs_escape(c) {
                3 * c.len_utf8()
            } else {
                c.len_utf8()
            }
        })
        .sum();
    if escaped_len > MAX_COMPONENT_LEN {
        out.push('#');
        for byte in &Sha256::digest(raw.as_bytes())[..16] {
            out.push_str(&format!("{byte:02x}"));
        }
        return;
    }
    let mut buf = [0u8; 4];
    for c in raw.chars() {
        if needs_escape(c) {
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_is_readable() {
        let key = Key::new("api", [("user", "42"), ("route", "/v1/chat")]).unwrap();
        assert_eq!(key.as_str(), "api|user=42|route=/v1/chat");
    }

    #[test]
    fn separators_are_escaped_so_keys_stay_distinct() {
        let a = Key::new("api", [("a", "b|c=d")]).unwrap();
        let b = Key::new("api", [("a", "b"), ("c", "d")]).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str(), "api|a=b%7Cc%3Dd");
        assert_eq!(Key::named("{x}").as_str(), "%7Bx%7D");
    }

    #[test]
    fn long_components_are_hashed_and_bounded() {
        let long = "x".repeat(10_000);
        let key = Key::new("api", [("user", long.as_str())]).unwrap();
        assert_eq!(key.as_str().len(), "api|user=#".len() + 32);
        let again = Key::new("api", [("user", long.as_str())]).unwrap();
        assert_eq!(key, again, "hashing is stable");
        let other = Key::new("api", [("user", "y".repeat(10_000))]).unwrap();
        assert_ne!(key, other);
    }

    #[test]
    fn entries_are_the_components_after_the_domain() {
        let key = Key::new("api", [("user", "a|b=c"), ("route", "/v1")]).unwrap();
        let entries: Vec<(&str, &str)> = key.entries().collect();
        assert_eq!(entries, [("user", "a%7Cb%3Dc"), ("route", "/v1")]);
        assert_eq!(Key::named("a|b").entries().count(), 0);
        let none: [(&str, &str); 0] = [];
        assert_eq!(Key::new("api", none).unwrap().entries().count(), 0);
        let empty_value = Key::new("api", [("k", "")]).unwrap();
        assert_eq!(empty_value.entries().collect::<Vec<_>>(), [("k", "")]);
    }

    proptest::proptest! {
        /// The entries of `Key::new(d, e)` are `e` escaped and bounded as components are.
        #[test]
        fn entries_are_the_escaped_entries(
            domain in "[a-z|=%{}\\x00-\\x1fé]{1,80}",
            entries in proptest::collection::vec(
                ("[a-z|=%{}\\x00-\\x1fé]{1,80}", "[a-z|=%{}\\x00-\\x1fé:/.]{0,80}"),
                0..=MAX_ENTRIES,
            ),
        ) {
            let key = Key::new(&domain, entries.iter().map(|(k, v)| (k, v))).unwrap();
            let expected: Vec<(String, String)> = entries
                .iter()
                .map(|(k, v)| (Key::named(k).to_string(), Key::named(v).to_string()))
                .collect();
            let actual: Vec<(String, String)> = key
                .entries()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            proptest::prop_assert_eq!(actual, expected);
        }
    }

    #[test]
    fn invalid_keys_name_the_problem() {
        let none: [(&str, &str); 0] = [];
        assert_eq!(Key::new("", none), Err(KeyError::EmptyDomain));
        assert_eq!(
            Key::new("api", [("a", "1"), ("", "2")]),
            Err(KeyError::EmptyEntryKey { index: 1 })
        );
        let many: Vec<(String, String)> = (0..20).map(|i| (format!("k{i}"), "v".into())).collect();
        assert_eq!(Key::new("api", many), Err(KeyError::TooManyEntries(20)));
    }
}
