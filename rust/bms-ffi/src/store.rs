//! The core's [`Storage`] over `bms_port_storage_*`: every record (settings, SoC, history,
//! nonce, device secrets) goes through it.

use bms_core::storage::{Storage, StorageError};

use crate::abi::{BMS_ENOENT, BMS_ENOSPC};
use crate::port;

/// Record storage through the platform's `bms_port_storage_*` functions.
pub(crate) struct PortStorage;

fn storage_error(code: i32, len: usize) -> StorageError {
    match code {
        BMS_ENOENT => StorageError::NotFound,
        BMS_ENOSPC => StorageError::TooLarge { len },
        code => StorageError::Io { code },
    }
}

impl Storage for PortStorage {
    fn read(&mut self, key: &str, buf: &mut [u8]) -> Result<usize, StorageError> {
        port::storage_read(key, buf)
            .map_err(|code| storage_error(code, buf.len().saturating_add(1)))
    }

    fn write(&mut self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        port::storage_write(key, value).map_err(|code| match code {
            BMS_ENOSPC => StorageError::Full,
            code => StorageError::Io { code },
        })
    }

    fn delete(&mut self, key: &str) -> Result<(), StorageError> {
        port::storage_delete(key).map_err(|code| storage_error(code, 0))
    }
}
