//! The top level of the core: [`Bms`] ties bank, protection, monitor, history, settings and LEDs
//! together. Inputs come in through `handle_*` calls and [`Bms::step`], decisions go out as
//! [`Decisions`]; [`Bms::next_deadline_ms`] says when to call again.

use heapless::Vec;

use crate::bank::Bank;
use crate::bus::BatteryReport;
use crate::codes::ActiveCodes;
pub use crate::leds::LedPattern;
use crate::limits;
pub use crate::protection::{Reason, Reasons};
use crate::settings::Settings;

/// Most events one [`Decisions`] carries; further events in the same step are counted in
/// [`Decisions::events_dropped`].
pub const MAX_EVENTS: usize = 16;

/// What the caller restored and configured before start.
///
/// Build it with struct-update syntax from [`Config::default`] so that fields added later do not
/// break callers: `Config { settings, ..Config::default() }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The user settings (factory defaults when none were stored).
    pub settings: Settings,
    /// True when stored settings existed but were corrupt or unreadable (SET-3): defaults are
    /// used and an error is raised.
    pub settings_corrupt: bool,
    /// True when stored monitor/history records were corrupt or unreadable (SET-3).
    pub records_corrupt: bool,
    /// The device's own 128-bit Instant Readout key (BLE-3).
    pub device_key: [u8; 16],
    /// The Victron product id advertised in Instant Readout (BLE-3).
    pub product_id: u16,
}

/// Factory settings until `settings.rs` provides its own (minimal path, core-monitor owns it).
const FACTORY_SETTINGS: Settings = Settings {
    charged_cell_mv: 3500,
    tail_current_permille: 40,
    charged_detection_min: 3,
    low_soc_warning_pct: 20,
    discharge_floor_pct: 10,
    prealarm_cell_mv: 3100,
};

impl Default for Config {
    fn default() -> Self {
        Config {
            settings: FACTORY_SETTINGS,
            settings_corrupt: false,
            records_corrupt: false,
            device_key: [0; 16],
            product_id: 0xA3F0,
        }
    }
}

/// The BMS's own measurements, passed to every [`Bms::step`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    /// Voltage at the Remote H terminal in mV, against battery minus.
    pub remote_h_mv: u32,
    /// Voltage at the Remote L terminal in mV, against battery minus.
    pub remote_l_mv: u32,
    /// The BMS supply voltage in mV, which is the bank voltage (the BMS is supplied by the bank).
    pub supply_mv: u32,
    /// True while a BLE app is connected (LED-1).
    pub app_connected: bool,
}

/// Firmware-update progress reported by the platform (PROT-10, DFU-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DfuEvent {
    /// An update attempt started (first image chunk received).
    Started = 0,
    /// The image was received and verified completely; a reboot into it follows.
    Completed = 1,
    /// The update failed (transfer or verification error).
    Failed = 2,
    /// The update was aborted (link lost, cancelled, timed out).
    Aborted = 3,
}

/// One of the three protection outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Output {
    /// Load disconnect: high = discharging allowed.
    Atd = 0,
    /// Charge disconnect: high = charging allowed.
    Atc = 1,
    /// Pre-alarm: high = alarm.
    Prealarm = 2,
}

/// Something that happened in this step, for logging and notifying (PROT-11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// An output changed state; `reasons` says why it is now free-floating (ATD, ATC) or active
    /// (pre-alarm), empty when it returned to normal.
    OutputChanged {
        /// Which output.
        output: Output,
        /// The new state: true = high.
        high: bool,
        /// Why (see above).
        reasons: Reasons,
    },
    /// A code became active.
    CodeRaised(crate::codes::Code),
    /// A code became inactive.
    CodeCleared(crate::codes::Code),
}

