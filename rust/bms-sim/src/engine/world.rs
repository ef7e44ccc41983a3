//! The world around the BMS: the plant (cells, batteries, bank), the loads and chargers the
//! outputs switch, the sensors that turn the plant into battery reports, the bus cables and the
//! request/response lines of JBD, JK and Daly packs. It knows nothing of the core beyond the
//! device it sends reports to and the decisions it obeys.

use super::{core_soc_pct, Sample, Totals};
use crate::file_storage::SimStorage;
use crate::line::{pack_data, VirtualLine};
use crate::plant::{Bank, BankSpec, Spread, Thevenin};
use crate::scenario::{
    in_hours, ChargerConfig, ChargerKind, LoadConfig, ProtocolChoice, Scenario, Via,
};
use crate::sensors::{supply_mv, BatterySensor};
use bms_core::bms::{Bms, Decisions, Inputs};
use bms_core::bus::{encode_report, MAX_FRAME_LEN, REPORT_PERIOD_MS};
use bms_core::drivers::emulator::PackEmulator;
use bms_core::drivers::poller::Poller;
use bms_core::drivers::{LineConfig, Protocol};
use bms_core::node::Node;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How often the plant's slow part (temperature, balancers, battery flags) moves, in ms.
const SLOW_STEP_MS: u64 = 1_000;
/// Longest plant step, in ms: the plant never jumps further even while the core sleeps longer.
const MAX_PLANT_STEP_MS: u64 = 1_000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stage {
    Bulk,
    Absorption { since_ms: u64 },
    Float,
}

struct ChargerState {
    stage: Stage,
    enabled: bool,
    off_since_ms: Option<u64>,
    output_a: f64,
}

struct LoadState {
    enabled: bool,
}

/// The plant and everything around it, built from a scenario.
pub(super) struct World<'a> {
    scenario: &'a Scenario,
    pub(super) bank: Bank,
    pub(super) rng: ChaCha8Rng,
    sensors: Vec<BatterySensor>,
    supply_gain: f64,
    /// Whether each battery's bus cable is plugged in.
    pub(super) plugged: Vec<bool>,
    /// The remote switch (closed = ON).
    pub(super) remote_on: bool,
    loads: Vec<LoadState>,
    chargers: Vec<ChargerState>,
    cloud_factor: Vec<f64>,
    pub(super) ambient_override_c: Option<f64>,
    last_load_a: f64,
    last_charge_a: f64,
    last_bank_v: f64,
    last_bank_a: f64,
    undervolt: bool,
    overvolt: bool,
    frame: Vec<u8>,
    next_report_ms: Vec<u64>,
    /// The earliest of `next_report_ms`.
    pub(super) next_report_any_ms: u64,
    /// When the slow part moves next, ms.
    pub(super) next_slow_ms: u64,
    /// Request/response packs (`protocol` other than openbms): the lines, and for each line
    /// the battery behind each of its packs.
    pub(super) lines: Vec<VirtualLine>,
    line_batteries: Vec<Vec<usize>>,
    /// When each battery's pack data was last refreshed from the plant, ms.
    pack_refreshed_ms: Vec<u64>,
    /// When a line needs servicing next, ms.
    pub(super) next_line_ms: u64,
}

