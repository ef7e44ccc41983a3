//! Scenarios: TOML files describing the bank, the BMS settings, loads and chargers over time,
//! temperature and faults. Unknown keys are refused, and every error names file, line and field.
//! `docs/simulator.md` documents the format; `scenarios/` holds the shipped ones.

use crate::error::InputError;
use bms_core::bus::BatteryModel;
use bms_core::settings::{Settings, SettingsField};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

mod validate;
use validate::validate;

/// A whole scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short title, shown in the summary and the picture.
    pub name: String,
    /// What the scenario shows.
    #[serde(default)]
    pub description: String,
    /// Simulated time to run ("7d", "36h", "90min").
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Seed of every random draw (cell spread, sensor noise, clouds): same seed, same run.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Timeline sample period; default: duration / 4000, at least 10 s.
    #[serde(default, with = "humantime_serde")]
    pub sample_every: Option<Duration>,
    /// The batteries.
    pub bank: BankConfig,
    /// Errors of the measurements the BMS gets.
    #[serde(default)]
    pub sensors: SensorConfig,
    /// The BMS: settings and restored state.
    #[serde(default)]
    pub bms: BmsConfig,
    /// Ambient temperature over time.
    #[serde(default)]
    pub temperature: TemperatureConfig,
    /// DC loads (`[[load]]` tables).
    #[serde(default, rename = "load")]
    pub loads: Vec<LoadConfig>,
    /// Chargers (`[[charger]]` tables).
    #[serde(default, rename = "charger")]
    pub chargers: Vec<ChargerConfig>,
    /// Timed actions and faults (`[[event]]` tables).
    #[serde(default, rename = "event")]
    pub events: Vec<EventConfig>,
}

fn default_seed() -> u64 {
    1
}

/// Battery model as written in scenarios: "12.8V", "25.6V" or "51.2V".
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum BatteryKind {
    /// 12.8 V, 4 cells.
    #[serde(rename = "12.8V")]
    V12,
    /// 25.6 V, 8 cells.
    #[serde(rename = "25.6V")]
    V24,
    /// 51.2 V, 16 cells.
    #[serde(rename = "51.2V")]
    V48,
}

impl BatteryKind {
    /// The bus model.
    pub fn model(self) -> BatteryModel {
        match self {
            BatteryKind::V12 => BatteryModel::Lfp12V8,
            BatteryKind::V24 => BatteryModel::Lfp25V6,
            BatteryKind::V48 => BatteryModel::Lfp51V2,
        }
    }
}

/// `[bank]`: the batteries and how they are wired.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankConfig {
    /// Battery model.
    pub battery: BatteryKind,
    /// Nominal capacity of each battery in Ah.
    pub capacity_ah: f64,
    /// Batteries in series per string.
    #[serde(default = "one")]
    pub series: usize,
    /// Strings in parallel.
    #[serde(default = "one")]
    pub parallel: usize,
    /// True state of charge at the start, percent.
    pub initial_soc_pct: f64,
    /// Battery temperature at the start, °C; default: the ambient temperature at t = 0.
    #[serde(default)]
    pub initial_temp_c: Option<f64>,
    /// Standard deviation of cell capacity, percent.
    #[serde(default = "default_capacity_spread")]
    pub capacity_spread_pct: f64,
    /// Standard deviation of cell resistance, percent.
    #[serde(default = "default_resistance_spread")]
    pub resistance_spread_pct: f64,
    /// Standard deviation of the initial cell SoC, percentage points.
    #[serde(default = "default_soc_spread")]
    pub soc_spread_pct: f64,
    /// Mean self-discharge in percent of capacity per 30 days.
    #[serde(default = "default_self_discharge")]
    pub self_discharge_pct_per_month: f64,
    /// What the batteries speak: "openbms" (reports on the battery bus, the default), or
    /// "jbd", "jk", "daly": packs that answer the BMS's requests exactly as those BMSs do.
    #[serde(default)]
    pub protocol: ProtocolChoice,
    /// Line speed for the packs, bit/s; default: the protocol's own (JBD, Daly 9600; JK 115200).
    #[serde(default)]
    pub baud: Option<u32>,
    /// Time a pack takes before its answer starts, ms.
    #[serde(default = "default_reply_latency")]
    pub reply_latency_ms: f64,
}

