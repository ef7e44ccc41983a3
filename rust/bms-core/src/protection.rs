//! The protection outputs (PROT): Load disconnect (ATD), Charge disconnect (ATC) and pre-alarm.
//!
//! Inputs each tick: the bank health and aggregates, the remote on/off voltages, the monitor's
//! SoC state and the settings; between ticks, firmware-update events. Output: the three output
//! states, each with the set of [`Reason`]s behind it, and the codes the protection raises.
//!
//! The cell protections are the rows of [`crate::limits::LIMITS`]: each is a latched condition
//! with a trip debounce, a release level (hysteresis) and a release debounce; the running
//! debounce timers are a table `[Option<u64>; ProtectionId::COUNT]` indexed by
//! [`ProtectionId`]. On top of the table:
//! - PROT-1: until the first complete, valid data set every output is free-floating. That set is
//!   judged safe before an output switches on: a condition already beyond its trip level keeps
//!   the output it acts on free-floating while its debounce runs (PROT-2 rev 2: only a
//!   *debounced* under-voltage latches), so an unsafe bank never sees its outputs switch on, and
//!   a reading that is gone before its debounce ends latches nothing. The same judgement applies
//!   whenever the data comes back after being lost or invalid. After a warm restart the outputs
//!   driven again from the retained state are running: their rows debounce as usual, and the
//!   under-voltage opening waits for PROT-2's lead.
//! - PROT-2: ATD opens for under-voltage only once the pre-alarm *output* has been high for
//!   [`PREALARM_LEAD_MS`]; the opening is latched until the under-voltage condition releases.
//!   The lead is for loads that are running: an under-voltage while ATD is already
//!   free-floating (remote OFF, lost data, any reason) latches the opening at once. The latch
//!   is stored (in the SoC record, MON-8) and restored at start
//!   ([`Protection::restore_undervoltage_disconnect`]), so a restart does not switch the loads
//!   back on below the release level.
//! - PROT-3 **(choice)**: the pre-alarm output is released [`PREALARM_RELEASE_MS`] after ATD
//!   opened for under-voltage, until the cell conditions behind it have released or, once the
//!   loads are back, a cell falls short of its release level again (the alarm stays in the
//!   codes).
//! - PROT-8 **(choice)**: the remote state is debounced [`REMOTE_DEBOUNCE_MS`] both ways.
//! - While the data is incomplete (lost, invalid, configuration error) the outputs are
//!   free-floating, latched conditions keep their state and running debounces restart.
//! - PROT-12 **(choice)**: low power while the remote is OFF or after an under-voltage
//!   disconnect (until it releases).

use crate::bank::{Aggregates, BankHealth};
use crate::codes::{ActiveCodes, Code};
pub use crate::dfu::DfuEvent;
use crate::dfu::UpdateState;
use crate::limits::{
    Effect, Level, ProtectionId, Quantity, BATTERY_LOST_MS, LIMITS, PREALARM_LEAD_MS,
    PREALARM_RELEASE_MS, REMOTE_DEBOUNCE_MS, REMOTE_H_ON_ABOVE_MV, REMOTE_H_VBAT_TOLERANCE_MV,
    REMOTE_LINK_TOLERANCE_MV, REMOTE_L_ON_BELOW_MV,
};
pub use crate::reasons::{Reason, Reasons};
use crate::word::{Number, Word};

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

impl Output {
    /// Short lowercase name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            Output::Atd => "atd",
            Output::Atc => "atc",
            Output::Prealarm => "prealarm",
        }
    }
}

/// PROT-8: whether the remote on/off input is ON, from the voltages at Remote H and Remote L
/// and the battery voltage `vbat_mv` (all against battery minus, mV).
///
/// ON when L and H are interconnected (within [`REMOTE_LINK_TOLERANCE_MV`] of each other), or
/// L is pulled to battery minus (V_L < 3.5 V), or H is high (2.9 V < V_H < Vbat, with
/// [`REMOTE_H_VBAT_TOLERANCE_MV`] of measurement tolerance above Vbat); OFF otherwise.
pub fn remote_is_on(remote_h_mv: u32, remote_l_mv: u32, vbat_mv: u32) -> bool {
    let linked = remote_h_mv.abs_diff(remote_l_mv) <= REMOTE_LINK_TOLERANCE_MV;
    let l_low = remote_l_mv < REMOTE_L_ON_BELOW_MV;
    let h_high = remote_h_mv > REMOTE_H_ON_ABOVE_MV
        && remote_h_mv < vbat_mv.saturating_add(REMOTE_H_VBAT_TOLERANCE_MV);
    linked || l_low || h_high
}

