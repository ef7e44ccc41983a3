//! Fuzzes the settings decoder (BLE-4): any bytes decode or are refused with a status, never a
//! panic; what decodes re-encodes to a value that decodes the same, and validation is total.
#![no_main]

use bms_core::protocol::{decode_settings, encode_request, Status, MAX_REQUEST_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_settings(data) {
        Ok(settings) => {
            let _ = settings.validate();
            let mut out = [0u8; MAX_REQUEST_LEN];
            let n = encode_request(&settings, &mut out).expect("settings fit a request");
            assert_eq!(decode_settings(&out[..n]), Ok(settings));
        }
        Err(status) => assert_ne!(status, Status::Ok),
    }
});
