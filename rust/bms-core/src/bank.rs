//! The battery bank (BANK): battery reports in, topology, validation and aggregates out.

use crate::bus::BatteryReport;

/// Most batteries in one bank (BANK-2: 50 in a 12/24 V bank).
pub const MAX_BATTERIES: usize = 50;

/// The batteries seen on the bus and what they last reported.
#[derive(Clone, Debug, Default)]
pub struct Bank {
    reports_seen: u32,
}

impl Bank {
    /// An empty bank: no battery seen yet.
    pub const fn new() -> Self {
        Bank { reports_seen: 0 }
    }

    /// Takes one battery report received at `now_ms`.
    pub fn handle_report(&mut self, _now_ms: u64, _report: &BatteryReport) {
        self.reports_seen = self.reports_seen.saturating_add(1);
    }
}
