//! The device's secrets (BLE-2, BLE-3): the pairing passkey and the Instant Readout key, as the
//! core holds them and the storage layer persists them. Their own module so that the core, the
//! store and the GATT protocol all depend on it and not on one another.

use serde::{Deserialize, Serialize};

/// Highest BLE passkey (six decimal digits).
pub const MAX_PASSKEY: u32 = 999_999;

/// The device's security record: the pairing passkey and the Instant Readout key. Persisted
/// by the storage layer; the firmware applies the passkey to the BLE stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSecrets {
    /// Pairing passkey, 0–999999 (BLE-2; default [`DeviceSecrets::DEFAULT_PASSKEY`]).
    pub passkey: u32,
    /// The Instant Readout key (BLE-3), generated once per device by the firmware.
    pub adv_key: [u8; 16],
}

impl DeviceSecrets {
    /// The factory passkey, 000000 (BLE-2).
    pub const DEFAULT_PASSKEY: u32 = 0;
}
