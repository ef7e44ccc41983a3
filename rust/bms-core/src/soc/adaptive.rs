//! Adaptive state of charge: coulomb counting corrected by what the measurements can
//! honestly support, with a 1-σ uncertainty reported alongside.
//!
//! The spine is the charge count: the bank current integrated exactly as in
//! [`CoulombCounter`], with the MON-1 charge efficiency but without the Peukert rate
//! correction. For LiFePO4 the usable charge hardly depends on the rate, and Peukert's law
//! applied to the SoC turns every burst of load into a permanent step (a 50 A burst for 20 min
//! on 100 Ah counts 11 % too much); what is left of the counting error is learned instead.
//! On top of the count a small Kalman filter carries eleven states: the SoC, the current-sensor
//! offset, a counting error proportional to the charge moved (charge efficiency, sensor gain,
//! rate effects), the difference between this cell's rested voltage and the generic OCV table
//! in six bins of the lower region and one near full, and the error of the usable capacity.
//!
//! - **Offset and counting error.** Both turn into a SoC error that grows between
//!   synchronisations. An automatic synchronisation (MON-2) measures that error ("full"
//!   against the count without its clipping at 100 %). A battery floated by its charger measures
//!   the offset directly: held flat at a float voltage for an hour, the true current is about
//!   zero, so the mean measured current *is* the offset.
//! - **Knee corrections.** The rested cell voltage says little in the plateau (about 1–1.5 mV
//!   per %) but much near the knees. After a rest long enough for the cell to relax (longer in
//!   the cold) with the voltage flat, the voltage is moved to the table's discharge branch by a
//!   one-state hysteresis model and read in the OCV table, only where the table is steep: the
//!   lower region (up to 30 %) and the top (95 % and above). Cell types differ a lot in the
//!   lower region above the deep knee, so its table biases start almost unknown (1 σ 20 %): the
//!   first readings in a bin teach the bias from the count and correct nothing; later readings
//!   in a learned bin correct the SoC, offset and counting error. "Learned" means known but for
//!   the part that moves with the capacity's error (a bias learned from a count is off by as
//!   much as the capacity scales that count): the update carries that correlation itself.
//!   The bias is read between the anchors of the two nearest bins (their centres; the deep
//!   bin's is the bottom of the table), since a cell's curve differs from the table in slope
//!   as well as in position: only near the bottom of the knee is the deep bin's well-known
//!   bias read alone. Near full all LiFePO4 types agree within a few percent, so those
//!   readings correct at once.
//! - **Light-load readings.** A system that never rests (fridge, router, fan) still shows its
//!   state in the lower knee: the cell voltage under a discharge up to C/20, or under a load
//!   too small to count as one but too steady to rest flat, is a reading once the series drop
//!   and one RC relaxation (both doubling every 12 °C colder) and the hysteresis branch are
//!   modelled; its noise grows with the modelled drop. One voltage reading an hour at most,
//!   from either path. Repeated over days, these teach the offset from the count's drift
//!   between them, with or without full charges.
//! - **Never worse than counting.** When the readings keep contradicting the count beyond
//!   their noise (a running average of the normalised innovation), the estimator counts as
//!   the plain MON-1 counter does, logs it, and adds to its uncertainty the gap between its
//!   own count and the plain one and, in the reported σ, the size of the disagreement (what
//!   the voltage says minus the count: either may be the wrong one), until they agree again
//!   or the SoC is synchronised or set.
//! - **Capacity learning.** The error of the usable capacity is an eleventh state, coupled to
//!   the SoC by the charge counted since the last anchor: a capacity error grows with the
//!   charge counted, an offset with time. Two kinds of reading teach it, with the battery at
//!   15 °C or warmer: a synchronisation after a SoC that was known away from full (set,
//!   restored, or corrected by a knee reading: the charge counted from there to full is
//!   (1 − SoC) × capacity), and a voltage reading in a lower-region bin whose table bias is
//!   learned (the charge counted from full down to it). Counting then scales by the learned
//!   capacity. Between full charges alone (full to full) the capacity leaves no trace, and a
//!   reading in a bin whose bias is still unknown cannot tell a smaller capacity from another
//!   cell curve: those teach it nothing.
//!
//! The user-visible semantics stay the monitor's: MON-2 synchronises to exactly 100 %, MON-4
//! sets exactly, MON-7 keeps the SoC unknown until then. Everything is `f32`: a few dozen
//! operations per interval, the covariance prediction (about 60 operations) once a second, and
//! an 11-state update (about 400) at the rare readings; cheap on a Cortex-M4F.

use serde::{Deserialize, Serialize};

use super::ocv::ocv_soc;
use super::units::{stored_nas, NAS_PER_MAH};
use super::{Anchor, CoulombCounter, Interval, SocEstimator};
use crate::word::Number;

mod filter;
mod readings;
pub use filter::sqrt;
use filter::{
    bias_state, bias_weights, cap_at_prior, diagonal, dot, exp2, forget, predict, prior, unit,
    variance,
};

