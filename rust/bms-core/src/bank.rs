//! The battery bank (BANK): battery reports and the bank voltage in; the batteries, topology
//! (BANK-1), configuration check (BANK-2), aggregates (BANK-3), lost batteries (BANK-4) and
//! topology changes (BANK-5) out.
//!
//! Batteries are kept in a fixed table sorted by serial number, so a battery keeps its number
//! across reboots. A battery is a *member* of the bank from its first valid report until it is
//! lost; members make up the topology. PROT-13: a report with implausible data is refused with
//! a [`ReportError`] and otherwise ignored, like a missing report: the battery keeps its last
//! valid values and becomes lost (BANK-4) when nothing valid follows in time. A battery that
//! has never sent a valid report is not part of a complete set (PROT-1).

use core::fmt;

use heapless::Vec;

use crate::bus::{BatteryFlags, BatteryModel, BatteryReport, MAX_CELLS_PER_BATTERY};
use crate::limits::{
    self, BANK_NOMINAL_MV, BATTERY_JOIN_REPORTS, BATTERY_LOST_MS, CELL_VALID_MV, CURRENT_VALID_C,
    DISCOVERY_MAX_MS, DISCOVERY_MS, DISCOVERY_NEXT_MS, MAX_BATTERIES, SUPPLY_MAX_MV, SUPPLY_MIN_MV,
    TEMP_VALID_DDEGC, TOPOLOGY_SETTLE_MS,
};
use crate::word::Number;

/// Why a battery report was refused. The battery counts as not reporting valid data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportError {
    /// The report carries `got` cell voltages where the model has `expected` cells.
    CellCount {
        /// Cells of the reported model.
        expected: u8,
        /// Cell voltages in the report.
        got: u8,
    },
    /// Cell `cell` (0-based) reports `cell_mv`, outside 500..=4500 mV (PROT-13).
    CellVoltage {
        /// Index of the cell in the battery, 0-based.
        cell: u8,
        /// The reported voltage, mV.
        cell_mv: u16,
    },
    /// The report carries no temperature.
    NoTemperature,
    /// Sensor `sensor` (0-based) reports `temp_ddegc`, outside -40..=100 °C (PROT-13).
    Temperature {
        /// Index of the sensor, 0-based.
        sensor: u8,
        /// The reported temperature, 0.1 °C.
        temp_ddegc: i16,
    },
    /// The report gives a nominal capacity of 0 Ah.
    NoCapacity,
    /// The battery reports `current_ma`, beyond `max_ma` ([`CURRENT_VALID_C`] times its
    /// nominal capacity, PROT-13).
    Current {
        /// The reported current, mA.
        current_ma: i32,
        /// The largest plausible current either way, mA.
        max_ma: u32,
    },
    /// The table already holds [`MAX_BATTERIES`] batteries; this serial was not stored
    /// (BANK-2: too many batteries).
    BankFull {
        /// Serial of the battery that did not fit.
        serial: u32,
    },
    /// PROT-13, BANK-5 **(choice)**: a battery with valid data reports another model (its cell
    /// count); refused like an implausible report until the new model has been reported for
    /// [`TOPOLOGY_SETTLE_MS`], then taken (the bank changes as with a new battery).
    ModelChanged {
        /// Cells of the model in use.
        cells: u8,
        /// Cells of the model reported.
        reported_cells: u8,
    },
    /// BANK-1 **(choice)**: a new serial after discovery joins only after
    /// [`BATTERY_JOIN_REPORTS`] valid reports in a row; this was report `seen` of them (0: the
    /// newcomers waiting fill the table, this one gets a place once one of them has joined or
    /// fallen silent). No fault: the report is kept back, not refused.
    NotYetJoined {
        /// Serial of the newcomer.
        serial: u32,
        /// Valid reports in a row so far.
        seen: u8,
    },
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::CellCount { expected, got } => {
                write!(
                    f,
                    "{} cell voltages for a {}-cell battery",
                    Number::from(*got),
                    Number::from(*expected)
                )
            }
            ReportError::CellVoltage { cell, cell_mv } => {
                write!(
                    f,
                    "cell {} voltage {} mV is implausible",
                    Number::from(*cell),
                    Number::from(*cell_mv)
                )
            }
            ReportError::NoTemperature => f.write_str("no temperature"),
            ReportError::Temperature { sensor, temp_ddegc } => {
                write!(
                    f,
                    "temperature {} of {} d°C is implausible",
                    Number::from(*sensor),
                    Number::from(*temp_ddegc)
                )
            }
            ReportError::NoCapacity => f.write_str("nominal capacity 0"),
            ReportError::Current { current_ma, max_ma } => write!(
                f,
                "current {} mA is implausible: beyond {} mA either way",
                Number::from(*current_ma),
                Number::from(*max_ma)
            ),
            ReportError::ModelChanged {
                cells,
                reported_cells,
            } => write!(
                f,
                "a {}-cell model reported by a {}-cell battery (taken once it holds)",
                Number::from(*reported_cells),
                Number::from(*cells)
            ),
            ReportError::BankFull { serial } => {
                write!(
                    f,
                    "battery {} does not fit: bank table full",
                    Number::from(*serial)
                )
            }
            ReportError::NotYetJoined { serial, seen } => {
                write!(
                    f,
                    "new battery {} not joined yet ({} valid reports in a row)",
                    Number::from(*serial),
                    Number::from(*seen)
                )
            }
        }
    }
}

