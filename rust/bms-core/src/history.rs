//! History (HIST): counters and extremes since installation or the last reset.
//!
//! Input, once per control step with valid bank data: a [`HistoryInput`] built from the bank
//! values and the monitor's [`MonitorStatus`](crate::monitor::MonitorStatus); errors are added
//! with [`History::record_error`] when they are raised. Output: the items (getters, for the
//! history page) and when to persist. [`History`] itself is the persisted record (serde).
//!
//! Every item only grows (counters, extremes widen) except by [`History::reset`] (HIST-4). The one
//! exception by nature is the time since the last full charge, which restarts at each full charge.

use serde::{Deserialize, Serialize};

use crate::monitor::MAX_GAP_MS;
use crate::soc::NAS_PER_MAH;

/// How many of the last errors are kept (HIST-1).
pub const LAST_ERRORS: usize = 4;
/// A cycle starts when the SoC drops below this, in permille (HIST-2).
pub const CYCLE_LOW_PERMILLE: u16 = 650;
/// A started cycle is counted when the SoC rises above this, in permille (HIST-2).
pub const CYCLE_HIGH_PERMILLE: u16 = 900;
/// A synchronisation is counted only if the SoC dropped below this since the previous one, in
/// permille (HIST-3).
pub const SYNC_ARM_PERMILLE: u16 = 900;
/// Longest time a change of an uncounted item (Ah, energy, extremes, deepest discharge, the
/// cycle and synchronisation rules' state) stays unpersisted, in ms (MON-8: at least every 10
/// minutes while the history changes). Counted from the first change after the last persist.
pub const PERSIST_INTERVAL_MS: u64 = 10 * 60_000;
/// Longest time the time since the last full charge advances unpersisted while nothing else
/// changes, in ms: an hour, so that a bank at rest is not written every 10 minutes for a
/// clock (one history point, an allocation-table entry, an hour).
pub const SINCE_FULL_PERSIST_MS: u64 = 60 * 60_000;

/// Energy of 1 mWh in nJ (mV × mA × ms).
const NJ_PER_MWH: u64 = 3_600_000_000;

/// Measurements and monitor results for one history update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryInput {
    /// Bank voltage in mV.
    pub bank_mv: u32,
    /// Bank current in mA, positive = charging.
    pub bank_ma: i32,
    /// Lowest cell voltage in the bank in mV, when known.
    pub min_cell_mv: Option<u16>,
    /// Highest cell voltage in the bank in mV, when known.
    pub max_cell_mv: Option<u16>,
    /// Lowest battery temperature in 0.1 °C, when known.
    pub min_temp_ddegc: Option<i16>,
    /// Highest battery temperature in 0.1 °C, when known.
    pub max_temp_ddegc: Option<i16>,
    /// Known SoC in permille (`MonitorStatus::soc_permille`); `None` while unknown or estimated.
    pub soc_permille: Option<u16>,
    /// Consumed charge since full in mAh (`MonitorStatus::consumed_mah`).
    pub consumed_mah: u32,
    /// An automatic synchronisation happened in this step (`MonitorStatus::synchronised`).
    pub synchronised: bool,
}

/// What a history update changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct HistoryStatus {
    /// A counted item (synchronisations, cycles, last errors) changed in this update.
    pub counted_changed: bool,
    /// The persisted record is out of date: persist the [`History`] and then call
    /// [`History::mark_persisted`].
    pub persist_due: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sample {
    at_ms: u64,
    bank_mv: u32,
    bank_ma: i32,
}

/// The persisted history items (HIST-1) and the state of the cycle and synchronisation rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRecord {
    pub(crate) deepest_discharge_mah: u32,
    pub(crate) drawn_mah: u64,
    pub(crate) drawn_rem_nas: u64,
    pub(crate) discharged_mwh: u64,
    pub(crate) discharged_rem_nj: u64,
    pub(crate) charged_mwh: u64,
    pub(crate) charged_rem_nj: u64,
    pub(crate) synchronisations: u32,
    pub(crate) cycles: u32,
    pub(crate) since_full_charge_ms: Option<u64>,
    pub(crate) min_bank_mv: Option<u32>,
    pub(crate) max_bank_mv: Option<u32>,
    pub(crate) min_cell_mv: Option<u16>,
    pub(crate) max_cell_mv: Option<u16>,
    pub(crate) min_temp_ddegc: Option<i16>,
    pub(crate) max_temp_ddegc: Option<i16>,
    pub(crate) last_errors: [Option<u16>; LAST_ERRORS],
    /// SoC dropped below 65 % and has not yet risen above 90 % (HIST-2).
    pub(crate) cycle_started: bool,
    /// SoC dropped below 90 % since the last counted synchronisation (HIST-3).
    pub(crate) sync_armed: bool,
}

