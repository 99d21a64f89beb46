//! A subcommand's YAML config file: its text to each key's value, as the flag's text, with
//! its line. The values are parsed later, by the flags' own parsers (`crate::values`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_saphyr::{MessageFormatter as _, Spanned, UserMessageFormatter};

use crate::cli::usage_error;

/// What one subcommand's config file may hold.
#[derive(Debug)]
pub(crate) struct FileKeys {
    /// The subcommand, whose usage errors name the file (`"proxy"`).
    pub(crate) command: &'static str,
    /// The keys: the flags' names in snake_case, in the order errors list them.
    pub(crate) keys: &'static [&'static str],
    /// The keys that may hold a YAML list, read as the flag's comma-separated value.
    pub(crate) lists: &'static [&'static str],
}

/// One value of the config file: its text as the flag would take it, and its line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileValue {
    text: String,
    line: usize,
}

/// A config file, read: its values by key, not yet parsed.
#[derive(Debug)]
pub(crate) struct ConfigFile {
    /// What it may hold.
    pub(crate) keys: &'static FileKeys,
    /// The path, as given.
    pub(crate) path: String,
    /// The keys set to a value (not to nothing).
    pub(crate) values: BTreeMap<&'static str, FileValue>,
}

impl ConfigFile {
    /// Reads and parses the file at `path`; an error is a usage error naming it.
    pub(crate) fn read(path: &Path, keys: &'static FileKeys) -> Result<Self, clap::Error> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            usage_error(
                &[keys.command],
                format!("invalid value '{shown}' for '--config <FILE>': cannot read it: {e}"),
            )
        })?;
        Self::parse(&text, &shown, keys).map_err(|message| usage_error(&[keys.command], message))
    }

    /// Parses the text of the file at `path`: a YAML mapping of known keys, each at most
    /// once, to a scalar (a list where `keys.lists` allows one) or nothing (not set).
    pub(crate) fn parse(text: &str, path: &str, keys: &'static FileKeys) -> Result<Self, String> {
        let mut options = serde_saphyr::Options::default();
        options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
        options.with_snippet = false;
        let entries = serde_saphyr::from_str_with_options::<Option<Entries>>(text, options)
            .map_err(|e| yaml_error(&e, path))?
            .unwrap_or_default();
        let mut values = BTreeMap::new();
        // The line of each key seen, set to a value or to nothing.
        let mut seen = BTreeMap::new();
        for (key, value) in entries.0 {
            let line = line_of(&key);
            let at = |message: String| format!("{path}:{line}: {message}");
            let Some(known) = keys.keys.iter().find(|k| **k == key.value) else {
                return Err(at(unknown_key(&key.value, keys.keys)));
            };
            if let Some(first) = seen.insert(*known, line) {
                return Err(at(format!(
                    "'{known}' is set twice (first on line {first})"
                )));
            }
            let line = line_of(&value).max(line);
            let text = flag_text(&value.value, keys.lists.contains(known)).map_err(|reason| {
                format!("{path}:{line}: invalid value for '{known}': {reason}")
            })?;
            if let Some(text) = text {
                values.insert(*known, FileValue { text, line });
            }
        }
        Ok(Self {
            keys,
            path: path.to_owned(),
            values,
        })
    }

    /// The value of `key` parsed by the flag's own `parse`, with its line; an error names
    /// the file, the line, the key and the value.
    pub(crate) fn value<T>(
        &self,
        key: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<(T, usize)>, clap::Error> {
        let Some(value) = self.values.get(key) else {
            return Ok(None);
        };
        match parse(&value.text) {
            Ok(parsed) => Ok(Some((parsed, value.line))),
            Err(reason) => Err(usage_error(
                &[self.keys.command],
                invalid_value(&self.path, value.line, key, &value.text, &reason),
            )),
        }
    }
}

/// The message for a bad value in the file, worded as clap words a bad flag's.
pub(crate) fn invalid_value(
    path: &str,
    line: usize,
    key: &str,
    value: &str,
    reason: &str,
) -> String {
    format!("{path}:{line}: invalid value '{value}' for '{key}': {reason}")
}