/// Why the bank breaks the configuration rules of BANK-2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// Batteries of different models are mixed.
    MixedModels,
    /// `batteries` batteries cannot form equal strings of `series` batteries.
    UnequalStrings {
        /// Member batteries.
        batteries: u8,
        /// Batteries in series derived from the bank voltage.
        series: u8,
    },
    /// More batteries than allowed for the model (50, or 25 of 51.2 V).
    TooManyBatteries {
        /// Batteries seen (at least; a battery that did not fit the table counts as one more).
        batteries: u8,
        /// The most allowed.
        max: u8,
    },
    /// The bank's nominal voltage is not 12.8, 25.6 or 51.2 V.
    UnsupportedVoltage {
        /// The derived nominal voltage, mV.
        nominal_mv: u32,
    },
    /// The bank voltage measured by the BMS is outside its 8–70 V operating range, so the
    /// topology cannot be derived.
    SupplyOutOfRange {
        /// The measured supply voltage, mV.
        supply_mv: u32,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::MixedModels => f.write_str("battery models are mixed"),
            ConfigError::UnequalStrings { batteries, series } => {
                write!(
                    f,
                    "{} batteries do not form strings of {}",
                    Number::from(*batteries),
                    Number::from(*series)
                )
            }
            ConfigError::TooManyBatteries { batteries, max } => {
                write!(
                    f,
                    "{} batteries, at most {} allowed",
                    Number::from(*batteries),
                    Number::from(*max)
                )
            }
            ConfigError::UnsupportedVoltage { nominal_mv } => {
                write!(
                    f,
                    "bank voltage {} mV is not 12.8, 25.6 or 51.2 V",
                    Number::from(*nominal_mv)
                )
            }
            ConfigError::SupplyOutOfRange { supply_mv } => {
                write!(
                    f,
                    "supply voltage {} mV outside 8-70 V",
                    Number::from(*supply_mv)
                )
            }
        }
    }
}

/// A value other than the one in use, and since when it has been seen without a break. A
/// battery's model, the batteries in series and the bank capacity change only once another
/// value has held for [`TOPOLOGY_SETTLE_MS`], longer than a report period: one report (a
/// frame garbled past its check, a forged one) or a surge never changes them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pending<T>(Option<(T, u64)>);

impl<T: Copy + PartialEq> Pending<T> {
    /// `value` is seen at `now_ms` instead of the one in use: whether it has now held for
    /// [`TOPOLOGY_SETTLE_MS`] (it is then to be taken, and forgotten here).
    fn held(&mut self, value: T, now_ms: u64) -> bool {
        let since = match self.0 {
            Some((pending, since)) if pending == value => since,
            _ => {
                self.0 = Some((value, now_ms));
                now_ms
            }
        };
        let held = now_ms.saturating_sub(since) >= TOPOLOGY_SETTLE_MS;
        if held {
            self.0 = None;
        }
        held
    }

    /// The value in use is seen again (or taken anew): nothing is pending.
    fn clear(&mut self) {
        self.0 = None;
    }

    /// When the value seen would be taken, if it keeps being seen.
    fn deadline_ms(&self) -> Option<u64> {
        self.0
            .map(|(_, since)| since.saturating_add(TOPOLOGY_SETTLE_MS))
    }
}

/// One battery of the bank, as last reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Battery {
    /// Serial number.
    pub serial: u32,
    /// Battery model.
    pub model: BatteryModel,
    /// Nominal capacity, 0.1 Ah.
    pub capacity_dah: u16,
    /// Firmware version (major in the high byte).
    pub firmware: u16,
    cells_mv: [u16; MAX_CELLS_PER_BATTERY],
    /// Lowest reported temperature, 0.1 °C.
    pub min_temp_ddegc: i16,
    /// Highest reported temperature, 0.1 °C (the battery temperature shown to the user).
    pub max_temp_ddegc: i16,
    /// Current, mA, positive = charging.
    pub current_ma: i32,
    /// The battery's own flags.
    pub flags: BatteryFlags,
    /// Why the latest report was refused; `None` when it was valid.
    pub error: Option<ReportError>,
    /// True when nothing valid came for [`BATTERY_LOST_MS`] (BANK-4).
    pub lost: bool,
    has_valid: bool,
    member: bool,
    /// Another model than `model` this battery reports, and since when (PROT-13, BANK-5).
    model_candidate: Pending<BatteryModel>,
    first_seen_ms: u64,
    last_valid_ms: u64,
}