/// The history: its items and when to persist them. Build a fresh one with
/// `History::default()`; it (de)serialises as its [`HistoryRecord`], the persisted record.
/// Two histories are equal when their records are.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "HistoryRecord", into = "HistoryRecord")]
pub struct History {
    record: HistoryRecord,
    last: Option<Sample>,
    persisted_at_ms: u64,
    /// When the first change not yet persisted (other than the time since full advancing)
    /// happened.
    changed_since_ms: Option<u64>,
    /// The time since the last full charge advanced since the last persist.
    since_advanced: bool,
    counted_changed: bool,
    /// A reset: everything is due at once.
    reset_pending: bool,
}

impl From<HistoryRecord> for History {
    /// A history continuing from a restored record; nothing is due to persist.
    fn from(record: HistoryRecord) -> Self {
        History {
            record,
            ..History::default()
        }
    }
}

impl From<History> for HistoryRecord {
    fn from(history: History) -> Self {
        history.record
    }
}

impl PartialEq for History {
    fn eq(&self, other: &Self) -> bool {
        self.record == other.record
    }
}

impl Eq for History {}

impl History {
    /// One history step at `now_ms` (every control step while the bank data is valid). Counts
    /// charge and energy since the previous update, widens the extremes and applies the cycle
    /// (HIST-2) and synchronisation (HIST-3) rules.
    pub fn update(&mut self, now_ms: u64, input: &HistoryInput) -> HistoryStatus {
        let before = self.record;
        let now_ms = self.last.map_or(now_ms, |last| now_ms.max(last.at_ms));

        if let Some(last) = self.last {
            let elapsed_ms = now_ms - last.at_ms;
            self.integrate(last, input, elapsed_ms.min(MAX_GAP_MS));
            if let Some(since) = self.record.since_full_charge_ms.as_mut() {
                *since = since.saturating_add(elapsed_ms);
            }
        }
        self.last = Some(Sample {
            at_ms: now_ms,
            bank_mv: input.bank_mv,
            bank_ma: input.bank_ma,
        });

        self.record.min_bank_mv = Some(
            self.record
                .min_bank_mv
                .map_or(input.bank_mv, |v| v.min(input.bank_mv)),
        );
        self.record.max_bank_mv = Some(
            self.record
                .max_bank_mv
                .map_or(input.bank_mv, |v| v.max(input.bank_mv)),
        );
        self.record.min_cell_mv = min_opt(self.record.min_cell_mv, input.min_cell_mv);
        self.record.max_cell_mv = max_opt(self.record.max_cell_mv, input.max_cell_mv);
        self.record.min_temp_ddegc = min_opt(self.record.min_temp_ddegc, input.min_temp_ddegc);
        self.record.max_temp_ddegc = max_opt(self.record.max_temp_ddegc, input.max_temp_ddegc);

        if input.synchronised {
            if self.record.sync_armed {
                self.record.synchronisations = self.record.synchronisations.saturating_add(1);
                self.record.sync_armed = false;
            }
            self.record.since_full_charge_ms = Some(0);
        }
        if let Some(soc) = input.soc_permille {
            self.record.deepest_discharge_mah =
                self.record.deepest_discharge_mah.max(input.consumed_mah);
            if soc < SYNC_ARM_PERMILLE && !input.synchronised {
                self.record.sync_armed = true;
            }
            if soc < CYCLE_LOW_PERMILLE {
                self.record.cycle_started = true;
            } else if soc > CYCLE_HIGH_PERMILLE && self.record.cycle_started {
                self.record.cycles = self.record.cycles.saturating_add(1);
                self.record.cycle_started = false;
            }
        }

        let counted_changed = (before.synchronisations, before.cycles)
            != (self.record.synchronisations, self.record.cycles);
        self.counted_changed |= counted_changed;
        // The time since full advancing is a change of its own kind (SINCE_FULL_PERSIST_MS);
        // a restart is a change like any other.
        let (mut then, mut now) = (before, self.record);
        if let (Some(a), Some(b)) = (then.since_full_charge_ms, now.since_full_charge_ms) {
            if b >= a {
                self.since_advanced |= b > a;
                then.since_full_charge_ms = None;
                now.since_full_charge_ms = None;
            }
        }
        if then != now && self.changed_since_ms.is_none() {
            self.changed_since_ms = Some(now_ms);
        }
        HistoryStatus {
            counted_changed,
            persist_due: self.persist_due(now_ms),
        }
    }

