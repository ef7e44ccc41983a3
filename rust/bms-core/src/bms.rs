//! The top level of the core: [`Bms`] ties bank, protection, monitor, history, balancer, LEDs
//! and the Instant Readout advertiser together.
//!
//! Inputs: battery reports ([`Bms::handle_report`]), firmware-update progress
//! ([`Bms::handle_dfu`]), the BMS's own measurements each tick ([`Bms::step`] with [`Inputs`])
//! and user actions (`set_soc`, `synchronise`, `write_settings`, ...). Outputs: [`Decisions`]
//! from each step, the deadline for the next one ([`Bms::next_deadline_ms`]), read-only views
//! (`bank()`, `monitor()`, `history()`, `settings()`, `codes()`, `readout_values()`). Restoring
//! at start and persisting after every step are [`crate::node::Node`]'s: callers hold a node,
//! not a bare `Bms` (docs/persistence.md).
//!
//! One step runs, in order: bank (lost batteries, topology, aggregates) → monitor and history
//! (only with a complete, valid data set) → protection → balancer → codes → LEDs → readout.
//! Time only moves forward: an older `now_ms` than already seen counts as no time passed.

use heapless::Vec;

use crate::balancer::{Balancer, BalancerInput, BalancerState};
use crate::bank::{Bank, ReportError};
use crate::bus::BatteryReport;
use crate::codes::{ActiveCodes, Code, Severity};
pub use crate::dfu::DfuEvent;
use crate::dfu::SelfCheckProgress;
pub use crate::dfu::{SelfCheck, SelfCheckInputs};
use crate::history::{History, HistoryInput, HistoryRecord};
pub use crate::leds::LedPattern;
use crate::leds::{self, PasskeyBlink};
use crate::limits::{
    LOW_POWER_TICK_MS, PAIRING_WINDOW_MS, READOUT_MIN_CHANGE_MS, READOUT_URGENT_BURST,
    RESTART_SAME_ERROR_MS, TICK_MS,
};
use crate::monitor::{
    CellInput, Monitor, MonitorError, MonitorInput, MonitorStatus, SocKnowledge, SocState,
};
use crate::name::DeviceName;
use crate::pairing::{Bond, BondAction, ButtonAction, Pairing, PairingRefusal};
use crate::protection::{self as prot, OutputStates, Protection, ProtectionInputs, SocInput};
pub use crate::protection::{Output, Reason, Reasons};
use crate::readout::{self, Advertiser, ReadoutError, ReadoutValues};
use crate::retained::{Retained, WarmRestart};
use crate::secrets::{DeviceSecrets, MAX_PASSKEY, MIN_PASSKEY};
use crate::settings::{Settings, SettingsError};
use crate::soc::{EstimatorKind, Learned};
use crate::storage::{Outcome, PollReport, RecordError, RecordKind, Records, Restored};
use crate::word::{Number, Word};

/// Most events one [`Decisions`] carries; further events in the same step are counted in
/// [`Decisions::events_dropped`]. Three output changes and every code changing at once fit.
pub const MAX_EVENTS: usize = 24;

/// What the caller restored and configured before start.
///
/// Build it with struct-update syntax from [`Config::default`] so that fields added later do not
/// break callers: `Config { settings, ..Config::default() }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The user settings (factory defaults when none were stored). Settings that do not
    /// validate are replaced by the defaults and raise [`Code::SettingsCorrupt`].
    pub settings: Settings,
    /// True when stored settings existed but were corrupt or unreadable (SET-3): defaults are
    /// used and an error is raised.
    pub settings_corrupt: bool,
    /// True when stored SoC, history, nonce, secrets or learned records were corrupt or
    /// unreadable (SET-3): raises [`Code::RecordsCorrupt`].
    pub records_corrupt: bool,
    /// The monitor's persisted record (MON-8), `None` on first boot or when corrupt.
    pub restored_soc: Option<SocState>,
    /// The persisted history (HIST-4), `None` on first boot or when corrupt.
    pub restored_history: Option<HistoryRecord>,
    /// What the adaptive SoC estimator had learned (MON-8), `None` when none was stored or it
    /// was corrupt: the estimator then starts from its priors, as it does when the values are
    /// out of range. Ignored with plain counting.
    pub restored_learned: Option<Learned>,
    /// The balancer's judgement at the last full charge, stored with the SoC (BAL-3): it
    /// shows again after a reboot as long as the bank counts the same capacity.
    pub restored_balanced_at_full: Option<bool>,
    /// PROT-2: ATD was free-floating for under-voltage when the SoC record was last written
    /// (MON-8): it stays so after the restart until every cell is at 3.20 V or more.
    pub restored_undervoltage_disconnect: bool,
    /// The device's own 128-bit Instant Readout key (BLE-3).
    pub device_key: [u8; 16],
    /// The BLE pairing passkey, 1–999999 (BLE-2, made per unit at the first start). 0 or a
    /// value above 999999 is no passkey: nothing pairs until the button resets pairing.
    pub passkey: u32,
    /// True when `device_key` and `passkey` are the device's own (restored, or made at the
    /// first start from the platform's random source): they are then used and persisted by the
    /// node. False when there are none (no random source at the first start, or a secrets
    /// fault): nothing is advertised with the placeholder key (BLE-3) and nothing pairs.
    pub persist_secrets: bool,
    /// BLE-2: the stored secrets were faulty (corrupt, unreadable, from a newer firmware, or
    /// missing next to other records): the stored record is kept untouched, pairing is refused
    /// until the button resets it, and [`Code::SecretsFault`] is raised.
    pub secrets_fault: bool,
    /// BLE-2 **(choice)**: monitoring reads need an authenticated link (stored with the
    /// secrets; on while the secrets are faulty, as nobody knows what the owner chose).
    pub read_protection: bool,
    /// BLE-2 **(choice)**: failed pairing attempts against `passkey` so far (stored with the
    /// secrets, [`DeviceSecrets::failed_pairings`]).
    pub passkey_failures: u8,
    /// The Victron product id advertised in Instant Readout (BLE-3).
    pub product_id: u16,
    /// The advertisement nonce to start from (the stored reservation), 0 on first boot.
    pub adv_nonce: u16,
    /// BLE-3: the first nonce used under `device_key` (stored with the secrets,
    /// [`DeviceSecrets::key_first_nonce`]), from which the nonces it spent are counted;
    /// `None` when the key starts at `adv_nonce` (a new key, or a record that predates it).
    pub adv_key_first_nonce: Option<u16>,
    /// PROT-1 (rev 2): the retained output state after a warm restart (firmware update,
    /// watchdog), `None` after a cold power-up. See [`crate::retained`].
    pub warm_restart: Option<WarmRestart>,
    /// Which SoC estimator the monitor runs (MON-1); the product default is
    /// [`EstimatorKind::default`]. The simulator's `replay --estimator` selects it to compare.
    pub estimator: EstimatorKind,
    /// The device name (BLE-1), the factory [`DeviceName::default`] when none was stored.
    pub device_name: DeviceName,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            settings: Settings::default(),
            settings_corrupt: false,
            records_corrupt: false,
            restored_soc: None,
            restored_history: None,
            restored_learned: None,
            restored_balanced_at_full: None,
            restored_undervoltage_disconnect: false,
            device_key: [0; 16],
            passkey: DeviceSecrets::DEFAULT_PASSKEY,
            persist_secrets: false,
            secrets_fault: false,
            read_protection: false,
            passkey_failures: 0,
            product_id: readout::DEFAULT_PRODUCT_ID,
            adv_nonce: 0,
            adv_key_first_nonce: None,
            warm_restart: None,
            estimator: EstimatorKind::default(),
            device_name: DeviceName::default(),
        }
    }
}

