//! The SoC state on flash as two records, so that the write MON-8 asks for at every point of SoC
//! fits inside one ZMS allocation-table entry.
//!
//! - [`SocRecord`] under `bms/soc`: the whole [`SocState`] (knowledge, capacity, charge counts,
//!   time since full, latches), a `generation`, the balancer's judgement and the under-voltage
//!   latch. Written when a slow field changes: knowledge, capacity, a latch (the under-voltage
//!   one included), a synchronisation (time since full restarts), every
//!   [`PERSIST_AGE_INTERVAL_MS`] of time since full, or when the counts do not fit a point.
//! - [`SocPoint`] under `bms/point`: the two charge counts as fractions of the capacity and the
//!   generation of the [`SocRecord`] they belong to; 8 bytes with version and CRC-16. Written
//!   at every other SoC write.
//!
//! At start a point applies only on top of the [`SocRecord`] of its own generation; otherwise the
//! record alone is restored. A new [`SocRecord`] always takes a generation different from the
//! point then stored (`stored point + 1`), so a point written before it can never apply to it,
//! whatever happens to power between the two writes.

use serde::{Deserialize, Serialize};

use super::record::{decode_exact, Record, RecordError, RecordKind};
use crate::monitor::{SocState, PERSIST_AGE_INTERVAL_MS};
use crate::muldiv::{mul_div, Rounding};
use crate::soc::NAS_PER_MAH;

/// [`SocPoint::used`] of a bank at 0 % (the whole capacity used).
pub const USED_FULL_SCALE: u16 = u16::MAX;

/// [`SocPoint::consumed`] units per capacity: a point holds consumed Ah up to 4 × the capacity
/// (beyond, the whole [`SocRecord`] is written).
pub const CONSUMED_PER_CAPACITY: u16 = 16_384;

/// The whole SoC state (MON-8) with the generation its [`SocPoint`]s carry, what the last
/// full charge showed of the cell balance (BAL-3), which holds as long as that charge does,
/// and the under-voltage disconnect latch (PROT-2), kept like the discharge-floor latch in
/// [`SocState`] so that a reboot does not re-allow a discharge the protection stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocRecord {
    /// Changes at every write of this record; a [`SocPoint`] applies only with the same value.
    pub generation: u8,
    /// The monitor's state when written.
    pub state: SocState,
    /// The balancer's judgement at the last full charge (`Some(true)`: balanced), `None` when
    /// there was none for this bank.
    pub balanced_at_full: Option<bool>,
    /// PROT-2: ATD was free-floating for under-voltage, which holds until every cell is at
    /// 3.20 V or more (`Protection::undervoltage_disconnect`); restored at start
    /// (`Protection::restore_undervoltage_disconnect`).
    pub undervoltage_disconnect: bool,
}

/// Version 2 of [`SocRecord`], before it held the balancer's judgement.
#[derive(Deserialize)]
struct SocRecordV2 {
    generation: u8,
    state: SocState,
}

/// Version 3 of [`SocRecord`], before it held the under-voltage latch.
#[derive(Deserialize)]
struct SocRecordV3 {
    generation: u8,
    state: SocState,
    balanced_at_full: Option<bool>,
}

impl Record for SocRecord {
    const KIND: RecordKind = RecordKind::Soc;
    /// Version 1 was the bare [`SocState`], before points existed (generation 0); version 2
    /// had no balancer judgement (restored as none: Unknown until the next full charge);
    /// version 3 had no under-voltage latch (read as not latched, which is how the firmware
    /// that wrote it restarted).
    const VERSION: u8 = 4;

    fn decode_body(version: u8, body: &[u8]) -> Result<Self, RecordError> {
        match version {
            1 => Ok(SocRecord {
                generation: 0,
                state: decode_exact(body)?,
                balanced_at_full: None,
                undervoltage_disconnect: false,
            }),
            2 => {
                let v2: SocRecordV2 = decode_exact(body)?;
                Ok(SocRecord {
                    generation: v2.generation,
                    state: v2.state,
                    balanced_at_full: None,
                    undervoltage_disconnect: false,
                })
            }
            3 => {
                let v3: SocRecordV3 = decode_exact(body)?;
                Ok(SocRecord {
                    generation: v3.generation,
                    state: v3.state,
                    balanced_at_full: v3.balanced_at_full,
                    undervoltage_disconnect: false,
                })
            }
            4 => decode_exact(body),
            version => Err(RecordError::UnknownVersion { version }),
        }
    }
}

