//! A serial line in simulated time: the core's [`Poller`] on one end, emulated packs on the
//! other, bytes taking their time on the wire (10 bits a byte) and each pack a fixed reply
//! latency before it starts answering.

use std::collections::VecDeque;

use bms_core::bus::BatteryReport;
use bms_core::drivers::emulator::PackEmulator;
use bms_core::drivers::poller::Poller;
use bms_core::drivers::MAX_REQUEST_LEN;
use bms_core::drivers::{jk, wire_time_us, LineConfig, PackData, PackReport, Protocol};

/// What a pack speaking `protocol` tells for the battery state `report` (the plant's values
/// through its sensors) and its own state of charge.
pub fn pack_data(report: &BatteryReport, soc_percent: Option<u8>, protocol: Protocol) -> PackData {
    let mut data = PackData {
        cells_mv: report.cells_mv.iter().copied().collect(),
        temps_ddegc: report.temps_ddegc.clone(),
        current_ma: report.current_ma,
        soc_percent,
        capacity_mah: u32::from(report.capacity_dah) * 100,
        firmware: report.firmware,
        charge_allowed: report.flags.allowed_to_charge,
        discharge_allowed: report.flags.allowed_to_discharge,
        balancing: report.flags.balancing,
    };
    if protocol == Protocol::Jk {
        jk::fit_temps(&mut data);
    }
    data
}

/// One line with its packs.
pub struct VirtualLine {
    /// The BMS side.
    pub poller: Poller,
    /// The packs, in address order.
    pub packs: Vec<PackEmulator>,
    /// Time a pack takes before its answer starts, µs.
    pub reply_latency_us: u64,
    /// Bytes on their way to the BMS: arrival time (µs) and the bytes.
    pending: VecDeque<(u64, Vec<u8>)>,
    /// Requests sent, bytes sent and bytes received (for the measurements).
    pub bytes_to_packs: u64,
    /// Bytes the packs sent.
    pub bytes_from_packs: u64,
}

impl VirtualLine {
    /// A line for `config` with `packs` answering after `reply_latency_us`.
    pub fn new(config: LineConfig, packs: Vec<PackEmulator>, reply_latency_us: u64) -> Self {
        VirtualLine {
            poller: Poller::new(config),
            packs,
            reply_latency_us,
            pending: VecDeque::new(),
            bytes_to_packs: 0,
            bytes_from_packs: 0,
        }
    }

    /// When something happens next on the line, ms.
    pub fn next_event_ms(&self) -> Option<u64> {
        let arrival = self.pending.front().map(|(t_us, _)| t_us.div_ceil(1000));
        match (arrival, self.poller.next_deadline_ms()) {
            (Some(a), Some(d)) => Some(a.min(d)),
            (a, d) => a.or(d),
        }
    }

    /// Runs the line up to `now_ms`: delivers the bytes that arrived, sends what is due.
    /// `refresh` updates a pack (by index) just before it is asked, `on_report` takes the
    /// reports.
    pub fn advance(
        &mut self,
        now_ms: u64,
        mut refresh: impl FnMut(usize, &mut PackEmulator),
        mut on_report: impl FnMut(PackReport),
    ) {
        let baud = self.poller.config().baud;
        loop {
            while let Some((t_us, _)) = self.pending.front() {
                if t_us.div_ceil(1000) > now_ms {
                    break;
                }
                let Some((t_us, bytes)) = self.pending.pop_front() else {
                    break;
                };
                self.poller
                    .receive(t_us.div_ceil(1000), &bytes, &mut on_report);
            }
            let mut tx = [0u8; MAX_REQUEST_LEN];
            let len = self.poller.poll(now_ms, &mut tx);
            if len == 0 {
                return;
            }
            self.bytes_to_packs += len as u64;
            let mut t_us = now_ms * 1000 + wire_time_us(len, baud) + self.reply_latency_us;
            for (i, pack) in self.packs.iter_mut().enumerate() {
                refresh(i, pack);
                let pending = &mut self.pending;
                let received = &mut self.bytes_from_packs;
                pack.answer(&tx[..len], |frame| {
                    t_us += wire_time_us(frame.len(), baud);
                    *received += frame.len() as u64;
                    pending.push_back((t_us, frame.to_vec()));
                });
            }
            // An answer that arrives at once is delivered in this call.
            if self
                .pending
                .front()
                .is_none_or(|(t, _)| t.div_ceil(1000) > now_ms)
            {
                return;
            }
        }
    }

    /// Feeds `bytes` of line noise to the BMS at `now_ms`.
    pub fn noise(&mut self, now_ms: u64, bytes: &[u8], on_report: impl FnMut(PackReport)) {
        self.poller.receive(now_ms, bytes, on_report);
    }
}
