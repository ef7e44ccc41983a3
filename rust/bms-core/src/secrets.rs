//! The device's secrets (BLE-2, BLE-3): the pairing passkey, the Instant Readout key and the
//! read-protection choice, as the core holds them and the storage layer persists them. Their own
//! module so that the core, the store and the GATT protocol all depend on it and not on one
//! another.

use serde::{Deserialize, Serialize};

/// Highest BLE passkey (six decimal digits).
pub const MAX_PASSKEY: u32 = 999_999;

/// Lowest passkey the device uses or accepts: 000000 is what every unconfigured device has, so
/// it is never one (BLE-2 rev 2).
pub const MIN_PASSKEY: u32 = 1;

/// The device's security record: the pairing passkey, the Instant Readout key and whether
/// monitoring reads need a bond. Persisted by the storage layer; the firmware applies the
/// passkey to the BLE stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSecrets {
    /// Pairing passkey, [`MIN_PASSKEY`]–[`MAX_PASSKEY`] (BLE-2): made per unit from the random
    /// source at the first start ([`passkey_from_random`]).
    pub passkey: u32,
    /// The Instant Readout key (BLE-3), generated once per device by the firmware.
    pub adv_key: [u8; 16],
    /// BLE-2 **(choice)**: monitoring reads need an authenticated (bonded) link too. Off by
    /// default, like the product.
    pub read_protection: bool,
    /// BLE-2 **(choice)**: failed pairing attempts against this passkey (saturating), kept
    /// with it so that a restart does not forget what guessers learned of it: at
    /// [`crate::limits::PASSKEY_MAX_FAILED_ATTEMPTS`] the passkey is worn
    /// ([`crate::pairing::Pairing::passkey_worn`]). 0 for a new passkey.
    pub failed_pairings: u8,
    /// BLE-3: the first Instant Readout nonce used under `adv_key`
    /// ([`crate::readout::Advertiser::key_first_nonce`]), kept with the key so that the nonces
    /// it has spent are still counted after a restart and the key is renewed before the 16-bit
    /// counter comes round to them ([`crate::readout::NONCES_PER_KEY`]). `None` when not known:
    /// a record before version 4 (counted from the nonce reservation restored with it), or a
    /// new key (it starts at the advertiser's next nonce).
    pub key_first_nonce: Option<u16>,
}

impl DeviceSecrets {
    /// The passkey of firmware before per-unit passkeys, 000000: a stored record that still
    /// holds it gets a new passkey at the next start.
    pub const DEFAULT_PASSKEY: u32 = 0;

    /// New secrets from 24 random bytes: a passkey ([`passkey_from_random`]) and a key; read
    /// protection off, no failed pairing.
    pub fn from_random(bytes: &[u8; 24]) -> DeviceSecrets {
        let (key, rest) = bytes.split_at(16);
        let mut adv_key = [0u8; 16];
        adv_key.copy_from_slice(key);
        let mut seed = [0u8; 8];
        seed.copy_from_slice(rest);
        DeviceSecrets {
            passkey: passkey_from_random(seed),
            adv_key,
            read_protection: false,
            failed_pairings: 0,
            key_first_nonce: None,
        }
    }
}

/// A passkey in [`MIN_PASSKEY`]..=[`MAX_PASSKEY`] from 8 random bytes (the modulo bias of a
/// 64-bit value over 999 999 values is below 10⁻¹³).
pub fn passkey_from_random(seed: [u8; 8]) -> u32 {
    let span = u64::from(MAX_PASSKEY - MIN_PASSKEY + 1);
    let value = u64::from_le_bytes(seed) % span;
    // Below MAX_PASSKEY, so the conversion never fails.
    u32::try_from(value).unwrap_or(0) + MIN_PASSKEY
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BLE-2: a passkey made from any random bytes is six digits and never 000000.
    #[test]
    fn ble_2_passkey_from_random_is_never_zero() {
        for seed in [
            [0u8; 8],
            [0xFF; 8],
            999_999u64.to_le_bytes(),
            1u64.to_le_bytes(),
        ] {
            let passkey = passkey_from_random(seed);
            assert!((MIN_PASSKEY..=MAX_PASSKEY).contains(&passkey), "{passkey}");
        }
        assert_eq!(passkey_from_random(999_999u64.to_le_bytes()), 1);
        assert_ne!(
            passkey_from_random(7u64.to_le_bytes()),
            passkey_from_random(8u64.to_le_bytes())
        );
    }
}
