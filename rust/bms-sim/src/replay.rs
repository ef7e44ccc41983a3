//! `bms-sim replay`: recorded measurements of one 12.8 V battery in, the core's decisions out.
//!
//! The interface is fixed (outside tools depend on it). Input columns: `t_s,current_a,temp_c,
//! cell1_v,cell2_v,cell3_v,cell4_v` and optionally `remote_on` (1/0, absent = on); rows at
//! strictly increasing times; values hold until the next row. The battery reports every second
//! through the bus codec and the core ticks at its own rate in between. Output columns:
//! `t_s,soc_pct,atd,atc,prealarm,alarms,warnings` (+ `adv_hex` with `--adv-key`, then
//! `soc_sigma_pct` with `--uncertainty`), one row per
//! input row, taken after that row's time has been processed. Bad input writes nothing.

use crate::error::InputError;
use crate::output::codes_joined;
use crate::scenario::{parse_key, toml_error, EstimatorChoice, SettingsConfig};
use crate::sensors::BATTERY_FIRMWARE;
use bms_core::bms::{Config, Decisions, Inputs};
use bms_core::bus::{
    encode_report, BatteryFlags, BatteryModel, BatteryReport, MAX_FRAME_LEN, REPORT_PERIOD_MS,
};
use bms_core::node::Node;
use bms_core::settings::Settings;
use bms_core::storage::MemStorage;
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// Longest gap between two rows: a week. The core is stepped every tick in between, so a
/// gap of 1e10 s would run for days; a longer pause in a log is an error naming the row.
pub const MAX_GAP_MS: u64 = 7 * 86_400_000;

/// Arguments of `bms-sim replay`.
#[derive(Clone, Debug, clap::Args)]
pub struct ReplayArgs {
    /// Recorded measurements (CSV).
    pub input: PathBuf,
    /// Where to write the decisions (CSV); `-` for standard output.
    #[arg(long)]
    pub out: PathBuf,
    /// BMS settings (TOML with the keys of a scenario's [bms] settings).
    #[arg(long)]
    pub settings: Option<PathBuf>,
    /// SoC the BMS starts with, percent (default: unknown until synchronised).
    #[arg(long, value_parser = parse_pct)]
    pub initial_soc: Option<f64>,
    /// Instant Readout key (32 hex digits): adds the `adv_hex` column.
    #[arg(long, value_parser = parse_key_arg)]
    pub adv_key: Option<[u8; 16]>,
    /// Nominal capacity of the battery, Ah.
    #[arg(long, default_value_t = 100.0, value_parser = parse_capacity)]
    pub capacity_ah: f64,
    /// SoC estimator the BMS runs (default: the product default, adaptive).
    #[arg(long, value_enum, default_value_t = EstimatorChoice::default())]
    pub estimator: EstimatorChoice,
    /// Adds the `soc_sigma_pct` column: the 1-σ uncertainty the estimator reports, percent.
    #[arg(long)]
    pub uncertainty: bool,
}

fn parse_pct(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a percentage between 0 and 100")),
    }
}

fn parse_capacity(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (1.0..=6553.5).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a capacity between 1 and 6553.5 Ah")),
    }
}

fn parse_key_arg(s: &str) -> Result<[u8; 16], String> {
    parse_key(s).ok_or_else(|| format!("`{s}` is not 32 hex digits"))
}

/// Why a replay failed.
#[derive(Debug)]
pub enum ReplayError {
    /// Bad input (file, header, value): exit code 2, nothing written.
    Input(InputError),
    /// The output could not be written: exit code 1.
    Output(String),
    /// Standard output was closed by its reader (`| head`): nothing more to do, exit code 0.
    BrokenPipe,
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Input(e) => write!(f, "{e}"),
            ReplayError::Output(e) => write!(f, "{e}"),
            ReplayError::BrokenPipe => write!(f, "standard output closed"),
        }
    }
}

/// One input row, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct InputRow {
    /// The time as written (echoed in the output).
    pub t_text: String,
    /// Time in ms.
    pub t_ms: u64,
    /// Battery current, A (positive = charging).
    pub current_a: f64,
    /// Battery temperature, °C.
    pub temp_c: f64,
    /// Cell voltages, V.
    pub cells_v: [f64; 4],
    /// Remote switch on.
    pub remote_on: bool,
}