impl Config {
    /// The configuration for what [`crate::storage::Persistence::restore`] found at start, the
    /// same for every caller ([`crate::node::Node::open`]): restored settings, SoC state,
    /// history, nonce and secrets, each record that was not restored replaced by its defaults
    /// and reported (SET-3: `settings_corrupt`, `records_corrupt`, logged).
    ///
    /// `fresh` are secrets made from the platform's random source (`bms_port_random`): used on
    /// a true first start (the store holds no record at all), and their passkey replaces a
    /// stored 000000 (firmware before per-unit passkeys); `None` when the platform has none.
    /// Any other fault of the stored secrets (BLE-2 rev 2) keeps the stored record untouched
    /// and runs without secrets: no pairing until the button resets it, no advertisement.
    /// `random_nonce` starts the advertisement nonce when its reservation was lost. Fields not
    /// restored (product id) keep [`Config::default`].
    pub fn from_restored(
        restored: &Restored,
        fresh: Option<DeviceSecrets>,
        random_nonce: u16,
    ) -> Config {
        for kind in RecordKind::ALL {
            if let Some(error) = restored.fault(kind) {
                log::error!("{kind} record not restored: {error}");
            }
        }
        // Every record but the settings, which have their own code.
        let records_corrupt = RecordKind::ALL
            .into_iter()
            .any(|kind| kind != RecordKind::Settings && restored.fault(kind).is_some());
        let mut secrets_fault = false;
        // BLE-3: which nonces the stored key was sent with is not known without the
        // reservation: a new key, so that no nonce repeats under one (decoders need it).
        let nonce_lost = restored.fault(RecordKind::Nonce).is_some();
        let secrets = match (restored.secrets, fresh) {
            (Ok(stored), Some(fresh)) if nonce_lost => {
                log::error!("advertisement nonce lost: new readout key, decoders need it");
                let passkey = if stored.passkey == DeviceSecrets::DEFAULT_PASSKEY {
                    fresh.passkey
                } else {
                    stored.passkey
                };
                Some(DeviceSecrets {
                    passkey,
                    adv_key: new_key_check(fresh.adv_key, &stored.adv_key),
                    // The new key starts at the (random) first nonce.
                    key_first_nonce: None,
                    ..stored
                })
            }
            (Ok(stored), _) if stored.passkey != DeviceSecrets::DEFAULT_PASSKEY => Some(stored),
            (Ok(stored), Some(fresh)) => {
                log::warn!("stored passkey 000000 replaced by a per-unit passkey");
                Some(DeviceSecrets {
                    passkey: fresh.passkey,
                    failed_pairings: 0,
                    ..stored
                })
            }
            // 000000 and no random source: the key still advertises, nothing pairs.
            (Ok(stored), None) => Some(stored),
            (Err(RecordError::Missing), Some(fresh)) if restored.first_boot() => Some(fresh),
            (Err(RecordError::Missing), None) if restored.first_boot() => {
                log::error!("no random source: no secrets, nothing paired or advertised");
                None
            }
            (Err(error), _) => {
                log::error!("secrets not restored ({error}): kept as stored, pairing locked");
                secrets_fault = true;
                None
            }
        };
        Config {
            settings: restored.settings_or_default(),
            settings_corrupt: restored.fault(RecordKind::Settings).is_some(),
            records_corrupt,
            restored_soc: restored.soc.ok(),
            restored_history: restored.history.ok(),
            restored_learned: restored.learned.ok(),
            restored_balanced_at_full: restored.balanced_at_full,
            restored_undervoltage_disconnect: restored.undervoltage_disconnect,
            device_key: secrets.map_or([0; 16], |s| s.adv_key),
            passkey: secrets.map_or(DeviceSecrets::DEFAULT_PASSKEY, |s| s.passkey),
            persist_secrets: secrets.is_some(),
            secrets_fault,
            read_protection: secrets.map_or(secrets_fault, |s| s.read_protection),
            passkey_failures: secrets.map_or(0, |s| s.failed_pairings),
            adv_nonce: restored.first_nonce(random_nonce),
            // A record before version 4 does not say: counted from the restored reservation.
            adv_key_first_nonce: secrets.and_then(|s| s.key_first_nonce),
            device_name: restored.name.unwrap_or_default(),
            ..Config::default()
        }
    }
}

/// `key`, its first byte (the key check the readout sends in clear) made to differ from `old`'s:
/// a decoder still holding the old key then reports a key mismatch instead of decrypting the
/// new packets into wrong values (BLE-3).
fn new_key_check(mut key: [u8; 16], old: &[u8; 16]) -> [u8; 16] {
    if let (Some(first), Some(&old_first)) = (key.first_mut(), old.first()) {
        if *first == old_first {
            *first = old_first.wrapping_add(1);
        }
    }
    key
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
    /// The tick period in ms to use now ([`TICK_MS`], or [`LOW_POWER_TICK_MS`] in low power).
    pub tick_ms: u32,
    /// The active codes after this step.
    pub codes: ActiveCodes,
    /// What happened in this step, oldest first (also logged through `log`).
    pub events: Vec<Event, MAX_EVENTS>,
    /// Events that did not fit into `events`.
    pub events_dropped: u16,
    /// True when the Instant Readout values changed: rebuild the advertisement.
    pub adv_changed: bool,
    /// True when the status page changed (outputs, codes or readout values): notify.
    pub status_changed: bool,
    /// BLE-2: a new pairing may start now (the platform's pairing-accept callback reads it).
    pub pairing_allowed: bool,
    /// BLE-2: a [`BondAction`] waits for the platform ([`Bms::take_bond_action`]).
    pub bond_action_pending: bool,
}

impl Decisions {
    fn push(&mut self, event: Event) {
        if self.events.push(event).is_err() {
            self.events_dropped = self.events_dropped.saturating_add(1);
        }
    }
}

