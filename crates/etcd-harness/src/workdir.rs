//! Cluster working directories, and the removal of those whose owner died.
//!
//! Every cluster lives in `$TMPDIR/etcd-harness-XXXXXX/`. A cluster whose process dies without
//! running destructors (SIGKILL, `process::exit`, a cluster kept in a `static`) cannot delete its
//! directory, and etcd's preallocated WAL files make each one 100+ MB. So the owning process
//! holds an exclusive `flock` on `<dir>/.owner.lock` for the cluster's lifetime (the kernel drops
//! it when the process dies), and the first cluster started by any process removes the
//! directories whose lock is free.

use std::fs::{self, File};
use std::path::Path;
use std::sync::Once;
use std::time::{Duration, SystemTime};

use tempfile::TempDir;

use crate::error::{IoContext, Result};

/// Prefix of every cluster directory in the system temporary directory.
const PREFIX: &str = "etcd-harness-";
/// The lock file held by the owning process.
const OWNER_LOCK: &str = ".owner.lock";
/// Directories younger than this are never swept (their owner may be about to lock them).
const MIN_AGE: Duration = Duration::from_secs(60);
/// Directories without a lock file (older harness versions) are swept after this long.
const MIN_AGE_WITHOUT_LOCK: Duration = Duration::from_secs(600);

/// A temporary cluster directory, locked by this process until dropped.
#[derive(Debug)]
pub(crate) struct WorkDir {
    // Field order matters: the directory is removed while the lock is still held.
    dir: TempDir,
    _lock: File,
}

impl WorkDir {
    /// Creates and locks a new cluster directory (sweeping stale ones first, once per process).
    pub(crate) fn create() -> Result<Self> {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(|| {
            let removed = remove_stale_cluster_dirs();
            if removed > 0 {
                tracing::info!(removed, "removed stale etcd-harness directories");
            }
        });
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir()
            .ctx(|| "creating a temporary directory for etcd".to_owned())?;
        let lock_path = dir.path().join(OWNER_LOCK);
        let lock = File::create(&lock_path).ctx(|| format!("creating {}", lock_path.display()))?;
        lock.lock().ctx(|| format!("locking {}", lock_path.display()))?;
        Ok(Self { dir, _lock: lock })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes the `etcd-harness-*` directories in the system temporary directory whose owning
/// process is gone (their `.owner.lock` is not locked) and that are older than a minute.
/// Returns how many were removed. Runs automatically before a process's first cluster starts;
/// call it yourself (e.g. from xtask) to reclaim disk space earlier.
pub fn remove_stale_cluster_dirs() -> usize {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(PREFIX))
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|entry| remove_if_stale(&entry.path()))
        .count()
}

/// Removes `dir` if its owner is gone; `true` if it was removed.
fn remove_if_stale(dir: &Path) -> bool {
    let age = fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .unwrap_or_default();
    if age < MIN_AGE {
        return false;
    }
    match File::options().write(true).open(dir.join(OWNER_LOCK)) {
        // `lock` stays held while deleting, so concurrent sweepers skip this directory.
        Ok(lock) => lock.try_lock().is_ok() && remove(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => age >= MIN_AGE_WITHOUT_LOCK && remove(dir),
        Err(_) => false,
    }
}

fn remove(dir: &Path) -> bool {
    match fs::remove_dir_all(dir) {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(dir = %dir.display(), %error, "cannot remove a stale etcd directory");
            false
        }
    }
}