/// The protocol the simulated batteries speak.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolChoice {
    /// The OpenBMS battery bus.
    #[default]
    Openbms,
    /// JBD / Xiaoxiang: one pack per line.
    Jbd,
    /// JK-PB RS485: addresses 1..15 on one line.
    Jk,
    /// Daly: boards 1..16 on one line.
    Daly,
}

impl ProtocolChoice {
    /// The core's protocol.
    pub fn protocol(self) -> bms_core::drivers::Protocol {
        use bms_core::drivers::Protocol;
        match self {
            ProtocolChoice::Openbms => Protocol::OpenBms,
            ProtocolChoice::Jbd => Protocol::Jbd,
            ProtocolChoice::Jk => Protocol::Jk,
            ProtocolChoice::Daly => Protocol::Daly,
        }
    }
}

fn default_reply_latency() -> f64 {
    20.0
}

fn one() -> usize {
    1
}
fn default_capacity_spread() -> f64 {
    1.0
}
fn default_resistance_spread() -> f64 {
    5.0
}
fn default_soc_spread() -> f64 {
    0.3
}
fn default_self_discharge() -> f64 {
    2.0
}

/// `[sensors]`: errors of what the batteries and the BMS measure.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SensorConfig {
    /// Gain error of each battery's current sensor, percent (drawn per battery, ± this much).
    pub current_gain_error_pct: f64,
    /// Offset of each battery's current sensor, amperes (drawn per battery, ± this much).
    pub current_offset_a: f64,
    /// Noise (standard deviation) of each current reading, amperes.
    pub current_noise_a: f64,
    /// Noise (standard deviation) of each cell voltage reading, mV.
    pub cell_noise_mv: f64,
    /// Resolution of the cell voltage readings, mV (whole mV at least: the bus carries mV).
    pub cell_resolution_mv: u16,
    /// Noise (standard deviation) of each temperature reading, °C.
    pub temp_noise_c: f64,
    /// Gain error of the BMS's own supply (bank voltage) measurement, percent.
    pub supply_gain_error_pct: f64,
    /// Resolution of the BMS's supply measurement, mV.
    pub supply_resolution_mv: u32,
}

impl Default for SensorConfig {
    fn default() -> Self {
        SensorConfig {
            current_gain_error_pct: 0.5,
            current_offset_a: 0.05,
            current_noise_a: 0.05,
            cell_noise_mv: 1.0,
            cell_resolution_mv: 1,
            temp_noise_c: 0.1,
            supply_gain_error_pct: 0.3,
            supply_resolution_mv: 10,
        }
    }
}

/// `[bms]`: the BMS's settings and what it restored at power-up. Settings left out keep their
/// factory defaults.
///
/// The six settings repeat [`SettingsConfig`]'s fields rather than `#[serde(flatten)]` it: serde
/// cannot combine `flatten` with `deny_unknown_fields`, and the latter is what reports a
/// misspelt key with its line. [`BmsConfig::settings`] hands them over.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BmsConfig {
    /// Charged voltage per cell, mV.
    pub charged_cell_mv: Option<u16>,
    /// Tail current, tenths of a percent of capacity.
    pub tail_current_permille: Option<u16>,
    /// Charged detection time, minutes.
    pub charged_detection_min: Option<u16>,
    /// Low-SoC warning level, percent.
    pub low_soc_warning_pct: Option<u16>,
    /// Discharge floor, percent.
    pub discharge_floor_pct: Option<u16>,
    /// Pre-alarm cell voltage, mV.
    pub prealarm_cell_mv: Option<u16>,
    /// SoC the BMS restored at power-up (as if persisted before), percent; none = unknown
    /// until the first synchronisation (MON-7).
    pub initial_soc_pct: Option<f64>,
    /// A BLE app is connected all the time (LED-1).
    #[serde(default)]
    pub app_connected: bool,
    /// The Instant Readout key as 32 hex digits.
    pub device_key: Option<String>,
    /// The SoC estimator: "adaptive" (the product default) or "plain" coulomb counting.
    #[serde(default)]
    pub estimator: Option<EstimatorChoice>,
}