/// The whole BMS state: fixed size, no heap. One owner calls its methods in order:
/// `handle_report`/`handle_dfu` as inputs arrive, `step` every tick, then sleep until
/// `next_deadline_ms`. Read-only views may be taken at any time.
#[derive(Clone, Debug)]
pub struct Bms {
    settings: Settings,
    bank: Bank,
    protection: Protection,
    monitor: Monitor,
    history: History,
    balancer: Balancer,
    advertiser: Advertiser,
    /// BLE-2 pairing passkey; 0 = none (nothing pairs).
    passkey: u32,
    /// The key and passkey are the device's own: used, and persisted.
    persist_secrets: bool,
    /// BLE-2 **(choice)**: monitoring reads need an authenticated link.
    read_protection: bool,
    /// BLE-2: the pairing window, back-off, button and bonds.
    pairing: Pairing,
    /// BLE-2: the blue LED is blinking the passkey.
    passkey_blink: Option<PasskeyBlink>,
    /// BLE-2: what the platform must do with the BLE stack's bonds.
    bond_action: Option<BondAction>,
    /// BLE-1 device name.
    device_name: DeviceName,
    /// The last write of some record failed (SET-3, [`Code::StorageWriteFailed`]).
    storage_failing: bool,
    /// DFU-1 self-check.
    self_check: SelfCheckProgress,
    /// Codes raised outside the step (restored data, storage) until the user acts.
    sticky: ActiveCodes,
    codes: ActiveCodes,
    now_ms: u64,
    last_step_ms: Option<u64>,
    /// HIST-1: when the first step ran (see [`RESTART_SAME_ERROR_MS`]).
    first_step_ms: Option<u64>,
    outputs: OutputStates,
    low_power: bool,
    readout: ReadoutValues,
    /// BLE-3: the values the advertisement shows (at most one change per
    /// [`READOUT_MIN_CHANGE_MS`]) and when they may change next.
    adv_values: ReadoutValues,
    adv_hold_until_ms: u64,
    /// BLE-3: the budget of changes ([`READOUT_URGENT_BURST`]): the time at which it would be
    /// used up, refilling one change per [`READOUT_MIN_CHANGE_MS`].
    adv_budget_ms: u64,
    invalid_reports: u32,
    /// BANK-5: [`Bank::additions_and_removals`] as the last step saw it.
    bank_additions_seen: u32,
    /// PROT-1 (rev 2): judged and reported at the first step.
    warm_restart: Option<WarmRestart>,
    /// PROT-2: the under-voltage latch the store holds (restored, or last written with the SoC
    /// record); a change is written at once.
    undervoltage_stored: bool,
}

impl Bms {
    /// Starts with the settings and persisted state restored by the caller. Every output is
    /// free-floating until the first complete, valid set of battery data (PROT-1).
    pub fn new(config: Config) -> Self {
        let mut sticky = ActiveCodes::EMPTY;
        let settings = match config.settings.validate() {
            Ok(()) => config.settings,
            Err(error) => {
                log::error!("restored settings refused ({error}): factory defaults used");
                sticky.insert(Code::SettingsCorrupt);
                Settings::default()
            }
        };
        if config.settings_corrupt {
            sticky.insert(Code::SettingsCorrupt);
        }
        sticky.set(Code::RecordsCorrupt, config.records_corrupt);
        sticky.set(Code::SecretsFault, config.secrets_fault);
        let mut monitor = Monitor::with_kind(config.estimator, config.restored_soc);
        if let Some(learned) = &config.restored_learned {
            monitor.restore_learned(learned);
        }
        let mut protection = Protection::new();
        if config.restored_undervoltage_disconnect {
            protection.restore_undervoltage_disconnect();
        }
        Bms {
            settings,
            bank: Bank::new(),
            protection,
            monitor,
            history: config
                .restored_history
                .map(History::from)
                .unwrap_or_default(),
            balancer: Balancer::restored(config.restored_balanced_at_full),
            advertiser: if config.persist_secrets {
                Advertiser::restored(
                    config.device_key,
                    config.product_id,
                    config.adv_nonce,
                    config.adv_key_first_nonce.unwrap_or(config.adv_nonce),
                )
            } else {
                Advertiser::without_key(config.product_id, config.adv_nonce)
            },
            passkey: if config.persist_secrets
                && (MIN_PASSKEY..=MAX_PASSKEY).contains(&config.passkey)
            {
                config.passkey
            } else {
                if config.persist_secrets {
                    log::error!("passkey out of range: nothing pairs until pairing is reset");
                }
                0
            },
            persist_secrets: config.persist_secrets,
            read_protection: config.read_protection || config.secrets_fault,
            pairing: {
                let mut pairing = Pairing::new(
                    0,
                    config.secrets_fault
                        || !config.persist_secrets
                        || !(MIN_PASSKEY..=MAX_PASSKEY).contains(&config.passkey),
                );
                pairing.set_failures_on_passkey(u32::from(config.passkey_failures));
                pairing
            },
            passkey_blink: None,
            bond_action: None,
            device_name: config.device_name,
            storage_failing: false,
            self_check: SelfCheckProgress::default(),
            sticky,
            // Empty, so that the first step reports the restored errors as raised.
            codes: ActiveCodes::EMPTY,
            now_ms: 0,
            last_step_ms: None,
            first_step_ms: None,
            outputs: OutputStates::default(),
            low_power: false,
            readout: ReadoutValues::NOT_AVAILABLE,
            adv_values: ReadoutValues::NOT_AVAILABLE,
            adv_hold_until_ms: 0,
            adv_budget_ms: 0,
            invalid_reports: 0,
            bank_additions_seen: 0,
            warm_restart: config.warm_restart,
            undervoltage_stored: config.restored_undervoltage_disconnect,
        }
    }

    /// A decoded battery report arrived over the bus at `now_ms`. PROT-13: a report with
    /// implausible data is refused with the reason, counted ([`Bms::invalid_reports`]) and raises
    /// [`Code::InvalidBatteryData`] until the battery's next valid report; otherwise it is
    /// ignored like a missing report: it switches no output by itself, and BANK-4's lost time
    /// applies when nothing valid follows.
    pub fn handle_report(
        &mut self,
        now_ms: u64,
        report: &BatteryReport,
    ) -> Result<(), ReportError> {
        self.now_ms = self.now_ms.max(now_ms);
        self.self_check.bus_activity();
        let result = self.bank.handle_report(self.now_ms, report);
        if let Err(error @ ReportError::NotYetJoined { .. }) = result {
            log::debug!("{error}");
        } else if let Err(error) = result {
            self.invalid_reports = self.invalid_reports.saturating_add(1);
            log::warn!(
                "battery {} report refused: {error}",
                Number::from(report.serial)
            );
        }
        result
    }

    /// Firmware-update progress at `now_ms` (PROT-10, DFU-2). Takes effect at the next step.
    pub fn handle_dfu(&mut self, now_ms: u64, event: DfuEvent) {
        self.now_ms = self.now_ms.max(now_ms);
        self.protection.handle_dfu(self.now_ms, event);
    }

