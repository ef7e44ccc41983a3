//! The simulated bank: LiFePO4 cells (OCV with hysteresis, series resistance and two RC pairs,
//! capacity and resistance depending on temperature, self-discharge), batteries of 4/8/16 cells
//! with their own balancer and flags, and the bank of parallel strings solved as Thevenin sources.
//!
//! The model is stepped every control tick, so it is kept to a few multiply-adds per cell; slow
//! things (temperature, balancing, the battery's own flags) move once per second in
//! [`Bank::slow_step`].

use crate::ocv::Ocv;
use bms_core::bus::BatteryModel;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Relaxation time constant of the fast RC pair, in seconds.
pub const TAU1_S: f64 = 60.0;
/// Relaxation time constant of the slow RC pair, in seconds (OCV recovery over about an hour).
pub const TAU2_S: f64 = 1200.0;
/// Cell series resistance at 25 °C for a 100 Ah cell, in ohms (scaled by 100 Ah / capacity).
pub const R0_100AH_OHM: f64 = 0.000_9;
/// Fast RC resistance at 25 °C for a 100 Ah cell, in ohms.
pub const R1_100AH_OHM: f64 = 0.000_4;
/// Slow RC resistance at 25 °C for a 100 Ah cell, in ohms.
pub const R2_100AH_OHM: f64 = 0.000_5;
/// Hysteresis speed: the hysteresis state moves by 1/e of the way to its branch per this many
/// fractions of capacity passed (1 % of capacity).
pub const HYST_SOC_SPAN: f64 = 0.01;
/// Coulombic efficiency of charging (fraction of charged Ah that is stored).
pub const CHARGE_EFFICIENCY: f64 = 0.997;
/// The battery's balancer starts bleeding a cell when it is at or above this voltage...
pub const BALANCE_START_V: f64 = 3.45;
/// ...and more than this above the lowest cell of the battery.
pub const BALANCE_SPREAD_V: f64 = 0.010;
/// Balancing bleed current of a 100 Ah battery, in amperes (scaled with capacity).
pub const BALANCE_100AH_A: f64 = 0.3;
/// Time constant of the cold-capacity depletion building up under discharge, in seconds.
pub const DEPLETION_RISE_S: f64 = 600.0;
/// Time constant of the depletion relaxing at rest or while charging, in seconds.
pub const DEPLETION_RELAX_S: f64 = 3600.0;
/// Thermal time constant of a battery towards ambient, in seconds.
pub const THERMAL_TAU_S: f64 = 2.0 * 3600.0;

/// Fraction of the 25 °C capacity that can be drawn at `temp_c` (Victron LFP: 100 % at 25 °C,
/// 80 % at 0 °C, 50 % at −20 °C; linear in between, never below 20 %).
pub fn capacity_factor(temp_c: f64) -> f64 {
    if temp_c >= 25.0 {
        1.0
    } else if temp_c >= 0.0 {
        0.8 + 0.2 * temp_c / 25.0
    } else {
        (0.8 + 0.3 * temp_c / 20.0).max(0.2)
    }
}

/// Resistance multiplier at `temp_c` against 25 °C: about ×2.4 at 0 °C and ×4.8 at −20 °C.
pub fn resistance_factor(temp_c: f64) -> f64 {
    (0.035 * (25.0 - temp_c)).exp().max(0.7)
}

/// Half the charge/discharge OCV gap in volts at `temp_c` (6 mV at 25 °C, growing in the
/// cold, so the full gap is 12–21 mV between 25 and −20 °C).
pub fn hysteresis_half_gap_v(temp_c: f64) -> f64 {
    0.006 + 0.000_1 * (25.0 - temp_c).clamp(0.0, 45.0)
}

/// Per-cell spread and initial state used when building a bank.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    /// Standard deviation of cell capacity, percent.
    pub capacity_pct: f64,
    /// Standard deviation of cell resistances, percent.
    pub resistance_pct: f64,
    /// Standard deviation of the initial cell SoC, percentage points.
    pub soc_pct: f64,
    /// Mean self-discharge, percent of capacity per 30 days (each cell varies by ±30 %).
    pub self_discharge_pct_per_month: f64,
}

