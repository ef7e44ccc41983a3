//! `bms-sim replay`: recorded measurements of one 12.8, 25.6 or 51.2 V battery in, the core's
//! decisions out.
//!
//! The interface is fixed (outside tools depend on it). Input columns: `t_s,current_a,temp_c,
//! cell1_v,cell2_v,cell3_v,cell4_v` (to `cell8_v` or `cell16_v` for a 25.6 or 51.2 V battery)
//! and optionally `remote_on` (1/0, absent = on); rows at strictly increasing times; values hold
//! until the next row. The battery reports every second through the bus codec and the core
//! ticks at its own rate in between. Output columns: `t_s,soc_pct,atd,atc,prealarm,alarms,
//! warnings` (+ `adv_hex` with `--adv-key`, then `soc_sigma_pct` with `--uncertainty`), one row
//! per input row, taken after that row's time has been processed. Rows are read, checked and
//! replayed one at a time; bad input writes nothing (docs/simulator.md).

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
use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

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
    /// Cell voltages, V: 4, 8 or 16 (a 12.8, 25.6 or 51.2 V battery).
    pub cells_v: heapless::Vec<f64, MAX_CELLS>,
    /// Remote switch on.
    pub remote_on: bool,
}

/// Most cells in the battery: a 51.2 V one.
pub const MAX_CELLS: usize = 16;

/// The slot of `cell1_v`; `cellK_v` is at `CELL1 + K - 1`.
const CELL1: usize = 3;
/// The slot of `remote_on`.
const REMOTE: usize = CELL1 + MAX_CELLS;

/// The slot of a column name: `REQUIRED`'s, then `cell5_v`..`cell16_v`, then `remote_on`.
fn slot_of(name: &str) -> Option<usize> {
    if name == "remote_on" {
        return Some(REMOTE);
    }
    REQUIRED.iter().position(|r| *r == name).or_else(|| {
        (5..=MAX_CELLS)
            .find(|k| name == format!("cell{k}_v"))
            .map(|k| CELL1 + k - 1)
    })
}

/// The column name of a slot.
fn name_of(slot: usize) -> String {
    match slot {
        REMOTE => "remote_on".to_string(),
        s if s >= CELL1 => format!("cell{}_v", s - CELL1 + 1),
        s => REQUIRED.get(s).map_or_else(String::new, |n| n.to_string()),
    }
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

/// Checks the whole input read from `source`; `path` is only used in errors.
pub fn parse_input(path: &Path, source: impl std::io::Read) -> Result<Vec<InputRow>, InputError> {
    Rows::new(path, source)?.collect()
}

/// Where the line breaks the CSV reader has read lie, so that a row is named by its line as an
/// editor counts it (the reader's own count skips blank lines and CRLF ends). A break is a
/// `\r\n`, a `\n` or a `\r`. Only the breaks in the reader's read-ahead are kept.
#[derive(Default)]
struct LineBreaks {
    /// Bytes read so far.
    read: u64,
    /// Start and end offsets of the breaks not yet passed.
    ahead: std::collections::VecDeque<(u64, u64)>,
    /// Breaks before the last row asked about.
    passed: usize,
    last_cr: bool,
}

impl LineBreaks {
    /// The 1-based line of a record the reader places at `offset` (offsets asked about never go
    /// back). The reader places a record after blank lines, and after a CRLF's `\r`, at the
    /// start of the blank lines or on the `\n`: the breaks there are skipped.
    fn line_of(&mut self, offset: u64) -> usize {
        let mut at = offset;
        while let Some(&(start, end)) = self.ahead.front() {
            if end > at && start > at {
                break;
            }
            at = at.max(end);
            self.ahead.pop_front();
            self.passed += 1;
        }
        self.passed + 1
    }
}

/// The input as read, noting its line breaks.
struct Counted<R> {
    inner: R,
    breaks: Rc<RefCell<LineBreaks>>,
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut breaks = self.breaks.borrow_mut();
        for (i, &b) in buf.get(..n).unwrap_or(&[]).iter().enumerate() {
            let at = breaks.read + i as u64;
            if b == b'\n' && breaks.last_cr {
                // The `\n` of a `\r\n`: the same break, one byte longer.
                if let Some(last) = breaks.ahead.back_mut() {
                    last.1 = at + 1;
                }
            } else if b == b'\r' || b == b'\n' {
                breaks.ahead.push_back((at, at + 1));
            }
            breaks.last_cr = b == b'\r';
        }
        breaks.read += n as u64;
        Ok(n)
    }
}