    /// Counts charge and energy over `dt_ms` (at most [`MAX_GAP_MS`]) in 64-bit arithmetic, which
    /// is exact here: |2 × i32 mA| × 60 000 ms × 500 < 2^57 nA·s, and |mV × mA| < 2^63. Only the
    /// energy of one step beyond 2^63 nJ (2.5 MWh: a bank above 150 MW) saturates, to 2^62 nJ.
    fn integrate(&mut self, last: Sample, input: &HistoryInput, dt_ms: u64) {
        let dt = i64::try_from(dt_ms.min(MAX_GAP_MS)).unwrap_or(0);
        // Trapezoids over the interval: (a + b) / 2 × dt; 1 mA·ms = 1000 nA·s, 1 mV·mA·ms = 1 nJ.
        let charge_nas = (i64::from(last.bank_ma) + i64::from(input.bank_ma)) * dt * 500;
        if charge_nas < 0 {
            accumulate(
                &mut self.record.drawn_mah,
                &mut self.record.drawn_rem_nas,
                charge_nas.unsigned_abs(),
                NAS_PER_MAH.unsigned_abs(),
            );
        }
        let power_start = i64::from(last.bank_mv) * i64::from(last.bank_ma);
        let power_end = i64::from(input.bank_mv) * i64::from(input.bank_ma);
        let energy_nj = power_start.saturating_add(power_end).saturating_mul(dt) / 2;
        let (whole, rem) = if energy_nj < 0 {
            (
                &mut self.record.discharged_mwh,
                &mut self.record.discharged_rem_nj,
            )
        } else {
            (
                &mut self.record.charged_mwh,
                &mut self.record.charged_rem_nj,
            )
        };
        accumulate(whole, rem, energy_nj.unsigned_abs(), NJ_PER_MWH);
    }

    /// Adds an error code to the last errors (HIST-1), newest first; call when an error is
    /// raised (codes from [`crate::codes`]).
    pub fn record_error(&mut self, code: u16) {
        let errors = &mut self.record.last_errors;
        errors.rotate_right(1);
        if let Some(newest) = errors.first_mut() {
            *newest = Some(code);
        }
        self.counted_changed = true;
    }

    /// Clears every item (HIST-4); persist at once.
    pub fn reset(&mut self) {
        self.record = HistoryRecord::default();
        self.counted_changed = true;
        self.reset_pending = true;
    }

    /// Whether some of the history is due to be persisted at `now_ms`: the counted items
    /// ([`History::counted_due`]) or all of it ([`History::all_due`]). Never while nothing
    /// changed.
    pub fn persist_due(&self, now_ms: u64) -> bool {
        self.counted_due() || self.all_due(now_ms)
    }

    /// A counted item (cycles, synchronisations, last errors) changed since the last persist:
    /// persist the counted items at once.
    pub fn counted_due(&self) -> bool {
        self.counted_changed
    }

    /// The whole history is due at `now_ms`: after a reset at once, [`PERSIST_INTERVAL_MS`]
    /// after the first change since the last persist (MON-8), and [`SINCE_FULL_PERSIST_MS`]
    /// after the last persist when only the time since the last full charge advanced.
    pub fn all_due(&self, now_ms: u64) -> bool {
        self.reset_pending
            || self
                .changed_since_ms
                .is_some_and(|since| now_ms.saturating_sub(since) >= PERSIST_INTERVAL_MS)
            || (self.since_advanced
                && now_ms.saturating_sub(self.persisted_at_ms) >= SINCE_FULL_PERSIST_MS)
    }

    /// Records that the whole history was persisted at `now_ms`.
    pub fn mark_persisted(&mut self, now_ms: u64) {
        self.persisted_at_ms = now_ms;
        self.changed_since_ms = None;
        self.since_advanced = false;
        self.counted_changed = false;
        self.reset_pending = false;
    }

