//! The simulation loop around the device ([`Node`], as on the firmware): it owns time and
//! never sleeps, jumping to the earliest of the core's deadline, the world's next report, line
//! or slow step, the next scenario event and the next timeline sample. Three parts:
//! - this loop: time, the device, scenario events, control steps;
//! - [`world`]: the plant, loads, chargers, sensors, bus cables and pack lines;
//! - [`recorder`]: the timeline, the event log and the totals ([`RunResult`]).

mod recorder;
mod world;

use recorder::Recorder;
pub use recorder::{LoggedEvent, RunResult, Sample, Totals, What};
use world::World;

use crate::file_storage::{FileStorage, SimStorage};
use crate::plant::Bank;
use crate::scenario::{Action, EventConfig, Scenario, AMBIENT_MAX_C, AMBIENT_MIN_C};
use bms_core::bms::{Bms, Config, Decisions, DfuEvent};
use bms_core::monitor::{SocKnowledge, SocState};
use bms_core::node::Node;
use bms_core::protocol;
use bms_core::storage::{Persistence, RecordKind};
use rand::Rng;
use std::time::Duration;

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

/// One simulation, built from a scenario.
pub struct Engine<'a> {
    scenario: &'a Scenario,
    node: Node<SimStorage>,
    world: World<'a>,
    recorder: Recorder,
    decisions: Decisions,
    now_ms: u64,
    end_ms: u64,
    next_tick_ms: u64,
    next_event: usize,
    /// A simulated phone is uploading firmware: each tick delivers a chunk.
    uploading: bool,
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
        let world = World::new(scenario);
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
            .map_or_else(
                || (end_ms / 4000).max(10_000),
                // Saturating: a period beyond u64 ms means "only the first and last sample".
                |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            )
            .max(1);
        let mut engine = Engine {
            scenario,
            node,
            world,
            recorder: Recorder::new(!options.no_samples, sample_ms),
            decisions: Decisions::default(),
            now_ms: 0,
            end_ms,
            next_tick_ms: 0,
            uploading: false,
            next_event: 0,
        };
        if let Some(note) = restore_note {
            engine.log(What::Bms(note));
        }
        Ok(engine)
    }

    /// Runs to the end time.
    pub fn run(&mut self, progress: &mut dyn FnMut(f64)) {
        self.run_until(self.end_ms, progress);
        if self.recorder.record_samples {
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
            let next_event = self
                .scenario
                .events
                .get(self.next_event)
                .map_or(u64::MAX, |e| e.at.as_millis() as u64);
            let mut t = self
                .next_tick_ms
                .min(self.world.next_ms())
                .min(next_event)
                .min(end_ms);
            if self.recorder.record_samples {
                t = t.min(self.recorder.next_sample_ms);
            }
            let t = t.max(self.now_ms);
            let totals = &mut self.recorder.totals;
            self.world
                .advance(&mut self.now_ms, t, &self.decisions, totals);
            self.apply_scenario_events();
            let now = self.now_ms;
            if now >= self.world.next_slow_ms {
                for text in self.world.slow_step(now, &mut self.recorder.totals) {
                    self.log(What::Plant(text.into()));
                }
            }
            if now >= self.world.next_report_any_ms {
                self.world.send_reports(now, &mut self.node);
            }
            if now >= self.world.next_line_ms {
                self.world.service_lines(now, &mut self.node);
            }
            if now >= self.next_tick_ms {
                self.tick();
            }
            if self.recorder.record_samples && now >= self.recorder.next_sample_ms {
                self.sample();
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
    /// cable actions, `target` a load or charger name, `soc_pct` for set_soc, 0–100 %, and
    /// only there). Returns the line it logs; a refusal says what is wrong and changes nothing.
    pub fn apply(
        &mut self,
        action: Action,
        battery: Option<usize>,
        target: Option<&str>,
        soc_pct: Option<f64>,
    ) -> Result<String, String> {
        if let Some(n) = battery {
            if n == 0 || n > self.world.plugged.len() {
                return Err(format!(
                    "battery {n} does not exist (the bank has {})",
                    self.world.plugged.len()
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
        match (action, soc_pct) {
            (Action::SetSoc, None) => return Err("set_soc needs soc_pct (0–100 %)".into()),
            (Action::SetSoc, Some(pct)) if !(pct.is_finite() && (0.0..=100.0).contains(&pct)) => {
                return Err(format!("soc_pct {pct} outside 0–100 %"));
            }
            (Action::SetSoc, Some(_)) | (_, None) => {}
            (other, Some(pct)) => {
                return Err(format!(
                    "soc_pct {pct} given to {}: only set_soc takes it",
                    other.name()
                ));
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
    /// A temperature a scenario's `ambient_c` could not hold (outside −40–80 °C, NaN, ±∞) is
    /// refused naming the value, and changes nothing.
    pub fn set_ambient_c(&mut self, celsius: Option<f64>) -> Result<(), String> {
        if let Some(c) = celsius {
            if !(c.is_finite() && (AMBIENT_MIN_C..=AMBIENT_MAX_C).contains(&c)) {
                return Err(format!(
                    "ambient {c} °C outside {AMBIENT_MIN_C}–{AMBIENT_MAX_C} °C"
                ));
            }
        }
        self.world.ambient_override_c = celsius;
        Ok(())
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
        let mut random = time_random(self.now_ms);
        self.node.gatt(
            self.now_ms,
            characteristic,
            access,
            authenticated,
            req,
            resp,
            &mut random,
        )
    }

    /// The results so far.
    pub fn finish(mut self) -> RunResult {
        self.count_frames();
        let final_error = core_soc_pct(self.node.bms()).map(|soc| soc - self.world.bank.soc_pct());
        self.recorder
            .finish(self.now_ms as f64 / 1000.0, final_error)
    }

    /// The BMS (for tests and the summary).
    pub fn bms(&self) -> &Bms {
        self.node.bms()
    }

    /// The simulated bank (for tests).
    pub fn bank(&self) -> &Bank {
        &self.world.bank
    }

    /// Adds the decoder's and the lines' frame counters to the totals (before they are replaced
    /// or at the end).
    fn count_frames(&mut self) {
        let stats = self.node.bus_stats();
        let totals = &mut self.recorder.totals;
        totals.frames_good += stats.good;
        totals.frames_dropped += stats.dropped();
        self.world.count_frames(totals);
    }

    fn log(&mut self, what: What) {
        self.recorder.log(self.now_ms, what);
    }

    fn sample(&mut self) {
        let sample = self
            .world
            .sample(self.now_ms, self.node.bms(), &self.decisions);
        self.recorder.sample(sample);
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
                        self.world.plugged[n - 1] = plug;
                        text = format!("{text} battery {n}");
                    }
                    None => self.world.plugged.iter_mut().for_each(|p| *p = plug),
                }
            }
            Action::RemoteOff => self.world.remote_on = false,
            Action::RemoteOn => self.world.remote_on = true,
            Action::DfuStart => {
                self.uploading = true;
                self.node.dfu(self.now_ms, DfuEvent::Started);
            }
            Action::DfuFail => {
                self.uploading = false;
                self.node.dfu(self.now_ms, DfuEvent::Failed);
            }
            Action::DfuAbort => {
                self.uploading = false;
                self.node.dfu(self.now_ms, DfuEvent::Aborted);
            }
            Action::DfuComplete => {
                self.uploading = false;
                self.node.dfu(self.now_ms, DfuEvent::Completed);
            }
            Action::DfuStall => self.uploading = false,
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
                self.world.enable(&name, on);
                text = format!("{text} {name}");
            }
            Action::Reboot => {
                self.count_frames();
                // The old node goes, its store stays: a placeholder holds the place meanwhile.
                let placeholder = Node::open(SimStorage::Memory(Box::default()), &mut no_random);
                let store = std::mem::replace(&mut self.node, placeholder).into_storage();
                let (node, note) = boot(self.scenario, store, false);
                self.node = node;
                self.uploading = false;
                self.world.reboot_lines(self.now_ms);
                self.decisions = Decisions::default();
                self.next_tick_ms = self.now_ms;
                if let Some(note) = note {
                    self.log(What::Bms(note));
                }
            }
            Action::BusNoise => {
                let count = e.count.unwrap_or(0);
                let noise: Vec<u8> = (0..count)
                    .map(|_| self.world.rng.gen_range(1..=255))
                    .collect();
                let now = self.now_ms;
                let node = &mut self.node;
                match self.world.lines.first_mut() {
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

    fn tick(&mut self) {
        if self.uploading {
            self.node.dfu(self.now_ms, DfuEvent::Progress);
        }
        // BLE-3: a readout key that used up its nonces is renewed, as on the device.
        let decisions = self.node.step_with_random(
            self.now_ms,
            &self.world.inputs(),
            &mut time_random(self.now_ms),
        );
        self.recorder.step(self.now_ms, &decisions);
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
            if config.device_key != fresh.device_key {
                // BLE-3: another key than the stored one has spent no nonce yet.
                config.adv_key_first_nonce = None;
            }
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

/// The random source of a running device: a new readout key in a run is drawn from the time
/// `seed`, so that runs repeat.
fn time_random(seed: u64) -> impl FnMut(&mut [u8]) -> bool {
    move |out: &mut [u8]| {
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = (seed.rotate_left(i as u32 * 8) as u8) ^ (i as u8).wrapping_mul(0x9D);
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
