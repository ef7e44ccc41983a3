//! The protection outputs (PROT): Load disconnect (ATD), Charge disconnect (ATC) and pre-alarm,
//! decided each tick from bank data, remote input, monitor state and firmware-update progress,
//! with debounce, hysteresis and a reason for every free-floating output.

/// One condition that can make an output free-floating (ATD, ATC) or active (pre-alarm).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    /// PROT-1: no complete, valid set of battery data judged safe yet (power-up).
    NoValidData = 0,
    /// PROT-8: the remote on/off input is OFF.
    RemoteOff = 1,
    /// PROT-2: cell under-voltage (ATD), or imminent under-voltage (pre-alarm).
    CellUndervoltage = 2,
    /// PROT-3: a cell is below the pre-alarm level (pre-alarm only).
    PrealarmLevel = 3,
    /// PROT-3/MON-6: the low-SoC warning is active (pre-alarm only).
    LowSoc = 4,
    /// PROT-4: cell over-voltage (ATC).
    CellOvervoltage = 5,
    /// PROT-5: cell temperature too low to charge (ATC).
    LowTemperature = 6,
    /// PROT-6: cell temperature too high to charge (ATC).
    HighTemperature = 7,
    /// PROT-6: cell temperature too high to discharge (ATD).
    VeryHighTemperature = 8,
    /// PROT-7: a battery's own flag does not allow charging (ATC).
    BatteryChargeNotAllowed = 9,
    /// PROT-7: a battery's own flag does not allow discharging (ATD).
    BatteryDischargeNotAllowed = 10,
    /// PROT-9: SoC at or below the discharge floor (ATD).
    DischargeFloor = 11,
    /// PROT-10: a firmware update is in progress (ATC).
    FirmwareUpdate = 12,
    /// PROT-10: a firmware update failed or was aborted 120 s ago (ATD).
    FirmwareUpdateFailed = 13,
    /// BANK-4: a battery sent nothing valid for 5 s (ATC and ATD).
    BatteryLost = 14,
    /// BANK-2: the bank breaks the configuration rules (ATC and ATD).
    ConfigurationError = 15,
    /// A battery reports physically impossible data (ATC and ATD, fail safe).
    InvalidData = 16,
}

impl Reason {
    /// Every reason, in bit order.
    pub const ALL: [Reason; 17] = [
        Reason::NoValidData,
        Reason::RemoteOff,
        Reason::CellUndervoltage,
        Reason::PrealarmLevel,
        Reason::LowSoc,
        Reason::CellOvervoltage,
        Reason::LowTemperature,
        Reason::HighTemperature,
        Reason::VeryHighTemperature,
        Reason::BatteryChargeNotAllowed,
        Reason::BatteryDischargeNotAllowed,
        Reason::DischargeFloor,
        Reason::FirmwareUpdate,
        Reason::FirmwareUpdateFailed,
        Reason::BatteryLost,
        Reason::ConfigurationError,
        Reason::InvalidData,
    ];

    /// Short snake_case name for logs and CSV columns.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::NoValidData => "no_valid_data",
            Reason::RemoteOff => "remote_off",
            Reason::CellUndervoltage => "cell_undervoltage",
            Reason::PrealarmLevel => "prealarm_level",
            Reason::LowSoc => "low_soc",
            Reason::CellOvervoltage => "cell_overvoltage",
            Reason::LowTemperature => "low_temperature",
            Reason::HighTemperature => "high_temperature",
            Reason::VeryHighTemperature => "very_high_temperature",
            Reason::BatteryChargeNotAllowed => "battery_charge_not_allowed",
            Reason::BatteryDischargeNotAllowed => "battery_discharge_not_allowed",
            Reason::DischargeFloor => "discharge_floor",
            Reason::FirmwareUpdate => "firmware_update",
            Reason::FirmwareUpdateFailed => "firmware_update_failed",
            Reason::BatteryLost => "battery_lost",
            Reason::ConfigurationError => "configuration_error",
            Reason::InvalidData => "invalid_data",
        }
    }

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
