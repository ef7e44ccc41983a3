//! The history on flash as one whole record and two compact points, so that MON-8's "at least
//! every 10 minutes while it changes" costs one ZMS allocation-table entry per 10 minutes, not
//! a whole record (docs/persistence.md, "Flash wear").
//!
//! - [`HistoryStored`] under `bms/hist`: the whole [`HistoryRecord`] and a `generation`. Written
//!   on a reset, when the extremes (bank, cell, temperature) changed, when a point cannot hold
//!   what changed since the record (a delta beyond its range, an error code above 31), and to
//!   repair the store. The points' ranges set how often the deltas are folded into it: 1023 Ah
//!   drawn, 20 kWh either way, 21 hours since full, 7 cycles or synchronisations.
//! - [`HistoryPoint`] under `bms/hpt`: the fast counters since the record of its generation:
//!   cumulative Ah drawn in whole [`DRAWN_UNIT_MAH`], discharged and charged energy in whole
//!   [`ENERGY_UNIT_MWH`], and the time since the last full charge in whole [`SINCE_UNIT_MS`].
//!   Written at most every 10 minutes while they change (`History::all_due`).
//! - [`HistoryCounts`] under `bms/hcnt`: the counted items since the record of its generation
//!   (cycles and synchronisations as deltas, the last 4 errors as they are), the deepest
//!   discharge in whole [`DEEPEST_UNIT_MAH`] and the state of the cycle and synchronisation
//!   rules. Written at once when a counted item changes, and with the point otherwise.
//!
//! At start a point applies only on top of the record of its own generation; otherwise the
//! record alone is restored. A new record always takes a generation that neither stored point
//! has, so a point written before it can never apply to it. A point rounds down: what a reboot
//! loses is the change since the last write plus less than one unit of each counter, and no
//! counter restored is above the value it had.

use serde::{Deserialize, Serialize};

use super::record::{decode_exact, Record, RecordError, RecordKind};
use crate::history::{HistoryRecord, LAST_ERRORS};

/// [`HistoryPoint::drawn`] unit: 1 Ah.
pub const DRAWN_UNIT_MAH: u64 = 1_000;
/// [`HistoryPoint::discharged`] and [`HistoryPoint::charged`] unit: 20 Wh.
pub const ENERGY_UNIT_MWH: u64 = 20_000;
/// [`HistoryPoint::since`] unit: 10 minutes.
pub const SINCE_UNIT_MS: u64 = 600_000;
/// [`HistoryCounts::deepest`] unit: 1 Ah.
pub const DEEPEST_UNIT_MAH: u32 = 1_000;
/// Generations are 2 bits: a new record needs one that differs from both stored points'.
pub const GENERATIONS: u8 = 4;

const TEN_BITS: u64 = (1 << 10) - 1;
/// Largest delta of cycles or synchronisations a [`HistoryCounts`] holds.
const COUNT_MAX: u32 = 7;
/// Largest error code a [`HistoryCounts`] holds (5 bits; 0 is no error).
const ERROR_MAX: u16 = 31;
/// [`HistoryPoint::since`]: the time since full restarted after the record (value in units
/// from the restart, not a delta).
const SINCE_RESTARTED: u8 = 0x80;
const SINCE_MAX: u64 = 0x7F;

/// The whole history with the generation its points carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryStored {
    /// Changes at every write of this record; a point applies only with the same value.
    pub generation: u8,
    /// The history when written.
    pub history: HistoryRecord,
}

impl Record for HistoryStored {
    const KIND: RecordKind = RecordKind::History;
    /// Version 1 was the bare [`HistoryRecord`], before points existed (generation 0).
    const VERSION: u8 = 2;

    fn decode_body(version: u8, body: &[u8]) -> Result<Self, RecordError> {
        match version {
            1 => Ok(HistoryStored {
                generation: 0,
                history: decode_exact(body)?,
            }),
            2 => decode_exact(body),
            version => Err(RecordError::UnknownVersion { version }),
        }
    }

    fn check(&self) -> Result<(), RecordError> {
        if self.generation >= GENERATIONS {
            return Err(RecordError::Invalid);
        }
        Ok(())
    }
}

/// The fast counters since the [`HistoryStored`] of `generation`, 40 bits (8 bytes with version
/// and CRC-16): generation (2), time since full (8: bit 7 set = restarted, then units since
/// the restart; clear = units since the record's), drawn (10), discharged (10), charged (10).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "[u8; 5]", into = "[u8; 5]")]
pub struct HistoryPoint {
    /// The [`HistoryStored::generation`] this point belongs to (0–3).
    pub generation: u8,
    /// Time since the last full charge in [`SINCE_UNIT_MS`], see the type.
    pub since: u8,
    /// Cumulative Ah drawn since the record, in [`DRAWN_UNIT_MAH`] (0–1023).
    pub drawn: u16,
    /// Discharged energy since the record, in [`ENERGY_UNIT_MWH`] (0–1023).
    pub discharged: u16,
    /// Charged energy since the record, in [`ENERGY_UNIT_MWH`] (0–1023).
    pub charged: u16,
}

