//! Settings of the long-running subcommands (`sluice proxy`, `sluice batch`): each from its
//! flag, else its environment variable (clap reads both), else the `--config` YAML file,
//! else its default.
//!
//! The file holds one key per flag, named as the flag in snake_case (`pause_threshold` for
//! `--pause-threshold`), each value in the flag's own syntax and checked by the flag's own
//! parser (`crate::values`), so that a file and a command line mean the same. Its errors
//! name the file, the line, the key and the value, as a flag's name the flag and the value;
//! an unknown key is an error, not a silently ignored typo. [`file`] reads the file,
//! [`Merge`] picks each setting, [`Origins`] remembers which came from the file (for
//! messages and the startup log), and [`quota`] and [`backoff`] hold the quota and retry
//! backoff settings both subcommands share.

mod backoff;
mod file;
mod quota;

use std::collections::BTreeMap;

pub(crate) use backoff::BackoffSettings;
pub(crate) use file::{ConfigFile, FileKeys};
pub(crate) use quota::QuotaSettings;

use crate::cli::usage_error;

/// Picks each setting from the flags (and their variables), else the file, and remembers
/// which came from the file. Every value of the file is parsed, even one a flag overrides:
/// a mistake in the file is reported now, not when the flag is gone.
#[derive(Debug)]
pub(crate) struct Merge<'a> {
    command: &'static str,
    file: Option<&'a ConfigFile>,
    taken: BTreeMap<&'static str, usize>,
}

impl<'a> Merge<'a> {
    /// A merge for the subcommand `command` (`"batch"`), over the file if there is one.
    pub(crate) fn new(command: &'static str, file: Option<&'a ConfigFile>) -> Self {
        Self {
            command,
            file,
            taken: BTreeMap::new(),
        }
    }

    /// The setting `key`: `given` (from its flag or variable) if set, else the file's value
    /// parsed by `parse`, else `None`.
    ///
    /// # Errors
    ///
    /// A usage error naming the file, the line, the key and the value when the file's value
    /// does not parse, whether or not `given` overrides it.
    pub(crate) fn pick<T>(
        &mut self,
        key: &'static str,
        given: Option<T>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, clap::Error> {
        let from_file = match self.file {
            Some(file) => file.value(key, parse)?,
            None => None,
        };
        Ok(match (given, from_file) {
            (Some(value), _) => Some(value),
            (None, Some((value, line))) => {
                self.taken.insert(key, line);
                Some(value)
            }
            (None, None) => None,
        })
    }

    /// Checks the file's value of `key` (if any) without taking it: for a setting a flag of
    /// another name overrides.
    ///
    /// # Errors
    ///
    /// As [`pick`](Self::pick).
    pub(crate) fn check<T>(
        &mut self,
        key: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<(), clap::Error> {
        if let Some(file) = self.file {
            file.value(key, parse)?;
        }
        Ok(())
    }

    /// Where each setting came from, once all are picked.
    pub(crate) fn finish(self) -> Origins {
        Origins {
            command: self.command,
            file: self.file.map(|f| (f.path.clone(), self.taken)),
        }
    }
}

/// Which settings came from the config file, and from which line.
#[derive(Debug)]
pub(crate) struct Origins {
    command: &'static str,
    /// The config file's path, and the line of each setting taken from it.
    file: Option<(String, BTreeMap<&'static str, usize>)>,
}

impl Origins {
    /// The file and line the setting `key` was taken from, if it was.
    pub(crate) fn file_line(&self, key: &str) -> Option<(&str, usize)> {
        let (path, taken) = self.file.as_ref()?;
        Some((path, *taken.get(key)?))
    }

    /// Where the setting `key` came from, for messages: `'--listen'`, or `'listen' in
    /// egress.yaml:3`.
    pub(crate) fn origin(&self, key: &str) -> String {
        match self.file_line(key) {
            Some((path, line)) => format!("'{key}' in {path}:{line}"),
            None => format!("'--{}'", key.replace('_', "-")),
        }
    }

    /// A usage error (exit code 2) of the subcommand.
    pub(crate) fn usage(&self, message: String) -> clap::Error {
        usage_error(&[self.command], message)
    }

    /// A usage error about the value of `key`, worded as a bad flag's (`invalid value 'V'
    /// for '--flag <VALUE>': why`) or a bad line of the file (`file:line: invalid value 'V'
    /// for 'key': why`).
    pub(crate) fn invalid(&self, key: &str, flag: &str, value: &str, reason: &str) -> clap::Error {
        let message = match self.file_line(key) {
            Some((path, line)) => file::invalid_value(path, line, key, value, reason),
            None => format!("invalid value '{value}' for '{flag}': {reason}"),
        };
        self.usage(message)
    }

    /// The config file's path and a line for the startup log naming the settings taken
    /// from it, when there is a file.
    pub(crate) fn file_note(&self) -> Option<(&str, String)> {
        let (path, taken) = self.file.as_ref()?;
        let keys: Vec<&str> = taken.keys().copied().collect();
        let what = if keys.is_empty() {
            "none (flags and environment override all)".to_owned()
        } else {
            keys.join(", ")
        };
        Some((path, format!("settings from {path}: {what}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::at_least_one;

    const KEYS: FileKeys = FileKeys {
        command: "batch",
        keys: &["rpm", "tpm", "upstream", "proxy"],
        lists: &[],
    };

    fn file(text: &str) -> ConfigFile {
        ConfigFile::parse(text, "batch.yaml", &KEYS).unwrap()
    }

    #[test]
    fn a_given_value_beats_the_file_and_the_file_beats_nothing() {
        let f = file("rpm: 5\ntpm: 6\n");
        let mut m = Merge::new("batch", Some(&f));
        assert_eq!(m.pick("rpm", Some(7), at_least_one).unwrap(), Some(7));
        assert_eq!(m.pick("tpm", None, at_least_one).unwrap(), Some(6));
        assert_eq!(m.pick("upstream", None, at_least_one).unwrap(), None);
        let origins = m.finish();
        assert_eq!(origins.origin("rpm"), "'--rpm'");
        assert_eq!(origins.origin("tpm"), "'tpm' in batch.yaml:2");
        assert_eq!(
            origins.file_note(),
            Some(("batch.yaml", "settings from batch.yaml: tpm".to_owned()))
        );
        let error = origins
            .invalid("tpm", "--tpm <N>", "6", "too few")
            .to_string();
        assert!(
            error.contains("batch.yaml:2: invalid value '6' for 'tpm': too few"),
            "{error}"
        );
        let error = origins.invalid("rpm", "--rpm <N>", "7", "odd").to_string();
        assert!(
            error.contains("invalid value '7' for '--rpm <N>': odd"),
            "{error}"
        );
    }

    #[test]
    fn a_value_is_checked_even_where_it_is_not_taken() {
        let f = file("rpm: 0\nupstream: x\n");
        let mut m = Merge::new("batch", Some(&f));
        let error = m
            .pick("rpm", Some(5), at_least_one)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("batch.yaml:1: invalid value '0' for 'rpm'"),
            "{error}"
        );
        let error = m.check("upstream", at_least_one).unwrap_err().to_string();
        assert!(
            error.contains("batch.yaml:2: invalid value 'x' for 'upstream'"),
            "{error}"
        );
        let origins = Merge::new("batch", None).finish();
        assert_eq!(origins.file_note(), None);
        assert_eq!(origins.origin("max_wait"), "'--max-wait'");
    }
}
