//! The user settings of the battery monitor and protection (MON-3), their validation as a whole
//! (SET-1) and factory defaults (SET-4).

use serde::{Deserialize, Serialize};

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
