//! Persisted records (settings, SoC state, history, Instant Readout nonce, device secrets, what
//! the SoC estimator learned) over a small key → bytes [`Storage`] trait: the record format, the
//! write policy and the restore at start.
//!
//! The core never touches flash. On the device, [`Storage`] is implemented by the firmware on
//! Zephyr's settings subsystem (ZMS or NVS), which already makes every write power-fail safe and
//! wear-levelled, so there is no file system or journal here. On the host it is [`MemStorage`]
//! (tests) or the simulator's file store. Keys follow the settings subsystem (`bms/settings`,
//! `bms/soc`, `bms/point`, `bms/hist`, `bms/hpt`, `bms/hcnt`, `bms/nonce`, `bms/secrets`,
//! `bms/learn`, `bms/name`), and every
//! value is at most [`MAX_RECORD_LEN`] bytes.
//!
//! - [`record`]: the envelope of every value (kind, format version, postcard body, CRC-32; or
//!   the 8-byte compact form with a CRC-16) and the versioned decoding, which reads every older
//!   format version.
//! - [`soc`]: the SoC state as a whole record plus a compact point written at every point of
//!   SoC (MON-8), so that the frequent write fits inside one ZMS entry.
//! - [`hist`]: the history as a whole record plus two compact points (fast counters, counted
//!   items) written at most every 10 minutes while it changes (MON-8).
//! - [`learned`]: what the adaptive SoC estimator learned, written rarely.
//! - [`persist`]: [`Persistence`], which writes what is due and restores everything at start,
//!   each record on its own.

use core::fmt;

use heapless::{LinearMap, String, Vec};

use crate::word::Number;

pub mod hist;
pub mod learned;
pub mod persist;
pub mod record;
pub mod soc;
#[cfg(test)]
mod week_tests;

pub use hist::{HistoryCounts, HistoryPoint, HistoryStored};
pub use learned::LearnedRecord;
pub use persist::{Outcome, Persistence, PollReport, RecordStats, Records, Restored};
pub use record::{
    decode_record, encode_record, Nonce, Record, RecordError, RecordKind, MAX_RECORD_LEN,
};
pub use soc::{SocPoint, SocRecord};

/// Longest key in bytes (Zephyr's settings names allow more; the C port copies keys into a
/// 16-byte buffer with the NUL).
pub const MAX_KEY_LEN: usize = 15;

/// Why a [`Storage`] operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageError {
    /// Nothing is stored under the key.
    NotFound,
    /// The stored value does not fit the buffer given to [`Storage::read`].
    TooLarge {
        /// Length of the stored value in bytes, when the store knows it (0 otherwise).
        len: usize,
    },
    /// The store has no room for the value, or the key is longer than [`MAX_KEY_LEN`].
    Full,
    /// The platform store failed; `code` is its status (a negative errno on Zephyr).
    Io {
        /// The platform's status code.
        code: i32,
    },
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::NotFound => f.write_str("no value stored under the key"),
            StorageError::TooLarge { len } => {
                write!(
                    f,
                    "stored value of {} bytes does not fit the buffer",
                    Number::from(*len)
                )
            }
            StorageError::Full => f.write_str("storage full"),
            StorageError::Io { code } => write!(f, "storage i/o error {}", Number::from(*code)),
        }
    }
}

/// A key → bytes store whose every write is atomic: after a power loss or a failed write, a
/// read returns either the previous value or the new one, never a mix. Zephyr's settings
/// subsystem gives exactly this; every operation may fail.
pub trait Storage {
    /// Reads the value under `key` into `buf`; returns its length. [`StorageError::NotFound`]
    /// when absent.
    fn read(&mut self, key: &str, buf: &mut [u8]) -> Result<usize, StorageError>;
    /// Replaces the value under `key` with `value`. On error the previous value stays readable.
    fn write(&mut self, key: &str, value: &[u8]) -> Result<(), StorageError>;
    /// Removes the value under `key`; removing an absent key succeeds.
    fn delete(&mut self, key: &str) -> Result<(), StorageError>;
}

impl<S: Storage + ?Sized> Storage for &mut S {
    fn read(&mut self, key: &str, buf: &mut [u8]) -> Result<usize, StorageError> {
        (**self).read(key, buf)
    }
    fn write(&mut self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        (**self).write(key, value)
    }
    fn delete(&mut self, key: &str) -> Result<(), StorageError> {
        (**self).delete(key)
    }
}