/// The SoC estimator: the `estimator` key of `[bms]` and `replay --estimator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum EstimatorChoice {
    /// Plain coulomb counting with synchronisation.
    Plain,
    /// Counting with offset, knee and capacity learning.
    Adaptive,
}

impl Default for EstimatorChoice {
    /// The product default ([`bms_core::soc::EstimatorKind::default`]).
    fn default() -> Self {
        match bms_core::soc::EstimatorKind::default() {
            bms_core::soc::EstimatorKind::Plain => EstimatorChoice::Plain,
            bms_core::soc::EstimatorKind::Adaptive => EstimatorChoice::Adaptive,
        }
    }
}

impl From<EstimatorChoice> for bms_core::soc::EstimatorKind {
    fn from(choice: EstimatorChoice) -> Self {
        match choice {
            EstimatorChoice::Plain => bms_core::soc::EstimatorKind::Plain,
            EstimatorChoice::Adaptive => bms_core::soc::EstimatorKind::Adaptive,
        }
    }
}

/// The settings part of `[bms]`, also the whole of a `--settings FILE.toml` for replay.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsConfig {
    /// Charged voltage per cell, mV.
    pub charged_cell_mv: Option<u16>,
    /// Tail current, tenths of a percent of capacity.
    pub tail_current_permille: Option<u16>,
    /// Charged detection time, minutes.
    pub charged_detection_min: Option<u16>,
    /// Low-SoC warning level, percent.
    pub low_soc_warning_pct: Option<u16>,
    /// Discharge floor, percent.
    pub discharge_floor_pct: Option<u16>,
    /// Pre-alarm cell voltage, mV.
    pub prealarm_cell_mv: Option<u16>,
}

impl SettingsConfig {
    /// The factory settings with the given fields replaced, validated as a whole by the core
    /// (SET-1). The error names the field by its key here.
    pub fn to_settings(&self) -> Result<Settings, (&'static str, String)> {
        let pairs = [
            (
                SettingsField::ChargedVoltage,
                "charged_cell_mv",
                self.charged_cell_mv,
            ),
            (
                SettingsField::TailCurrent,
                "tail_current_permille",
                self.tail_current_permille,
            ),
            (
                SettingsField::ChargedDetectionTime,
                "charged_detection_min",
                self.charged_detection_min,
            ),
            (
                SettingsField::LowSocWarningLevel,
                "low_soc_warning_pct",
                self.low_soc_warning_pct,
            ),
            (
                SettingsField::DischargeFloor,
                "discharge_floor_pct",
                self.discharge_floor_pct,
            ),
            (
                SettingsField::PrealarmLevel,
                "prealarm_cell_mv",
                self.prealarm_cell_mv,
            ),
        ];
        let named = |e: bms_core::settings::SettingsError| {
            let key = pairs
                .iter()
                .find(|(f, _, _)| *f == e.field())
                .map_or("settings", |(_, k, _)| *k);
            (key, e.to_string())
        };
        let mut settings = Settings::default();
        for (field, _, value) in pairs {
            if let Some(v) = value {
                // The error names the value written (300), not what a byte field holds.
                settings = settings.try_with(field, v).map_err(named)?;
            }
        }
        settings.validate().map_err(named)?;
        Ok(settings)
    }
}

impl BmsConfig {
    /// The settings part.
    pub fn settings(&self) -> SettingsConfig {
        SettingsConfig {
            charged_cell_mv: self.charged_cell_mv,
            tail_current_permille: self.tail_current_permille,
            charged_detection_min: self.charged_detection_min,
            low_soc_warning_pct: self.low_soc_warning_pct,
            discharge_floor_pct: self.discharge_floor_pct,
            prealarm_cell_mv: self.prealarm_cell_mv,
        }
    }
}