    /// Records that the counted items were persisted (the rest of the history may still be
    /// due later).
    pub fn mark_counted_persisted(&mut self) {
        self.counted_changed = false;
    }

    /// The persisted record.
    pub fn record(&self) -> &HistoryRecord {
        &self.record
    }

    /// Deepest discharge: largest consumed charge seen while the SoC was known, in mAh.
    pub fn deepest_discharge_mah(&self) -> u32 {
        self.record.deepest_discharge_mah
    }

    /// Cumulative charge drawn from the bank, in mAh.
    pub fn cumulative_drawn_mah(&self) -> u64 {
        self.record.drawn_mah
    }

    /// Energy drawn from the bank, in mWh.
    pub fn discharged_energy_mwh(&self) -> u64 {
        self.record.discharged_mwh
    }

    /// Energy put into the bank, in mWh.
    pub fn charged_energy_mwh(&self) -> u64 {
        self.record.charged_mwh
    }

    /// Number of counted automatic synchronisations (HIST-3).
    pub fn synchronisations(&self) -> u32 {
        self.record.synchronisations
    }

    /// Number of charge cycles (HIST-2).
    pub fn cycles(&self) -> u32 {
        self.record.cycles
    }

    /// Time the BMS ran since the last automatic synchronisation, in ms (`None` = none since
    /// the last reset).
    pub fn since_full_charge_ms(&self) -> Option<u64> {
        self.record.since_full_charge_ms
    }

    /// Lowest bank voltage seen, in mV.
    pub fn min_bank_mv(&self) -> Option<u32> {
        self.record.min_bank_mv
    }

    /// Highest bank voltage seen, in mV.
    pub fn max_bank_mv(&self) -> Option<u32> {
        self.record.max_bank_mv
    }

    /// Lowest cell voltage seen, in mV.
    pub fn min_cell_mv(&self) -> Option<u16> {
        self.record.min_cell_mv
    }

    /// Highest cell voltage seen, in mV.
    pub fn max_cell_mv(&self) -> Option<u16> {
        self.record.max_cell_mv
    }

    /// Lowest battery temperature seen, in 0.1 °C.
    pub fn min_temp_ddegc(&self) -> Option<i16> {
        self.record.min_temp_ddegc
    }

    /// Highest battery temperature seen, in 0.1 °C.
    pub fn max_temp_ddegc(&self) -> Option<i16> {
        self.record.max_temp_ddegc
    }

    /// The last errors, newest first (`None` = no error in that slot).
    pub fn last_errors(&self) -> [Option<u16>; LAST_ERRORS] {
        self.record.last_errors
    }
}

/// Adds `add` (nA·s or nJ) to a count of whole units (`per_whole` each) and the remainder, with
/// the same result as adding in 128 bits: the whole parts and the remainders are added apart,
/// so nothing overflows, and the count saturates.
fn accumulate(whole: &mut u64, rem: &mut u64, add: u64, per_whole: u64) {
    // Both remainders are below `per_whole` (at most 3.6e9): the sum cannot overflow.
    let rem_sum = *rem % per_whole + add % per_whole;
    *whole = whole
        .saturating_add(*rem / per_whole)
        .saturating_add(add / per_whole)
        .saturating_add(rem_sum / per_whole);
    *rem = rem_sum % per_whole;
}