impl From<[u8; 5]> for HistoryPoint {
    fn from(bytes: [u8; 5]) -> Self {
        let v = unpack(bytes);
        HistoryPoint {
            generation: (v & 3) as u8,
            since: ((v >> 2) & 0xFF) as u8,
            drawn: ((v >> 10) & TEN_BITS) as u16,
            discharged: ((v >> 20) & TEN_BITS) as u16,
            charged: ((v >> 30) & TEN_BITS) as u16,
        }
    }
}

impl From<HistoryPoint> for [u8; 5] {
    fn from(p: HistoryPoint) -> Self {
        pack(
            u64::from(p.generation & 3)
                | u64::from(p.since) << 2
                | (u64::from(p.drawn) & TEN_BITS) << 10
                | (u64::from(p.discharged) & TEN_BITS) << 20
                | (u64::from(p.charged) & TEN_BITS) << 30,
        )
    }
}

impl Record for HistoryPoint {
    const KIND: RecordKind = RecordKind::HistoryPoint;
    const VERSION: u8 = 1;
    const COMPACT: bool = true;
}

/// The counted items since the [`HistoryStored`] of `generation`, 40 bits (8 bytes with version
/// and CRC-16): generation (2), cycle started and synchronisation armed (1 each), cycles and
/// synchronisations since the record (3 each), deepest discharge since the record (10), the
/// last 4 errors (5 each, 0 = none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "[u8; 5]", into = "[u8; 5]")]
pub struct HistoryCounts {
    /// The [`HistoryStored::generation`] these counts belong to (0–3).
    pub generation: u8,
    /// HIST-2: SoC dropped below 65 % and has not risen above 90 % since.
    pub cycle_started: bool,
    /// HIST-3: SoC dropped below 90 % since the last counted synchronisation.
    pub sync_armed: bool,
    /// Cycles counted since the record (0–7).
    pub cycles: u8,
    /// Synchronisations counted since the record (0–7).
    pub synchronisations: u8,
    /// Deepest discharge beyond the record's, in [`DEEPEST_UNIT_MAH`] (0–1023).
    pub deepest: u16,
    /// The last errors, newest first (0 = none; codes 1–31).
    pub errors: [u8; LAST_ERRORS],
}

impl From<[u8; 5]> for HistoryCounts {
    fn from(bytes: [u8; 5]) -> Self {
        let v = unpack(bytes);
        let mut errors = [0u8; LAST_ERRORS];
        for (i, error) in errors.iter_mut().enumerate() {
            *error = ((v >> (20 + 5 * i)) & 0x1F) as u8;
        }
        HistoryCounts {
            generation: (v & 3) as u8,
            cycle_started: v & 4 != 0,
            sync_armed: v & 8 != 0,
            cycles: ((v >> 4) & 7) as u8,
            synchronisations: ((v >> 7) & 7) as u8,
            deepest: ((v >> 10) & TEN_BITS) as u16,
            errors,
        }
    }
}

impl From<HistoryCounts> for [u8; 5] {
    fn from(c: HistoryCounts) -> Self {
        let mut v = u64::from(c.generation & 3)
            | u64::from(c.cycle_started) << 2
            | u64::from(c.sync_armed) << 3
            | (u64::from(c.cycles) & 7) << 4
            | (u64::from(c.synchronisations) & 7) << 7
            | (u64::from(c.deepest) & TEN_BITS) << 10;
        for (i, &error) in c.errors.iter().enumerate() {
            v |= (u64::from(error) & 0x1F) << (20 + 5 * i);
        }
        pack(v)
    }
}

impl Record for HistoryCounts {
    const KIND: RecordKind = RecordKind::HistoryCounts;
    const VERSION: u8 = 1;
    const COMPACT: bool = true;
}

fn unpack(bytes: [u8; 5]) -> u64 {
    let mut word = [0u8; 8];
    if let Some(low) = word.get_mut(..5) {
        low.copy_from_slice(&bytes);
    }
    u64::from_le_bytes(word)
}

fn pack(v: u64) -> [u8; 5] {
    let [a, b, c, d, e, ..] = v.to_le_bytes();
    [a, b, c, d, e]
}