/// Lowest ambient temperature a scenario (`[temperature] ambient_c`) or the engine at run time
/// takes, °C.
pub const AMBIENT_MIN_C: f64 = -40.0;

/// Highest ambient temperature a scenario or the engine at run time takes, °C.
pub const AMBIENT_MAX_C: f64 = 80.0;

/// `[temperature]`: ambient temperature over time.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemperatureConfig {
    /// Constant ambient temperature, °C (used when `points` is empty).
    pub ambient_c: f64,
    /// Daily swing added on top, °C peak to peak: coldest at 03:00, warmest at 15:00.
    pub daily_swing_c: f64,
    /// Ambient temperature at given times, linearly interpolated, held after the last.
    pub points: Vec<TempPoint>,
}

impl Default for TemperatureConfig {
    fn default() -> Self {
        TemperatureConfig {
            ambient_c: 20.0,
            daily_swing_c: 0.0,
            points: Vec::new(),
        }
    }
}

/// One `{ at = "6h", c = 5.0 }` point of the ambient temperature.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TempPoint {
    /// Time since the start.
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    /// Ambient temperature, °C.
    pub c: f64,
}

impl TemperatureConfig {
    /// Ambient temperature at `t_s` seconds since the start, °C.
    pub fn ambient_c(&self, t_s: f64) -> f64 {
        let base = match self.points.iter().position(|p| p.at.as_secs_f64() > t_s) {
            None => self.points.last().map_or(self.ambient_c, |p| p.c),
            Some(0) => self.points[0].c,
            Some(i) => {
                let (a, b) = (&self.points[i - 1], &self.points[i]);
                let (ta, tb) = (a.at.as_secs_f64(), b.at.as_secs_f64());
                a.c + (b.c - a.c) * (t_s - ta) / (tb - ta)
            }
        };
        let hour = (t_s / 3600.0).rem_euclid(24.0);
        base - 0.5 * self.daily_swing_c * ((hour - 3.0) / 24.0 * std::f64::consts::TAU).cos()
    }
}

/// What switches a load or charger.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The BMS output (ATD for loads, ATC for chargers): off while it is free-floating.
    #[default]
    Bms,
    /// Wired straight to the bank: nothing switches it off (a parasitic load, a charger
    /// without remote input).
    Direct,
}

/// `[[load]]`: a DC load.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadConfig {
    /// Name, for `enable`/`disable` events and the summary.
    pub name: String,
    /// Switched by ATD (`"bms"`, default) or wired directly (`"direct"`).
    #[serde(default)]
    pub via: Via,
    /// Constant current drawn, amperes (give this or `power_w`).
    pub current_a: Option<f64>,
    /// Constant power drawn, watts (current = power / bank voltage).
    pub power_w: Option<f64>,
    /// Daily windows `[from_h, to_h]` (hours of the day, `to` may pass midnight); default all day.
    #[serde(default)]
    pub hours: Vec<[f64; 2]>,
    /// Active from this time since the start.
    #[serde(default, with = "humantime_serde")]
    pub start: Option<Duration>,
    /// Active until this time since the start.
    #[serde(default, with = "humantime_serde")]
    pub stop: Option<Duration>,
    /// Cycling (a fridge compressor): on for this long...
    #[serde(default, with = "humantime_serde")]
    pub on_for: Option<Duration>,
    /// ...then off for this long.
    #[serde(default, with = "humantime_serde")]
    pub off_for: Option<Duration>,
    /// Switched on at the start (an `enable`/`disable` event changes it).
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// Kind of charger.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ChargerKind {
    /// Mains or generator charger: full current whenever it is on.
    #[default]
    Mains,
    /// Solar charger: current follows the sun between sunrise and sunset, and clouds.
    Solar,
}

