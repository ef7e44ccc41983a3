//! The user settings of the battery monitor and protection (MON-3), their validation as a whole
//! (SET-1) and factory defaults (SET-4).
//!
//! Inputs are whole [`Settings`] values written by the user (GATT, simulator); outputs are the
//! accepted settings or a [`SettingsError`] naming the offending [`SettingsField`]. Persisting the
//! bytes (version, checksum) is the storage module's job.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::stable_enum::stable_enum;
use crate::word::Number;

/// The user settings. Units are in the names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Charged voltage per cell in mV (3350–3650, default 3500); times cells in series gives the
    /// bank's charged voltage (MON-2).
    pub charged_cell_mv: u16,
    /// Tail current in tenths of a percent of capacity (5–100, default 40 = 4 %).
    pub tail_current_permille: u16,
    /// Charged detection time in minutes (1–100, default 3).
    pub charged_detection_min: u8,
    /// Low-SoC warning level in percent (0–99, 0 = off, default 20).
    pub low_soc_warning_pct: u8,
    /// Discharge floor in percent (0–99, 0 = off, default 10).
    pub discharge_floor_pct: u8,
    /// Pre-alarm cell voltage in mV (2850–3150, default 3100).
    pub prealarm_cell_mv: u16,
}

stable_enum! {
    /// One field of [`Settings`], as named in errors and by the GATT protocol (the discriminant is
    /// the field's number on the wire and never changes).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub enum SettingsField {
        /// [`Settings::charged_cell_mv`].
        ChargedVoltage = 0 => "charged voltage",
        /// [`Settings::tail_current_permille`].
        TailCurrent = 1 => "tail current",
        /// [`Settings::charged_detection_min`].
        ChargedDetectionTime = 2 => "charged detection time",
        /// [`Settings::low_soc_warning_pct`].
        LowSocWarningLevel = 3 => "low-soc warning level",
        /// [`Settings::discharge_floor_pct`].
        DischargeFloor = 4 => "discharge floor",
        /// [`Settings::prealarm_cell_mv`].
        PrealarmLevel = 5 => "pre-alarm level",
    }
}

/// The allowed range and factory default of one numeric setting, in the field's own unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Smallest allowed value.
    pub min: u16,
    /// Largest allowed value.
    pub max: u16,
    /// Factory default.
    pub default: u16,
}

impl Bounds {
    /// Whether `value` lies within `min..=max`.
    pub const fn contains(&self, value: u16) -> bool {
        value >= self.min && value <= self.max
    }
}

impl SettingsField {
    /// Range and default of the field (MON-3), in the unit of its [`Settings`] member.
    pub const fn bounds(self) -> Bounds {
        match self {
            SettingsField::ChargedVoltage => Bounds {
                min: 3350,
                max: 3650,
                default: 3500,
            },
            SettingsField::TailCurrent => Bounds {
                min: 5,
                max: 100,
                default: 40,
            },
            SettingsField::ChargedDetectionTime => Bounds {
                min: 1,
                max: 100,
                default: 3,
            },
            SettingsField::LowSocWarningLevel => Bounds {
                min: 0,
                max: 99,
                default: 20,
            },
            SettingsField::DischargeFloor => Bounds {
                min: 0,
                max: 99,
                default: 10,
            },
            SettingsField::PrealarmLevel => Bounds {
                min: 2850,
                max: 3150,
                default: 3100,
            },
        }
    }

    /// Whether the factory reset (SET-4) restores this field. The pre-alarm level is not in the
    /// list of SET-4 (docs/spec/behaviour.md), so a factory reset keeps the user's pre-alarm level.
    pub const fn restored_by_factory_reset(self) -> bool {
        !matches!(self, SettingsField::PrealarmLevel)
    }
}

impl fmt::Display for SettingsField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a settings write was refused (SET-1). Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SettingsError {
    /// `field` holds `value`, outside its allowed range `min..=max` (in the field's unit).
    OutOfRange {
        /// The offending field.
        field: SettingsField,
        /// The refused value.
        value: u16,
        /// Smallest allowed value.
        min: u16,
        /// Largest allowed value.
        max: u16,
    },
    /// The low-SoC warning level is set but not above the discharge floor (MON-3); names
    /// [`SettingsField::LowSocWarningLevel`].
    WarningNotAboveFloor {
        /// The refused warning level in percent.
        warning_pct: u8,
        /// The discharge floor in percent it must exceed.
        floor_pct: u8,
    },
}

impl SettingsError {
    /// The field the error is about.
    pub const fn field(&self) -> SettingsField {
        match self {
            SettingsError::OutOfRange { field, .. } => *field,
            SettingsError::WarningNotAboveFloor { .. } => SettingsField::LowSocWarningLevel,
        }
    }
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingsError::OutOfRange {
                field,
                value,
                min,
                max,
            } => {
                write!(
                    f,
                    "{field} {} out of range {}..={}",
                    Number::from(*value),
                    Number::from(*min),
                    Number::from(*max)
                )
            }
            SettingsError::WarningNotAboveFloor {
                warning_pct,
                floor_pct,
            } => write!(
                f,
                "low-soc warning level {} % must be above the discharge floor {} %",
                Number::from(*warning_pct),
                Number::from(*floor_pct)
            ),
        }
    }
}