/// What the battery monitor tells the protection (kept small so the protection does not depend
/// on the monitor's internals). Both are latches the monitor keeps with their +3 point release
/// ([`crate::limits::FLOOR_RELEASE_POINTS`]), driven only by a known SoC (MON-7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocInput {
    /// PROT-9: SoC at or below the discharge floor (low-SoC alarm, ATD free-floating).
    pub below_floor: bool,
    /// MON-6: the low-SoC warning is active (drives the pre-alarm, PROT-3).
    pub low_soc_warning: bool,
}

/// Everything one protection step looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProtectionInputs {
    /// The state of the bank data.
    pub health: BankHealth,
    /// The bank values, `None` while no battery has valid data.
    pub aggregates: Option<Aggregates>,
    /// PROT-8: the remote on/off input reads ON now (see [`remote_is_on`]); the protection
    /// debounces it.
    pub remote_on: bool,
    /// The monitor's state.
    pub soc: SocInput,
    /// The pre-alarm level setting, mV per cell (PROT-3).
    pub prealarm_cell_mv: u16,
}

/// The three outputs with their reasons, as decided by one step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutputStates {
    /// ATD: true = high = loads allowed.
    pub atd: bool,
    /// ATC: true = high = charging allowed.
    pub atc: bool,
    /// Pre-alarm: true = high = alarm.
    pub prealarm: bool,
    /// Why ATD is free-floating (empty when high).
    pub atd_reasons: Reasons,
    /// Why ATC is free-floating (empty when high).
    pub atc_reasons: Reasons,
    /// Why the pre-alarm is active (empty when free-floating).
    pub prealarm_reasons: Reasons,
}

impl OutputStates {
    /// The state (true = high) and reasons of `output`.
    pub const fn get(&self, output: Output) -> (bool, Reasons) {
        match output {
            Output::Atd => (self.atd, self.atd_reasons),
            Output::Atc => (self.atc, self.atc_reasons),
            Output::Prealarm => (self.prealarm, self.prealarm_reasons),
        }
    }
}

/// The output state machine. Fixed size; see the module docs for the rules.
#[derive(Clone, Debug, Default)]
pub struct Protection {
    now_ms: u64,
    started: bool,
    /// The previous step had a complete, valid data set.
    data_ok: bool,
    active: [bool; ProtectionId::COUNT],
    /// PROT-1: the row's trip level held when the data set was judged and its trip debounce is
    /// still running: the output it acts on stays free-floating until it trips or is gone.
    judging: [bool; ProtectionId::COUNT],
    /// Since when the opposite of each row's state has held (trip level while inactive,
    /// release level while active): the debounce timer table.
    pending_since: [Option<u64>; ProtectionId::COUNT],
    /// When each row's pending level last held (for rows judged over their window).
    last_held: [Option<u64>; ProtectionId::COUNT],
    uv_disconnect: bool,
    /// PROT-3: since when ATD has been free-floating for under-voltage.
    uv_disconnect_since: Option<u64>,
    /// PROT-3: the pre-alarm output is released (see the module docs).
    prealarm_released: bool,
    prealarm_since: Option<u64>,
    floor_active: bool,
    update: UpdateState,
    /// PROT-8: the debounced remote state (`None` before the first step).
    remote_on: Option<bool>,
    /// PROT-8: since when the raw remote reading differs from `remote_on`.
    remote_changing_since: Option<u64>,
    /// PROT-1 (rev 2): ATD/ATC driven again after a warm restart until the first data set is
    /// judged, at most until `until_ms`.
    warm_hold: Option<WarmHold>,
    outputs: OutputStates,
}

/// The outputs held after a warm restart (see [`Protection::warm_start`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WarmHold {
    atd: bool,
    atc: bool,
    until_ms: u64,
}

impl Protection {
    /// Power-up state: every output free-floating (PROT-1).
    pub fn new() -> Self {
        Protection::default()
    }

