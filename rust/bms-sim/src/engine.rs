//! The simulation loop: owns time, steps the plant, sends each battery's report through the
//! battery-bus codec into the device ([`Node`], as on the firmware), calls [`Node::step`] and
//! applies its decisions to loads and chargers. It never sleeps: it jumps to the earliest of the core's deadline, the next bus
//! report, the next scenario event and the next timeline sample.

use crate::file_storage::{FileStorage, SimStorage};
use crate::line::{pack_data, VirtualLine};
use crate::plant::{Bank, BankSpec, Spread, Thevenin};
use crate::scenario::{
    in_hours, Action, ChargerConfig, ChargerKind, EventConfig, LoadConfig, ProtocolChoice,
    Scenario, Via,
};
use crate::sensors::{supply_mv, BatterySensor};
use bms_core::bms::{Bms, Config, Decisions, DfuEvent, Event, Inputs, Output};
use bms_core::bus::{encode_report, MAX_FRAME_LEN, REPORT_PERIOD_MS};
use bms_core::codes::{ActiveCodes, Severity};
use bms_core::drivers::emulator::PackEmulator;
use bms_core::drivers::poller::Poller;
use bms_core::drivers::{LineConfig, Protocol};
use bms_core::monitor::{SocKnowledge, SocState};
use bms_core::node::Node;
use bms_core::protection::Reasons;
use bms_core::protocol;
use bms_core::storage::{Persistence, RecordKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

/// How often the plant's slow part (temperature, balancers, battery flags) moves, in ms.
const SLOW_STEP_MS: u64 = 1_000;
/// Longest plant step, in ms: the plant never jumps further even while the core sleeps longer.
const MAX_PLANT_STEP_MS: u64 = 1_000;

/// Why a run could not start.
#[derive(Debug)]
pub enum EngineError {
    /// The `--state` directory could not be opened or created.
    State {
        /// The directory.
        dir: std::path::PathBuf,
        /// What the file system said.
        error: std::io::Error,
    },
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::State { dir, error } => {
                write!(
                    f,
                    "{}: cannot open the state directory: {error}",
                    dir.display()
                )
            }
        }
    }
}

impl std::error::Error for EngineError {}

/// Options of one run beyond the scenario.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Stop earlier than the scenario's duration.
    pub until: Option<Duration>,
    /// Timeline sample period instead of the scenario's; `None` = scenario's or automatic.
    pub sample_every: Option<Duration>,
    /// Record no timeline samples (benchmarks).
    pub no_samples: bool,
    /// Directory of the BMS's persisted records, restored at the start and written as the
    /// core asks (`--state`).
    pub state_dir: Option<std::path::PathBuf>,
}

/// One row of the timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Time since the start, seconds.
    pub t_s: f64,
    /// True state of charge of the bank, percent.
    pub soc_true_pct: f64,
    /// The BMS's state of charge, percent; `None` while unknown.
    pub soc_bms_pct: Option<f64>,
    /// Lowest cell voltage, volts.
    pub cell_min_v: f64,
    /// Highest cell voltage, volts.
    pub cell_max_v: f64,
    /// Bank voltage at the terminals, volts.
    pub bank_v: f64,
    /// Bank current, amperes (positive = charging).
    pub current_a: f64,
    /// Current drawn by the loads, amperes.
    pub load_a: f64,
    /// Current delivered by the chargers, amperes.
    pub charge_a: f64,
    /// Mean battery temperature, °C.
    pub temp_c: f64,
    /// Ambient temperature, °C.
    pub ambient_c: f64,
    /// ATD high (loads allowed).
    pub atd: bool,
    /// ATC high (charging allowed).
    pub atc: bool,
    /// Pre-alarm active.
    pub prealarm: bool,
    /// Why ATD is free-floating.
    pub atd_reasons: Reasons,
    /// Why ATC is free-floating.
    pub atc_reasons: Reasons,
    /// Active codes.
    pub codes: ActiveCodes,
}

/// Something that happened, with its time.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedEvent {
    /// Time since the start, ms.
    pub t_ms: u64,
    /// What happened.
    pub what: What,
}

