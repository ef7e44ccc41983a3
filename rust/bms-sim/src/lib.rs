//! OpenBMS simulator: the real `bms-core` decision logic against a simulated LiFePO4 bank.
//!
//! The plant ([`plant`], [`ocv`]) models cells, batteries and the bank; [`sensors`] turns it
//! into the reports batteries send; [`scenario`] reads the TOML scenarios; [`engine`] owns time,
//! feeds the core through the battery-bus codec exactly as on the device and records a
//! timeline; [`output`] writes the CSV files, the picture and the summary; [`replay`] feeds
//! recorded measurements of one battery to the core; [`bench`] measures speed, [`cycle`] the time to read every pack of a line; [`serial`] puts emulated packs on a real serial port; [`line`] puts
//! packs that answer requests (JBD, JK, Daly) on a serial line in simulated time.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "cli")]
pub mod bench;
#[cfg(feature = "cli")]
pub mod cycle;
pub mod engine;
pub mod error;
pub mod file_storage;
pub mod line;
pub mod ocv;
#[cfg(feature = "cli")]
pub mod output;
pub mod plant;
#[cfg(feature = "cli")]
pub mod replay;
pub mod scenario;
pub mod sensors;
#[cfg(feature = "cli")]
pub mod serial;