impl Battery {
    fn new(serial: u32, model: BatteryModel, now_ms: u64) -> Self {
        Battery {
            serial,
            model,
            capacity_dah: 0,
            firmware: 0,
            cells_mv: [0; MAX_CELLS_PER_BATTERY],
            min_temp_ddegc: 0,
            max_temp_ddegc: 0,
            current_ma: 0,
            flags: BatteryFlags::default(),
            error: None,
            lost: false,
            has_valid: false,
            member: false,
            model_candidate: Pending(None),
            first_seen_ms: now_ms,
            last_valid_ms: now_ms,
        }
    }

    /// PROT-13, BANK-5: whether a valid report of `model` at `now_ms` may be taken. A battery
    /// does not change its cell count: one report of another model (a garbled frame that
    /// passed its check, or a forged one) made it no member for a moment, the layout was
    /// derived anew from it (a 12.8 V battery reporting 16 cells: no battery in series) and
    /// ATD and ATC went free-floating until its next report. Another model is taken only once
    /// it has been reported for [`TOPOLOGY_SETTLE_MS`]; its reports until then are refused.
    fn model_change(&mut self, now_ms: u64, model: BatteryModel) -> Result<(), ReportError> {
        if !self.has_valid || model == self.model {
            self.model_candidate.clear();
            return Ok(());
        }
        if self.model_candidate.held(model, now_ms) {
            return Ok(());
        }
        Err(ReportError::ModelChanged {
            cells: self.model.cells() as u8,
            reported_cells: model.cells() as u8,
        })
    }

    /// The cell voltages of the last valid report, mV, first cell first (empty before any).
    pub fn cells_mv(&self) -> &[u16] {
        let count = if self.has_valid {
            self.model.cells()
        } else {
            0
        };
        self.cells_mv.get(..count).unwrap_or(&[])
    }

    /// The battery voltage (sum of its cells), mV.
    pub fn voltage_mv(&self) -> u32 {
        self.cells_mv().iter().map(|&mv| u32::from(mv)).sum()
    }

    /// True when the battery has valid, current data: reported validly at least once and not
    /// lost. A refused latest report does not change it (PROT-13: ignored like a missing one).
    pub fn is_valid(&self) -> bool {
        self.has_valid && !self.lost
    }

    /// True while the battery is part of the bank: from its first valid report until lost.
    pub fn is_member(&self) -> bool {
        self.has_valid && !self.lost
    }

    /// When the last valid report arrived (or the battery was first seen), ms.
    pub fn last_valid_ms(&self) -> u64 {
        self.last_valid_ms
    }
}

/// BANK-1: the bank layout discovered from the member batteries and the bank voltage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Member batteries.
    pub batteries: u8,
    /// Cells in total.
    pub cells_total: u16,
    /// Batteries in series (0 when the bank voltage does not allow deriving it).
    pub series: u8,
    /// Batteries in parallel (strings); 0 when `series` is 0.
    pub parallel: u8,
    /// The model of the first member battery.
    pub model: BatteryModel,
    /// Bank nominal voltage, mV (`series` × battery nominal voltage).
    pub nominal_mv: u32,
    /// Bank nominal capacity, 0.1 Ah (sum of the members' capacities / `series`).
    pub capacity_dah: u32,
}

impl Topology {
    /// Cells in series in the bank (`series` × cells per battery), for per-cell settings.
    pub fn cells_in_series(&self) -> u16 {
        u16::from(self.series).saturating_mul(self.model.cells() as u16)
    }
}

/// Where a cell sits: battery number (index in [`Bank::batteries`]) and cell index, 0-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CellRef {
    /// Battery number, 0-based.
    pub battery: u8,
    /// Cell index in the battery, 0-based.
    pub cell: u8,
}

/// BANK-3: the bank values over every battery with valid data. On a tie, the place named is
/// the first: the lowest battery number, then the lowest cell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Aggregates {
    /// Lowest cell voltage, mV.
    pub min_cell_mv: u16,
    /// Where the lowest cell is.
    pub min_cell: CellRef,
    /// Highest cell voltage, mV.
    pub max_cell_mv: u16,
    /// Where the highest cell is.
    pub max_cell: CellRef,
    /// Lowest cell temperature, 0.1 °C.
    pub min_temp_ddegc: i16,
    /// Battery number with the lowest temperature.
    pub min_temp_battery: u8,
    /// Highest cell temperature, 0.1 °C.
    pub max_temp_ddegc: i16,
    /// Battery number with the highest temperature.
    pub max_temp_battery: u8,
    /// Bank voltage (the BMS supply voltage), mV.
    pub voltage_mv: u32,
    /// Bank current (sum of battery currents / batteries in series), mA, positive = charging.
    pub current_ma: i32,
    /// Some battery does not allow charging (PROT-7).
    pub charge_blocked: bool,
    /// Some battery does not allow discharging (PROT-7).
    pub discharge_blocked: bool,
    /// Some battery is balancing its cells (BAL-3).
    pub balancing: bool,
}

impl Aggregates {
    /// The cell spread (max − min cell voltage), mV.
    pub fn cell_spread_mv(&self) -> u16 {
        self.max_cell_mv.saturating_sub(self.min_cell_mv)
    }
}

