//! Every threshold, delay and hysteresis of the control path, in one place.

/// The control loop period in ms (one tick).
pub const TICK_MS: u64 = 100;