/// One LiFePO4 cell.
#[derive(Clone, Debug)]
pub struct Cell {
    /// Capacity at 25 °C in Ah.
    pub capacity_ah: f64,
    /// Stored charge in Ah (0 = empty at 25 °C, `capacity_ah` = full; may exceed it slightly
    /// when over-charged).
    pub charge_ah: f64,
    /// Hysteresis state, −1 (discharge branch) … +1 (charge branch).
    pub hyst: f64,
    /// Voltage over the fast RC pair, volts (positive while charging).
    pub v_rc1: f64,
    /// Voltage over the slow RC pair, volts.
    pub v_rc2: f64,
    /// Series resistance at 25 °C, ohms.
    pub r0_ohm: f64,
    /// Fast RC resistance at 25 °C, ohms.
    pub r1_ohm: f64,
    /// Slow RC resistance at 25 °C, ohms.
    pub r2_ohm: f64,
    /// Self-discharge as a constant internal current, amperes.
    pub self_discharge_a: f64,
    /// Balancing bleed current right now, amperes (set by the battery's balancer).
    pub bleed_a: f64,
}

impl Cell {
    /// State of charge as a fraction of the 25 °C capacity.
    #[inline]
    pub fn soc(&self) -> f64 {
        self.charge_ah / self.capacity_ah
    }

    /// The internal EMF in volts: OCV at the charge accessible at this temperature, plus
    /// hysteresis and the two RC voltages (everything except the series-resistance drop).
    #[inline]
    pub fn emf_v(&self, ocv: &Ocv, env: &CellEnv) -> f64 {
        // In the cold, under sustained discharge, the bottom of the cell becomes inaccessible:
        // the same charge reads as an emptier cell, so the voltage collapses after
        // `capacity_factor` of the charge is drawn. At rest the depletion relaxes and the
        // voltage recovers (`CellEnv::depletion_scale`).
        let soc_eff = 1.0 - (1.0 - self.soc()) * env.depletion_scale;
        ocv.volts(soc_eff) + self.hyst * env.hyst_v + self.v_rc1 + self.v_rc2
    }

    /// Terminal voltage in volts while `current_a` flows into the cell (positive = charging).
    #[inline]
    pub fn terminal_v(&self, ocv: &Ocv, env: &CellEnv, current_a: f64) -> f64 {
        self.emf_v(ocv, env) + current_a * self.r0_ohm * env.resistance_factor
    }

    /// Moves the cell on by one step with `current_a` through the battery terminals.
    #[inline]
    fn step(&mut self, current_a: f64, dt_s: f64, k: &StepFactors, env: &CellEnv) {
        let stored_a = if current_a > 0.0 {
            current_a * CHARGE_EFFICIENCY
        } else {
            current_a
        };
        let internal_a = stored_a - self.self_discharge_a - self.bleed_a;
        self.charge_ah = (self.charge_ah + internal_a * dt_s / 3600.0)
            .clamp(0.0, self.capacity_ah * crate::ocv::SOC_MAX);
        let throughput = current_a.abs() * dt_s / (3600.0 * self.capacity_ah * HYST_SOC_SPAN);
        if throughput > 0.0 {
            let branch = current_a.signum();
            self.hyst += (branch - self.hyst) * throughput.min(1.0);
        }
        let rf = env.resistance_factor;
        self.v_rc1 = self.v_rc1 * k.a1 + current_a * self.r1_ohm * rf * (1.0 - k.a1);
        self.v_rc2 = self.v_rc2 * k.a2 + current_a * self.r2_ohm * rf * (1.0 - k.a2);
    }
}

/// Temperature-dependent factors shared by the cells of one battery.
#[derive(Clone, Copy, Debug)]
pub struct CellEnv {
    /// 1 / [`capacity_factor`].
    pub inv_capacity_factor: f64,
    /// How much emptier the cells read than they are: 1 at rest, up to
    /// `inv_capacity_factor` after a sustained discharge (see [`Battery::depletion`]).
    pub depletion_scale: f64,
    /// [`resistance_factor`].
    pub resistance_factor: f64,
    /// [`hysteresis_half_gap_v`].
    pub hyst_v: f64,
}