    /// One control step at `now_ms` (every [`Decisions::tick_ms`], and at
    /// [`Bms::next_deadline_ms`]): the BMS's own measurements in, decisions out.
    pub fn step(&mut self, now_ms: u64, inputs: &Inputs) -> Decisions {
        let now_ms = self.now_ms.max(now_ms);
        self.now_ms = now_ms;
        // PROT-1 (rev 2): at the first step after a warm restart the outputs that were high
        // went free-floating at the reset; they are driven again if the state was safe and recent.
        let restart = self
            .last_step_ms
            .is_none()
            .then(|| self.warm_restart.take())
            .flatten();
        if let Some(warm) = restart {
            if warm.restores(now_ms) {
                self.protection
                    .warm_start(now_ms, warm.retained.atd, warm.retained.atc);
                log::info!("warm restart: outputs driven from the retained state");
            } else {
                log::warn!(
                    "warm restart: retained state {}, outputs wait for battery data",
                    Word(if warm.retained.safe {
                        "too old"
                    } else {
                        "not safe"
                    })
                );
            }
        }
        self.last_step_ms = Some(now_ms);
        self.first_step_ms.get_or_insert(now_ms);

        self.bank.update(now_ms, inputs.supply_mv);
        let health = self.bank.health();
        let aggregates = self.bank.aggregates();
        let valid = health
            .complete
            .then_some(())
            .and(aggregates.zip(self.bank.topology()));

        let mut synchronised = false;
        let counted_capacity_mah = self.monitor.capacity_mah();
        let additions_and_removals = self.bank.additions_and_removals();
        let battery_added_or_removed = additions_and_removals != self.bank_additions_seen;
        self.bank_additions_seen = additions_and_removals;
        self.self_check.step(
            now_ms,
            valid.is_some() && !health.invalid && !health.config_error,
        );
        if let Some((agg, topology)) = valid {
            let input = MonitorInput {
                bank_mv: agg.voltage_mv,
                bank_ma: agg.current_ma,
                capacity_mah: topology.capacity_dah.saturating_mul(100),
                cells_in_series: topology.cells_in_series(),
            };
            // The adaptive estimator reads the knees of the cell voltage curve.
            let cells = CellInput {
                min_cell_mv: Some(agg.min_cell_mv),
                max_cell_mv: Some(agg.max_cell_mv),
                min_temp_ddegc: Some(agg.min_temp_ddegc),
                max_temp_ddegc: Some(agg.max_temp_ddegc),
            };
            let status = self
                .monitor
                .update_with(now_ms, &input, &cells, &self.settings);
            synchronised = status.synchronised;
            let history_input = HistoryInput {
                bank_mv: agg.voltage_mv,
                bank_ma: agg.current_ma,
                min_cell_mv: Some(agg.min_cell_mv),
                max_cell_mv: Some(agg.max_cell_mv),
                min_temp_ddegc: Some(agg.min_temp_ddegc),
                max_temp_ddegc: Some(agg.max_temp_ddegc),
                soc_permille: status.soc_permille,
                consumed_mah: status.consumed_mah,
                synchronised,
            };
            let _ = self.history.update(now_ms, &history_input);
        } else {
            // MON-2: nothing is observed without valid data; the charged time starts again.
            self.monitor.data_missing();
        }
        let monitor = *self.monitor.status();

        let protection_inputs = ProtectionInputs {
            health,
            aggregates,
            remote_on: prot::remote_is_on(inputs.remote_h_mv, inputs.remote_l_mv, inputs.supply_mv),
            soc: SocInput {
                below_floor: monitor.below_floor,
                low_soc_warning: monitor.low_soc_warning,
            },
            prealarm_cell_mv: self.settings.prealarm_cell_mv,
        };
        let outputs = self.protection.step(now_ms, &protection_inputs);

        let _ = self.balancer.update(&BalancerInput {
            soc_known: monitor.soc_permille.is_some(),
            since_full_charge_ms: self.monitor.since_full_charge_ms(),
            bank_ma: valid.map(|(agg, _)| agg.current_ma),
            any_balancing: aggregates.is_some_and(|a| a.balancing),
            synchronised,
            cell_spread_mv: valid.map(|(agg, _)| agg.cell_spread_mv()),
            // A battery added or removed (BANK-5): one that joined after discovery or was
            // forgotten, or a change of the capacity counted with; the batteries found one by
            // one after a reboot are neither, once the bank is complete.
            capacity_changed: battery_added_or_removed
                || (counted_capacity_mah != 0
                    && self.monitor.capacity_mah() != counted_capacity_mah),
        });

        let mut codes = self.protection.codes(aggregates.as_ref());
        codes.set(Code::BatteryLost, health.lost);
        codes.set(Code::InvalidBatteryData, health.invalid);
        codes.set(Code::ConfigurationError, health.config_error);
        codes.set(Code::LowSocWarning, monitor.low_soc_warning);
        codes.set(Code::StorageWriteFailed, self.storage_failing);
        for code in self.sticky.iter() {
            codes.insert(code);
        }

        let low_power = self.protection.low_power();
        let mut decisions = Decisions {
            atd: outputs.atd,
            atc: outputs.atc,
            prealarm: outputs.prealarm,
            atd_reasons: outputs.atd_reasons,
            atc_reasons: outputs.atc_reasons,
            prealarm_reasons: outputs.prealarm_reasons,
            led_blue: self.blue_led(now_ms, inputs.app_connected),
            led_red: leds::red(codes),
            low_power,
            tick_ms: if low_power {
                LOW_POWER_TICK_MS
            } else {
                TICK_MS
            },
            codes,
            ..Decisions::default()
        };
        if let Some(warm) = restart {
            let was = [
                (Output::Atd, warm.retained.atd),
                (Output::Atc, warm.retained.atc),
                (Output::Prealarm, warm.retained.prealarm),
            ];
            for (output, high) in was.into_iter().filter(|(_, high)| *high) {
                log::warn!("{} free-floating: restart", Word(output.name()));
                decisions.push(Event::OutputChanged {
                    output,
                    high: !high,
                    reasons: Reasons::of(Reason::Restart),
                });
            }
        }
        for output in [Output::Atd, Output::Atc, Output::Prealarm] {
            let (high, reasons) = outputs.get(output);
            if high != self.outputs.get(output).0 {
                decisions.push(Event::OutputChanged {
                    output,
                    high,
                    reasons,
                });
            }
        }
        for code in Code::ALL {
            let (was, is) = (self.codes.contains(code), codes.contains(code));
            if is && !was {
                log::warn!("{} raised: {code}", Word(severity_name(code.severity())));
                if code.severity() != Severity::Warning && !self.found_again(code, now_ms) {
                    self.history.record_error(u16::from(code.number()));
                }
                decisions.push(Event::CodeRaised(code));
            } else if was && !is {
                log::info!("{} cleared: {code}", Word(severity_name(code.severity())));
                decisions.push(Event::CodeCleared(code));
            }
        }
        if low_power != self.low_power {
            log::info!(
                "low-power mode {}",
                Word(if low_power { "on" } else { "off" })
            );
        }

        decisions.pairing_allowed = self.pairing.allowed(now_ms).is_ok();
        decisions.bond_action_pending = self.bond_action.is_some();
        let changed = outputs != self.outputs || codes != self.codes;
        self.outputs = outputs;
        self.codes = codes;
        self.low_power = low_power;
        let readout = self.readout_values();
        let values_changed = readout != self.readout;
        self.readout = readout;
        decisions.adv_changed = self.advertise_due(now_ms);
        if decisions.adv_changed {
            self.adv_values = readout;
            self.adv_hold_until_ms = now_ms.saturating_add(READOUT_MIN_CHANGE_MS);
            self.adv_budget_ms = self
                .adv_budget_ms
                .max(now_ms)
                .saturating_add(READOUT_MIN_CHANGE_MS);
        }
        decisions.status_changed = changed || values_changed;
        decisions
    }

