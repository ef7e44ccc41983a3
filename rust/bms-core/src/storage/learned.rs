//! What the adaptive SoC estimator has learned (sensor offset, counting error, OCV table biases,
//! usable capacity) on flash under `bms/learn`, so that a reboot continues from it instead of
//! the priors (MON-8: the SoC a reboot restores is only as good as what it is counted with).
//!
//! The record is [`LearnedRecord`]: [`Learned`] as fixed little-endian words in a postcard byte
//! string, in the full envelope with CRC-32 (91 bytes). Fixed words rather than serde's derive
//! of the struct: the firmware's flash budget has no room for a visitor per tuple and array.
//! Values out of range are not refused here: the estimator's `restore_learned` ignores such a
//! record as a whole and learning starts over from the priors. A grown uncertainty is no damage,
//! so it raises no error.
//!
//! Write policy ([`needs_write`], applied by [`super::Persistence`]): only when something was
//! learned, at most once per [`LEARNED_INTERVAL_MS`]. Learning is slow (a synchronisation, a
//! float period, a rest in a knee teaches a little each); routine refinements move a value by a
//! fraction of its uncertainty and are not worth flash wear, while a lesson that changes what a
//! reboot would restore is written at once (the record was last written hours ago, if ever).
//! Writes are not tied to a synchronisation: the rarest lessons (the capacity, the deep-knee
//! bias) come from rests near empty, where a BMS powered by its bank is the most likely to lose
//! power before the next full charge. The interval is a hard cap, not the expected rate (about
//! one write a day while learning, none once settled): even written at every chance, the
//! record leaves the worst-case day of docs/persistence.md above 20 years of flash life.

use core::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::record::{Record, RecordKind};
use crate::soc::adaptive::{Learned, LOW_BINS};

/// Learned values, each with its σ.
const PAIRS: usize = 4 + LOW_BINS;

/// Length of the record's body: the capacity (u32) and every value and σ (f32).
pub const LEARNED_BODY_LEN: usize = 4 + 8 * PAIRS;

/// Shortest time between two writes of the learned record, in ms: at most 6 writes (672 flash
/// bytes) a day whatever the estimator does. Hourly writes at the cap would cost the worst-case
/// day 2.7 KB and bring it below 20 years on a 32 KiB partition.
pub const LEARNED_INTERVAL_MS: u64 = 4 * 60 * 60_000;

/// A value is worth writing once it moved by more than this many of its σ from the stored one:
/// restoring a value that far off adds at most 12 % to its uncertainty (√(1 + 0.5²)).
pub const LEARNED_STEP_SIGMAS: f32 = 0.5;

/// ...or once its σ fell below this fraction of the stored σ (a reading confirmed it). A σ that
/// grew (the values may have wandered) writes nothing: the stored, smaller one grows again
/// after a reboot.
pub const LEARNED_SHRINK: f32 = 0.75;

/// [`Learned`] as stored: the capacity (u32 LE), then value and σ (f32 LE) of the offset, the
/// counting error, the table bias near full, the capacity factor and the six lower-region table
/// biases, as one postcard byte string of [`LEARNED_BODY_LEN`] bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LearnedRecord(pub Learned);

impl Record for LearnedRecord {
    const KIND: RecordKind = RecordKind::Learned;
    const VERSION: u8 = 1;
}

impl Serialize for LearnedRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let learned = &self.0;
        let mut bytes = [0u8; LEARNED_BODY_LEN];
        if let Some((capacity, words)) = bytes.split_first_chunk_mut::<4>() {
            *capacity = learned.capacity_mah.to_le_bytes();
            for (word, (value, sigma)) in words.chunks_exact_mut(8).zip(pairs(learned)) {
                if let Some((v, s)) = word.split_first_chunk_mut::<4>() {
                    *v = value.to_le_bytes();
                    s.copy_from_slice(&sigma.to_le_bytes());
                }
            }
        }
        serializer.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for LearnedRecord {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(BodyVisitor)
    }
}