impl CellEnv {
    /// The factors at `temp_c`.
    pub fn at(temp_c: f64) -> Self {
        CellEnv {
            inv_capacity_factor: 1.0 / capacity_factor(temp_c),
            depletion_scale: 1.0,
            resistance_factor: resistance_factor(temp_c),
            hyst_v: hysteresis_half_gap_v(temp_c),
        }
    }
}

/// RC decay factors for one step length, cached because the step is nearly always one tick.
#[derive(Clone, Copy, Debug)]
struct StepFactors {
    dt_s: f64,
    a1: f64,
    a2: f64,
}

impl StepFactors {
    fn for_dt(dt_s: f64) -> Self {
        StepFactors {
            dt_s,
            a1: (-dt_s / TAU1_S).exp(),
            a2: (-dt_s / TAU2_S).exp(),
        }
    }
}

/// One battery: cells in series, a temperature, a balancer and its own allow flags.
#[derive(Clone, Debug)]
pub struct Battery {
    /// Battery model (number of cells).
    pub model: BatteryModel,
    /// Serial number reported on the bus.
    pub serial: u32,
    /// Nominal capacity in Ah (what the battery reports).
    pub nominal_ah: f64,
    /// The cells, first cell first.
    pub cells: Vec<Cell>,
    /// Battery temperature in °C.
    pub temp_c: f64,
    /// Temperature factors for the cells.
    pub env: CellEnv,
    env_temp_c: f64,
    /// Depletion of the cells' surface by a sustained discharge, 0 (rested) … 1: rises over
    /// [`DEPLETION_RISE_S`] while discharging at more than 2 % of capacity per hour, relaxes
    /// over [`DEPLETION_RELAX_S`] otherwise. It scales how much of the cold capacity loss shows.
    pub depletion: f64,
    /// Current into the battery during the last step, amperes (positive = charging).
    pub current_a: f64,
    /// The balancer is bleeding at least one cell.
    pub balancing: bool,
    /// The battery's own BMS allows charging.
    pub allowed_to_charge: bool,
    /// The battery's own BMS allows discharging.
    pub allowed_to_discharge: bool,
    emf_v: f64,
    r_ohm: f64,
}

impl Battery {
    /// Cell terminal voltages (volts) with the last step's current.
    pub fn cell_voltages<'a>(&'a self, ocv: &'a Ocv) -> impl Iterator<Item = f64> + 'a {
        let env = self.env;
        let i = self.current_a;
        self.cells.iter().map(move |c| c.terminal_v(ocv, &env, i))
    }

    /// Terminal voltage of the battery in volts.
    pub fn voltage(&self, ocv: &Ocv) -> f64 {
        self.cell_voltages(ocv).sum()
    }

    /// Mean cell state of charge, fraction of each cell's own capacity.
    pub fn soc(&self) -> f64 {
        self.cells.iter().map(Cell::soc).sum::<f64>() / self.cells.len() as f64
    }

    fn refresh_thevenin(&mut self, ocv: &Ocv) {
        let env = self.env;
        let mut emf = 0.0;
        let mut r = 0.0;
        for c in &self.cells {
            emf += c.emf_v(ocv, &env);
            r += c.r0_ohm;
        }
        self.emf_v = emf;
        self.r_ohm = r * env.resistance_factor;
    }

