//! State of charge: how measured intervals of current and voltage become charge.
//!
//! - [`SocEstimator`] is the extension point: the [`Monitor`](crate::monitor::Monitor) hands
//!   every measured [`Interval`] to one and owns the MON semantics around it (when the SoC is
//!   known, synchronisation, manual actions, time remaining, latches, persistence).
//! - [`counter::CoulombCounter`]: plain coulomb counting with charge efficiency and Peukert
//!   (MON-1).
//! - [`adaptive::AdaptiveEstimator`]: the same count corrected by a small Kalman filter (sensor
//!   offset, counting error, OCV table biases, capacity), with a 1-σ uncertainty.
//! - [`ocv`]: the one LiFePO4 open-circuit-voltage table, read by both.
//! - [`units`]: charge in nA·s and the MON-1 charge efficiency.
//!
//! Dependencies run one way: `monitor` → `soc`; nothing in `soc` knows the monitor.

pub mod adaptive;
pub mod counter;
pub mod ocv;
pub mod units;

use serde::{Deserialize, Serialize};

pub use adaptive::{AdaptiveEstimator, Corrections, Learned};
pub use counter::CoulombCounter;
pub use ocv::{ocv_soc, ocv_soc_permille};
pub use units::NAS_PER_MAH;

/// One measured interval between two updates, as handed to a [`SocEstimator`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    /// Length in ms (at most [`MAX_GAP_MS`]).
    pub dt_ms: u32,
    /// Bank current at the start of the interval in mA, positive = charging.
    pub start_ma: i32,
    /// Bank current at the end of the interval in mA.
    pub end_ma: i32,
    /// Bank voltage at the end of the interval in mV.
    pub bank_mv: u32,
    /// Cells in series in the bank.
    pub cells_in_series: u16,
    /// Bank capacity in mAh (1..=[`MAX_CAPACITY_MAH`]).
    pub capacity_mah: u32,
    /// Lowest cell voltage at the end of the interval in mV, when reported.
    pub min_cell_mv: Option<u16>,
    /// Highest cell voltage at the end of the interval in mV, when reported.
    pub max_cell_mv: Option<u16>,
    /// Battery temperature (the lowest in the bank) at the end of the interval in 0.1 °C,
    /// when reported.
    pub temp_ddegc: Option<i16>,
}

impl Interval {
    /// Net charge that flowed in over the interval in nA·s (trapezoid of the two currents),
    /// negative when discharging.
    pub fn net_nas(&self) -> i64 {
        // (start + end) / 2 mA × dt ms × 1000 nA·s per mA·ms; exact in integers.
        (i64::from(self.start_ma) + i64::from(self.end_ma))
            .saturating_mul(i64::from(self.dt_ms))
            .saturating_mul(500)
    }
}

/// Where a new SoC given to an estimator comes from ([`SocEstimator::anchor`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    /// The user set it (MON-4).
    Manual,
    /// A persisted record was restored (MON-8).
    Restored,
    /// Estimated from the rested voltage while the SoC was unknown (MON-7).
    RestEstimate,
}

/// Turns measured intervals into charge. The [`Monitor`] decides what the result means.
///
/// `used_nas` is the effective charge below full (0 = full); the monitor clamps it to
/// `0..=capacity` after every call. `consumed_nas` is the measured net charge drawn since full.
pub trait SocEstimator {
    /// Accounts for one measured interval.
    fn integrate(&mut self, interval: &Interval);
    /// Effective charge below full in nA·s.
    fn used_nas(&self) -> i64;
    /// Net charge drawn since full in nA·s.
    fn consumed_nas(&self) -> i64;
    /// Sets both counts in nA·s, keeping everything else (a capacity change rescales).
    fn reset(&mut self, used_nas: i64, consumed_nas: i64);
    /// The monitor clipped the counts into range (SoC above 100 % or below 0 %). A learning
    /// estimator remembers by how much: it is evidence at the next synchronisation.
    fn clamp(&mut self, used_nas: i64, consumed_nas: i64) {
        self.reset(used_nas, consumed_nas);
    }
    /// A new starting point for the count (manual set, restored record, rested estimate).
    fn anchor(&mut self, used_nas: i64, consumed_nas: i64, anchor: Anchor) {
        let _ = anchor;
        self.reset(used_nas, consumed_nas);
    }
    /// The bank was just found full by an automatic synchronisation (MON-2). A learning
    /// estimator compares its count with "full" here before resetting.
    fn synchronised(&mut self) {
        self.reset(0, 0);
    }
    /// Bank data was missing for `missed_ms` beyond the interval just integrated (the monitor
    /// counts at most [`MAX_GAP_MS`] of a gap, with the currents around it): the charge that
    /// flowed then is unknown. `around_ma` is the larger magnitude of the currents on either
    /// side. An estimator that tracks its uncertainty widens it here, so that what the gap
    /// left out is not taken for a sensor or capacity error at the next reading.
    ///
    /// [`MAX_GAP_MS`]: crate::monitor::MAX_GAP_MS
    fn missed(&mut self, missed_ms: u64, around_ma: u32) {
        let _ = (missed_ms, around_ma);
    }
    /// 1-σ uncertainty of `used_nas` in nA·s, when the estimator tracks one.
    fn uncertainty_nas(&self) -> Option<i64> {
        None
    }
}

