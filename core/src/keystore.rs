//! Where secrets live: the device key and group root secrets. Apps can supply the platform's
//! own store (Keychain, Android Keystore); the default keeps 0600 files in the data dir.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::error::{CoveyError, Result};

/// A store of named secrets. Names are ASCII `[a-z0-9-]`; values are at most a few hundred
/// bytes. Implementations must not log values.
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// The secret stored under `name`, if any.
    fn load(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>>;
    /// Stores `secret` under `name`, replacing any previous value.
    fn store(&self, name: &str, secret: &[u8]) -> Result<()>;
    /// Deletes the secret under `name` (leaving a group). The default overwrites it with an
    /// empty value, which every reader treats as absent; a store that can delete should.
    fn delete(&self, name: &str) -> Result<()> {
        self.store(name, &[])
    }
}

/// The default [`KeyStore`]: one file per secret under `<data_dir>/keys`, mode 0600.
#[derive(Debug, Clone)]
pub struct FileKeyStore {
    dir: PathBuf,
}

impl FileKeyStore {
    /// A key store in `<data_dir>/keys`, created on first write.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("keys"),
        }
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(CoveyError::invalid(format!("invalid key name {name:?}")));
        }
        Ok(self.dir.join(format!("{name}.key")))
    }
}

#[cfg(unix)]
fn private_options() -> fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = fs::OpenOptions::new();
    options.mode(0o600);
    options
}

#[cfg(not(unix))]
fn private_options() -> fs::OpenOptions {
    fs::OpenOptions::new()
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)
}

impl KeyStore for FileKeyStore {
    fn load(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let path = self.path(name)?;
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CoveyError::storage(format!(
                "cannot read key {}: {e}",
                path.display()
            ))),
        }
    }

    fn store(&self, name: &str, secret: &[u8]) -> Result<()> {
        let path = self.path(name)?;
        let io = |e: std::io::Error| {
            CoveyError::storage(format!("cannot write key {}: {e}", path.display()))
        };
        create_private_dir(&self.dir).map_err(io)?;
        // Write then rename, so a crash never leaves a half-written key behind.
        // A temp name of its own per call: two concurrent stores of one key (a cancelled
        // join racing the next) must not rename each other's file away.
        let unique: u64 = rand::random();
        let tmp = path.with_extension(format!("key.{unique:016x}.tmp"));
        let mut file = private_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(secret).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)?;
        Ok(())
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CoveyError::storage(format!(
                "cannot delete key {}: {e}",
                path.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_private_files_and_reads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let ks = FileKeyStore::new(dir.path());
        assert!(ks.load("device").unwrap().is_none());
        ks.store("device", &[1, 2, 3]).unwrap();
        assert_eq!(ks.load("device").unwrap().unwrap().as_slice(), &[1, 2, 3]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("keys/device.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        ks.delete("device").unwrap();
        assert!(ks.load("device").unwrap().is_none());
        ks.delete("device").unwrap();
        assert!(ks.store("../evil", &[0]).is_err());
        assert!(ks.store("", &[0]).is_err());
    }
}