/// Whole units of `unit` that `now` is above `then`, when at most `max`.
fn units(now: u64, then: u64, unit: u64, max: u64) -> Option<u64> {
    let delta = now.checked_sub(then)? / unit;
    (delta <= max).then_some(delta)
}

/// The points that carry `now` on top of `stored` (the record the store holds, of
/// `generation`), or `None` when they cannot: an extreme changed, a counter went down (a
/// reset) or beyond a point's range, an error code above 31, the time since full vanished.
/// Then the whole record is written.
pub fn split(
    stored: &HistoryRecord,
    now: &HistoryRecord,
    generation: u8,
) -> Option<(HistoryPoint, HistoryCounts)> {
    let extremes = |r: &HistoryRecord| {
        (
            r.min_bank_mv,
            r.max_bank_mv,
            r.min_cell_mv,
            r.max_cell_mv,
            r.min_temp_ddegc,
            r.max_temp_ddegc,
        )
    };
    if extremes(stored) != extremes(now) {
        return None;
    }
    let since = match (stored.since_full_charge_ms, now.since_full_charge_ms) {
        (_, None) if stored.since_full_charge_ms.is_some() => return None,
        (_, None) => 0,
        (Some(then), Some(at)) if at >= then => units(at, then, SINCE_UNIT_MS, SINCE_MAX)? as u8,
        (_, Some(at)) => SINCE_RESTARTED | units(at, 0, SINCE_UNIT_MS, SINCE_MAX)? as u8,
    };
    let energy = |now: u64, then: u64| units(now, then, ENERGY_UNIT_MWH, TEN_BITS);
    let point = HistoryPoint {
        generation,
        since,
        drawn: units(now.drawn_mah, stored.drawn_mah, DRAWN_UNIT_MAH, TEN_BITS)? as u16,
        discharged: energy(now.discharged_mwh, stored.discharged_mwh)? as u16,
        charged: energy(now.charged_mwh, stored.charged_mwh)? as u16,
    };
    let count = |now: u32, then: u32| units(now.into(), then.into(), 1, COUNT_MAX.into());
    let mut errors = [0u8; LAST_ERRORS];
    for (slot, error) in errors.iter_mut().zip(now.last_errors) {
        *slot = match error {
            None => 0,
            Some(code @ 1..=ERROR_MAX) => code as u8,
            Some(_) => return None,
        };
    }
    let counts = HistoryCounts {
        generation,
        cycle_started: now.cycle_started,
        sync_armed: now.sync_armed,
        cycles: count(now.cycles, stored.cycles)? as u8,
        synchronisations: count(now.synchronisations, stored.synchronisations)? as u8,
        deepest: units(
            now.deepest_discharge_mah.into(),
            stored.deepest_discharge_mah.into(),
            DEEPEST_UNIT_MAH.into(),
            TEN_BITS,
        )? as u16,
        errors,
    };
    Some((point, counts))
}

impl HistoryPoint {
    /// `record` with this point's counters added.
    pub fn apply(&self, record: &mut HistoryRecord) {
        add_units(
            &mut record.drawn_mah,
            &mut record.drawn_rem_nas,
            self.drawn,
            DRAWN_UNIT_MAH,
        );
        add_units(
            &mut record.discharged_mwh,
            &mut record.discharged_rem_nj,
            self.discharged,
            ENERGY_UNIT_MWH,
        );
        add_units(
            &mut record.charged_mwh,
            &mut record.charged_rem_nj,
            self.charged,
            ENERGY_UNIT_MWH,
        );
        let value = u64::from(self.since & !SINCE_RESTARTED) * SINCE_UNIT_MS;
        if self.since & SINCE_RESTARTED != 0 {
            record.since_full_charge_ms = Some(value);
        } else if let Some(since) = record.since_full_charge_ms.as_mut() {
            *since = since.saturating_add(value);
        }
    }
}

/// Adds `units` of `unit` to a whole count; the remainder below a unit is then not known and
/// restarts at 0, so that the sum never exceeds what was counted.
fn add_units(whole: &mut u64, rem: &mut u64, units: u16, unit: u64) {
    if units > 0 {
        *whole = whole.saturating_add(u64::from(units) * unit);
        *rem = 0;
    }
}

impl HistoryCounts {
    /// `record` with these counts applied.
    pub fn apply(&self, record: &mut HistoryRecord) {
        record.cycles = record.cycles.saturating_add(self.cycles.into());
        record.synchronisations = record
            .synchronisations
            .saturating_add(self.synchronisations.into());
        record.deepest_discharge_mah = record
            .deepest_discharge_mah
            .saturating_add(u32::from(self.deepest) * DEEPEST_UNIT_MAH);
        record.cycle_started = self.cycle_started;
        record.sync_armed = self.sync_armed;
        for (slot, &error) in record.last_errors.iter_mut().zip(&self.errors) {
            *slot = (error != 0).then_some(u16::from(error));
        }
    }
}