/// Keys a [`MemStorage`] holds.
pub const MEM_STORAGE_KEYS: usize = 10;

/// An in-memory [`Storage`] of fixed size (no heap): up to [`MEM_STORAGE_KEYS`] keys of up to
/// [`MAX_RECORD_LEN`] bytes each. For tests, the simulator without `--state`, and a device
/// without flash. Counts the writes and bytes it was given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemStorage {
    values: LinearMap<String<MAX_KEY_LEN>, Vec<u8, MAX_RECORD_LEN>, MEM_STORAGE_KEYS>,
    writes: u64,
    bytes_written: u64,
}

impl MemStorage {
    /// An empty store.
    pub const fn new() -> Self {
        MemStorage {
            values: LinearMap::new(),
            writes: 0,
            bytes_written: 0,
        }
    }

    /// The stored value under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        let key = String::try_from(key).ok()?;
        self.values.get(&key).map(|v| v.as_slice())
    }

    /// Successful writes so far.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Value bytes of the successful writes so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }
}

impl Storage for MemStorage {
    fn read(&mut self, key: &str, buf: &mut [u8]) -> Result<usize, StorageError> {
        let value = self.get(key).ok_or(StorageError::NotFound)?;
        let dst = buf
            .get_mut(..value.len())
            .ok_or(StorageError::TooLarge { len: value.len() })?;
        dst.copy_from_slice(value);
        Ok(value.len())
    }

    fn write(&mut self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        let key = String::try_from(key).map_err(|_| StorageError::Full)?;
        let value = Vec::from_slice(value).map_err(|_| StorageError::Full)?;
        let len = value.len() as u64;
        self.values
            .insert(key, value)
            .map_err(|_| StorageError::Full)?;
        self.writes = self.writes.saturating_add(1);
        self.bytes_written = self.bytes_written.saturating_add(len);
        Ok(())
    }

    fn delete(&mut self, key: &str) -> Result<(), StorageError> {
        if let Ok(key) = String::<MAX_KEY_LEN>::try_from(key) {
            self.values.remove(&key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_storage_reads_what_was_written_and_reports_absent_keys() {
        let mut store = MemStorage::new();
        let mut buf = [0u8; 8];
        assert_eq!(store.read("bms/soc", &mut buf), Err(StorageError::NotFound));
        store.write("bms/soc", &[1, 2, 3]).unwrap();
        store.write("bms/soc", &[4, 5]).unwrap();
        assert_eq!(store.read("bms/soc", &mut buf), Ok(2));
        assert_eq!(&buf[..2], &[4, 5]);
        assert_eq!((store.writes(), store.bytes_written()), (2, 5));
        store.delete("bms/soc").unwrap();
        store.delete("bms/soc").unwrap();
        assert_eq!(store.read("bms/soc", &mut buf), Err(StorageError::NotFound));
    }

    #[test]
    fn mem_storage_refuses_what_does_not_fit_and_keeps_the_old_value() {
        let mut store = MemStorage::new();
        store.write("k", &[7]).unwrap();
        assert_eq!(
            store.write("k", &[0; MAX_RECORD_LEN + 1]),
            Err(StorageError::Full)
        );
        assert_eq!(store.get("k"), Some(&[7][..]));
        assert_eq!(
            store.write("a-key-that-is-far-too-long", &[1]),
            Err(StorageError::Full)
        );
        let mut small = [0u8; 0];
        assert_eq!(
            store.read("k", &mut small),
            Err(StorageError::TooLarge { len: 1 })
        );
        for i in 0..MEM_STORAGE_KEYS - 1 {
            store.write(&std::format!("key{i}"), &[1]).unwrap();
        }
        assert_eq!(store.write("one-more", &[1]), Err(StorageError::Full));
    }

    #[test]
    fn storage_errors_display_in_lowercase() {
        for e in [
            StorageError::NotFound,
            StorageError::TooLarge { len: 3 },
            StorageError::Full,
            StorageError::Io { code: -5 },
        ] {
            let text = e.to_string();
            assert!(text.chars().next().unwrap().is_lowercase(), "{text}");
        }
    }
}
