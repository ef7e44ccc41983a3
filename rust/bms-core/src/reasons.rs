//! Why an output is free-floating (ATD, ATC) or active (pre-alarm): [`Reason`] and the set
//! [`Reasons`]. Their own module so that the table of limits can name a row's reason without
//! depending on the protection that reads the table.

use crate::stable_enum::stable_enum;

stable_enum! {
    /// One condition that can make an output free-floating (ATD, ATC) or active (pre-alarm).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Reason {
        /// PROT-1: no complete, valid set of battery data judged safe yet (power-up).
        NoValidData = 0 => "no_valid_data",
        /// PROT-8: the remote on/off input is OFF.
        RemoteOff = 1 => "remote_off",
        /// PROT-2: cell under-voltage (ATD), or imminent under-voltage (pre-alarm).
        CellUndervoltage = 2 => "cell_undervoltage",
        /// PROT-3: a cell is below the pre-alarm level (pre-alarm only).
        PrealarmLevel = 3 => "prealarm_level",
        /// PROT-3/MON-6: the low-SoC warning is active (pre-alarm only).
        LowSoc = 4 => "low_soc",
        /// PROT-4: cell over-voltage (ATC).
        CellOvervoltage = 5 => "cell_overvoltage",
        /// PROT-5: cell temperature too low to charge (ATC).
        LowTemperature = 6 => "low_temperature",
        /// PROT-6: cell temperature too high to charge (ATC).
        HighTemperature = 7 => "high_temperature",
        /// PROT-6: cell temperature too high to discharge (ATD).
        VeryHighTemperature = 8 => "very_high_temperature",
        /// PROT-7: a battery's own flag does not allow charging (ATC).
        BatteryChargeNotAllowed = 9 => "battery_charge_not_allowed",
        /// PROT-7: a battery's own flag does not allow discharging (ATD).
        BatteryDischargeNotAllowed = 10 => "battery_discharge_not_allowed",
        /// PROT-9: SoC at or below the discharge floor (ATD).
        DischargeFloor = 11 => "discharge_floor",
        /// PROT-10: a firmware update is in progress (ATC).
        FirmwareUpdate = 12 => "firmware_update",
        /// PROT-10: a firmware update failed or was aborted 120 s ago (ATD).
        FirmwareUpdateFailed = 13 => "firmware_update_failed",
        /// BANK-4: a battery sent nothing valid for 5 s (ATC and ATD).
        BatteryLost = 14 => "battery_lost",
        /// BANK-2: the bank breaks the configuration rules (ATC and ATD).
        ConfigurationError = 15 => "configuration_error",
        /// PROT-13: a battery that has never sent a valid report sends implausible data, so the
        /// set is not complete (ATC and ATD, fail safe).
        InvalidData = 16 => "invalid_data",
        /// PROT-3 **(choice)**: the pre-alarm output is free-floating although its conditions
        /// hold: released 60 s after ATD went free-floating for under-voltage (pre-alarm only).
        PrealarmReleased = 17 => "prealarm_released",
        /// PROT-1/PROT-11 (rev 2): the output went free-floating at a restart (reported at the
        /// first step after a warm one, which may drive it again from the retained state).
        Restart = 18 => "restart",
    }
}

impl Reason {
    const fn bit(self) -> u32 {
        1 << (self as u8)
    }
}

/// A set of [`Reason`]s: why ATD/ATC is free-floating, or why the pre-alarm is active.
/// Empty means the output is in its normal state. Bit `n` is the reason with discriminant `n`
/// (stable: the C side and the protocol see [`Reasons::bits`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Reasons(u32);

impl Reasons {
    /// No reason.
    pub const EMPTY: Reasons = Reasons(0);

    /// The set holding only `reason`.
    pub const fn of(reason: Reason) -> Self {
        Reasons(reason.bit())
    }

    /// The raw bits (bit `n` = reason with discriminant `n`).
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// True when no reason is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when `reason` is in the set.
    pub const fn contains(self, reason: Reason) -> bool {
        self.0 & reason.bit() != 0
    }

    /// Adds `reason`.
    pub fn insert(&mut self, reason: Reason) {
        self.0 |= reason.bit();
    }

    /// Adds `reason` when `condition` holds.
    pub fn insert_if(&mut self, condition: bool, reason: Reason) {
        if condition {
            self.insert(reason);
        }
    }

    /// The reasons in the set, in bit order.
    pub fn iter(self) -> impl Iterator<Item = Reason> {
        Reason::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

impl core::fmt::Display for Reasons {
    /// The reason names joined by `|` (empty string when none).
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, reason) in self.iter().enumerate() {
            if i > 0 {
                f.write_str("|")?;
            }
            f.write_str(reason.name())?;
        }
        Ok(())
    }
}