const REQUIRED: [&str; 7] = [
    "t_s",
    "current_a",
    "temp_c",
    "cell1_v",
    "cell2_v",
    "cell3_v",
    "cell4_v",
];

/// Reads and checks the whole input file.
pub fn read_input(path: &Path) -> Result<Vec<InputRow>, InputError> {
    let file = std::fs::File::open(path)
        .map_err(|e| InputError::file(path, format!("cannot read: {e}")))?;
    parse_input(path, file)
}

/// Checks the whole input read from `source`; `path` is only used in errors.
pub fn parse_input(path: &Path, source: impl std::io::Read) -> Result<Vec<InputRow>, InputError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(source);
    let headers = reader
        .headers()
        .map_err(|e| InputError {
            line: Some(1),
            ..InputError::file(path, format!("bad header: {e}"))
        })?
        .clone();
    let mut columns = [usize::MAX; 8];
    for (i, name) in headers.iter().enumerate() {
        let slot = REQUIRED
            .iter()
            .position(|r| *r == name)
            .or((name == "remote_on").then_some(7));
        match slot {
            Some(s) if columns[s] == usize::MAX => columns[s] = i,
            Some(_) => return Err(InputError::at(path, 1, name, "column appears twice")),
            None => {
                return Err(InputError::at(
                    path,
                    1,
                    name,
                    format!(
                        "unknown column; expected {} and optionally remote_on",
                        REQUIRED.join(",")
                    ),
                ))
            }
        }
    }
    if let Some(missing) = REQUIRED
        .iter()
        .enumerate()
        .find(|(i, _)| columns[*i] == usize::MAX)
    {
        return Err(InputError::at(path, 1, missing.1, "missing column"));
    }
    let mut rows: Vec<InputRow> = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            InputError {
                line: Some(line),
                ..InputError::file(path, format!("bad row: {e}"))
            }
        })?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        let text = |slot: usize| record.get(columns[slot]).unwrap_or("");
        let number = |slot: usize, name: &str| -> Result<f64, InputError> {
            let t = text(slot);
            match t.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => Err(InputError::at(
                    path,
                    line,
                    name,
                    format!("not a number: {t:?}"),
                )),
            }
        };
        let t_s = number(0, "t_s")?;
        if !(0.0..=1.0e10).contains(&t_s) {
            return Err(InputError::at(
                path,
                line,
                "t_s",
                format!("time {t_s} outside 0–1e10 s"),
            ));
        }
        let t_ms = (t_s * 1000.0).round() as u64;
        if let Some(prev) = rows.last() {
            if t_ms.saturating_sub(prev.t_ms) > MAX_GAP_MS {
                return Err(InputError::at(
                    path,
                    line,
                    "t_s",
                    format!(
                        "time {} is more than {} s after the previous row's {}",
                        text(0),
                        MAX_GAP_MS / 1000,
                        prev.t_text
                    ),
                ));
            }
            if t_ms <= prev.t_ms {
                // Times are taken to the millisecond: a later time within the same one is
                // named as such, not as "not after".
                let later = prev.t_text.parse::<f64>().is_ok_and(|p| t_s > p);
                let relation = if later {
                    "is in the same millisecond as"
                } else {
                    "is not after"
                };
                return Err(InputError::at(
                    path,
                    line,
                    "t_s",
                    format!(
                        "time {} {relation} the previous row's {}",
                        text(0),
                        prev.t_text
                    ),
                ));
            }
        }
        let current_a = number(1, "current_a")?;
        if current_a.abs() > 2_000_000.0 {
            return Err(InputError::at(
                path,
                line,
                "current_a",
                format!("{} A is beyond ±2 MA", text(1)),
            ));
        }
        let temp_c = number(2, "temp_c")?;
        if !(-100.0..=200.0).contains(&temp_c) {
            return Err(InputError::at(
                path,
                line,
                "temp_c",
                format!("{temp_c} outside −100–200 °C"),
            ));
        }
        let mut cells_v = [0.0; 4];
        for (k, cell) in cells_v.iter_mut().enumerate() {
            let name = REQUIRED[3 + k];
            *cell = number(3 + k, name)?;
            if !(0.0..=6.0).contains(cell) {
                return Err(InputError::at(
                    path,
                    line,
                    name,
                    format!("{cell} outside 0–6 V"),
                ));
            }
        }
        let remote_on = if columns[7] == usize::MAX {
            true
        } else {
            match text(7) {
                "1" => true,
                "0" => false,
                other => {
                    return Err(InputError::at(
                        path,
                        line,
                        "remote_on",
                        format!("{other:?} is not 1 or 0"),
                    ))
                }
            }
        };
        rows.push(InputRow {
            t_text: text(0).to_string(),
            t_ms,
            current_a,
            temp_c,
            cells_v,
            remote_on,
        });
    }
    Ok(rows)
}