/// `[[charger]]`: a charger with bulk/absorption/float stages.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargerConfig {
    /// Name, for `enable`/`disable` events and the summary.
    pub name: String,
    /// Mains or solar.
    #[serde(default)]
    pub kind: ChargerKind,
    /// Switched by ATC (`"bms"`, default) or not (`"direct"`).
    #[serde(default)]
    pub via: Via,
    /// Largest charge current (solar: at noon under a clear sky), amperes.
    pub max_a: f64,
    /// Absorption voltage per cell, volts (3.55 = 14.2 V on a 12.8 V battery).
    #[serde(default = "default_absorption")]
    pub absorption_cell_v: f64,
    /// Float voltage per cell, volts (3.375 = 13.5 V).
    #[serde(default = "default_float")]
    pub float_cell_v: f64,
    /// Longest absorption stage before float.
    #[serde(default = "default_absorption_time", with = "humantime_serde")]
    pub absorption_time: Duration,
    /// Daily windows `[from_h, to_h]` in which a mains charger runs; default all day.
    #[serde(default)]
    pub hours: Vec<[f64; 2]>,
    /// Active from this time since the start.
    #[serde(default, with = "humantime_serde")]
    pub start: Option<Duration>,
    /// Active until this time since the start.
    #[serde(default, with = "humantime_serde")]
    pub stop: Option<Duration>,
    /// Solar: hour of sunrise.
    #[serde(default = "default_sunrise")]
    pub sunrise_h: f64,
    /// Solar: hour of sunset.
    #[serde(default = "default_sunset")]
    pub sunset_h: f64,
    /// Solar: each day the sun is weakened by a random fraction up to this (0–1).
    #[serde(default)]
    pub cloudiness: f64,
    /// Switched on at the start.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn default_absorption() -> f64 {
    3.55
}
fn default_float() -> f64 {
    3.375
}
fn default_absorption_time() -> Duration {
    Duration::from_secs(2 * 3600)
}
fn default_sunrise() -> f64 {
    6.0
}
fn default_sunset() -> f64 {
    20.0
}

/// What an `[[event]]` does.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The bus cable of `battery` (1-based; all when left out) is pulled: its reports stop.
    UnplugCable,
    /// The cable is plugged back in.
    ReplugCable,
    /// The remote on/off switch is opened (PROT-8).
    RemoteOff,
    /// The remote on/off switch is closed.
    RemoteOn,
    /// A firmware update starts (PROT-10).
    DfuStart,
    /// The firmware update fails.
    DfuFail,
    /// The firmware update is aborted.
    DfuAbort,
    /// The firmware update completes.
    DfuComplete,
    /// The phone uploading the firmware goes silent without a word (walked out of range, app
    /// killed): no more chunks arrive, and the BMS aborts the update 2 minutes later (DFU-1).
    DfuStall,
    /// The user sets the SoC to `soc_pct` (MON-4).
    SetSoc,
    /// The user synchronises the SoC to 100 % (MON-4).
    Synchronise,
    /// The load or charger `target` is switched on by hand.
    Enable,
    /// The load or charger `target` is switched off by hand.
    Disable,
    /// Line noise on the bus: `count` garbage bytes are injected.
    BusNoise,
    /// The BMS restarts (power cut, watchdog): it restores its records from the store, as
    /// after a reboot on the device (MON-8, SET-2).
    Reboot,
}

impl Action {
    /// The name as written in scenarios.
    pub const fn name(self) -> &'static str {
        match self {
            Action::UnplugCable => "unplug_cable",
            Action::ReplugCable => "replug_cable",
            Action::RemoteOff => "remote_off",
            Action::RemoteOn => "remote_on",
            Action::DfuStart => "dfu_start",
            Action::DfuFail => "dfu_fail",
            Action::DfuAbort => "dfu_abort",
            Action::DfuComplete => "dfu_complete",
            Action::DfuStall => "dfu_stall",
            Action::SetSoc => "set_soc",
            Action::Synchronise => "synchronise",
            Action::Enable => "enable",
            Action::Disable => "disable",
            Action::BusNoise => "bus_noise",
            Action::Reboot => "reboot",
        }
    }
}