impl<'a> World<'a> {
    /// The plant at time 0, every random draw from the scenario's seed.
    pub(super) fn new(scenario: &'a Scenario) -> World<'a> {
        let mut rng = ChaCha8Rng::seed_from_u64(scenario.seed);
        let b = &scenario.bank;
        let ambient0 = scenario.temperature.ambient_c(0.0);
        let spec = BankSpec {
            model: b.battery.model(),
            capacity_ah: b.capacity_ah,
            series: b.series,
            parallel: b.parallel,
            initial_soc_pct: b.initial_soc_pct,
            initial_temp_c: b.initial_temp_c.unwrap_or(ambient0),
            spread: Spread {
                capacity_pct: b.capacity_spread_pct,
                resistance_pct: b.resistance_spread_pct,
                soc_pct: b.soc_spread_pct,
                self_discharge_pct_per_month: b.self_discharge_pct_per_month,
            },
        };
        let bank = Bank::new(&spec, &mut rng);
        let count = bank.batteries.len();
        let sensors = (0..count)
            .map(|_| BatterySensor::draw(&scenario.sensors, &mut rng))
            .collect();
        let g = scenario.sensors.supply_gain_error_pct / 100.0;
        let supply_gain = 1.0 + if g > 0.0 { rng.gen_range(-g..=g) } else { 0.0 };
        let days = (scenario.duration.as_secs() / 86_400 + 2) as usize;
        let cloud_factor = (0..days).map(|_| rng.gen_range(0.0..1.0)).collect();
        // Batteries start their 1 s report cycles at staggered phases, as on a real bus (on the
        // 100 ms grid, so reports do not add plant steps between ticks).
        let (lines, line_batteries) = build_lines(scenario, count);
        let next_report_ms: Vec<u64> = if lines.is_empty() {
            (0..count)
                .map(|i| 100 + 100 * ((i as u64 * 3) % 10))
                .collect()
        } else {
            vec![u64::MAX; count]
        };
        let chargers = scenario
            .chargers
            .iter()
            .map(|c| ChargerState {
                stage: Stage::Bulk,
                enabled: c.enabled,
                off_since_ms: None,
                output_a: 0.0,
            })
            .collect();
        let loads = scenario
            .loads
            .iter()
            .map(|l| LoadState { enabled: l.enabled })
            .collect();
        let last_bank_v = bank.thevenin().emf_v;
        World {
            scenario,
            bank,
            rng,
            sensors,
            supply_gain,
            plugged: vec![true; count],
            remote_on: true,
            loads,
            chargers,
            cloud_factor,
            ambient_override_c: None,
            last_load_a: 0.0,
            last_charge_a: 0.0,
            last_bank_v,
            last_bank_a: 0.0,
            undervolt: false,
            overvolt: false,
            frame: vec![0; MAX_FRAME_LEN],
            next_report_any_ms: next_report_ms.iter().copied().min().unwrap_or(u64::MAX),
            next_report_ms,
            next_slow_ms: SLOW_STEP_MS,
            next_line_ms: if lines.is_empty() { u64::MAX } else { 0 },
            lines,
            line_batteries,
            pack_refreshed_ms: vec![0; count],
        }
    }

    /// When the world needs attention next (the slow part, a report, a line), ms.
    pub(super) fn next_ms(&self) -> u64 {
        self.next_slow_ms
            .min(self.next_report_any_ms)
            .min(self.next_line_ms)
    }

    /// The BMS's own measurements now: supply voltage and the remote switch.
    pub(super) fn inputs(&self) -> Inputs {
        let supply = supply_mv(self.last_bank_v, self.supply_gain, &self.scenario.sensors);
        Inputs {
            remote_h_mv: 0,
            // Remote L is pulled to battery minus while the switch is closed; open, the BMS's
            // pull-up lifts it to the supply.
            remote_l_mv: if self.remote_on { 0 } else { supply },
            supply_mv: supply,
            app_connected: self.scenario.bms.app_connected,
        }
    }

    /// The lines' frame counters into `totals` (before the pollers are replaced or at the end).
    pub(super) fn count_frames(&self, totals: &mut Totals) {
        for line in &self.lines {
            let stats = line.poller.stats();
            totals.frames_good += stats.reports;
            totals.frames_dropped += stats.bad_frames;
        }
    }

    /// Switches the load or charger called `name` on or off (its own switch, not the BMS's).
    pub(super) fn enable(&mut self, name: &str, on: bool) {
        if let Some(i) = self.scenario.loads.iter().position(|l| l.name == name) {
            self.loads[i].enabled = on;
        }
        if let Some(i) = self.scenario.chargers.iter().position(|c| c.name == name) {
            self.chargers[i].enabled = on;
        }
    }

    /// After a reboot of the BMS at `now_ms`: the lines' pollers start over.
    pub(super) fn reboot_lines(&mut self, now_ms: u64) {
        for line in &mut self.lines {
            line.poller = Poller::new(line.poller.config().clone());
        }
        if !self.lines.is_empty() {
            self.next_line_ms = now_ms;
        }
    }

    /// Moves the plant to `to_ms` in steps of at most [`MAX_PLANT_STEP_MS`], with the loads and
    /// chargers the outputs of `decisions` allow; energy and charge go into `totals`.
    pub(super) fn advance(
        &mut self,
        now_ms: &mut u64,
        to_ms: u64,
        decisions: &Decisions,
        totals: &mut Totals,
    ) {
        while *now_ms < to_ms {
            let step_ms = (to_ms - *now_ms).min(MAX_PLANT_STEP_MS);
            let dt_s = step_ms as f64 / 1000.0;
            let th = self.bank.thevenin();
            let bank_a = self.solve_currents(*now_ms, decisions, &th);
            self.bank.flow(bank_a, dt_s);
            let v = th.voltage(bank_a);
            let wh = v * bank_a * dt_s / 3600.0;
            let ah = bank_a * dt_s / 3600.0;
            if bank_a >= 0.0 {
                totals.energy_in_wh += wh;
                totals.charge_in_ah += ah;
            } else {
                totals.energy_out_wh -= wh;
                totals.charge_out_ah -= ah;
            }
            self.last_bank_v = v;
            self.last_bank_a = bank_a;
            *now_ms += step_ms;
        }
    }

    /// Loads and chargers against the bank's Thevenin source: the bank current for this step.
    fn solve_currents(&mut self, now_ms: u64, decisions: &Decisions, th: &Thevenin) -> f64 {
        let t_s = now_ms as f64 / 1000.0;
        let atd = decisions.atd;
        let atc = decisions.atc;
        let mut load_a = 0.0;
        for (cfg, state) in self.scenario.loads.iter().zip(&self.loads) {
            if state.enabled && (cfg.via == Via::Direct || atd) && load_active(cfg, t_s) {
                load_a += match (cfg.current_a, cfg.power_w) {
                    (Some(a), _) => a,
                    (None, Some(w)) => w / self.last_bank_v.max(1.0),
                    (None, None) => 0.0,
                };
            }
        }
        let cells = self.bank.batteries.first().map_or(4, |b| b.cells.len()) * self.bank.series;
        let mut charge_a = 0.0;
        for (i, cfg) in self.scenario.chargers.iter().enumerate() {
            let available = charger_available_a(
                cfg,
                t_s,
                self.cloud_factor
                    .get((t_s / 86_400.0) as usize)
                    .copied()
                    .unwrap_or(0.0),
            );
            let state = &mut self.chargers[i];
            let on = state.enabled && (cfg.via == Via::Direct || atc) && available > 0.0;
            if !on {
                state.output_a = 0.0;
                let since = *state.off_since_ms.get_or_insert(now_ms);
                // An hour without output (night, switched off) starts the next charge in bulk.
                if now_ms.saturating_sub(since) >= 3_600_000 {
                    state.stage = Stage::Bulk;
                }
                continue;
            }
            state.off_since_ms = None;
            let target_v = match state.stage {
                Stage::Float => cfg.float_cell_v,
                _ => cfg.absorption_cell_v,
            } * cells as f64;
            // Current that would hold the target voltage, given the loads and earlier chargers.
            let cv_a = (target_v - th.emf_v) / th.r_ohm + load_a - charge_a;
            let out = cv_a.clamp(0.0, available);
            let cv_limited = cv_a < available;
            state.stage = match state.stage {
                Stage::Bulk if cv_limited => Stage::Absorption { since_ms: now_ms },
                Stage::Absorption { since_ms }
                    if now_ms.saturating_sub(since_ms)
                        >= u64::try_from(cfg.absorption_time.as_millis()).unwrap_or(u64::MAX)
                        || (cv_limited && out < 0.02 * cfg.max_a.max(1.0)) =>
                {
                    Stage::Float
                }
                // A heavy load pulls the bank well below float: back to bulk.
                Stage::Float if th.voltage(out - load_a) < 3.30 * cells as f64 => Stage::Bulk,
                s => s,
            };
            state.output_a = out;
            charge_a += out;
        }
        self.last_load_a = load_a;
        self.last_charge_a = charge_a;
        charge_a - load_a
    }

    /// The plant's slow part at `now_ms` (temperature, balancers, battery flags): cell extremes
    /// into `totals`; returns the damage limits crossed either way, for the log.
    pub(super) fn slow_step(&mut self, now_ms: u64, totals: &mut Totals) -> Vec<&'static str> {
        let mut crossed = Vec::new();
        let dt_s = (now_ms + SLOW_STEP_MS - self.next_slow_ms) as f64 / 1000.0;
        let ambient = self
            .ambient_override_c
            .unwrap_or_else(|| self.scenario.temperature.ambient_c(now_ms as f64 / 1000.0));
        self.bank.settle();
        let (lo, hi) = self.bank.slow_step(ambient, dt_s);
        self.next_slow_ms = now_ms + SLOW_STEP_MS;
        totals.cell_min_v = totals.cell_min_v.min(lo);
        totals.cell_max_v = totals.cell_max_v.max(hi);
        if lo < 2.5 {
            totals.undervolt_damage_s += dt_s;
        }
        if hi > 3.8 {
            totals.overvolt_damage_s += dt_s;
        }
        if (lo < 2.5) != self.undervolt {
            self.undervolt = lo < 2.5;
            let text = if self.undervolt {
                "a cell is below 2.5 V"
            } else {
                "all cells back above 2.5 V"
            };
            crossed.push(text);
        }
        if (hi > 3.8) != self.overvolt {
            self.overvolt = hi > 3.8;
            let text = if self.overvolt {
                "a cell is above 3.8 V"
            } else {
                "all cells back below 3.8 V"
            };
            crossed.push(text);
        }
        crossed
    }