/// The message for a key the file does not know, with the right spelling when it is a
/// flag's name written as on the command line.
fn unknown_key(key: &str, known: &[&str]) -> String {
    let snake = key.trim_start_matches("--").replace('-', "_");
    if snake != key && known.contains(&snake.as_str()) {
        return format!("unknown setting '{key}' (did you mean '{snake}'?)");
    }
    format!(
        "unknown setting '{key}'; the settings are {}",
        known.join(", ")
    )
}

/// A YAML value as a flag's text: a scalar as written, a list (where one is allowed) as
/// its items joined by commas, nothing for `null`.
fn flag_text(value: &Value, list_allowed: bool) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text.clone())),
        Value::Number(number) => Ok(Some(number.to_string())),
        Value::Bool(yes) => Ok(Some(yes.to_string())),
        Value::Array(items) if list_allowed => {
            let items: Option<Vec<String>> = items
                .iter()
                .map(|item| match item {
                    Value::String(text) => Some(text.clone()),
                    Value::Number(number) => Some(number.to_string()),
                    _ => None,
                })
                .collect();
            items
                .map(|items| Some(items.join(",")))
                .ok_or_else(|| "expected a list of numbers".to_owned())
        }
        Value::Array(_) => Err("expected one value, got a list".to_owned()),
        Value::Object(_) => Err("expected one value, got a mapping".to_owned()),
    }
}

fn line_of<T>(spanned: &Spanned<T>) -> usize {
    usize::try_from(spanned.referenced.line()).unwrap_or(usize::MAX)
}

fn yaml_error(error: &serde_saphyr::Error, path: &str) -> String {
    let error = error.without_snippet();
    let message: String = UserMessageFormatter
        .format_message(error)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match error.location().filter(|l| l.line() > 0) {
        Some(at) => format!("{path}:{}: invalid YAML: {message}", at.line()),
        None => format!("{path}: invalid YAML: {message}"),
    }
}

/// The top level of a config file: its keys and values in order, with their places.
#[derive(Default)]
struct Entries(Vec<(Spanned<String>, Spanned<Value>)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EntriesVisitor)
    }
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of settings (rpm: 500, ...)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Spanned<Value>>()?;
            entries.push((key, value));
        }
        Ok(Entries(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: FileKeys = FileKeys {
        command: "proxy",
        keys: &[
            "upstream",
            "listen",
            "rpm",
            "tpm",
            "pause_threshold",
            "alert_levels",
        ],
        lists: &["alert_levels"],
    };

    fn file(text: &str) -> Result<ConfigFile, String> {
        ConfigFile::parse(text, "egress.yaml", &KEYS)
    }

    #[test]
    fn unknown_and_repeated_keys_and_bad_yaml_are_refused() {
        for (text, expected) in [
            (
                "upstream: http://h\nrpmm: 5",
                "egress.yaml:2: unknown setting 'rpmm'; the settings are upstream, listen,",
            ),
            (
                "pause-threshold: 90",
                "egress.yaml:1: unknown setting 'pause-threshold' (did you mean 'pause_threshold'?)",
            ),
            (
                "rpm: 5\ntpm: 6\nrpm: 7",
                "egress.yaml:3: 'rpm' is set twice (first on line 1)",
            ),
            (
                "rpm:\nrpm: 7",
                "egress.yaml:2: 'rpm' is set twice (first on line 1)",
            ),
            ("rpm: [5", "egress.yaml:1: invalid YAML"),
            ("- rpm: 5", "egress.yaml"),
            ("just text", "egress.yaml"),
        ] {
            let error = file(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn values_are_the_flags_text_with_their_lines() {
        let f = file("# a comment\nrpm: 500\nalert_levels: [60, 80]\nlisten:\n").unwrap();
        let text = |key| f.values.get(key).map(|v| (v.text.as_str(), v.line));
        assert_eq!(text("rpm"), Some(("500", 2)));
        assert_eq!(text("alert_levels"), Some(("60,80", 3)));
        assert_eq!(text("listen"), None);
        let error = file("rpm: [1, 2]").unwrap_err();
        assert!(error.contains("expected one value, got a list"), "{error}");
        let error = f
            .value("rpm", |_| Err::<u8, _>("no".to_owned()))
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("egress.yaml:2: invalid value '500' for 'rpm': no"),
            "{error}"
        );
    }
}
