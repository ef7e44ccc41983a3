//! The battery monitor (MON): state of charge by coulomb counting, synchronisation to 100 %,
//! time remaining, low-SoC warning, the discharge-floor latch of PROT-9, and when to persist.
//!
//! Inputs, once per control step with valid bank data: time, bank voltage and current, bank
//! capacity and cells in series ([`MonitorInput`]) and the [`Settings`]. Output: a
//! [`MonitorStatus`]. The persisted record is [`SocState`].
//!
//! The monitor is split in two. An [`Estimator`] (from [`crate::soc`]) turns measured intervals
//! into charge: plain coulomb counting with charge efficiency and Peukert (MON-1), or the
//! adaptive estimator that corrects the same count with a learned sensor offset, knee voltages
//! and a learned capacity. The [`Monitor`] owns the MON semantics around it: when the SoC is
//! known, synchronisation, manual actions, time remaining, warning and floor latches, and
//! persistence; they do not depend on the estimator.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::USER_WRITE_INTERVAL_MS;
use crate::muldiv::{mul_div, scale_signed, Rounding};
use crate::settings::Settings;
use crate::soc::counter::peukert_factor_q24;
use crate::soc::ocv::ocv_soc_permille;
use crate::soc::units::NAS_PER_MAH;
use crate::soc::{
    AdaptiveEstimator, Anchor, Estimator, EstimatorKind, Interval, Learned, SocEstimator,
};
use crate::word::Number;

/// Largest bank capacity taken into account, in mAh (50 batteries of 6553.5 Ah is less); larger
/// inputs are clamped, which keeps every charge in nA·s far inside `i64`.
pub const MAX_CAPACITY_MAH: u32 = 400_000_000;
/// Longest interval between two updates that is integrated, in ms. A longer gap means bank data
/// was missing (bus lost, caller stalled): only this much of it is counted with the currents
/// around it, and the synchronisation and rest timers restart, since nothing was observed.
pub const MAX_GAP_MS: u64 = 60_000;
/// Current below which the bank is idle, in permille of capacity (0.1 %, MON-5).
pub const IDLE_CURRENT_PERMILLE: u32 = 1;
/// Window over which the discharge current is averaged for time remaining, in ms (MON-5).
pub const TTG_WINDOW_MS: u64 = 180_000;
/// Rest needed before the cell voltage is taken as open-circuit voltage for an estimate, in ms
/// (MON-7). LiFePO4 takes minutes to hours to relax after load.
pub const REST_FOR_ESTIMATE_MS: u64 = 30 * 60_000;
/// Points (permille) above the level at which the low-SoC warning and the floor latch release
/// (MON-6, PROT-9).
pub const RELEASE_PERMILLE: u16 = 30;
/// SoC change that makes a persist due at once, in permille (MON-8: 1 point).
pub const PERSIST_SOC_STEP_PERMILLE: u16 = 10;
/// Longest time a changed SoC or consumed Ah stays unpersisted, in ms (MON-8).
pub const PERSIST_MAX_INTERVAL_MS: u64 = 10 * 60_000;
/// Time since the last full charge is persisted when it has advanced this much, in ms, so a
/// reboot loses at most this of it even while the SoC does not change. The monitor's clock
/// only ages the balancer's judgement (BAL-2: 30 days); the one shown is the history's, stored
/// within [`crate::history::SINCE_FULL_PERSIST_MS`]. Each step costs a whole `bms/soc` write
/// (docs/persistence.md, "Flash wear").
pub const PERSIST_AGE_INTERVAL_MS: u64 = 6 * 60 * 60_000;

const TTG_BUCKET_MS: u64 = 10_000;
/// The window's whole buckets, the one under way and the oldest, which the window's start cuts.
const TTG_BUCKETS: usize = (TTG_WINDOW_MS / TTG_BUCKET_MS) as usize + 1;

/// What the monitor knows about the SoC (MON-7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SocKnowledge {
    /// Not known: no synchronisation or manual set since the bank was first seen.
    #[default]
    Unknown,
    /// Estimated from the rested cell voltage and counted since; shown flagged as estimated,
    /// never drives the warning, the floor or time remaining.
    Estimated,
    /// Known: counted since a synchronisation, a manual set, or a restored known state.
    Known,
}