/// Prior 1-σ current-sensor offset, as a fraction of the capacity per hour: 50 mA on 100 Ah,
/// a typical uncalibrated shunt (1.2 % of SoC per day).
pub const OFFSET_PRIOR_C: f32 = 0.000_5;
/// How far the offset may wander (temperature, ageing), 1 σ per √day as a fraction of the
/// capacity per hour (5 mA per √day on 100 Ah).
pub const OFFSET_WALK_C_PER_SQRT_DAY: f32 = 0.000_05;
/// Prior 1-σ counting error proportional to the charge moved: the fixed charge efficiency and
/// Peukert exponent of MON-1 and the sensor gain are right only on average (fraction of the
/// charge moved, in either direction).
pub const THROUGHPUT_PRIOR: f32 = 0.02;
/// How far that error may wander, 1 σ per √day.
pub const THROUGHPUT_WALK_PER_SQRT_DAY: f32 = 0.001;
/// Random counting error: 1-σ SoC error per √(capacity moved), as a fraction.
pub const COUNT_NOISE_PER_SQRT_THROUGHPUT: f32 = 0.004;
/// Prior 1-σ difference between this cell's rested voltage and the generic OCV table, as SoC
/// (fraction), in the lower region. LiFePO4 types differ most there (at 3.18 V one table says
/// 10 %, another 20 %), so the generic table is hardly trusted: the curve is learned, in
/// [`LOW_BINS`] bins of table SoC that share this much...
pub const TABLE_BIAS_LOW_PRIOR: f32 = 0.20;
/// ...plus this much of their own (the curves differ in shape as well as position).
pub const TABLE_BIAS_BIN_PRIOR: f32 = 0.05;
/// The first bin (the last 5 %, the deep knee where every LiFePO4 type collapses: about 3 %
/// left at 2.8 V loaded) is known much better, on its own, at the bottom of the table; towards
/// its top (the knee's shoulder) a reading blends it with the next bin's.
pub const TABLE_BIAS_DEEP_PRIOR: f32 = 0.03;
/// How far up the table (SoC fraction) a reading blends the deep bin's bias with bin 1's once
/// bin 1 is learned (from its own readings or, through their shared prior, the bins above):
/// the deep bin's top. The knee's shoulder is where cells differ most (the PyBaMM cell of
/// docs/soc-benchmark.md is 12-14 % where the table says 5 %, about 2 % at its bottom), so
/// there bin 1's learned bias holds alone.
pub const DEEP_REACH_LEARNED: f32 = LOW_BIN_WIDTH;
/// The same while bin 1 is not learned: up to bin 1's centre, so that a reading low in the
/// deep knee moves the SoC rather than teaching bin 1's wide prior (3.0 V is nearly empty on
/// every LiFePO4 cell).
pub const DEEP_REACH_UNLEARNED: f32 = 1.5 * LOW_BIN_WIDTH;
/// Number of lower-region bins, each [`LOW_BIN_WIDTH`] of table SoC wide from 0.
pub const LOW_BINS: usize = 6;
/// Width of a lower-region bin, as table SoC (fraction).
pub const LOW_BIN_WIDTH: f32 = 0.05;
/// The same near full, where every LiFePO4 type rises steeply within the last few percent.
pub const TABLE_BIAS_HIGH_PRIOR: f32 = 0.015;
/// Table bias drift (temperature, ageing), 1 σ per √day.
pub const TABLE_BIAS_WALK_PER_SQRT_DAY: f32 = 0.002;
/// 1-σ error of "full" at an automatic synchronisation (MON-2 fires somewhat below 100 %).
pub const SYNC_SIGMA: f32 = 0.01;
/// 1-σ error assumed for a SoC the user sets (MON-4) or a restored record (MON-8).
pub const SET_SIGMA: f32 = 0.02;
/// 1-σ error of a SoC estimated from the rested voltage (MON-7) anywhere on the curve.
pub const REST_ESTIMATE_SIGMA: f32 = 0.15;
/// Bank current below which the bank rests, as a fraction of capacity per hour (C/100).
pub const REST_CURRENT_C: f32 = 0.01;
/// Length of one voltage/current averaging bucket while resting, in ms.
pub const BUCKET_MS: u32 = 5 * 60_000;
/// Rest needed before a knee reading at 15 °C and above, in ms; doubled below 15 °C and
/// quadrupled below 5 °C, since LiFePO4 relaxes more slowly in the cold.
pub const KNEE_REST_MS: u64 = 30 * 60_000;
/// Largest change of the averaged cell voltage over the buckets checked that still counts as
/// relaxed, in mV.
pub const FLAT_MV: f32 = 1.5;
/// Lower knee region: a rested reading the table places at or below this SoC (fraction; the
/// end of the last bin)...
pub const KNEE_LOW: f32 = LOW_BINS as f32 * LOW_BIN_WIDTH;
/// ...or at or above this (upper knee)...
pub const KNEE_HIGH: f32 = 0.95;
/// ...is used when the table there is at least this steep, in mV per % of SoC (the plateau,
/// at about 1 mV per %, is not).
pub const KNEE_MIN_SLOPE_MV_PER_PCT: f32 = 2.0;
/// 1-σ voltage error of a rested reading: measurement and residual relaxation, in mV.
pub const READING_SIGMA_MV: f32 = 3.0;
/// 1-σ error of the hysteresis model's offset, in mV.
pub const HYSTERESIS_SIGMA_MV: f32 = 3.0;
/// A table bias is taken as learned once its 1 σ, given the capacity, is below this (SoC
/// fraction). Until then a reading in its bin only teaches the bias (from the counted SoC) and
/// corrects nothing: a generic table must not pull the SoC towards another cell type's curve.
pub const BIAS_LEARNED_SIGMA: f32 = 0.06;
/// A reading further than this many σ from what the filter expects is an outlier for the slow
/// states: it may still correct the SoC and its table bias, but not teach the offset, the
/// counting error or the capacity.
pub const OUTLIER_SIGMAS: f32 = 4.0;
/// 1-σ SoC error of one rested reading beyond the voltage noise: the table's shape inside a
/// bin (one learned bias per bin), relaxation not quite complete, temperature, as a fraction.
/// In the lower region...
pub const LOW_READING_SIGMA: f32 = 0.025;
/// ...and near full, where the curve is steep and relaxes quickly on a float charger.
pub const HIGH_READING_SIGMA: f32 = 0.01;
/// Half the gap between the charge and discharge OCV branches at 25 °C, in mV (LiFePO4 shows
/// a 10–25 mV gap)...
pub const HYSTERESIS_HALF_GAP_MV: f32 = 8.0;
/// ...growing by this much per °C below 25 °C...
pub const HYSTERESIS_COLD_MV_PER_DEGC: f32 = 0.1;
/// ...up to this, in mV.
pub const HYSTERESIS_MAX_MV: f32 = 12.5;
/// Charge that moves the hysteresis state 63 % of the way to the other branch, as a fraction
/// of capacity.
pub const HYSTERESIS_SPAN: f32 = 0.03;
/// Float window: a rested cell held flat between these voltages (mV) for
/// [`FLOAT_REST_MS`] is taken as floated by its charger, true current about zero.
pub const FLOAT_MIN_CELL_MV: f32 = 3350.0;
/// Upper end of the float window in mV (above it the charger is absorbing, not floating).
pub const FLOAT_MAX_CELL_MV: f32 = 3450.0;
/// Rest needed before a float reading, in ms.
pub const FLOAT_REST_MS: u64 = 60 * 60_000;
/// Shortest time between two float readings, in ms (one per float period, then every 6 h).
pub const FLOAT_INTERVAL_MS: u64 = 6 * 60 * 60_000;
/// 1-σ true current of a floated battery, as a fraction of the capacity per hour (30 mA on
/// 100 Ah: float current and residual relaxation).
pub const FLOAT_SIGMA_C: f32 = 0.000_3;
/// Readings teach the capacity (synchronisations and lower-region voltage readings) only with
/// the battery at least this warm (0.1 °C), so cold (temporary) capacity loss is not learned
/// as ageing.
pub const CAPACITY_MIN_TEMP_DDEGC: i16 = 150;
/// Learned capacity limits, as a fraction of the nominal capacity.
pub const CAPACITY_RANGE: (f32, f32) = (0.5, 1.1);
/// Prior 1-σ of the usable capacity as a fraction of nominal: a pack at 85 % (aged, or a
/// nameplate that promises too much) is 2 σ away, at 80 % (the usual end of life) 2.7 σ.
/// Wider made the winters worse on the tuning profiles: in the cold, where the capacity is not
/// taught, its uncertainty only lets the curve's shape move the SoC (docs/soc-benchmark.md).
pub const CAPACITY_PRIOR: f32 = 0.075;
/// How far the capacity may wander (ageing), 1 σ per √day as a fraction of nominal.
pub const CAPACITY_WALK_PER_SQRT_DAY: f32 = 0.001;