fn min_opt<T: Ord + Copy>(kept: Option<T>, new: Option<T>) -> Option<T> {
    match (kept, new) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt<T: Ord + Copy>(kept: Option<T>, new: Option<T>) -> Option<T> {
    match (kept, new) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The 128-bit sum `accumulate` replaces, as the code had it before.
    fn accumulate_u128(whole: u64, rem: u64, add: u64, per_whole: u64) -> (u64, u64) {
        let total = u128::from(rem) + u128::from(add);
        let whole_add = u64::try_from(total / u128::from(per_whole)).unwrap_or(u64::MAX);
        (
            whole.saturating_add(whole_add),
            (total % u128::from(per_whole)) as u64,
        )
    }

    /// The charge and energy of one step in 128 bits, as the code had it before, except that an
    /// energy beyond 2^63 nJ is cut to the documented ±2^62 nJ.
    fn integrate_i128(last: Sample, input: &HistoryInput, dt_ms: u64) -> (i128, i128) {
        let dt = i128::from(dt_ms);
        let charge_nas = (i128::from(last.bank_ma) + i128::from(input.bank_ma)) * dt * 500;
        let power_start = i128::from(last.bank_mv) * i128::from(last.bank_ma);
        let power_end = i128::from(input.bank_mv) * i128::from(input.bank_ma);
        let product = (power_start + power_end) * dt;
        let energy_nj = match i64::try_from(product) {
            Ok(_) => product / 2,
            Err(_) if product < 0 => i128::from(i64::MIN / 2),
            Err(_) => i128::from(i64::MAX / 2),
        };
        (charge_nas, energy_nj)
    }

    proptest! {
        /// Adding apart gives the 128-bit result for every count, remainder (also a corrupt
        /// one above the unit) and addition, saturation included.
        #[test]
        fn accumulate_matches_128_bit_sum(
            whole in prop_oneof![Just(u64::MAX), Just(0u64), any::<u64>()],
            rem in prop_oneof![Just(u64::MAX), 0u64..NJ_PER_MWH, any::<u64>()],
            add in prop_oneof![Just(u64::MAX >> 1), any::<u64>()],
        ) {
            let (mut w, mut r) = (whole, rem);
            accumulate(&mut w, &mut r, add, NJ_PER_MWH);
            prop_assert_eq!((w, r), accumulate_u128(whole, rem, add, NJ_PER_MWH));
        }

        /// A step counts what the 128-bit arithmetic counted, for every voltage and current.
        #[test]
        fn integrate_matches_128_bit_arithmetic(
            mv in (any::<u32>(), 0u32..=100_000),
            ma in (any::<i32>(), -2_000_000i32..=2_000_000),
            dt_ms in prop_oneof![Just(MAX_GAP_MS), 0u64..=MAX_GAP_MS],
            start in (0u64..NAS_PER_MAH.unsigned_abs(), 0u64..NJ_PER_MWH, 0u64..NJ_PER_MWH),
        ) {
            let mut history = History::default();
            history.record.drawn_rem_nas = start.0;
            history.record.discharged_rem_nj = start.1;
            history.record.charged_rem_nj = start.2;
            let before = history.record;
            let last = Sample { at_ms: 0, bank_mv: mv.0, bank_ma: ma.0 };
            let input = HistoryInput { bank_mv: mv.1, bank_ma: ma.1, ..HistoryInput::default() };
            history.integrate(last, &input, dt_ms);

            let (charge_nas, energy_nj) = integrate_i128(last, &input, dt_ms);
            let mut want = before;
            if charge_nas < 0 {
                (want.drawn_mah, want.drawn_rem_nas) = accumulate_u128(
                    want.drawn_mah,
                    want.drawn_rem_nas,
                    u64::try_from(charge_nas.unsigned_abs()).unwrap(),
                    NAS_PER_MAH.unsigned_abs(),
                );
            }
            let energy = u64::try_from(energy_nj.unsigned_abs()).unwrap();
            if energy_nj < 0 {
                (want.discharged_mwh, want.discharged_rem_nj) = accumulate_u128(
                    want.discharged_mwh, want.discharged_rem_nj, energy, NJ_PER_MWH);
            } else {
                (want.charged_mwh, want.charged_rem_nj) = accumulate_u128(
                    want.charged_mwh, want.charged_rem_nj, energy, NJ_PER_MWH);
            }
            prop_assert_eq!(history.record, want);
        }
    }

    /// A step of an impossible bank (4.3 MV, 2.1 MA) counts 2^62 nJ instead of overflowing.
    #[test]
    fn integrate_saturates_the_energy_of_an_impossible_bank() {
        let mut history = History::default();
        let last = Sample {
            at_ms: 0,
            bank_mv: u32::MAX,
            bank_ma: i32::MIN,
        };
        let input = HistoryInput {
            bank_mv: u32::MAX,
            bank_ma: i32::MIN,
            ..HistoryInput::default()
        };
        history.integrate(last, &input, MAX_GAP_MS);
        let nj = 1u64 << 62;
        assert_eq!(history.record.discharged_mwh, nj / NJ_PER_MWH);
        assert_eq!(history.record.discharged_rem_nj, nj % NJ_PER_MWH);
        assert_eq!(history.record.charged_mwh, 0);
    }
}