    /// Sends the battery-bus reports due at `now_ms` into `node`, through the bus codec.
    pub(super) fn send_reports(&mut self, now_ms: u64, node: &mut Node<SimStorage>) {
        self.next_report_any_ms = u64::MAX;
        for i in 0..self.next_report_ms.len() {
            let due = self.next_report_ms[i] <= now_ms;
            if due {
                self.next_report_ms[i] += REPORT_PERIOD_MS;
            }
            self.next_report_any_ms = self.next_report_any_ms.min(self.next_report_ms[i]);
            if !due || !self.plugged[i] {
                continue;
            }
            let report = self.sensors[i].report(
                &self.bank.batteries[i],
                &self.bank.ocv,
                &self.scenario.sensors,
                &mut self.rng,
            );
            // The frame buffer has MAX_FRAME_LEN bytes, which always fits a report.
            let Ok(len) = encode_report(&report, &mut self.frame) else {
                continue;
            };
            // A refused report is counted by the core and shows in its codes.
            let _ = node.feed_bus(now_ms, &self.frame[..len]);
        }
    }

    /// Runs the request/response lines to now: packs answer from the plant's present state.
    pub(super) fn service_lines(&mut self, now_ms: u64, node: &mut Node<SimStorage>) {
        let now = now_ms;
        let mut next = u64::MAX;
        for (line, batteries) in self.lines.iter_mut().zip(&self.line_batteries) {
            let protocol = line.poller.config().protocol;
            let (sensors, plant, config) = (&self.sensors, &self.bank, &self.scenario.sensors);
            let (rng, plugged, refreshed) =
                (&mut self.rng, &self.plugged, &mut self.pack_refreshed_ms);
            line.advance(
                now,
                |i, pack: &mut PackEmulator| {
                    let b = batteries[i];
                    pack.silent = !plugged[b];
                    // The plant moves slowly: fresh values once per half second are enough.
                    if refreshed[b] == 0 || now >= refreshed[b] + 500 {
                        refreshed[b] = now.max(1);
                        let battery = &plant.batteries[b];
                        let report = sensors[b].report(battery, &plant.ocv, config, rng);
                        let soc = (battery.soc() * 100.0).round().clamp(0.0, 100.0) as u8;
                        pack.data = pack_data(&report, Some(soc), protocol);
                    }
                },
                |r| {
                    // A refused report is counted by the core and shows in its codes.
                    let _ = node.handle_report(now, &r.report);
                },
            );
            next = next.min(line.next_event_ms().unwrap_or(u64::MAX));
        }
        self.next_line_ms = next.max(now + 1);
    }