/// The kinds of logged events.
#[derive(Clone, Debug, PartialEq)]
pub enum What {
    /// A BMS output changed (PROT-11); `reasons` why it is free-floating / active now.
    Output {
        /// Which output.
        output: Output,
        /// New state: true = high.
        high: bool,
        /// Why.
        reasons: Reasons,
    },
    /// The BMS raised a code.
    CodeRaised(bms_core::codes::Code),
    /// The BMS cleared a code.
    CodeCleared(bms_core::codes::Code),
    /// A scenario event was applied.
    Scenario(String),
    /// Something the BMS did that is not an output or a code (a synchronisation).
    Bms(String),
    /// The plant crossed a damage limit (a cell below 2.5 V or above 3.8 V) or came back.
    Plant(String),
}

impl std::fmt::Display for What {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            What::Output {
                output,
                high,
                reasons,
            } => {
                let name = match output {
                    Output::Atd => "ATD",
                    Output::Atc => "ATC",
                    Output::Prealarm => "pre-alarm",
                };
                let state = match (output, high) {
                    (Output::Prealarm, true) => "active",
                    (Output::Prealarm, false) => "inactive",
                    (_, true) => "high",
                    (_, false) => "free-floating",
                };
                if reasons.is_empty() {
                    write!(f, "{name} {state}")
                } else {
                    write!(f, "{name} {state} ({reasons})")
                }
            }
            What::CodeRaised(c) => {
                write!(f, "{} raised: {}", severity_name(c.severity()), c.name())
            }
            What::CodeCleared(c) => {
                write!(f, "{} cleared: {}", severity_name(c.severity()), c.name())
            }
            What::Scenario(s) => write!(f, "scenario: {s}"),
            What::Bms(s) => write!(f, "bms: {s}"),
            What::Plant(s) => write!(f, "plant: {s}"),
        }
    }
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Warning => "warning",
        Severity::Alarm => "alarm",
        Severity::Error => "error",
    }
}

/// Totals over a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    /// Simulated time, seconds.
    pub duration_s: f64,
    /// Calls of [`Bms::step`].
    pub ticks: u64,
    /// Energy into the bank, Wh.
    pub energy_in_wh: f64,
    /// Energy out of the bank, Wh.
    pub energy_out_wh: f64,
    /// Charge into the bank, Ah.
    pub charge_in_ah: f64,
    /// Charge out of the bank, Ah.
    pub charge_out_ah: f64,
    /// Mean |BMS SoC − true SoC| over the samples where the BMS knew its SoC, points.
    pub soc_error_mean_pct: Option<f64>,
    /// Largest |BMS SoC − true SoC|, points.
    pub soc_error_max_pct: Option<f64>,
    /// BMS SoC − true SoC at the end, points.
    pub soc_error_final_pct: Option<f64>,
    /// Lowest cell voltage seen, volts.
    pub cell_min_v: f64,
    /// Highest cell voltage seen, volts.
    pub cell_max_v: f64,
    /// Time any cell spent below 2.5 V, seconds (damage the BMS should prevent).
    pub undervolt_damage_s: f64,
    /// Time any cell spent above 3.8 V, seconds.
    pub overvolt_damage_s: f64,
    /// Bus frames the decoder dropped.
    pub frames_dropped: u32,
    /// Bus frames decoded.
    pub frames_good: u32,
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// Timeline samples.
    pub samples: Vec<Sample>,
    /// Events in time order.
    pub events: Vec<LoggedEvent>,
    /// Totals.
    pub totals: Totals,
}

impl RunResult {
    /// Times (ms) at which `output` changed to `high`.
    pub fn output_changes(&self, output: Output, high: bool) -> Vec<u64> {
        self.events
            .iter()
            .filter_map(|e| match e.what {
                What::Output {
                    output: o, high: h, ..
                } if o == output && h == high => Some(e.t_ms),
                _ => None,
            })
            .collect()
    }
}

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

