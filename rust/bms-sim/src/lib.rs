//! OpenBMS simulator: the real `bms-core` decision logic against a simulated LiFePO4 bank.
//!
//! The plant ([`plant`]) models cells, batteries and the bank; [`scenario`] reads the TOML
//! scenarios; [`engine`] owns time, feeds the core through the battery-bus codec exactly as on
//! the device and records a timeline; [`output`] writes the CSV and the picture; [`replay`]
//! feeds recorded measurements of one battery to the core.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ocv;
pub mod plant;
