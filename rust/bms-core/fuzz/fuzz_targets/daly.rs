//! Fuzzes the Daly decoder: any bytes are a response or a bad frame, never a panic; a decoded
//! frame re-encodes to the same bytes, and applying it to a pack of any cell and sensor count
//! is refused or taken, never a panic; the poller fed the same bytes (split where the first byte
//! says) reports only packs whose cells make a battery.
#![no_main]

use bms_core::drivers::daly;
use bms_core::drivers::poller::Poller;
use bms_core::drivers::{LineConfig, PackData, Protocol, MAX_REQUEST_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (counts, frame) = data.split_at(data.len().min(2));
    if let Ok(r) = daly::decode(frame) {
        let mut again = [0u8; daly::FRAME_LEN];
        daly::encode_response(r.board, r.id, &r.data, &mut again);
        assert_eq!(&again[..], frame);
        let (cells, temps) = match *counts {
            [c, t] => (c, t),
            _ => (16, 2),
        };
        let _ = daly::apply(&r, cells, temps, &mut PackData::default());
        let _ = daly::counts(&r.data);
    }
    let _ = daly::decode_request(frame);
    let mut poller = Poller::new(LineConfig::new(Protocol::Daly, 0, &[1, 2]).unwrap());
    let split = usize::from(data.first().copied().unwrap_or(0)).min(data.len());
    let (a, b) = data.split_at(split);
    let mut tx = [0u8; MAX_REQUEST_LEN];
    for (now, chunk) in [(0, a), (1, b), (2_000, data)] {
        poller.poll(now, &mut tx);
        poller.receive(now, chunk, |r| {
            assert!(matches!(r.report.cells_mv.len(), 4 | 8 | 16));
        });
    }
});
