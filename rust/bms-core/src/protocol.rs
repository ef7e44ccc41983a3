//! The GATT protocol (BLE-1, BLE-2, BLE-4): one primary service whose characteristics carry
//! versioned, postcard-encoded pages (status, bank, battery N, history, settings) and a control
//! point for actions. In: one GATT access (characteristic, read or write, whether the link is
//! authenticated, the request bytes). Out: the response bytes, always `[version, status, body]`.
//! The wire format is specified in `docs/protocol.md`; the exact bytes are pinned by the tests.
//!
//! The handler works on any [`Device`] (the [`crate::Bms`], or a fake in tests and fuzzing):
//! it decodes and checks the request completely before it calls a single mutating method, so
//! a refused request never changes state.

use core::fmt;

use heapless::Vec;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::balancer;
use crate::bank::{Bank, Battery};
use crate::bms::Bms;
use crate::bus::{BatteryFlags, BatteryModel, MAX_CELLS_PER_BATTERY};
use crate::history::{History, LAST_ERRORS};
use crate::settings::{Settings, SettingsError, SettingsField};
use crate::word::Number;

/// Protocol version: the first byte of every request that has a body and of every response.
pub const VERSION: u8 = 1;

/// Longest request accepted, in bytes; longer ones get [`Status::Oversized`] without decoding.
pub const MAX_REQUEST_LEN: usize = 32;

/// Longest response, in bytes: one ATT payload at an MTU of 247 (the usual LE Data Length
/// Extension MTU). The response buffer given to [`handle_request`] must hold this many bytes.
pub const MAX_RESPONSE_LEN: usize = 244;

/// Highest SoC a [`Command::SetSoc`] accepts, in 0.1 % (MON-4).
pub const MAX_SOC_PERMILLE: u16 = 1000;

/// Highest BLE passkey (six decimal digits).
pub const MAX_PASSKEY: u32 = 999_999;

/// The 128-bit UUID of the primary service. The characteristics share its base and differ in
/// the second 16-bit group: `fde4NNNN-2435-4d33-8157-077d40b73501`, NNNN = 0001 for the service,
/// 0002 + characteristic number − 1 for each [`Characteristic`].
pub const SERVICE_UUID: u128 = uuid(1);

const fn uuid(short: u16) -> u128 {
    0xfde4_0000_2435_4d33_8157_077d_40b7_3501 | ((short as u128) << 96)
}

/// The characteristics of the service; the number is what the firmware passes to
/// [`handle_request`] (and `bms_gatt_request`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Characteristic {
    /// Status page: read, notify ([`StatusPage`]).
    Status = 1,
    /// Battery bank page: read ([`BankPage`]).
    Bank = 2,
    /// One battery: write a [`BatterySelect`] to choose it, read its [`BatteryPage`].
    Battery = 3,
    /// History page: read ([`HistoryPage`]).
    History = 4,
    /// Settings: read, write ([`Settings`]).
    Settings = 5,
    /// Control point: write a [`Command`], the response is indicated.
    ControlPoint = 6,
}

impl Characteristic {
    /// Every characteristic, in number order.
    pub const ALL: [Characteristic; 6] = [
        Characteristic::Status,
        Characteristic::Bank,
        Characteristic::Battery,
        Characteristic::History,
        Characteristic::Settings,
        Characteristic::ControlPoint,
    ];

    /// The characteristic with number `number`, if any.
    pub const fn from_u8(number: u8) -> Option<Characteristic> {
        match number {
            1 => Some(Characteristic::Status),
            2 => Some(Characteristic::Bank),
            3 => Some(Characteristic::Battery),
            4 => Some(Characteristic::History),
            5 => Some(Characteristic::Settings),
            6 => Some(Characteristic::ControlPoint),
            _ => None,
        }
    }

    /// Its 128-bit UUID (see [`SERVICE_UUID`]).
    pub const fn uuid(self) -> u128 {
        uuid(self as u16 + 1)
    }
}

/// The kind of GATT access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A read (the request is empty, or the battery selector kept for the connection).
    Read,
    /// A write (the request is the written value).
    Write,
}

/// Result of a request, the second byte of every response. Numbers never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Status {
    /// Done; the body holds the page or the action's result.
    Ok = 0,
    /// The request ended before its message did (also an empty write).
    Truncated = 1,
    /// The request is longer than [`MAX_REQUEST_LEN`] or has bytes after its message.
    Oversized = 2,
    /// The request's version byte is not [`VERSION`]; the response's first byte is.
    UnknownVersion = 3,
    /// The control-point command number is unknown.
    UnknownCommand = 4,
    /// The bytes do not decode as the message (bad varint, bool or enum value, too many cells).
    Malformed = 5,
    /// A write or action on a link that is not authenticated (BLE-2).
    NotAuthenticated = 6,
    /// A value is out of range; the body is a [`Refusal`] naming the field and the range.
    InvalidValue = 7,
    /// The selected battery does not exist.
    NoSuchBattery = 8,
    /// The action is not possible now (e.g. set SoC before a bank was seen).
    NotAvailable = 9,
    /// The characteristic number is unknown.
    UnknownCharacteristic = 10,
    /// The characteristic does not support this access (e.g. a write to the status page).
    UnsupportedAccess = 11,
}

impl Status {
    /// Every status, in number order.
    pub const ALL: [Status; 12] = [
        Status::Ok,
        Status::Truncated,
        Status::Oversized,
        Status::UnknownVersion,
        Status::UnknownCommand,
        Status::Malformed,
        Status::NotAuthenticated,
        Status::InvalidValue,
        Status::NoSuchBattery,
        Status::NotAvailable,
        Status::UnknownCharacteristic,
        Status::UnsupportedAccess,
    ];

    /// The status with number `number`, if any.
    pub fn from_u8(number: u8) -> Option<Status> {
        Status::ALL.into_iter().find(|s| *s as u8 == number)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Truncated => "request truncated",
            Status::Oversized => "request too long",
            Status::UnknownVersion => "unknown protocol version",
            Status::UnknownCommand => "unknown command",
            Status::Malformed => "malformed request",
            Status::NotAuthenticated => "link not authenticated",
            Status::InvalidValue => "value out of range",
            Status::NoSuchBattery => "no such battery",
            Status::NotAvailable => "not available now",
            Status::UnknownCharacteristic => "unknown characteristic",
            Status::UnsupportedAccess => "access not supported by the characteristic",
        })
    }
}

/// Errors of the caller (not of the request): nothing was decoded or changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The output buffer is too small; it must hold `required` bytes.
    BufferTooSmall {
        /// Bytes the buffer must hold.
        required: usize,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::BufferTooSmall { required } => {
                write!(
                    f,
                    "buffer too small: {} bytes required",
                    Number::from(*required)
                )
            }
        }
    }
}

/// A control-point action (BLE-1). On the wire: the variant number as a varint, then its
/// fields. Every action needs an authenticated link (BLE-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// 0: set the SoC to `soc_permille` (0–1000) now (MON-4).
    SetSoc {
        /// The new SoC in 0.1 %.
        soc_permille: u16,
    },
    /// 1: synchronise the SoC to 100 % now (MON-4).
    Synchronise,
    /// 2: clear every history item (HIST-4).
    ResetHistory,
    /// 3: restore the factory settings (SET-4).
    ResetToDefaults,
    /// 4: change the pairing passkey (0–999999) for the next pairing (BLE-2).
    ChangePasskey {
        /// The new six-digit passkey.
        passkey: u32,
    },
    /// 5: read the Instant Readout key (BLE-3); the body is an [`AdvertisementKey`].
    ReadAdvertisementKey,
}

impl Command {
    /// Number of commands: command numbers are `0..COUNT`.
    pub const COUNT: u32 = 6;
}

/// Selects the battery the Battery characteristic returns (0-based, in serial-number order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatterySelect {
    /// Battery number, 0-based.
    pub number: u8,
}

/// Body of a [`Status::InvalidValue`] response: which field and its allowed range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The field: a [`SettingsField`] number for a settings write, 0 for a command's argument.
    pub field: u8,
    /// Smallest allowed value, in the field's unit.
    pub min: u32,
    /// Largest allowed value, in the field's unit.
    pub max: u32,
}

