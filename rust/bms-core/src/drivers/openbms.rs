//! The OpenBMS battery bus as a driver: its batteries send reports unasked, so there is nothing
//! to request; the bytes that arrive go through [`crate::bus::FrameDecoder`] unchanged.

use crate::bus::{BusStats, FrameDecoder};

use super::PackReport;

/// Receives the OpenBMS bus (`docs/battery-bus.md`).
#[derive(Clone, Debug, Default)]
pub struct Receiver {
    decoder: FrameDecoder,
}

impl Receiver {
    /// A receiver that has seen nothing yet.
    pub fn new() -> Self {
        Receiver {
            decoder: FrameDecoder::new(),
        }
    }

    /// Feeds received bytes (any chunking); calls `on_report` with each battery's report.
    pub fn receive(&mut self, bytes: &[u8], mut on_report: impl FnMut(PackReport)) {
        self.decoder.feed(bytes, |report| {
            on_report(PackReport {
                address: 0,
                soc_percent: None,
                report,
            })
        });
    }

    /// The bus frame counters.
    pub fn stats(&self) -> BusStats {
        self.decoder.stats()
    }
}