/// The monitor's persisted record (MON-8). Restoring it with [`Monitor::new`] continues where the
/// monitor stopped; the latches are kept so a reboot does not re-allow a discharge PROT-9 stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocState {
    /// What is known about the SoC.
    pub knowledge: SocKnowledge,
    /// Bank capacity in mAh the charges refer to (0 = no bank seen yet).
    pub capacity_mah: u32,
    /// Effective charge below full, in nA·s (0 = full, capacity = empty).
    pub used_nas: i64,
    /// Charge drawn since full, net of charge stored, in nA·s (consumed Ah).
    pub consumed_nas: i64,
    /// Time the monitor ran since the last automatic synchronisation, in ms (`None` = never).
    pub since_full_charge_ms: Option<u64>,
    /// The low-SoC warning latch (MON-6).
    pub low_soc_warning: bool,
    /// The discharge-floor latch (PROT-9).
    pub below_floor: bool,
}

/// The bank measurements for one update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorInput {
    /// Bank voltage in mV.
    pub bank_mv: u32,
    /// Bank current in mA, positive = charging.
    pub bank_ma: i32,
    /// Bank capacity in mAh (0 = bank not known: nothing is counted).
    pub capacity_mah: u32,
    /// Cells in series in the bank (batteries in series × cells per battery).
    pub cells_in_series: u16,
}

/// What the batteries report beyond the bank voltage and current, for an estimator that uses
/// it (the [`AdaptiveEstimator`]); `None` = not known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CellInput {
    /// Lowest cell voltage in the bank, mV.
    pub min_cell_mv: Option<u16>,
    /// Highest cell voltage in the bank, mV.
    pub max_cell_mv: Option<u16>,
    /// Lowest battery temperature in the bank, 0.1 °C.
    pub min_temp_ddegc: Option<i16>,
    /// Highest battery temperature in the bank, 0.1 °C.
    pub max_temp_ddegc: Option<i16>,
}

/// The monitor's decisions after an update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct MonitorStatus {
    /// SoC in permille when known (MON-7); the only SoC that drives decisions.
    pub soc_permille: Option<u16>,
    /// SoC in permille estimated from the rested voltage, when the SoC is not known (MON-7);
    /// to be shown flagged as estimated.
    pub soc_estimate_permille: Option<u16>,
    /// 1-σ uncertainty of the SoC (known or estimated) in permille, from an estimator that
    /// tracks it (the adaptive one); `None` otherwise.
    pub soc_uncertainty_permille: Option<u16>,
    /// Consumed charge since full in mAh (MON-1).
    pub consumed_mah: u32,
    /// Bank current averaged over the time-remaining window in mA, when measured.
    pub average_current_ma: Option<i32>,
    /// Time remaining to the discharge floor in minutes (MON-5); `None` = not available.
    pub ttg_min: Option<u32>,
    /// The low-SoC warning is active: pre-alarm output on (MON-6, PROT-3).
    pub low_soc_warning: bool,
    /// SoC is at or below the discharge floor: low-SoC alarm, ATD free-floating (PROT-9).
    pub below_floor: bool,
    /// An automatic synchronisation happened in this update (MON-2, HIST-3).
    pub synchronised: bool,
    /// Time the monitor ran since the last automatic synchronisation, in ms.
    pub since_full_charge_ms: Option<u64>,
    /// The persisted record is out of date: persist [`Monitor::snapshot`] and then call
    /// [`Monitor::mark_persisted`] (MON-8).
    pub persist_due: bool,
}

/// Why a manual action was refused (MON-4). Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MonitorError {
    /// The SoC given is above 100 % (the value, in permille).
    SocOutOfRange {
        /// The refused SoC in permille.
        soc_permille: u16,
    },
    /// No bank capacity is known yet, so there is nothing to set.
    NoBank,
}

impl fmt::Display for MonitorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MonitorError::SocOutOfRange { soc_permille } => {
                write!(
                    f,
                    "soc {} permille out of range 0..=1000",
                    Number::from(*soc_permille)
                )
            }
            MonitorError::NoBank => f.write_str("no bank capacity known yet"),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Bucket {
    /// Bucket number (time / bucket length) the sums belong to.
    epoch: u64,
    nas: i64,
    ms: u64,
}

/// Sliding average of the bank current over [`TTG_WINDOW_MS`], in 10 s buckets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct AverageWindow {
    buckets: [Bucket; TTG_BUCKETS],
}

impl AverageWindow {
    fn add(&mut self, now_ms: u64, dt_ms: u64, nas: i64) {
        let epoch = now_ms / TTG_BUCKET_MS;
        let slot = (epoch % TTG_BUCKETS as u64) as usize;
        if let Some(bucket) = self.buckets.get_mut(slot) {
            if bucket.epoch != epoch {
                *bucket = Bucket {
                    epoch,
                    nas: 0,
                    ms: 0,
                };
            }
            bucket.nas = bucket.nas.saturating_add(nas);
            bucket.ms = bucket.ms.saturating_add(dt_ms);
        }
    }

