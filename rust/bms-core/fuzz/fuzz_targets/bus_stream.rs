//! Fuzzes the battery-bus byte stream through the device (issue 15 item 10): any bytes, cut
//! into chunks anywhere, fed to a node between control steps. Never panics, and where the
//! stream is cut never changes what is decoded: the same bytes fed whole give the same frame
//! counts and the same reports taken.
//!
//! The input is a cut byte (bit i set: cut after byte i of each 8-byte group, so any chunking
//! is reachable), then the stream.
#![no_main]

use bms_core::node::Node;
use bms_core::storage::MemStorage;
use bms_core::Inputs;
use libfuzzer_sys::fuzz_target;

fn node() -> Node<MemStorage> {
    Node::open(MemStorage::default(), &mut |out: &mut [u8]| {
        out.fill(0x5A);
        true
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, stream)) = data.split_first() else {
        return;
    };
    let inputs = Inputs {
        supply_mv: 13_200,
        ..Inputs::default()
    };
    let mut chunked = node();
    let mut taken_chunked = 0;
    let mut start = 0;
    for i in 0..stream.len() {
        if cuts & (1 << (i % 8)) != 0 || i + 1 == stream.len() {
            taken_chunked += chunked.feed_bus(1_000, &stream[start..=i]);
            start = i + 1;
            let _ = chunked.step(1_000, &inputs);
        }
    }
    let mut whole = node();
    let taken_whole = whole.feed_bus(1_000, stream);
    let _ = whole.step(1_000, &inputs);
    assert_eq!(
        taken_chunked, taken_whole,
        "the cut changed the reports taken"
    );
    assert_eq!(
        chunked.bus_stats(),
        whole.bus_stats(),
        "the cut changed the frame counts"
    );
});