    /// Once-per-second housekeeping: temperature towards `ambient_c`, balancer, own flags.
    /// Returns the lowest and highest cell voltage. `approach` is the fraction of the way
    /// to ambient the temperature moves in this step.
    fn slow_step(&mut self, ocv: &Ocv, ambient_c: f64, approach: f64, dt_s: f64) -> (f64, f64) {
        self.temp_c += (ambient_c - self.temp_c) * approach;
        // The factors are exponentials: recompute them only when the temperature has moved.
        if (self.temp_c - self.env_temp_c).abs() > 0.01 {
            self.env = CellEnv::at(self.temp_c);
            self.env_temp_c = self.temp_c;
        }
        let (target, tau_s) = if self.current_a < -0.02 * self.nominal_ah {
            (1.0, DEPLETION_RISE_S)
        } else {
            (0.0, DEPLETION_RELAX_S)
        };
        self.depletion += (target - self.depletion) * (dt_s / tau_s).min(1.0);
        self.env.depletion_scale = 1.0 + self.depletion * (self.env.inv_capacity_factor - 1.0);
        let mut volts = [0.0; bms_core::bus::MAX_CELLS_PER_BATTERY];
        let (mut min_v, mut max_v) = (f64::MAX, f64::MIN);
        for (slot, v) in volts.iter_mut().zip(self.cell_voltages(ocv)) {
            *slot = v;
            min_v = min_v.min(v);
            max_v = max_v.max(v);
        }
        let bleed_a = BALANCE_100AH_A * self.nominal_ah / 100.0;
        self.balancing = false;
        for (c, &v) in self.cells.iter_mut().zip(&volts) {
            c.bleed_a = if v >= BALANCE_START_V && v - min_v > BALANCE_SPREAD_V {
                self.balancing = true;
                bleed_a
            } else {
                0.0
            };
        }
        // The battery's own limits sit outside the smallBMS thresholds: it is the last line.
        let t = self.temp_c;
        if max_v > 3.80 || !(0.0..=55.0).contains(&t) {
            self.allowed_to_charge = false;
        } else if max_v < 3.60 && (2.0..=52.0).contains(&t) {
            self.allowed_to_charge = true;
        }
        if min_v < 2.60 || !(-20.0..=65.0).contains(&t) {
            self.allowed_to_discharge = false;
        } else if min_v >= 2.90 && (-18.0..=62.0).contains(&t) {
            self.allowed_to_discharge = true;
        }
        (min_v, max_v)
    }
}

/// How to build a bank.
#[derive(Clone, Copy, Debug)]
pub struct BankSpec {
    /// Battery model.
    pub model: BatteryModel,
    /// Nominal capacity of each battery, Ah.
    pub capacity_ah: f64,
    /// Batteries in series per string.
    pub series: usize,
    /// Strings in parallel.
    pub parallel: usize,
    /// Initial true state of charge of every cell, percent (before spread).
    pub initial_soc_pct: f64,
    /// Initial battery temperature, °C.
    pub initial_temp_c: f64,
    /// Spread between cells.
    pub spread: Spread,
}

/// The bank: `parallel` strings of `series` batteries. Battery `b` sits in string
/// `b / series` at position `b % series`.
///
/// Two rates: [`Bank::flow`] every control tick shares the bank current between the strings
/// against their held Thevenin sources and counts each string's charge; [`Bank::settle`] about
/// once a second moves the cells on with that charge and refreshes the sources. So the per-tick
/// cost grows with the number of strings, not cells.
pub struct Bank {
    /// Batteries, string by string.
    pub batteries: Vec<Battery>,
    /// Batteries in series per string.
    pub series: usize,
    /// The OCV curve.
    pub ocv: Ocv,
    factors: StepFactors,
    string_emf_v: Vec<f64>,
    string_r_ohm: Vec<f64>,
    string_current_a: Vec<f64>,
    string_charge_as: Vec<f64>,
    flow_s: f64,
    thevenin: Thevenin,
}

/// The bank seen from its terminals: an EMF behind a resistance.
#[derive(Clone, Copy, Debug)]
pub struct Thevenin {
    /// Open-circuit voltage of the bank right now, volts.
    pub emf_v: f64,
    /// Internal resistance of the bank, ohms.
    pub r_ohm: f64,
}

impl Thevenin {
    /// Terminal voltage with `current_a` flowing in (positive = charging).
    pub fn voltage(&self, current_a: f64) -> f64 {
        self.emf_v + current_a * self.r_ohm
    }
}