    fn clear(&mut self) {
        *self = AverageWindow::default();
    }

    /// Average current in mA over the [`TTG_WINDOW_MS`] up to `now_ms` (MON-5): every bucket
    /// inside it, and of the oldest bucket, which the window's start cuts, the part inside
    /// (its charge and time pro rata), so the window is 3 minutes long at any moment.
    fn average_ma(&self, now_ms: u64) -> Option<i32> {
        let epoch = now_ms / TTG_BUCKET_MS;
        let start_ms = now_ms.saturating_sub(TTG_WINDOW_MS);
        let (nas, ms) = self
            .buckets
            .iter()
            .filter(|b| b.ms > 0 && b.epoch <= epoch)
            .fold((0i64, 0u64), |(nas, ms), b| {
                let bucket_start_ms = b.epoch.saturating_mul(TTG_BUCKET_MS);
                let (b_nas, b_ms) = if bucket_start_ms >= start_ms {
                    (b.nas, b.ms)
                } else {
                    // The part of the bucket inside the window, in ms of its TTG_BUCKET_MS
                    // (0 for a bucket wholly before it). One bucket a step: 64-bit only.
                    let inside_ms = bucket_start_ms
                        .saturating_add(TTG_BUCKET_MS)
                        .saturating_sub(start_ms);
                    (
                        scale_signed(b.nas, inside_ms as u32, TTG_BUCKET_MS as u32),
                        b.ms.saturating_mul(inside_ms) / TTG_BUCKET_MS,
                    )
                };
                (nas.saturating_add(b_nas), ms.saturating_add(b_ms))
            });
        if ms == 0 {
            return None;
        }
        let ma = nas / 1000 / i64::try_from(ms).unwrap_or(i64::MAX);
        Some(i32::try_from(ma).unwrap_or(if ma < 0 { i32::MIN } else { i32::MAX }))
    }
}

/// What was last persisted, to decide when the record is out of date (MON-8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct PersistMark {
    knowledge: SocKnowledge,
    soc_permille: u16,
    consumed_dah: i64,
    since_full_charge_ms: Option<u64>,
    low_soc_warning: bool,
    below_floor: bool,
}

/// The battery monitor. Create it once with the restored [`SocState`], call
/// [`Monitor::update`] (or [`Monitor::update_with`]) every control step with valid bank data,
/// persist when told. The estimator is chosen at run time ([`Estimator`]); [`Monitor::new`]
/// counts plainly, [`Monitor::with_kind`] picks.
#[derive(Clone, Debug)]
pub struct Monitor {
    estimator: Estimator,
    knowledge: SocKnowledge,
    capacity_mah: u32,
    since_full_charge_ms: Option<u64>,
    low_soc_warning: bool,
    below_floor: bool,
    last_ms: Option<u64>,
    last_ma: i32,
    charged_since_ms: Option<u64>,
    synchronised_this_charge: bool,
    rest_since_ms: Option<u64>,
    window: AverageWindow,
    persisted: PersistMark,
    persist_forced: bool,
    /// MON-4, SET-2 (M7): a stored manual action holds the next write until then, ms (0: no
    /// hold), so that a burst of SetSoc or Synchronise commands costs one flash write per
    /// [`USER_WRITE_INTERVAL_MS`].
    manual_hold_until_ms: u64,
    /// When the SoC or consumed Ah first differed from the persisted record.
    unpersisted_since_ms: Option<u64>,
    status: MonitorStatus,
}

impl Monitor {
    /// A monitor with the plain coulomb counter, continuing from `restored` (MON-8) or starting
    /// with the SoC unknown (MON-7). An inconsistent record is clamped into range.
    pub fn new(restored: Option<SocState>) -> Self {
        Monitor::with_kind(EstimatorKind::Plain, restored)
    }

    /// A monitor with the estimator of `kind`, continuing from `restored`.
    pub fn with_kind(kind: EstimatorKind, restored: Option<SocState>) -> Self {
        let mut monitor = Monitor {
            estimator: Estimator::new(kind),
            knowledge: SocKnowledge::Unknown,
            capacity_mah: 0,
            since_full_charge_ms: None,
            low_soc_warning: false,
            below_floor: false,
            last_ms: None,
            last_ma: 0,
            charged_since_ms: None,
            synchronised_this_charge: false,
            rest_since_ms: None,
            window: AverageWindow::default(),
            persisted: PersistMark::default(),
            persist_forced: false,
            manual_hold_until_ms: 0,
            unpersisted_since_ms: None,
            status: MonitorStatus::default(),
        };
        if let Some(state) = restored {
            monitor.restore(state);
        }
        // The restored record is what storage holds: nothing to persist yet.
        monitor.persisted = monitor.mark();
        monitor.status = monitor.make_status(0, None, false);
        monitor
    }