impl From<SettingsError> for Refusal {
    fn from(error: SettingsError) -> Refusal {
        match error {
            SettingsError::OutOfRange {
                field, min, max, ..
            } => Refusal {
                field: field as u8,
                min: u32::from(min),
                max: u32::from(max),
            },
            SettingsError::WarningNotAboveFloor { floor_pct, .. } => Refusal {
                field: SettingsField::LowSocWarningLevel as u8,
                min: u32::from(floor_pct).saturating_add(1),
                max: u32::from(SettingsField::LowSocWarningLevel.bounds().max),
            },
        }
    }
}

/// Body of the [`Command::ReadAdvertisementKey`] response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertisementKey {
    /// The 128-bit AES key of the Instant Readout (16 raw bytes on the wire).
    pub key: [u8; 16],
}

/// The device's security record: the pairing passkey and the Instant Readout key. Persisted
/// by the storage layer; the firmware applies the passkey to the BLE stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSecrets {
    /// Pairing passkey, 0–999999 (BLE-2; default [`DeviceSecrets::DEFAULT_PASSKEY`]).
    pub passkey: u32,
    /// The Instant Readout key (BLE-3), generated once per device by the firmware.
    pub adv_key: [u8; 16],
}

impl DeviceSecrets {
    /// The factory passkey, 000000 (BLE-2).
    pub const DEFAULT_PASSKEY: u32 = 0;
}

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

/// Why an action could not be carried out. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ActionError {
    /// The action is not possible in the current state (e.g. no bank seen yet).
    NotAvailable,
}

impl fmt::Display for ActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionError::NotAvailable => f.write_str("action not available now"),
        }
    }
}

/// What the protocol reads from and does to the device. [`crate::Bms`] implements it; tests
/// and fuzz targets use fakes. Arguments reach the mutating methods already range-checked.
pub trait Device {
    /// The status page now.
    fn status_page(&self) -> StatusPage;
    /// The bank page now.
    fn bank_page(&self) -> BankPage;
    /// The page of battery `number`, `None` when there is no such battery.
    fn battery_page(&self, number: u8) -> Option<BatteryPage>;
    /// The history page now.
    fn history_page(&self) -> HistoryPage;
    /// The current settings.
    fn settings(&self) -> Settings;
    /// Replace the settings (validated as a whole, SET-1) at `now_ms`.
    fn write_settings(&mut self, now_ms: u64, settings: Settings) -> Result<(), SettingsError>;
    /// Set the SoC (0–1000 ‰) at `now_ms` (MON-4).
    fn set_soc(&mut self, now_ms: u64, soc_permille: u16) -> Result<(), ActionError>;
    /// Synchronise the SoC to 100 % at `now_ms` (MON-4).
    fn synchronise(&mut self, now_ms: u64) -> Result<(), ActionError>;
    /// Clear the history at `now_ms` (HIST-4).
    fn reset_history(&mut self, now_ms: u64);
    /// Restore the factory settings at `now_ms` (SET-4).
    fn reset_to_defaults(&mut self, now_ms: u64);
    /// Change the pairing passkey (0–999999); the firmware persists and applies it.
    fn change_passkey(&mut self, now_ms: u64, passkey: u32) -> Result<(), ActionError>;
    /// The Instant Readout key (BLE-3).
    fn advertisement_key(&self) -> [u8; 16];
}

/// The [`Device`] the firmware serves: the [`Bms`] and the device's [`DeviceSecrets`], which
/// the caller restores at boot and persists when a [`Reply`] says [`Changed::secrets`].
#[derive(Debug)]
pub struct BmsDevice<'a> {
    /// The BMS.
    pub bms: &'a mut Bms,
    /// The device's passkey and advertisement key.
    pub secrets: &'a mut DeviceSecrets,
}

impl BmsDevice<'_> {
    /// The status page of `bms` as of its last step.
    pub fn status_of(bms: &Bms) -> StatusPage {
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

impl Device for BmsDevice<'_> {
    fn status_page(&self) -> StatusPage {
        BmsDevice::status_of(self.bms)
    }

    fn bank_page(&self) -> BankPage {
        BankPage::from_bank(self.bms.bank(), self.bms.balancer().into())
    }

    fn battery_page(&self, number: u8) -> Option<BatteryPage> {
        BatteryPage::from_bank(self.bms.bank(), number)
    }

    fn history_page(&self) -> HistoryPage {
        HistoryPage::from_history(self.bms.history())
    }

    fn settings(&self) -> Settings {
        *self.bms.settings()
    }

    fn write_settings(&mut self, _now_ms: u64, settings: Settings) -> Result<(), SettingsError> {
        self.bms.write_settings(settings)
    }

    fn set_soc(&mut self, now_ms: u64, soc_permille: u16) -> Result<(), ActionError> {
        self.bms
            .set_soc(now_ms, soc_permille)
            .map_err(|_| ActionError::NotAvailable)
    }

    fn synchronise(&mut self, now_ms: u64) -> Result<(), ActionError> {
        self.bms
            .synchronise(now_ms)
            .map_err(|_| ActionError::NotAvailable)
    }

    fn reset_history(&mut self, _now_ms: u64) {
        self.bms.reset_history();
    }

    fn reset_to_defaults(&mut self, _now_ms: u64) {
        self.bms.factory_reset();
    }

    fn change_passkey(&mut self, _now_ms: u64, passkey: u32) -> Result<(), ActionError> {
        // The Bms holds the passkey and persists it; the caller's copy follows it.
        self.bms
            .set_passkey(passkey)
            .map_err(|_| ActionError::NotAvailable)?;
        self.secrets.passkey = passkey;
        Ok(())
    }

    fn advertisement_key(&self) -> [u8; 16] {
        *self.bms.device_key()
    }
}

/// The outcome of [`handle_request`]: the response length and its status (also `resp[1]`),
/// which the firmware may map to an ATT error for writes, and what the request changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Reply {
    /// Bytes of the response written to the buffer.
    pub len: usize,
    /// The status sent.
    pub status: Status,
    /// The records the request changed: persist them now.
    pub changed: Changed,
}

/// Which persisted records a request changed (all false unless the status is [`Status::Ok`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// The settings (settings write, reset to defaults).
    pub settings: bool,
    /// The monitor's SoC record (set SoC, synchronise).
    pub soc: bool,
    /// The history (reset history).
    pub history: bool,
    /// The [`DeviceSecrets`] (passkey change): persist them and apply the passkey.
    pub secrets: bool,
}

/// Handle one GATT access to `characteristic` (a [`Characteristic`] number) at `now_ms` and
/// write the response to `resp`, which must hold [`MAX_RESPONSE_LEN`] bytes.
///
/// `authenticated` is whether the link is encrypted with an authenticated (passkey) key: writes
/// of settings and every control-point action are refused with
/// [`Status::NotAuthenticated`] otherwise (BLE-2). Every request gets a response; a refused one
/// changes nothing (BLE-4). For the Battery characteristic, a read passes the selector the
/// client last wrote on this connection (empty = battery 0) and a write passes the new
/// selector: both answer with the page, so the firmware keeps the selector only on
/// [`Status::Ok`].
pub fn handle_request<D: Device>(
    device: &mut D,
    now_ms: u64,
    characteristic: u8,
    access: Access,
    authenticated: bool,
    req: &[u8],
    resp: &mut [u8],
) -> Result<Reply, ProtocolError> {
    if resp.len() < MAX_RESPONSE_LEN {
        return Err(ProtocolError::BufferTooSmall {
            required: MAX_RESPONSE_LEN,
        });
    }
    match dispatch(
        device,
        now_ms,
        characteristic,
        access,
        authenticated,
        req,
        resp,
    ) {
        Ok(reply) => Ok(reply),
        Err(Refused::Status(status)) => respond(status, None::<&()>, resp),
        Err(Refused::Value(refusal)) => respond(Status::InvalidValue, Some(&refusal), resp),
    }
}

enum Refused {
    Status(Status),
    Value(Refusal),
}

impl From<Status> for Refused {
    fn from(status: Status) -> Refused {
        Refused::Status(status)
    }
}