/// One simulation, built from a scenario.
pub struct Engine<'a> {
    scenario: &'a Scenario,
    node: Node<SimStorage>,
    bank: Bank,
    rng: ChaCha8Rng,
    sensors: Vec<BatterySensor>,
    supply_gain: f64,
    plugged: Vec<bool>,
    remote_on: bool,
    loads: Vec<LoadState>,
    chargers: Vec<ChargerState>,
    cloud_factor: Vec<f64>,
    decisions: Decisions,
    now_ms: u64,
    end_ms: u64,
    next_tick_ms: u64,
    next_report_ms: Vec<u64>,
    next_report_any_ms: u64,
    next_slow_ms: u64,
    next_sample_ms: u64,
    sample_ms: u64,
    next_event: usize,
    last_load_a: f64,
    last_charge_a: f64,
    last_bank_v: f64,
    last_bank_a: f64,
    samples: Vec<Sample>,
    events: Vec<LoggedEvent>,
    totals: Totals,
    undervolt: bool,
    overvolt: bool,
    soc_err_sum: f64,
    soc_err_n: u64,
    record_samples: bool,
    frame: Vec<u8>,
    ambient_override_c: Option<f64>,
    /// Request/response packs (`protocol` other than openbms): the lines, and for each line
    /// the battery behind each of its packs.
    lines: Vec<VirtualLine>,
    line_batteries: Vec<Vec<usize>>,
    /// When each battery's pack data was last refreshed from the plant, ms.
    pack_refreshed_ms: Vec<u64>,
    next_line_ms: u64,
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

/// Runs `scenario` to its end (or `options.until`), calling `progress` with the simulated
/// seconds now and then.
pub fn run(
    scenario: &Scenario,
    options: &RunOptions,
    progress: &mut dyn FnMut(f64),
) -> Result<RunResult, EngineError> {
    let mut engine = Engine::new(scenario, options)?;
    engine.run(progress);
    Ok(engine.finish())
}

impl<'a> Engine<'a> {
    /// Builds the plant and the BMS at time 0.
    pub fn new(scenario: &'a Scenario, options: &RunOptions) -> Result<Self, EngineError> {
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
        let store = match &options.state_dir {
            Some(dir) => {
                SimStorage::Files(FileStorage::open(dir).map_err(|error| EngineError::State {
                    dir: dir.clone(),
                    error,
                })?)
            }
            None => SimStorage::Memory(Box::default()),
        };
        let (node, restore_note) = boot(scenario, store, true);
        let end_ms = options
            .until
            .map_or(scenario.duration, |u| u.min(scenario.duration))
            .as_millis() as u64;
        let sample_ms = options
            .sample_every
            .or(scenario.sample_every)
            .map_or_else(|| (end_ms / 4000).max(10_000), |d| d.as_millis() as u64)
            .max(1);
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
        let mut engine = Engine {
            scenario,
            node,
            bank,
            rng,
            sensors,
            supply_gain,
            plugged: vec![true; count],
            remote_on: true,
            loads,
            chargers,
            cloud_factor,
            decisions: Decisions::default(),
            now_ms: 0,
            end_ms,
            next_tick_ms: 0,
            next_report_any_ms: next_report_ms.iter().copied().min().unwrap_or(u64::MAX),
            next_report_ms,
            next_slow_ms: SLOW_STEP_MS,
            next_sample_ms: 0,
            sample_ms,
            next_event: 0,
            last_load_a: 0.0,
            last_charge_a: 0.0,
            last_bank_v: 0.0,
            last_bank_a: 0.0,
            samples: Vec::new(),
            events: Vec::new(),
            totals: Totals {
                cell_min_v: f64::MAX,
                cell_max_v: f64::MIN,
                ..Totals::default()
            },
            undervolt: false,
            overvolt: false,
            soc_err_sum: 0.0,
            soc_err_n: 0,
            record_samples: !options.no_samples,
            frame: vec![0; MAX_FRAME_LEN],
            ambient_override_c: None,
            next_line_ms: if lines.is_empty() { u64::MAX } else { 0 },
            lines,
            line_batteries,
            pack_refreshed_ms: vec![0; count],
        };
        if let Some(note) = restore_note {
            engine.log(What::Bms(note));
        }
        engine.last_bank_v = engine.bank.thevenin().emf_v;
        Ok(engine)
    }

