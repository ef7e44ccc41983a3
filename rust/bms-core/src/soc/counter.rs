//! Plain coulomb counting with the fixed LiFePO4 parameters of MON-1.
//!
//! - Charge efficiency 99 %: of the charge that flows in, 99 % counts as stored, both for the
//!   SoC and for consumed Ah (the rest is lost in side reactions).
//! - Peukert exponent 1.05 applies to the SoC only, and only above the 20 h rate (MON-1 rev 2):
//!   discharge at current `I > I20` removes `I · (I / I20)^0.05` of the capacity, where `I20`
//!   is the C/20 rate the nominal capacity is rated at; at or below `I20` it removes `I`.
//!   LiFePO4 delivers no more charge at C/100 than at C/20, so scaling small currents down
//!   would only make a long light load drift the count upwards. Consumed Ah stays the charge
//!   actually drawn. Time remaining uses the same law (MON-5), so it agrees with the SoC.

use core::f32::consts::LN_2;

use super::units::stored_nas;
use super::{Interval, SocEstimator};

/// Peukert exponent for LiFePO4 (MON-1).
pub const PEUKERT_EXPONENT: f32 = 1.05;
/// Discharge time in hours at which the nominal capacity is rated (C/20), the Peukert reference.
pub const PEUKERT_RATE_H: u32 = 20;

/// Coulomb counting with charge efficiency and Peukert correction (MON-1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoulombCounter {
    used_nas: i64,
    consumed_nas: i64,
}

