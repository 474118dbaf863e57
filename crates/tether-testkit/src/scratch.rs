//! A fresh directory under the system temp dir, removed on drop.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A new, empty directory under the system temp dir, removed (with its content) on drop:
/// where a [`crate::Tether`] keeps its config, and where tests write files of their own
/// (certificates, keys).
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `tether-<tag>-<pid>-<counter>-<nanos>`; `tag` says what it is for, the pid
    /// and counter make it unique between and within test processes, the nanos across reused
    /// pids.
    pub fn new(tag: &str) -> io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.subsec_nanos());
        let name = format!(
            "tether-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
        );
        let path = std::env::temp_dir().join(name);
        // `create_dir`, not `create_dir_all`: never adopt a directory someone else made.
        fs::create_dir(&path)?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Best effort: a leftover temp dir must not fail the test that made it.
        let _ = fs::remove_dir_all(&self.path);
    }
}