    /// PROT-2, MON-8: at start, before the first step, the under-voltage disconnect latch
    /// stored before a restart (cold or warm): ATD stays free-floating for under-voltage until
    /// every cell is at 3.20 V or more (the row's release, judged on the first complete data
    /// set like any latched condition: a set already at 3.20 V releases it at once), and the
    /// alarm is raised. The pre-alarm output stays released (PROT-3): its 60 s ran, or were cut
    /// short, before the restart, and a restart (a brown-out loop on an empty bank) does not
    /// sound it again.
    pub fn restore_undervoltage_disconnect(&mut self) {
        if self.started {
            return;
        }
        self.set_stored_undervoltage_disconnect(true);
        log::warn!("under-voltage disconnect restored: atd free-floating until cells recover");
    }

    /// PROT-1 (rev 2): after a warm restart, drives ATD and ATC as the retained state had them
    /// from the first step at `now_ms`, until the first complete data set is judged or, if none
    /// comes, [`BATTERY_LOST_MS`] later (BANK-4); while batteries are still being found then
    /// (reports coming, [`BankHealth::discovering`]), until the set is judged. Other conditions
    /// (remote OFF) still apply.
    ///
    /// Called only for a safe retained state (no alarm was active at its last step). It is
    /// written every step and the stored under-voltage latch only when the latch changes, so
    /// it is the newer of the two: a latch restored from the store
    /// ([`Protection::restore_undervoltage_disconnect`]) had been released and its write lost;
    /// it is dropped.
    pub fn warm_start(&mut self, now_ms: u64, atd: bool, atc: bool) {
        self.now_ms = self.now_ms.max(now_ms);
        if !self.started && self.uv_disconnect {
            self.set_stored_undervoltage_disconnect(false);
        }
        self.warm_hold = Some(WarmHold {
            atd,
            atc,
            until_ms: self.now_ms.saturating_add(BATTERY_LOST_MS),
        });
    }

    /// Firmware-update progress at `now_ms` (PROT-10).
    pub fn handle_dfu(&mut self, now_ms: u64, event: DfuEvent) {
        self.now_ms = self.now_ms.max(now_ms);
        self.update.handle(self.now_ms, event);
    }

