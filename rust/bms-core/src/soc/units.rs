//! Charge units and the MON-1 charge efficiency.
//!
//! Charge is counted in nA·s (`_nas`): an `i64` holds 2.5 million Ah at that resolution, and
//! 1 mA for 1 ms is exactly 1000 nA·s, so integrating integer samples never rounds.

/// Charge that 1 mAh represents, in nA·s.
pub const NAS_PER_MAH: i64 = 3_600_000_000;
/// Share of the charge flowing in that is stored, in percent (MON-1).
pub const CHARGE_EFFICIENCY_PCT: i64 = 99;

/// Of `net_nas` (≥ 0) flowing in, the charge stored at the MON-1 charge efficiency, in nA·s.
pub fn stored_nas(net_nas: i64) -> i64 {
    net_nas / 100 * CHARGE_EFFICIENCY_PCT + net_nas % 100 * CHARGE_EFFICIENCY_PCT / 100
}
