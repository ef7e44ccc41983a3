//! The filter's linear algebra on fixed-size arrays (no heap): the prior, prediction, the
//! variances, and the two small float functions the target lacks (`sqrt`, `exp2`).

use super::*;

pub(super) fn dot(a: &Vector, b: &Vector) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub(super) fn unit(i: usize) -> Vector {
    let mut v = [0.0; N];
    if let Some(x) = v.get_mut(i) {
        *x = 1.0;
    }
    v
}

/// The state that holds the table bias for table SoC `soc` (fraction), if it is in a knee.
pub(super) fn bias_state(soc: f32) -> Option<usize> {
    if soc >= KNEE_HIGH {
        return Some(HIGH);
    }
    if !(0.0..=KNEE_LOW).contains(&soc) {
        return None;
    }
    let bin = ((soc / LOW_BIN_WIDTH) as usize).min(LOW_BINS - 1);
    Some(LOW + bin)
}

/// How a reading at table SoC `soc` in knee `region` sees the table biases: near full, that
/// bin's bias; in the lower region, the bias interpolated linearly between the anchors of the
/// two nearest bins, since a cell's curve differs from the table in slope as well as in
/// position (a bias constant over a bin makes readings at its two ends disagree the same way
/// every evening). The deep bin's anchor is the bottom of the table (0 %, about 2.8 V, where
/// every LiFePO4 cell is nearly empty) and it reaches up to table SoC `deep_reach`, where bin
/// 1's bias takes over alone up to its centre; the other bins' anchors are their centres.
/// The knee's shoulder (3.13 V is 5 % in the table and 12-14 % on other cells) is where cells
/// differ most: see [`DEEP_REACH_LEARNED`].
pub(super) fn bias_weights(soc: f32, region: usize, deep_reach: f32) -> Vector {
    let mut h = [0.0; N];
    if region == HIGH {
        if let Some(w) = h.get_mut(HIGH) {
            *w = 1.0;
        }
        return h;
    }
    let (lower, w) = if soc < deep_reach {
        (0, (soc / deep_reach).clamp(0.0, 1.0))
    } else {
        // Bin k's centre lies at position k.
        let pos = soc / LOW_BIN_WIDTH - 0.5;
        let lower = (pos as usize).clamp(1, LOW_BINS - 1);
        (lower, (pos - lower as f32).clamp(0.0, 1.0))
    };
    if lower + 1 < LOW_BINS {
        if let Some(a) = h.get_mut(LOW + lower) {
            *a = 1.0 - w;
        }
        if let Some(b) = h.get_mut(LOW + lower + 1) {
            *b = w;
        }
    } else if let Some(a) = h.get_mut(LOW + lower) {
        *a = 1.0;
    }
    h
}

/// The prior covariance: SoC and offset σ as given, the rest from the constants; the lower
/// bins above the deep knee share [`TABLE_BIAS_LOW_PRIOR`].
pub(super) fn prior(soc_sigma: f32, offset_sigma: f32) -> Matrix {
    let shared = TABLE_BIAS_LOW_PRIOR * TABLE_BIAS_LOW_PRIOR;
    let mut p = [[0.0; N]; N];
    for (r, row) in p.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            let upper_bins = LOW + 1..HIGH;
            *v = if r == c {
                prior_variance(r, offset_sigma).unwrap_or(soc_sigma * soc_sigma)
            } else if upper_bins.contains(&r) && upper_bins.contains(&c) {
                shared
            } else {
                0.0
            };
        }
    }
    p
}

/// The variance state `i` has at the first start (the diagonal of [`prior`]); `None` for the
/// SoC, whose starting uncertainty depends on how it was set.
pub(super) fn prior_variance(i: usize, offset_sigma: f32) -> Option<f32> {
    let sigma = match i {
        S => return None,
        B => offset_sigma,
        E => THROUGHPUT_PRIOR,
        HIGH => TABLE_BIAS_HIGH_PRIOR,
        CAP => CAPACITY_PRIOR,
        LOW => TABLE_BIAS_DEEP_PRIOR,
        // The upper low-region bins: a bias they share plus their own.
        _ => {
            return Some(
                TABLE_BIAS_LOW_PRIOR * TABLE_BIAS_LOW_PRIOR
                    + TABLE_BIAS_BIN_PRIOR * TABLE_BIAS_BIN_PRIOR,
            )
        }
    };
    Some(sigma * sigma)
}

/// Keeps every state at most as uncertain as at the first start: without a reading the random
/// walks would grow a state's variance without bound (a year without a reading near full
/// doubles the near-full bias's σ), and a restored record is refused when a σ is beyond twice
/// its prior. Row and column are scaled together (`P' = D P D`), which keeps `P` positive
/// semi-definite.
pub(super) fn cap_at_prior(p: &mut Matrix, offset_sigma: f32) {
    for i in 0..N {
        let (Some(max), now) = (prior_variance(i, offset_sigma), variance(p, i)) else {
            continue;
        };
        if now > max {
            let scale = sqrt(max / now);
            for (r, row) in p.iter_mut().enumerate() {
                for (c, v) in row.iter_mut().enumerate() {
                    if r == i {
                        *v *= scale;
                    }
                    if c == i {
                        *v *= scale;
                    }
                }
            }
        }
    }
}