/// `[[event]]`: something that happens at a given time.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventConfig {
    /// Time since the start.
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    /// What happens.
    pub action: Action,
    /// `unplug_cable`/`replug_cable`: which battery (1-based); all when left out.
    pub battery: Option<usize>,
    /// `enable`/`disable`: the load or charger name.
    pub target: Option<String>,
    /// `set_soc`: the SoC, percent.
    pub soc_pct: Option<f64>,
    /// `bus_noise`: how many garbage bytes.
    pub count: Option<usize>,
}

/// Hours of the day a `hours = [[from, to], ...]` list covers at `t_s` (all day when empty).
pub fn in_hours(hours: &[[f64; 2]], t_s: f64) -> bool {
    if hours.is_empty() {
        return true;
    }
    let h = (t_s / 3600.0).rem_euclid(24.0);
    hours.iter().any(|&[from, to]| {
        if from <= to {
            (from..to).contains(&h)
        } else {
            h >= from || h < to
        }
    })
}

/// Reads and checks a scenario file.
pub fn load(path: &Path) -> Result<Scenario, InputError> {
    let src = std::fs::read_to_string(path)
        .map_err(|e| InputError::file(path, format!("cannot read: {e}")))?;
    parse(path, &src)
}

/// Parses and checks scenario text; `path` is only used in errors.
pub fn parse(path: &Path, src: &str) -> Result<Scenario, InputError> {
    let scenario: Scenario = toml::from_str(src).map_err(|e| toml_error(path, src, &e))?;
    validate(&scenario).map_err(|(table, index, key, message)| InputError {
        file: path.to_path_buf(),
        line: locate(src, table, index, key),
        field: Some(if table.is_empty() {
            key.to_string()
        } else {
            format!("{table}.{key}")
        }),
        message,
    })?;
    Ok(scenario)
}

/// A TOML/serde error as an [`InputError`]: the line from its span, the field from the
/// `key = value` on that line when serde's message does not name it.
pub fn toml_error(path: &Path, src: &str, e: &toml::de::Error) -> InputError {
    let line = e.span().map(|s| {
        src.as_bytes()[..s.start.min(src.len())]
            .iter()
            .filter(|&&c| c == b'\n')
            .count()
            + 1
    });
    let field = line.and_then(|l| src.lines().nth(l - 1)).and_then(|text| {
        let (key, _) = text.split_once('=')?;
        let key = key.trim();
        (!key.is_empty() && !key.starts_with('[')).then(|| key.to_string())
    });
    let mut message = e.message().trim().to_string();
    if message.is_empty() {
        // The parser gives no message for some syntax errors (a control character): name
        // the character where the error starts.
        let at = e
            .span()
            .and_then(|s| src.get(s.start..))
            .and_then(|t| t.chars().next());
        message = match at {
            Some(c) if c.is_control() => {
                format!("control character U+{:04X} not allowed here", u32::from(c))
            }
            Some(c) => format!("unexpected {c:?}"),
            None => "unexpected end of file".to_string(),
        };
    }
    InputError {
        file: path.to_path_buf(),
        line,
        field,
        message,
    }
}

/// 1-based line of `key` inside `[table]` (the `index`-th `[[table]]` for arrays), or of the
/// table header when the key is not written there.
fn locate(src: &str, table: &str, index: Option<usize>, key: &str) -> Option<usize> {
    let mut current = String::new();
    let mut seen: usize = 0;
    let mut header_line = None;
    for (n, raw) in src.lines().enumerate() {
        let line = raw.trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split(']').next()) {
            current = name.trim().to_string();
            if current == table {
                seen += 1;
            }
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            current = name.trim().to_string();
        } else {
            let in_table = current == table && index.is_none_or(|i| seen == i + 1);
            if in_table {
                if let Some((k, _)) = line.split_once('=') {
                    if k.trim() == key {
                        return Some(n + 1);
                    }
                }
            }
            continue;
        }
        if current == table && index.is_none_or(|i| seen == i + 1) && header_line.is_none() {
            header_line = Some(n + 1);
        }
    }
    header_line
}