/// One output row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutputRow {
    /// Time, as in the input.
    pub t_s: String,
    /// SoC in percent with one decimal, empty while unknown.
    pub soc_pct: String,
    /// 1 = ATD high (loads allowed), 0 = free-floating.
    pub atd: u8,
    /// 1 = ATC high (charging allowed), 0 = free-floating.
    pub atc: u8,
    /// 1 = pre-alarm active.
    pub prealarm: u8,
    /// Active alarm and error codes joined by `|`.
    pub alarms: String,
    /// Active warning codes joined by `|`.
    pub warnings: String,
    /// Instant Readout payload in hex (only with `--adv-key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adv_hex: Option<String>,
    /// 1-σ uncertainty of the SoC in percent with one decimal, empty when not reported (only
    /// with `--uncertainty`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soc_sigma_pct: Option<String>,
}

fn report(row: &InputRow, capacity_ah: f64) -> BatteryReport {
    let mut cells_mv = heapless::Vec::new();
    for v in row.cells_v {
        let _ = cells_mv.push((v * 1000.0).round() as u16);
    }
    let mut temps_ddegc = heapless::Vec::new();
    let _ = temps_ddegc.push((row.temp_c * 10.0).round() as i16);
    BatteryReport {
        serial: 1,
        model: BatteryModel::Lfp12V8,
        capacity_dah: (capacity_ah * 10.0).round() as u16,
        firmware: BATTERY_FIRMWARE,
        cells_mv,
        temps_ddegc,
        current_ma: (row.current_a * 1000.0).round() as i32,
        flags: BatteryFlags {
            allowed_to_charge: true,
            allowed_to_discharge: true,
            balancing: false,
        },
    }
}

/// Runs the core over checked rows; one output row per input row.
pub fn run_rows(
    rows: &[InputRow],
    mut config: Config,
    initial_soc: Option<f64>,
    capacity_ah: f64,
    adv: bool,
) -> Vec<OutputRow> {
    config.restored_soc = initial_soc.map(|pct| crate::engine::restored_soc(pct, capacity_ah));
    // Records go to a store in memory, as on a device whose flash works (the advertiser needs
    // its nonce reservation written before it advertises). The key comes as the device's own.
    let mut random = crate::engine::fixed_random(config.device_key, 0);
    let mut node = Node::open_with(MemStorage::new(), &mut random, |restored| {
        restored.settings = config.settings;
        restored.estimator = config.estimator;
        restored.restored_soc = config.restored_soc;
    });
    let mut frame = [0u8; MAX_FRAME_LEN];
    let Some(first) = rows.first() else {
        return Vec::new();
    };
    let mut next_tick = first.t_ms;
    let mut next_report = first.t_ms;
    let mut decisions = Decisions::default();
    let mut held = first;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        // Everything due before this row's time runs with the values held from earlier rows.
        loop {
            let t = next_tick.min(next_report);
            if t > row.t_ms {
                break;
            }
            if t == row.t_ms {
                held = row;
            }
            if next_report == t {
                if let Ok(len) = encode_report(&report(held, capacity_ah), &mut frame) {
                    let _ = node.feed_bus(t, &frame[..len]);
                }
                next_report = t + REPORT_PERIOD_MS;
            }
            if next_tick == t {
                let supply_mv = (held.cells_v.iter().sum::<f64>() * 1000.0).round() as u32;
                let inputs = Inputs {
                    remote_h_mv: 0,
                    remote_l_mv: if held.remote_on { 0 } else { supply_mv },
                    supply_mv,
                    app_connected: false,
                };
                // BLE-3: a readout key that used up its nonces is renewed, as on the device.
                decisions = node.step_with_random(t, &inputs, &mut random);
                let tick = u64::from(decisions.tick_ms).max(1);
                next_tick = node
                    .next_deadline_ms()
                    .unwrap_or(t + tick)
                    .clamp(t + 1, t + tick);
            }
        }
        held = row;
        out.push(OutputRow {
            t_s: row.t_text.clone(),
            soc_pct: crate::engine::core_soc_pct(node.bms())
                .map(|v| format!("{v:.1}"))
                .unwrap_or_default(),
            atd: u8::from(decisions.atd),
            atc: u8::from(decisions.atc),
            prealarm: u8::from(decisions.prealarm),
            alarms: codes_joined(decisions.codes, true),
            warnings: codes_joined(decisions.codes, false),
            adv_hex: adv.then(|| advertisement_hex(&mut node)),
            soc_sigma_pct: Some(
                node.bms()
                    .monitor_status()
                    .soc_uncertainty_permille
                    .map(|p| format!("{:.1}", f64::from(p) / 10.0))
                    .unwrap_or_default(),
            ),
        });
    }
    out
}