impl Bank {
    /// Builds the bank with per-cell spread drawn from `rng`.
    pub fn new(spec: &BankSpec, rng: &mut ChaCha8Rng) -> Self {
        let ocv = Ocv::new();
        let cells_per_battery = spec.model.cells();
        let scale = 100.0 / spec.capacity_ah;
        // Spread: mean × (1 + sd × N(0, 1)), clamped so no draw can make a silly cell.
        let mut draw = |sd_pct: f64, lo: f64, hi: f64| {
            let z: f64 = StandardNormal.sample(rng);
            (1.0 + sd_pct / 100.0 * z).clamp(lo, hi)
        };
        let count = spec.series * spec.parallel;
        let env = CellEnv::at(spec.initial_temp_c);
        let batteries = (0..count)
            .map(|b| {
                let cells = (0..cells_per_battery)
                    .map(|_| {
                        let capacity_ah =
                            spec.capacity_ah * draw(spec.spread.capacity_pct, 0.8, 1.2);
                        let r = draw(spec.spread.resistance_pct, 0.5, 2.0) * scale;
                        let soc_offset = draw(spec.spread.soc_pct, 0.9, 1.1) - 1.0;
                        let soc = (spec.initial_soc_pct / 100.0 + soc_offset).clamp(0.0, 1.0);
                        let sd_frac =
                            spec.spread.self_discharge_pct_per_month / 100.0 * draw(17.0, 0.7, 1.3);
                        Cell {
                            capacity_ah,
                            charge_ah: soc * capacity_ah,
                            hyst: -1.0,
                            v_rc1: 0.0,
                            v_rc2: 0.0,
                            r0_ohm: R0_100AH_OHM * r,
                            r1_ohm: R1_100AH_OHM * r,
                            r2_ohm: R2_100AH_OHM * r,
                            self_discharge_a: capacity_ah * sd_frac / (30.0 * 24.0),
                            bleed_a: 0.0,
                        }
                    })
                    .collect();
                Battery {
                    model: spec.model,
                    serial: 0x00C0_FFEE_u32
                        .wrapping_mul(7)
                        .wrapping_add(b as u32 * 7919),
                    nominal_ah: spec.capacity_ah,
                    cells,
                    temp_c: spec.initial_temp_c,
                    env,
                    env_temp_c: spec.initial_temp_c,
                    depletion: 0.0,
                    current_a: 0.0,
                    balancing: false,
                    allowed_to_charge: true,
                    allowed_to_discharge: true,
                    emf_v: 0.0,
                    r_ohm: 0.0,
                }
            })
            .collect();
        let mut bank = Bank {
            batteries,
            series: spec.series,
            ocv,
            factors: StepFactors::for_dt(1.0),
            string_emf_v: vec![0.0; spec.parallel],
            string_r_ohm: vec![0.0; spec.parallel],
            string_current_a: vec![0.0; spec.parallel],
            string_charge_as: vec![0.0; spec.parallel],
            flow_s: 0.0,
            thevenin: Thevenin {
                emf_v: 0.0,
                r_ohm: 1.0,
            },
        };
        bank.refresh();
        bank
    }

    /// Strings in parallel.
    pub fn parallel(&self) -> usize {
        self.string_emf_v.len()
    }

    /// Nominal capacity of the bank in Ah (sum of the strings).
    pub fn nominal_ah(&self) -> f64 {
        self.batteries.first().map_or(0.0, |b| b.nominal_ah) * self.parallel() as f64
    }

    /// Recomputes the Thevenin source of every string from the cell states. [`Bank::settle`]
    /// calls it; between settles the source is held.
    fn refresh(&mut self) {
        let mut g_sum = 0.0;
        let mut ge_sum = 0.0;
        for (s, string) in self.batteries.chunks_mut(self.series).enumerate() {
            let mut emf = 0.0;
            let mut r = 0.0;
            for b in string.iter_mut() {
                b.refresh_thevenin(&self.ocv);
                emf += b.emf_v;
                r += b.r_ohm;
            }
            self.string_emf_v[s] = emf;
            self.string_r_ohm[s] = r;
            g_sum += 1.0 / r;
            ge_sum += emf / r;
        }
        self.thevenin = Thevenin {
            emf_v: ge_sum / g_sum,
            r_ohm: 1.0 / g_sum,
        };
    }

    /// The bank as a Thevenin source, as of the last [`Bank::settle`].
    #[inline]
    pub fn thevenin(&self) -> Thevenin {
        self.thevenin
    }