/// What the caller must apply after one [`Bms::step`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Decisions {
    /// Load disconnect output: true = high = loads allowed.
    pub atd: bool,
    /// Charge disconnect output: true = high = charging allowed.
    pub atc: bool,
    /// Pre-alarm output: true = high = alarm.
    pub prealarm: bool,
    /// Why ATD is free-floating (empty when high).
    pub atd_reasons: Reasons,
    /// Why ATC is free-floating (empty when high).
    pub atc_reasons: Reasons,
    /// Why the pre-alarm is active (empty when free-floating).
    pub prealarm_reasons: Reasons,
    /// Blue LED pattern (LED-1).
    pub led_blue: LedPattern,
    /// Red LED pattern (LED-2).
    pub led_red: LedPattern,
    /// PROT-12: low-power mode (slower tick, slower advertising).
    pub low_power: bool,
    /// The tick period in ms the caller should use now ([`limits::TICK_MS`] or the low-power tick).
    pub tick_ms: u32,
    /// The active codes after this step.
    pub codes: ActiveCodes,
    /// What happened in this step, oldest first.
    pub events: Vec<Event, MAX_EVENTS>,
    /// Events that did not fit into `events`.
    pub events_dropped: u16,
    /// True when the Instant Readout payload should be rebuilt (values changed).
    pub adv_changed: bool,
    /// True when the status page changed (for GATT notifications).
    pub status_changed: bool,
}

/// The whole BMS state: fixed size, no heap. One owner calls its methods in order:
/// `handle_report`/`handle_dfu` as inputs arrive, `step` every tick, then sleep until
/// `next_deadline_ms`.
#[derive(Clone, Debug)]
pub struct Bms {
    config: Config,
    bank: Bank,
    now_ms: u64,
    codes: ActiveCodes,
}

impl Bms {
    /// Starts with the settings and persisted state restored by the caller.
    pub fn new(config: Config) -> Self {
        let mut codes = ActiveCodes::EMPTY;
        codes.set(crate::codes::Code::SettingsCorrupt, config.settings_corrupt);
        codes.set(crate::codes::Code::RecordsCorrupt, config.records_corrupt);
        Bms {
            config,
            bank: Bank::new(),
            now_ms: 0,
            codes,
        }
    }

    /// A decoded battery report arrived over the bus at `now_ms`.
    pub fn handle_report(&mut self, now_ms: u64, report: &BatteryReport) {
        self.now_ms = self.now_ms.max(now_ms);
        self.bank.handle_report(self.now_ms, report);
    }

    /// Firmware-update progress at `now_ms` (PROT-10).
    pub fn handle_dfu(&mut self, now_ms: u64, _event: DfuEvent) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// One control step at `now_ms` (every [`Decisions::tick_ms`]): the BMS's own measurements
    /// in, decisions out.
    pub fn step(&mut self, now_ms: u64, inputs: &Inputs) -> Decisions {
        self.now_ms = self.now_ms.max(now_ms);
        let mut all = Reasons::EMPTY;
        all.insert(Reason::NoValidData);
        Decisions {
            atd: false,
            atc: false,
            prealarm: false,
            atd_reasons: all,
            atc_reasons: all,
            prealarm_reasons: Reasons::EMPTY,
            led_blue: if inputs.app_connected {
                LedPattern::Solid
            } else {
                LedPattern::Blink
            },
            led_red: LedPattern::Off,
            low_power: false,
            tick_ms: limits::TICK_MS,
            codes: self.codes,
            events: Vec::new(),
            events_dropped: 0,
            adv_changed: false,
            status_changed: false,
        }
    }

    /// When to call [`Bms::step`] again at the latest, in ms on the caller's clock.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        Some(self.now_ms.saturating_add(u64::from(limits::TICK_MS)))
    }

    /// The configuration the BMS runs with (settings, key, product id).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current user settings.
    pub fn settings(&self) -> &Settings {
        &self.config.settings
    }

    /// The battery bank: batteries, topology and aggregates (BANK-3).
    pub fn bank(&self) -> &Bank {
        &self.bank
    }

    /// The active error, alarm and warning codes.
    pub fn codes(&self) -> ActiveCodes {
        self.codes
    }
}