    /// One step at `now_ms`: evaluates every condition and returns the outputs. Logs every
    /// output change with its reasons (PROT-11); compare with [`Protection::outputs`] from
    /// before the call to report changes.
    pub fn step(&mut self, now_ms: u64, inputs: &ProtectionInputs) -> OutputStates {
        let now_ms = now_ms.max(self.now_ms);
        self.now_ms = now_ms;
        let remote_on = self.debounce_remote(now_ms, inputs.remote_on);
        let values = inputs.aggregates.filter(|_| inputs.health.complete);

        let judge = values.is_some() && !self.data_ok;
        self.data_ok = values.is_some();
        match values {
            Some(values) if judge => {
                // The outputs are free-floating (no data until now): a value already beyond its
                // trip level keeps the output it acts on so while it is debounced (it trips
                // then without a pre-alarm lead, ATD being free-floating), and no longer once
                // it is gone. An output held from a warm restart is not free-floating.
                self.started = true;
                let hold = self.warm_hold;
                for id in ProtectionId::ALL {
                    let (trip, _) = self.levels(id, inputs);
                    let value = value_of(id, &values);
                    // PROT-1 (rev 2): an output driven again after a warm restart is running
                    // its loads or chargers: its rows debounce as for a running output.
                    let running = hold.is_some_and(|h| match id.limit().effect {
                        Effect::Prealarm => false,
                        Effect::TripCharge => h.atc,
                        Effect::TripDischarge | Effect::PrealarmThenDischarge => h.atd,
                    });
                    let beyond = !running && !self.is_active(id) && trip.holds(value);
                    self.debounce(id, inputs, value);
                    let still = beyond && !self.is_active(id);
                    if let Some(slot) = self.judging.get_mut(id.index()) {
                        *slot = still;
                    }
                }
                if self.lead_row_active() {
                    self.uv_disconnect = true;
                }
                log::info!("complete battery data set judged");
            }
            Some(values) => {
                for id in ProtectionId::ALL {
                    self.debounce(id, inputs, value_of(id, &values));
                    let settled = self.is_active(id)
                        || self
                            .pending_since
                            .get(id.index())
                            .copied()
                            .flatten()
                            .is_none();
                    if let Some(slot) = self.judging.get_mut(id.index()) {
                        *slot &= !settled;
                    }
                }
            }
            None => {
                self.pending_since = [None; ProtectionId::COUNT];
                self.last_held = [None; ProtectionId::COUNT];
                self.judging = [false; ProtectionId::COUNT];
            }
        }
        self.floor_active = inputs.soc.below_floor;
        self.update.expire(now_ms);

        let healthy = self.started && values.is_some() && remote_on;
        let mut prealarm_reasons = Reasons::EMPTY;
        if healthy {
            for row in &LIMITS {
                let warns = matches!(row.effect, Effect::Prealarm | Effect::PrealarmThenDischarge);
                prealarm_reasons.insert_if(warns && self.is_active(row.id), row.reason);
            }
            prealarm_reasons.insert_if(inputs.soc.low_soc_warning, Reason::LowSoc);
        }
        if prealarm_reasons.is_empty() {
            self.prealarm_since = None;
        } else {
            self.prealarm_since.get_or_insert(now_ms);
        }
        if !self.lead_row_active() {
            self.uv_disconnect = false;
        } else if !self.outputs.atd
            || self
                .prealarm_since
                .is_some_and(|t| now_ms.saturating_sub(t) >= PREALARM_LEAD_MS)
        {
            // PROT-2: after the lead, or at once when the loads are already off (ATD
            // free-floating for any reason): no load is switched on into an under-voltage.
            self.uv_disconnect = true;
        }
        if self.uv_disconnect {
            let since = *self.uv_disconnect_since.get_or_insert(now_ms);
            if now_ms.saturating_sub(since) >= PREALARM_RELEASE_MS {
                self.prealarm_released = true;
            }
        } else {
            self.uv_disconnect_since = None;
            // The loads are back and a new under-voltage trips: it warns anew (PROT-2's lead
            // needs the output high), while a cell still low on the way up stays quiet. A cell
            // that falls below a warning row's release level again is no longer on its way up:
            // the pre-alarm follows its rules again (PROT-3, MON-6).
            let falling = values.is_some_and(|values| self.warning_row_falling(inputs, &values));
            if self.lead_row_active() || falling {
                self.prealarm_released = false;
            }
        }
        let cell_rows_active = LIMITS.iter().any(|row| {
            matches!(row.effect, Effect::Prealarm | Effect::PrealarmThenDischarge)
                && self.is_active(row.id)
        });
        if !cell_rows_active {
            self.prealarm_released = false;
        }
        if self.prealarm_released && !prealarm_reasons.is_empty() {
            prealarm_reasons = Reasons::of(Reason::PrealarmReleased);
            // The output is off: PROT-2's lead counts from when it is high again.
            self.prealarm_since = None;
        }

        // BANK-1: while batteries are still being found (reports are coming), the first data
        // set is on its way: the hold lasts until it is judged (the window is bounded).
        if self.started
            || self
                .warm_hold
                .is_some_and(|h| now_ms >= h.until_ms && !inputs.health.discovering)
        {
            self.warm_hold = None;
        }
        let hold = self.warm_hold;
        let mut common = Reasons::EMPTY;
        // PROT-13: a refused report alone keeps the set complete; it shows only while it keeps
        // the set incomplete (a battery that has never sent a valid report).
        let invalid = values.is_none() && inputs.health.invalid;
        let data_flagged = inputs.health.lost || invalid || inputs.health.config_error;
        // No data for another reason (the bank emptied): still no valid data set.
        let no_data = !self.started || (values.is_none() && !data_flagged);
        common.insert_if(!remote_on, Reason::RemoteOff);
        common.insert_if(inputs.health.lost, Reason::BatteryLost);
        common.insert_if(invalid, Reason::InvalidData);
        common.insert_if(inputs.health.config_error, Reason::ConfigurationError);
        let blocked = inputs.aggregates.unwrap_or_default();

        let mut atd_reasons = common;
        let mut atc_reasons = common;
        atd_reasons.insert_if(no_data && !hold.is_some_and(|h| h.atd), Reason::NoValidData);
        atc_reasons.insert_if(no_data && !hold.is_some_and(|h| h.atc), Reason::NoValidData);
        for row in &LIMITS {
            let judging = self.judging.get(row.id.index()).copied().unwrap_or(false);
            let active = self.is_active(row.id);
            match row.effect {
                Effect::Prealarm => {}
                Effect::TripCharge => atc_reasons.insert_if(active || judging, row.reason),
                Effect::TripDischarge => atd_reasons.insert_if(active || judging, row.reason),
                Effect::PrealarmThenDischarge => {
                    atd_reasons.insert_if((active && self.uv_disconnect) || judging, row.reason);
                }
            }
        }
        atd_reasons.insert_if(
            blocked.discharge_blocked,
            Reason::BatteryDischargeNotAllowed,
        );
        atd_reasons.insert_if(self.floor_active, Reason::DischargeFloor);
        atd_reasons.insert_if(self.update.loads_held(now_ms), Reason::FirmwareUpdateFailed);
        atc_reasons.insert_if(blocked.charge_blocked, Reason::BatteryChargeNotAllowed);
        atc_reasons.insert_if(self.update.charge_blocked(), Reason::FirmwareUpdate);

        let outputs = OutputStates {
            atd: atd_reasons.is_empty(),
            atc: atc_reasons.is_empty(),
            prealarm: !prealarm_reasons.is_empty() && !self.prealarm_released,
            atd_reasons,
            atc_reasons,
            prealarm_reasons,
        };
        for output in [Output::Atd, Output::Atc, Output::Prealarm] {
            let (high, reasons) = outputs.get(output);
            if high != self.outputs.get(output).0 {
                let state = Word(if high { "high" } else { "free-floating" });
                let name = Word(output.name());
                if output == Output::Prealarm || !high {
                    log::warn!("{name} {state}: {reasons}");
                } else {
                    log::info!("{name} {state}");
                }
            }
        }
        self.outputs = outputs;
        outputs
    }