/// The Instant Readout payload the device would advertise now, without the company id, in hex.
fn advertisement_hex(node: &mut Node<MemStorage>) -> String {
    let mut buf = [0u8; 64];
    match node.advertisement(&mut buf) {
        // The first two bytes are Victron's company id (0x02E1, little-endian).
        Ok(len) => buf
            .get(2..len)
            .unwrap_or(&[])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        Err(_) => String::new(),
    }
}

/// Parses and checks a `--settings` file's text (the keys of a scenario's `[bms]` settings);
/// `path` is only used in errors.
pub fn parse_settings(path: &Path, src: &str) -> Result<Settings, InputError> {
    let parsed: SettingsConfig = toml::from_str(src).map_err(|e| toml_error(path, src, &e))?;
    parsed.to_settings().map_err(|(field, message)| {
        let line = src
            .lines()
            .position(|l| l.split('=').next().is_some_and(|k| k.trim() == field))
            .map(|l| l + 1);
        InputError {
            file: path.to_path_buf(),
            line,
            field: Some(field.to_string()),
            message,
        }
    })
}

/// The whole command: check everything, run, then write.
pub fn replay(args: &ReplayArgs) -> Result<(), ReplayError> {
    let rows = read_input(&args.input).map_err(ReplayError::Input)?;
    let settings = match &args.settings {
        Some(path) => {
            let src = std::fs::read_to_string(path).map_err(|e| {
                ReplayError::Input(InputError::file(path, format!("cannot read: {e}")))
            })?;
            parse_settings(path, &src).map_err(ReplayError::Input)?
        }
        None => Settings::default(),
    };
    let mut config = Config {
        settings,
        estimator: args.estimator.into(),
        ..Config::default()
    };
    if let Some(key) = args.adv_key {
        config.device_key = key;
    }
    let mut out = run_rows(
        &rows,
        config,
        args.initial_soc,
        args.capacity_ah,
        args.adv_key.is_some(),
    );
    if !args.uncertainty {
        for row in &mut out {
            row.soc_sigma_pct = None;
        }
    }
    if args.out.as_os_str() == "-" {
        write_rows(std::io::stdout().lock(), &out, args).map_err(|e| match e.kind() {
            csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe => {
                ReplayError::BrokenPipe
            }
            _ => ReplayError::Output(format!("standard output: {e}")),
        })
    } else {
        let file = std::fs::File::create(&args.out)
            .map_err(|e| ReplayError::Output(format!("{}: {e}", args.out.display())))?;
        write_rows(file, &out, args)
            .map_err(|e| ReplayError::Output(format!("{}: {e}", args.out.display())))
    }
}

/// Writes the header and `rows`: the header even when there are no rows, so that a tool
/// reading the output always finds its columns.
fn write_rows(
    sink: impl std::io::Write,
    rows: &[OutputRow],
    args: &ReplayArgs,
) -> Result<(), csv::Error> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(sink);
    let mut header = vec![
        "t_s", "soc_pct", "atd", "atc", "prealarm", "alarms", "warnings",
    ];
    if args.adv_key.is_some() {
        header.push("adv_hex");
    }
    if args.uncertainty {
        header.push("soc_sigma_pct");
    }
    w.write_record(&header)?;
    for row in rows {
        w.serialize(row)?;
    }
    w.flush()?;
    Ok(())
}