/// A discharge (offset-corrected) up to this, as a fraction of capacity per hour (C/20), or a
/// rest, is a light load: the cell voltage under it is a reading once the IR drop and the
/// relaxation are modelled (fridge, router, fan: systems that never rest). The reading's
/// noise grows with the modelled drop, so the heavier end says less.
pub const LIGHT_LOAD_C: f32 = 0.05;
/// Series resistance of a cell times its capacity, mΩ·Ah at 25 °C (0.8 mΩ for 100 Ah): the
/// part of the drop that follows the current at once.
pub const SERIES_RESISTANCE_MOHM_AH: f32 = 80.0;
/// Polarisation resistance times capacity, mΩ·Ah at 25 °C: the part that builds up with
/// [`POLARISATION_TAU_MS`] (charge transfer and diffusion, lumped into one RC pair).
pub const POLARISATION_MOHM_AH: f32 = 120.0;
/// Time constant of the polarisation, in ms.
pub const POLARISATION_TAU_MS: f32 = 10.0 * 60_000.0;
/// Both resistances double for every this many °C below 25 °C (up to eight times).
pub const RESISTANCE_DOUBLING_DEGC: f32 = 12.0;
/// Time under light load (three polarisation time constants) before a loaded reading, in ms.
pub const LOADED_SETTLE_MS: u64 = 30 * 60_000;
/// Shortest time between two loaded readings, in ms: their model errors are correlated, so
/// more of them would not be more information.
pub const LOADED_INTERVAL_MS: u64 = 60 * 60_000;
/// 1-σ error of the modelled drop, as a fraction of it, plus [`LOADED_SIGMA_MV`].
pub const LOADED_DROP_SIGMA: f32 = 0.5;
/// Fixed part of a loaded reading's voltage error (relaxation not finished), in mV.
pub const LOADED_SIGMA_MV: f32 = 2.0;
/// Average normalised innovation of the voltage readings above which model and data disagree:
/// the estimator then counts as the plain counter does until they agree again.
pub const DISAGREE_NIS: f32 = 6.0;
/// ...and below which they agree again.
pub const AGREE_NIS: f32 = 3.0;
/// Weight of the newest reading in that average.
const NIS_WEIGHT: f32 = 0.2;
const BUCKETS: usize = 6;
/// The covariance prediction is gathered over this long and applied at once (exact: the
/// steps compose by adding their couplings), to keep the per-tick cost small.
const PREDICT_MS: u32 = 1000;
const DAY_S: f32 = 86_400.0;
const HOUR_S: f32 = 3_600.0;

/// Filter states: SoC (fraction; its value lives in the exact count), sensor offset (mA),
/// throughput error (fraction), the table biases of the lower bins and near full (fraction of
/// SoC), and the error of the capacity factor (folded into the factor after every update).
const N: usize = 5 + LOW_BINS;
const S: usize = 0;
const B: usize = 1;
const E: usize = 2;
const LOW: usize = 3;
const HIGH: usize = LOW + LOW_BINS;
const CAP: usize = HIGH + 1;
type Vector = [f32; N];
type Matrix = [[f32; N]; N];

