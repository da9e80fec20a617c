//! The rooms store's configuration (`[storage]`) and the durability setting both stores share.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `[storage]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// SQLite database file; relative paths are under `data_dir`.
    pub path: PathBuf,
    /// Requests that may wait for the storage thread; shards wait (without blocking) beyond it.
    pub queue_capacity: usize,
    /// Requests committed together in one transaction at most.
    pub max_batch: usize,
    /// SQLite `synchronous` in WAL mode: `full` (a commit survives power loss) or `normal`
    /// (survives a crash of the process, may lose the last commits on power loss).
    pub synchronous: Synchronous,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("shardcast.db"),
            queue_capacity: 4096,
            max_batch: 256,
            synchronous: Synchronous::Full,
        }
    }
}

impl StorageConfig {
    /// The database file: `path`, under `data_dir` when relative.
    pub fn database_path(&self, data_dir: &Path) -> PathBuf {
        crate::ops::checks::under_data_dir(data_dir, &self.path)
    }

    /// Every invalid value of this section, with the reason (key names as in the file).
    pub fn problems(&self) -> Vec<String> {
        let checks = [
            (
                !self.path.as_os_str().is_empty(),
                "storage.path must not be empty",
            ),
            (
                self.queue_capacity > 0,
                "storage.queue_capacity must be > 0",
            ),
            (
                (1..=10_000).contains(&self.max_batch),
                "storage.max_batch must be within 1..=10000",
            ),
        ];
        crate::ops::checks::failed(&checks)
    }
}

/// Durability of a SQLite commit (`synchronous` in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// An acknowledged write survives power loss.
    Full,
    /// An acknowledged write survives a process crash.
    Normal,
}