    /// What the adaptive estimator has learned (sensor offset, counting error, OCV table
    /// biases, capacity), to persist next to [`SocState`]; `None` with plain counting.
    pub fn learned(&self) -> Option<Learned> {
        self.estimator.adaptive().map(AdaptiveEstimator::learned)
    }

    /// Restores persisted [`Learned`] values at start (ignored with plain counting, and when
    /// the record is out of range).
    pub fn restore_learned(&mut self, learned: &Learned) {
        if let Some(adaptive) = self.estimator.adaptive_mut() {
            adaptive.restore_learned(learned);
        }
    }
    fn restore(&mut self, state: SocState) {
        self.capacity_mah = state.capacity_mah.min(MAX_CAPACITY_MAH);
        self.knowledge = if self.capacity_mah == 0 {
            SocKnowledge::Unknown
        } else {
            state.knowledge
        };
        self.estimator
            .anchor(state.used_nas, state.consumed_nas, Anchor::Restored);
        self.clamp_counts();
        self.since_full_charge_ms = state.since_full_charge_ms;
        let known = self.knowledge == SocKnowledge::Known;
        self.low_soc_warning = known && state.low_soc_warning;
        self.below_floor = known && state.below_floor;
    }

    /// One monitor step at `now_ms` with the bank measurements (every control step while the
    /// bank data is valid; skip it while it is not). Counts charge since the previous update,
    /// detects synchronisation, and re-evaluates time remaining, warning and floor.
    pub fn update(
        &mut self,
        now_ms: u64,
        input: &MonitorInput,
        settings: &Settings,
    ) -> MonitorStatus {
        self.update_with(now_ms, input, &CellInput::default(), settings)
    }

    /// [`Monitor::update`] with the cell voltages and temperatures as well, which the adaptive
    /// estimator uses (hysteresis and rest time depend on the temperature).
    pub fn update_with(
        &mut self,
        now_ms: u64,
        input: &MonitorInput,
        cells: &CellInput,
        settings: &Settings,
    ) -> MonitorStatus {
        let now_ms = self.last_ms.map_or(now_ms, |last| now_ms.max(last));
        let elapsed_ms = self.last_ms.map_or(0, |last| now_ms - last);
        let gap = elapsed_ms > MAX_GAP_MS;
        let dt_ms = elapsed_ms.min(MAX_GAP_MS);
        let capacity_mah = input.capacity_mah.min(MAX_CAPACITY_MAH);

        if capacity_mah > 0 {
            if self.capacity_mah != capacity_mah {
                self.rescale(capacity_mah);
            }
            if dt_ms > 0 {
                let interval = Interval {
                    dt_ms: dt_ms as u32,
                    start_ma: self.last_ma,
                    end_ma: input.bank_ma,
                    bank_mv: input.bank_mv,
                    cells_in_series: input.cells_in_series,
                    capacity_mah,
                    min_cell_mv: cells.min_cell_mv,
                    max_cell_mv: cells.max_cell_mv,
                    temp_ddegc: cells.min_temp_ddegc,
                };
                self.estimator.integrate(&interval);
                if gap {
                    let around_ma = self
                        .last_ma
                        .unsigned_abs()
                        .max(input.bank_ma.unsigned_abs());
                    self.estimator.missed(elapsed_ms - dt_ms, around_ma);
                }
                self.clamp_counts();
                self.window.add(now_ms, dt_ms, interval.net_nas());
            }
        }
        if gap {
            self.window.clear();
            self.charged_since_ms = None;
            self.rest_since_ms = None;
        }
        self.last_ms = Some(now_ms);
        self.last_ma = input.bank_ma;
        if let Some(since) = self.since_full_charge_ms.as_mut() {
            *since = since.saturating_add(elapsed_ms);
        }

        let synchronised = capacity_mah > 0 && self.detect_charged(now_ms, input, settings);
        if synchronised {
            self.estimator.synchronised();
            self.clamp_counts();
            self.knowledge = SocKnowledge::Known;
            self.since_full_charge_ms = Some(0);
        }
        if capacity_mah > 0 {
            self.estimate_from_rest(now_ms, input);
        }
        self.update_latches(settings);
        let ttg_min = self.time_remaining(now_ms, input, settings);
        if !self.small_change() {
            self.unpersisted_since_ms = None;
        } else if self.unpersisted_since_ms.is_none() {
            self.unpersisted_since_ms = Some(now_ms);
        }
        self.status = self.make_status(now_ms, ttg_min, synchronised);
        self.status
    }