/// What the adaptive estimator has learned about the bank, to be persisted and restored
/// across reboots (with [`AdaptiveEstimator::restore_learned`]). Each value comes with its
/// 1-σ uncertainty.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Learned {
    /// Bank capacity in mAh the values were learned for.
    pub capacity_mah: u32,
    /// Current-sensor offset in mA (positive: the sensor reads too high), and its σ.
    pub offset_ma: (f32, f32),
    /// Counting error per charge moved (fraction, positive: more charge than counted), and σ.
    pub throughput_error: (f32, f32),
    /// OCV table bias in each lower-region bin (SoC fraction), and σ.
    pub table_bias_low: [(f32, f32); LOW_BINS],
    /// OCV table bias near full (SoC fraction), and σ.
    pub table_bias_high: (f32, f32),
    /// Usable capacity as a fraction of the nominal capacity, and σ.
    pub capacity_factor: (f32, f32),
}

/// The last things a rest period showed: 5-minute averages of cell voltage and current.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct RestWatch {
    /// Time the bank has rested (|current| below [`REST_CURRENT_C`]), in ms.
    rest_ms: u64,
    /// Time and sums of the bucket being filled (mean cell mV × ms, mA × ms).
    bucket_ms: u32,
    bucket_mv_ms: f32,
    bucket_ma_ms: f32,
    /// Completed bucket averages, newest first: mean cell voltage (mV) and measured current (mA).
    mv: [f32; BUCKETS],
    ma: [f32; BUCKETS],
    /// How many of `mv`/`ma` are valid.
    filled: u8,
    /// A knee reading was taken in this rest period.
    knee_done: bool,
    /// Time since the last float reading, in ms (`None` = none yet in this rest period).
    since_float_ms: Option<u64>,
}

impl RestWatch {
    fn restart(&mut self) {
        *self = RestWatch::default();
    }

    /// Adds one resting interval; returns true when a bucket was completed.
    fn add(&mut self, dt_ms: u32, cell_mv: f32, ma: f32) -> bool {
        self.rest_ms = self.rest_ms.saturating_add(u64::from(dt_ms));
        if let Some(since) = self.since_float_ms.as_mut() {
            *since = since.saturating_add(u64::from(dt_ms));
        }
        let dt = dt_ms as f32;
        self.bucket_ms = self.bucket_ms.saturating_add(dt_ms);
        self.bucket_mv_ms += cell_mv * dt;
        self.bucket_ma_ms += ma * dt;
        if self.bucket_ms < BUCKET_MS {
            return false;
        }
        let n = self.bucket_ms as f32;
        for (window, mean) in [
            (&mut self.mv, self.bucket_mv_ms / n),
            (&mut self.ma, self.bucket_ma_ms / n),
        ] {
            // Newest first: the oldest bucket drops out.
            window.rotate_right(1);
            if let Some(newest) = window.first_mut() {
                *newest = mean;
            }
        }
        self.filled = self.filled.saturating_add(1).min(BUCKETS as u8);
        self.bucket_ms = 0;
        self.bucket_mv_ms = 0.0;
        self.bucket_ma_ms = 0.0;
        true
    }

    /// The newest bucket's voltage when the last `count` buckets lie within [`FLAT_MV`].
    fn flat_mv(&self, count: usize) -> Option<f32> {
        if usize::from(self.filled) < count {
            return None;
        }
        let recent = self.mv.iter().take(count);
        let (lo, hi) = recent.fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        (hi - lo <= FLAT_MV).then_some(self.mv[0])
    }

    /// Mean measured current over all buckets, in mA.
    fn mean_ma(&self) -> f32 {
        let n = usize::from(self.filled).max(1);
        self.ma.iter().take(n).sum::<f32>() / n as f32
    }
}

/// Coulomb counting with a learned offset and counting error, knee corrections with learned
/// table biases, and capacity learning. See the module documentation.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveEstimator {
    /// Effective charge below full in nA·s, as the monitor sees it (the SoC state).
    used_nas: i64,
    /// Net charge drawn since full in nA·s (offset-corrected).
    consumed_nas: i64,
    /// Charge the monitor clipped at full or empty since the last anchor, nA·s: the count
    /// without clipping is `used_nas - clipped_nas` (what a synchronisation compares).
    clipped_nas: i64,
    /// Capacity the filter is scaled for, mAh (0 = none seen yet).
    capacity_mah: u32,
    /// Filter state except the SoC (which is `used_nas`): see [`N`].
    x: Vector,
    /// Filter covariance.
    p: Matrix,
    /// Prediction gathered since the covariance was last updated: time (ms), offset coupling
    /// (SoC per mA) and charge moved (fraction of capacity).
    pending_ms: u32,
    pending_k: f32,
    pending_moved: f32,
    pending_cap: f32,
    /// Hysteresis state: −1 on the discharge branch, +1 on the charge branch.
    hysteresis: f32,
    /// Last battery temperature, 0.1 °C (25 °C until one is known).
    temp_ddegc: i16,
    rest: RestWatch,
    /// Usable capacity as a fraction of nominal (its uncertainty is the filter's).
    capacity_factor: f32,
    /// Counts of the corrections made, for inspection and tests.
    stats: Corrections,
    /// Light-load readings: time under light load, the bucket being filled, since the last.
    light: LightWatch,
    /// Modelled polarisation voltage of a cell, mV (positive while charging).
    polarisation_mv: f32,
    /// The plain count (MON-1) alongside, the fallback when model and data disagree.
    plain: CoulombCounter,
    /// Running average of the readings' normalised innovation squared (1 when consistent).
    nis: f32,
    /// Model and data disagree: counting as the plain counter does.
    disagree: bool,
    /// Normalised innovation squared of the last update.
    last_nis: f32,
    /// Innovation of the last voltage reading (SoC fraction: what the voltage says minus what
    /// the filter expected), also of one refused as an outlier: the size of a disagreement.
    last_innovation: f32,
    /// While counting plainly after a disagreement: its size (SoC fraction), part of the
    /// reported uncertainty (not of the filter's covariance, whose agreement test it would
    /// otherwise pass by itself) until model and data agree again or the SoC is set anew.
    disagreement: f32,
    /// Bank data went missing since the SoC last had a reference (a synchronisation, a set,
    /// a reading that corrected it) when non-zero: 1 σ of the charge the count then missed (SoC
    /// fraction). The next such reference corrects the SoC only, teaching neither offset,
    /// counting error nor capacity. Part of the reported uncertainty until then, not of the
    /// filter's covariance: there it would keep the bins from counting as learned, and no
    /// reading would correct the SoC any more.
    gap_sigma: f32,
}