    /// The outputs decided by the last step (all free-floating before the first).
    pub fn outputs(&self) -> OutputStates {
        self.outputs
    }

    /// Whether the cell protection `id` is active (latched).
    pub fn is_active(&self, id: ProtectionId) -> bool {
        self.active.get(id.index()).copied().unwrap_or(false)
    }

    /// PROT-1 (rev 2): true while the outputs are held from a warm restart's retained state.
    pub fn warm_holding(&self) -> bool {
        self.warm_hold.is_some()
    }

    /// PROT-1: true once the first complete, valid data set has been judged.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Whether the row whose effect is [`Effect::PrealarmThenDischarge`] (under-voltage) is
    /// active.
    fn lead_row_active(&self) -> bool {
        LIMITS.iter().any(|row| {
            matches!(row.effect, Effect::PrealarmThenDischarge) && self.is_active(row.id)
        })
    }

    /// PROT-2, MON-8: before the first step, the under-voltage disconnect as a stored latch
    /// has it: the under-voltage row, ATD's opening and the pre-alarm's release (PROT-3) all
    /// set or all clear.
    fn set_stored_undervoltage_disconnect(&mut self, latched: bool) {
        for row in LIMITS
            .iter()
            .filter(|row| matches!(row.effect, Effect::PrealarmThenDischarge))
        {
            self.set_active(row.id, latched);
        }
        self.uv_disconnect = latched;
        self.prealarm_released = latched;
    }

    /// PROT-3: an active row that drives the pre-alarm sees its value short of its release
    /// level (the cells are not recovering).
    fn warning_row_falling(&self, inputs: &ProtectionInputs, values: &Aggregates) -> bool {
        LIMITS.iter().any(|row| {
            let (_, release) = self.levels(row.id, inputs);
            matches!(row.effect, Effect::Prealarm | Effect::PrealarmThenDischarge)
                && self.is_active(row.id)
                && !release.holds(value_of(row.id, values))
        })
    }

    /// PROT-2: true while ATD is free-floating for under-voltage (until all cells ≥ 3.20 V).
    pub fn undervoltage_disconnect(&self) -> bool {
        self.uv_disconnect
    }

    /// PROT-9: true while the discharge floor holds ATD free-floating.
    pub fn discharge_floor_active(&self) -> bool {
        self.floor_active
    }

    /// PROT-10: true while a firmware update is in progress.
    pub fn dfu_in_progress(&self) -> bool {
        self.update.charge_blocked()
    }

    /// Where the firmware update stands (PROT-10).
    pub fn update_state(&self) -> UpdateState {
        self.update
    }

