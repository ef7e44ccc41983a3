//! The whole BMS persisting through `storage::Persistence`: what survives a reboot, device
//! secrets (BLE-2, BLE-3), storage errors (SET-3) and the persistence glue every caller uses.

mod control_harness;

use bms_core::bms::PasskeyError;
use bms_core::protocol::DeviceSecrets;
use bms_core::storage::{MemStorage, Persistence, RecordKind};
use bms_core::{Bms, Config};

const KEY: [u8; 16] = [0x3C; 16];

/// BLE-2: the passkey is 000000 from the factory, changeable to any 6-digit value, and a
/// change beyond 999999 is refused without changing anything; BLE-3: the key is the caller's.
#[test]
fn ble_2_passkey_default_changeable_and_checked() {
    let mut bms = Bms::new(Config {
        device_key: KEY,
        persist_secrets: true,
        ..Config::default()
    });
    assert_eq!(bms.passkey(), 0);
    assert_eq!(
        bms.secrets(),
        DeviceSecrets {
            passkey: 0,
            adv_key: KEY
        }
    );
    assert_eq!(bms.set_passkey(999_999), Ok(()));
    assert_eq!(
        bms.set_passkey(1_000_000),
        Err(PasskeyError::OutOfRange { max: 999_999 })
    );
    assert_eq!(bms.passkey(), 999_999);
    assert_eq!(bms.secrets_to_persist().map(|s| s.passkey), Some(999_999));
    // A passkey restored out of range is never applied.
    let bms = Bms::new(Config {
        passkey: 1_234_567,
        ..Config::default()
    });
    assert_eq!(bms.passkey(), DeviceSecrets::DEFAULT_PASSKEY);
    assert_eq!(
        bms.secrets_to_persist(),
        None,
        "a placeholder key is not stored"
    );
}

/// BLE-2, BLE-3: the passkey and the key are persisted like the other records and restored
/// after a reboot.
#[test]
fn ble_2_ble_3_secrets_survive_a_reboot() {
    let mut store = MemStorage::new();
    let (mut persistence, restored) = Persistence::restore(&mut store);
    assert!(restored.first_boot());
    let mut bms = Bms::new(Config {
        device_key: KEY,
        persist_secrets: true,
        ..Config::default()
    });
    bms.set_passkey(424_242).unwrap();
    let records = bms_core::storage::Records {
        secrets: bms.secrets_to_persist(),
        ..Default::default()
    };
    let report = persistence.poll(&mut store, 0, &records);
    assert!(!report.any_failed());
    let (_, restored) = Persistence::restore(&mut store);
    assert_eq!(
        restored.secrets,
        Ok(DeviceSecrets {
            passkey: 424_242,
            adv_key: KEY
        })
    );
    assert_eq!(restored.fault(RecordKind::Secrets), None);
}