    /// Bank data is missing at this step (a battery lost, the set incomplete; BANK-4): the
    /// charged condition is not observed, so its detection time (MON-2) starts again when data
    /// returns. Call it for every control step without valid bank data, instead of
    /// [`Monitor::update`].
    pub fn data_missing(&mut self) {
        self.charged_since_ms = None;
    }

    /// MON-2: bank voltage ≥ charged voltage and |current| ≤ tail current, continuously for the
    /// detection time. Fires once per charge: it re-arms when the condition breaks. A discharge
    /// larger than the tail current also breaks it: a loaded bank at charged voltage is not full.
    fn detect_charged(&mut self, now_ms: u64, input: &MonitorInput, settings: &Settings) -> bool {
        let capacity_mah = input.capacity_mah.min(MAX_CAPACITY_MAH);
        let tail_ma = u64::from(settings.tail_current_ma(capacity_mah));
        let charged = input.cells_in_series > 0
            && input.bank_mv >= settings.charged_bank_mv(input.cells_in_series)
            && u64::from(input.bank_ma.unsigned_abs()) <= tail_ma;
        if !charged {
            self.charged_since_ms = None;
            self.synchronised_this_charge = false;
            return false;
        }
        let since = *self.charged_since_ms.get_or_insert(now_ms);
        if self.synchronised_this_charge || now_ms - since < settings.charged_detection_ms() {
            return false;
        }
        self.synchronised_this_charge = true;
        true
    }

    /// MON-7: while the SoC is not known and the bank has rested long enough, seed the count from
    /// the open-circuit voltage; it is then counted on, flagged as estimated.
    fn estimate_from_rest(&mut self, now_ms: u64, input: &MonitorInput) {
        if !self.idle(i64::from(input.bank_ma)) {
            self.rest_since_ms = None;
            return;
        }
        let since = *self.rest_since_ms.get_or_insert(now_ms);
        if self.knowledge == SocKnowledge::Known
            || input.cells_in_series == 0
            || now_ms - since < REST_FOR_ESTIMATE_MS
        {
            return;
        }
        let cell_mv = input.bank_mv / u32::from(input.cells_in_series);
        let soc_permille = ocv_soc_permille(u16::try_from(cell_mv).unwrap_or(u16::MAX));
        let used_nas = self.used_for_soc(soc_permille);
        self.estimator
            .anchor(used_nas, used_nas, Anchor::RestEstimate);
        self.knowledge = SocKnowledge::Estimated;
    }

    /// MON-6 and PROT-9 latches, with their +3 point release. Only a known SoC drives them.
    fn update_latches(&mut self, settings: &Settings) {
        if self.soc_permille().is_none() {
            self.low_soc_warning = false;
            self.below_floor = false;
            return;
        }
        // Compared unrounded: the shown SoC is rounded down, so 10.05 % shows as 10.0 % but is
        // above a 10 % floor (PROT-9, MON-6).
        let soc = SocExact {
            left_nas: self
                .capacity_nas()
                .saturating_sub(self.estimator.used_nas()),
            per_mille_nas: i64::try_from(self.capacity_per_mille_nas()).unwrap_or(i64::MAX),
        };
        self.low_soc_warning = latch(
            self.low_soc_warning,
            soc,
            settings.low_soc_warning_permille(),
        );
        self.below_floor = latch(self.below_floor, soc, settings.discharge_floor_permille());
    }

