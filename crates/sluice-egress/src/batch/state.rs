//! The state directory: its lock, and the manifest that ties it to one job.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sluice_core::Nanos;

use super::input::{Scan, hex};
use super::{BatchConfig, BatchError, LOCK_FILE, MANIFEST_FILE};

/// The state directory's lock, held until dropped (the OS releases it if the process dies).
#[derive(Debug)]
pub(crate) struct Lock(#[allow(dead_code, reason = "held for its lock")] File);

/// Creates the state directory if needed and locks it.
pub(crate) fn lock(dir: &Path) -> Result<Lock, BatchError> {
    fs::create_dir_all(dir)
        .map_err(|e| BatchError::io("cannot create the state directory", dir, e))?;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| BatchError::io("cannot open the lock file", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(Lock(file)),
        Err(TryLockError::WouldBlock) => Err(BatchError::Locked {
            state_dir: dir.to_owned(),
        }),
        Err(TryLockError::Error(e)) => Err(BatchError::io("cannot lock", &path, e)),
    }
}

/// What ties a state directory to its job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) version: u32,
    /// The results file, absolute.
    pub(crate) output: PathBuf,
    /// The input file when the job started, absolute.
    pub(crate) input: PathBuf,
    /// The input's SHA-256 when the job started.
    pub(crate) input_sha256: String,
    /// The seed of every item's idempotency key.
    pub(crate) job_key: String,
}

impl Manifest {
    const VERSION: u32 = 1;
}

/// The job's manifest: read from the state directory, or made for a new job. A state
/// directory of another results file is an error; an input that changed since the job
/// started is only worth a warning (items may have been added or fixed).
pub(crate) fn manifest(
    config: &BatchConfig,
    scan: &Scan,
    now: Nanos,
) -> Result<Manifest, BatchError> {
    let path = config.state_dir.join(MANIFEST_FILE);
    let output = absolute(&config.output);
    let input = absolute(&config.input);
    match fs::read(&path) {
        Ok(bytes) => {
            let manifest: Manifest =
                serde_json::from_slice(&bytes).map_err(|e| BatchError::Corrupt {
                    path: path.clone(),
                    line: 1,
                    reason: format!("is not a batch manifest: {e}"),
                })?;
            if manifest.output != output {
                return Err(BatchError::OtherJob {
                    state_dir: config.state_dir.clone(),
                    recorded: manifest.output,
                    given: output,
                });
            }
            if manifest.input_sha256 != scan.digest {
                tracing::warn!(
                    input = %input.display(),
                    "the input file changed since this job started: its new and fixed lines are sent, lines already done are not"
                );
            }
            Ok(manifest)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut hasher = Sha256::new();
            for part in [
                input.as_os_str().as_encoded_bytes(),
                scan.digest.as_bytes(),
                output.as_os_str().as_encoded_bytes(),
                &now.as_u64().to_be_bytes(),
            ] {
                hasher.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
                hasher.update(part);
            }
            let manifest = Manifest {
                version: Manifest::VERSION,
                output,
                input,
                input_sha256: scan.digest.clone(),
                job_key: hex(&hasher.finalize()[..16]),
            };
            write_atomically(&path, &manifest)?;
            Ok(manifest)
        }
        Err(e) => Err(BatchError::io("cannot read the manifest", &path, e)),
    }
}

/// The idempotency key of item `id` in the job whose key seed is `job_key`.
pub(crate) fn idempotency_key(job_key: &str, id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(job_key.as_bytes());
    hasher.update([0]);
    hasher.update(id.as_bytes());
    format!("sluice-{}", hex(&hasher.finalize()[..16]))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

fn write_atomically(path: &Path, manifest: &Manifest) -> Result<(), BatchError> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let written = (|| {
        let json = serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?;
        let mut file = File::create(&temp)?;
        file.write_all(&json)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    written.map_err(|e| {
        let _ = fs::remove_file(&temp);
        BatchError::io("cannot write the manifest", path, e)
    })
}
