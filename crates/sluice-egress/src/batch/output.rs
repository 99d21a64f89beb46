//! The results file: recovered on start (a torn last line cut off, the ids done collected),
//! then appended to one whole line per write.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::Path;

use serde::Deserialize;

use super::BatchError;
use super::ids::IdKey;

/// The results file, open for appending.
#[derive(Debug)]
pub(crate) struct Output {
    file: File,
}

/// The part of a result line recovery reads.
#[derive(Deserialize)]
struct Done<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
}

impl Output {
    /// Opens (or creates) the results file, cuts off a torn last line, and returns the keys
    /// of the ids it holds.
    pub(crate) fn recover(path: &Path) -> Result<(Self, HashSet<IdKey>), BatchError> {
        let error = |e| BatchError::io("cannot read the results file", path, e);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(error)?;
        let (done, complete) = read_ids(&file, path)?;
        let len = file.metadata().map_err(error)?.len();
        if complete < len {
            tracing::warn!(
                path = %path.display(),
                bytes = len - complete,
                "the results file ends with a torn line (the last run was killed mid-write): cut off, that item is sent again"
            );
            file.set_len(complete)
                .map_err(|e| BatchError::io("cannot truncate the results file", path, e))?;
            file.sync_all()
                .map_err(|e| BatchError::io("cannot sync the results file", path, e))?;
        }
        drop(file);
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| BatchError::io("cannot open the results file", path, e))?;
        Ok((Self { file }, done))
    }

    /// Appends one line (`line` ends with a newline) in one write.
    pub(crate) fn append(&mut self, line: &[u8]) -> io::Result<()> {
        self.file.write_all(line)
    }

    /// Syncs the file's data to disk.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// The keys of the ids of the complete lines of `file`, and the length of those lines (the
/// offset just after the last newline).
fn read_ids(file: &File, path: &Path) -> Result<(HashSet<IdKey>, u64), BatchError> {
    let error = |e| BatchError::io("cannot read the results file", path, e);
    let mut reader = BufReader::new(file);
    reader.seek(SeekFrom::Start(0)).map_err(error)?;
    let mut done = HashSet::new();
    let mut complete = 0_u64;
    let mut number = 0_u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(error)?;
        if n == 0 || buf.last() != Some(&b'\n') {
            // The end, or a torn last line.
            return Ok((done, complete));
        }
        number += 1;
        complete += n as u64;
        let text = &buf[..n - 1];
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line: Done<'_> = serde_json::from_slice(text).map_err(|e| BatchError::Corrupt {
            path: path.to_owned(),
            line: number,
            reason: format!(
                "is not a result line with an \"id\" ({e}); was the file written by something else?"
            ),
        })?;
        done.insert(IdKey::of(&line.id));
    }
}
