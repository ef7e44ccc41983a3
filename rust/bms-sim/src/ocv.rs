//! Open-circuit voltage of a rested LiFePO4 cell against its state of charge.
//!
//! The curve is the hysteresis midline at 25 °C. Its plateau follows LibreSolar's `ocv_lfp`
//! table (5 % steps, 10–95 %); the knees follow the shape of the APR18650M1B breakpoints:
//! a steep rise above 98 % and a collapse below 5 %, placed so that about 3 % of
//! the charge is left when a loaded cell reaches 2.8 V (Victron LFP manual). The table goes on
//! past both ends so that an over-charged cell really climbs above 3.75 V and an over-drained
//! one falls below 2.5 V, which is what the BMS is there to prevent.

/// Breakpoints `(state of charge as a fraction, volts)`, increasing in both columns.
/// Every fraction is a multiple of [`STEP`] so the lookup table reproduces them exactly.
const POINTS: [(f64, f64); 33] = [
    (-0.100, 1.800),
    (-0.020, 2.100),
    (0.000, 2.500),
    (0.010, 2.700),
    (0.030, 2.900),
    (0.050, 3.050),
    (0.080, 3.150),
    (0.100, 3.177),
    (0.150, 3.195),
    (0.200, 3.213),
    (0.250, 3.226),
    (0.300, 3.240),
    (0.350, 3.252),
    (0.400, 3.262),
    (0.450, 3.264),
    (0.500, 3.265),
    (0.550, 3.268),
    (0.600, 3.271),
    (0.650, 3.275),
    (0.700, 3.283),
    (0.750, 3.296),
    (0.800, 3.304),
    (0.850, 3.308),
    (0.900, 3.309),
    (0.950, 3.314),
    (0.980, 3.340),
    (0.990, 3.375),
    (0.995, 3.420),
    (1.000, 3.600),
    (1.003, 3.760),
    (1.006, 3.900),
    (1.010, 4.100),
    (1.030, 4.500),
];

/// Lowest state of charge the table covers (fraction); below it the voltage stays at its end.
pub const SOC_MIN: f64 = -0.100;
/// Highest state of charge the table covers (fraction).
pub const SOC_MAX: f64 = 1.030;
/// Grid step of the lookup table (fraction of charge, 0.1 %).
const STEP: f64 = 0.001;
/// Lookup-table entries: one per grid step from [`SOC_MIN`] to [`SOC_MAX`] inclusive.
const LUT_LEN: usize = 1131;

/// The breakpoint curve, linearly interpolated, clamped at both ends. Reference for the lookup
/// table (and used to build it).
pub fn ocv_reference_v(soc: f64) -> f64 {
    let first = POINTS[0];
    let last = POINTS[POINTS.len() - 1];
    if soc <= first.0 {
        return first.1;
    }
    if soc >= last.0 {
        return last.1;
    }
    let upper = POINTS.partition_point(|&(s, _)| s <= soc);
    let (s0, v0) = POINTS[upper - 1];
    let (s1, v1) = POINTS[upper];
    v0 + (v1 - v0) * (soc - s0) / (s1 - s0)
}

/// The OCV curve as a uniform lookup table, so the plant can evaluate it every tick for every
/// cell in a few nanoseconds.
pub struct Ocv {
    lut_v: Box<[f64; LUT_LEN]>,
}

impl Default for Ocv {
    fn default() -> Self {
        Self::new()
    }
}

impl Ocv {
    /// Builds the lookup table from the breakpoints.
    pub fn new() -> Self {
        let mut lut_v = Box::new([0.0; LUT_LEN]);
        for (i, v) in lut_v.iter_mut().enumerate() {
            *v = ocv_reference_v(SOC_MIN + i as f64 * STEP);
        }
        Ocv { lut_v }
    }

    /// Open-circuit voltage in volts at `soc` (fraction of capacity; clamped to the table).
    #[inline]
    pub fn volts(&self, soc: f64) -> f64 {
        let x = ((soc - SOC_MIN) / STEP).clamp(0.0, (LUT_LEN - 1) as f64);
        // `x` is in range, so the truncating cast picks a valid cell of the grid.
        let i = (x as usize).min(LUT_LEN - 2);
        let frac = x - i as f64;
        let v0 = self.lut_v[i];
        v0 + (self.lut_v[i + 1] - v0) * frac
    }

    /// The state of charge (fraction) at which the curve reaches `volts`: the inverse of
    /// [`Ocv::volts`], for setting up cells from a voltage. Clamped to the table.
    pub fn soc_at(&self, volts: f64) -> f64 {
        let upper = POINTS.partition_point(|&(_, v)| v <= volts);
        if upper == 0 {
            return SOC_MIN;
        }
        if upper >= POINTS.len() {
            return SOC_MAX;
        }
        let (s0, v0) = POINTS[upper - 1];
        let (s1, v1) = POINTS[upper];
        s0 + (s1 - s0) * (volts - v0) / (v1 - v0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breakpoints_are_strictly_increasing_and_on_the_grid() {
        for pair in POINTS.windows(2) {
            assert!(pair[1].0 > pair[0].0 && pair[1].1 > pair[0].1, "{pair:?}");
        }
        for (soc, _) in POINTS {
            let steps = (soc - SOC_MIN) / STEP;
            assert!((steps - steps.round()).abs() < 1e-6, "{soc} off the grid");
        }
        assert_eq!(POINTS[0].0, SOC_MIN);
        assert_eq!(POINTS[POINTS.len() - 1].0, SOC_MAX);
        assert_eq!(((SOC_MAX - SOC_MIN) / STEP).round() as usize + 1, LUT_LEN);
    }

    #[test]
    fn lookup_table_matches_the_breakpoint_curve() {
        let ocv = Ocv::new();
        let mut soc = -0.12;
        while soc < 1.04 {
            let diff = (ocv.volts(soc) - ocv_reference_v(soc)).abs();
            assert!(diff < 1e-9, "soc {soc}: {diff}");
            soc += 0.000_37;
        }
    }

    #[test]
    fn plateau_is_flat_and_knees_are_steep() {
        let ocv = Ocv::new();
        // A LiFePO4 plateau rises about 1.1–1.5 mV per %.
        let plateau_mv_per_pct = (ocv.volts(0.8) - ocv.volts(0.2)) * 1000.0 / 60.0;
        assert!(
            (0.8..2.0).contains(&plateau_mv_per_pct),
            "{plateau_mv_per_pct}"
        );
        assert!((ocv.volts(1.0) - 3.6).abs() < 1e-9);
        assert!((ocv.volts(0.0) - 2.5).abs() < 1e-9);
        // Over-charge goes past the 3.75 V cell over-voltage limit (PROT-4).
        assert!(ocv.volts(1.004) > 3.75);
        // About 3 % left at 2.8–2.9 V (Victron LFP manual).
        assert!((2.85..2.95).contains(&ocv.volts(0.03)));
    }

    #[test]
    fn soc_at_inverts_volts() {
        let ocv = Ocv::new();
        for soc in [0.0, 0.05, 0.2, 0.5, 0.77, 0.99, 1.0] {
            let back = ocv.soc_at(ocv.volts(soc));
            assert!((back - soc).abs() < 1e-6, "{soc} -> {back}");
        }
        assert_eq!(ocv.soc_at(0.0), SOC_MIN);
        assert_eq!(ocv.soc_at(9.0), SOC_MAX);
    }
}