/// The state of the bank data, as the protection needs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BankHealth {
    /// True when the data set is complete and valid: batteries discovered (the discovery
    /// window passed, the layout judged once), none lost or invalid, topology derived, no configuration error.
    pub complete: bool,
    /// Some battery is lost (BANK-4).
    pub lost: bool,
    /// Some battery's latest report was refused (PROT-13: by itself it keeps a set complete).
    pub invalid: bool,
    /// The bank breaks the configuration rules (BANK-2).
    pub config_error: bool,
    /// BANK-1: batteries have begun to report and the discovery window is still open (more may
    /// appear): data is coming, the first set is not judged yet.
    pub discovering: bool,
}

/// The batteries seen on the bus and what they last reported (fixed size, no heap).
#[derive(Clone, Debug, Default)]
pub struct Bank {
    batteries: Vec<Battery, MAX_BATTERIES>,
    first_report_ms: Option<u64>,
    /// BANK-1: when the latest battery was found during discovery (the window runs on
    /// [`DISCOVERY_NEXT_MS`] after it, see [`Bank::discovery_end_ms`]).
    last_found_ms: Option<u64>,
    /// Since when the set of member batteries has been unchanged (first report, then each
    /// topology change); the configuration is judged [`TOPOLOGY_SETTLE_MS`] after it.
    settle_from_ms: Option<u64>,
    /// The configuration has been judged at least once.
    judged: bool,
    overflow_ms: Option<u64>,
    now_ms: u64,
    supply_mv: u32,
    topology: Option<Topology>,
    /// A count of batteries in series other than the one in use, and since when it has been
    /// derived without a break (members unchanged); see [`Bank::steady_series`].
    series_candidate: Pending<u8>,
    /// A bank capacity other than the one in use, and since when the members have reported it
    /// without a break (members and series unchanged); see [`Bank::steady_capacity`].
    capacity_candidate: Pending<u32>,
    config_error: Option<ConfigError>,
    aggregates: Option<Aggregates>,
    /// New serials after discovery, waiting to join: serial, valid reports in a row, last one.
    newcomers: Vec<(u32, u8, u64), NEWCOMERS>,
    /// BANK-5: batteries added (joined after discovery) or removed (forgotten) so far,
    /// wrapping; see [`Bank::additions_and_removals`].
    additions_and_removals: u32,
}

/// Newcomers tracked at once; a serial beyond these waits until one has joined or has been
/// silent for the lost time (a ghost's entry).
const NEWCOMERS: usize = 4;

impl Bank {
    /// An empty bank: no battery seen yet.
    pub const fn new() -> Self {
        Bank {
            batteries: Vec::new(),
            first_report_ms: None,
            last_found_ms: None,
            settle_from_ms: None,
            judged: false,
            overflow_ms: None,
            now_ms: 0,
            supply_mv: 0,
            topology: None,
            series_candidate: Pending(None),
            capacity_candidate: Pending(None),
            config_error: None,
            aggregates: None,
            newcomers: Vec::new(),
            additions_and_removals: 0,
        }
    }

    /// Takes one battery report received at `now_ms`. A refused report returns why and is
    /// remembered in [`Battery::error`] until the next valid one; otherwise it is ignored like
    /// a missing report (PROT-13): the values of the last valid report stay in use until the
    /// battery is lost (BANK-4). A new battery whose first report is refused is stored but has
    /// no valid data, so the set is not complete. Call [`Bank::update`] afterwards (the next
    /// control step does).
    pub fn handle_report(
        &mut self,
        now_ms: u64,
        report: &BatteryReport,
    ) -> Result<(), ReportError> {
        let now_ms = now_ms.max(self.now_ms);
        self.now_ms = now_ms;
        self.first_report_ms.get_or_insert(now_ms);
        let checked = check(report);
        let index = match self
            .batteries
            .binary_search_by_key(&report.serial, |b| b.serial)
        {
            Ok(index) => index,
            Err(index) => {
                let discovering = self.discovering(now_ms);
                let checked = checked.and_then(|()| check_current(report, report.capacity_dah));
                self.admit(now_ms, report.serial, checked)?;
                if discovering {
                    self.last_found_ms = Some(now_ms);
                }
                let battery = Battery::new(report.serial, report.model, now_ms);
                if self.batteries.push(battery).is_err() {
                    self.overflow_ms = Some(now_ms);
                    return Err(ReportError::BankFull {
                        serial: report.serial,
                    });
                }
                // Kept sorted by serial for the binary search.
                if let Some(tail) = self.batteries.get_mut(index..) {
                    tail.rotate_right(1);
                }
                index
            }
        };
        let Some(battery) = self.batteries.get_mut(index) else {
            return Err(ReportError::BankFull {
                serial: report.serial,
            });
        };
        let checked = checked
            .and_then(|()| {
                // The capacity in use bounds the current too: a report cannot raise it.
                let known_dah = if battery.has_valid {
                    battery.capacity_dah
                } else {
                    report.capacity_dah
                };
                check_current(report, known_dah.min(report.capacity_dah))
            })
            .and_then(|()| battery.model_change(now_ms, report.model));
        match checked {
            Ok(()) => {
                if battery.has_valid && battery.model != report.model {
                    // A changed model changes the bank like a new battery does (BANK-5).
                    battery.member = false;
                }
                battery.model = report.model;
                battery.capacity_dah = report.capacity_dah;
                battery.firmware = report.firmware;
                for (slot, &mv) in battery.cells_mv.iter_mut().zip(report.cells_mv.iter()) {
                    *slot = mv;
                }
                let temps = report.temps_ddegc.iter().copied();
                battery.min_temp_ddegc = temps.clone().min().unwrap_or(0);
                battery.max_temp_ddegc = temps.max().unwrap_or(0);
                battery.current_ma = report.current_ma;
                battery.flags = report.flags;
                battery.error = None;
                battery.lost = false;
                battery.has_valid = true;
                battery.last_valid_ms = now_ms;
                Ok(())
            }
            Err(error) => {
                battery.error = Some(error);
                Err(error)
            }
        }
    }