    /// PROT-12: low-power mode, while the remote is OFF or after an under-voltage disconnect.
    pub fn low_power(&self) -> bool {
        self.remote_on == Some(false) || self.uv_disconnect
    }

    /// PROT-8: the debounced remote state (OFF before the first step).
    pub fn remote_on(&self) -> bool {
        self.remote_on.unwrap_or(false)
    }

    /// PROT-3: true while the pre-alarm output is released after an under-voltage disconnect.
    pub fn prealarm_released(&self) -> bool {
        self.prealarm_released
    }

    /// PROT-8: the remote state after the reading `raw` at `now_ms`: the first reading is taken
    /// as it is (the outputs are free-floating at start anyway); a change counts once it has
    /// held for [`REMOTE_DEBOUNCE_MS`].
    fn debounce_remote(&mut self, now_ms: u64, raw: bool) -> bool {
        let state = *self.remote_on.get_or_insert(raw);
        if raw == state {
            self.remote_changing_since = None;
            return state;
        }
        let since = *self.remote_changing_since.get_or_insert(now_ms);
        if now_ms.saturating_sub(since) < REMOTE_DEBOUNCE_MS {
            return state;
        }
        self.remote_on = Some(raw);
        self.remote_changing_since = None;
        log::info!("remote {}", Word(if raw { "on" } else { "off" }));
        raw
    }

    /// The codes the protection holds active (cell protections, also while one keeps its
    /// output free-floating as a data set is judged; discharge floor, battery flags, firmware
    /// update), given the aggregates used for the last step.
    pub fn codes(&self, aggregates: Option<&Aggregates>) -> ActiveCodes {
        let mut codes = ActiveCodes::EMPTY;
        for row in &LIMITS {
            // PROT-1, LED-2 (rev 2): a row being judged keeps its output free-floating, so it
            // is an alarm while it does (the output shows its reason; the LED, the readout and
            // the app's alarms show its code), not only once it has tripped.
            let judging = !matches!(row.effect, Effect::Prealarm)
                && self.judging.get(row.id.index()).copied().unwrap_or(false);
            if self.is_active(row.id) || judging {
                codes.insert(row.code);
            }
        }
        codes.set(Code::LowSoc, self.floor_active);
        codes.set(Code::FirmwareUpdateFailed, self.update.failed());
        if let Some(a) = aggregates {
            codes.set(Code::BatteryChargeBlocked, a.charge_blocked);
            codes.set(Code::BatteryDischargeBlocked, a.discharge_blocked);
        }
        codes
    }