fn dispatch<D: Device>(
    device: &mut D,
    now_ms: u64,
    characteristic: u8,
    access: Access,
    authenticated: bool,
    req: &[u8],
    resp: &mut [u8],
) -> Result<Reply, Refused> {
    let chr = Characteristic::from_u8(characteristic).ok_or(Status::UnknownCharacteristic)?;
    if req.len() > MAX_REQUEST_LEN {
        return Err(Status::Oversized.into());
    }
    match (chr, access) {
        (Characteristic::Status, Access::Read) => {
            expect_empty(req)?;
            ok(&device.status_page(), resp)
        }
        (Characteristic::Bank, Access::Read) => {
            expect_empty(req)?;
            ok(&device.bank_page(), resp)
        }
        (Characteristic::History, Access::Read) => {
            expect_empty(req)?;
            ok(&device.history_page(), resp)
        }
        (Characteristic::Settings, Access::Read) => {
            expect_empty(req)?;
            ok(&device.settings(), resp)
        }
        (Characteristic::Battery, _) => {
            // Selecting a battery is a parameter of a read: it changes nothing in the device,
            // so it is allowed on any link, like the monitoring reads (BLE-2).
            let select = if req.is_empty() {
                BatterySelect::default()
            } else {
                decode_request::<BatterySelect>(req)?
            };
            let page = device
                .battery_page(select.number)
                .ok_or(Status::NoSuchBattery)?;
            ok(&page, resp)
        }
        (Characteristic::Settings, Access::Write) => {
            if !authenticated {
                return Err(Status::NotAuthenticated.into());
            }
            let settings = decode_settings(req)?;
            settings.validate().map_err(|e| Refused::Value(e.into()))?;
            device
                .write_settings(now_ms, settings)
                .map_err(|e| Refused::Value(e.into()))?;
            let reply = ok(&device.settings(), resp)?;
            Ok(Reply {
                changed: Changed {
                    settings: true,
                    ..Changed::default()
                },
                ..reply
            })
        }
        (Characteristic::ControlPoint, Access::Write) => {
            if !authenticated {
                return Err(Status::NotAuthenticated.into());
            }
            run(device, now_ms, decode_command(req)?, resp)
        }
        (Characteristic::ControlPoint, Access::Read)
        | (
            Characteristic::Status | Characteristic::Bank | Characteristic::History,
            Access::Write,
        ) => Err(Status::UnsupportedAccess.into()),
    }
}

fn run<D: Device>(
    device: &mut D,
    now_ms: u64,
    command: Command,
    resp: &mut [u8],
) -> Result<Reply, Refused> {
    let not_available = |_| Refused::Status(Status::NotAvailable);
    let mut changed = Changed::default();
    match command {
        Command::SetSoc { soc_permille } => {
            if soc_permille > MAX_SOC_PERMILLE {
                return Err(Refused::Value(Refusal {
                    field: 0,
                    min: 0,
                    max: u32::from(MAX_SOC_PERMILLE),
                }));
            }
            device
                .set_soc(now_ms, soc_permille)
                .map_err(not_available)?;
            changed.soc = true;
        }
        Command::Synchronise => {
            device.synchronise(now_ms).map_err(not_available)?;
            changed.soc = true;
        }
        Command::ResetHistory => {
            device.reset_history(now_ms);
            changed.history = true;
        }
        Command::ResetToDefaults => {
            device.reset_to_defaults(now_ms);
            changed.settings = true;
        }
        Command::ChangePasskey { passkey } => {
            if passkey > MAX_PASSKEY {
                return Err(Refused::Value(Refusal {
                    field: 0,
                    min: 0,
                    max: MAX_PASSKEY,
                }));
            }
            device
                .change_passkey(now_ms, passkey)
                .map_err(not_available)?;
            changed.secrets = true;
        }
        Command::ReadAdvertisementKey => {
            let key = AdvertisementKey {
                key: device.advertisement_key(),
            };
            return ok(&key, resp);
        }
    }
    Ok(Reply {
        changed,
        ..ok(&(), resp)?
    })
}

/// An `Ok` response with `body`. Every body fits [`MAX_RESPONSE_LEN`] (tested), which the
/// buffer holds; should one ever not, the client gets "too long" rather than a panic.
fn ok<T: Serialize>(body: &T, resp: &mut [u8]) -> Result<Reply, Refused> {
    respond(Status::Ok, Some(body), resp).map_err(|_| Refused::Status(Status::Oversized))
}

fn respond<T: Serialize>(
    status: Status,
    body: Option<&T>,
    resp: &mut [u8],
) -> Result<Reply, ProtocolError> {
    let len = encode_response(status, body, resp)?;
    Ok(Reply {
        len,
        status,
        changed: Changed::default(),
    })
}

fn expect_empty(req: &[u8]) -> Result<(), Status> {
    if req.is_empty() {
        Ok(())
    } else {
        Err(Status::Oversized)
    }
}

fn decode_error(error: postcard::Error) -> Status {
    match error {
        postcard::Error::DeserializeUnexpectedEnd => Status::Truncated,
        _ => Status::Malformed,
    }
}

/// Strip and check the version byte of a request.
fn body_of(req: &[u8]) -> Result<&[u8], Status> {
    match req.split_first() {
        None => Err(Status::Truncated),
        Some((&VERSION, body)) => Ok(body),
        Some(_) => Err(Status::UnknownVersion),
    }
}

/// Decode a request: the version byte, then exactly one postcard-encoded `T`. Errors are the
/// statuses the response carries.
pub fn decode_request<T: DeserializeOwned>(req: &[u8]) -> Result<T, Status> {
    if req.len() > MAX_REQUEST_LEN {
        return Err(Status::Oversized);
    }
    let (value, rest) = postcard::take_from_bytes::<T>(body_of(req)?).map_err(decode_error)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(Status::Oversized)
    }
}

/// Decode a control-point request, telling an unknown command number
/// ([`Status::UnknownCommand`]) from a malformed or truncated known one.
pub fn decode_command(req: &[u8]) -> Result<Command, Status> {
    if req.len() > MAX_REQUEST_LEN {
        return Err(Status::Oversized);
    }
    let (number, _) = postcard::take_from_bytes::<u32>(body_of(req)?).map_err(decode_error)?;
    if number >= Command::COUNT {
        return Err(Status::UnknownCommand);
    }
    decode_request(req)
}

/// Decode a settings write (not yet range-checked: see [`Settings::validate`]).
pub fn decode_settings(req: &[u8]) -> Result<Settings, Status> {
    decode_request(req)
}

/// Encode a request (the client side): the version byte, then `message`. Returns its length.
pub fn encode_request<T: Serialize>(message: &T, out: &mut [u8]) -> Result<usize, ProtocolError> {
    encode_versioned(&[VERSION], message, out)
}

/// Encode a response: version, `status`, then `body` if any. Returns its length.
pub fn encode_response<T: Serialize>(
    status: Status,
    body: Option<&T>,
    out: &mut [u8],
) -> Result<usize, ProtocolError> {
    match body {
        Some(body) => encode_versioned(&[VERSION, status as u8], body, out),
        None => encode_versioned(&[VERSION, status as u8], &(), out),
    }
}

fn encode_versioned<T: Serialize>(
    head: &[u8],
    message: &T,
    out: &mut [u8],
) -> Result<usize, ProtocolError> {
    let too_small = ProtocolError::BufferTooSmall {
        required: MAX_RESPONSE_LEN,
    };
    let (h, rest) = out.split_at_mut_checked(head.len()).ok_or(too_small)?;
    h.copy_from_slice(head);
    let used = postcard::to_slice(message, rest)
        .map_err(|_| too_small)?
        .len();
    Ok(head.len().saturating_add(used))
}

/// Split a response (the client side) into its status and body; the body decodes with
/// [`decode_body`]. Fails on an empty response or an unknown version or status.
pub fn decode_response(resp: &[u8]) -> Result<(Status, &[u8]), Status> {
    match resp {
        [VERSION, status, body @ ..] => {
            Ok((Status::from_u8(*status).ok_or(Status::Malformed)?, body))
        }
        [_, _, ..] => Err(Status::UnknownVersion),
        _ => Err(Status::Truncated),
    }
}