/// The charge counts of the SoC state, compact enough to live inside a ZMS allocation-table
/// entry (8 bytes with version and CRC-16). Resolution: 1 / 65535 of the capacity for the SoC
/// (0.0015 %), 1 / 16384 of the capacity for consumed Ah.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocPoint {
    /// The [`SocRecord::generation`] this point belongs to.
    pub generation: u8,
    /// Charge used below full, in 1/[`USED_FULL_SCALE`] of the capacity (0 = full).
    #[serde(with = "postcard::fixint::le")]
    pub used: u16,
    /// Consumed Ah, in 1/[`CONSUMED_PER_CAPACITY`] of the capacity.
    #[serde(with = "postcard::fixint::le")]
    pub consumed: u16,
}

impl Record for SocPoint {
    const KIND: RecordKind = RecordKind::SocPoint;
    const VERSION: u8 = 1;
    const COMPACT: bool = true;
}

impl SocPoint {
    /// The point of `state` for the record of `generation`, or `None` when it cannot be
    /// represented (no capacity, or counts out of the point's range): write the whole record.
    pub fn of(state: &SocState, generation: u8) -> Option<SocPoint> {
        let capacity_nas = capacity_nas(state)?;
        let used = u64::try_from(state.used_nas)
            .ok()
            .filter(|&used| used <= capacity_nas)?;
        let consumed = u64::try_from(state.consumed_nas).ok()?;
        let fraction = |nas: u64, per_capacity: u16| {
            mul_div(
                nas,
                u64::from(per_capacity),
                capacity_nas,
                Rounding::Nearest,
            )
            .and_then(|value| u16::try_from(value).ok())
        };
        let used = fraction(used, USED_FULL_SCALE)?;
        let consumed = fraction(consumed, CONSUMED_PER_CAPACITY)?;
        Some(SocPoint {
            generation,
            used,
            consumed,
        })
    }

    /// `state` (from the [`SocRecord`] this point belongs to) with the point's charge counts.
    pub fn apply(&self, state: &SocState) -> SocState {
        let Some(capacity_nas) = capacity_nas(state) else {
            return *state;
        };
        let scale = |value: u16, per_capacity: u16| {
            mul_div(
                u64::from(value),
                capacity_nas,
                u64::from(per_capacity),
                Rounding::Nearest,
            )
            .and_then(|nas| i64::try_from(nas).ok())
            .unwrap_or(i64::MAX)
        };
        SocState {
            used_nas: scale(self.used, USED_FULL_SCALE),
            consumed_nas: scale(self.consumed, CONSUMED_PER_CAPACITY),
            ..*state
        }
    }
}

/// True when `now` cannot be stored as a point on top of `stored` (the record the store
/// holds): a slow field changed, time since full restarted or advanced by
/// [`PERSIST_AGE_INTERVAL_MS`], or the counts do not fit a point.
pub fn needs_record(stored: &SocState, now: &SocState) -> bool {
    let age_due = match (stored.since_full_charge_ms, now.since_full_charge_ms) {
        (Some(then), Some(now)) => now < then || now - then >= PERSIST_AGE_INTERVAL_MS,
        (then, now) => then.is_some() != now.is_some(),
    };
    stored.knowledge != now.knowledge
        || stored.capacity_mah != now.capacity_mah
        || stored.low_soc_warning != now.low_soc_warning
        || stored.below_floor != now.below_floor
        || age_due
        || SocPoint::of(now, 0).is_none()
}

/// The SoC state to restore: the record, with the point's counts when the point belongs to it.
pub fn combine(record: &SocRecord, point: Option<&SocPoint>) -> SocState {
    match point {
        Some(point) if point.generation == record.generation => point.apply(&record.state),
        _ => record.state,
    }
}

