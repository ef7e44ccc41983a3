//! The battery bus: what each battery reports to the BMS, and the frame codec that carries it.
//!
//! The codec (COBS framing, CRC, postcard bodies) is documented in `docs/battery-bus.md`.

use heapless::Vec;
use serde::{Deserialize, Serialize};

/// Most cells one battery can have (a 51.2 V battery).
pub const MAX_CELLS_PER_BATTERY: usize = 16;
/// Most temperature sensors one battery reports.
pub const MAX_TEMPS_PER_BATTERY: usize = 4;

/// The battery model, which fixes the number of cells in series inside the battery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatteryModel {
    /// LiFePO4 12.8 V, 4 cells in series.
    Lfp12V8,
    /// LiFePO4 25.6 V, 8 cells in series.
    Lfp25V6,
    /// LiFePO4 51.2 V, 16 cells in series.
    Lfp51V2,
}

impl BatteryModel {
    /// Cells in series inside one battery of this model.
    pub const fn cells(self) -> usize {
        match self {
            BatteryModel::Lfp12V8 => 4,
            BatteryModel::Lfp25V6 => 8,
            BatteryModel::Lfp51V2 => 16,
        }
    }

    /// Nominal battery voltage in millivolts (3.2 V per cell).
    pub const fn nominal_mv(self) -> u32 {
        self.cells() as u32 * 3200
    }
}

/// Flags a battery sets about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatteryFlags {
    /// The battery's own BMS allows charging.
    pub allowed_to_charge: bool,
    /// The battery's own BMS allows discharging.
    pub allowed_to_discharge: bool,
    /// The battery is balancing its cells right now.
    pub balancing: bool,
}

/// One report of one battery, as received over the battery bus.
///
/// Units are in the names: millivolts, milliamperes (positive = charging), tenths of a degree
/// Celsius, tenths of an ampere-hour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatteryReport {
    /// Serial number, unique per battery; identifies it on the bus.
    pub serial: u32,
    /// Battery model (fixes the number of cells).
    pub model: BatteryModel,
    /// Nominal capacity in 0.1 Ah.
    pub capacity_dah: u16,
    /// Firmware version, major in the high byte, minor in the low byte (0x0112 = v1.18).
    pub firmware: u16,
    /// Cell voltages in mV, first cell first; exactly `model.cells()` entries when valid.
    pub cells_mv: Vec<u16, MAX_CELLS_PER_BATTERY>,
    /// Cell temperatures in 0.1 °C; at least one entry when valid.
    pub temps_ddegc: Vec<i16, MAX_TEMPS_PER_BATTERY>,
    /// Current through the battery in mA, positive = charging.
    pub current_ma: i32,
    /// The battery's own flags.
    pub flags: BatteryFlags,
}
