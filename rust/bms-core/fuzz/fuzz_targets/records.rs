//! Fuzzes restoring from flash (SET-3, MON-8): whatever the stored values of every record kind
//! are, restoring and starting the BMS never panics, and what the BMS then writes is restored
//! without a fault.
//!
//! The input is a mode byte, then one stored value per record kind: a length byte, then that
//! many bytes (0xFF: the record is absent). With the mode's bit 0 set each value is taken as
//! version and body and sealed here with its kind and CRC, so that the fuzzer reaches the
//! decoders and the range checks behind the CRC; otherwise the bytes are stored as they are.
#![no_main]

use bms_core::node::Node;
use bms_core::storage::record::{CRC, CRC16};
use bms_core::storage::{MemStorage, Persistence, RecordKind, Storage};
use bms_core::Inputs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut storage = MemStorage::default();
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    for kind in RecordKind::ALL {
        let Some((&len, tail)) = rest.split_first() else {
            break;
        };
        if len == 0xFF {
            rest = tail;
            continue;
        }
        let take = usize::from(len).min(tail.len());
        let (value, tail) = tail.split_at(take);
        if mode & 1 == 1 {
            let _ = storage.write(kind.key(), &seal(kind, value));
        } else {
            let _ = storage.write(kind.key(), value);
        }
        rest = tail;
    }

    let mut random = |out: &mut [u8]| {
        out.fill(0x5A);
        true
    };
    let mut node = Node::open(storage, &mut random);
    let inputs = Inputs {
        supply_mv: 13_300,
        ..Inputs::default()
    };
    for step in 0..3u64 {
        let _ = node.step(step * 1000, &inputs);
    }
    let written = RecordKind::ALL.map(|kind| node.persistence().stats(kind).writes > 0);
    let mut storage = node.into_storage();

    // What the BMS wrote is its own, so it restores without a fault.
    let (_, again) = Persistence::restore(&mut storage);
    for (index, kind) in RecordKind::ALL.into_iter().enumerate() {
        if written[index] {
            assert_eq!(
                again.error(kind),
                None,
                "{kind} written by the BMS does not restore"
            );
        }
    }
});

/// `version_and_body` in the envelope of `kind` with a correct CRC (docs/persistence.md).
fn seal(kind: RecordKind, version_and_body: &[u8]) -> Vec<u8> {
    // The compact records (docs/persistence.md): version, body, CRC-16 over kind and bytes.
    if matches!(
        kind,
        RecordKind::SocPoint | RecordKind::HistoryPoint | RecordKind::HistoryCounts
    ) {
        let mut digest = CRC16.digest();
        digest.update(&[kind as u8]);
        digest.update(version_and_body);
        let mut sealed = version_and_body.to_vec();
        sealed.extend_from_slice(&digest.finalize().to_le_bytes());
        sealed
    } else {
        let mut sealed = vec![kind as u8];
        sealed.extend_from_slice(version_and_body);
        let crc = CRC.checksum(&sealed);
        sealed.extend_from_slice(&crc.to_le_bytes());
        sealed
    }
}