    /// When the protection acts next without new input (a debounce, the pre-alarm lead or the
    /// firmware-update delay expiring), ms.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let debounces = ProtectionId::ALL.into_iter().filter_map(|id| {
            let since = self.pending_since.get(id.index()).copied().flatten()?;
            let limit = id.limit();
            let debounce = if self.is_active(id) {
                limit.release_debounce_ms
            } else {
                limit.trip_debounce_ms
            };
            Some(since.saturating_add(u64::from(debounce)))
        });
        let lead = self
            .prealarm_since
            .filter(|_| self.lead_row_active() && !self.uv_disconnect)
            .map(|t| t.saturating_add(PREALARM_LEAD_MS));
        let dfu = self.update.next_deadline_ms(self.now_ms);
        let release = self
            .uv_disconnect_since
            .filter(|_| !self.prealarm_released)
            .map(|t| t.saturating_add(PREALARM_RELEASE_MS));
        let remote = self
            .remote_changing_since
            .map(|t| t.saturating_add(REMOTE_DEBOUNCE_MS));
        let hold = self.warm_hold.map(|h| h.until_ms);
        debounces
            .chain(lead)
            .chain(dfu)
            .chain(release)
            .chain(remote)
            .chain(hold)
            .filter(|&t| t > self.now_ms)
            .min()
    }

    /// The trip and release levels of `id`, moved by the setting for a settable row.
    fn levels(&self, id: ProtectionId, inputs: &ProtectionInputs) -> (Level, Level) {
        let limit = id.limit();
        match (id, limit.settable) {
            (ProtectionId::CellLow, Some((min, max))) => {
                let setting = i32::from(inputs.prealarm_cell_mv).clamp(min, max);
                let offset = setting.saturating_sub(limit.trip.value());
                (limit.trip.shifted(offset), limit.release.shifted(offset))
            }
            _ => (limit.trip, limit.release),
        }
    }

    fn set_active(&mut self, id: ProtectionId, active: bool) {
        if let Some(slot) = self.active.get_mut(id.index()) {
            *slot = active;
        }
        if let Some(slot) = self.pending_since.get_mut(id.index()) {
            *slot = None;
        }
        if let Some(slot) = self.last_held.get_mut(id.index()) {
            *slot = None;
        }
    }

    /// Advances the row `id` with the measured `value`: trip or release once its level has held
    /// for its debounce time (a trip judged over the window: never missed for a whole window).
    fn debounce(&mut self, id: ProtectionId, inputs: &ProtectionInputs, value: i32) {
        let (trip, release) = self.levels(id, inputs);
        let limit = id.limit();
        let active = self.is_active(id);
        let (level, debounce_ms) = if active {
            (release, limit.release_debounce_ms)
        } else {
            (trip, limit.trip_debounce_ms)
        };
        let now_ms = self.now_ms;
        let over_window = limit.trip_over_window && !active;
        let (Some(pending), Some(last_held)) = (
            self.pending_since.get_mut(id.index()),
            self.last_held.get_mut(id.index()),
        ) else {
            return;
        };
        if !level.holds(value) {
            let within =
                last_held.is_some_and(|t| now_ms.saturating_sub(t) < u64::from(debounce_ms));
            if !(over_window && within) {
                *pending = None;
                *last_held = None;
            }
            return;
        }
        *last_held = Some(now_ms);
        let since = *pending.get_or_insert(now_ms);
        if now_ms.saturating_sub(since) >= u64::from(debounce_ms) {
            self.set_active(id, !active);
            let what = Word(if active { "released" } else { "tripped" });
            log::info!(
                "protection {} {what} at {}",
                Word(id.name()),
                Number::from(value)
            );
        }
    }
}