    /// MON-5: (SoC − floor) × capacity ÷ Peukert-corrected average discharge current.
    fn time_remaining(
        &self,
        now_ms: u64,
        input: &MonitorInput,
        settings: &Settings,
    ) -> Option<u32> {
        if self.knowledge != SocKnowledge::Known || self.capacity_mah == 0 {
            return None;
        }
        // MON-5: a discharge is |I| of at least 0.1 % of capacity (idle is below it), compared
        // exactly: 100 mA on 100 Ah is a discharge.
        let discharging = |ma: i64| ma < 0 && !self.idle(ma);
        // MON-5 (rev 2): idle and charging are judged on the present current, so the value
        // goes the moment the load stops, not 3 min later.
        let present_ma = i64::from(input.bank_ma);
        if !discharging(present_ma) {
            return None;
        }
        // The average of a load that has just started can still be near zero or a charge:
        // the present current stands in until the average is a discharge.
        let average_ma = i64::from(self.window.average_ma(now_ms)?);
        let average_ma = if discharging(average_ma) {
            average_ma
        } else {
            present_ma
        };
        let capacity_nas = self.capacity_nas();
        let floor_permille = i64::from(settings.discharge_floor_permille().unwrap_or(0));
        let floor_nas = capacity_nas / 1000 * floor_permille;
        let remaining_nas = (capacity_nas - self.estimator.used_nas() - floor_nas).max(0);
        let drain_ma = average_ma.unsigned_abs();
        let factor_q24 = peukert_factor_q24(average_ma, self.capacity_mah);
        // drain_ma < 2^32 and the factor < 2^26, so the product fits 64 bits.
        let effective_ma =
            ((drain_ma.min(u64::from(u32::MAX)) * u64::from(factor_q24)) >> 24).max(1);
        // nA·s ÷ mA = µs; 60 000 000 µs per minute.
        let minutes = remaining_nas.unsigned_abs() / effective_ma / 60_000_000;
        Some(u32::try_from(minutes).unwrap_or(u32::MAX))
    }

    fn make_status(&self, now_ms: u64, ttg_min: Option<u32>, synchronised: bool) -> MonitorStatus {
        MonitorStatus {
            soc_permille: self.soc_permille(),
            soc_estimate_permille: match self.knowledge {
                SocKnowledge::Estimated => self.counted_soc_permille(),
                _ => None,
            },
            soc_uncertainty_permille: match self.knowledge {
                SocKnowledge::Unknown => None,
                _ => self.soc_uncertainty_permille(),
            },
            consumed_mah: self.consumed_mah(),
            average_current_ma: self.window.average_ma(now_ms),
            ttg_min,
            low_soc_warning: self.low_soc_warning,
            below_floor: self.below_floor,
            synchronised,
            since_full_charge_ms: self.since_full_charge_ms,
            persist_due: self.persist_due(now_ms),
        }
    }

    /// MON-4: sets the SoC to `soc_permille` (0..=1000) at `now_ms`; consumed Ah becomes the
    /// charge missing to full. The SoC is known from then on; counting restarts at `now_ms`
    /// (the charge since the previous update happened before the value the user gave). The
    /// latches follow at the next update. The charged detection time (MON-2) starts again: a
    /// set while the bank is held full is synchronised once the condition has held that long
    /// after it.
    pub fn set_soc(&mut self, now_ms: u64, soc_permille: u16) -> Result<(), MonitorError> {
        if soc_permille > 1000 {
            return Err(MonitorError::SocOutOfRange { soc_permille });
        }
        if self.capacity_mah == 0 {
            return Err(MonitorError::NoBank);
        }
        if let Some(last) = self.last_ms {
            let now_ms = now_ms.max(last);
            if let Some(since) = self.since_full_charge_ms.as_mut() {
                *since = since.saturating_add(now_ms - last);
            }
            self.last_ms = Some(now_ms);
        }
        let used_nas = self.used_for_soc(soc_permille);
        self.estimator.anchor(used_nas, used_nas, Anchor::Manual);
        self.knowledge = SocKnowledge::Known;
        // MON-2: the set value is synchronised like any other once the charged condition has
        // held for the detection time after it, also when the condition already held (a bank
        // at float that had synchronised): the once-per-charge latch re-arms.
        self.charged_since_ms = None;
        self.synchronised_this_charge = false;
        self.persist_forced = true;
        self.status.soc_permille = self.soc_permille();
        self.status.soc_estimate_permille = None;
        self.status.soc_uncertainty_permille = self.soc_uncertainty_permille();
        self.status.consumed_mah = self.consumed_mah();
        Ok(())
    }

    /// MON-4: synchronises the SoC to 100 % at `now_ms` (consumed Ah 0). Unlike the automatic
    /// synchronisation it is not a measured full charge: the time since the last full charge and
    /// the synchronisation count (HIST-3) are left alone.
    pub fn synchronise(&mut self, now_ms: u64) -> Result<(), MonitorError> {
        self.set_soc(now_ms, 1000)
    }

    /// The record to persist (MON-8).
    pub fn snapshot(&self) -> SocState {
        SocState {
            knowledge: self.knowledge,
            capacity_mah: self.capacity_mah,
            used_nas: self.estimator.used_nas(),
            consumed_nas: self.estimator.consumed_nas(),
            since_full_charge_ms: self.since_full_charge_ms,
            low_soc_warning: self.low_soc_warning,
            below_floor: self.below_floor,
        }
    }