pub(super) fn diagonal(d: Vector) -> Matrix {
    let mut m = [[0.0; N]; N];
    for (i, (row, v)) in m.iter_mut().zip(d).enumerate() {
        if let Some(x) = row.get_mut(i) {
            *x = v;
        }
    }
    m
}

pub(super) fn variance(p: &Matrix, i: usize) -> f32 {
    p.get(i).and_then(|row| row.get(i)).copied().unwrap_or(0.0)
}

/// Forgets what state `i` had in common with the others and gives it variance `var`.
pub(super) fn forget(p: &mut Matrix, i: usize, var: f32) {
    for (r, row) in p.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            if r == i || c == i {
                *v = if r == c { var } else { 0.0 };
            }
        }
    }
}

/// Covariance prediction for `SoC' = SoC + g · state` (the other states unchanged), plus the
/// process noise `q` on the diagonal: `P' = F P Fᵀ + Q` with `F = I + e_S gᵀ`.
pub(super) fn predict(p: &mut Matrix, g: &Vector, q: &Vector) {
    // Only the offset, throughput-error and capacity states couple into the SoC.
    let (g_b, g_e, g_c) = (g[B], g[E], g[CAP]);
    let pg = p.map(|row| row[B] * g_b + row[E] * g_e + row[CAP] * g_c);
    let gpg = dot(g, &pg);
    if let Some(row) = p.first_mut() {
        for (v, add) in row.iter_mut().zip(pg) {
            *v += add;
        }
    }
    for (row, add) in p.iter_mut().zip(pg) {
        if let Some(v) = row.first_mut() {
            *v += add;
        }
    }
    for (i, (row, qi)) in p.iter_mut().zip(q).enumerate() {
        if let Some(v) = row.get_mut(i) {
            *v += qi;
        }
        if i == S {
            if let Some(v) = row.first_mut() {
                *v += gpg;
            }
        }
    }
}

/// Square root of a non-negative `x` (Newton's method from an exponent-halving guess; `core`
/// has no `sqrt` without `std`). 0 for 0, negative or non-finite input.
pub fn sqrt(x: f32) -> f32 {
    if !x.is_finite() || x <= 0.0 {
        return 0.0;
    }
    // The guess needs a normal float: a subnormal is scaled by 2^48 and the root back by 2^-24.
    let (x, scale) = if x < f32::MIN_POSITIVE {
        (x * 281_474_976_710_656.0, 1.0 / 16_777_216.0)
    } else {
        (x, 1.0)
    };
    let mut y = f32::from_bits((x.to_bits() >> 1) + 0x1fbd_1df5);
    for _ in 0..3 {
        y = 0.5 * (y + x / y);
    }
    y * scale
}

/// 2^x for 0 ≤ x ≤ 3 (integer part by doubling, the fraction by its Taylor series to x^4;
/// error below 0.1 %).
pub(super) fn exp2(x: f32) -> f32 {
    let x = x.clamp(0.0, 3.0);
    let whole = x as u8;
    let y = (x - f32::from(whole)) * core::f32::consts::LN_2;
    let fraction = 1.0 + y * (1.0 + y * (0.5 + y * (1.0 / 6.0 + y / 24.0)));
    fraction * f32::from(1u8 << whole)
}

#[cfg(test)]
mod tests {
    use super::{
        bias_weights, exp2, sqrt, AdaptiveEstimator, CAP, DEEP_REACH_LEARNED, DEEP_REACH_UNLEARNED,
        HIGH, LOW, N,
    };

    fn weights(soc: f32, region: usize) -> [(usize, f32); 2] {
        let h = bias_weights(soc, region, DEEP_REACH_LEARNED);
        let mut nonzero = h.iter().enumerate().filter(|(_, w)| **w != 0.0);
        let mut next = || nonzero.next().map_or((0, 0.0), |(i, w)| (i, *w));
        [next(), next()]
    }