    /// Runs to the end time.
    pub fn run(&mut self, progress: &mut dyn FnMut(f64)) {
        self.run_until(self.end_ms, progress);
        if self.record_samples {
            self.sample();
        }
        progress(self.now_ms as f64 / 1000.0);
    }

    /// Runs to `until_ms` (at most the end time), calling `progress` with the simulated
    /// seconds now and then. The demo device in the web app advances this way, a little at a time.
    pub fn run_until(&mut self, until_ms: u64, progress: &mut dyn FnMut(f64)) {
        let end_ms = until_ms.min(self.end_ms);
        let mut next_progress_ms = 0;
        while self.now_ms < end_ms {
            let next_report = self.next_report_any_ms;
            let next_event = self
                .scenario
                .events
                .get(self.next_event)
                .map_or(u64::MAX, |e| e.at.as_millis() as u64);
            let mut t = self
                .next_tick_ms
                .min(next_report)
                .min(next_event)
                .min(self.next_slow_ms)
                .min(self.next_line_ms)
                .min(end_ms);
            if self.record_samples {
                t = t.min(self.next_sample_ms);
            }
            let t = t.max(self.now_ms);
            self.advance_plant(t);
            self.apply_scenario_events();
            if self.now_ms >= self.next_slow_ms {
                self.slow_step();
            }
            if self.now_ms >= self.next_report_any_ms {
                self.send_reports();
            }
            if self.now_ms >= self.next_line_ms {
                self.service_lines();
            }
            if self.now_ms >= self.next_tick_ms {
                self.tick();
            }
            if self.record_samples && self.now_ms >= self.next_sample_ms {
                self.sample();
                self.next_sample_ms += self.sample_ms;
            }
            if self.now_ms >= next_progress_ms {
                progress(self.now_ms as f64 / 1000.0);
                next_progress_ms = self.now_ms + 3_600_000;
            }
        }
    }

    /// Simulated time now, in ms since the start.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Whether the last control step changed the status page (the firmware notifies then).
    pub fn status_changed(&self) -> bool {
        self.decisions.status_changed
    }

    /// Does `action` now, as an `[[event]]` of the scenario would (`battery` 1-based for the
    /// cable actions, `target` a load or charger name, `soc_pct` for set_soc). Returns the line
    /// it logs.
    pub fn apply(
        &mut self,
        action: Action,
        battery: Option<usize>,
        target: Option<&str>,
        soc_pct: Option<f64>,
    ) -> Result<String, String> {
        if let Some(n) = battery {
            if n == 0 || n > self.plugged.len() {
                return Err(format!(
                    "battery {n} does not exist (the bank has {})",
                    self.plugged.len()
                ));
            }
        }
        if let Some(name) = target {
            let known = self.scenario.loads.iter().any(|l| l.name == name)
                || self.scenario.chargers.iter().any(|c| c.name == name);
            if !known {
                return Err(format!("no load or charger is called {name:?}"));
            }
        }
        let event = EventConfig {
            at: Duration::from_millis(self.now_ms),
            action,
            battery,
            target: target.map(str::to_string),
            soc_pct,
            count: None,
        };
        Ok(self.apply_event(&event))
    }

    /// Sets the ambient temperature to `celsius` from now on, in place of the scenario's
    /// profile (`None` returns to it). The bank warms or cools towards it at its own pace.
    pub fn set_ambient_c(&mut self, celsius: Option<f64>) {
        self.ambient_override_c = celsius;
    }

    /// Answers one GATT access exactly as the firmware does ([`Node::gatt`]): what the
    /// request changed is stored before this returns. `resp` must hold
    /// [`protocol::MAX_RESPONSE_LEN`] bytes.
    pub fn gatt(
        &mut self,
        characteristic: u8,
        access: protocol::Access,
        authenticated: bool,
        req: &[u8],
        resp: &mut [u8],
    ) -> Result<bms_core::node::GattReply, protocol::ProtocolError> {
        self.node.gatt(
            self.now_ms,
            characteristic,
            access,
            authenticated,
            req,
            resp,
        )
    }

