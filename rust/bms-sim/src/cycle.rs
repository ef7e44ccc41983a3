//! `bms-sim cycle`: how long the BMS takes to read every pack on one request/response line,
//! in simulated time (bytes take their time on the wire, each pack [`REPLY_LATENCY_US`] before
//! it answers). A benchmark of the protocols, not of this machine: the numbers go into
//! `docs/battery-drivers.md`.

use std::fmt;

use bms_core::drivers::emulator::{sample_pack, PackEmulator};
use bms_core::drivers::poller::{self, round_estimate_ms};
use bms_core::drivers::{LineConfig, LineError, Protocol};

use crate::line::VirtualLine;

/// Reply latency of the simulated packs, µs: the scenarios' default (`reply_latency_ms`).
pub const REPLY_LATENCY_US: u64 = 20_000;

/// Simulated time per measurement, ms: enough rounds for a steady state.
const RUN_MS: u64 = 20_000;

/// One measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct CycleResult {
    /// The protocol.
    pub protocol: Protocol,
    /// Line speed, bit/s.
    pub baud: u32,
    /// Packs on the line.
    pub packs: u8,
    /// Cells per pack.
    pub cells: usize,
    /// Median time of the complete rounds, from the first request to the last answer, ms.
    pub round_ms: u64,
    /// Longest round (the first asks Daly packs their counts and capacity; every tenth their
    /// balancing), ms.
    pub longest_round_ms: u64,
    /// Longest time between two reports of one pack after the first round, ms.
    pub worst_interval_ms: u64,
    /// Requests sent per round.
    pub requests_per_round: f64,
    /// Bytes on the line per round, both ways.
    pub bytes_per_round: f64,
    /// What the core estimates for the round when the line is configured, ms.
    pub estimate_ms: u64,
    /// Why the core refuses this line, if it does (too long a round).
    pub refused: Option<LineError>,
    /// The most packs read within 1 s on such a line (estimate).
    pub most_within_1s: u8,
    /// The most packs the core accepts on such a line (estimate within
    /// [`bms_core::limits::MAX_POLL_ROUND_MS`]).
    pub most_accepted: u8,
}

impl fmt::Display for CycleResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<5} {:>6} bit/s {:>2} packs x {:>2} cells: round {:>5} ms (longest {:>5}), each \
             pack reported \
             at least every {:>5} ms (estimate {:>5} ms), {:>5.1} requests and {:>6.0} bytes a \
             round{}; at most {} packs read within 1 s, {} accepted",
            self.protocol.name(),
            self.baud,
            self.packs,
            self.cells,
            self.round_ms,
            self.longest_round_ms,
            self.worst_interval_ms,
            self.estimate_ms,
            self.requests_per_round,
            self.bytes_per_round,
            if self.refused.is_some() {
                "; refused"
            } else {
                ""
            },
            self.most_within_1s,
            self.most_accepted
        )
    }
}

/// The most packs of `cells` cells on one `protocol` line at `baud` whose estimated round
/// ([`round_estimate_ms`]) is at most `round_ms`.
pub fn most_packs_within(protocol: Protocol, baud: u32, cells: u8, round_ms: u64) -> u8 {
    (1..=max_packs(protocol))
        .take_while(|&packs| {
            let config = LineConfig {
                protocol,
                baud,
                line: 0,
                addresses: (1..=packs).collect(),
            };
            round_estimate_ms(&config, cells) <= round_ms
        })
        .last()
        .unwrap_or(0)
}

/// The most packs `protocol` puts on one line (JBD has no address: one pack a line).
pub fn max_packs(protocol: Protocol) -> u8 {
    let (low, high) = protocol.address_range();
    high - low + 1
}