struct BodyVisitor;

impl Visitor<'_> for BodyVisitor {
    type Value = LearnedRecord;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the learned values")
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<LearnedRecord, E> {
        let Some((capacity, words)) = bytes
            .split_first_chunk::<4>()
            .filter(|_| bytes.len() == LEARNED_BODY_LEN)
        else {
            return Err(E::custom("learned record body of another length"));
        };
        let mut pairs = [(0.0, 0.0); PAIRS];
        for (pair, word) in pairs.iter_mut().zip(words.chunks_exact(8)) {
            if let (Some(value), Some(sigma)) = (word.first_chunk(), word.last_chunk()) {
                *pair = (f32::from_le_bytes(*value), f32::from_le_bytes(*sigma));
            }
        }
        let [offset_ma, throughput_error, table_bias_high, capacity_factor, low @ ..] = pairs;
        Ok(LearnedRecord(Learned {
            capacity_mah: u32::from_le_bytes(*capacity),
            offset_ma,
            throughput_error,
            table_bias_low: low,
            table_bias_high,
            capacity_factor,
        }))
    }
}

/// True when `now` has learned enough beyond `stored` (the record the store holds) to be
/// written: another bank capacity, a value moved by more than [`LEARNED_STEP_SIGMAS`] σ, or a σ
/// shrunk below [`LEARNED_SHRINK`] of the stored one. A value that is not a number is written
/// (the restore then refuses it and learning starts over, as it would after a reboot anyway).
pub fn needs_write(stored: &Learned, now: &Learned) -> bool {
    stored.capacity_mah != now.capacity_mah
        || pairs(stored)
            .iter()
            .zip(pairs(now))
            .any(|(&(was, was_sigma), (value, sigma))| {
                // False for NaN, so a value that is not a number counts as moved.
                let near = (value - was).abs() <= LEARNED_STEP_SIGMAS * sigma;
                !near || sigma < LEARNED_SHRINK * was_sigma
            })
}

/// Every learned value with its σ, in the stored order.
#[inline(never)]
fn pairs(learned: &Learned) -> [(f32, f32); PAIRS] {
    let [a, b, c, d, e, f] = learned.table_bias_low;
    [
        learned.offset_ma,
        learned.throughput_error,
        learned.table_bias_high,
        learned.capacity_factor,
        a,
        b,
        c,
        d,
        e,
        f,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::record::tests::sample_learned;

    #[test]
    fn routine_refinement_is_not_written_and_a_lesson_is() {
        let stored = sample_learned();
        let (offset, sigma) = stored.offset_ma;
        let refined = Learned {
            offset_ma: (offset + 0.4 * sigma, sigma * 0.9),
            ..stored
        };
        assert!(!needs_write(&stored, &refined));
        let grown = Learned {
            table_bias_high: (stored.table_bias_high.0, stored.table_bias_high.1 * 3.0),
            ..stored
        };
        assert!(!needs_write(&stored, &grown), "a grown sigma is no lesson");
        let lessons = [
            Learned {
                offset_ma: (offset + 0.6 * sigma, sigma),
                ..stored
            },
            Learned {
                offset_ma: (offset - 0.6 * sigma, sigma),
                ..stored
            },
            Learned {
                capacity_factor: (stored.capacity_factor.0, stored.capacity_factor.1 * 0.7),
                ..stored
            },
            Learned {
                table_bias_low: {
                    let mut low = stored.table_bias_low;
                    low[5].0 += low[5].1;
                    low
                },
                ..stored
            },
            Learned {
                throughput_error: (f32::NAN, stored.throughput_error.1),
                ..stored
            },
            Learned {
                capacity_mah: stored.capacity_mah + 1,
                ..stored
            },
        ];
        for now in lessons {
            assert!(needs_write(&stored, &now), "{now:?}");
        }
    }
}