    /// The results so far.
    pub fn finish(mut self) -> RunResult {
        self.totals.duration_s = self.now_ms as f64 / 1000.0;
        self.count_frames();
        if self.soc_err_n > 0 {
            self.totals.soc_error_mean_pct = Some(self.soc_err_sum / self.soc_err_n as f64);
        }
        if let Some(soc) = core_soc_pct(self.node.bms()) {
            self.totals.soc_error_final_pct = Some(soc - self.bank.soc_pct());
        }
        RunResult {
            samples: self.samples,
            events: self.events,
            totals: self.totals,
        }
    }

    /// The BMS (for tests and the summary).
    pub fn bms(&self) -> &Bms {
        self.node.bms()
    }

    /// The simulated bank (for tests).
    pub fn bank(&self) -> &Bank {
        &self.bank
    }

    /// Adds the decoder's frame counters to the totals (before it is replaced or at the end).
    fn count_frames(&mut self) {
        let stats = self.node.bus_stats();
        self.totals.frames_good += stats.good;
        self.totals.frames_dropped += stats.dropped();
        for line in &self.lines {
            let stats = line.poller.stats();
            self.totals.frames_good += stats.reports;
            self.totals.frames_dropped += stats.bad_frames;
        }
    }

    fn log(&mut self, what: What) {
        self.events.push(LoggedEvent {
            t_ms: self.now_ms,
            what,
        });
    }

    fn advance_plant(&mut self, to_ms: u64) {
        while self.now_ms < to_ms {
            let step_ms = (to_ms - self.now_ms).min(MAX_PLANT_STEP_MS);
            let dt_s = step_ms as f64 / 1000.0;
            let th = self.bank.thevenin();
            let bank_a = self.solve_currents(&th);
            self.bank.flow(bank_a, dt_s);
            let v = th.voltage(bank_a);
            let wh = v * bank_a * dt_s / 3600.0;
            let ah = bank_a * dt_s / 3600.0;
            if bank_a >= 0.0 {
                self.totals.energy_in_wh += wh;
                self.totals.charge_in_ah += ah;
            } else {
                self.totals.energy_out_wh -= wh;
                self.totals.charge_out_ah -= ah;
            }
            self.last_bank_v = v;
            self.last_bank_a = bank_a;
            self.now_ms += step_ms;
        }
    }