/// Which estimator the monitor runs (selected by the product configuration).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EstimatorKind {
    /// Plain coulomb counting with Victron synchronisation (MON-1, MON-2).
    Plain,
    /// [`AdaptiveEstimator`]: counting with offset learning, knee corrections and capacity
    /// learning. The product default: it beat plain counting in the SoC benchmark
    /// (docs/soc-benchmark.md).
    #[default]
    Adaptive,
}

/// The estimator chosen at run time, as the monitor holds it.
// No heap to box the larger variant into; the monitor holds exactly one of these.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Estimator {
    /// Plain coulomb counting.
    Plain(CoulombCounter),
    /// Adaptive estimation.
    Adaptive(AdaptiveEstimator),
}

impl Default for Estimator {
    fn default() -> Self {
        Estimator::new(EstimatorKind::Plain)
    }
}

impl Estimator {
    /// A fresh estimator of `kind`.
    pub fn new(kind: EstimatorKind) -> Self {
        match kind {
            EstimatorKind::Plain => Estimator::Plain(CoulombCounter::default()),
            EstimatorKind::Adaptive => Estimator::Adaptive(AdaptiveEstimator::default()),
        }
    }

    /// Which kind this is.
    pub fn kind(&self) -> EstimatorKind {
        match self {
            Estimator::Plain(_) => EstimatorKind::Plain,
            Estimator::Adaptive(_) => EstimatorKind::Adaptive,
        }
    }

    /// The adaptive estimator, when that is the one running.
    pub fn adaptive(&self) -> Option<&AdaptiveEstimator> {
        match self {
            Estimator::Adaptive(a) => Some(a),
            Estimator::Plain(_) => None,
        }
    }

    /// The adaptive estimator, mutable (to restore [`Learned`] values).
    pub fn adaptive_mut(&mut self) -> Option<&mut AdaptiveEstimator> {
        match self {
            Estimator::Adaptive(a) => Some(a),
            Estimator::Plain(_) => None,
        }
    }
}

impl SocEstimator for Estimator {
    fn integrate(&mut self, interval: &Interval) {
        match self {
            Estimator::Plain(e) => e.integrate(interval),
            Estimator::Adaptive(e) => e.integrate(interval),
        }
    }

    fn used_nas(&self) -> i64 {
        match self {
            Estimator::Plain(e) => e.used_nas(),
            Estimator::Adaptive(e) => e.used_nas(),
        }
    }

    fn consumed_nas(&self) -> i64 {
        match self {
            Estimator::Plain(e) => e.consumed_nas(),
            Estimator::Adaptive(e) => e.consumed_nas(),
        }
    }

    fn reset(&mut self, used_nas: i64, consumed_nas: i64) {
        match self {
            Estimator::Plain(e) => e.reset(used_nas, consumed_nas),
            Estimator::Adaptive(e) => e.reset(used_nas, consumed_nas),
        }
    }

    fn clamp(&mut self, used_nas: i64, consumed_nas: i64) {
        match self {
            Estimator::Plain(e) => e.clamp(used_nas, consumed_nas),
            Estimator::Adaptive(e) => e.clamp(used_nas, consumed_nas),
        }
    }

    fn anchor(&mut self, used_nas: i64, consumed_nas: i64, anchor: Anchor) {
        match self {
            Estimator::Plain(e) => e.anchor(used_nas, consumed_nas, anchor),
            Estimator::Adaptive(e) => e.anchor(used_nas, consumed_nas, anchor),
        }
    }

    fn synchronised(&mut self) {
        match self {
            Estimator::Plain(e) => e.synchronised(),
            Estimator::Adaptive(e) => e.synchronised(),
        }
    }

    fn missed(&mut self, missed_ms: u64, around_ma: u32) {
        match self {
            Estimator::Plain(e) => e.missed(missed_ms, around_ma),
            Estimator::Adaptive(e) => e.missed(missed_ms, around_ma),
        }
    }

    fn uncertainty_nas(&self) -> Option<i64> {
        match self {
            Estimator::Plain(e) => e.uncertainty_nas(),
            Estimator::Adaptive(e) => e.uncertainty_nas(),
        }
    }
}