impl SocEstimator for CoulombCounter {
    fn integrate(&mut self, interval: &Interval) {
        let net_nas = interval.net_nas();
        if net_nas >= 0 {
            let stored = stored_nas(net_nas);
            self.used_nas = self.used_nas.saturating_sub(stored);
            self.consumed_nas = self.consumed_nas.saturating_sub(stored);
        } else {
            let drawn = net_nas.saturating_neg();
            let mean_ma = (i64::from(interval.start_ma) + i64::from(interval.end_ma)).abs() / 2;
            let factor_q24 = peukert_factor_q24(mean_ma, interval.capacity_mah);
            let effective = peukert_effective_nas(drawn, factor_q24);
            self.used_nas = self.used_nas.saturating_add(effective);
            self.consumed_nas = self.consumed_nas.saturating_add(drawn);
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
    }
}

/// `drawn_nas · factor_q24 / 2^24`, floored and saturating: exact in 64 bits by splitting
/// `drawn_nas` at bit 24 (the low part times the factor stays below 2^50).
fn peukert_effective_nas(drawn_nas: i64, factor_q24: u32) -> i64 {
    let drawn = drawn_nas.max(0);
    let factor = i64::from(factor_q24);
    let low = ((drawn & 0xff_ffff) * factor) >> 24;
    (drawn >> 24).saturating_mul(factor).saturating_add(low)
}

/// The Peukert factor `(I / I20)^(k - 1)` for a discharge of `current_ma` from a bank of
/// `capacity_mah`, in 1/2^24 units (1.0 = 16 777 216). 1.0 at or below the 20 h rate
/// (MON-1 rev 2) and when the capacity is unknown.
pub fn peukert_factor_q24(current_ma: i64, capacity_mah: u32) -> u32 {
    const ONE_Q24: f32 = 16_777_216.0;
    let i20_ma = capacity_mah / PEUKERT_RATE_H;
    if i20_ma == 0 || current_ma.unsigned_abs() <= u64::from(i20_ma) {
        return 1 << 24;
    }
    // Clamped so the approximations below stay in their accurate range; the factor there is
    // 1.0..2.0, far beyond any real battery current.
    let ratio = (current_ma.unsigned_abs() as f32 / i20_ma as f32).min(1e6);
    let factor = exp_small((PEUKERT_EXPONENT - 1.0) * ln_positive(ratio));
    // Float-to-int `as` saturates; the factor is within 0.5..2.0 here anyway.
    (factor * ONE_Q24) as u32
}

/// Natural logarithm of a positive normal `x`, error below 2e-5: exponent from the bits, the
/// mantissa m in [1, 2) through ln m = 2 atanh((m - 1) / (m + 1)).
fn ln_positive(x: f32) -> f32 {
    let bits = x.to_bits();
    let exponent = ((bits >> 23) & 0xff) as i32 - 127;
    let mantissa = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let z = (mantissa - 1.0) / (mantissa + 1.0);
    let z2 = z * z;
    let ln_mantissa = 2.0 * z * (1.0 + z2 * (1.0 / 3.0 + z2 * (1.0 / 5.0 + z2 * (1.0 / 7.0))));
    exponent as f32 * LN_2 + ln_mantissa
}

/// e^y for |y| ≤ 0.7 by its Taylor series to y^7 (error below 2e-6).
fn exp_small(y: f32) -> f32 {
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 1..=7u8 {
        term *= y / f32::from(n);
        sum += term;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `count` values spread evenly in log scale over `lo..=hi`, both ends included.
    fn log_spaced(lo: f32, hi: f32, count: u32) -> impl Iterator<Item = f32> {
        let (a, b) = (libm::logf(lo), libm::logf(hi));
        (0..=count).map(move |i| libm::expf(a + (b - a) * i as f32 / count as f32).clamp(lo, hi))
    }

    // ln_positive against libm over every positive normal float's range: absolute error below
    // 2e-5 (its documented bound), and monotonic over the Peukert domain.
    #[test]
    fn ln_positive_matches_libm() {
        for x in log_spaced(f32::MIN_POSITIVE, f32::MAX, 200_000).chain([
            1.0,
            1.0 + f32::EPSILON,
            2.0,
            core::f32::consts::E,
        ]) {
            let (got, want) = (ln_positive(x), libm::logf(x));
            assert!((got - want).abs() < 2e-5, "ln({x}) = {got}, libm {want}");
        }
        let mut last = f32::MIN;
        for x in log_spaced(1.0, 1e6, 100_000) {
            let y = ln_positive(x);
            assert!(y >= last, "not monotonic at {x}");
            last = y;
        }
    }

    // exp_small against libm over |y| <= 0.7 (the Peukert factor's exponent is at most
    // 0.05 · ln 1e6 = 0.69): error below 2e-6.
    #[test]
    fn exp_small_matches_libm() {
        for i in -70_000..=70_000 {
            let y = i as f32 * 1e-5;
            let (got, want) = (exp_small(y), libm::expf(y));
            assert!((got - want).abs() < 2e-6, "exp({y}) = {got}, libm {want}");
        }
    }

    // The whole Peukert factor against libm's powf above C/20: within 5e-6 of it (the Q24
    // step is 6e-8; ln_positive's 2e-5 times the exponent 0.05 and exp_small's 2e-6 add up).
    #[test]
    fn mon_1_peukert_factor_matches_libm_powf() {
        for ratio in log_spaced(1.0, 1e6, 100_000) {
            let current_ma = (ratio * 5_000.0) as i64;
            let exact = libm::powf(current_ma as f32 / 5_000.0, PEUKERT_EXPONENT - 1.0);
            let got = peukert_factor_q24(current_ma, 100_000) as f32 / 16_777_216.0;
            assert!(
                (got - exact.max(1.0)).abs() < 5e-6,
                "{current_ma} mA: {got} vs {exact}"
            );
        }
    }

    proptest! {
        // MON-1: the Peukert-corrected charge is exact, as the 128-bit product would give it.
        #[test]
        fn mon_1_peukert_effective_charge_is_exact(drawn in 0..=i64::MAX, factor in 0..(1u32 << 26)) {
            let exact = (i128::from(drawn) * i128::from(factor)) >> 24;
            let want = i64::try_from(exact).unwrap_or(i64::MAX);
            prop_assert_eq!(peukert_effective_nas(drawn, factor), want);
        }
    }
}