/// Light-load readings: the cell voltage corrected for the modelled drop, in 5-minute buckets.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct LightWatch {
    /// Time the bank has been under light load, in ms.
    light_ms: u64,
    /// Time since the last loaded reading, in ms (`None` = none yet).
    since_reading_ms: Option<u64>,
    bucket_ms: u32,
    bucket_mv_ms: f32,
    bucket_drop_ms: f32,
}

/// How many corrections of each kind the adaptive estimator has made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Corrections {
    /// Synchronisations used as readings.
    pub syncs: u32,
    /// Rested knee readings applied.
    pub knee_readings: u32,
    /// Float readings of the offset applied.
    pub float_readings: u32,
    /// Capacity readings applied.
    pub capacity_readings: u32,
    /// Readings of the voltage under a light load applied.
    pub loaded_readings: u32,
    /// Times the estimator fell back to the plain count because model and data disagreed.
    pub fallbacks: u32,
}

impl Default for AdaptiveEstimator {
    fn default() -> Self {
        let mut estimator = AdaptiveEstimator {
            used_nas: 0,
            consumed_nas: 0,
            clipped_nas: 0,
            capacity_mah: 0,
            x: [0.0; N],
            p: [[0.0; N]; N],
            pending_ms: 0,
            pending_k: 0.0,
            pending_moved: 0.0,
            pending_cap: 0.0,
            hysteresis: 0.0,
            temp_ddegc: 250,
            rest: RestWatch::default(),
            capacity_factor: 1.0,
            stats: Corrections::default(),
            light: LightWatch::default(),
            polarisation_mv: 0.0,
            plain: CoulombCounter::default(),
            nis: 1.0,
            disagree: false,
            last_nis: 0.0,
            last_innovation: 0.0,
            disagreement: 0.0,
            gap_sigma: 0.0,
        };
        estimator.p = prior(SET_SIGMA, 0.0);
        estimator
    }
}

impl AdaptiveEstimator {
    /// The learned current-sensor offset in mA (positive: the sensor reads too high).
    pub fn offset_ma(&self) -> f32 {
        self.x[B]
    }

    /// The learned counting error per charge moved (fraction; positive: more than counted).
    pub fn throughput_error(&self) -> f32 {
        self.x[E]
    }

    /// The learned OCV table bias (SoC fraction: table minus true) of the lower-region bin
    /// holding table SoC `soc`, or near full for `soc` at or above [`KNEE_HIGH`].
    pub fn table_bias(&self, soc: f32) -> f32 {
        self.x
            .get(bias_state(soc).unwrap_or(S))
            .copied()
            .unwrap_or(0.0)
    }

    /// 1-σ uncertainty of the SoC as a fraction (0.01 = 1 point): the filter's, plus the size
    /// of a disagreement between voltage and count while counting plainly because of it, plus
    /// the charge a gap in the bank data may have moved unseen (until the next reference).
    pub fn soc_sigma(&self) -> f32 {
        sqrt(self.p[S][S] + self.disagreement * self.disagreement + self.gap_sigma * self.gap_sigma)
    }

    /// The usable capacity as a fraction of the nominal capacity.
    pub fn capacity_factor(&self) -> f32 {
        self.capacity_factor
    }

    /// The hysteresis state: −1 on the discharge branch, +1 on the charge branch.
    pub fn hysteresis(&self) -> f32 {
        self.hysteresis
    }

    /// How many corrections of each kind were made.
    pub fn corrections(&self) -> Corrections {
        self.stats
    }

    /// What was learned, for persisting.
    pub fn learned(&self) -> Learned {
        let with_sigma = |i: usize| {
            let value = self.x.get(i).copied().unwrap_or(0.0);
            (value, sqrt(variance(&self.p, i)))
        };
        Learned {
            capacity_mah: self.capacity_mah,
            offset_ma: with_sigma(B),
            throughput_error: with_sigma(E),
            table_bias_low: core::array::from_fn(|bin| with_sigma(LOW + bin)),
            table_bias_high: with_sigma(HIGH),
            capacity_factor: (self.capacity_factor, sqrt(variance(&self.p, CAP))),
        }
    }