/// The history to restore: the record, with each point that belongs to it applied.
pub fn combine(
    stored: &HistoryStored,
    point: Option<&HistoryPoint>,
    counts: Option<&HistoryCounts>,
) -> HistoryRecord {
    let mut record = stored.history;
    if let Some(point) = point.filter(|p| p.generation == stored.generation) {
        point.apply(&mut record);
    }
    if let Some(counts) = counts.filter(|c| c.generation == stored.generation) {
        counts.apply(&mut record);
    }
    record
}

/// The generation of a new record: one that neither stored point carries, so neither can apply
/// to it.
pub fn next_generation(previous: u8, point: Option<u8>, counts: Option<u8>) -> u8 {
    (1..GENERATIONS)
        .map(|i| previous.wrapping_add(i) % GENERATIONS)
        .find(|g| point != Some(*g) && counts != Some(*g))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::storage::record::tests::sample_history;

    proptest! {
        /// MON-8, HIST-4: whatever moved since the record within the points' ranges, the
        /// restored counters are never above the ones stored through the points and less than
        /// one unit below them; the counted items, flags and errors come back exactly.
        #[test]
        fn mon_8_hist_4_points_round_down_by_less_than_one_unit(
            drawn in 0u64..1_024_000,
            discharged in 0u64..20_480_000,
            charged in 0u64..20_480_000,
            since in prop_oneof![Just(None), (0u64..76_800_000).prop_map(Some)],
            restarted in any::<bool>(),
            cycles in 0u32..8,
            syncs in 0u32..8,
            deepest in 0u32..1_024_000,
            errors in proptest::array::uniform4(0u16..32),
            flags in (any::<bool>(), any::<bool>()),
            generation in 0u8..4,
        ) {
            let mut stored = sample_history();
            stored.since_full_charge_ms = Some(3_600_000);
            let mut now = stored;
            now.drawn_mah += drawn;
            now.drawn_rem_nas = 123;
            now.discharged_mwh += discharged;
            now.charged_mwh += charged;
            now.since_full_charge_ms = since.map(|s| if restarted { s } else { 3_600_000 + s });
            now.cycles += cycles;
            now.synchronisations += syncs;
            now.deepest_discharge_mah += deepest;
            now.last_errors = errors.map(|e| (e != 0).then_some(e));
            (now.cycle_started, now.sync_armed) = flags;
            let record = HistoryStored { generation, history: stored };
            let split = split(&stored, &now, generation);
            if since.is_none() {
                prop_assert!(split.is_none(), "the time since full cannot vanish in a point");
                return Ok(());
            }
            let (point, counts) = split.unwrap();
            // Through the stored bytes, as a restart reads them.
            let point = HistoryPoint::from(<[u8; 5]>::from(point));
            let counts = HistoryCounts::from(<[u8; 5]>::from(counts));
            let back = combine(&record, Some(&point), Some(&counts));
            for (got, want, unit) in [
                (back.drawn_mah, now.drawn_mah, DRAWN_UNIT_MAH),
                (back.discharged_mwh, now.discharged_mwh, ENERGY_UNIT_MWH),
                (back.charged_mwh, now.charged_mwh, ENERGY_UNIT_MWH),
                (back.since_full_charge_ms.unwrap(), now.since_full_charge_ms.unwrap(), SINCE_UNIT_MS),
                (back.deepest_discharge_mah.into(), now.deepest_discharge_mah.into(), DEEPEST_UNIT_MAH.into()),
            ] {
                prop_assert!(got <= want && got + unit > want, "{got} for {want}");
            }
            let exact = |r: &HistoryRecord| (r.cycles, r.synchronisations, r.last_errors, r.cycle_started, r.sync_armed);
            prop_assert_eq!(exact(&back), exact(&now));
            // A point of another generation changes nothing.
            let other = (generation + 1) % GENERATIONS;
            let stale = combine(
                &HistoryStored { generation: other, history: stored },
                Some(&point),
                Some(&counts),
            );
            prop_assert_eq!(stale, stored);
        }
    }

    #[test]
    fn a_new_record_never_takes_a_stored_points_generation() {
        for previous in 0..GENERATIONS {
            for point in [None, Some(0), Some(1), Some(2), Some(3)] {
                for counts in [None, Some(0), Some(1), Some(2), Some(3)] {
                    let next = next_generation(previous, point, counts);
                    assert!(next < GENERATIONS);
                    assert_ne!(Some(next), point);
                    assert_ne!(Some(next), counts);
                }
            }
        }
    }
}