/// Decode a response body as exactly one `T`.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Status> {
    let (value, rest) = postcard::take_from_bytes::<T>(body).map_err(decode_error)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(Status::Oversized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A device that records every mutation, so tests can assert nothing changed.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Fake {
        settings: Settings,
        soc_permille: Option<u16>,
        bank_seen: bool,
        batteries: u8,
        history_resets: u32,
        passkey: u32,
        key: [u8; 16],
        last_now_ms: u64,
    }

    impl Fake {
        fn new() -> Fake {
            Fake {
                settings: Settings::default(),
                soc_permille: None,
                bank_seen: true,
                batteries: 2,
                history_resets: 0,
                passkey: DeviceSecrets::DEFAULT_PASSKEY,
                key: [0xA5; 16],
                last_now_ms: 0,
            }
        }
    }

    fn battery(number: u8, count: u8) -> BatteryPage {
        BatteryPage {
            number,
            count,
            serial: 1000 + u32::from(number),
            model: BatteryModel::Lfp12V8,
            capacity_dah: 2000,
            firmware: 0x0112,
            voltage_mv: 13_280,
            current_ma: -1500,
            min_temp_ddegc: 201,
            max_temp_ddegc: 215,
            flags: BatteryFlags {
                allowed_to_charge: true,
                allowed_to_discharge: true,
                balancing: false,
            },
            valid: true,
            lost: false,
            cells_mv: Vec::from_slice(&[3320, 3321, 3319, 3320]).unwrap(),
        }
    }

    fn status() -> StatusPage {
        StatusPage {
            soc_permille: Some(875),
            soc_estimated: false,
            bank_mv: Some(13_280),
            current_ma: Some(-3000),
            power_w: Some(-40),
            time_remaining_min: Some(1234),
            consumed_mah: Some(25_000),
            temp_ddegc: Some(215),
            atd: true,
            atc: true,
            prealarm: false,
            atd_reasons: 0,
            atc_reasons: 0,
            prealarm_reasons: 0,
            codes: 0,
        }
    }

    impl Device for Fake {
        fn status_page(&self) -> StatusPage {
            StatusPage {
                soc_permille: self.soc_permille,
                ..status()
            }
        }
        fn bank_page(&self) -> BankPage {
            BankPage {
                batteries: self.batteries,
                members: self.batteries,
                ..BankPage::default()
            }
        }
        fn battery_page(&self, number: u8) -> Option<BatteryPage> {
            (number < self.batteries).then(|| battery(number, self.batteries))
        }
        fn history_page(&self) -> HistoryPage {
            HistoryPage {
                cycles: 7,
                ..HistoryPage::default()
            }
        }
        fn settings(&self) -> Settings {
            self.settings
        }
        fn write_settings(&mut self, now_ms: u64, settings: Settings) -> Result<(), SettingsError> {
            self.settings.write(settings)?;
            self.last_now_ms = now_ms;
            Ok(())
        }
        fn set_soc(&mut self, now_ms: u64, soc_permille: u16) -> Result<(), ActionError> {
            if !self.bank_seen {
                return Err(ActionError::NotAvailable);
            }
            self.soc_permille = Some(soc_permille);
            self.last_now_ms = now_ms;
            Ok(())
        }
        fn synchronise(&mut self, now_ms: u64) -> Result<(), ActionError> {
            self.set_soc(now_ms, 1000)
        }
        fn reset_history(&mut self, now_ms: u64) {
            self.history_resets += 1;
            self.last_now_ms = now_ms;
        }
        fn reset_to_defaults(&mut self, now_ms: u64) {
            self.settings.factory_reset();
            self.last_now_ms = now_ms;
        }
        fn change_passkey(&mut self, now_ms: u64, passkey: u32) -> Result<(), ActionError> {
            self.passkey = passkey;
            self.last_now_ms = now_ms;
            Ok(())
        }
        fn advertisement_key(&self) -> [u8; 16] {
            self.key
        }
    }

    /// Runs one request; returns the reply and the response bytes.
    fn call(
        dev: &mut Fake,
        chr: Characteristic,
        access: Access,
        auth: bool,
        req: &[u8],
    ) -> (Status, std::vec::Vec<u8>) {
        let mut resp = [0u8; MAX_RESPONSE_LEN];
        let reply = handle_request(dev, 1_000, chr as u8, access, auth, req, &mut resp).unwrap();
        assert_eq!(resp[0], VERSION);
        assert_eq!(resp[1], reply.status as u8);
        (reply.status, resp[..reply.len].to_vec())
    }

    fn req<T: Serialize>(msg: &T) -> std::vec::Vec<u8> {
        let mut out = [0u8; MAX_REQUEST_LEN];
        let n = encode_request(msg, &mut out).unwrap();
        out[..n].to_vec()
    }

    fn body<T: DeserializeOwned>(resp: &[u8]) -> T {
        let (status, body) = decode_response(resp).unwrap();
        assert_eq!(status, Status::Ok);
        decode_body(body).unwrap()
    }

    /// BLE-1: one service, six characteristics, all with distinct 128-bit UUIDs on one base.
    #[test]
    fn ble_1_service_and_characteristic_uuids() {
        assert_eq!(SERVICE_UUID, 0xfde40001_2435_4d33_8157_077d40b73501);
        assert_eq!(
            Characteristic::Status.uuid(),
            0xfde40002_2435_4d33_8157_077d40b73501
        );
        assert_eq!(
            Characteristic::ControlPoint.uuid(),
            0xfde40007_2435_4d33_8157_077d40b73501
        );
        let mut uuids: std::vec::Vec<u128> = Characteristic::ALL.iter().map(|c| c.uuid()).collect();
        uuids.push(SERVICE_UUID);
        uuids.sort_unstable();
        uuids.dedup();
        assert_eq!(uuids.len(), 7);
        for chr in Characteristic::ALL {
            assert_eq!(Characteristic::from_u8(chr as u8), Some(chr));
        }
        assert_eq!(Characteristic::from_u8(0), None);
        assert_eq!(Characteristic::from_u8(7), None);
    }

    /// BLE-1: every page is readable on an open link and decodes to what the device holds.
    #[test]
    fn ble_1_pages_read_on_any_link() {
        let mut dev = Fake::new();
        let (s, r) = call(&mut dev, Characteristic::Status, Access::Read, false, &[]);
        assert_eq!(s, Status::Ok);
        assert_eq!(body::<StatusPage>(&r), dev.status_page());
        let (_, r) = call(&mut dev, Characteristic::Bank, Access::Read, false, &[]);
        assert_eq!(body::<BankPage>(&r).batteries, 2);
        let (_, r) = call(&mut dev, Characteristic::History, Access::Read, false, &[]);
        assert_eq!(body::<HistoryPage>(&r).cycles, 7);
        let (_, r) = call(&mut dev, Characteristic::Settings, Access::Read, false, &[]);
        assert_eq!(body::<Settings>(&r), Settings::default());
        assert_eq!(dev, Fake::new(), "reads change nothing");
    }

    /// BLE-1: a battery page is selected by a request payload; the default is battery 0 and a
    /// number past the bank is refused with NoSuchBattery.
    #[test]
    fn ble_1_battery_page_selected_by_number() {
        let mut dev = Fake::new();
        let (_, r) = call(&mut dev, Characteristic::Battery, Access::Read, false, &[]);
        assert_eq!(body::<BatteryPage>(&r), battery(0, 2));
        let (_, r) = call(
            &mut dev,
            Characteristic::Battery,
            Access::Write,
            false,
            &req(&BatterySelect { number: 1 }),
        );
        assert_eq!(body::<BatteryPage>(&r).serial, 1001);
        let (s, r) = call(
            &mut dev,
            Characteristic::Battery,
            Access::Read,
            false,
            &req(&BatterySelect { number: 2 }),
        );
        assert_eq!((s, r.len()), (Status::NoSuchBattery, 2));
        assert_eq!(dev, Fake::new());
    }

    /// BLE-1: the wire format is fixed: exact bytes of a request and a response.
    #[test]
    fn ble_1_exact_bytes() {
        assert_eq!(
            req(&Command::SetSoc { soc_permille: 500 }),
            [1, 0, 0xF4, 0x03]
        );
        assert_eq!(req(&Command::ReadAdvertisementKey), [1, 5]);
        assert_eq!(req(&BatterySelect { number: 3 }), [1, 3]);
        assert_eq!(
            req(&Settings::default()),
            [1, 0xAC, 0x1B, 40, 3, 20, 10, 0x9C, 0x18]
        );
        let mut dev = Fake::new();
        let (_, r) = call(&mut dev, Characteristic::History, Access::Read, false, &[]);
        assert_eq!(r, [1, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let (_, r) = call(
            &mut dev,
            Characteristic::ControlPoint,
            Access::Write,
            true,
            &[1, 5],
        );
        let mut expected = vec![1, 0];
        expected.extend_from_slice(&[0xA5; 16]);
        assert_eq!(r, expected);
    }

    /// BLE-1: the sizes documented in docs/protocol.md: the largest value of every page fits
    /// one ATT payload of MAX_RESPONSE_LEN.
    #[test]
    fn ble_1_largest_pages_fit_the_mtu_budget() {
        let mut out = [0u8; 512];
        let mut size = |page: &dyn Fn(&mut [u8]) -> usize| page(&mut out);
        let status = size(&|o| {
            let p = StatusPage {
                soc_permille: Some(u16::MAX),
                soc_estimated: true,
                bank_mv: Some(u32::MAX),
                current_ma: Some(i32::MIN),
                power_w: Some(i32::MIN),
                time_remaining_min: Some(u32::MAX),
                consumed_mah: Some(u32::MAX),
                temp_ddegc: Some(i16::MIN),
                atd: true,
                atc: true,
                prealarm: true,
                atd_reasons: u32::MAX,
                atc_reasons: u32::MAX,
                prealarm_reasons: u32::MAX,
                codes: u32::MAX,
            };
            encode_response(Status::Ok, Some(&p), o).unwrap()
        });
        let extreme = CellExtreme {
            mv: u16::MAX,
            battery: u8::MAX,
            cell: u8::MAX,
        };
        let temp = TempExtreme {
            ddegc: i16::MIN,
            battery: u8::MAX,
        };
        let bank = size(&|o| {
            let p = BankPage {
                balancer: BalancerState::Balancing,
                batteries: u8::MAX,
                members: u8::MAX,
                cells_total: u16::MAX,
                series: u8::MAX,
                parallel: u8::MAX,
                model: Some(BatteryModel::Lfp51V2),
                nominal_mv: u32::MAX,
                capacity_dah: u32::MAX,
                bank_mv: Some(u32::MAX),
                current_ma: Some(i32::MIN),
                min_cell: Some(extreme),
                max_cell: Some(extreme),
                min_temp: Some(temp),
                max_temp: Some(temp),
                config_error: true,
            };
            encode_response(Status::Ok, Some(&p), o).unwrap()
        });
        let battery = size(&|o| {
            let p = BatteryPage {
                serial: u32::MAX,
                capacity_dah: u16::MAX,
                firmware: u16::MAX,
                voltage_mv: u32::MAX,
                current_ma: i32::MIN,
                min_temp_ddegc: i16::MIN,
                max_temp_ddegc: i16::MIN,
                cells_mv: Vec::from_slice(&[u16::MAX; MAX_CELLS_PER_BATTERY]).unwrap(),
                ..battery(u8::MAX, u8::MAX)
            };
            encode_response(Status::Ok, Some(&p), o).unwrap()
        });
        let history = size(&|o| {
            let p = HistoryPage {
                deepest_discharge_mah: u32::MAX,
                cumulative_drawn_mah: u64::MAX,
                discharged_energy_mwh: u64::MAX,
                charged_energy_mwh: u64::MAX,
                synchronisations: u32::MAX,
                cycles: u32::MAX,
                since_full_charge_ms: Some(u64::MAX),
                min_bank_mv: Some(u32::MAX),
                max_bank_mv: Some(u32::MAX),
                min_cell_mv: Some(u16::MAX),
                max_cell_mv: Some(u16::MAX),
                min_temp_ddegc: Some(i16::MIN),
                max_temp_ddegc: Some(i16::MIN),
                last_errors: [Some(u16::MAX); LAST_ERRORS],
            };
            encode_response(Status::Ok, Some(&p), o).unwrap()
        });
        let settings = size(&|o| {
            let p = Settings {
                charged_cell_mv: u16::MAX,
                tail_current_permille: u16::MAX,
                charged_detection_min: u8::MAX,
                low_soc_warning_pct: u8::MAX,
                discharge_floor_pct: u8::MAX,
                prealarm_cell_mv: u16::MAX,
            };
            encode_response(Status::Ok, Some(&p), o).unwrap()
        });
        let refusal = size(&|o| {
            let p = Refusal {
                field: u8::MAX,
                min: u32::MAX,
                max: u32::MAX,
            };
            encode_response(Status::InvalidValue, Some(&p), o).unwrap()
        });
        // These numbers are the table in docs/protocol.md.
        assert_eq!(
            (status, bank, battery, history, settings, refusal),
            (64, 57, 86, 102, 14, 13)
        );
        assert!([status, bank, battery, history, settings, refusal, 18]
            .iter()
            .all(|&n| n <= MAX_RESPONSE_LEN));
        // Even a 20-byte ATT payload (the default MTU of 23) carries every request.
        let set = req(&Settings {
            charged_cell_mv: u16::MAX,
            tail_current_permille: u16::MAX,
            prealarm_cell_mv: u16::MAX,
            ..Settings::default()
        });
        assert_eq!(set.len(), 13);
        assert_eq!(req(&Command::ChangePasskey { passkey: u32::MAX }).len(), 7);
    }

    /// BLE-2: every write and action is refused on an unauthenticated link with its own
    /// status, and nothing changes; the same requests succeed when authenticated.
    #[test]
    fn ble_2_writes_and_actions_need_an_authenticated_link() {
        let new_settings = Settings {
            charged_cell_mv: 3450,
            ..Settings::default()
        };
        let writes: [(Characteristic, std::vec::Vec<u8>); 7] = [
            (Characteristic::Settings, req(&new_settings)),
            (
                Characteristic::ControlPoint,
                req(&Command::SetSoc { soc_permille: 500 }),
            ),
            (Characteristic::ControlPoint, req(&Command::Synchronise)),
            (Characteristic::ControlPoint, req(&Command::ResetHistory)),
            (Characteristic::ControlPoint, req(&Command::ResetToDefaults)),
            (
                Characteristic::ControlPoint,
                req(&Command::ChangePasskey { passkey: 123_456 }),
            ),
            (
                Characteristic::ControlPoint,
                req(&Command::ReadAdvertisementKey),
            ),
        ];
        let mut dev = Fake::new();
        for (chr, bytes) in &writes {
            let (s, r) = call(&mut dev, *chr, Access::Write, false, bytes);
            assert_eq!((s, r.len()), (Status::NotAuthenticated, 2), "{bytes:?}");
            // Garbage is refused for the same reason: the link is checked first.
            let (s, _) = call(&mut dev, *chr, Access::Write, false, &[0xFF, 0xFF]);
            assert_eq!(s, Status::NotAuthenticated);
        }
        assert_eq!(dev, Fake::new());
        for (chr, bytes) in &writes {
            let (s, _) = call(&mut dev, *chr, Access::Write, true, bytes);
            assert_eq!(s, Status::Ok, "{bytes:?}");
        }
        assert_eq!(dev.history_resets, 1);
        assert_eq!(dev.passkey, 123_456);
        assert_eq!(dev.soc_permille, Some(1000), "set 50 %, then synchronised");
        assert_eq!(
            dev.settings,
            Settings::default(),
            "written, then reset to defaults"
        );
        assert_eq!(dev.last_now_ms, 1_000);
    }

    /// BLE-2: a settings write answers with the settings now in force; an out-of-range value
    /// or a broken cross-rule is refused with the field and its range, nothing changes (SET-1).
    #[test]
    fn ble_2_settings_write_validated_as_a_whole() {
        let mut dev = Fake::new();
        let good = Settings {
            tail_current_permille: 25,
            ..Settings::default()
        };
        let (s, r) = call(
            &mut dev,
            Characteristic::Settings,
            Access::Write,
            true,
            &req(&good),
        );
        assert_eq!(s, Status::Ok);
        assert_eq!(body::<Settings>(&r), good);
        let before = dev.clone();
        let bad = Settings {
            charged_cell_mv: 3700,
            ..good
        };
        let (s, r) = call(
            &mut dev,
            Characteristic::Settings,
            Access::Write,
            true,
            &req(&bad),
        );
        assert_eq!(s, Status::InvalidValue);
        assert_eq!(
            decode_body::<Refusal>(&r[2..]).unwrap(),
            Refusal {
                field: 0,
                min: 3350,
                max: 3650
            }
        );
        let cross = Settings {
            low_soc_warning_pct: 10,
            discharge_floor_pct: 15,
            ..good
        };
        let (s, r) = call(
            &mut dev,
            Characteristic::Settings,
            Access::Write,
            true,
            &req(&cross),
        );
        assert_eq!(s, Status::InvalidValue);
        assert_eq!(
            decode_body::<Refusal>(&r[2..]).unwrap(),
            Refusal {
                field: 3,
                min: 16,
                max: 99
            }
        );
        assert_eq!(dev, before);
    }

    /// BLE-2: action arguments are range-checked (SoC ≤ 100 %, passkey six digits), and an
    /// action the device cannot do now answers NotAvailable; nothing changes in either case.
    #[test]
    fn ble_2_action_arguments_checked() {
        let mut dev = Fake::new();
        let (s, r) = call(
            &mut dev,
            Characteristic::ControlPoint,
            Access::Write,
            true,
            &req(&Command::SetSoc { soc_permille: 1001 }),
        );
        assert_eq!(s, Status::InvalidValue);
        assert_eq!(
            decode_body::<Refusal>(&r[2..]).unwrap(),
            Refusal {
                field: 0,
                min: 0,
                max: 1000
            }
        );
        let (s, _) = call(
            &mut dev,
            Characteristic::ControlPoint,
            Access::Write,
            true,
            &req(&Command::ChangePasskey { passkey: 1_000_000 }),
        );
        assert_eq!(s, Status::InvalidValue);
        assert_eq!(dev, Fake::new());
        dev.bank_seen = false;
        let (s, _) = call(
            &mut dev,
            Characteristic::ControlPoint,
            Access::Write,
            true,
            &req(&Command::Synchronise),
        );
        assert_eq!(s, Status::NotAvailable);
        assert_eq!(dev.soc_permille, None);
    }

    /// BLE-4: truncated, oversized, unknown-version, unknown-command, garbage, unknown
    /// characteristic and unsupported access each get their defined status; nothing changes.
    #[test]
    fn ble_4_bad_requests_get_defined_errors() {
        let cp = Characteristic::ControlPoint;
        let cases: [(Characteristic, Access, &[u8], Status); 14] = [
            (cp, Access::Write, &[], Status::Truncated),
            (cp, Access::Write, &[1], Status::Truncated),
            (cp, Access::Write, &[1, 0], Status::Truncated),
            (cp, Access::Write, &[1, 0, 0xF4], Status::Truncated),
            (cp, Access::Write, &[1, 1, 0], Status::Oversized),
            (
                cp,
                Access::Write,
                &[0; MAX_REQUEST_LEN + 1],
                Status::Oversized,
            ),
            (cp, Access::Write, &[2, 1], Status::UnknownVersion),
            (cp, Access::Write, &[0, 1], Status::UnknownVersion),
            (cp, Access::Write, &[1, 6], Status::UnknownCommand),
            (cp, Access::Write, &[1, 0x80, 0x01], Status::UnknownCommand),
            (
                cp,
                Access::Write,
                &[1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
                Status::Malformed,
            ),
            (
                Characteristic::Settings,
                Access::Write,
                &[1, 0xAC, 0x1B, 40, 3, 20, 10, 0x9C],
                Status::Truncated,
            ),
            (
                Characteristic::Battery,
                Access::Read,
                &[1, 0, 0],
                Status::Oversized,
            ),
            (
                Characteristic::Status,
                Access::Read,
                &[1],
                Status::Oversized,
            ),
        ];
        let mut dev = Fake::new();
        for (chr, access, bytes, want) in cases {
            let (s, r) = call(&mut dev, chr, access, true, bytes);
            assert_eq!((s, r.len()), (want, 2), "{chr:?} {bytes:?}");
        }
        for chr in [
            Characteristic::Status,
            Characteristic::Bank,
            Characteristic::History,
        ] {
            assert_eq!(
                call(&mut dev, chr, Access::Write, true, &[1, 0]).0,
                Status::UnsupportedAccess
            );
        }
        assert_eq!(
            call(&mut dev, cp, Access::Read, true, &[]).0,
            Status::UnsupportedAccess
        );
        let mut resp = [0u8; MAX_RESPONSE_LEN];
        for number in [0, 7, 255] {
            let reply =
                handle_request(&mut dev, 0, number, Access::Read, true, &[], &mut resp).unwrap();
            assert_eq!(
                (reply.status, reply.len),
                (Status::UnknownCharacteristic, 2)
            );
        }
        // A varint longer than its type allows is malformed; a longer-than-needed one is the
        // same number (postcard accepts it).
        assert_eq!(
            decode_request::<Settings>(&[1, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(Status::Malformed)
        );
        assert_eq!(decode_command(&[1, 0x81, 0x00]), Ok(Command::Synchronise));
        assert_eq!(
            decode_request::<BatterySelect>(&[1, 0x82, 0x00]),
            Err(Status::Oversized)
        );
        assert_eq!(dev, Fake::new());
    }

    /// BLE-4: a response buffer that is too small is the caller's error, before anything runs.
    #[test]
    fn ble_4_small_response_buffer_changes_nothing() {
        let mut dev = Fake::new();
        let mut small = [0u8; MAX_RESPONSE_LEN - 1];
        let cmd = req(&Command::ResetHistory);
        assert_eq!(
            handle_request(
                &mut dev,
                0,
                Characteristic::ControlPoint as u8,
                Access::Write,
                true,
                &cmd,
                &mut small
            ),
            Err(ProtocolError::BufferTooSmall {
                required: MAX_RESPONSE_LEN
            })
        );
        assert_eq!(dev, Fake::new());
    }

    /// BLE-4 (client side): responses with a bad version, unknown status or nothing in them are
    /// rejected by the decoder.
    #[test]
    fn ble_4_response_decoder_rejects_bad_responses() {
        assert_eq!(decode_response(&[]), Err(Status::Truncated));
        assert_eq!(decode_response(&[1]), Err(Status::Truncated));
        assert_eq!(decode_response(&[2, 0]), Err(Status::UnknownVersion));
        assert_eq!(decode_response(&[1, 200]), Err(Status::Malformed));
        assert_eq!(
            decode_response(&[1, 8]),
            Ok((Status::NoSuchBattery, &[][..]))
        );
        assert_eq!(decode_body::<Refusal>(&[0, 1]), Err(Status::Truncated));
        for status in Status::ALL {
            assert_eq!(Status::from_u8(status as u8), Some(status));
        }
    }

    fn report(serial: u32) -> crate::bus::BatteryReport {
        crate::bus::BatteryReport {
            serial,
            model: BatteryModel::Lfp12V8,
            capacity_dah: 2000,
            firmware: 0x0112,
            cells_mv: Vec::from_slice(&[3300, 3301, 3302, 3303]).unwrap(),
            temps_ddegc: Vec::from_slice(&[200, 215]).unwrap(),
            current_ma: -2000,
            flags: BatteryFlags {
                allowed_to_charge: true,
                allowed_to_discharge: true,
                balancing: false,
            },
        }
    }

    fn bms_call(
        bms: &mut Bms,
        secrets: &mut DeviceSecrets,
        chr: Characteristic,
        access: Access,
        bytes: &[u8],
    ) -> (Reply, std::vec::Vec<u8>) {
        let mut resp = [0u8; MAX_RESPONSE_LEN];
        let mut device = BmsDevice { bms, secrets };
        let reply = handle_request(
            &mut device,
            10_000,
            chr as u8,
            access,
            true,
            bytes,
            &mut resp,
        )
        .unwrap();
        (reply, resp[..reply.len].to_vec())
    }

    /// BLE-1, BLE-2: the real Bms behind the protocol: pages reflect its state, actions reach
    /// it, and the reply says which records to persist.
    #[test]
    fn ble_1_bms_device_serves_pages_and_actions() {
        let key = [7u8; 16];
        let mut bms = Bms::new(crate::bms::Config {
            device_key: key,
            ..crate::bms::Config::default()
        });
        let mut secrets = DeviceSecrets {
            passkey: DeviceSecrets::DEFAULT_PASSKEY,
            adv_key: key,
        };
        let cp = Characteristic::ControlPoint;

        let (reply, r) = bms_call(
            &mut bms,
            &mut secrets,
            Characteristic::Status,
            Access::Read,
            &[],
        );
        assert_eq!(reply.changed, Changed::default());
        let status = body::<StatusPage>(&r);
        assert_eq!(
            (status.soc_permille, status.bank_mv, status.atd, status.atc),
            (None, None, false, false)
        );
        assert_eq!(
            bms_call(
                &mut bms,
                &mut secrets,
                Characteristic::Battery,
                Access::Read,
                &[]
            )
            .0
            .status,
            Status::NoSuchBattery
        );
        let (reply, _) = bms_call(
            &mut bms,
            &mut secrets,
            cp,
            Access::Write,
            &req(&Command::SetSoc { soc_permille: 500 }),
        );
        assert_eq!(
            (reply.status, reply.changed.soc),
            (Status::NotAvailable, false),
            "no bank yet"
        );

        // Time only moves forward: the bank starts after the requests above (at 10 s).
        for t in (20_000..=23_000).step_by(500) {
            for serial in [20, 10] {
                bms.handle_report(t, &report(serial)).unwrap();
            }
            let inputs = crate::bms::Inputs {
                supply_mv: 13_206,
                ..crate::bms::Inputs::default()
            };
            let _ = bms.step(t, &inputs);
        }
        let (_, r) = bms_call(
            &mut bms,
            &mut secrets,
            Characteristic::Bank,
            Access::Read,
            &[],
        );
        let bank = body::<BankPage>(&r);
        assert_eq!((bank.batteries, bank.bank_mv), (2, Some(13_206)));
        let (_, r) = bms_call(
            &mut bms,
            &mut secrets,
            Characteristic::Battery,
            Access::Read,
            &req(&BatterySelect { number: 1 }),
        );
        let page = body::<BatteryPage>(&r);
        assert_eq!((page.serial, page.count, page.voltage_mv), (20, 2, 13_206));
        assert_eq!(page.cells_mv.as_slice(), &[3300, 3301, 3302, 3303]);

        let (reply, _) = bms_call(
            &mut bms,
            &mut secrets,
            cp,
            Access::Write,
            &req(&Command::SetSoc { soc_permille: 500 }),
        );
        assert_eq!((reply.status, reply.changed.soc), (Status::Ok, true));
        assert_eq!(bms.monitor().soc_permille(), Some(500));
        let (reply, _) = bms_call(
            &mut bms,
            &mut secrets,
            cp,
            Access::Write,
            &req(&Command::ResetHistory),
        );
        assert!(reply.changed.history);
        let new = Settings {
            discharge_floor_pct: 5,
            ..Settings::default()
        };
        let (reply, _) = bms_call(
            &mut bms,
            &mut secrets,
            Characteristic::Settings,
            Access::Write,
            &req(&new),
        );
        assert_eq!(
            (reply.status, reply.changed.settings, *bms.settings()),
            (Status::Ok, true, new)
        );
        let (reply, _) = bms_call(
            &mut bms,
            &mut secrets,
            cp,
            Access::Write,
            &req(&Command::ResetToDefaults),
        );
        assert_eq!(
            (reply.changed.settings, *bms.settings()),
            (true, Settings::default())
        );
        let (reply, _) = bms_call(
            &mut bms,
            &mut secrets,
            cp,
            Access::Write,
            &req(&Command::ChangePasskey { passkey: 424_242 }),
        );
        assert_eq!((reply.changed.secrets, secrets.passkey), (true, 424_242));
        let (_, r) = bms_call(
            &mut bms,
            &mut secrets,
            cp,
            Access::Write,
            &req(&Command::ReadAdvertisementKey),
        );
        assert_eq!(body::<AdvertisementKey>(&r).key, key);
    }

    /// BLE-1: docs/protocol.md documents every status, reason and code with its number, the
    /// UUIDs and the size table, so the document cannot drift from the code.
    #[test]
    fn ble_1_protocol_doc_matches_code() {
        let doc = include_str!("../../../docs/protocol.md");
        for status in Status::ALL {
            let row = format!("| {} | {:?} |", status as u8, status);
            assert!(doc.contains(&row), "missing status row {row}");
        }
        for reason in crate::Reason::ALL {
            assert!(
                doc.contains(&format!("\n| {} | ", reason as u8)),
                "reason {reason:?}"
            );
        }
        for code in crate::codes::Code::ALL {
            let severity = match code.severity() {
                crate::codes::Severity::Warning => "warning",
                crate::codes::Severity::Alarm => "alarm",
                crate::codes::Severity::Error => "error",
            };
            let row = format!("| {} | {severity} |", code.number());
            assert!(doc.contains(&row), "missing code row {row}");
        }
        for chr in Characteristic::ALL {
            let uuid = format!("{:032x}", chr.uuid());
            let text = format!(
                "`{}-{}-{}-{}-{}`",
                &uuid[..8],
                &uuid[8..12],
                &uuid[12..16],
                &uuid[16..20],
                &uuid[20..]
            );
            assert!(
                doc.contains(&format!("| {} | ", chr as u8)) && doc.contains(&text),
                "{chr:?} {text}"
            );
        }
        for row in [
            "| StatusPage | 64 |",
            "| BankPage | 57 |",
            "| BatteryPage (16 cells) | 86 |",
            "| HistoryPage | 102 |",
            "| Settings | 14 |",
            "| AdvertisementKey | 18 |",
            "| InvalidValue with Refusal | 13 |",
        ] {
            assert!(doc.contains(row), "{row}");
        }
    }

    fn settings_strategy() -> impl Strategy<Value = Settings> {
        (
            any::<u16>(),
            any::<u16>(),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<u16>(),
        )
            .prop_map(|(a, b, c, d, e, f)| Settings {
                charged_cell_mv: a,
                tail_current_permille: b,
                charged_detection_min: c,
                low_soc_warning_pct: d,
                discharge_floor_pct: e,
                prealarm_cell_mv: f,
            })
    }

    fn command_strategy() -> impl Strategy<Value = Command> {
        prop_oneof![
            any::<u16>().prop_map(|soc_permille| Command::SetSoc { soc_permille }),
            Just(Command::Synchronise),
            Just(Command::ResetHistory),
            Just(Command::ResetToDefaults),
            any::<u32>().prop_map(|passkey| Command::ChangePasskey { passkey }),
            Just(Command::ReadAdvertisementKey),
        ]
    }

    fn model_strategy() -> impl Strategy<Value = BatteryModel> {
        prop_oneof![
            Just(BatteryModel::Lfp12V8),
            Just(BatteryModel::Lfp25V6),
            Just(BatteryModel::Lfp51V2)
        ]
    }

    prop_compose! {
        fn status_strategy()(
            soc in proptest::option::of(any::<u16>()), est in any::<bool>(),
            mv in proptest::option::of(any::<u32>()), ma in proptest::option::of(any::<i32>()),
            w in proptest::option::of(any::<i32>()), ttg in proptest::option::of(any::<u32>()),
            mah in proptest::option::of(any::<u32>()), t in proptest::option::of(any::<i16>()),
            outs in any::<(bool, bool, bool)>(), bits in any::<(u32, u32, u32, u32)>(),
        ) -> StatusPage {
            StatusPage {
                soc_permille: soc, soc_estimated: est, bank_mv: mv, current_ma: ma, power_w: w,
                time_remaining_min: ttg, consumed_mah: mah, temp_ddegc: t,
                atd: outs.0, atc: outs.1, prealarm: outs.2,
                atd_reasons: bits.0, atc_reasons: bits.1, prealarm_reasons: bits.2, codes: bits.3,
            }
        }
    }

    prop_compose! {
        fn cell_strategy()(mv in any::<u16>(), battery in any::<u8>(), cell in any::<u8>()) -> CellExtreme {
            CellExtreme { mv, battery, cell }
        }
    }

    prop_compose! {
        fn temp_strategy()(ddegc in any::<i16>(), battery in any::<u8>()) -> TempExtreme {
            TempExtreme { ddegc, battery }
        }
    }

    prop_compose! {
        fn bank_strategy()(
            balancer in prop_oneof![Just(BalancerState::Unknown), Just(BalancerState::Balanced), Just(BalancerState::Imbalanced), Just(BalancerState::Balancing)],
            counts in any::<(u8, u8, u16, u8, u8)>(), model in proptest::option::of(model_strategy()),
            nominal_mv in any::<u32>(), capacity_dah in any::<u32>(),
            bank_mv in proptest::option::of(any::<u32>()), current_ma in proptest::option::of(any::<i32>()),
            min_cell in proptest::option::of(cell_strategy()), max_cell in proptest::option::of(cell_strategy()),
            min_temp in proptest::option::of(temp_strategy()), max_temp in proptest::option::of(temp_strategy()),
            config_error in any::<bool>(),
        ) -> BankPage {
            BankPage {
                balancer, batteries: counts.0, members: counts.1, cells_total: counts.2, series: counts.3,
                parallel: counts.4, model, nominal_mv, capacity_dah, bank_mv, current_ma,
                min_cell, max_cell, min_temp, max_temp, config_error,
            }
        }
    }

    prop_compose! {
        fn battery_strategy()(
            ids in any::<(u8, u8, u32)>(), model in model_strategy(), cap in any::<u16>(), fw in any::<u16>(),
            mv in any::<u32>(), ma in any::<i32>(), temps in any::<(i16, i16)>(),
            flags in any::<(bool, bool, bool)>(), state in any::<(bool, bool)>(),
            cells in proptest::collection::vec(any::<u16>(), 0..=MAX_CELLS_PER_BATTERY),
        ) -> BatteryPage {
            BatteryPage {
                number: ids.0, count: ids.1, serial: ids.2, model, capacity_dah: cap, firmware: fw,
                voltage_mv: mv, current_ma: ma, min_temp_ddegc: temps.0, max_temp_ddegc: temps.1,
                flags: BatteryFlags { allowed_to_charge: flags.0, allowed_to_discharge: flags.1, balancing: flags.2 },
                valid: state.0, lost: state.1, cells_mv: Vec::from_slice(&cells).unwrap(),
            }
        }
    }

    prop_compose! {
        fn history_strategy()(
            a in any::<(u32, u64, u64, u64, u32, u32)>(),
            since in proptest::option::of(any::<u64>()),
            bank in any::<(Option<u32>, Option<u32>)>(), cell in any::<(Option<u16>, Option<u16>)>(),
            temp in any::<(Option<i16>, Option<i16>)>(), errors in any::<[Option<u16>; LAST_ERRORS]>(),
        ) -> HistoryPage {
            HistoryPage {
                deepest_discharge_mah: a.0, cumulative_drawn_mah: a.1, discharged_energy_mwh: a.2,
                charged_energy_mwh: a.3, synchronisations: a.4, cycles: a.5, since_full_charge_ms: since,
                min_bank_mv: bank.0, max_bank_mv: bank.1, min_cell_mv: cell.0, max_cell_mv: cell.1,
                min_temp_ddegc: temp.0, max_temp_ddegc: temp.1, last_errors: errors,
            }
        }
    }

    fn round_trip_request<T: Serialize + DeserializeOwned + PartialEq + fmt::Debug>(
        msg: &T,
    ) -> Result<(), TestCaseError> {
        let mut out = [0u8; MAX_REQUEST_LEN];
        let n = encode_request(msg, &mut out).unwrap();
        prop_assert_eq!(&decode_request::<T>(&out[..n]).unwrap(), msg);
        Ok(())
    }

    fn round_trip_response<T: Serialize + DeserializeOwned + PartialEq + fmt::Debug>(
        status: Status,
        msg: &T,
    ) -> Result<(), TestCaseError> {
        let mut out = [0u8; MAX_RESPONSE_LEN];
        let n = encode_response(status, Some(msg), &mut out).unwrap();
        let (got_status, body) = decode_response(&out[..n]).unwrap();
        prop_assert_eq!(got_status, status);
        prop_assert_eq!(&decode_body::<T>(body).unwrap(), msg);
        Ok(())
    }

    proptest! {
        /// BLE-1: every request message round-trips through its encoder and decoder.
        #[test]
        fn ble_1_requests_round_trip(cmd in command_strategy(), settings in settings_strategy(), number in any::<u8>()) {
            round_trip_request(&cmd)?;
            let mut out = [0u8; MAX_REQUEST_LEN];
            let n = encode_request(&cmd, &mut out).unwrap();
            prop_assert_eq!(decode_command(&out[..n]), Ok(cmd));
            round_trip_request(&settings)?;
            round_trip_request(&BatterySelect { number })?;
        }

        /// BLE-1: every response message round-trips through its encoder and decoder.
        #[test]
        fn ble_1_responses_round_trip(
            status in status_strategy(), bank in bank_strategy(), battery in battery_strategy(),
            history in history_strategy(), settings in settings_strategy(), key in any::<[u8; 16]>(),
            refusal in any::<(u8, u32, u32)>(),
        ) {
            round_trip_response(Status::Ok, &status)?;
            round_trip_response(Status::Ok, &bank)?;
            round_trip_response(Status::Ok, &battery)?;
            round_trip_response(Status::Ok, &history)?;
            round_trip_response(Status::Ok, &settings)?;
            round_trip_response(Status::Ok, &AdvertisementKey { key })?;
            round_trip_response(Status::InvalidValue, &Refusal { field: refusal.0, min: refusal.1, max: refusal.2 })?;
            let secrets = DeviceSecrets { passkey: refusal.1, adv_key: key };
            let bytes = postcard::to_allocvec(&secrets).unwrap();
            prop_assert_eq!(postcard::from_bytes::<DeviceSecrets>(&bytes).unwrap(), secrets);
        }

        /// BLE-4: any bytes on any characteristic, access and link get a well-formed response
        /// with a known status and never panic; whatever is refused changes nothing.
        #[test]
        fn ble_4_any_bytes_answered_refusals_change_nothing(
            chr in 0u8..9, write in any::<bool>(), auth in any::<bool>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut dev = Fake::new();
            let access = if write { Access::Write } else { Access::Read };
            let mut resp = [0u8; MAX_RESPONSE_LEN];
            let reply = handle_request(&mut dev, 5, chr, access, auth, &bytes, &mut resp).unwrap();
            prop_assert!(reply.len >= 2 && reply.len <= MAX_RESPONSE_LEN);
            prop_assert_eq!(decode_response(&resp[..reply.len]).map(|r| r.0), Ok(reply.status));
            if reply.status != Status::Ok {
                prop_assert_eq!(&dev, &Fake::new());
            }
            if !auth && write && chr != Characteristic::Battery as u8 {
                prop_assert_eq!(&dev, &Fake::new());
            }
        }

        /// BLE-4: the settings decoder never panics; what it accepts re-encodes to a request
        /// that decodes to the same settings (minimal varints; the input may use longer ones).
        #[test]
        fn ble_4_settings_decoder_total(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(settings) = decode_settings(&bytes) {
                let mut out = [0u8; MAX_REQUEST_LEN];
                let n = encode_request(&settings, &mut out).unwrap();
                prop_assert!(n <= bytes.len());
                prop_assert_eq!(decode_settings(&out[..n]), Ok(settings));
            }
        }
    }
}