    /// Restores persisted [`Learned`] values. A record that is out of range (damaged) is
    /// ignored as a whole: learning then starts over. Values for another capacity keep the
    /// table biases and capacity factor and start the offset over.
    pub fn restore_learned(&mut self, learned: &Learned) {
        let cap = learned.capacity_mah as f32;
        let offset_limit = 4.0 * OFFSET_PRIOR_C * cap;
        // Comparisons with NaN are false and the limits are finite, so these also refuse
        // values that are not finite.
        let within = |(value, sigma): (f32, f32), limit: f32, prior: f32| {
            value.abs() <= limit && sigma > 0.0 && sigma <= 2.0 * prior
        };
        let cf = learned.capacity_factor;
        // One table for the checks and the restore: the firmware's flash is tight.
        let (low_limit, low_prior) = (4.0 * TABLE_BIAS_LOW_PRIOR, 2.0 * TABLE_BIAS_LOW_PRIOR);
        let [l0, l1, l2, l3, l4, l5] = learned.table_bias_low;
        let states = [
            (B, learned.offset_ma, offset_limit, OFFSET_PRIOR_C * cap),
            (
                E,
                learned.throughput_error,
                4.0 * THROUGHPUT_PRIOR,
                THROUGHPUT_PRIOR,
            ),
            (
                HIGH,
                learned.table_bias_high,
                4.0 * TABLE_BIAS_HIGH_PRIOR,
                TABLE_BIAS_HIGH_PRIOR,
            ),
            (LOW, l0, low_limit, low_prior),
            (LOW + 1, l1, low_limit, low_prior),
            (LOW + 2, l2, low_limit, low_prior),
            (LOW + 3, l3, low_limit, low_prior),
            (LOW + 4, l4, low_limit, low_prior),
            (LOW + 5, l5, low_limit, low_prior),
        ];
        let sane = learned.capacity_mah > 0
            && states
                .iter()
                .all(|&(_, pair, limit, prior)| within(pair, limit, prior))
            && within((cf.0 - 1.0, cf.1), 0.5, CAPACITY_PRIOR)
            && (CAPACITY_RANGE.0..=CAPACITY_RANGE.1).contains(&cf.0);
        if !sane {
            return;
        }
        let mut x = [0.0; N];
        let mut var = [0.0; N];
        var[S] = self.p[S][S];
        for &(i, (value, sigma), _, _) in &states {
            if let (Some(xi), Some(vi)) = (x.get_mut(i), var.get_mut(i)) {
                *xi = value;
                *vi = sigma * sigma;
            }
        }
        self.x = x;
        self.p = diagonal(var);
        self.capacity_mah = learned.capacity_mah;
        self.capacity_factor = learned.capacity_factor.0;
        if let Some(v) = self.p.get_mut(CAP).and_then(|row| row.get_mut(CAP)) {
            *v = learned.capacity_factor.1 * learned.capacity_factor.1;
        }
    }

    fn capacity_nas(&self) -> f32 {
        self.capacity_mah as f32 * NAS_PER_MAH as f32
    }

    /// A new bank capacity: the offset prior scales with it (a battery added brings its own
    /// sensor); the offset learned for the old bank is kept as a start but made uncertain.
    fn set_capacity(&mut self, capacity_mah: u32) {
        self.flush_prediction();
        if self.capacity_mah > 0 {
            self.x[B] *= capacity_mah as f32 / self.capacity_mah as f32;
        }
        let sigma = OFFSET_PRIOR_C * capacity_mah as f32;
        forget(&mut self.p, B, sigma * sigma);
        self.capacity_mah = capacity_mah;
    }

    fn half_gap_mv(&self) -> f32 {
        let temp_c = f32::from(self.temp_ddegc) / 10.0;
        (HYSTERESIS_HALF_GAP_MV + HYSTERESIS_COLD_MV_PER_DEGC * (25.0 - temp_c).max(0.0))
            .min(HYSTERESIS_MAX_MV)
    }

    /// Rest needed before a knee reading at the present temperature.
    fn knee_rest_ms(&self) -> u64 {
        match self.temp_ddegc {
            t if t >= 150 => KNEE_REST_MS,
            t if t >= 50 => 2 * KNEE_REST_MS,
            _ => 4 * KNEE_REST_MS,
        }
    }

    fn soc(&self) -> f32 {
        let cap = self.capacity_nas();
        if cap <= 0.0 {
            return 0.0;
        }
        1.0 - self.used_nas as f32 / cap
    }

    /// Applies the gathered prediction to the covariance.
    fn flush_prediction(&mut self) {
        if self.pending_ms == 0 {
            return;
        }
        let mut g = [0.0; N];
        g[B] = -self.pending_k;
        g[E] = self.pending_moved;
        g[CAP] = self.pending_cap;
        let days = self.pending_ms as f32 / 1000.0 / DAY_S;
        let walk_b = OFFSET_WALK_C_PER_SQRT_DAY * self.capacity_mah as f32;
        let bias_walk = TABLE_BIAS_WALK_PER_SQRT_DAY * TABLE_BIAS_WALK_PER_SQRT_DAY * days;
        let mut q = [bias_walk; N];
        q[S] =
            COUNT_NOISE_PER_SQRT_THROUGHPUT * COUNT_NOISE_PER_SQRT_THROUGHPUT * self.pending_moved;
        q[B] = walk_b * walk_b * days;
        q[E] = THROUGHPUT_WALK_PER_SQRT_DAY * THROUGHPUT_WALK_PER_SQRT_DAY * days;
        q[CAP] = CAPACITY_WALK_PER_SQRT_DAY * CAPACITY_WALK_PER_SQRT_DAY * days;
        predict(&mut self.p, &g, &q);
        cap_at_prior(&mut self.p, OFFSET_PRIOR_C * self.capacity_mah as f32);
        self.pending_ms = 0;
        self.pending_k = 0.0;
        self.pending_moved = 0.0;
        self.pending_cap = 0.0;
    }