    // Issue 16 (MON-1 with the adaptive estimator): a lower-region reading sees the table bias
    // interpolated between the anchors of the two nearest bins (weights summing to 1): the
    // bottom of the table for the deep bin (reaching to its top, 5 %, once bin 1 is learned;
    // to bin 1's centre before), the centres for the bins above. So a curve that differs from
    // the table in slope reads the same at both ends of a bin, and the knee's shoulder (table
    // 5 %, where cells differ most) is read with bin 1's bias. Near full, one bias.
    #[test]
    fn mon_1_table_bias_is_read_between_bin_centres() {
        assert_eq!(weights(0.0, LOW), [(LOW, 1.0), (0, 0.0)]);
        assert_eq!(weights(0.98, HIGH), [(HIGH, 1.0), (0, 0.0)]);
        // With bin 1 learned, from the bottom of the table (the deep bin's anchor) to the deep
        // bin's top (5 %), then bin 1 alone up to its centre (7.5 %).
        for (soc, region, deep) in [(0.01, LOW, 0.8), (0.025, LOW, 0.5), (0.045, LOW, 0.1)] {
            let [(a, wa), (b, wb)] = weights(soc, region);
            assert_eq!((a, b), (LOW, LOW + 1), "{soc}");
            assert!(
                (wa - deep).abs() < 1e-5 && (wb - (1.0 - deep)).abs() < 1e-5,
                "{soc}: {wa} {wb}"
            );
        }
        for soc in [0.05, 0.06, 0.075] {
            assert_eq!(weights(soc, LOW + 1), [(LOW + 1, 1.0), (0, 0.0)], "{soc}");
        }
        // While bin 1 is not learned the deep bin reaches to bin 1's centre.
        for (soc, deep) in [(0.015, 0.8), (0.045, 0.4), (0.06, 0.2)] {
            let h = bias_weights(soc, LOW, DEEP_REACH_UNLEARNED);
            assert!(
                (h[LOW] - deep).abs() < 1e-5 && (h[LOW + 1] - (1.0 - deep)).abs() < 1e-5,
                "{soc}: {h:?}"
            );
        }
        // Halfway between the centres of bins 1 (7.5 %) and 2 (12.5 %).
        let [(a, wa), (b, wb)] = weights(0.10, LOW + 2);
        assert_eq!((a, b), (LOW + 1, LOW + 2));
        assert!(
            (wa - 0.5).abs() < 1e-5 && (wb - 0.5).abs() < 1e-5,
            "{wa} {wb}"
        );
        // A quarter of the way from the centre of bin 3 (17.5 %) to bin 4's.
        let [(a, wa), (b, wb)] = weights(0.1875, LOW + 3);
        assert_eq!((a, b), (LOW + 3, LOW + 4));
        assert!(
            (wa - 0.75).abs() < 1e-5 && (wb - 0.25).abs() < 1e-5,
            "{wa} {wb}"
        );
        // Above the centre of the last bin: that bin alone.
        assert_eq!(weights(0.29, HIGH - 1), [(HIGH - 1, 1.0), (0, 0.0)]);
        for step in 0..=300 {
            let soc = step as f32 / 1000.0;
            let region = super::bias_state(soc).expect("in the lower region");
            for reach in [DEEP_REACH_LEARNED, DEEP_REACH_UNLEARNED] {
                let sum: f32 = bias_weights(soc, region, reach).iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "{soc} {reach}: {sum}");
            }
        }
    }

    // Issue 16 (MON-1 with the adaptive estimator): a table bias learned from a count is as
    // uncertain as the capacity that scaled the count, but given the capacity it is known; the
    // learned-gate reads the variance given the capacity, so a wide capacity prior does not
    // keep every bin unlearned (and the light-load readings from correcting). A bias with no
    // correlation to the capacity keeps its whole variance.
    #[test]
    fn mon_1_a_bias_learned_with_the_capacity_counts_as_learned() {
        let mut est = AdaptiveEstimator::default();
        let bin = LOW + 2;
        let mut h = [0.0; N];
        h[bin] = 1.0;
        est.p[bin][bin] = 0.0036 + 0.0001;
        est.p[CAP][CAP] = 0.0036;
        est.p[bin][CAP] = 0.0036;
        est.p[CAP][bin] = 0.0036;
        let given = est.bias_variance_given_capacity(&h);
        assert!((given - 0.0001).abs() < 1e-6, "{given}");
        est.p[bin][CAP] = 0.0;
        est.p[CAP][bin] = 0.0;
        let alone = est.bias_variance_given_capacity(&h);
        assert!((alone - 0.0037).abs() < 1e-6, "{alone}");
        // A covariance no real one can be (correlation above 1) must not make it learned.
        est.p[bin][CAP] = 0.01;
        est.p[CAP][bin] = 0.01;
        let broken = est.bias_variance_given_capacity(&h);
        assert!((broken - 0.0037).abs() < 1e-6, "{broken}");
    }

    // sqrt against libm over every positive finite float (normal and subnormal, sampled at
    // every 97th bit pattern): relative error below 2 ulp; 0 for 0, negatives, NaN and inf.
    #[test]
    fn sqrt_matches_libm() {
        let mut bits = 1u32;
        while bits < f32::INFINITY.to_bits() {
            let x = f32::from_bits(bits);
            let (got, want) = (sqrt(x), libm::sqrtf(x));
            assert!(
                ((got - want) / want).abs() <= 2.0 * f32::EPSILON,
                "sqrt({x:e}) = {got:e}, libm {want:e}"
            );
            bits += 97;
        }
        for x in [0.0, -0.0, -1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert_eq!(sqrt(x), 0.0, "{x}");
        }
    }

    // exp2 against libm over its domain 0..=3: relative error below 0.1 %; clamped outside.
    #[test]
    fn exp2_matches_libm() {
        for i in 0..=30_000 {
            let x = i as f32 * 1e-4;
            let (got, want) = (exp2(x), libm::exp2f(x));
            assert!(
                ((got - want) / want).abs() < 1e-3,
                "2^{x} = {got}, libm {want}"
            );
        }
        assert_eq!(exp2(-1.0), 1.0);
        assert_eq!(exp2(5.0), exp2(3.0));
    }
}
