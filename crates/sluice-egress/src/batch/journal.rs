//! The in-flight journal: the id of every item, written before it is sent. The ids it holds
//! that are neither in the results nor in the dead letter are the items that may have
//! reached the upstream when a run stopped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::BatchError;
use super::ids::IdKey;

/// One journal line.
#[derive(Serialize, Deserialize)]
struct Started<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    line: u64,
}

/// The journal, open for appending.
#[derive(Debug)]
pub(crate) struct Journal {
    file: File,
    path: PathBuf,
}

impl Journal {
    /// Opens the journal at `path` and returns the ids it lists that are not `finished`
    /// (in order, once each), rewriting it to hold only those.
    pub(crate) fn open(
        path: &Path,
        finished: impl Fn(&str) -> bool,
    ) -> Result<(Self, Vec<String>), BatchError> {
        let mut open = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut lines = Vec::new();
        match File::open(path) {
            Ok(file) => {
                let mut reader = BufReader::new(file);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    let n = reader
                        .read_until(b'\n', &mut buf)
                        .map_err(|e| BatchError::io("cannot read the journal", path, e))?;
                    if n == 0 || buf.last() != Some(&b'\n') {
                        break;
                    }
                    // A line that does not parse was torn or is foreign: it names no id.
                    let Ok(started) = serde_json::from_slice::<Started<'_>>(&buf[..n - 1]) else {
                        continue;
                    };
                    if !finished(&started.id) && seen.insert(IdKey::of(&started.id)) {
                        open.push(started.id.to_string());
                        lines.extend_from_slice(&buf[..n]);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(BatchError::io("cannot read the journal", path, e)),
        }
        let mut temp = path.as_os_str().to_owned();
        temp.push(".tmp");
        let temp = PathBuf::from(temp);
        let written = (|| {
            let mut file = File::create(&temp)?;
            file.write_all(&lines)?;
            file.sync_all()?;
            fs::rename(&temp, path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(BatchError::io("cannot rewrite the journal", path, e));
        }
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| BatchError::io("cannot open the journal", path, e))?;
        Ok((
            Self {
                file,
                path: path.to_owned(),
            },
            open,
        ))
    }

    /// Records that `id` (on input line `line`) is about to be sent: one write.
    pub(crate) fn start(&mut self, id: &str, line: u64) -> Result<(), BatchError> {
        let started = Started {
            id: id.into(),
            line,
        };
        // A string and a number: it always serialises.
        let mut text = serde_json::to_vec(&started).unwrap_or_default();
        text.push(b'\n');
        self.file
            .write_all(&text)
            .map_err(|e| BatchError::io("cannot write the journal", &self.path, e))
    }

    /// Syncs the journal to disk.
    pub(crate) fn sync(&mut self) -> Result<(), BatchError> {
        self.file
            .sync_data()
            .map_err(|e| BatchError::io("cannot sync the journal", &self.path, e))
    }

    /// Empties the journal: every item is done or failed.
    pub(crate) fn clear(&mut self) -> Result<(), BatchError> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| BatchError::io("cannot clear the journal", &self.path, e))
    }
}
