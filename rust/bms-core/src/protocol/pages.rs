//! The pages the GATT characteristics serve (status, bank, battery N, history), and the mapping
//! from the [`crate::Bms`] to them and to the Instant Readout values: every wire shape of the
//! device's state is built here.

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::balancer;
use crate::bank::{Bank, Battery};
use crate::bms::Bms;
use crate::bus::{BatteryFlags, BatteryModel, MAX_CELLS_PER_BATTERY};
use crate::history::{History, LAST_ERRORS};
use crate::monitor;

/// Balancer status (BAL-1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BalancerState {
    /// 0: not known (BAL-2).
    #[default]
    Unknown,
    /// 1: cells balanced at the last full charge.
    Balanced,
    /// 2: cells imbalanced at the last full charge.
    Imbalanced,
    /// 3: balancing now.
    Balancing,
}

impl From<balancer::BalancerState> for BalancerState {
    fn from(state: balancer::BalancerState) -> BalancerState {
        match state {
            balancer::BalancerState::Unknown => BalancerState::Unknown,
            balancer::BalancerState::Balanced => BalancerState::Balanced,
            balancer::BalancerState::Imbalanced => BalancerState::Imbalanced,
            balancer::BalancerState::Balancing => BalancerState::Balancing,
        }
    }
}

/// The status page (BLE-1): what the app's first screen shows. `None` = not available.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusPage {
    /// SoC in 0.1 %.
    pub soc_permille: Option<u16>,
    /// The SoC is an estimate from the rested voltage, not counted (MON-7).
    pub soc_estimated: bool,
    /// Bank voltage in mV.
    pub bank_mv: Option<u32>,
    /// Bank current in mA, positive = charging.
    pub current_ma: Option<i32>,
    /// Bank power in W, positive = charging.
    pub power_w: Option<i32>,
    /// Time remaining in minutes (MON-5).
    pub time_remaining_min: Option<u32>,
    /// Consumed charge since the last full charge in mAh.
    pub consumed_mah: Option<u32>,
    /// Highest cell temperature in 0.1 °C.
    pub temp_ddegc: Option<i16>,
    /// Load disconnect output high (loads allowed).
    pub atd: bool,
    /// Charge disconnect output high (charging allowed).
    pub atc: bool,
    /// Pre-alarm output high (alarm).
    pub prealarm: bool,
    /// Why ATD is free-floating: bit n = reason n ([`crate::Reason`]).
    pub atd_reasons: u32,
    /// Why ATC is free-floating: bit n = reason n.
    pub atc_reasons: u32,
    /// Why the pre-alarm is active: bit n = reason n.
    pub prealarm_reasons: u32,
    /// Active errors, alarms and warnings: bit n = code number n ([`crate::codes::Code`]).
    pub codes: u32,
}

impl StatusPage {
    /// The status page of `bms` as of its last step.
    pub fn from_bms(bms: &Bms) -> StatusPage {
        let monitor = bms.monitor_status();
        let aggregates = bms.bank().aggregates();
        let outputs = bms.outputs();
        let bank_mv = aggregates.map(|a| a.voltage_mv);
        let current_ma = aggregates.map(|a| a.current_ma);
        let power_w = aggregates.map(|a| {
            let mw = i64::from(a.voltage_mv).saturating_mul(i64::from(a.current_ma)) / 1_000_000;
            i32::try_from(mw).unwrap_or(if mw < 0 { i32::MIN } else { i32::MAX })
        });
        StatusPage {
            soc_permille: monitor.soc_permille.or(monitor.soc_estimate_permille),
            soc_estimated: monitor.soc_permille.is_none()
                && monitor.soc_estimate_permille.is_some(),
            bank_mv,
            current_ma,
            power_w,
            time_remaining_min: monitor.ttg_min,
            consumed_mah: monitor.soc_permille.map(|_| monitor.consumed_mah),
            temp_ddegc: aggregates.map(|a| a.max_temp_ddegc),
            atd: outputs.atd,
            atc: outputs.atc,
            prealarm: outputs.prealarm,
            atd_reasons: outputs.atd_reasons.bits(),
            atc_reasons: outputs.atc_reasons.bits(),
            prealarm_reasons: outputs.prealarm_reasons.bits(),
            codes: bms.codes().bits(),
        }
    }
}

/// How the SoC is known (MON-7), on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SocKnowledge {
    /// 0: not known (no synchronisation, set or rested estimate yet).
    #[default]
    Unknown,
    /// 1: estimated from the rested voltage and counted since (MON-7).
    Estimated,
    /// 2: counted since a synchronisation or a set SoC.
    Counted,
}