/// A 16-byte key from 32 hex digits.
pub fn parse_key(hex: &str) -> Option<[u8; 16]> {
    let hex = hex.trim();
    // Digits only: `from_str_radix` also takes a sign ("+f").
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut key = [0u8; 16];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "minimal"
duration = "1h"

[bank]
battery = "12.8V"
capacity_ah = 100
initial_soc_pct = 50
"#;

    fn parse_str(src: &str) -> Result<Scenario, InputError> {
        parse(Path::new("s.toml"), src)
    }

    #[test]
    fn minimal_scenario_gets_defaults() {
        let s = parse_str(MINIMAL).unwrap();
        assert_eq!(s.duration, Duration::from_secs(3600));
        assert_eq!(s.bank.series, 1);
        assert_eq!(s.seed, 1);
        assert_eq!(s.temperature.ambient_c(0.0), 20.0);
        assert_eq!(s.bms.settings().to_settings().unwrap(), Settings::default());
    }

    /// SET-1: a refused setting names the value written, not the 255 a byte field holds.
    #[test]
    fn set_1_refused_setting_names_the_value_written() {
        let config = SettingsConfig {
            charged_detection_min: Some(300),
            ..SettingsConfig::default()
        };
        let (key, message) = config.to_settings().unwrap_err();
        assert_eq!(key, "charged_detection_min");
        assert!(message.contains("300"), "{message}");
        assert!(!message.contains("255"), "{message}");
    }

    #[test]
    fn unknown_key_names_file_line_and_field() {
        let src = format!("{MINIMAL}colour = \"red\"\n");
        let e = parse_str(&src).unwrap_err();
        assert_eq!(e.line, Some(9), "{e}");
        assert_eq!(e.field.as_deref(), Some("colour"));
        assert!(e.message.contains("unknown field `colour`"), "{e}");
        assert!(
            e.to_string().starts_with("s.toml line 9 field `colour`: "),
            "{e}"
        );
    }

    /// A control character in a comment is a TOML syntax error whose parser message is empty
    /// (found by the scenario fuzz target): the error still says what is wrong, and where.
    #[test]
    fn a_control_character_is_named_with_its_line() {
        for (bad, name) in [
            ('\u{0}', "U+0000"),
            ('\u{e}', "U+000E"),
            ('\u{7f}', "U+007F"),
        ] {
            let src = format!("{MINIMAL}# a comment {bad} here\n");
            let e = parse_str(&src).unwrap_err();
            assert_eq!(e.line, Some(9), "{e}");
            assert!(e.message.contains(name), "{e}");
        }
    }

    #[test]
    fn wrong_type_names_the_field() {
        let src = MINIMAL.replace("capacity_ah = 100", "capacity_ah = \"lots\"");
        let e = parse_str(&src).unwrap_err();
        assert_eq!(e.line, Some(7));
        assert_eq!(e.field.as_deref(), Some("capacity_ah"));
    }

    #[test]
    fn out_of_range_value_names_table_and_line() {
        let src = MINIMAL.replace("initial_soc_pct = 50", "initial_soc_pct = 150");
        let e = parse_str(&src).unwrap_err();
        assert_eq!(e.line, Some(8));
        assert_eq!(e.field.as_deref(), Some("bank.initial_soc_pct"));
        let src = format!("{MINIMAL}\n[bms]\ndischarge_floor_pct = 30\n");
        let e = parse_str(&src).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("bms.low_soc_warning_pct"), "{e}");
    }

    #[test]
    fn events_are_checked_against_loads_and_bank() {
        let src = format!(
            "{MINIMAL}\n[[load]]\nname = \"fridge\"\ncurrent_a = 3\n\n[[event]]\nat = \"10min\"\naction = \"disable\"\ntarget = \"fridge\"\n\n[[event]]\nat = \"20min\"\naction = \"unplug_cable\"\nbattery = 2\n"
        );
        let e = parse_str(&src).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("event.battery"));
        assert_eq!(e.line, Some(22), "{e}");
        let ok = src.replace("battery = 2", "battery = 1");
        let s = parse_str(&ok).unwrap();
        assert_eq!(s.events[0].action, Action::Disable);
        assert_eq!(s.loads[0].via, Via::Bms);
    }

    /// Events run in the order they are listed, each once its time has come: an event listed
    /// after a later one ran late, at the later one's time, and was logged there. A scenario
    /// with its events out of time order is refused, naming the event (equal times are fine).
    #[test]
    fn events_out_of_time_order_are_refused_naming_the_event() {
        let event =
            |at: &str, action: &str| format!("\n[[event]]\nat = \"{at}\"\naction = \"{action}\"\n");
        let src = format!(
            "{MINIMAL}{}{}{}",
            event("5min", "remote_off"),
            event("2min", "remote_on"),
            event("1min", "remote_off")
        );
        let e = parse_str(&src).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("event.at"), "{e}");
        assert_eq!(e.line, Some(15), "{e}");
        assert!(e.message.contains("2m") && e.message.contains("5m"), "{e}");
        let same = format!(
            "{MINIMAL}{}{}",
            event("5min", "remote_off"),
            event("5min", "synchronise")
        );
        assert_eq!(parse_str(&same).unwrap().events.len(), 2);
    }

    #[test]
    fn temperature_points_interpolate_and_swing() {
        let t = TemperatureConfig {
            ambient_c: 0.0,
            daily_swing_c: 0.0,
            points: vec![
                TempPoint {
                    at: Duration::from_secs(0),
                    c: -10.0,
                },
                TempPoint {
                    at: Duration::from_secs(3600),
                    c: 10.0,
                },
            ],
        };
        assert_eq!(t.ambient_c(1800.0), 0.0);
        assert_eq!(t.ambient_c(7200.0), 10.0);
        let swing = TemperatureConfig {
            ambient_c: 10.0,
            daily_swing_c: 10.0,
            points: vec![],
        };
        assert!((swing.ambient_c(3.0 * 3600.0) - 5.0).abs() < 1e-9);
        assert!((swing.ambient_c(15.0 * 3600.0) - 15.0).abs() < 1e-9);
    }

    #[test]
    fn hours_windows_wrap_midnight() {
        assert!(in_hours(&[], 5.0));
        assert!(in_hours(&[[22.0, 6.0]], 23.5 * 3600.0));
        assert!(in_hours(&[[22.0, 6.0]], 86_400.0 + 3600.0));
        assert!(!in_hours(&[[22.0, 6.0]], 12.0 * 3600.0));
    }

    /// BLE-3: the Instant Readout key (`[bms] device_key`, `replay --adv-key`) is 32 hex
    /// digits. A sign is no digit: "+0+1…+f" was taken as the key 00 01 … 0f.
    #[test]
    fn ble_3_a_key_with_signs_is_not_32_hex_digits() {
        assert!(parse_key("+0+1+2+3+4+5+6+7+8+9+a+b+c+d+e+f").is_none());
        assert!(parse_key("+00102030405060708090a0b0c0d0e0f").is_none());
        let src = format!("{MINIMAL}\n[bms]\ndevice_key = \"+0+1+2+3+4+5+6+7+8+9+a+b+c+d+e+f\"\n");
        let e = parse_str(&src).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("bms.device_key"), "{e}");
    }

    #[test]
    fn key_is_32_hex_digits() {
        assert_eq!(
            parse_key("000102030405060708090a0b0c0d0e0f").unwrap()[15],
            15
        );
        assert!(parse_key("0001").is_none());
        assert!(parse_key("zz0102030405060708090a0b0c0d0e0f").is_none());
    }
}
