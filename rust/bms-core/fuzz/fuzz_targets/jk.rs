//! Fuzzes the JK-PB decoder: any bytes are a status frame, an echo or a bad frame, never a
//! panic; a decoded status frame re-encodes to a frame that decodes the same; the poller fed the
//! same bytes (split where the first byte says) reports only packs whose cells make a battery.
#![no_main]

use bms_core::drivers::jk::{self, Frame};
use bms_core::drivers::poller::Poller;
use bms_core::drivers::{LineConfig, Protocol, MAX_REQUEST_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Frame::Status(pack)) = jk::decode(data) {
        let mut frame = [0u8; jk::STATUS_FRAME_LEN];
        jk::encode_status(&pack, data[5], &mut frame);
        assert_eq!(jk::decode(&frame), Ok(Frame::Status(pack)));
    }
    let _ = jk::decode_request(data);
    let mut poller = Poller::new(LineConfig::new(Protocol::Jk, 0, &[1, 2]).unwrap());
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
