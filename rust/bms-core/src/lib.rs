//! OpenBMS core: every decision of a smallBMS-NG-class battery management system, as a
//! deterministic, sans-IO `no_std` library.
//!
//! The core never reads a clock, a pin or a flash page. The caller (the Zephyr firmware through
//! `bms-ffi`, the simulator, or a test) passes the time as monotonic milliseconds and the
//! measurements, and gets decisions back: the state of the Load disconnect (ATD), Charge
//! disconnect (ATC) and pre-alarm outputs with their reasons, LED patterns, the Instant Readout
//! payload, and writes to the caller's storage through [`node::Node`]. Time only moves forward; a call with an older time is
//! treated as "no time passed".
//!
//! Modules follow the concepts of the product manual:
//! - [`bank`]: battery reports, topology discovery and bank aggregates (BANK).
//! - [`balancer`]: balancer status (BAL).
//! - [`protection`]: the output state machine with debounce and hysteresis (PROT).
//! - [`monitor`]: state of charge, time remaining, low-SoC warning, discharge floor (MON).
//! - [`soc`]: the SoC estimators the monitor runs (plain coulomb counter, adaptive filter), the
//!   OCV table and charge units.
//! - [`history`]: history counters (HIST).
//! - [`settings`]: the user settings with validation and factory reset (SET).
//! - [`leds`]: the two LED patterns (LED).
//! - [`readout`]: the Instant Readout advertisement (BLE-3).
//! - [`protocol`]: the GATT request/response protocol (BLE-1, BLE-2, BLE-4): wire, pages, handler.
//! - [`bus`]: the battery-bus frame codec.
//! - [`drivers`]: reading JBD, JK and Daly packs (and the bus) as bank members.
//! - [`storage`]: persisted records over a key → bytes [`storage::Storage`] trait.
//! - [`name`]: the device name the BMS advertises (BLE-1).
//! - [`secrets`]: the pairing passkey and the Instant Readout key (BLE-2, BLE-3).
//! - [`pairing`]: the pairing window, back-off, button and bonds (BLE-2).
//! - [`node`]: the device shell every caller holds: core, bus decoder and persistence.
//! - [`muldiv`]: exact 64-bit scaling of charge counts (no 128-bit division on the target).
//! - [`limits`]: the one table of named thresholds, delays and hysteresis.
//! - [`codes`]: the catalogue of error, alarm and warning codes.
//! - [`word`]: fixed words and integers in log lines and error messages.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// No panics on any input: these are errors in library code, allowed in tests only.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod balancer;
pub mod bank;
pub mod bms;
pub mod bus;
pub mod codes;
pub mod dfu;
pub mod drivers;
pub mod history;
pub mod leds;
pub mod limits;
pub mod monitor;
pub mod muldiv;
pub mod name;
pub mod node;
pub mod pairing;
pub mod protection;
pub mod protocol;
pub mod readout;
pub mod reasons;
pub mod retained;
pub mod secrets;
pub mod settings;
pub mod soc;
mod stable_enum;
pub mod storage;
pub mod word;

pub use bms::{
    Bms, Config, Decisions, DfuEvent, Event, Inputs, LedPattern, Output, PasskeyError, Reason,
    Reasons, SelfCheck, SelfCheckInputs,
};
pub use node::Node;