    /// The timeline row at `now_ms`: the plant, and what the device shows and decided.
    pub(super) fn sample(&self, now_ms: u64, bms: &Bms, decisions: &Decisions) -> Sample {
        let t_s = now_ms as f64 / 1000.0;
        let (lo, hi) = self.bank.cell_min_max_v();
        Sample {
            t_s,
            soc_true_pct: self.bank.soc_pct(),
            soc_bms_pct: core_soc_pct(bms),
            cell_min_v: lo,
            cell_max_v: hi,
            bank_v: self.last_bank_v,
            current_a: self.last_bank_a,
            load_a: self.last_load_a,
            charge_a: self.last_charge_a,
            temp_c: self.bank.temp_c(),
            ambient_c: self.scenario.temperature.ambient_c(t_s),
            atd: decisions.atd,
            atc: decisions.atc,
            prealarm: decisions.prealarm,
            atd_reasons: decisions.atd_reasons,
            atc_reasons: decisions.atc_reasons,
            codes: decisions.codes,
        }
    }
}

/// The request/response lines of a scenario whose packs speak JBD, JK or Daly (none for the
/// OpenBMS bus): JBD packs one per line, JK and Daly packs on one line at addresses 1..N.
fn build_lines(scenario: &Scenario, count: usize) -> (Vec<VirtualLine>, Vec<Vec<usize>>) {
    let b = &scenario.bank;
    if b.protocol == ProtocolChoice::Openbms || count == 0 {
        return (Vec::new(), Vec::new());
    }
    let protocol = b.protocol.protocol();
    let baud = b.baud.unwrap_or(protocol.default_baud());
    let latency_us = (b.reply_latency_ms * 1000.0).round() as u64;
    let groups: Vec<Vec<usize>> = if protocol == Protocol::Jbd {
        (0..count).map(|i| vec![i]).collect()
    } else {
        vec![(0..count).collect()]
    };
    let mut lines = Vec::new();
    for (n, group) in groups.iter().enumerate() {
        let addresses: Vec<u8> = if protocol == Protocol::Jbd {
            vec![1]
        } else {
            (1..=group.len() as u8).collect()
        };
        // The scenario check limits the packs per line, so the configuration is valid.
        let Ok(config) = LineConfig::with_baud(protocol, baud, n as u8, &addresses) else {
            continue;
        };
        let packs = addresses
            .iter()
            .map(|&a| PackEmulator::new(protocol, a, Default::default()))
            .collect();
        lines.push(VirtualLine::new(config, packs, latency_us));
    }
    (lines, groups)
}