    /// HIST-1 **(choice)**: `code`, raised at `now_ms`, is an error that was active before the
    /// restart, found again: raised within [`RESTART_SAME_ERROR_MS`] of the first step and
    /// already among the last errors. It is the same occurrence, so it takes no second slot
    /// (a reboot loop on an empty bank, a watchdog loop with a battery too hot, would fill the
    /// last errors with one error at every restart and push the others out).
    fn found_again(&self, code: Code, now_ms: u64) -> bool {
        let number = Some(u16::from(code.number()));
        self.first_step_ms
            .is_some_and(|first| now_ms.saturating_sub(first) < RESTART_SAME_ERROR_MS)
            && self.history.last_errors().contains(&number)
    }

    /// BLE-3: whether the advertisement should now show the values of the last step: they
    /// change its record, the budget of changes is not used up ([`READOUT_URGENT_BURST`]),
    /// and the last change is [`READOUT_MIN_CHANGE_MS`] ago or the change is in the error, the
    /// outputs or a warning or alarm (which wait only for the budget). Every change takes a
    /// nonce: an output flapping every second (a battery's own charge switch, a forged frame
    /// on the battery bus) took one a second and wrapped the 16-bit nonce in 18 hours.
    fn advertise_due(&self, now_ms: u64) -> bool {
        self.advertise_at().is_some_and(|at| now_ms >= at)
    }

    /// BLE-3: when the values of the last step may go out, `None` when the advertisement shows
    /// them already.
    fn advertise_at(&self) -> Option<u64> {
        let new = readout::BmsRecord::from_values(&self.readout);
        let shown = readout::BmsRecord::from_values(&self.adv_values);
        if new == shown {
            return None;
        }
        let urgent = (new.error, new.io_status, new.warnings_alarms)
            != (shown.error, shown.io_status, shown.warnings_alarms);
        let budget = self
            .adv_budget_ms
            .saturating_sub((READOUT_URGENT_BURST - 1).saturating_mul(READOUT_MIN_CHANGE_MS));
        Some(if urgent {
            budget
        } else {
            budget.max(self.adv_hold_until_ms)
        })
    }