impl From<monitor::SocKnowledge> for SocKnowledge {
    fn from(knowledge: monitor::SocKnowledge) -> SocKnowledge {
        match knowledge {
            monitor::SocKnowledge::Unknown => SocKnowledge::Unknown,
            monitor::SocKnowledge::Estimated => SocKnowledge::Estimated,
            monitor::SocKnowledge::Known => SocKnowledge::Counted,
        }
    }
}

/// The state-of-charge page (BLE-1, MON-7): how the status page's SoC is known and how sure
/// the estimator is of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocPage {
    /// The SoC in 0.1 %, as on the status page (counted, or estimated).
    pub soc_permille: Option<u16>,
    /// How it is known.
    pub knowledge: SocKnowledge,
    /// Its 1-σ uncertainty in 0.1 % (the adaptive estimator's); `None` when not tracked.
    pub uncertainty_permille: Option<u16>,
}

impl SocPage {
    /// The SoC page of `bms` as of its last step.
    pub fn from_bms(bms: &Bms) -> SocPage {
        let monitor = bms.monitor_status();
        SocPage {
            soc_permille: monitor.soc_permille.or(monitor.soc_estimate_permille),
            knowledge: bms.soc_knowledge().into(),
            uncertainty_permille: monitor.soc_uncertainty_permille,
        }
    }
}

/// A cell voltage extreme and where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellExtreme {
    /// Cell voltage in mV.
    pub mv: u16,
    /// Battery number, 0-based.
    pub battery: u8,
    /// Cell index in the battery, 0-based.
    pub cell: u8,
}

/// A temperature extreme and where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TempExtreme {
    /// Temperature in 0.1 °C.
    pub ddegc: i16,
    /// Battery number, 0-based.
    pub battery: u8,
}

/// The battery bank page (BLE-1, BANK-1, BANK-3, BAL-1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankPage {
    /// Balancer status.
    pub balancer: BalancerState,
    /// Batteries seen on the bus: battery pages are numbered `0..batteries`.
    pub batteries: u8,
    /// Member batteries (reporting, not lost).
    pub members: u8,
    /// Cells in total.
    pub cells_total: u16,
    /// Batteries in series (0 = not derived).
    pub series: u8,
    /// Batteries in parallel.
    pub parallel: u8,
    /// Battery model, when a battery is a member.
    pub model: Option<BatteryModel>,
    /// Bank nominal voltage in mV.
    pub nominal_mv: u32,
    /// Bank nominal capacity in 0.1 Ah.
    pub capacity_dah: u32,
    /// Bank voltage in mV.
    pub bank_mv: Option<u32>,
    /// Bank current in mA, positive = charging.
    pub current_ma: Option<i32>,
    /// Lowest cell voltage.
    pub min_cell: Option<CellExtreme>,
    /// Highest cell voltage.
    pub max_cell: Option<CellExtreme>,
    /// Lowest cell temperature.
    pub min_temp: Option<TempExtreme>,
    /// Highest cell temperature.
    pub max_temp: Option<TempExtreme>,
    /// The bank breaks the configuration rules (BANK-2).
    pub config_error: bool,
}

impl BankPage {
    /// The page for `bank` with the balancer status `balancer`.
    pub fn from_bank(bank: &Bank, balancer: BalancerState) -> BankPage {
        let count = |n: usize| u8::try_from(n).unwrap_or(u8::MAX);
        let topology = bank.topology();
        let aggregates = bank.aggregates();
        BankPage {
            balancer,
            batteries: count(bank.batteries().len()),
            members: count(bank.batteries().iter().filter(|b| b.is_member()).count()),
            cells_total: topology.map_or(0, |t| t.cells_total),
            series: topology.map_or(0, |t| t.series),
            parallel: topology.map_or(0, |t| t.parallel),
            model: topology.map(|t| t.model),
            nominal_mv: topology.map_or(0, |t| t.nominal_mv),
            capacity_dah: topology.map_or(0, |t| t.capacity_dah),
            bank_mv: aggregates.map(|a| a.voltage_mv),
            current_ma: aggregates.map(|a| a.current_ma),
            min_cell: aggregates.map(|a| CellExtreme {
                mv: a.min_cell_mv,
                battery: a.min_cell.battery,
                cell: a.min_cell.cell,
            }),
            max_cell: aggregates.map(|a| CellExtreme {
                mv: a.max_cell_mv,
                battery: a.max_cell.battery,
                cell: a.max_cell.cell,
            }),
            min_temp: aggregates.map(|a| TempExtreme {
                ddegc: a.min_temp_ddegc,
                battery: a.min_temp_battery,
            }),
            max_temp: aggregates.map(|a| TempExtreme {
                ddegc: a.max_temp_ddegc,
                battery: a.max_temp_battery,
            }),
            config_error: bank.config_error().is_some(),
        }
    }
}

