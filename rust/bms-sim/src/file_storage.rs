//! The simulator's `--state DIR`: a [`Storage`] keeping each record in its own file, so that a
//! later run restores settings, SoC state, history and nonce exactly as the device would after a
//! reboot.
//!
//! Key `bms/soc` is the file `DIR/bms/soc`. A write goes to a temporary file that is synced and
//! then renamed over the old one, so a killed simulator leaves the previous value or the new one,
//! never a mix: the same guarantee Zephyr's settings subsystem gives on the device.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bms_core::storage::{MemStorage, Storage, StorageError, MAX_KEY_LEN};

/// Stores each key as a file under one directory.
#[derive(Clone, Debug)]
pub struct FileStorage {
    dir: PathBuf,
}

impl FileStorage {
    /// A store in `dir`, created (with parents) if missing.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<FileStorage> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(FileStorage { dir })
    }

    /// The directory holding the records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of `key`; keys are settings names: ASCII letters, digits, `_`, `-`, and `/`
    /// between non-empty parts (so no key leaves the directory).
    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        let valid = !key.is_empty()
            && key.len() <= MAX_KEY_LEN
            && key.split('/').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
        if !valid {
            return Err(StorageError::Full);
        }
        Ok(key
            .split('/')
            .fold(self.dir.clone(), |path, part| path.join(part)))
    }
}

/// The store a simulated BMS writes to: in memory, or files under `--state DIR`.
#[derive(Clone, Debug)]
pub enum SimStorage {
    /// In memory, gone at the end of the run.
    Memory(Box<MemStorage>),
    /// One file per record ([`FileStorage`]).
    Files(FileStorage),
}

impl Storage for SimStorage {
    fn read(&mut self, key: &str, buf: &mut [u8]) -> Result<usize, StorageError> {
        match self {
            SimStorage::Memory(store) => store.read(key, buf),
            SimStorage::Files(store) => store.read(key, buf),
        }
    }
    fn write(&mut self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        match self {
            SimStorage::Memory(store) => store.write(key, value),
            SimStorage::Files(store) => store.write(key, value),
        }
    }
    fn delete(&mut self, key: &str) -> Result<(), StorageError> {
        match self {
            SimStorage::Memory(store) => store.delete(key),
            SimStorage::Files(store) => store.delete(key),
        }
    }
}

fn io_error(error: &io::Error) -> StorageError {
    match error.kind() {
        io::ErrorKind::NotFound => StorageError::NotFound,
        _ => StorageError::Io {
            code: error.raw_os_error().map_or(-5, |errno| -errno),
        },
    }
}

impl Storage for FileStorage {
    fn read(&mut self, key: &str, buf: &mut [u8]) -> Result<usize, StorageError> {
        let bytes = fs::read(self.path(key)?).map_err(|e| io_error(&e))?;
        let dst = buf
            .get_mut(..bytes.len())
            .ok_or(StorageError::TooLarge { len: bytes.len() })?;
        dst.copy_from_slice(&bytes);
        Ok(bytes.len())
    }

    fn write(&mut self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        let path = self.path(key)?;
        let tmp = path.with_extension("tmp");
        let result = (|| {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            let mut file = fs::File::create(&tmp)?;
            file.write_all(value)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        result.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_error(&e)
        })
    }

    fn delete(&mut self, key: &str) -> Result<(), StorageError> {
        match fs::remove_file(self.path(key)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bms_core::settings::Settings;
    use bms_core::storage::{Outcome, Persistence, RecordError, RecordKind, Records};

    #[test]
    fn values_survive_reopening_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileStorage::open(dir.path().join("state")).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(store.read("bms/soc", &mut buf), Err(StorageError::NotFound));
        store.write("bms/soc", &[1, 2, 3]).unwrap();
        store.write("bms/soc", &[4, 5]).unwrap();
        let mut reopened = FileStorage::open(dir.path().join("state")).unwrap();
        assert_eq!(reopened.read("bms/soc", &mut buf), Ok(2));
        assert_eq!(&buf[..2], &[4, 5]);
        assert!(!dir.path().join("state/bms/soc.tmp").exists());
        reopened.delete("bms/soc").unwrap();
        reopened.delete("bms/soc").unwrap();
        assert_eq!(
            reopened.read("bms/soc", &mut buf),
            Err(StorageError::NotFound)
        );
    }

    #[test]
    fn keys_cannot_leave_the_directory_and_big_values_are_refused_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileStorage::open(dir.path()).unwrap();
        for key in [
            "",
            "../x",
            "bms//soc",
            "/abs",
            "bms/so c",
            "a-key-longer-than-fifteen",
        ] {
            assert_eq!(store.write(key, &[1]), Err(StorageError::Full), "{key:?}");
        }
        store.write("bms/hist", &[0; 32]).unwrap();
        let mut small = [0u8; 8];
        assert_eq!(
            store.read("bms/hist", &mut small),
            Err(StorageError::TooLarge { len: 32 })
        );
    }

    /// SET-2 through the simulator's state directory: settings written in one run are restored
    /// exactly by the next.
    #[test]
    fn set_2_settings_restored_from_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let changed = Settings {
            discharge_floor_pct: 12,
            ..Settings::default()
        };
        {
            let mut store = FileStorage::open(dir.path()).unwrap();
            let (mut persistence, restored) = Persistence::restore(&mut store);
            assert!(restored.first_boot());
            let records = Records {
                settings: changed,
                nonce: Some(4096),
                ..Records::default()
            };
            let report = persistence.poll(&mut store, 0, &records);
            assert_eq!(report.settings, Outcome::Written);
        }
        let mut store = FileStorage::open(dir.path()).unwrap();
        let (_, restored) = Persistence::restore(&mut store);
        assert_eq!(restored.settings, Ok(changed));
        assert_eq!(restored.first_nonce(0), 4096);
        // The first run had no device secrets to store yet, so only that record is missing.
        assert_eq!(restored.secrets, Err(RecordError::Missing));
        for kind in RecordKind::ALL {
            let expected = (kind == RecordKind::Secrets).then_some(RecordError::Missing);
            assert_eq!(restored.fault(kind), expected, "{kind:?}");
        }
    }

    #[test]
    fn a_corrupt_file_is_reported_and_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileStorage::open(dir.path()).unwrap();
        let mut persistence = Persistence::new();
        let _ = persistence.poll(&mut store, 0, &Records::default());
        let path = dir.path().join("bms/settings");
        let mut bytes = fs::read(&path).unwrap();
        bytes[2] ^= 0x01;
        fs::write(&path, bytes).unwrap();
        let (_, restored) = Persistence::restore(&mut store);
        assert!(restored.fault(RecordKind::Settings).is_some());
        assert_eq!(restored.settings_or_default(), Settings::default());
        assert_eq!(restored.fault(RecordKind::Soc), None);
    }
}