    /// BANK-1 **(choice)**: whether a report from the unknown `serial` may create its battery.
    /// During discovery (until [`DISCOVERY_MS`] after the first report, or
    /// [`DISCOVERY_NEXT_MS`] after the latest battery found since: [`Bank::discovery_end_ms`]) every battery that speaks is part of
    /// the bank, a broken one too (it keeps the set incomplete, PROT-1).
    /// Afterwards a refused report from an unknown serial creates nothing, and a valid one
    /// counts towards [`BATTERY_JOIN_REPORTS`] in a row (a gap of [`BATTERY_LOST_MS`] or a
    /// refused report starts over): one garbled frame never adds a battery that is then lost.
    fn admit(
        &mut self,
        now_ms: u64,
        serial: u32,
        checked: Result<(), ReportError>,
    ) -> Result<(), ReportError> {
        if self.discovering(now_ms) {
            return Ok(());
        }
        let slot = self.newcomers.iter().position(|n| n.0 == serial);
        if let Err(error) = checked {
            if let Some(i) = slot {
                self.newcomers.remove(i);
            }
            return Err(error);
        }
        let seen = match slot.and_then(|i| self.newcomers.get_mut(i)) {
            Some(entry) if now_ms.saturating_sub(entry.2) < BATTERY_LOST_MS => {
                entry.1 = entry.1.saturating_add(1);
                entry.2 = now_ms;
                entry.1
            }
            Some(entry) => {
                *entry = (serial, 1, now_ms);
                1
            }
            None => {
                if self.newcomers.is_full() {
                    // Only an entry silent for the lost time makes room (it would start over
                    // anyway): newcomers still reporting keep their place, so five batteries
                    // added at once do not push each other out for ever; the one kept back
                    // gets a place once the others joined (a ghost's place frees in 5 s).
                    let stalest = self
                        .newcomers
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, n)| n.2)
                        .filter(|(_, n)| now_ms.saturating_sub(n.2) >= BATTERY_LOST_MS)
                        .map(|(i, _)| i);
                    match stalest {
                        Some(i) => {
                            self.newcomers.remove(i);
                        }
                        None => return Err(ReportError::NotYetJoined { serial, seen: 0 }),
                    }
                }
                let _ = self.newcomers.push((serial, 1, now_ms));
                1
            }
        };
        if seen < BATTERY_JOIN_REPORTS {
            return Err(ReportError::NotYetJoined { serial, seen });
        }
        self.newcomers.retain(|n| n.0 != serial);
        self.additions_and_removals = self.additions_and_removals.wrapping_add(1);
        log::info!("new battery {} joins", Number::from(serial));
        Ok(())
    }

    /// Re-derives everything at `now_ms` with the bank voltage `supply_mv` measured by the BMS:
    /// lost batteries, topology, configuration check and aggregates. Call once per control step.
    pub fn update(&mut self, now_ms: u64, supply_mv: u32) {
        let now_ms = now_ms.max(self.now_ms);
        self.now_ms = now_ms;
        self.supply_mv = supply_mv;
        let mut changed = false;
        for battery in self.batteries.iter_mut() {
            if now_ms.saturating_sub(battery.last_valid_ms) >= BATTERY_LOST_MS && !battery.lost {
                battery.lost = true;
                log::warn!("battery {} lost", Number::from(battery.serial));
            }
            let member = battery.is_member();
            if member != battery.member {
                battery.member = member;
                changed = true;
            }
        }
        if self
            .overflow_ms
            .is_some_and(|t| now_ms.saturating_sub(t) >= BATTERY_LOST_MS)
        {
            self.overflow_ms = None;
        }
        let series = self.steady_series(now_ms, changed);
        let topology = self.derive_topology(series);
        self.topology = self.steady_capacity(now_ms, changed, topology);
        if changed || self.settle_from_ms.is_none() {
            self.settle_from_ms = self
                .first_report_ms
                .map(|first| if changed { now_ms } else { first });
        }
        // BANK-1/BANK-2: a layout still being discovered (batteries reporting one after the
        // other) is not judged; the previous judgement holds until the new one settles.
        // BANK-4: nor is the bank left while a battery is lost: the members that still report
        // are not the bank (one battery of a 24 V string makes no whole string), the loss has
        // its own alarm, and the layout is judged again once the battery is back or forgotten.
        let any_lost = self.batteries.iter().any(|b| b.lost);
        if !any_lost
            && self
                .settle_from_ms
                .is_some_and(|t| now_ms.saturating_sub(t) >= TOPOLOGY_SETTLE_MS)
        {
            self.config_error = self.check_config();
            self.judged = true;
        }
        self.aggregates = self.derive_aggregates();
        if changed {
            match self.topology {
                Some(t) => log::info!(
                    "bank topology: {} batteries, {} in series, {} in parallel",
                    Number::from(t.batteries),
                    Number::from(t.series),
                    Number::from(t.parallel)
                ),
                None => log::info!("bank topology: no battery"),
            }
        }
    }

    /// Removes every lost battery (user action, after a battery was taken out on purpose),
    /// then re-derives the bank. Returns how many were removed.
    pub fn forget_lost(&mut self, now_ms: u64) -> usize {
        let before = self.batteries.len();
        self.batteries.retain(|b| !b.lost);
        let removed = before.saturating_sub(self.batteries.len());
        if removed > 0 {
            self.additions_and_removals = self.additions_and_removals.wrapping_add(1);
        }
        let supply_mv = self.supply_mv;
        self.update(now_ms, supply_mv);
        removed
    }

    /// Every battery seen, sorted by serial number; the position is the battery number.
    pub fn batteries(&self) -> &[Battery] {
        &self.batteries
    }

    /// Battery number `number` (0-based), if there is one.
    pub fn battery(&self, number: usize) -> Option<&Battery> {
        self.batteries.get(number)
    }

    /// BANK-5, BAL-2: how many times a battery was added to the bank (a new serial joined after
    /// discovery) or removed from it (lost batteries forgotten), wrapping. A change tells that
    /// the bank is not the one the balancer judged, even when its capacity is the same (a
    /// battery added in series, or swapped for one of the same capacity). Batteries found at
    /// discovery, and a lost battery reporting again, are no addition.
    pub fn additions_and_removals(&self) -> u32 {
        self.additions_and_removals
    }

    /// BANK-1: the discovered topology, `None` while no battery is a member.
    pub fn topology(&self) -> Option<Topology> {
        self.topology
    }

    /// BANK-2: why the bank configuration is refused, `None` when it is fine or not judged yet
    /// (the layout is judged [`TOPOLOGY_SETTLE_MS`] after the first report and after each
    /// topology change; the previous judgement holds meanwhile).
    pub fn config_error(&self) -> Option<ConfigError> {
        self.config_error
    }

    /// BANK-3: the bank values over the batteries with valid data, `None` while there are none.
    pub fn aggregates(&self) -> Option<Aggregates> {
        self.aggregates
    }

    /// The state of the data for the protection (PROT-1, BANK-2, BANK-4).
    pub fn health(&self) -> BankHealth {
        let lost = self.batteries.iter().any(|b| b.lost);
        let invalid = self.batteries.iter().any(|b| b.error.is_some());
        let config_error = self.config_error.is_some();
        let end = self.discovery_end_ms();
        let discovered = end.is_some_and(|end| self.now_ms >= end);
        let complete = discovered
            && self.judged
            && !lost
            && !config_error
            && self.batteries.iter().all(Battery::is_valid)
            && self.topology.is_some_and(|t| t.series > 0)
            && self.aggregates.is_some();
        BankHealth {
            complete,
            lost,
            invalid,
            config_error,
            discovering: end.is_some_and(|end| self.now_ms < end),
        }
    }

    /// When the bank's own state changes next without new input (discovery window end, layout
    /// settled, a battery becoming lost), ms.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let discovery = self.discovery_end_ms().filter(|&t| t > self.now_ms);
        let lost = self
            .batteries
            .iter()
            .filter(|b| !b.lost)
            .map(|b| b.last_valid_ms.saturating_add(BATTERY_LOST_MS))
            .min();
        let overflow = self.overflow_ms.map(|t| t.saturating_add(BATTERY_LOST_MS));
        let settle = self
            .settle_from_ms
            .map(|t| t.saturating_add(TOPOLOGY_SETTLE_MS))
            .filter(|&t| t > self.now_ms);
        let capacity = self
            .capacity_candidate
            .deadline_ms()
            .filter(|&t| t > self.now_ms);
        [discovery, lost, overflow, settle, capacity]
            .into_iter()
            .flatten()
            .min()
    }

    /// BANK-1 **(choice)**: when the discovery window ends: [`DISCOVERY_MS`] after the first
    /// report or [`DISCOVERY_NEXT_MS`] after the latest battery found since, whichever is
    /// later, and at the latest [`DISCOVERY_MAX_MS`] after the first report; `None` before any
    /// report.
    pub fn discovery_end_ms(&self) -> Option<u64> {
        let first = self.first_report_ms?;
        let latest = self.last_found_ms.unwrap_or(first);
        Some(
            first
                .saturating_add(DISCOVERY_MS)
                .max(latest.saturating_add(DISCOVERY_NEXT_MS))
                .min(first.saturating_add(DISCOVERY_MAX_MS)),
        )
    }

    /// Whether the discovery window is open at `now_ms` (also before the first report).
    fn discovering(&self, now_ms: u64) -> bool {
        self.discovery_end_ms().is_none_or(|end| now_ms < end)
    }

    fn members(&self) -> impl Iterator<Item = &Battery> {
        self.batteries.iter().filter(|b| b.is_member())
    }

    /// Batteries in series from the bank voltage the BMS measures over the mean battery voltage
    /// reported (0 when the bank voltage is out of range or nothing is reported).
    fn measured_series(&self) -> u8 {
        let count = self.members().count();
        let voltage_sum: u64 = self.members().map(|b| u64::from(b.voltage_mv())).sum();
        let mean_mv = voltage_sum / count.max(1) as u64;
        if (SUPPLY_MIN_MV..=SUPPLY_MAX_MV).contains(&self.supply_mv) && mean_mv > 0 {
            let rounded = (u64::from(self.supply_mv) + mean_mv / 2) / mean_mv;
            u8::try_from(rounded).unwrap_or(u8::MAX)
        } else {
            0
        }
    }

    /// BANK-1: the batteries in series to use at `now_ms`. The bank voltage is measured every
    /// step, the battery voltages arrive with the reports up to a report period later, so a
    /// surge makes their ratio another count for a moment (a 48 V bank dipping to 2.75 V per
    /// cell reads as 3 in series). With the members unchanged, a different count replaces the
    /// one in use only once it has held for [`TOPOLOGY_SETTLE_MS`]; after a change of members
    /// (`members_changed`), or from none, it is taken at once.
    fn steady_series(&mut self, now_ms: u64, members_changed: bool) -> u8 {
        let measured = self.measured_series();
        let in_use = self.topology.map_or(0, |t| t.series);
        if members_changed || in_use == 0 || measured == in_use {
            self.series_candidate.clear();
            return measured;
        }
        if self.series_candidate.held(measured, now_ms) {
            measured
        } else {
            in_use
        }
    }

    /// BANK-1: `derived` with the capacity to count with at `now_ms`. A battery's report sets
    /// its nominal capacity, and the bank's is their sum: one report with another capacity (a
    /// frame that passed its checksum garbled, or forged) would make the monitor count a whole
    /// report period against it, and rescale the SoC to it and back (a single report of 0.1 Ah
    /// and 100 A took a 100 Ah bank from 50 % to 25 %). With the members and the series
    /// unchanged, a different capacity replaces the one in use only once it has held for
    /// [`TOPOLOGY_SETTLE_MS`] (longer than a report period, so a single report never does);
    /// after a change of members or series, or from none, it is taken at once.
    fn steady_capacity(
        &mut self,
        now_ms: u64,
        members_changed: bool,
        derived: Option<Topology>,
    ) -> Option<Topology> {
        let mut topology = derived?;
        let in_use = self
            .topology
            .filter(|t| !members_changed && t.series == topology.series && t.capacity_dah != 0);
        let Some(in_use) = in_use else {
            self.capacity_candidate.clear();
            return Some(topology);
        };
        if topology.capacity_dah == in_use.capacity_dah {
            self.capacity_candidate.clear();
            return Some(topology);
        }
        if !self.capacity_candidate.held(topology.capacity_dah, now_ms) {
            topology.capacity_dah = in_use.capacity_dah;
        }
        Some(topology)
    }

    fn derive_topology(&self, series: u8) -> Option<Topology> {
        let first = self.members().next()?;
        let model = first.model;
        let count = self.members().count();
        let batteries = u8::try_from(count).unwrap_or(u8::MAX);
        let parallel = batteries.checked_div(series).unwrap_or(0);
        let cells_total = self.members().map(|b| b.model.cells() as u16).sum();
        let capacity_sum: u32 = self.members().map(|b| u32::from(b.capacity_dah)).sum();
        Some(Topology {
            batteries,
            cells_total,
            series,
            parallel,
            model,
            nominal_mv: u32::from(series).saturating_mul(model.nominal_mv()),
            capacity_dah: capacity_sum.checked_div(u32::from(series)).unwrap_or(0),
        })
    }

    fn check_config(&self) -> Option<ConfigError> {
        let overflow = usize::from(self.overflow_ms.is_some());
        let topology = match self.topology {
            Some(topology) => topology,
            None if overflow > 0 => {
                let batteries = self.batteries.len().saturating_add(1);
                return Some(ConfigError::TooManyBatteries {
                    batteries: u8::try_from(batteries).unwrap_or(u8::MAX),
                    max: MAX_BATTERIES as u8,
                });
            }
            None => return None,
        };
        if self.members().any(|b| b.model != topology.model) {
            return Some(ConfigError::MixedModels);
        }
        let max = limits::max_batteries(topology.model);
        let count = self.members().count().saturating_add(overflow);
        if count > max {
            return Some(ConfigError::TooManyBatteries {
                batteries: u8::try_from(count).unwrap_or(u8::MAX),
                max: u8::try_from(max).unwrap_or(u8::MAX),
            });
        }
        if !(SUPPLY_MIN_MV..=SUPPLY_MAX_MV).contains(&self.supply_mv) {
            return Some(ConfigError::SupplyOutOfRange {
                supply_mv: self.supply_mv,
            });
        }
        if !BANK_NOMINAL_MV.contains(&topology.nominal_mv) {
            return Some(ConfigError::UnsupportedVoltage {
                nominal_mv: topology.nominal_mv,
            });
        }
        if topology.batteries.checked_rem(topology.series) != Some(0) {
            return Some(ConfigError::UnequalStrings {
                batteries: topology.batteries,
                series: topology.series,
            });
        }
        None
    }

    fn derive_aggregates(&self) -> Option<Aggregates> {
        let mut agg: Option<Aggregates> = None;
        let mut current_sum: i64 = 0;
        for (number, battery) in self.batteries.iter().enumerate() {
            if !battery.is_valid() {
                continue;
            }
            let number = u8::try_from(number).unwrap_or(u8::MAX);
            current_sum = current_sum.saturating_add(i64::from(battery.current_ma));
            let a = agg.get_or_insert(Aggregates {
                min_cell_mv: u16::MAX,
                max_cell_mv: 0,
                min_temp_ddegc: i16::MAX,
                max_temp_ddegc: i16::MIN,
                ..Aggregates::default()
            });
            for (cell, &mv) in battery.cells_mv().iter().enumerate() {
                let at = CellRef {
                    battery: number,
                    cell: u8::try_from(cell).unwrap_or(u8::MAX),
                };
                if mv < a.min_cell_mv {
                    a.min_cell_mv = mv;
                    a.min_cell = at;
                }
                if mv > a.max_cell_mv {
                    a.max_cell_mv = mv;
                    a.max_cell = at;
                }
            }
            if battery.min_temp_ddegc < a.min_temp_ddegc {
                a.min_temp_ddegc = battery.min_temp_ddegc;
                a.min_temp_battery = number;
            }
            if battery.max_temp_ddegc > a.max_temp_ddegc {
                a.max_temp_ddegc = battery.max_temp_ddegc;
                a.max_temp_battery = number;
            }
            a.charge_blocked |= !battery.flags.allowed_to_charge;
            a.discharge_blocked |= !battery.flags.allowed_to_discharge;
            a.balancing |= battery.flags.balancing;
        }
        let mut agg = agg?;
        let series = self.topology.map_or(0, |t| t.series).max(1);
        let current = current_sum / i64::from(series);
        agg.current_ma =
            i32::try_from(current).unwrap_or(if current < 0 { i32::MIN } else { i32::MAX });
        agg.voltage_mv = self.supply_mv;
        Some(agg)
    }
}

