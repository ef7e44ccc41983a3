//! What the adaptive SoC estimator has learned (sensor offset, counting error, OCV table biases,
//! usable capacity) on flash under `bms/learn`, so that a reboot continues from it instead of
//! the priors (MON-8: the SoC a reboot restores is only as good as what it is counted with).
//!
//! The record is [`Learned`] itself (postcard body, full envelope with CRC-32; 87–91 bytes).
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

use super::record::{Record, RecordKind};
use crate::estimator::Learned;

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

impl Record for Learned {
    const KIND: RecordKind = RecordKind::Learned;
    const VERSION: u8 = 1;
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
                !((value - was).abs() <= LEARNED_STEP_SIGMAS * sigma)
                    || sigma < LEARNED_SHRINK * was_sigma
            })
}

/// Every learned value with its σ.
fn pairs(learned: &Learned) -> [(f32, f32); 4 + crate::estimator::LOW_BINS] {
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