    /// When to call [`Bms::step`] again at the latest, ms on the caller's clock: the next tick,
    /// or earlier when a debounce, delay or lost-battery timeout expires in between. `None`
    /// never happens today; it is kept for a future "nothing to do".
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let tick_ms = if self.low_power {
            LOW_POWER_TICK_MS
        } else {
            TICK_MS
        };
        let tick = self
            .last_step_ms
            .unwrap_or(self.now_ms)
            .saturating_add(u64::from(tick_ms));
        let due = [
            Some(tick),
            self.bank.next_deadline_ms(),
            self.protection.next_deadline_ms(),
            self.pairing.next_deadline_ms(self.now_ms),
            self.passkey_blink
                .and_then(|blink| blink.at(self.now_ms))
                .map(|(_, next)| next),
            self.advertise_at().filter(|&at| at > self.now_ms),
        ];
        due.into_iter().flatten().min()
    }

    /// DFU-1: the post-update self-check at `now_ms`, with what only the platform knows. A new
    /// image in MCUboot's test mode calls it after every step until the verdict is final:
    /// confirm the image on [`SelfCheck::Passed`], reboot (MCUboot reverts) on
    /// [`SelfCheck::Failed`]. The rules: [`SelfCheckProgress::judge`].
    pub fn self_check(&mut self, now_ms: u64, platform: SelfCheckInputs) -> SelfCheck {
        self.now_ms = self.now_ms.max(now_ms);
        self.self_check
            .judge(self.now_ms, platform, self.storage_failing)
    }

    /// DFU-1: bytes arrived from the batteries (whether or not they made a report), for the
    /// self-check: an image that hears the bus but never decodes a bank is not confirmed.
    pub fn note_bus_activity(&mut self) {
        self.self_check.bus_activity();
    }

    /// MON-4: sets the SoC to `soc_permille` (0..=1000) at `now_ms`. Refused, changing nothing,
    /// above 1000 or before the bank is known.
    pub fn set_soc(&mut self, now_ms: u64, soc_permille: u16) -> Result<(), MonitorError> {
        self.now_ms = self.now_ms.max(now_ms);
        self.monitor.set_soc(self.now_ms, soc_permille)?;
        self.sticky.remove(Code::RecordsCorrupt);
        Ok(())
    }

    /// MON-4: synchronises the SoC to 100 % at `now_ms`.
    pub fn synchronise(&mut self, now_ms: u64) -> Result<(), MonitorError> {
        self.now_ms = self.now_ms.max(now_ms);
        self.monitor.synchronise(self.now_ms)?;
        self.sticky.remove(Code::RecordsCorrupt);
        Ok(())
    }

    /// HIST-4: clears every history item (stored at once by the node).
    pub fn reset_history(&mut self) {
        self.history.reset();
        self.sticky.remove(Code::RecordsCorrupt);
        log::info!("history reset");
    }

    /// SET-1: replaces all settings with `settings` if they validate as a whole; on error
    /// nothing changes. The node stores the accepted settings.
    pub fn write_settings(&mut self, settings: Settings) -> Result<(), SettingsError> {
        self.settings.write(settings)?;
        self.sticky.remove(Code::SettingsCorrupt);
        log::info!("settings written");
        Ok(())
    }

    /// SET-4: restores the factory defaults of SET-4's list (stored by the node).
    pub fn factory_reset(&mut self) {
        self.settings.factory_reset();
        self.sticky.remove(Code::SettingsCorrupt);
        log::info!("settings reset to factory defaults");
    }

    /// BANK-4: forgets every lost battery (after one was taken out of the bank on purpose), so
    /// the bank can be complete again. Returns how many were forgotten.
    pub fn forget_lost_batteries(&mut self) -> usize {
        let removed = self.bank.forget_lost(self.now_ms);
        log::info!("{} lost batteries forgotten", Number::from(removed));
        removed
    }

    /// The monitor's state as it is persisted (MON-8).
    pub fn soc_record(&self) -> SocState {
        self.monitor.snapshot()
    }

    /// Everything to persist now, with what is due (MON-8, HIST-4, SET-2, BLE-2, BLE-3), for
    /// [`crate::storage::Persistence::poll`]; the outcome goes back through
    /// [`Bms::records_written`]. [`crate::node::Node`] does both after every step.
    /// A flush (`flush`) also writes what a hold keeps back (MON-4: a manual action less than
    /// [`crate::limits::USER_WRITE_INTERVAL_MS`] after the last stored one).
    pub(crate) fn records(&self, flush: bool) -> Records {
        Records {
            settings: self.settings,
            soc: self.monitor.snapshot(),
            soc_due: if flush {
                self.monitor.persist_pending(self.now_ms)
            } else {
                self.monitor.persist_due(self.now_ms)
            },
            balanced_at_full: self.balancer.judged_balanced(),
            undervoltage_disconnect: self.protection.undervoltage_disconnect(),
            history: *self.history.record(),
            history_due: self.history.all_due(self.now_ms),
            history_counted_due: self.history.counted_due(),
            nonce: self.advertiser.nonce_to_persist(),
            secrets: self.secrets_to_persist(),
            learned: self.monitor.learned(),
            flush,
            name: self.device_name,
            hold_older_formats: !self.self_check.formats_settled(self.now_ms),
        }
    }

    /// Whether the SoC state, the history or a nonce reservation asks to be written now (the
    /// records whose owners decide; see [`crate::limits::PERSIST_POLL_MS`] for the others).
    pub(crate) fn persist_due(&self) -> bool {
        self.monitor.persist_due(self.now_ms)
            || self.protection.undervoltage_disconnect() != self.undervoltage_stored
            || self.history.persist_due(self.now_ms)
            || self.advertiser.nonce_to_persist().is_some()
    }

    /// What [`crate::storage::Persistence::poll`] did with `records` (from [`Bms::records`]) at
    /// `now_ms`: marks what was written, and raises [`Code::StorageWriteFailed`] at the next step
    /// while a write is failing (cleared once the writes succeed again; SET-3).
    pub(crate) fn records_written(&mut self, now_ms: u64, records: &Records, report: &PollReport) {
        self.now_ms = self.now_ms.max(now_ms);
        if report.soc == Outcome::Written {
            self.monitor.mark_persisted_at(self.now_ms);
        }
        if report.soc_record == Outcome::Written {
            self.undervoltage_stored = records.undervoltage_disconnect;
        }
        if report.history == Outcome::Written {
            self.history.mark_persisted(self.now_ms);
        } else if report.history_counted == Outcome::Written {
            self.history.mark_counted_persisted();
        }
        if let (Outcome::Written, Some(value)) = (report.nonce, records.nonce) {
            self.advertiser.nonce_persisted(value);
        }
        for kind in RecordKind::ALL {
            match report.outcome(kind) {
                Outcome::Failed(error) => log::error!("{kind} record not written: {error}"),
                Outcome::Written => self.self_check.storage_written(),
                Outcome::Idle | Outcome::Deferred | Outcome::Coalesced => {}
            }
        }
        if report.failing != self.storage_failing {
            let state = Word(if report.failing {
                "failing"
            } else {
                "recovered"
            });
            log::info!("storage {state}");
        }
        self.storage_failing = report.failing;
    }

    /// BLE-3: builds the Instant Readout manufacturer data (company id first) into `out` and
    /// returns its length.
    /// The values are those of the step that last set [`Decisions::adv_changed`] (at most one
    /// change per [`READOUT_MIN_CHANGE_MS`], [`crate::limits`]). [`ReadoutError::NotReserved`]
    /// when no nonce is reserved for them and [`ReadoutError::NoKey`] without a key of the
    /// device's own: advertise no readout then ("not available").
    pub fn manufacturer_data(&mut self, out: &mut [u8]) -> Result<usize, ReadoutError> {
        let values = self.adv_values;
        self.advertiser.manufacturer_data(&values, out)
    }

    /// BLE-3: the advertisement key (read over an authenticated link only).
    pub fn device_key(&self) -> &[u8; 16] {
        self.advertiser.key()
    }

    /// BLE-3: whether the device has an Instant Readout key of its own (none after a secrets
    /// fault or without a random source at the first start).
    pub fn has_device_key(&self) -> bool {
        self.persist_secrets && self.advertiser.keyed()
    }

    /// BLE-3: whether the device's readout key has spent its nonces
    /// ([`readout::NONCES_PER_KEY`]): nothing new is advertised under it
    /// ([`ReadoutError::KeyWorn`]) until [`Bms::new_device_key`] replaces it, which
    /// [`crate::node::Node`] does at its next step when the random source gives a key.
    pub fn readout_key_worn(&self) -> bool {
        self.has_device_key() && self.advertiser.key_worn()
    }

    /// BLE-3: replaces the advertisement key; the node persists it from now on.
    pub fn set_device_key(&mut self, key: [u8; 16]) {
        self.advertiser.set_key(key);
        self.persist_secrets = true;
    }

    /// BLE-2: the pairing passkey (0–999999) to give the BLE stack.
    pub fn passkey(&self) -> u32 {
        self.passkey
    }

    /// BLE-2: changes the pairing passkey and removes every other bond (a [`BondAction`] for
    /// the platform): above 999999 or 000000 it is refused, and without usable secrets (a
    /// fault: reset pairing with the button first), changing nothing. The node reports it for
    /// the BLE stack and stores it.
    pub fn set_passkey(&mut self, passkey: u32) -> Result<(), PasskeyError> {
        if passkey > MAX_PASSKEY {
            return Err(PasskeyError::OutOfRange { max: MAX_PASSKEY });
        }
        if passkey < MIN_PASSKEY {
            return Err(PasskeyError::Zero);
        }
        if !self.persist_secrets {
            return Err(PasskeyError::NoSecrets);
        }
        if matches!(self.bond_action, Some(BondAction::Remove(_))) {
            // One action waits for the platform at a time: replacing it would lose it.
            return Err(PasskeyError::BondActionPending);
        }
        if passkey != self.passkey {
            // The same passkey again is no new one: what failed attempts told a guesser about
            // it still holds, so its count stays (the next window renews it when worn).
            self.pairing.passkey_renewed();
        }
        self.passkey = passkey;
        self.bond_action = Some(match self.bond_action {
            Some(BondAction::RemoveAll) => BondAction::RemoveAll,
            _ => BondAction::RemoveOthers,
        });
        log::info!("passkey changed: every other bond removed");
        Ok(())
    }

    /// BLE-2: whether a new pairing may start at `now_ms` (also in every [`Decisions`]).
    pub fn pairing_allowed(&self, now_ms: u64) -> Result<(), PairingRefusal> {
        self.pairing.allowed(self.now_ms.max(now_ms))
    }

    /// BLE-2: a pairing attempt ended at `now_ms`, with `success` or not (back-off).
    pub fn pairing_result(&mut self, now_ms: u64, success: bool) {
        self.now_ms = self.now_ms.max(now_ms);
        self.pairing.attempt(self.now_ms, success);
    }

    /// BLE-2: the bonds the BLE stack holds now (at start and after every change).
    pub fn set_bonds(&mut self, bonds: &[Bond]) {
        self.pairing.set_bonds(bonds);
    }

    /// BLE-2: the pairing state (window, bonds).
    pub fn pairing(&self) -> &Pairing {
        &self.pairing
    }

    /// BLE-2: asks the platform to remove `bond`; refused (changing nothing) when the stack
    /// holds no such bond.
    pub fn remove_bond(&mut self, bond: Bond) -> Result<(), PasskeyError> {
        if !self.pairing.has_bond(&bond) {
            return Err(PasskeyError::NoSuchBond);
        }
        match self.bond_action {
            // Every bond goes anyway, or this one is already to go.
            Some(BondAction::RemoveAll) => {}
            Some(BondAction::Remove(pending)) if pending == bond => {}
            // One action waits for the platform at a time: replacing it would lose it.
            Some(_) => return Err(PasskeyError::BondActionPending),
            None => self.bond_action = Some(BondAction::Remove(bond)),
        }
        log::info!("bond removal asked");
        Ok(())
    }

    /// BLE-2: the bond action that waits for the platform, which carries it out now (and then
    /// reports the bonds again with [`Bms::set_bonds`]).
    pub fn take_bond_action(&mut self) -> Option<BondAction> {
        self.bond_action.take()
    }

    /// BLE-2: the board's button went down (`pressed`) or up at `now_ms`. Returns what the
    /// press asks for; a press opens the pairing window and shows the passkey (the blue LED
    /// blinks it, the log prints it once). [`ButtonAction::ResetPairing`] needs new secrets:
    /// [`crate::node::Node::button`] makes them and calls [`Bms::reset_pairing`].
    pub fn button(&mut self, now_ms: u64, pressed: bool) -> Option<ButtonAction> {
        self.now_ms = self.now_ms.max(now_ms);
        let action = self.pairing.button(self.now_ms, pressed);
        if action == Some(ButtonAction::OpenWindow) {
            self.show_passkey();
        }
        action
    }

    /// BLE-2: reset pairing (the button held): every bond removed, `fresh`'s passkey (and its
    /// key when the device has none usable), read protection kept; the secrets are stored at
    /// the next poll, overwriting a faulty record. `None` (no random source) keeps pairing
    /// locked.
    pub fn reset_pairing(&mut self, fresh: Option<DeviceSecrets>) {
        self.bond_action = Some(BondAction::RemoveAll);
        let Some(fresh) = fresh else {
            log::error!("no random source: pairing stays locked");
            self.pairing.lock();
            return;
        };
        if !self.persist_secrets {
            self.advertiser.set_key(fresh.adv_key);
            self.read_protection = fresh.read_protection;
        }
        self.passkey = fresh.passkey;
        self.persist_secrets = true;
        self.sticky.remove(Code::SecretsFault);
        self.show_passkey();
    }

    /// BLE-2 **(choice)**: whether the passkey has seen so many failed pairing attempts that
    /// the next pairing window is to come with a new one ([`crate::pairing::Pairing::passkey_worn`]).
    pub fn passkey_worn(&self) -> bool {
        self.pairing.passkey_worn()
    }

    /// BLE-2 **(choice)**: a worn passkey replaced by `passkey` (from the random source) as the
    /// pairing window opens: bonds, the readout key and read protection kept; stored at the
    /// next poll and shown (LED, log) in place of the old one. Without usable secrets nothing
    /// changes (pairing stays locked until the button reset).
    pub fn renew_passkey(&mut self, passkey: u32) {
        if !self.persist_secrets || !(MIN_PASSKEY..=MAX_PASSKEY).contains(&passkey) {
            return;
        }
        self.passkey = passkey;
        self.pairing.passkey_renewed();
        log::warn!("passkey renewed: too many failed pairing attempts against the old one");
        self.show_passkey();
    }

    /// BLE-2 **(choice)**: whether monitoring reads need an authenticated link.
    pub fn read_protection(&self) -> bool {
        self.read_protection
    }

    /// BLE-2 **(choice)**: turns read protection on or off (stored by the node); refused
    /// without usable secrets.
    pub fn set_read_protection(&mut self, on: bool) -> Result<(), PasskeyError> {
        if !self.persist_secrets {
            return Err(PasskeyError::NoSecrets);
        }
        self.read_protection = on;
        log::info!("read protection {}", Word(if on { "on" } else { "off" }));
        Ok(())
    }

    /// BLE-3: a new Instant Readout key (from the platform's random source); refused without
    /// usable secrets. Decoders need the new key. Its first byte, the key check sent in clear,
    /// always differs from the old key's (a drawn key that repeats it gets it plus one), so
    /// that a decoder still holding the old key sees a key mismatch instead of decrypting the
    /// new packets into wrong values. Returns the key now in force.
    pub fn new_device_key(&mut self, key: [u8; 16]) -> Result<[u8; 16], PasskeyError> {
        if !self.persist_secrets {
            return Err(PasskeyError::NoSecrets);
        }
        let key = new_key_check(key, self.advertiser.key());
        self.advertiser.set_key(key);
        log::info!("new readout key");
        Ok(key)
    }

    fn show_passkey(&mut self) {
        if !(MIN_PASSKEY..=MAX_PASSKEY).contains(&self.passkey) {
            return;
        }
        self.passkey_blink = Some(PasskeyBlink {
            passkey: self.passkey,
            start_ms: self.now_ms,
        });
        // The one place the passkey is logged: after a physical action at the device.
        log::warn!(
            "pairing open for {} s, passkey {}",
            Number::from(PAIRING_WINDOW_MS / 1000),
            SixDigits(self.passkey)
        );
    }

    /// LED-1, or the passkey while it is blinked; solid while a held button arms the reset.
    fn blue_led(&mut self, now_ms: u64, app_connected: bool) -> LedPattern {
        if self.pairing.reset_armed(now_ms) {
            return LedPattern::Solid;
        }
        match self.passkey_blink.and_then(|blink| blink.at(now_ms)) {
            Some((lit, _)) => {
                if lit {
                    LedPattern::Solid
                } else {
                    LedPattern::Off
                }
            }
            None => {
                self.passkey_blink = None;
                leds::blue(app_connected)
            }
        }
    }

    /// The passkey, the Instant Readout key and read protection (BLE-2, BLE-3).
    /// BLE-1: the device name, to advertise.
    pub fn device_name(&self) -> &DeviceName {
        &self.device_name
    }

    /// BLE-1: renames the device (a [`DeviceName`] is always valid); the node stores it and
    /// the firmware advertises it.
    pub fn set_device_name(&mut self, name: DeviceName) {
        self.device_name = name;
        log::info!("device name changed");
    }

    /// The passkey and the Instant Readout key (BLE-2, BLE-3).
    fn secrets(&self) -> DeviceSecrets {
        DeviceSecrets {
            passkey: self.passkey,
            adv_key: *self.advertiser.key(),
            key_first_nonce: Some(self.advertiser.key_first_nonce()),
            read_protection: self.read_protection,
            failed_pairings: u8::try_from(self.pairing.failures_on_passkey()).unwrap_or(u8::MAX),
        }
    }

    /// The secrets to keep in the store ([`crate::storage::Records::secrets`]); `None` while
    /// the key is a placeholder ([`Config::persist_secrets`]).
    pub(crate) fn secrets_to_persist(&self) -> Option<DeviceSecrets> {
        self.persist_secrets.then(|| self.secrets())
    }

    /// The values the Instant Readout advertises, from the state of the last step.
    pub fn readout_values(&self) -> ReadoutValues {
        use readout::Level;
        let health = self.bank.health();
        let Some(agg) = self.bank.aggregates().filter(|_| health.complete) else {
            return ReadoutValues {
                error_code: self.error_code(),
                battery_communication: Some(if health.lost { Level::Alarm } else { Level::Ok }),
                allowed_to_charge: Some(self.outputs.atc),
                allowed_to_discharge: Some(self.outputs.atd),
                ..ReadoutValues::NOT_AVAILABLE
            };
        };
        let monitor = self.monitor.status();
        let codes = self.codes;
        let level = |alarm: Code, warning: Option<Code>| {
            if codes.contains(alarm) {
                Level::Alarm
            } else if warning.is_some_and(|w| codes.contains(w)) {
                Level::Warning
            } else {
                Level::Ok
            }
        };
        ReadoutValues {
            soc_permille: monitor.soc_permille,
            bank_mv: Some(agg.voltage_mv),
            current_ma: Some(agg.current_ma),
            time_remaining_min: monitor.ttg_min,
            consumed_mah: monitor.soc_permille.map(|_| monitor.consumed_mah),
            temp_ddegc: Some(agg.max_temp_ddegc),
            error_code: self.error_code(),
            allowed_to_charge: Some(self.outputs.atc),
            allowed_to_discharge: Some(self.outputs.atd),
            low_cell_voltage: Some(level(Code::CellUndervoltage, Some(Code::LowCellVoltage))),
            high_temperature: Some(level(Code::HighTemperature, None)),
            low_soc: Some(level(Code::LowSoc, Some(Code::LowSocWarning))),
            battery_communication: Some(level(Code::BatteryLost, None)),
            // Loads switched off by the owner (remote OFF alone) are no alarm: no code is
            // active and the red LED is dark (LED-2); the IO status still says "not allowed
            // to discharge".
            load_disconnect: Some(
                if self.outputs.atd || self.outputs.atd_reasons == Reasons::of(Reason::RemoteOff) {
                    Level::Ok
                } else {
                    Level::Alarm
                },
            ),
        }
    }

    /// The number of the most important active error (lowest number of severity Error), 0
    /// when none.
    pub fn error_code(&self) -> u8 {
        self.codes
            .of(Severity::Error)
            .next()
            .map_or(0, Code::number)
    }

    /// The current user settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The battery bank: batteries, topology and aggregates (BANK-1, BANK-3).
    pub fn bank(&self) -> &Bank {
        &self.bank
    }

    /// The battery monitor (SoC, consumed Ah, time remaining).
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// The monitor's decisions of the last step.
    pub fn monitor_status(&self) -> MonitorStatus {
        *self.monitor.status()
    }

    /// What is known about the SoC (MON-7).
    pub fn soc_knowledge(&self) -> SocKnowledge {
        self.monitor.knowledge()
    }

    /// The history items (HIST-1).
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The balancer status of the last step (BAL).
    pub fn balancer(&self) -> BalancerState {
        self.balancer.state()
    }

    /// The protection state machine (for inspection: latched conditions, DFU state).
    pub fn protection(&self) -> &Protection {
        &self.protection
    }

    /// The outputs decided by the last step (all free-floating before the first).
    pub fn outputs(&self) -> OutputStates {
        self.outputs
    }

    /// PROT-12: low-power mode as of the last step.
    pub fn low_power(&self) -> bool {
        self.low_power
    }

    /// The active error, alarm and warning codes as of the last step.
    pub fn codes(&self) -> ActiveCodes {
        self.codes
    }

    /// PROT-1 (rev 2): the output state of the last step, for the platform's retained RAM
    /// ([`crate::retained`]). Safe only once a complete data set was judged (not while held
    /// from a previous restart) and with no alarm active.
    pub fn retained(&self) -> Retained {
        Retained {
            atd: self.outputs.atd,
            atc: self.outputs.atc,
            prealarm: self.outputs.prealarm,
            safe: self.protection.started()
                && !self.protection.warm_holding()
                && !self.codes.any(Severity::Alarm),
            saved_at_ms: self.last_step_ms.unwrap_or(self.now_ms),
        }
    }

    /// How many battery reports were refused since start.
    pub fn invalid_reports(&self) -> u32 {
        self.invalid_reports
    }

    /// The time of the latest input seen, ms.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }
}

