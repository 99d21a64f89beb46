//! Fresh temporary directories for tests that write files (configs, logs, state).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// A new, empty directory under the system's temporary directory, named after `tag`, this
/// process and a counter, so parallel tests and test binaries never share one. The caller
/// removes it when done (or leaves it, to read after a failure).
pub fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sluice-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the temporary directory can be created");
    dir
}