    /// Kalman update with the reading `z = h · state + noise` (noise variance `r`), for every
    /// state but the capacity (which only warm synchronisations and knee readings teach).
    fn measure(&mut self, h: Vector, z: f32, r: f32) {
        let mut mask = [true; N];
        mask[CAP] = false;
        let _ = self.update(h, z, r, mask);
    }

    /// Kalman update that changes only the states in `mask` (the others are "considered":
    /// their uncertainty is accounted for, their estimates left alone). The Joseph form keeps
    /// the covariance right for such a gain: `P − K phᵀ − ph Kᵀ + K (h·ph + r) Kᵀ`.
    /// Returns whether the capacity was taught.
    fn update(&mut self, h: Vector, z: f32, r: f32, mask: [bool; N]) -> bool {
        self.flush_prediction();
        let mut state = self.x;
        state[S] = self.soc();
        let innovation = z - dot(&h, &state);
        let ph = self.p.map(|row| dot(&row, &h));
        let total = dot(&h, &ph) + r;
        if !total.is_finite() || total <= 0.0 || !innovation.is_finite() {
            return false;
        }
        self.last_nis = innovation * innovation / total;
        self.last_innovation = innovation;
        // A reading of the SoC itself (a synchronisation, a voltage reading allowed to correct
        // it), not one of the offset alone.
        let reference = mask[S] && h[S] != 0.0;
        let mut mask = mask;
        if innovation * innovation > OUTLIER_SIGMAS * OUTLIER_SIGMAS * total
            || (self.gap_sigma > 0.0 && reference)
        {
            mask[B] = false;
            mask[E] = false;
            mask[CAP] = false;
        }
        let mut gain = ph.map(|v| v / total);
        for (k, keep) in gain.iter_mut().zip(mask) {
            if !keep {
                *k = 0.0;
            }
        }
        for (x, k) in self.x.iter_mut().zip(gain) {
            *x += k * innovation;
        }
        self.x[S] = 0.0;
        let shift_nas = (gain[S] * innovation * self.capacity_nas()) as i64;
        self.used_nas = self.used_nas.saturating_sub(shift_nas);
        if gain[S] != 0.0 {
            // The SoC has a new reference: what was clipped before is accounted for.
            self.clipped_nas = 0;
        }
        if reference {
            // And so is what a gap in the data left out.
            self.gap_sigma = 0.0;
        }
        for ((row, ki), phi) in self.p.iter_mut().zip(gain).zip(ph) {
            for ((v, kj), phj) in row.iter_mut().zip(gain).zip(ph) {
                *v += -ki * phj - phi * kj + ki * total * kj;
            }
        }
        // The capacity state is the error of the factor: fold it in.
        self.capacity_factor =
            (self.capacity_factor + self.x[CAP]).clamp(CAPACITY_RANGE.0, CAPACITY_RANGE.1);
        self.x[CAP] = 0.0;
        self.keep_sane();
        mask[CAP]
    }

    /// Keeps the state within physical limits and the covariance usable whatever the input.
    fn keep_sane(&mut self) {
        let prior_b = OFFSET_PRIOR_C * self.capacity_mah as f32;
        for (i, x) in self.x.iter_mut().enumerate() {
            let limit = match i {
                S => 0.0,
                B => 4.0 * prior_b,
                E => 4.0 * THROUGHPUT_PRIOR,
                HIGH => 4.0 * TABLE_BIAS_HIGH_PRIOR,
                CAP => CAPACITY_RANGE.1 - CAPACITY_RANGE.0,
                _ => 4.0 * TABLE_BIAS_LOW_PRIOR,
            };
            *x = if x.is_finite() {
                x.clamp(-limit, limit)
            } else {
                0.0
            };
        }
        let finite = self.p.iter().flatten().all(|v| v.is_finite());
        let positive = (0..N).all(|i| variance(&self.p, i) >= 0.0);
        if !finite || !positive {
            self.x = [0.0; N];
            self.p = prior(SET_SIGMA, prior_b);
        }
    }
}

