//! The descriptor tree of a domain and envoy ratelimit's lookup over it.
//!
//! Each level keeps its descriptors in configuration order (for listings) and an index from
//! entry key to the descriptors with that key: the exact values, the prefix wildcards in
//! configuration order, and the key-only descriptor. A lookup hashes the key and the value
//! once each and scans only the wildcards of that key; it allocates nothing.

use std::collections::HashMap;
use std::sync::Arc;

use super::Rule;

/// One domain: its name and its top level of descriptors.
#[derive(Clone, Debug)]
pub(super) struct Domain {
    /// The domain name.
    pub(super) name: String,
    /// The file it was defined in.
    pub(super) file: String,
    /// The line of its name in that file.
    pub(super) line: usize,
    /// The top-level descriptors.
    pub(super) root: Level,
}

/// One configured descriptor.
#[derive(Clone, Debug)]
pub(super) struct Descriptor {
    /// The entry key it matches.
    pub(super) key: String,
    /// The value as configured (`None` matches any value; a trailing `*` is a prefix
    /// wildcard).
    pub(super) value: Option<String>,
    /// The limit of a request whose last entry lands here.
    pub(super) rule: Option<Arc<Rule>>,
    /// The nested descriptors.
    pub(super) children: Level,
}

/// The descriptors at one depth under one parent.
#[derive(Clone, Debug, Default)]
pub(super) struct Level {
    /// In configuration order.
    pub(super) descriptors: Vec<Descriptor>,
    /// Entry key to the positions in `descriptors` that may match it.
    index: HashMap<String, KeyIndex>,
}

#[derive(Clone, Debug, Default)]
struct KeyIndex {
    /// Exact value to position. Wildcard descriptors are here too, under their pattern, as
    /// in envoy ratelimit, where a request value equal to the pattern matches it exactly.
    exact: HashMap<String, usize>,
    /// Prefix (the pattern without its `*`) and position, in configuration order.
    wildcards: Vec<(String, usize)>,
    /// The descriptor without a value.
    any: Option<usize>,
}

/// Where a descriptor landed in its level, for duplicate detection by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    /// A descriptor with the same key and value (or both without a value) exists.
    Taken,
    /// Added.
    Added,
}

impl Level {
    /// Whether this level has no descriptors.
    pub(super) fn is_empty(&self) -> bool {
        self.descriptors.is_empty()
    }

    /// Appends `descriptor`, unless one with the same key and value is already here.
    pub(super) fn push(&mut self, descriptor: Descriptor) -> Slot {
        let position = self.descriptors.len();
        let entry = self.index.entry(descriptor.key.clone()).or_default();
        match &descriptor.value {
            None => {
                if entry.any.is_some() {
                    return Slot::Taken;
                }
                entry.any = Some(position);
            }
            Some(value) => {
                if entry.exact.contains_key(value) {
                    return Slot::Taken;
                }
                entry.exact.insert(value.clone(), position);
                if let Some(prefix) = value.strip_suffix('*') {
                    entry.wildcards.push((prefix.to_owned(), position));
                }
            }
        }
        self.descriptors.push(descriptor);
        Slot::Added
    }

    /// The descriptor an entry `key=value` selects here: the exact value first, then the
    /// first wildcard whose prefix starts the value, then the key-only descriptor.
    pub(super) fn lookup(&self, key: &str, value: &str) -> Option<&Descriptor> {
        let entry = self.index.get(key)?;
        let position = entry
            .exact
            .get(value)
            .copied()
            .or_else(|| {
                entry
                    .wildcards
                    .iter()
                    .find(|(prefix, _)| value.starts_with(prefix.as_str()))
                    .map(|&(_, position)| position)
            })
            .or(entry.any)?;
        self.descriptors.get(position)
    }

    /// Every rule at and below this level, depth first in configuration order.
    pub(super) fn rules<'a>(&'a self, out: &mut Vec<&'a Arc<Rule>>) {
        for descriptor in &self.descriptors {
            if let Some(rule) = &descriptor.rule {
                out.push(rule);
            }
            descriptor.children.rules(out);
        }
    }
}

/// envoy ratelimit's `GetLimit`: walk one level per entry; every entry must select a
/// descriptor, and the rule is that of the descriptor the last entry selects. A request
/// shallower or deeper than the configured limit gets none.
pub(super) fn find<'c, 'e>(
    root: &'c Level,
    entries: impl IntoIterator<Item = (&'e str, &'e str)>,
) -> Option<&'c Arc<Rule>> {
    let mut level = root;
    let mut selected: Option<&Descriptor> = None;
    for (key, value) in entries {
        if let Some(previous) = selected {
            level = &previous.children;
        }
        selected = Some(level.lookup(key, value)?);
    }
    selected?.rule.as_ref()
}
