//! An exclusive advisory lock on a data dir, so two processes never open one node.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use crate::error::{CoveyError, ErrorKind, Result};

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock on `dir`, failing with [`ErrorKind::Conflict`] if another holder has it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join("covey.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| {
                CoveyError::storage(format!("cannot open lock file {}: {e}", path.display()))
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(CoveyError::new(
                ErrorKind::Conflict,
                format!(
                    "data dir {} is already open by another Covey node",
                    dir.display()
                ),
            )),
            Err(TryLockError::Error(e)) => Err(CoveyError::storage(format!(
                "cannot lock data dir {}: {e}",
                dir.display()
            ))),
        }
    }
}