/// Why a passkey, bond or secrets change was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasskeyError {
    /// The passkey has more than 6 digits.
    OutOfRange {
        /// The largest passkey, 999999.
        max: u32,
    },
    /// 000000, which every unconfigured device has (BLE-2 rev 2).
    Zero,
    /// The device has no usable secrets (a fault): reset pairing with the button first.
    NoSecrets,
    /// The BLE stack holds no such bond.
    NoSuchBond,
    /// Another bond action waits for the platform (it takes one after every request): ask
    /// again once it is carried out.
    BondActionPending,
}

impl core::fmt::Display for PasskeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PasskeyError::OutOfRange { max } => write!(f, "passkey above {}", Number::from(*max)),
            PasskeyError::Zero => f.write_str("passkey 000000"),
            PasskeyError::NoSecrets => f.write_str("no usable secrets: reset pairing"),
            PasskeyError::NoSuchBond => f.write_str("no such bond"),
            PasskeyError::BondActionPending => f.write_str("another bond action is pending"),
        }
    }
}

/// A passkey as its six digits, leading zeros included.
struct SixDigits(u32);

impl core::fmt::Display for SixDigits {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut digits = [b'0'; 6];
        let mut rest = self.0;
        for slot in digits.iter_mut().rev() {
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        f.write_str(core::str::from_utf8(&digits).unwrap_or("??????"))
    }
}

fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Warning => "warning",
        Severity::Alarm => "alarm",
        Severity::Error => "error",
    }
}
