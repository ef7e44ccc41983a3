//! The catalogue of error, alarm and warning codes (one stable number, severity and short name
//! each), and [`ActiveCodes`], the fixed-size set of codes active now.

use crate::stable_enum::stable_enum;

/// How serious a code is. LED-2: red solid for any error or alarm, blinking for warnings only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Something needs attention soon; the outputs are unaffected by the warning itself.
    Warning,
    /// A protection is acting (or about to): an output is free-floating because of it.
    Alarm,
    /// The BMS itself, its data or its configuration is wrong.
    Error,
}

stable_enum! {
    /// One error, alarm or warning. The discriminant is the stable code number reported over BLE
    /// and in the simulator; new codes get new numbers, numbers are never reused.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Code {
        /// SET-3: stored settings were corrupt or unreadable; defaults are in use.
        SettingsCorrupt = 1 => "settings_corrupt",
        /// SET-3: stored monitor or history records were corrupt or unreadable; they were reset.
        RecordsCorrupt = 2 => "records_corrupt",
        /// A battery reports physically impossible data (cell voltage, temperature, cell count).
        InvalidBatteryData = 3 => "invalid_battery_data",
        /// PROT-10: a firmware update failed or was aborted.
        FirmwareUpdateFailed = 4 => "firmware_update_failed",
        /// BANK-2: the bank breaks the configuration rules (mixed models, unequal strings, too many
        /// batteries, unsupported voltage).
        ConfigurationError = 5 => "configuration_error",
        /// PROT-2: cell under-voltage.
        CellUndervoltage = 6 => "cell_undervoltage",
        /// PROT-4: cell over-voltage.
        CellOvervoltage = 7 => "cell_overvoltage",
        /// PROT-5: cell temperature too low to charge.
        LowTemperature = 8 => "low_temperature",
        /// PROT-6: cell temperature too high.
        HighTemperature = 9 => "high_temperature",
        /// BANK-4: a battery sent nothing valid for 5 s.
        BatteryLost = 10 => "battery_lost",
        /// PROT-9: SoC at or below the discharge floor.
        LowSoc = 11 => "low_soc",
        /// PROT-3: a cell is below the pre-alarm level.
        LowCellVoltage = 12 => "low_cell_voltage",
        /// MON-6: SoC at or below the low-SoC warning level.
        LowSocWarning = 13 => "low_soc_warning",
        /// PROT-7: a battery's own flag does not allow charging.
        BatteryChargeBlocked = 14 => "battery_charge_blocked",
        /// PROT-7: a battery's own flag does not allow discharging.
        BatteryDischargeBlocked = 15 => "battery_discharge_blocked",
        /// SET-3: a record could not be written to the store. The previous value stays stored and
        /// the write is retried (every 60 s); the code clears when the writes succeed again.
        StorageWriteFailed = 16 => "storage_write_failed",
        /// BLE-2: the stored secrets (passkey, readout key) were faulty: kept as stored, nothing
        /// pairs or is advertised until the button is held to reset pairing.
        SecretsFault = 17 => "secrets_fault",
    }
}

impl Code {
    /// The stable code number.
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// How serious the code is.
    pub const fn severity(self) -> Severity {
        match self {
            Code::SettingsCorrupt
            | Code::RecordsCorrupt
            | Code::InvalidBatteryData
            | Code::FirmwareUpdateFailed
            | Code::ConfigurationError
            | Code::StorageWriteFailed
            | Code::SecretsFault => Severity::Error,
            Code::CellUndervoltage
            | Code::CellOvervoltage
            | Code::LowTemperature
            | Code::HighTemperature
            | Code::BatteryLost
            | Code::LowSoc
            // LED-2 (rev 2): a battery's own flag opens an output (PROT-7), so it is an alarm.
            | Code::BatteryChargeBlocked
            | Code::BatteryDischargeBlocked => Severity::Alarm,
            Code::LowCellVoltage | Code::LowSocWarning => Severity::Warning,
        }
    }

    const fn bit(self) -> u32 {
        1 << (self as u8)
    }
}

impl core::fmt::Display for Code {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// The set of active codes (fixed size: one bit per code number).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ActiveCodes(u32);

impl ActiveCodes {
    /// No code active.
    pub const EMPTY: ActiveCodes = ActiveCodes(0);

    /// The raw bits (bit `n` = code number `n`).
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// True when `code` is active.
    pub const fn contains(self, code: Code) -> bool {
        self.0 & code.bit() != 0
    }