    /// Loads and chargers against the bank's Thevenin source: the bank current for this step.
    fn solve_currents(&mut self, th: &Thevenin) -> f64 {
        let t_s = self.now_ms as f64 / 1000.0;
        let atd = self.decisions.atd;
        let atc = self.decisions.atc;
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
        let now_ms = self.now_ms;
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
                        >= cfg.absorption_time.as_millis() as u64
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

    fn apply_scenario_events(&mut self) {
        while let Some(e) = self.scenario.events.get(self.next_event) {
            if e.at.as_millis() as u64 > self.now_ms {
                break;
            }
            self.next_event += 1;
            let e = e.clone();
            let text = self.apply_event(&e);
            self.log(What::Scenario(text));
        }
    }

    /// Does what `e` says now; returns the line to log.
    fn apply_event(&mut self, e: &EventConfig) -> String {
        let mut text = e.action.name().to_string();
        match e.action {
            Action::UnplugCable | Action::ReplugCable => {
                let plug = e.action == Action::ReplugCable;
                match e.battery {
                    Some(n) => {
                        self.plugged[n - 1] = plug;
                        text = format!("{text} battery {n}");
                    }
                    None => self.plugged.iter_mut().for_each(|p| *p = plug),
                }
            }
            Action::RemoteOff => self.remote_on = false,
            Action::RemoteOn => self.remote_on = true,
            Action::DfuStart => self.node.dfu(self.now_ms, DfuEvent::Started),
            Action::DfuFail => self.node.dfu(self.now_ms, DfuEvent::Failed),
            Action::DfuAbort => self.node.dfu(self.now_ms, DfuEvent::Aborted),
            Action::DfuComplete => self.node.dfu(self.now_ms, DfuEvent::Completed),
            Action::SetSoc => {
                let pct = e.soc_pct.unwrap_or(0.0);
                text = format!("{text} {pct} %");
                if let Err(err) = core_set_soc(self.node.bms_mut(), self.now_ms, pct) {
                    text = format!("{text} refused: {err}");
                }
            }
            Action::Synchronise => {
                if let Err(err) = core_synchronise(self.node.bms_mut(), self.now_ms) {
                    text = format!("{text} refused: {err}");
                }
            }
            Action::Enable | Action::Disable => {
                let on = e.action == Action::Enable;
                let name = e.target.clone().unwrap_or_default();
                if let Some(i) = self.scenario.loads.iter().position(|l| l.name == name) {
                    self.loads[i].enabled = on;
                }
                if let Some(i) = self.scenario.chargers.iter().position(|c| c.name == name) {
                    self.chargers[i].enabled = on;
                }
                text = format!("{text} {name}");
            }
            Action::Reboot => {
                self.count_frames();
                // The old node goes, its store stays: a placeholder holds the place meanwhile.
                let placeholder = Node::open(SimStorage::Memory(Box::default()), &mut no_random);
                let store = std::mem::replace(&mut self.node, placeholder).into_storage();
                let (node, note) = boot(self.scenario, store, false);
                self.node = node;
                for line in &mut self.lines {
                    line.poller = Poller::new(line.poller.config().clone());
                }
                if !self.lines.is_empty() {
                    self.next_line_ms = self.now_ms;
                }
                self.decisions = Decisions::default();
                self.next_tick_ms = self.now_ms;
                if let Some(note) = note {
                    self.log(What::Bms(note));
                }
            }
            Action::BusNoise => {
                let count = e.count.unwrap_or(0);
                let noise: Vec<u8> = (0..count).map(|_| self.rng.gen_range(1..=255)).collect();
                let now = self.now_ms;
                let node = &mut self.node;
                match self.lines.first_mut() {
                    Some(line) => line.noise(now, &noise, |r| {
                        let _ = node.handle_report(now, &r.report);
                    }),
                    None => {
                        let _ = node.feed_bus(now, &noise);
                    }
                }
                text = format!("{text} {count} bytes");
            }
        }
        text
    }

    fn slow_step(&mut self) {
        let dt_s = (self.now_ms + SLOW_STEP_MS - self.next_slow_ms) as f64 / 1000.0;
        let ambient = self.ambient_override_c.unwrap_or_else(|| {
            self.scenario
                .temperature
                .ambient_c(self.now_ms as f64 / 1000.0)
        });
        self.bank.settle();
        let (lo, hi) = self.bank.slow_step(ambient, dt_s);
        self.next_slow_ms = self.now_ms + SLOW_STEP_MS;
        self.totals.cell_min_v = self.totals.cell_min_v.min(lo);
        self.totals.cell_max_v = self.totals.cell_max_v.max(hi);
        if lo < 2.5 {
            self.totals.undervolt_damage_s += dt_s;
        }
        if hi > 3.8 {
            self.totals.overvolt_damage_s += dt_s;
        }
        if (lo < 2.5) != self.undervolt {
            self.undervolt = lo < 2.5;
            let text = if self.undervolt {
                "a cell is below 2.5 V"
            } else {
                "all cells back above 2.5 V"
            };
            self.log(What::Plant(text.into()));
        }
        if (hi > 3.8) != self.overvolt {
            self.overvolt = hi > 3.8;
            let text = if self.overvolt {
                "a cell is above 3.8 V"
            } else {
                "all cells back below 3.8 V"
            };
            self.log(What::Plant(text.into()));
        }
    }

    fn send_reports(&mut self) {
        self.next_report_any_ms = u64::MAX;
        for i in 0..self.next_report_ms.len() {
            let due = self.next_report_ms[i] <= self.now_ms;
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
            let _ = self.node.feed_bus(self.now_ms, &self.frame[..len]);
        }
    }

    /// Runs the request/response lines to now: packs answer from the plant's present state.
    fn service_lines(&mut self) {
        let now = self.now_ms;
        let mut next = u64::MAX;
        for (line, batteries) in self.lines.iter_mut().zip(&self.line_batteries) {
            let protocol = line.poller.config().protocol;
            let (sensors, plant, config) = (&self.sensors, &self.bank, &self.scenario.sensors);
            let (rng, plugged, refreshed) =
                (&mut self.rng, &self.plugged, &mut self.pack_refreshed_ms);
            let node = &mut self.node;
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

    fn tick(&mut self) {
        let supply = supply_mv(self.last_bank_v, self.supply_gain, &self.scenario.sensors);
        let inputs = Inputs {
            remote_h_mv: 0,
            // Remote L is pulled to battery minus while the switch is closed; open, the BMS's
            // pull-up lifts it to the supply.
            remote_l_mv: if self.remote_on { 0 } else { supply },
            supply_mv: supply,
            app_connected: self.scenario.bms.app_connected,
        };
        let decisions = self.node.step(self.now_ms, &inputs);
        self.totals.ticks += 1;
        for e in &decisions.events {
            let what = match *e {
                Event::OutputChanged {
                    output,
                    high,
                    reasons,
                } => What::Output {
                    output,
                    high,
                    reasons,
                },
                Event::CodeRaised(c) => What::CodeRaised(c),
                Event::CodeCleared(c) => What::CodeCleared(c),
            };
            self.events.push(LoggedEvent {
                t_ms: self.now_ms,
                what,
            });
        }
        if self.node.bms().monitor_status().synchronised {
            self.log(What::Bms("SoC synchronised to 100 %".into()));
        }
        let tick_ms = u64::from(decisions.tick_ms).max(1);
        self.decisions = decisions;
        self.next_tick_ms = self
            .node
            .next_deadline_ms()
            .unwrap_or(self.now_ms + tick_ms)
            .clamp(self.now_ms + 1, self.now_ms + tick_ms);
    }

    fn sample(&mut self) {
        let t_s = self.now_ms as f64 / 1000.0;
        let soc_true = self.bank.soc_pct();
        let soc_bms = core_soc_pct(self.node.bms());
        if let Some(soc) = soc_bms {
            let err = (soc - soc_true).abs();
            self.soc_err_sum += err;
            self.soc_err_n += 1;
            let max = self.totals.soc_error_max_pct.get_or_insert(0.0);
            *max = max.max(err);
        }
        let (lo, hi) = self.bank.cell_min_max_v();
        self.samples.push(Sample {
            t_s,
            soc_true_pct: soc_true,
            soc_bms_pct: soc_bms,
            cell_min_v: lo,
            cell_max_v: hi,
            bank_v: self.last_bank_v,
            current_a: self.last_bank_a,
            load_a: self.last_load_a,
            charge_a: self.last_charge_a,
            temp_c: self.bank.temp_c(),
            ambient_c: self.scenario.temperature.ambient_c(t_s),
            atd: self.decisions.atd,
            atc: self.decisions.atc,
            prealarm: self.decisions.prealarm,
            atd_reasons: self.decisions.atd_reasons,
            atc_reasons: self.decisions.atc_reasons,
            codes: self.decisions.codes,
        });
    }
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
            let period = (on + off).as_secs_f64();
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

/// Opens the device on what `store` holds, as the firmware does at power-up ([`Node::open`]).
/// The scenario's settings and key are applied over the stored ones (and persisted at the first
/// step when they differ); its initial SoC applies only when the store holds no SoC record.
/// `first` is the start of the run (a later start is a `reboot` event). Returns a note for the
/// log about what was restored.
fn boot(
    scenario: &Scenario,
    mut store: SimStorage,
    first: bool,
) -> (Node<SimStorage>, Option<String>) {
    // What was stored, for the note; the node reads it again as it opens.
    let (_, restored) = Persistence::restore(&mut store);
    let fresh = core_config(scenario);
    // A fixed key and nonce keep runs reproducible where the device draws random ones.
    let mut random = fixed_random(fresh.device_key, 0x1234);
    let node = Node::open_with(store, &mut random, |config| {
        config.settings = fresh.settings;
        config.estimator = fresh.estimator;
        if scenario.bms.device_key.is_some() {
            config.device_key = fresh.device_key;
        }
        if config.restored_soc.is_none() {
            config.restored_soc = fresh.restored_soc;
        }
    });
    let faults: Vec<String> = RecordKind::ALL
        .iter()
        .filter_map(|&kind| {
            restored
                .fault(kind)
                .map(|err| format!("{}: {err}", kind.name()))
        })
        .collect();
    let note = if restored.first_boot() {
        (!first).then(|| "rebooted with an empty store".to_string())
    } else if faults.is_empty() {
        Some(
            if first {
                "restored the stored records"
            } else {
                "rebooted; records restored"
            }
            .to_string(),
        )
    } else {
        Some(format!("records not restored: {}", faults.join(", ")))
    };
    (node, note)
}

/// The simulator's stand-in for the device's random source: `key` when the device makes its
/// key (16 bytes), `nonce` when it picks a starting nonce (2 bytes), so that runs repeat.
pub fn fixed_random(key: [u8; 16], nonce: u16) -> impl FnMut(&mut [u8]) -> bool {
    move |out: &mut [u8]| {
        if out.len() == key.len() {
            out.copy_from_slice(&key);
        } else {
            let bytes = nonce.to_le_bytes();
            for (o, b) in out.iter_mut().zip(bytes.iter().cycle()) {
                *o = *b;
            }
        }
        true
    }
}

/// A random source that has nothing (a placeholder node that is never stepped).
fn no_random(_: &mut [u8]) -> bool {
    false
}

/// The core's configuration for `scenario` alone (settings validated when the scenario was
/// loaded), as on a first boot.
pub fn core_config(scenario: &Scenario) -> Config {
    let settings = scenario.bms.settings().to_settings().unwrap_or_default();
    let mut config = Config {
        settings,
        ..Config::default()
    };
    if let Some(key) = scenario
        .bms
        .device_key
        .as_deref()
        .and_then(crate::scenario::parse_key)
    {
        config.device_key = key;
    }
    if let Some(choice) = scenario.bms.estimator {
        config.estimator = choice.into();
    }
    let b = &scenario.bank;
    let capacity_ah = b.capacity_ah * b.parallel as f64;
    config.restored_soc = scenario
        .bms
        .initial_soc_pct
        .map(|pct| restored_soc(pct, capacity_ah));
    config
}

/// A monitor record as if the BMS had persisted `soc_pct` of a bank of `capacity_ah` before
/// this power-up (MON-8).
pub fn restored_soc(soc_pct: f64, capacity_ah: f64) -> SocState {
    let capacity_mah = (capacity_ah * 1000.0).round() as u32;
    // 1 mAh = 3.6 A·s = 3.6e9 nA·s.
    let used_nas = ((100.0 - soc_pct) / 100.0 * f64::from(capacity_mah) * 3.6e9).round() as i64;
    SocState {
        knowledge: SocKnowledge::Known,
        capacity_mah,
        used_nas,
        consumed_nas: used_nas,
        ..SocState::default()
    }
}

/// The BMS's SoC in percent, `None` while unknown (MON-7: an estimate is not a SoC).
pub fn core_soc_pct(bms: &Bms) -> Option<f64> {
    bms.monitor_status()
        .soc_permille
        .map(|p| f64::from(p) / 10.0)
}

/// MON-4: set the SoC by hand.
fn core_set_soc(bms: &mut Bms, now_ms: u64, pct: f64) -> Result<(), String> {
    bms.set_soc(now_ms, (pct * 10.0).round() as u16)
        .map_err(|e| e.to_string())
}

/// MON-4: synchronise to 100 % by hand.
fn core_synchronise(bms: &mut Bms, now_ms: u64) -> Result<(), String> {
    bms.synchronise(now_ms).map_err(|e| e.to_string())
}