/// The checked rows of an input, read one at a time (a long file is never held whole).
pub struct Rows<R: std::io::Read> {
    path: PathBuf,
    reader: csv::Reader<Counted<R>>,
    breaks: Rc<RefCell<LineBreaks>>,
    names: Vec<String>,
    columns: [usize; REMOTE + 1],
    /// Cells in the battery (4, 8 or 16).
    cells: usize,
    record: csv::ByteRecord,
    previous: Option<(u64, String)>,
    failed: bool,
}

impl<R: std::io::Read> Rows<R> {
    /// Reads and checks the header; `path` is only used in errors.
    pub fn new(path: &Path, source: R) -> Result<Self, InputError> {
        let breaks = Rc::new(RefCell::new(LineBreaks::default()));
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .flexible(true)
            .from_reader(Counted {
                inner: source,
                breaks: Rc::clone(&breaks),
            });
        let headers = reader.headers().map_err(|e| InputError {
            line: Some(1),
            ..InputError::file(path, format!("bad header: {e}"))
        })?;
        let header_line = match headers.position() {
            Some(p) => breaks.borrow_mut().line_of(p.byte()),
            None => 1,
        };
        let names: Vec<String> = headers.iter().map(str::to_string).collect();
        if names.is_empty() {
            return Err(InputError {
                line: Some(1),
                ..InputError::file(path, "no header: the file is empty")
            });
        }
        let mut columns = [usize::MAX; REMOTE + 1];
        for (i, name) in names.iter().enumerate() {
            let slot = slot_of(name);
            match slot {
                Some(s) if columns[s] == usize::MAX => columns[s] = i,
                Some(_) => {
                    return Err(InputError::at(
                        path,
                        header_line,
                        name,
                        "column appears twice",
                    ))
                }
                None if name.is_empty() => {
                    return Err(InputError::at(
                        path,
                        header_line,
                        name,
                        "empty column name (a trailing comma?)",
                    ))
                }
                None => {
                    return Err(InputError::at(
                        path,
                        header_line,
                        name,
                        format!(
                            "unknown column; expected {} (to cell8_v or cell16_v for a 25.6 or \
                             51.2 V battery) and optionally remote_on",
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
            return Err(InputError::at(
                path,
                header_line,
                missing.1,
                "missing column",
            ));
        }
        // A 12.8, 25.6 or 51.2 V battery: cell1_v..cell4_v, ..cell8_v or ..cell16_v.
        let highest = (1..=MAX_CELLS)
            .rev()
            .find(|k| columns[CELL1 + k - 1] != usize::MAX)
            .unwrap_or(4);
        let cells = [4, 8, 16]
            .into_iter()
            .find(|&n| n >= highest)
            .unwrap_or(MAX_CELLS);
        if let Some(k) = (1..=cells).find(|k| columns[CELL1 + k - 1] == usize::MAX) {
            let message = if k > highest {
                format!(
                    "missing column ({highest} cell columns; a battery has 4 (12.8 V), 8 (25.6 V) \
                     or 16 (51.2 V) cells)"
                )
            } else {
                "missing column".to_string()
            };
            return Err(InputError::at(
                path,
                header_line,
                &name_of(CELL1 + k - 1),
                message,
            ));
        }
        Ok(Rows {
            path: path.to_path_buf(),
            reader,
            breaks,
            names,
            columns,
            cells,
            record: csv::ByteRecord::new(),
            previous: None,
            failed: false,
        })
    }

    /// The next record checked, or `None` at the end.
    fn next_row(&mut self) -> Option<Result<InputRow, InputError>> {
        let path = self.path.as_path();
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => return None,
            Ok(true) => {}
            Err(e) => {
                let line = match e.position() {
                    Some(p) => self.breaks.borrow_mut().line_of(p.byte()),
                    None => self.breaks.borrow().passed + 1,
                };
                return Some(Err(InputError {
                    line: Some(line),
                    ..InputError::file(path, format!("bad row: {e}"))
                }));
            }
        }
        let line = match self.record.position() {
            Some(p) => self.breaks.borrow_mut().line_of(p.byte()),
            None => self.breaks.borrow().passed + 1,
        };
        Some(self.check(line))
    }

    fn check(&mut self, line: usize) -> Result<InputRow, InputError> {
        let path = self.path.as_path();
        let record = &self.record;
        let names = &self.names;
        let columns = &self.columns;
        let values = |n: usize| {
            if n == 1 {
                "1 value".to_string()
            } else {
                format!("{n} values")
            }
        };
        if record.len() > names.len() {
            let extra = String::from_utf8_lossy(record.get(names.len()).unwrap_or(&[]));
            return Err(InputError {
                line: Some(line),
                ..InputError::file(
                    path,
                    format!(
                        "{} for the header's {} columns: {extra:?} after `{}`",
                        values(record.len()),
                        names.len(),
                        names.last().map_or("", String::as_str),
                    ),
                )
            });
        }
        if record.len() < names.len() {
            let name = names.get(record.len()).map_or("", String::as_str);
            return Err(InputError::at(
                path,
                line,
                name,
                format!(
                    "missing ({} for the header's {} columns)",
                    values(record.len()),
                    names.len()
                ),
            ));
        }
        if let Some(i) = record.iter().position(|b| std::str::from_utf8(b).is_err()) {
            let name = names.get(i).map_or("", String::as_str);
            return Err(InputError::at(path, line, name, "not UTF-8 text"));
        }
        // Every cell is present and UTF-8 (checked above).
        let text = |slot: usize| -> &str {
            record
                .get(columns[slot])
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or("")
        };
        let number = |slot: usize, name: &str| -> Result<f64, InputError> {
            let t = text(slot);
            match t.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                Ok(_) => Err(InputError::at(
                    path,
                    line,
                    name,
                    format!("not a finite number: {t:?}"),
                )),
                _ => Err(InputError::at(
                    path,
                    line,
                    name,
                    format!("not a number: {t:?}"),
                )),
            }
        };
        let t_text = text(0);
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
        if let Some((prev_ms, prev_text)) = &self.previous {
            if t_ms.saturating_sub(*prev_ms) > MAX_GAP_MS {
                return Err(InputError::at(
                    path,
                    line,
                    "t_s",
                    format!(
                        "time {t_text} is more than {} s after the previous row's {prev_text}",
                        MAX_GAP_MS / 1000,
                    ),
                ));
            }
            if t_ms <= *prev_ms {
                // Times are taken to the millisecond: a later time within the same one is
                // named as such, not as "not after".
                let later = prev_text.parse::<f64>().is_ok_and(|p| t_s > p);
                let relation = if later {
                    "is in the same millisecond as"
                } else {
                    "is not after"
                };
                return Err(InputError::at(
                    path,
                    line,
                    "t_s",
                    format!("time {t_text} {relation} the previous row's {prev_text}"),
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
        let mut cells_v = heapless::Vec::new();
        for slot in CELL1..CELL1 + self.cells {
            let name = name_of(slot);
            let cell = number(slot, &name)?;
            if !(0.0..=6.0).contains(&cell) {
                return Err(InputError::at(
                    path,
                    line,
                    &name,
                    format!("{cell} outside 0–6 V"),
                ));
            }
            let _ = cells_v.push(cell);
        }
        let remote_on = if columns[REMOTE] == usize::MAX {
            true
        } else {
            match text(REMOTE) {
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
        let t_text = t_text.to_string();
        self.previous = Some((t_ms, t_text.clone()));
        Ok(InputRow {
            t_text,
            t_ms,
            current_a,
            temp_c,
            cells_v,
            remote_on,
        })
    }
}

impl<R: std::io::Read> Iterator for Rows<R> {
    type Item = Result<InputRow, InputError>;

    /// The next checked row; after an error, nothing more.
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let next = self.next_row();
        self.failed = matches!(next, Some(Err(_)));
        next
    }
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

/// The measurements of a row, held until the next row.
#[derive(Clone, Copy, Debug)]
struct Held {
    current_a: f64,
    temp_c: f64,
    cells_v: [f64; MAX_CELLS],
    cells: usize,
    remote_on: bool,
}

impl From<&InputRow> for Held {
    fn from(row: &InputRow) -> Self {
        Held {
            current_a: row.current_a,
            temp_c: row.temp_c,
            cells_v: {
                let mut cells = [0.0; MAX_CELLS];
                for (c, v) in cells.iter_mut().zip(&row.cells_v) {
                    *c = *v;
                }
                cells
            },
            cells: row.cells_v.len(),
            remote_on: row.remote_on,
        }
    }
}

fn report(row: &Held, capacity_ah: f64) -> BatteryReport {
    let mut cells_mv = heapless::Vec::new();
    for v in row.cells_v.get(..row.cells).unwrap_or(&[]) {
        let _ = cells_mv.push((v * 1000.0).round() as u16);
    }
    let mut temps_ddegc = heapless::Vec::new();
    let _ = temps_ddegc.push((row.temp_c * 10.0).round() as i16);
    BatteryReport {
        serial: 1,
        model: match row.cells {
            8 => BatteryModel::Lfp25V6,
            16 => BatteryModel::Lfp51V2,
            _ => BatteryModel::Lfp12V8,
        },
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

/// The device's random source (the fixed one of the replay).
type RandomSource = Box<dyn FnMut(&mut [u8]) -> bool>;

/// The core run over checked rows given one at a time (`push`), one output row per row.
pub struct Replayer {
    node: Node<MemStorage>,
    random: RandomSource,
    frame: [u8; MAX_FRAME_LEN],
    capacity_ah: f64,
    adv: bool,
    /// The next tick and report, once the first row has come.
    next_tick: u64,
    next_report: u64,
    decisions: Decisions,
    held: Option<Held>,
}

impl Replayer {
    /// A BMS with `config`, starting at `initial_soc` percent (unknown when `None`).
    pub fn new(mut config: Config, initial_soc: Option<f64>, capacity_ah: f64, adv: bool) -> Self {
        config.restored_soc = initial_soc.map(|pct| crate::engine::restored_soc(pct, capacity_ah));
        // Records go to a store in memory, as on a device whose flash works (the advertiser
        // needs its nonce reservation written before it advertises). The key comes as the
        // device's own.
        let mut random = Box::new(crate::engine::fixed_random(config.device_key, 0));
        let node = Node::open_with(MemStorage::new(), &mut random, |restored| {
            restored.settings = config.settings;
            restored.estimator = config.estimator;
            restored.restored_soc = config.restored_soc;
        });
        Replayer {
            node,
            random,
            frame: [0u8; MAX_FRAME_LEN],
            capacity_ah,
            adv,
            next_tick: 0,
            next_report: 0,
            decisions: Decisions::default(),
            held: None,
        }
    }

    /// Runs everything due up to `row`'s time (with the values held from earlier rows before
    /// it, the row's own from its time) and gives the decisions then.
    pub fn push(&mut self, row: &InputRow) -> OutputRow {
        let held = match self.held {
            Some(held) => held,
            None => {
                self.next_tick = row.t_ms;
                self.next_report = row.t_ms;
                Held::from(row)
            }
        };
        let mut held = held;
        loop {
            let t = self.next_tick.min(self.next_report);
            if t > row.t_ms {
                break;
            }
            if t == row.t_ms {
                held = Held::from(row);
            }
            if self.next_report == t {
                if let Ok(len) = encode_report(&report(&held, self.capacity_ah), &mut self.frame) {
                    let _ = self.node.feed_bus(t, &self.frame[..len]);
                }
                self.next_report = t + REPORT_PERIOD_MS;
            }
            if self.next_tick == t {
                let supply_mv =
                    (held.cells_v.iter().take(held.cells).sum::<f64>() * 1000.0).round() as u32;
                let inputs = Inputs {
                    remote_h_mv: 0,
                    remote_l_mv: if held.remote_on { 0 } else { supply_mv },
                    supply_mv,
                    app_connected: false,
                };
                // BLE-3: a readout key that used up its nonces is renewed, as on the device.
                self.decisions = self.node.step_with_random(t, &inputs, &mut self.random);
                let tick = u64::from(self.decisions.tick_ms).max(1);
                self.next_tick = self
                    .node
                    .next_deadline_ms()
                    .unwrap_or(t + tick)
                    .clamp(t + 1, t + tick);
            }
        }
        self.held = Some(Held::from(row));
        let decisions = &self.decisions;
        OutputRow {
            t_s: row.t_text.clone(),
            soc_pct: crate::engine::core_soc_pct(self.node.bms())
                .map(|v| format!("{v:.1}"))
                .unwrap_or_default(),
            atd: u8::from(decisions.atd),
            atc: u8::from(decisions.atc),
            prealarm: u8::from(decisions.prealarm),
            alarms: codes_joined(decisions.codes, true),
            warnings: codes_joined(decisions.codes, false),
            adv_hex: self.adv.then(|| advertisement_hex(&mut self.node)),
            soc_sigma_pct: Some(
                self.node
                    .bms()
                    .monitor_status()
                    .soc_uncertainty_permille
                    .map(|p| format!("{:.1}", f64::from(p) / 10.0))
                    .unwrap_or_default(),
            ),
        }
    }
}

/// Runs the core over checked rows; one output row per input row.
pub fn run_rows(
    rows: &[InputRow],
    config: Config,
    initial_soc: Option<f64>,
    capacity_ah: f64,
    adv: bool,
) -> Vec<OutputRow> {
    let mut replayer = Replayer::new(config, initial_soc, capacity_ah, adv);
    rows.iter().map(|row| replayer.push(row)).collect()
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

/// Where the output goes once every row has been replayed.
enum Destination {
    /// `--out -`.
    Stdout,
    /// A path that is not a plain file (a symbolic link, `/dev/null`, a named pipe): written
    /// into, never replaced.
    Into,
    /// A plain file or a new one: the partial file is renamed to it.
    Replace,
}

/// The output being written: a hidden file beside the output (or, for standard output and
/// outputs that are not plain files, in the temporary directory) that becomes the output only
/// once every row has been replayed, so that bad input found late changes nothing. Removed when
/// dropped.
struct Partial {
    path: PathBuf,
    destination: Destination,
    writer: Option<csv::Writer<std::io::BufWriter<std::fs::File>>>,
}

impl Partial {
    fn create(out: &Path) -> Result<Self, ReplayError> {
        let pid = std::process::id();
        let destination = if out.as_os_str() == "-" {
            Destination::Stdout
        } else {
            match std::fs::symlink_metadata(out) {
                Ok(m) if !m.file_type().is_file() => Destination::Into,
                _ => Destination::Replace,
            }
        };
        if std::fs::metadata(out).is_ok_and(|m| m.is_dir()) {
            return Err(ReplayError::Output(format!(
                "{}: is a directory",
                out.display()
            )));
        }
        let path = match destination {
            Destination::Stdout | Destination::Into => {
                std::env::temp_dir().join(format!("bms-sim-replay.{pid}.partial"))
            }
            Destination::Replace => {
                let name = out.file_name().map_or_else(
                    || std::ffi::OsString::from("out"),
                    std::ffi::OsStr::to_os_string,
                );
                let mut hidden = std::ffi::OsString::from(".");
                hidden.push(name);
                hidden.push(format!(".{pid}.partial"));
                out.with_file_name(hidden)
            }
        };
        let file = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| ReplayError::Output(format!("{}: {e}", out.display())))?;
        let writer = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(std::io::BufWriter::new(file));
        Ok(Partial {
            path,
            destination,
            writer: Some(writer),
        })
    }

    /// The partial file becomes the output.
    fn finish(&self, out: &Path) -> Result<(), ReplayError> {
        let failed = |e: std::io::Error| ReplayError::Output(format!("{}: {e}", out.display()));
        let copy = |sink: &mut dyn std::io::Write| {
            let mut spooled = std::fs::File::open(&self.path)?;
            std::io::copy(&mut spooled, sink)?;
            sink.flush()
        };
        match self.destination {
            Destination::Stdout => copy(&mut std::io::stdout().lock()).map_err(|e| {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    ReplayError::BrokenPipe
                } else {
                    ReplayError::Output(format!("standard output: {e}"))
                }
            }),
            Destination::Into => {
                let mut file = std::fs::File::create(out).map_err(failed)?;
                copy(&mut file).map_err(failed)
            }
            Destination::Replace => std::fs::rename(&self.path, out).map_err(failed),
        }
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        drop(self.writer.take());
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The whole command: check the settings, then read, check and replay the rows one at a time
/// into a partial output that becomes the output at the end (nothing is written on an error).
pub fn replay(args: &ReplayArgs) -> Result<(), ReplayError> {
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
    let file = std::fs::File::open(&args.input).map_err(|e| {
        ReplayError::Input(InputError::file(&args.input, format!("cannot read: {e}")))
    })?;
    let mut rows =
        Rows::new(&args.input, std::io::BufReader::new(file)).map_err(ReplayError::Input)?;
    let mut partial = Partial::create(&args.out)?;
    let out_error = |e: csv::Error| ReplayError::Output(format!("{}: {e}", args.out.display()));
    let mut writer = partial
        .writer
        .take()
        .ok_or_else(|| ReplayError::Output("no output".into()))?;
    write_header(&mut writer, args).map_err(out_error)?;
    let mut replayer = Replayer::new(
        config,
        args.initial_soc,
        args.capacity_ah,
        args.adv_key.is_some(),
    );
    for row in &mut rows {
        let row = row.map_err(ReplayError::Input)?;
        let mut out = replayer.push(&row);
        if !args.uncertainty {
            out.soc_sigma_pct = None;
        }
        writer.serialize(out).map_err(out_error)?;
    }
    let file = writer
        .into_inner()
        .map_err(|e| ReplayError::Output(format!("{}: {}", args.out.display(), e.error())))?
        .into_inner()
        .map_err(|e| ReplayError::Output(format!("{}: {}", args.out.display(), e.error())))?;
    file.sync_all()
        .map_err(|e| ReplayError::Output(format!("{}: {e}", args.out.display())))?;
    drop(file);
    partial.finish(&args.out)
}

/// Writes the header: also when there are no rows, so that a tool reading the output always
/// finds its columns.
fn write_header(
    w: &mut csv::Writer<impl std::io::Write>,
    args: &ReplayArgs,
) -> Result<(), csv::Error> {
    let mut header = vec![
        "t_s", "soc_pct", "atd", "atc", "prealarm", "alarms", "warnings",
    ];
    if args.adv_key.is_some() {
        header.push("adv_hex");
    }
    if args.uncertainty {
        header.push("soc_sigma_pct");
    }
    w.write_record(&header)
}
