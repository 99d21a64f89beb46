//! The dead letter: input lines that are not requests, and items that failed for good.
//!
//! Appended to as it grows (one write per entry); on load the last entry of each line or id
//! wins, and entries the results file has made stale are dropped. It is rewritten (to a
//! temporary file, then renamed) when entries have left it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::BatchError;
use super::ids::IdKey;
use super::input::Invalid;

/// What kind of entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// A line that is not a request (not JSON, no id, a repeated id, a bad field).
    Invalid,
    /// A request that failed for good.
    Failed,
}

/// One line of the dead letter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) kind: Kind,
    /// The input line, from 1.
    pub(crate) line: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    pub(crate) reason: String,
    /// The upstream's last status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<u16>,
    /// The upstream's last answer, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) body: Option<Value>,
    /// Attempts sent in the last run that tried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) attempts: Option<u32>,
}

/// The dead letter of a job.
#[derive(Debug)]
pub(crate) struct DeadLetter {
    path: PathBuf,
    file: File,
    invalid: BTreeMap<u64, Entry>,
    /// By id, as text: it holds only the failed items, and their entries are written out.
    failed: HashMap<String, Entry>,
    /// Entries left since the file was last written whole.
    dirty: bool,
}

impl DeadLetter {
    /// Loads the dead letter at `path` (a fresh one when missing), dropping failed items
    /// that are `done`.
    pub(crate) fn load(path: &Path, done: &HashSet<IdKey>) -> Result<Self, BatchError> {
        let mut invalid = BTreeMap::new();
        let mut failed = HashMap::new();
        let mut dirty = false;
        match File::open(path) {
            Ok(file) => {
                let mut reader = BufReader::new(file);
                let mut buf = Vec::new();
                let mut number = 0_u64;
                loop {
                    buf.clear();
                    let n = reader
                        .read_until(b'\n', &mut buf)
                        .map_err(|e| BatchError::io("cannot read the dead letter", path, e))?;
                    if n == 0 {
                        break;
                    }
                    number += 1;
                    if buf.last() != Some(&b'\n') {
                        // Torn by a kill mid-write: the entry is made again.
                        dirty = true;
                        break;
                    }
                    let text = &buf[..n - 1];
                    if text.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let entry: Entry =
                        serde_json::from_slice(text).map_err(|e| BatchError::Corrupt {
                            path: path.to_owned(),
                            line: number,
                            reason: format!("is not a dead letter entry: {e}"),
                        })?;
                    match (entry.kind, &entry.id) {
                        (Kind::Failed, Some(id)) => {
                            if failed.insert(id.clone(), entry).is_some() {
                                dirty = true;
                            }
                        }
                        _ => {
                            if invalid.insert(entry.line, entry).is_some() {
                                dirty = true;
                            }
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(BatchError::io("cannot read the dead letter", path, e)),
        }
        let before = failed.len();
        failed.retain(|id: &String, _| !done.contains(&IdKey::of(id)));
        dirty |= failed.len() != before;
        let file = open_append(path)?;
        let mut dead = Self {
            path: path.to_owned(),
            file,
            invalid,
            failed,
            dirty,
        };
        if dead.dirty {
            dead.rewrite()?;
        }
        Ok(dead)
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Entries in all.
    pub(crate) fn len(&self) -> usize {
        self.invalid.len() + self.failed.len()
    }

    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(invalid lines, failed items)`.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.invalid.len(), self.failed.len())
    }

    /// Whether `id` failed for good.
    pub(crate) fn is_failed(&self, id: &str) -> bool {
        self.failed.contains_key(id)
    }

    /// Records an invalid line, unless its line is recorded already; says whether it was
    /// new.
    pub(crate) fn add_invalid(&mut self, invalid: &Invalid) -> Result<bool, BatchError> {
        if self.invalid.contains_key(&invalid.line) {
            return Ok(false);
        }
        let entry = Entry {
            kind: Kind::Invalid,
            line: invalid.line,
            id: invalid.id.clone(),
            reason: invalid.reason.clone(),
            status: None,
            body: None,
            attempts: None,
        };
        self.append(&entry)?;
        self.invalid.insert(entry.line, entry);
        Ok(true)
    }

    /// Records a failed item (replacing an earlier failure of its id).
    pub(crate) fn add_failed(&mut self, entry: Entry) -> Result<(), BatchError> {
        self.append(&entry)?;
        if let Some(id) = entry.id.clone()
            && self.failed.insert(id, entry).is_some()
        {
            self.dirty = true;
        }
        Ok(())
    }

    /// Line `line` is a valid request now: an earlier invalid entry for it is stale.
    pub(crate) fn resolve_line(&mut self, line: u64) -> Result<(), BatchError> {
        if self.invalid.remove(&line).is_some() {
            self.dirty = true;
        }
        Ok(())
    }

    /// `id` succeeded: it leaves the dead letter.
    pub(crate) fn resolve_failed(&mut self, id: &str) -> Result<(), BatchError> {
        if self.failed.remove(id).is_some() {
            self.dirty = true;
        }
        Ok(())
    }

    /// Syncs the file, rewriting it first when entries have left it.
    pub(crate) fn finish(&mut self) -> Result<(), BatchError> {
        if self.dirty {
            self.rewrite()
        } else {
            self.file
                .sync_data()
                .map_err(|e| BatchError::io("cannot sync the dead letter", &self.path, e))
        }
    }

    fn append(&mut self, entry: &Entry) -> Result<(), BatchError> {
        let line = line_of(entry);
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| BatchError::io("cannot write the dead letter", &self.path, e))
    }

    /// Writes every entry (invalid lines, then failed items, each in line order) to a
    /// temporary file and renames it over the dead letter.
    fn rewrite(&mut self) -> Result<(), BatchError> {
        let error = |e| BatchError::io("cannot rewrite the dead letter", &self.path, e);
        let mut temp = self.path.as_os_str().to_owned();
        temp.push(".tmp");
        let temp = PathBuf::from(temp);
        let mut failed: Vec<&Entry> = self.failed.values().collect();
        failed.sort_by_key(|entry| entry.line);
        let mut text = Vec::new();
        for entry in self.invalid.values().chain(failed) {
            text.extend_from_slice(&line_of(entry));
        }
        let written = (|| {
            let mut file = File::create(&temp)?;
            file.write_all(&text)?;
            file.sync_all()?;
            fs::rename(&temp, &self.path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(error(e));
        }
        self.file = open_append(&self.path)?;
        self.dirty = false;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, BatchError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| BatchError::io("cannot open the dead letter", path, e))
}

/// An entry as one line of JSON, with its newline.
fn line_of(entry: &Entry) -> Vec<u8> {
    // An entry is strings, numbers and a JSON value: it always serialises.
    let mut line = serde_json::to_vec(entry).unwrap_or_default();
    line.push(b'\n');
    line
}
