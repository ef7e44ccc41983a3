//! `bms-sim`: run scenarios, replay recordings and benchmark the OpenBMS core.

fn main() {}
