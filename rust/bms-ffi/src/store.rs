//! The core's [`Storage`] over `bms_port_storage_*`, and the device secrets record (pairing
//! passkey and Instant Readout key), which bms-core does not persist itself.

use bms_core::protocol::DeviceSecrets;
use bms_core::storage::record::CRC;
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

/// Key of the secrets record.
pub(crate) const SECRETS_KEY: &str = "bms/secrets";
/// Format version of the secrets record (its first byte).
const SECRETS_VERSION: u8 = 1;
/// Longest encoded secrets record: version, passkey varint, key, CRC-32.
const SECRETS_BYTES: usize = 1 + 5 + 16 + 4;

/// Why the secrets could not be restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SecretsError {
    /// No record: the first start of this device.
    Missing,
    /// The storage failed.
    Storage(StorageError),
    /// The record is corrupt, of an unknown version or out of range.
    Corrupt,
}

impl core::fmt::Display for SecretsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SecretsError::Missing => f.write_str("no secrets stored"),
            SecretsError::Storage(err) => write!(f, "secrets not read: {err}"),
            SecretsError::Corrupt => f.write_str("secrets record corrupt"),
        }
    }
}

/// Reads the secrets record.
pub(crate) fn load_secrets(storage: &mut impl Storage) -> Result<DeviceSecrets, SecretsError> {
    let mut buf = [0u8; SECRETS_BYTES];
    let len = storage
        .read(SECRETS_KEY, &mut buf)
        .map_err(|err| match err {
            StorageError::NotFound => SecretsError::Missing,
            StorageError::TooLarge { .. } => SecretsError::Corrupt,
            err => SecretsError::Storage(err),
        })?;
    let bytes = buf.get(..len).ok_or(SecretsError::Corrupt)?;
    let (version, secrets): (u8, DeviceSecrets) =
        postcard::from_bytes_crc32(bytes, CRC.digest()).map_err(|_| SecretsError::Corrupt)?;
    if version != SECRETS_VERSION || secrets.passkey > bms_core::protocol::MAX_PASSKEY {
        return Err(SecretsError::Corrupt);
    }
    Ok(secrets)
}

/// Writes the secrets record.
pub(crate) fn save_secrets(
    storage: &mut impl Storage,
    secrets: &DeviceSecrets,
) -> Result<(), StorageError> {
    let mut buf = [0u8; SECRETS_BYTES];
    let used = postcard::to_slice_crc32(&(SECRETS_VERSION, secrets), &mut buf, CRC.digest())
        .map_err(|_| StorageError::TooLarge { len: SECRETS_BYTES })?;
    storage.write(SECRETS_KEY, used)
}

#[cfg(test)]
mod tests {
    use bms_core::storage::MemStorage;

    use super::*;

    #[test]
    fn secrets_round_trip_and_corruption_is_detected() {
        let mut store = MemStorage::new();
        assert_eq!(load_secrets(&mut store), Err(SecretsError::Missing));
        let secrets = DeviceSecrets {
            passkey: 123_456,
            adv_key: [7; 16],
        };
        save_secrets(&mut store, &secrets).unwrap();
        assert_eq!(load_secrets(&mut store), Ok(secrets));

        let mut bytes = store.get(SECRETS_KEY).unwrap().to_vec();
        bytes[3] ^= 1;
        store.write(SECRETS_KEY, &bytes).unwrap();
        assert_eq!(load_secrets(&mut store), Err(SecretsError::Corrupt));
    }

    #[test]
    fn a_passkey_out_of_range_is_corrupt() {
        let mut store = MemStorage::new();
        let secrets = DeviceSecrets {
            passkey: 1_000_000,
            adv_key: [0; 16],
        };
        save_secrets(&mut store, &secrets).unwrap();
        assert_eq!(load_secrets(&mut store), Err(SecretsError::Corrupt));
    }
}