    /// True when no code is active.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Marks `code` active.
    pub fn insert(&mut self, code: Code) {
        self.0 |= code.bit();
    }

    /// Marks `code` inactive.
    pub fn remove(&mut self, code: Code) {
        self.0 &= !code.bit();
    }

    /// Marks `code` active or inactive.
    pub fn set(&mut self, code: Code, active: bool) {
        if active {
            self.insert(code);
        } else {
            self.remove(code);
        }
    }

    /// The active codes, in number order.
    pub fn iter(self) -> impl Iterator<Item = Code> {
        Code::ALL.into_iter().filter(move |c| self.contains(*c))
    }

    /// The active codes of one severity.
    pub fn of(self, severity: Severity) -> impl Iterator<Item = Code> {
        self.iter().filter(move |c| c.severity() == severity)
    }

    /// True when any active code has this severity.
    pub fn any(self, severity: Severity) -> bool {
        self.of(severity).next().is_some()
    }

    /// The subset of codes of one severity (e.g. for the `alarms` CSV column).
    pub fn only(self, severity: Severity) -> ActiveCodes {
        let mut subset = ActiveCodes::EMPTY;
        for code in self.of(severity) {
            subset.insert(code);
        }
        subset
    }
}

impl core::fmt::Display for ActiveCodes {
    /// The short names joined by `|`, in number order (empty when none):
    /// `cell_undervoltage|battery_lost`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, code) in self.iter().enumerate() {
            if i > 0 {
                f.write_str("|")?;
            }
            f.write_str(code.name())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable_and_unique() {
        let numbers: std::vec::Vec<u8> = Code::ALL.iter().map(|c| c.number()).collect();
        assert_eq!(
            numbers,
            (1..=17).collect::<std::vec::Vec<u8>>(),
            "never renumber"
        );
        for code in Code::ALL {
            assert_eq!(Code::from_u8(code.number()), Some(code));
            assert!(code.number() < 32, "fits the active-set bits");
        }
        assert_eq!(Code::from_u8(0), None);
        assert_eq!(Code::from_u8(200), None);
    }

    #[test]
    fn names_are_unique_snake_case() {
        for (i, a) in Code::ALL.iter().enumerate() {
            assert!(a.name().chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            for b in Code::ALL.iter().skip(i + 1) {
                assert_ne!(a.name(), b.name());
            }
        }
        assert_eq!(Code::CellUndervoltage.to_string(), "cell_undervoltage");
    }

    #[test]
    fn severities_follow_the_catalogue() {
        assert_eq!(Code::SettingsCorrupt.severity(), Severity::Error);
        assert_eq!(Code::StorageWriteFailed.severity(), Severity::Error);
        assert_ne!(Code::StorageWriteFailed, Code::RecordsCorrupt);
        assert_eq!(Code::ConfigurationError.severity(), Severity::Error);
        assert_eq!(Code::CellUndervoltage.severity(), Severity::Alarm);
        assert_eq!(Code::BatteryLost.severity(), Severity::Alarm);
        assert_eq!(Code::LowSoc.severity(), Severity::Alarm);
        assert_eq!(Code::LowCellVoltage.severity(), Severity::Warning);
        assert_eq!(Code::LowSocWarning.severity(), Severity::Warning);
    }

    #[test]
    fn active_set_operations_and_csv_names() {
        let mut codes = ActiveCodes::EMPTY;
        assert!(codes.is_empty() && codes.to_string().is_empty());
        codes.insert(Code::BatteryLost);
        codes.insert(Code::CellUndervoltage);
        codes.insert(Code::LowSocWarning);
        assert_eq!(
            codes.to_string(),
            "cell_undervoltage|battery_lost|low_soc_warning"
        );
        assert_eq!(
            codes.only(Severity::Alarm).to_string(),
            "cell_undervoltage|battery_lost"
        );
        assert_eq!(codes.only(Severity::Warning).to_string(), "low_soc_warning");
        assert!(codes.only(Severity::Error).is_empty());
        assert!(codes.any(Severity::Alarm) && !codes.any(Severity::Error));
        codes.set(Code::BatteryLost, false);
        assert!(!codes.contains(Code::BatteryLost));
        codes.remove(Code::CellUndervoltage);
        assert_eq!(codes.bits(), 1 << 13);
    }
}