fn load_active(cfg: &LoadConfig, t_s: f64) -> bool {
    if cfg.start.is_some_and(|s| t_s < s.as_secs_f64())
        || cfg.stop.is_some_and(|s| t_s >= s.as_secs_f64())
    {
        return false;
    }
    if !in_hours(&cfg.hours, t_s) {
        return false;
    }
    match (cfg.on_for, cfg.off_for) {
        (Some(on), Some(off)) => {
            // In seconds as f64: the sum of two durations a scenario may write can overflow
            // `Duration` (found by the scenario fuzz target).
            let period = on.as_secs_f64() + off.as_secs_f64();
            t_s.rem_euclid(period) < on.as_secs_f64()
        }
        _ => true,
    }
}

/// What the charger could deliver now (before voltage limiting), amperes.
fn charger_available_a(cfg: &ChargerConfig, t_s: f64, cloud_draw: f64) -> f64 {
    if cfg.start.is_some_and(|s| t_s < s.as_secs_f64())
        || cfg.stop.is_some_and(|s| t_s >= s.as_secs_f64())
    {
        return 0.0;
    }
    match cfg.kind {
        ChargerKind::Mains => {
            if in_hours(&cfg.hours, t_s) {
                cfg.max_a
            } else {
                0.0
            }
        }
        ChargerKind::Solar => {
            let h = (t_s / 3600.0).rem_euclid(24.0);
            if h <= cfg.sunrise_h || h >= cfg.sunset_h {
                return 0.0;
            }
            let x = (h - cfg.sunrise_h) / (cfg.sunset_h - cfg.sunrise_h);
            cfg.max_a * (std::f64::consts::PI * x).sin() * (1.0 - cfg.cloudiness * cloud_draw)
        }
    }
}