    /// `bank_current_a` flows into the bank (positive = charging) for `dt_s` seconds, shared
    /// between the strings by their EMF and resistance. Cheap: only the strings' charge is
    /// counted here; the cells move on at the next [`Bank::settle`].
    #[inline]
    pub fn flow(&mut self, bank_current_a: f64, dt_s: f64) {
        let bank_v = self.thevenin.voltage(bank_current_a);
        for s in 0..self.string_emf_v.len() {
            let i = (bank_v - self.string_emf_v[s]) / self.string_r_ohm[s];
            self.string_current_a[s] = i;
            self.string_charge_as[s] += i * dt_s;
        }
        self.flow_s += dt_s;
    }

    /// Moves every cell on by the time [`Bank::flow`] counted since the last settle, with each
    /// string's mean current over it, then refreshes the Thevenin sources. Call about once a
    /// second: the RC pairs and hysteresis move on a scale of a minute and more, and the
    /// charge is counted exactly whatever the call rate.
    pub fn settle(&mut self) {
        let dt_s = self.flow_s;
        if dt_s > 0.0 {
            if self.factors.dt_s != dt_s {
                self.factors = StepFactors::for_dt(dt_s);
            }
            let k = self.factors;
            let series = self.series;
            for (s, string) in self.batteries.chunks_mut(series).enumerate() {
                let mean_a = self.string_charge_as[s] / dt_s;
                for b in string.iter_mut() {
                    let env = b.env;
                    for c in &mut b.cells {
                        c.step(mean_a, dt_s, &k, &env);
                    }
                }
                self.string_charge_as[s] = 0.0;
            }
            self.flow_s = 0.0;
        }
        let series = self.series;
        for (s, string) in self.batteries.chunks_mut(series).enumerate() {
            for b in string.iter_mut() {
                b.current_a = self.string_current_a[s];
            }
        }
        self.refresh();
    }

    /// [`Bank::flow`] then [`Bank::settle`]: one full step of `dt_s` seconds.
    pub fn step(&mut self, bank_current_a: f64, dt_s: f64) {
        self.flow(bank_current_a, dt_s);
        self.settle();
    }

    /// Once-per-second housekeeping of every battery (temperature towards `ambient_c`,
    /// balancers, own flags), for `dt_s` seconds since the last call.
    /// Returns the lowest and highest cell voltage in the bank.
    pub fn slow_step(&mut self, ambient_c: f64, dt_s: f64) -> (f64, f64) {
        let approach = 1.0 - (-dt_s / THERMAL_TAU_S).exp();
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        for b in &mut self.batteries {
            let (l, h) = b.slow_step(&self.ocv, ambient_c, approach, dt_s);
            lo = lo.min(l);
            hi = hi.max(h);
        }
        (lo, hi)
    }

    /// True state of charge of the bank in percent: mean over all cells of charge / own
    /// capacity (what a perfect monitor would show).
    pub fn soc_pct(&self) -> f64 {
        self.batteries.iter().map(Battery::soc).sum::<f64>() * 100.0 / self.batteries.len() as f64
    }