/// Reads `packs` packs of `cells` cells at `baud` for [`RUN_MS`] of simulated time; also a
/// line the core would refuse as too slow (marked), but not one it cannot address.
pub fn measure(
    protocol: Protocol,
    baud: u32,
    packs: u8,
    cells: usize,
) -> Result<CycleResult, LineError> {
    let refused = match LineConfig::scan(protocol, baud, 0, packs) {
        Ok(_) => None,
        Err(e @ LineError::RoundTooLong { .. }) => Some(e),
        Err(e) => return Err(e),
    };
    let config = LineConfig {
        protocol,
        baud,
        line: 0,
        addresses: (1..=packs).collect(),
    };
    let cells_u8 = u8::try_from(cells).unwrap_or(u8::MAX);
    let estimate_ms = round_estimate_ms(&config, cells_u8);
    let emulators = config
        .addresses
        .iter()
        .map(|&a| PackEmulator::new(protocol, a, sample_pack(protocol, cells, 3300)))
        .collect();
    let mut line = VirtualLine::new(config, emulators, REPLY_LATENCY_US);
    let mut last_report: Vec<Option<u64>> = vec![None; usize::from(packs)];
    let mut worst_interval_ms = 0;
    let mut first_round_done_ms = None;
    let mut rounds_ms = Vec::new();
    let mut rounds_seen = 0;
    let mut now_ms = 0;
    while now_ms < RUN_MS {
        line.advance(
            now_ms,
            |_, _| {},
            |report| {
                let slot = usize::from(report.address).saturating_sub(1);
                if let Some(Some(previous)) = last_report.get(slot) {
                    if first_round_done_ms.is_some() {
                        worst_interval_ms = worst_interval_ms.max(now_ms - previous);
                    }
                }
                if let Some(entry) = last_report.get_mut(slot) {
                    *entry = Some(now_ms);
                }
            },
        );
        if first_round_done_ms.is_none() && line.poller.last_cycle_ms().is_some() {
            first_round_done_ms = Some(now_ms);
        }
        let stats = line.poller.stats();
        if let Some(round) = line.poller.last_cycle_ms() {
            // A round ends when the last pack is done: after its report or its skip.
            let done = stats.reports + stats.skipped;
            if done / u32::from(packs.max(1)) > rounds_seen {
                rounds_seen = done / u32::from(packs.max(1));
                rounds_ms.push(round);
            }
        }
        now_ms = line
            .next_event_ms()
            .map_or(now_ms + 1, |t| t.max(now_ms + 1));
    }
    let stats = line.poller.stats();
    let rounds = f64::from(stats.reports.max(1)) / f64::from(packs);
    Ok(CycleResult {
        protocol,
        baud,
        packs,
        cells,
        round_ms: median(&mut rounds_ms),
        longest_round_ms: rounds_ms.iter().copied().max().unwrap_or(0),
        worst_interval_ms,
        requests_per_round: f64::from(stats.requests) / rounds,
        bytes_per_round: (line.bytes_to_packs + line.bytes_from_packs) as f64 / rounds,
        estimate_ms,
        refused,
        most_within_1s: most_packs_within(protocol, baud, cells_u8, 1_000),
        most_accepted: most_packs_within(
            protocol,
            baud,
            poller::ESTIMATE_CELLS,
            bms_core::limits::MAX_POLL_ROUND_MS,
        ),
    })
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_is_longer_at_the_slower_speed_and_with_more_packs() {
        let slow = measure(Protocol::Daly, 9600, 4, 16).unwrap();
        let fast = measure(Protocol::Daly, 115_200, 4, 16).unwrap();
        let few = measure(Protocol::Daly, 115_200, 2, 16).unwrap();
        assert!(slow.round_ms > fast.round_ms, "{slow} / {fast}");
        assert!(fast.round_ms > few.round_ms, "{fast} / {few}");
        assert!(slow.worst_interval_ms >= 1_000);
    }

    #[test]
    fn the_cores_estimate_is_the_measured_round_within_a_tenth() {
        for (protocol, packs) in [(Protocol::Jbd, 1), (Protocol::Jk, 15), (Protocol::Daly, 16)] {
            for baud in [9600, 115_200] {
                let r = measure(protocol, baud, packs, 16).unwrap();
                let (measured, estimate) = (r.round_ms as f64, r.estimate_ms as f64);
                assert!((measured - estimate).abs() <= 0.1 * measured, "{r}");
                assert_eq!(
                    r.refused.is_some(),
                    r.estimate_ms > bms_core::limits::MAX_POLL_ROUND_MS
                );
            }
        }
    }

    #[test]
    fn a_jk_round_is_one_request_a_pack() {
        let r = measure(Protocol::Jk, 115_200, 15, 16).unwrap();
        assert!((r.requests_per_round - 1.0 * 15.0).abs() < 0.5, "{r}");
    }

    #[test]
    fn a_line_the_protocol_cannot_address_is_not_measured() {
        assert_eq!(
            measure(Protocol::Jbd, 9600, 2, 4),
            Err(LineError::Address {
                protocol: Protocol::Jbd,
                address: 2
            })
        );
        assert_eq!(max_packs(Protocol::Jk), 15);
        assert_eq!(most_packs_within(Protocol::Daly, 9600, 16, 2_500), 9);
        assert_eq!(most_packs_within(Protocol::Jk, 115_200, 16, 1_000), 15);
    }
}