/// The page of one battery (BLE-1, BANK-3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatteryPage {
    /// This battery's number, 0-based.
    pub number: u8,
    /// Batteries in the bank (battery numbers are `0..count`).
    pub count: u8,
    /// Serial number.
    pub serial: u32,
    /// Battery model.
    pub model: BatteryModel,
    /// Nominal capacity in 0.1 Ah.
    pub capacity_dah: u16,
    /// Firmware version, major in the high byte.
    pub firmware: u16,
    /// Battery voltage in mV.
    pub voltage_mv: u32,
    /// Battery current in mA, positive = charging.
    pub current_ma: i32,
    /// Lowest reported temperature in 0.1 °C.
    pub min_temp_ddegc: i16,
    /// Highest reported temperature in 0.1 °C (the battery temperature).
    pub max_temp_ddegc: i16,
    /// The battery's own flags.
    pub flags: BatteryFlags,
    /// The battery's data is valid and current.
    pub valid: bool,
    /// Nothing valid came from it for 5 s (BANK-4).
    pub lost: bool,
    /// Cell voltages in mV, first cell first (empty before its first valid report).
    pub cells_mv: Vec<u16, MAX_CELLS_PER_BATTERY>,
}

impl BatteryPage {
    /// The page of battery `number` of `bank`, or `None` when there is no such battery.
    pub fn from_bank(bank: &Bank, number: u8) -> Option<BatteryPage> {
        let battery: &Battery = bank.battery(usize::from(number))?;
        let mut cells_mv = Vec::new();
        for &mv in battery.cells_mv() {
            // A battery holds at most MAX_CELLS_PER_BATTERY cells; a full Vec cannot happen.
            let _ = cells_mv.push(mv);
        }
        Some(BatteryPage {
            number,
            count: u8::try_from(bank.batteries().len()).unwrap_or(u8::MAX),
            serial: battery.serial,
            model: battery.model,
            capacity_dah: battery.capacity_dah,
            firmware: battery.firmware,
            voltage_mv: battery.voltage_mv(),
            current_ma: battery.current_ma,
            min_temp_ddegc: battery.min_temp_ddegc,
            max_temp_ddegc: battery.max_temp_ddegc,
            flags: battery.flags,
            valid: battery.is_valid(),
            lost: battery.lost,
            cells_mv,
        })
    }
}

/// The history page (BLE-1, HIST-1). `None` = nothing recorded since the last reset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// Deepest discharge in mAh.
    pub deepest_discharge_mah: u32,
    /// Cumulative charge drawn in mAh.
    pub cumulative_drawn_mah: u64,
    /// Discharged energy in mWh.
    pub discharged_energy_mwh: u64,
    /// Charged energy in mWh.
    pub charged_energy_mwh: u64,
    /// Counted synchronisations (HIST-3).
    pub synchronisations: u32,
    /// Charge cycles (HIST-2).
    pub cycles: u32,
    /// Time since the last full charge in ms.
    pub since_full_charge_ms: Option<u64>,
    /// Lowest bank voltage in mV.
    pub min_bank_mv: Option<u32>,
    /// Highest bank voltage in mV.
    pub max_bank_mv: Option<u32>,
    /// Lowest cell voltage in mV.
    pub min_cell_mv: Option<u16>,
    /// Highest cell voltage in mV.
    pub max_cell_mv: Option<u16>,
    /// Lowest battery temperature in 0.1 °C.
    pub min_temp_ddegc: Option<i16>,
    /// Highest battery temperature in 0.1 °C.
    pub max_temp_ddegc: Option<i16>,
    /// The last errors, newest first: code numbers ([`crate::codes::Code`]).
    pub last_errors: [Option<u16>; LAST_ERRORS],
}

impl HistoryPage {
    /// The page of `history`.
    pub fn from_history(history: &History) -> HistoryPage {
        HistoryPage {
            deepest_discharge_mah: history.deepest_discharge_mah(),
            cumulative_drawn_mah: history.cumulative_drawn_mah(),
            discharged_energy_mwh: history.discharged_energy_mwh(),
            charged_energy_mwh: history.charged_energy_mwh(),
            synchronisations: history.synchronisations(),
            cycles: history.cycles(),
            since_full_charge_ms: history.since_full_charge_ms(),
            min_bank_mv: history.min_bank_mv(),
            max_bank_mv: history.max_bank_mv(),
            min_cell_mv: history.min_cell_mv(),
            max_cell_mv: history.max_cell_mv(),
            min_temp_ddegc: history.min_temp_ddegc(),
            max_temp_ddegc: history.max_temp_ddegc(),
            last_errors: history.last_errors(),
        }
    }
}