    /// Lowest and highest cell terminal voltage in the bank, volts.
    pub fn cell_min_max_v(&self) -> (f64, f64) {
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        for b in &self.batteries {
            for v in b.cell_voltages(&self.ocv) {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        (lo, hi)
    }

    /// Mean battery temperature, °C.
    pub fn temp_c(&self) -> f64 {
        self.batteries.iter().map(|b| b.temp_c).sum::<f64>() / self.batteries.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn bank(soc_pct: f64, temp_c: f64) -> Bank {
        let spec = BankSpec {
            model: BatteryModel::Lfp12V8,
            capacity_ah: 100.0,
            series: 1,
            parallel: 1,
            initial_soc_pct: soc_pct,
            initial_temp_c: temp_c,
            spread: Spread {
                capacity_pct: 0.0,
                resistance_pct: 0.0,
                soc_pct: 0.0,
                self_discharge_pct_per_month: 0.0,
            },
        };
        Bank::new(&spec, &mut ChaCha8Rng::seed_from_u64(1))
    }

    fn run(bank: &mut Bank, current_a: f64, seconds: f64) {
        let steps = (seconds / 0.1).round() as usize;
        for i in 0..steps {
            bank.flow(current_a, 0.1);
            if i % 10 == 9 {
                bank.settle();
                let t = bank.temp_c();
                bank.slow_step(t, 1.0);
            }
        }
    }

    fn cell_v(bank: &Bank) -> f64 {
        bank.batteries[0].cell_voltages(&bank.ocv).next().unwrap()
    }

    #[test]
    fn rested_cell_sits_on_the_discharge_branch_of_the_ocv() {
        let b = bank(50.0, 25.0);
        let expected = b.ocv.volts(0.5) - hysteresis_half_gap_v(25.0);
        assert!((cell_v(&b) - expected).abs() < 1e-9);
    }

    #[test]
    fn coulombs_are_conserved_on_discharge() {
        let mut b = bank(80.0, 25.0);
        run(&mut b, -50.0, 3600.0);
        // 50 Ah out of 100 Ah.
        assert!((b.soc_pct() - 30.0).abs() < 0.05, "{}", b.soc_pct());
    }

    #[test]
    fn load_drops_the_voltage_and_it_relaxes_over_an_hour() {
        let mut b = bank(60.0, 25.0);
        let rested = cell_v(&b);
        run(&mut b, -50.0, 600.0);
        let loaded = cell_v(&b);
        // Series resistance + both RC pairs: 50 A × 1.8 mΩ ≈ 90 mV below rest at most.
        let drop = rested - loaded;
        assert!((0.04..0.12).contains(&drop), "drop {drop}");
        run(&mut b, 0.0, 1.0);
        let just_after = cell_v(&b);
        run(&mut b, 0.0, 600.0);
        let after_10min = cell_v(&b);
        run(&mut b, 0.0, 3.0 * 3600.0);
        let after_3h = cell_v(&b);
        assert!(
            just_after > loaded + 0.03,
            "series resistance drop vanishes at once"
        );
        assert!(
            after_10min > just_after + 0.005,
            "fast RC relaxes within minutes"
        );
        assert!(
            after_3h > after_10min + 0.005,
            "slow RC relaxes over an hour"
        );
        let rest_target = b.ocv.volts(b.batteries[0].cells[0].soc()) - hysteresis_half_gap_v(25.0);
        assert!(
            (after_3h - rest_target).abs() < 0.001,
            "{after_3h} vs {rest_target}"
        );
    }

    #[test]
    fn hysteresis_gap_is_between_10_and_25_mv_after_rest() {
        // Reach 50 % from above (discharge) and from below (charge), then rest 4 h.
        let mut down = bank(60.0, 25.0);
        run(&mut down, -10.0, 3600.0);
        run(&mut down, 0.0, 4.0 * 3600.0);
        let mut up = bank(40.0, 25.0);
        run(&mut up, 10.0, 3600.0 / CHARGE_EFFICIENCY);
        run(&mut up, 0.0, 4.0 * 3600.0);
        assert!((down.soc_pct() - up.soc_pct()).abs() < 0.05);
        let gap_mv = (cell_v(&up) - cell_v(&down)) * 1000.0;
        assert!((10.0..=25.0).contains(&gap_mv), "gap {gap_mv} mV");
        let mut cold_down = bank(60.0, -20.0);
        run(&mut cold_down, -5.0, 7200.0);
        assert!(cold_down.batteries[0].cells[0].hyst < -0.99);
        assert!(hysteresis_half_gap_v(-20.0) * 2000.0 <= 25.0);
    }

    #[test]
    fn capacity_falls_with_temperature() {
        assert_eq!(capacity_factor(25.0), 1.0);
        assert!((capacity_factor(0.0) - 0.8).abs() < 1e-12);
        assert!((capacity_factor(-20.0) - 0.5).abs() < 1e-12);
        // Drawn Ah until a cell reaches 2.8 V under a 0.2 C load.
        let drawn = |temp_c: f64| -> f64 {
            let mut b = bank(100.0, temp_c);
            let mut seconds = 0.0;
            while cell_v(&b) > 2.8 && seconds < 10.0 * 3600.0 {
                run(&mut b, -20.0, 10.0);
                seconds += 10.0;
            }
            20.0 * seconds / 3600.0
        };
        let warm = drawn(25.0);
        let zero = drawn(0.0);
        let cold = drawn(-20.0);
        assert!((92.0..100.0).contains(&warm), "{warm}");
        assert!((zero / warm - 0.8).abs() < 0.05, "{zero} / {warm}");
        assert!((cold / warm - 0.5).abs() < 0.07, "{cold} / {warm}");
    }

    #[test]
    fn cold_battery_recovers_its_voltage_at_rest() {
        let mut b = bank(30.0, -10.0);
        let rested = cell_v(&b);
        run(&mut b, -20.0, 3600.0);
        let loaded = cell_v(&b);
        run(&mut b, 0.0, 6.0 * 3600.0);
        let recovered = cell_v(&b);
        assert!(loaded < 3.0, "the cold knee shows under load: {loaded}");
        // Back on the OCV of the (now 10 % emptier) cell, not stuck on the cold knee.
        let target = b.ocv.volts(b.batteries[0].cells[0].soc()) - hysteresis_half_gap_v(-10.0);
        assert!((recovered - target).abs() < 0.01, "{recovered} vs {target}");
        assert!(recovered > 3.1 && recovered < rested);
    }

    #[test]
    fn resistance_rises_in_the_cold() {
        assert!((resistance_factor(25.0) - 1.0).abs() < 1e-12);
        assert!(resistance_factor(0.0) > 2.0);
        assert!(resistance_factor(-20.0) > 4.0);
    }

    #[test]
    fn self_discharge_drains_a_resting_battery() {
        let mut spec_bank = bank(50.0, 25.0);
        for c in &mut spec_bank.batteries[0].cells {
            c.self_discharge_a = 100.0 * 0.03 / (30.0 * 24.0);
        }
        // 30 days in 10 s steps.
        for _ in 0..(30 * 24 * 360) {
            spec_bank.step(0.0, 10.0);
        }
        assert!(
            (spec_bank.soc_pct() - 47.0).abs() < 0.01,
            "{}",
            spec_bank.soc_pct()
        );
    }

    #[test]
    fn balancer_bleeds_the_high_cell_near_the_top() {
        let mut b = bank(99.0, 25.0);
        b.batteries[0].cells[2].charge_ah += 0.8;
        run(&mut b, 2.0, 5.0);
        assert!(b.batteries[0].balancing);
        assert!(b.batteries[0].cells[2].bleed_a > 0.0);
        assert_eq!(b.batteries[0].cells[0].bleed_a, 0.0);
        let mut mid = bank(50.0, 25.0);
        mid.batteries[0].cells[2].charge_ah += 5.0;
        run(&mut mid, 2.0, 5.0);
        assert!(!mid.batteries[0].balancing, "no balancing in the plateau");
    }

    #[test]
    fn overcharging_one_cell_passes_the_overvoltage_limit() {
        let mut b = bank(99.0, 25.0);
        b.batteries[0].cells[1].charge_ah += 1.2;
        run(&mut b, 5.0, 600.0);
        let (_, max) = b.cell_min_max_v();
        assert!(max > 3.75, "{max}");
        assert!(!b.batteries[0].allowed_to_charge || max <= 3.80);
    }

    #[test]
    fn parallel_strings_share_current_by_resistance() {
        let spec = BankSpec {
            model: BatteryModel::Lfp12V8,
            capacity_ah: 100.0,
            series: 2,
            parallel: 2,
            initial_soc_pct: 50.0,
            initial_temp_c: 25.0,
            spread: Spread {
                capacity_pct: 2.0,
                resistance_pct: 10.0,
                soc_pct: 0.0,
                self_discharge_pct_per_month: 0.0,
            },
        };
        let mut b = Bank::new(&spec, &mut ChaCha8Rng::seed_from_u64(3));
        let th = b.thevenin();
        assert!((th.emf_v - 8.0 * (b.ocv.volts(0.5) - 0.006)).abs() < 0.05);
        b.step(-40.0, 0.1);
        let total: f64 = [0, 2].iter().map(|&i| b.batteries[i].current_a).sum();
        assert!((total + 40.0).abs() < 1e-9);
        assert_eq!(b.batteries[0].current_a, b.batteries[1].current_a);
        assert!(b.batteries[0].current_a != b.batteries[2].current_a);
    }
}