fn capacity_nas(state: &SocState) -> Option<u64> {
    let nas = u64::from(state.capacity_mah) * NAS_PER_MAH as u64;
    (nas > 0).then_some(nas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::{Monitor, SocKnowledge};
    use crate::storage::record::tests::sample_soc;

    #[test]
    fn a_point_restores_the_soc_to_far_better_than_a_tenth_of_a_point() {
        for capacity_mah in [1, 100_000, 200_000, 5_000_000, 400_000_000] {
            let capacity_nas = i64::from(capacity_mah) * NAS_PER_MAH;
            for permille in [0, 1, 7, 333, 500, 999, 1000] {
                let state = SocState {
                    capacity_mah,
                    used_nas: capacity_nas / 1000 * (1000 - permille),
                    consumed_nas: capacity_nas / 1000 * (3000 - permille),
                    ..sample_soc()
                };
                let point = SocPoint::of(&state, 7).unwrap();
                let back = point.apply(&state);
                let used_err = back.used_nas.abs_diff(state.used_nas);
                let consumed_err = back.consumed_nas.abs_diff(state.consumed_nas);
                assert!(
                    used_err <= (capacity_nas / 65_535) as u64 / 2 + 1,
                    "{capacity_mah}"
                );
                assert!(consumed_err <= (capacity_nas / 16_384) as u64 / 2 + 1);
                let soc = |s: &SocState| Monitor::new(Some(*s)).soc_permille().unwrap();
                assert!(soc(&back).abs_diff(soc(&state)) <= 1);
            }
        }
    }

    #[test]
    fn counts_a_point_cannot_hold_need_the_whole_record() {
        let base = sample_soc();
        let cap = i64::from(base.capacity_mah) * NAS_PER_MAH;
        assert!(SocPoint::of(&base, 0).is_some());
        for state in [
            SocState {
                capacity_mah: 0,
                ..base
            },
            SocState {
                consumed_nas: cap * 4,
                ..base
            },
            SocState {
                consumed_nas: -1,
                ..base
            },
            SocState {
                used_nas: cap + 1,
                ..base
            },
        ] {
            assert_eq!(SocPoint::of(&state, 0), None, "{state:?}");
            assert!(needs_record(&base, &state));
        }
    }

    #[test]
    fn slow_fields_need_the_whole_record_and_counts_do_not() {
        let stored = sample_soc();
        let counts_only = SocState {
            used_nas: stored.used_nas / 2,
            consumed_nas: stored.consumed_nas / 2,
            since_full_charge_ms: stored
                .since_full_charge_ms
                .map(|ms| ms + PERSIST_AGE_INTERVAL_MS - 1),
            ..stored
        };
        assert!(!needs_record(&stored, &counts_only));
        let changes = [
            SocState {
                knowledge: SocKnowledge::Estimated,
                ..stored
            },
            SocState {
                capacity_mah: 100_000,
                ..stored
            },
            SocState {
                low_soc_warning: true,
                ..stored
            },
            SocState {
                below_floor: true,
                ..stored
            },
            SocState {
                since_full_charge_ms: Some(0),
                ..stored
            },
            SocState {
                since_full_charge_ms: None,
                ..stored
            },
            SocState {
                since_full_charge_ms: stored
                    .since_full_charge_ms
                    .map(|ms| ms + PERSIST_AGE_INTERVAL_MS),
                ..stored
            },
        ];
        for now in changes {
            assert!(needs_record(&stored, &now), "{now:?}");
        }
    }

    #[test]
    fn a_point_applies_only_to_the_record_of_its_generation() {
        let record = SocRecord {
            generation: 4,
            state: sample_soc(),
            ..SocRecord::default()
        };
        let moved = SocState {
            used_nas: 0,
            consumed_nas: 0,
            ..sample_soc()
        };
        let point = SocPoint::of(&moved, 4).unwrap();
        assert_eq!(combine(&record, Some(&point)), moved);
        let stale = SocPoint {
            generation: 3,
            ..point
        };
        assert_eq!(combine(&record, Some(&stale)), record.state);
        assert_eq!(combine(&record, None), record.state);
    }
}