    /// Whether the persisted record is out of date at `now_ms` (MON-8): at once after a manual
    /// action, a synchronisation, a change of knowledge or latch, or an SoC change of 1 point;
    /// [`PERSIST_MAX_INTERVAL_MS`] after a smaller change of SoC (0.1 %) or consumed Ah (0.1 Ah)
    /// first appeared; after [`PERSIST_AGE_INTERVAL_MS`] of time since the last full charge.
    /// Never while nothing changed. MON-4, SET-2 (M7): for [`USER_WRITE_INTERVAL_MS`] after a
    /// manual action was stored ([`Monitor::mark_persisted_at`]) nothing is due: a burst of
    /// SetSoc or Synchronise commands is in force at once and stored when that time is over, or
    /// at a flush ([`Monitor::persist_pending`]).
    pub fn persist_due(&self, now_ms: u64) -> bool {
        now_ms >= self.manual_hold_until_ms && self.persist_pending(now_ms)
    }

    /// Whether the persisted record is out of date at `now_ms`, the hold after a stored manual
    /// action aside: what a flush (the link dropped, the device about to stop) writes.
    pub fn persist_pending(&self, now_ms: u64) -> bool {
        let last = &self.persisted;
        let now = self.mark();
        let small_change_due = self.small_change()
            && self
                .unpersisted_since_ms
                .is_some_and(|since| now_ms.saturating_sub(since) >= PERSIST_MAX_INTERVAL_MS);
        let soc_step = now.soc_permille.abs_diff(last.soc_permille);
        let age_due = match (now.since_full_charge_ms, last.since_full_charge_ms) {
            (Some(now_age), Some(last_age)) => {
                now_age.saturating_sub(last_age) >= PERSIST_AGE_INTERVAL_MS
            }
            (now_age, last_age) => now_age.is_some() != last_age.is_some(),
        };
        self.persist_forced
            || now.knowledge != last.knowledge
            || now.low_soc_warning != last.low_soc_warning
            || now.below_floor != last.below_floor
            || soc_step >= PERSIST_SOC_STEP_PERMILLE
            || age_due
            || small_change_due
    }

    /// The SoC (0.1 %) or consumed Ah (0.1 Ah) differ from the persisted record.
    fn small_change(&self) -> bool {
        let now = self.mark();
        now.soc_permille != self.persisted.soc_permille
            || now.consumed_dah != self.persisted.consumed_dah
    }

    /// Records that [`Monitor::snapshot`] was persisted at `now_ms` (call right after a
    /// successful write). When it carried a manual action (MON-4), the next write waits
    /// [`USER_WRITE_INTERVAL_MS`] unless flushed ([`Monitor::persist_due`]).
    pub fn mark_persisted_at(&mut self, now_ms: u64) {
        if self.persist_forced {
            self.manual_hold_until_ms = now_ms.saturating_add(USER_WRITE_INTERVAL_MS);
        }
        self.mark_persisted();
    }

    /// Records that [`Monitor::snapshot`] was persisted (call right after a successful write).
    pub fn mark_persisted(&mut self) {
        self.persisted = self.mark();
        self.persist_forced = false;
        self.unpersisted_since_ms = None;
        self.status.persist_due = false;
    }

    fn mark(&self) -> PersistMark {
        PersistMark {
            knowledge: self.knowledge,
            soc_permille: self.counted_soc_permille().unwrap_or(0),
            consumed_dah: self.estimator.consumed_nas() / (NAS_PER_MAH * 100),
            since_full_charge_ms: self.since_full_charge_ms,
            low_soc_warning: self.low_soc_warning,
            below_floor: self.below_floor,
        }
    }

    /// The decisions of the last update (or of the restored state before the first one).
    pub fn status(&self) -> &MonitorStatus {
        &self.status
    }

    /// What is known about the SoC.
    pub fn knowledge(&self) -> SocKnowledge {
        self.knowledge
    }

    /// SoC in permille when known, rounded down (so the floor trips no later than it should).
    pub fn soc_permille(&self) -> Option<u16> {
        match self.knowledge {
            SocKnowledge::Known => self.counted_soc_permille(),
            _ => None,
        }
    }

    /// Consumed charge since full in mAh (MON-1).
    pub fn consumed_mah(&self) -> u32 {
        let mah = self.estimator.consumed_nas() / NAS_PER_MAH;
        u32::try_from(mah).unwrap_or(if mah < 0 { 0 } else { u32::MAX })
    }

    /// Bank capacity in mAh the monitor counts against (0 = no bank seen yet).
    pub fn capacity_mah(&self) -> u32 {
        self.capacity_mah
    }