/// The aggregate a row watches, as i32 in the row's unit.
fn value_of(id: ProtectionId, values: &Aggregates) -> i32 {
    match id.limit().quantity {
        Quantity::MinCellMv => i32::from(values.min_cell_mv),
        Quantity::MaxCellMv => i32::from(values.max_cell_mv),
        Quantity::MinTempDdegc => i32::from(values.min_temp_ddegc),
        Quantity::MaxTempDdegc => i32::from(values.max_temp_ddegc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_bits_are_stable_and_display_joins_names() {
        for (n, reason) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, n, "bit numbers are part of the C ABI");
            assert_eq!(Reasons::of(reason).bits(), 1 << n);
        }
        let mut reasons = Reasons::EMPTY;
        assert!(reasons.is_empty() && reasons.to_string().is_empty());
        reasons.insert(Reason::RemoteOff);
        reasons.insert_if(true, Reason::BatteryLost);
        reasons.insert_if(false, Reason::InvalidData);
        assert_eq!(reasons.to_string(), "remote_off|battery_lost");
        assert_eq!(reasons.iter().count(), 2);
        assert!(reasons.contains(Reason::BatteryLost) && !reasons.contains(Reason::InvalidData));
    }

    fn healthy(min_cell_mv: u16) -> ProtectionInputs {
        ProtectionInputs {
            health: BankHealth {
                complete: true,
                ..BankHealth::default()
            },
            aggregates: Some(Aggregates {
                min_cell_mv,
                max_cell_mv: min_cell_mv.max(3300),
                min_temp_ddegc: 250,
                max_temp_ddegc: 250,
                ..Aggregates::default()
            }),
            remote_on: true,
            soc: SocInput::default(),
            prealarm_cell_mv: 3100,
        }
    }

    /// PROT-2 at the table level: under-voltage raises the pre-alarm after 5 s and opens ATD
    /// 30 s after the pre-alarm went high; the timer table says when to wake up.
    #[test]
    fn prot_2_deadlines_follow_the_timer_table() {
        let mut p = Protection::new();
        assert!(p.step(0, &healthy(3300)).atd);
        let out = p.step(1000, &healthy(2700));
        assert!(out.atd && !out.prealarm);
        assert_eq!(p.next_deadline_ms(), Some(6000), "both 5 s debounces");
        let out = p.step(6000, &healthy(2700));
        assert!(out.prealarm && out.atd);
        assert_eq!(p.next_deadline_ms(), Some(36_000), "the pre-alarm lead");
        assert!(p.step(35_999, &healthy(2700)).atd);
        let out = p.step(36_000, &healthy(2700));
        assert!(!out.atd && out.atd_reasons.contains(Reason::CellUndervoltage));
        assert!(p.undervoltage_disconnect() && p.low_power());
    }

    /// The log lines of the threads that asked for them (the logger is global to the test
    /// binary; other tests log too).
    struct Capture;

    static CAPTURED: std::sync::Mutex<std::vec::Vec<(log::Level, std::string::String)>> =
        std::sync::Mutex::new(std::vec::Vec::new());

    std::thread_local! {
        static CAPTURING: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
    }

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            CAPTURING.with(core::cell::Cell::get)
        }
        fn log(&self, record: &log::Record<'_>) {
            if self.enabled(record.metadata()) {
                if let Ok(mut lines) = CAPTURED.lock() {
                    lines.push((record.level(), std::format!("{}", record.args())));
                }
            }
        }
        fn flush(&self) {}
    }

    /// PROT-11: every output change is logged with the output's name, its new state and its
    /// reasons (the firmware's log is where an installer reads why the loads went off): as a
    /// warning when ATD or ATC goes free-floating or the pre-alarm changes, as info when ATD or
    /// ATC goes high.
    #[test]
    fn prot_11_output_changes_are_logged_with_name_state_and_reasons() {
        static LOGGER: Capture = Capture;
        let _ = log::set_logger(&LOGGER);
        log::set_max_level(log::LevelFilter::Info);
        CAPTURING.with(|c| c.set(true));
        let mut p = Protection::new();
        let _ = p.step(0, &healthy(3300));
        let _ = p.step(1000, &healthy(2700));
        let _ = p.step(6000, &healthy(2700));
        let _ = p.step(36_000, &healthy(2700));
        let off = ProtectionInputs {
            remote_on: false,
            ..healthy(3300)
        };
        let _ = p.step(40_000, &off);
        let _ = p.step(40_500, &off);
        CAPTURING.with(|c| c.set(false));
        let lines = CAPTURED.lock().map(|l| l.clone()).unwrap_or_default();
        let (info, warn) = (log::Level::Info, log::Level::Warn);
        for expected in [
            (info, "atd high"),
            (info, "atc high"),
            (warn, "prealarm high: cell_undervoltage|prealarm_level"),
            (warn, "atd free-floating: cell_undervoltage"),
            (warn, "atc free-floating: remote_off"),
        ] {
            assert!(
                lines
                    .iter()
                    .any(|(level, line)| (*level, line.as_str()) == expected),
                "no log line {expected:?} in {lines:?}"
            );
        }
    }

    /// PROT-3 at the table level: the pre-alarm's release, 60 s after ATD opened for
    /// under-voltage, is a deadline of its own (the firmware sleeps until the next deadline;
    /// in low power its tick is a second).
    #[test]
    fn prot_3_prealarm_release_is_a_deadline() {
        let mut p = Protection::new();
        let _ = p.step(0, &healthy(3300));
        let _ = p.step(1000, &healthy(2700));
        let _ = p.step(6000, &healthy(2700));
        assert!(!p.step(36_000, &healthy(2700)).atd);
        assert_eq!(p.next_deadline_ms(), Some(96_000), "the pre-alarm release");
        assert!(p.step(95_999, &healthy(2700)).prealarm);
        let out = p.step(96_000, &healthy(2700));
        assert!(!out.prealarm && out.prealarm_reasons.contains(Reason::PrealarmReleased));
        assert_eq!(p.next_deadline_ms(), None);
    }

    /// PROT-10 at the table level: the failure delay is a deadline of its own.
    #[test]
    fn prot_10_failure_delay_is_a_deadline() {
        let mut p = Protection::new();
        let _ = p.step(0, &healthy(3300));
        p.handle_dfu(10, DfuEvent::Failed);
        assert_eq!(p.next_deadline_ms(), Some(120_010));
        assert!(p.step(120_009, &healthy(3300)).atd);
        assert!(!p.step(120_010, &healthy(3300)).atd);
        assert!(p.codes(None).contains(Code::FirmwareUpdateFailed));
    }
}
