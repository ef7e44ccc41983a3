//! Fuzzes the GATT request handler with the real `Bms` (BLE-4): the first input byte picks the
//! characteristic, the second the access and link security, the rest is the request. Every
//! input must get a well-formed response, and a refused one must change nothing.
#![no_main]

use std::sync::OnceLock;

use bms_core::bms::{Config, Inputs};
use bms_core::bus::{BatteryFlags, BatteryModel, BatteryReport};
use bms_core::protocol::{
    decode_response, handle_request, Access, BmsDevice, Device, DeviceSecrets, Status,
    MAX_RESPONSE_LEN,
};
use bms_core::Bms;
use libfuzzer_sys::fuzz_target;

/// A BMS with a two-battery bank, built once and cloned for every input.
fn bms() -> &'static Bms {
    static BMS: OnceLock<Bms> = OnceLock::new();
    BMS.get_or_init(|| {
        let mut bms = Bms::new(Config {
            device_key: [0x5A; 16],
            ..Config::default()
        });
        for t in (0..=3_000).step_by(500) {
            for serial in [7, 3] {
                let report = BatteryReport {
                    serial,
                    model: BatteryModel::Lfp12V8,
                    capacity_dah: 1000,
                    firmware: 0x0100,
                    cells_mv: heapless::Vec::from_slice(&[3300, 3310, 3305, 3302]).unwrap(),
                    temps_ddegc: heapless::Vec::from_slice(&[210]).unwrap(),
                    current_ma: 1500,
                    flags: BatteryFlags {
                        allowed_to_charge: true,
                        allowed_to_discharge: true,
                        balancing: false,
                    },
                };
                bms.handle_report(t, &report).unwrap();
            }
            let _ = bms.step(
                t,
                &Inputs {
                    supply_mv: 13_217,
                    ..Inputs::default()
                },
            );
        }
        bms
    })
}

/// Everything a request may change, as comparable values.
fn snapshot(device: &BmsDevice<'_>) -> impl PartialEq + std::fmt::Debug {
    (
        device.settings(),
        device.history_page(),
        device.status_page(),
        device.bms.soc_record(),
        *device.secrets,
    )
}

fuzz_target!(|data: &[u8]| {
    let [characteristic, flags, req @ ..] = data else {
        return;
    };
    let mut bms = bms().clone();
    let mut secrets = DeviceSecrets {
        passkey: DeviceSecrets::DEFAULT_PASSKEY,
        adv_key: [0x5A; 16],
    };
    let mut device = BmsDevice {
        bms: &mut bms,
        secrets: &mut secrets,
    };
    let before = snapshot(&device);
    let access = if flags & 1 == 1 {
        Access::Write
    } else {
        Access::Read
    };
    let authenticated = flags & 2 == 2;
    let mut resp = [0u8; MAX_RESPONSE_LEN];
    let reply = handle_request(
        &mut device,
        5_000,
        *characteristic,
        access,
        authenticated,
        req,
        &mut resp,
    )
    .expect("the buffer holds MAX_RESPONSE_LEN");
    assert!(reply.len >= 2 && reply.len <= MAX_RESPONSE_LEN);
    assert_eq!(
        decode_response(&resp[..reply.len]).map(|r| r.0),
        Ok(reply.status)
    );
    if reply.status != Status::Ok || (access == Access::Write && !authenticated) {
        assert_eq!(snapshot(&device), before, "a refused request changed state");
    }
});