    /// Time the monitor ran since the last automatic synchronisation, in ms (BAL-2).
    pub fn since_full_charge_ms(&self) -> Option<u64> {
        self.since_full_charge_ms
    }

    /// The estimator, for inspection.
    pub fn estimator(&self) -> &Estimator {
        &self.estimator
    }

    /// 1-σ uncertainty of the SoC in permille (rounded), when the estimator tracks one.
    pub fn soc_uncertainty_permille(&self) -> Option<u16> {
        let capacity_nas = self.capacity_nas();
        if capacity_nas == 0 {
            return None;
        }
        let sigma_nas = self.estimator.uncertainty_nas()?.max(0);
        // capacity_nas is a whole number of mAh in nA·s, so a multiple of 1000: dividing by
        // its thousandth is exact and cannot overflow.
        let permille = mul_div(
            sigma_nas.unsigned_abs(),
            1,
            self.capacity_per_mille_nas(),
            Rounding::Nearest,
        );
        Some(permille.unwrap_or(u64::MAX).min(1000) as u16)
    }

    fn counted_soc_permille(&self) -> Option<u16> {
        let capacity_nas = self.capacity_nas();
        if capacity_nas == 0 {
            return None;
        }
        let left_nas = capacity_nas.saturating_sub(self.estimator.used_nas());
        // Exact: capacity_nas = 1000 · capacity_per_mille_nas.
        let permille = left_nas / self.capacity_per_mille_nas().max(1) as i64;
        Some(permille.clamp(0, 1000) as u16)
    }

    fn capacity_nas(&self) -> i64 {
        i64::from(self.capacity_mah) * NAS_PER_MAH
    }

    /// A thousandth of the capacity, exact (NAS_PER_MAH is a multiple of 1000).
    fn capacity_per_mille_nas(&self) -> u64 {
        u64::from(self.capacity_mah) * (NAS_PER_MAH / 1000) as u64
    }

    /// The bank is idle at `ma`: |I| below [`IDLE_CURRENT_PERMILLE`] of the capacity, compared
    /// exactly (MON-5; also the rest of MON-7): 100 mA on 100 Ah is not idle, 99 mA is.
    fn idle(&self, ma: i64) -> bool {
        ma.unsigned_abs().saturating_mul(1000)
            < u64::from(self.capacity_mah) * u64::from(IDLE_CURRENT_PERMILLE)
    }

    fn used_for_soc(&self, soc_permille: u16) -> i64 {
        let missing = 1000 - i64::from(soc_permille.min(1000));
        self.capacity_per_mille_nas() as i64 * missing
    }

    /// A different capacity (battery added or removed, BANK-5) keeps the SoC and scales the
    /// charges: the bank's fraction of charge is the best guess for the new bank.
    fn rescale(&mut self, capacity_mah: u32) {
        if self.capacity_mah > 0 {
            let scale = |nas: i64| scale_signed(nas, capacity_mah, self.capacity_mah);
            let used = scale(self.estimator.used_nas());
            let consumed = scale(self.estimator.consumed_nas());
            self.estimator.reset(used, consumed);
        }
        self.capacity_mah = capacity_mah;
        self.clamp_counts();
    }

    fn clamp_counts(&mut self) {
        let used = self.estimator.used_nas().clamp(0, self.capacity_nas());
        let consumed = self.estimator.consumed_nas().max(0);
        if used != self.estimator.used_nas() || consumed != self.estimator.consumed_nas() {
            self.estimator.clamp(used, consumed);
        }
    }
}

/// A level latch with a +3 point release: on at or below `level`, off at or above
/// `level + 3 points`, unchanged between; always off when the level is off.
/// The SoC unrounded: the charge left and a thousandth of the capacity, both in nA·s.
#[derive(Clone, Copy)]
struct SocExact {
    left_nas: i64,
    per_mille_nas: i64,
}

impl SocExact {
    /// The SoC is at or below `permille` (exactly, not rounded).
    fn at_most(self, permille: u16) -> bool {
        self.left_nas <= self.per_mille_nas.saturating_mul(i64::from(permille))
    }

    /// The SoC is at or above `permille`.
    fn at_least(self, permille: u16) -> bool {
        self.left_nas >= self.per_mille_nas.saturating_mul(i64::from(permille))
    }
}

fn latch(active: bool, soc: SocExact, level_permille: Option<u16>) -> bool {
    match level_permille {
        None => false,
        Some(level) if soc.at_most(level) => true,
        Some(level) if soc.at_least((level + RELEASE_PERMILLE).min(1000)) => false,
        Some(_) => active,
    }
}