impl SocEstimator for AdaptiveEstimator {
    fn integrate(&mut self, interval: &Interval) {
        if interval.capacity_mah == 0 {
            return;
        }
        if interval.capacity_mah != self.capacity_mah {
            self.set_capacity(interval.capacity_mah);
        }
        if let Some(t) = interval.temp_ddegc {
            self.temp_ddegc = t;
        }
        // The spine: the charge counted, with the MON-1 charge efficiency but no Peukert
        // correction (see the module documentation).
        self.plain.integrate(interval);
        let full_nas = i64::from(self.capacity_mah).saturating_mul(NAS_PER_MAH);
        let plain_used = self.plain.used_nas();
        if !(0..=full_nas).contains(&plain_used) {
            let consumed = self.plain.consumed_nas().max(0);
            self.plain.reset(plain_used.clamp(0, full_nas), consumed);
        }
        let net_nas = interval.net_nas();
        let counted = if net_nas >= 0 {
            stored_nas(net_nas).saturating_neg()
        } else {
            // No Peukert scaling at any rate: see the module documentation.
            net_nas.saturating_neg()
        };
        let dt_ms = interval.dt_ms as f32;
        let cap_nas = self.capacity_nas();
        let moved = (counted as f32 / cap_nas).abs();
        // The sensor reads `offset` too high: that much more was really drawn; and a share of
        // the charge moved was not counted.
        let offset_nas = (self.x[B] * dt_ms * 1000.0) as i64;
        let uncounted_nas = (self.x[E] * moved * cap_nas) as i64;
        let corrected = counted
            .saturating_add(offset_nas)
            .saturating_sub(uncounted_nas);
        let used = if self.capacity_factor == 1.0 {
            corrected
        } else {
            (corrected as f32 / self.capacity_factor) as i64
        };
        self.used_nas = self.used_nas.saturating_add(used);
        self.consumed_nas = self
            .consumed_nas
            .saturating_add(counted.saturating_add(offset_nas));

        // Predict: SoC' = SoC − k·offset + moved·error; the other states wander slowly.
        self.pending_ms = self.pending_ms.saturating_add(interval.dt_ms);
        self.pending_k +=
            dt_ms / 1000.0 / HOUR_S / (self.capacity_mah as f32 * self.capacity_factor);
        self.pending_moved += moved;
        self.pending_cap += used as f32 / (cap_nas * self.capacity_factor);
        if self.pending_ms >= PREDICT_MS {
            self.flush_prediction();
        }

        // Hysteresis follows the charge moved (Plett's one-state model, linearised per step).
        let target = if used < 0 { 1.0 } else { -1.0 };
        let pull = (moved / HYSTERESIS_SPAN).min(1.0);
        self.hysteresis += (target - self.hysteresis) * pull;

        let mean_ma = (interval.start_ma as f32 + interval.end_ma as f32) / 2.0;
        if self.disagree {
            self.used_nas = self.plain.used_nas();
        }
        self.watch_light_load(interval, mean_ma);
        let rest_ma = REST_CURRENT_C * self.capacity_mah as f32;
        let resting = (mean_ma - self.x[B]).abs() <= rest_ma
            && (interval.end_ma as f32 - self.x[B]).abs() <= rest_ma;
        if !resting || interval.cells_in_series == 0 {
            self.rest.restart();
            return;
        }
        let cell_mv = interval.bank_mv as f32 / f32::from(interval.cells_in_series);
        if self.rest.add(interval.dt_ms, cell_mv, mean_ma) {
            self.rested_bucket();
        }
    }

    fn used_nas(&self) -> i64 {
        self.used_nas
    }

    fn consumed_nas(&self) -> i64 {
        self.consumed_nas
    }

    fn reset(&mut self, used_nas: i64, consumed_nas: i64) {
        self.used_nas = used_nas;
        self.consumed_nas = consumed_nas;
        if self.disagree {
            self.plain.reset(used_nas, consumed_nas);
        }
    }

    fn clamp(&mut self, used_nas: i64, consumed_nas: i64) {
        self.clipped_nas = self
            .clipped_nas
            .saturating_add(used_nas.saturating_sub(self.used_nas));
        self.reset(used_nas, consumed_nas);
    }

    fn anchor(&mut self, used_nas: i64, consumed_nas: i64, anchor: Anchor) {
        self.reset(used_nas, consumed_nas);
        self.plain.reset(used_nas, consumed_nas);
        self.clipped_nas = 0;
        self.disagreement = 0.0;
        self.gap_sigma = 0.0;
        let sigma = match anchor {
            Anchor::Manual | Anchor::Restored => SET_SIGMA,
            Anchor::RestEstimate => REST_ESTIMATE_SIGMA,
        };
        self.flush_prediction();
        forget(&mut self.p, S, sigma * sigma);
    }

    fn synchronised(&mut self) {
        if self.capacity_mah > 0 {
            // Full, against the count without the clipping at 100 %: the offset's footprint,
            // and the capacity's when the count started from a known SoC below full.
            self.used_nas = self.used_nas.saturating_sub(self.clipped_nas);
            let mut mask = [true; N];
            mask[CAP] = self.temp_ddegc >= CAPACITY_MIN_TEMP_DDEGC;
            let _ = self.update(unit(S), 1.0, SYNC_SIGMA * SYNC_SIGMA, mask);
            self.stats.syncs = self.stats.syncs.saturating_add(1);
        }
        self.used_nas = 0;
        self.consumed_nas = 0;
        self.clipped_nas = 0;
        self.disagreement = 0.0;
        self.gap_sigma = 0.0;
        self.plain.reset(0, 0);
        // The voltage at a synchronisation is on the charge branch.
        self.hysteresis = 1.0;
    }

    /// The charge of the missed time is unknown: its 1 σ is the larger current around the gap,
    /// at least a light load ([`LIGHT_LOAD_C`]: something may have run unseen), over the missed
    /// time; it is reported in the uncertainty (at most 100 %) until the SoC has a new
    /// reference, and that reference corrects the SoC alone. Without this the next
    /// synchronisation took the gap's charge for an offset, a counting error or a capacity (a
    /// 3 h gap in a summer profile: 7 points, learned as a capacity of 1.07 and a counting
    /// error of 4.8 %, 5 points wrong at every evening after). Nothing was observed, so the
    /// rest and light-load watches start again.
    fn missed(&mut self, missed_ms: u64, around_ma: u32) {
        if self.capacity_mah == 0 || missed_ms == 0 {
            return;
        }
        let capacity_ma_h = self.capacity_mah as f32 * self.capacity_factor;
        let current_ma = (around_ma as f32).max(LIGHT_LOAD_C * self.capacity_mah as f32);
        let hours = missed_ms as f32 / 1000.0 / HOUR_S;
        let sigma = current_ma * hours / capacity_ma_h;
        self.gap_sigma = sqrt(self.gap_sigma * self.gap_sigma + sigma * sigma).min(1.0);
        self.rest.restart();
        self.light = LightWatch {
            since_reading_ms: self.light.since_reading_ms,
            ..LightWatch::default()
        };
    }

    fn uncertainty_nas(&self) -> Option<i64> {
        (self.capacity_mah > 0).then(|| (self.soc_sigma() * self.capacity_nas()) as i64)
    }
}