impl Default for Settings {
    /// The factory defaults of MON-3.
    fn default() -> Self {
        Settings {
            charged_cell_mv: SettingsField::ChargedVoltage.bounds().default,
            tail_current_permille: SettingsField::TailCurrent.bounds().default,
            charged_detection_min: SettingsField::ChargedDetectionTime.bounds().default as u8,
            low_soc_warning_pct: SettingsField::LowSocWarningLevel.bounds().default as u8,
            discharge_floor_pct: SettingsField::DischargeFloor.bounds().default as u8,
            prealarm_cell_mv: SettingsField::PrealarmLevel.bounds().default,
        }
    }
}

impl Settings {
    /// The value of `field`, in the unit of its member.
    pub const fn get(&self, field: SettingsField) -> u16 {
        match field {
            SettingsField::ChargedVoltage => self.charged_cell_mv,
            SettingsField::TailCurrent => self.tail_current_permille,
            SettingsField::ChargedDetectionTime => self.charged_detection_min as u16,
            SettingsField::LowSocWarningLevel => self.low_soc_warning_pct as u16,
            SettingsField::DischargeFloor => self.discharge_floor_pct as u16,
            SettingsField::PrealarmLevel => self.prealarm_cell_mv,
        }
    }

    /// A copy with `field` set to `value`, not validated (call [`Settings::validate`] or
    /// [`Settings::write`]). A value too large for a one-byte field saturates, which validation
    /// then refuses as out of range.
    pub fn with(mut self, field: SettingsField, value: u16) -> Settings {
        let byte = u8::try_from(value).unwrap_or(u8::MAX);
        match field {
            SettingsField::ChargedVoltage => self.charged_cell_mv = value,
            SettingsField::TailCurrent => self.tail_current_permille = value,
            SettingsField::ChargedDetectionTime => self.charged_detection_min = byte,
            SettingsField::LowSocWarningLevel => self.low_soc_warning_pct = byte,
            SettingsField::DischargeFloor => self.discharge_floor_pct = byte,
            SettingsField::PrealarmLevel => self.prealarm_cell_mv = value,
        }
        self
    }

    /// A copy with `field` set to `value` when `value` lies in the field's range; otherwise the
    /// error names the value as written (300, not the 255 a one-byte field would hold), and
    /// nothing changes (SET-1). Call [`Settings::validate`] for the cross-rule.
    pub fn try_with(self, field: SettingsField, value: u16) -> Result<Settings, SettingsError> {
        in_range(field, value)?;
        Ok(self.with(field, value))
    }

    /// Checks every range and the cross-rule (warning level above the floor when both are set),
    /// as a whole (SET-1). The first failing field, in wire order, is reported.
    pub fn validate(&self) -> Result<(), SettingsError> {
        for field in SettingsField::ALL {
            in_range(field, self.get(field))?;
        }
        let warning_pct = self.low_soc_warning_pct;
        let floor_pct = self.discharge_floor_pct;
        if warning_pct != 0 && floor_pct != 0 && warning_pct <= floor_pct {
            return Err(SettingsError::WarningNotAboveFloor {
                warning_pct,
                floor_pct,
            });
        }
        Ok(())
    }

    /// Replaces all settings with `new` if it validates (SET-1); on error nothing changes.
    pub fn write(&mut self, new: Settings) -> Result<(), SettingsError> {
        new.validate()?;
        *self = new;
        Ok(())
    }

    /// Restores the factory defaults of exactly the fields SET-4 lists (docs/spec/behaviour.md):
    /// charged voltage, tail current, charged detection time, low-SoC warning level and
    /// discharge floor. The pre-alarm level is kept: it is not in that list, and it is a
    /// protection level the installer chose for the loads. The result always validates.
    pub fn factory_reset(&mut self) {
        let defaults = Settings::default();
        *self = Settings {
            prealarm_cell_mv: self.prealarm_cell_mv,
            ..defaults
        };
    }

    /// The bank's charged voltage in mV for `cells_in_series` cells in series (MON-2).
    pub const fn charged_bank_mv(&self, cells_in_series: u16) -> u32 {
        self.charged_cell_mv as u32 * cells_in_series as u32
    }

    /// The tail current in mA for a bank of `capacity_mah` (MON-2).
    pub const fn tail_current_ma(&self, capacity_mah: u32) -> u32 {
        // u64: capacity up to u32::MAX times 100 permille does not fit u32.
        let ma = capacity_mah as u64 * self.tail_current_permille as u64 / 1000;
        if ma > u32::MAX as u64 {
            u32::MAX
        } else {
            ma as u32
        }
    }

    /// The charged detection time in ms (MON-2).
    pub const fn charged_detection_ms(&self) -> u64 {
        self.charged_detection_min as u64 * 60_000
    }

    /// The low-SoC warning level in permille, or `None` when off (MON-6).
    pub const fn low_soc_warning_permille(&self) -> Option<u16> {
        match self.low_soc_warning_pct {
            0 => None,
            pct => Some(pct as u16 * 10),
        }
    }

    /// The discharge floor in permille, or `None` when off (PROT-9, MON-5).
    pub const fn discharge_floor_permille(&self) -> Option<u16> {
        match self.discharge_floor_pct {
            0 => None,
            pct => Some(pct as u16 * 10),
        }
    }
}

/// `value` lies in `field`'s range, or the error naming it (SET-1).
fn in_range(field: SettingsField, value: u16) -> Result<(), SettingsError> {
    let bounds = field.bounds();
    if bounds.contains(value) {
        return Ok(());
    }
    Err(SettingsError::OutOfRange {
        field,
        value,
        min: bounds.min,
        max: bounds.max,
    })
}