/// Checks that a report is physically possible.
fn check(report: &BatteryReport) -> Result<(), ReportError> {
    let expected = report.model.cells();
    if report.cells_mv.len() != expected {
        return Err(ReportError::CellCount {
            expected: expected as u8,
            got: u8::try_from(report.cells_mv.len()).unwrap_or(u8::MAX),
        });
    }
    for (cell, &cell_mv) in report.cells_mv.iter().enumerate() {
        if !(CELL_VALID_MV.0..=CELL_VALID_MV.1).contains(&cell_mv) {
            let cell = u8::try_from(cell).unwrap_or(u8::MAX);
            return Err(ReportError::CellVoltage { cell, cell_mv });
        }
    }
    if report.temps_ddegc.is_empty() {
        return Err(ReportError::NoTemperature);
    }
    for (sensor, &temp_ddegc) in report.temps_ddegc.iter().enumerate() {
        if !(TEMP_VALID_DDEGC.0..=TEMP_VALID_DDEGC.1).contains(&temp_ddegc) {
            let sensor = u8::try_from(sensor).unwrap_or(u8::MAX);
            return Err(ReportError::Temperature { sensor, temp_ddegc });
        }
    }
    if report.capacity_dah == 0 {
        return Err(ReportError::NoCapacity);
    }
    Ok(())
}

/// PROT-13: the report's current is within [`CURRENT_VALID_C`] times `capacity_dah` either way.
fn check_current(report: &BatteryReport, capacity_dah: u16) -> Result<(), ReportError> {
    // 0.1 Ah is 100 mAh; 6553.5 Ah × 10 C fits u32.
    let max_ma = u32::from(capacity_dah) * 100 * CURRENT_VALID_C;
    if report.current_ma.unsigned_abs() > max_ma {
        return Err(ReportError::Current {
            current_ma: report.current_ma,
            max_ma,
        });
    }
    Ok(())
}
