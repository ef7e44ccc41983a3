//! The poller: asks every pack on one line in turn, once per [`POLL_PERIOD_MS`] round, and turns
//! each complete set of answers into a [`PackReport`].
//!
//! Sans-IO: [`Poller::poll`] writes the request due now (the caller transmits it at once),
//! [`Poller::receive`] takes arriving bytes in any chunking, [`Poller::next_deadline_ms`] says
//! when to call `poll` again. An unanswered request is sent again up to [`MAX_ATTEMPTS`] times
//! (a sleeping JBD pack answers the second one), then the pack is skipped for this round. A pack
//! that stays silent produces no report and the bank declares it lost after
//! [`crate::limits::BATTERY_LOST_MS`] (BANK-4): no timeout of its own here.

use crate::word::Number;
use heapless::Vec;

use super::{
    daly, jbd, jk, openbms, pack_serial, wire_time_us, Assembler, BadFrame, LineConfig, PackData,
    PackReport, Protocol, Scan, MAX_PACKS_PER_LINE,
};

/// A round starts at most this often, ms: each pack is read once per round.
pub const POLL_PERIOD_MS: u64 = 1_000;

/// Sends of one request before the pack is skipped for the round: a sleeping JBD pack ignores
/// the first request and answers the next.
pub const MAX_ATTEMPTS: u8 = 3;

/// Time a pack may take to start answering, beyond the bytes' time on the wire, ms.
pub const REPLY_LATENCY_MS: u64 = 100;

/// **(choice)** Time a pack typically takes to start answering, ms: what the round estimate
/// ([`round_estimate_ms`]) and the simulator's packs assume.
pub const TYPICAL_REPLY_LATENCY_MS: u64 = 20;

/// A Daly pack's balancing bits are asked every this many rounds: they only light the
/// balancing flag, and one query less a round lets more packs share a 9600 bit/s line.
pub const DALY_BALANCE_EVERY_ROUNDS: u32 = 10;

/// Cells per pack the round estimate assumes when a line is configured: the most a supported
/// battery has.
pub const ESTIMATE_CELLS: u8 = 16;

/// One request of a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Query {
    /// A JBD register.
    Jbd(u8),
    /// The JK-PB status trigger.
    Jk,
    /// A Daly data id.
    Daly(u8),
}

/// Counters of one poller, each saturating.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollStats {
    /// Requests sent, retries included.
    pub requests: u32,
    /// Requests sent again after no answer.
    pub retries: u32,
    /// Packs skipped for a round after [`MAX_ATTEMPTS`] unanswered sends.
    pub skipped: u32,
    /// Frames dropped as [`BadFrame`].
    pub bad_frames: u32,
    /// Complete readings that did not make a report (unsupported cell count).
    pub refused: u32,
    /// Reports handed out.
    pub reports: u32,
}

#[derive(Clone, Debug, Default)]
struct Slot {
    address: u8,
    data: PackData,
    /// JBD: the name was asked (answered or not).
    named: bool,
    name: Vec<u8, { jbd::MAX_NAME_LEN }>,
    /// Daly: cells and sensors from 0x94, and 0x50 read.
    daly_counts: Option<(u8, u8)>,
    daly_rated: bool,
    /// Daly: the pack voltage of this round's 0x90 answer, 0.1 V (0: not told).
    daly_total_dv: u16,
    /// Daly: the remaining capacity of this round's 0x93 answer, mAh (0: not told).
    daly_remaining_mah: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Nothing to send before this time.
    Idle { until_ms: u64 },
    /// Waiting for the answer to the request sent; give up at the deadline.
    Waiting { deadline_ms: u64 },
}

/// Polls the packs of one line.
#[derive(Clone, Debug)]
pub struct Poller {
    config: LineConfig,
    slots: Vec<Slot, MAX_PACKS_PER_LINE>,
    assembler: Assembler,
    receiver: openbms::Receiver,
    pack: usize,
    step: usize,
    attempts: u8,
    frames_left: u8,
    round: Vec<Query, 8>,
    required: usize,
    state: State,
    cycle_start_ms: Option<u64>,
    last_cycle_ms: Option<u64>,
    /// Complete rounds so far (wrapping).
    rounds: u32,
    /// JK: the status frame waiting for the echo that says whose it is (only the polled pack
    /// answers, so one is enough for the line).
    jk_status: Option<PackData>,
    stats: PollStats,
}

impl Poller {
    /// A poller for `config` (checked by [`LineConfig::check`]); the first round starts at the
    /// first [`Poller::poll`].
    pub fn new(config: LineConfig) -> Self {
        let mut slots = Vec::new();
        for &address in &config.addresses {
            let _ = slots.push(Slot {
                address,
                ..Slot::default()
            });
        }
        Poller {
            config,
            slots,
            assembler: Assembler::default(),
            receiver: openbms::Receiver::new(),
            pack: 0,
            step: 0,
            attempts: 0,
            frames_left: 0,
            round: Vec::new(),
            required: 0,
            state: State::Idle { until_ms: 0 },
            cycle_start_ms: None,
            last_cycle_ms: None,
            rounds: 0,
            jk_status: None,
            stats: PollStats::default(),
        }
    }

    /// The line this poller drives.
    pub fn config(&self) -> &LineConfig {
        &self.config
    }

    /// The counters so far.
    pub fn stats(&self) -> PollStats {
        self.stats
    }

    /// How long the last complete round took, from its first request to its last answer, ms.
    pub fn last_cycle_ms(&self) -> Option<u64> {
        self.last_cycle_ms
    }

    /// The name a JBD pack gave (register 0x05), bytes as sent; empty before it answered.
    pub fn pack_name(&self, index: usize) -> &[u8] {
        self.slots.get(index).map_or(&[], |s| &s.name)
    }

    /// When [`Poller::poll`] has something to do next, ms (`None` for the OpenBMS bus).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        if self.config.protocol == Protocol::OpenBms || self.slots.is_empty() {
            return None;
        }
        Some(match self.state {
            State::Idle { until_ms } => until_ms,
            State::Waiting { deadline_ms } => deadline_ms,
        })
    }

    /// Writes the request to send now into `tx` and returns its length; 0 when nothing is due.
    /// `tx` of [`super::MAX_REQUEST_LEN`] bytes always fits.
    pub fn poll(&mut self, now_ms: u64, tx: &mut [u8]) -> usize {
        if self.config.protocol == Protocol::OpenBms || self.slots.is_empty() {
            return 0;
        }
        match self.state {
            State::Idle { until_ms } if now_ms >= until_ms => {}
            State::Waiting { deadline_ms } if now_ms >= deadline_ms => {
                self.attempts = self.attempts.saturating_add(1);
                if self.attempts < MAX_ATTEMPTS {
                    self.stats.retries = self.stats.retries.saturating_add(1);
                } else if self.query_is_optional() {
                    self.answered(now_ms, &mut |_| {});
                    return self.poll(now_ms, tx);
                } else {
                    self.stats.skipped = self.stats.skipped.saturating_add(1);
                    // Daly: counts that promise more frames than the pack sends are asked
                    // again (a garbled or forged 0x94 answer must not silence it for good).
                    if let Some(slot) = self.slots.get_mut(self.pack) {
                        slot.daly_counts = None;
                    }
                    self.next_pack(now_ms);
                    return self.poll(now_ms, tx);
                }
            }
            _ => return 0,
        }
        if self.step == 0 && self.attempts == 0 {
            if self.pack == 0 {
                self.cycle_start_ms = Some(now_ms);
            }
            (self.round, self.required) = self.plan();
        }
        let Some(query) = self.query() else {
            self.next_pack(now_ms);
            return 0;
        };
        let Some(slot) = self.slots.get_mut(self.pack) else {
            return 0;
        };
        if self.step == 0 && self.attempts == 0 {
            slot.data.cells_mv.clear();
            slot.data.temps_ddegc.clear();
        }
        // A JK status frame is the polled pack's only when it answers this request.
        self.jk_status = None;
        let address = slot.address;
        let (len, frames) = match query {
            Query::Jbd(register) => (jbd::encode_request(register, tx), 1),
            Query::Jk => (jk::encode_request(address, tx), 2),
            Query::Daly(id) => {
                let (cells, temps) = slot.daly_counts.unwrap_or((0, 0));
                let frames = match id {
                    daly::ID_CELLS => {
                        slot.data.cells_mv.clear();
                        daly::cell_frames(cells)
                    }
                    daly::ID_TEMPS => {
                        slot.data.temps_ddegc.clear();
                        daly::temp_frames(temps)
                    }
                    _ => 1,
                };
                (daly::encode_request(address, id, tx), frames)
            }
        };
        if len == 0 {
            return 0;
        }
        self.frames_left = frames;
        self.assembler.clear();
        self.stats.requests = self.stats.requests.saturating_add(1);
        let reply_us = wire_time_us(len + expected_reply_len(query, slot), self.config.baud);
        let deadline_ms = now_ms
            .saturating_add(reply_us.div_ceil(1000))
            .saturating_add(REPLY_LATENCY_MS);
        self.state = State::Waiting { deadline_ms };
        len
    }

    /// Feeds bytes received at `now_ms`; calls `on_report` for each pack whose round is
    /// complete. Frames nobody asked for and damaged frames are counted and dropped.
    pub fn receive(&mut self, now_ms: u64, bytes: &[u8], mut on_report: impl FnMut(PackReport)) {
        if self.config.protocol == Protocol::OpenBms {
            self.receiver.receive(bytes, &mut on_report);
            return;
        }
        let scan: fn(&[u8]) -> Scan = match self.config.protocol {
            Protocol::Jbd => jbd::scan,
            Protocol::Jk => jk::scan,
            Protocol::Daly | Protocol::OpenBms => daly::scan,
        };
        let mut assembler = core::mem::take(&mut self.assembler);
        assembler.feed(bytes, scan, |frame| {
            if let Err(_bad) = self.frame(now_ms, frame, &mut on_report) {
                self.stats.bad_frames = self.stats.bad_frames.saturating_add(1);
            }
        });
        self.assembler = assembler;
    }

    fn frame(
        &mut self,
        now_ms: u64,
        frame: &[u8],
        on_report: &mut dyn FnMut(PackReport),
    ) -> Result<(), BadFrame> {
        if !matches!(self.state, State::Waiting { .. }) {
            return Err(BadFrame::Unexpected);
        }
        let query = self.query().ok_or(BadFrame::Unexpected)?;
        let slot = self.slots.get_mut(self.pack).ok_or(BadFrame::Unexpected)?;
        match (query, self.config.protocol) {
            (Query::Jbd(register), Protocol::Jbd) => match jbd::decode(frame)? {
                jbd::Response::Basic(basic) if register == jbd::REG_BASIC => {
                    jbd::apply_basic(&basic, &mut slot.data)
                }
                jbd::Response::Cells(cells) if register == jbd::REG_CELLS => {
                    slot.data.cells_mv = cells
                }
                jbd::Response::Name(name) if register == jbd::REG_NAME => slot.name = name,
                _ => return Err(BadFrame::Unexpected),
            },
            (Query::Jk, Protocol::Jk) => match jk::decode(frame)? {
                jk::Frame::Status(data) => {
                    self.jk_status = Some(data);
                    return Ok(());
                }
                jk::Frame::Echo { address } if address == slot.address => {
                    // A status frame followed by the polled pack's echo is that pack's.
                    slot.data = self.jk_status.take().ok_or(BadFrame::Unexpected)?;
                    self.frames_left = 1;
                }
                jk::Frame::Echo { .. } => {
                    // The status frame before it was that pack's, not the polled one's.
                    self.jk_status = None;
                    return Err(BadFrame::Unexpected);
                }
            },
            (Query::Daly(id), Protocol::Daly) => {
                let r = daly::decode(frame)?;
                if r.board != slot.address || r.id != id {
                    return Err(BadFrame::Unexpected);
                }
                if id == daly::ID_STATUS {
                    slot.daly_counts = Some(daly::counts(&r.data)?);
                } else {
                    let (cells, temps) = slot.daly_counts.ok_or(BadFrame::Unexpected)?;
                    daly::apply(&r, cells, temps, &mut slot.data)?;
                    if id == daly::ID_RATED {
                        slot.daly_rated = true;
                    }
                    if id == daly::ID_SOC {
                        slot.daly_total_dv = daly::total_dv(&r.data);
                    }
                    if id == daly::ID_MOS {
                        slot.daly_remaining_mah = daly::remaining_mah(&r.data);
                    }
                }
            }
            _ => return Err(BadFrame::Unexpected),
        }
        self.frames_left = self.frames_left.saturating_sub(1);
        if self.frames_left == 0 {
            self.answered(now_ms, on_report);
        }
        Ok(())
    }

    /// The awaited answer is complete: next query, a report when the pack's required queries
    /// are all answered, next pack after its last query.
    fn answered(&mut self, now_ms: u64, on_report: &mut dyn FnMut(PackReport)) {
        if let (Some(Query::Jbd(jbd::REG_NAME)), Some(slot)) =
            (self.query(), self.slots.get_mut(self.pack))
        {
            slot.named = true;
        }
        self.step += 1;
        self.attempts = 0;
        let (total, required) = self.plan_len();
        if self.step == required {
            self.report(on_report);
        }
        if self.step >= total {
            self.next_pack(now_ms);
        } else {
            self.state = State::Idle {
                until_ms: now_ms.saturating_add(self.gap_ms()),
            };
        }
    }

    fn report(&mut self, on_report: &mut dyn FnMut(PackReport)) {
        let protocol = self.config.protocol;
        let Some(slot) = self.slots.get_mut(self.pack) else {
            return;
        };
        if protocol == Protocol::Daly && !daly::cells_fit_total(slot.daly_total_dv, &slot.data) {
            // The cell count read once (0x94) does not fit the pack: its cells do not add up
            // to its voltage. Refused, and the counts are asked again next round.
            self.stats.refused = self.stats.refused.saturating_add(1);
            log::warn!(
                "daly pack {}: {} cells add up to {} mV, the pack says {} mV: counts asked again",
                Number::from(slot.address),
                Number::from(slot.data.cells_mv.len()),
                Number::from(daly::cells_sum_mv(&slot.data)),
                Number::from(u32::from(slot.daly_total_dv).saturating_mul(100))
            );
            slot.daly_counts = None;
            return;
        }
        if protocol == Protocol::Daly
            && !daly::rated_fits_remaining(
                slot.data.capacity_mah,
                slot.data.soc_percent,
                slot.daly_remaining_mah,
            )
        {
            // The rated capacity read once (0x50) does not fit the capacity the pack counts
            // (0x93) at its SoC (0x90). Refused, and it is asked again next round.
            self.stats.refused = self.stats.refused.saturating_add(1);
            log::warn!(
                "daly pack {}: rated {} mAh, {} mAh remaining at {} %: rated capacity asked again",
                Number::from(slot.address),
                Number::from(slot.data.capacity_mah),
                Number::from(slot.daly_remaining_mah),
                Number::from(slot.data.soc_percent.unwrap_or(0))
            );
            slot.daly_rated = false;
            return;
        }
        let serial = pack_serial(self.config.protocol, self.config.line, slot.address);
        match slot.data.to_report(serial) {
            Ok(report) => {
                self.stats.reports = self.stats.reports.saturating_add(1);
                on_report(PackReport {
                    address: slot.address,
                    soc_percent: slot.data.soc_percent,
                    report,
                });
            }
            Err(error) => {
                self.stats.refused = self.stats.refused.saturating_add(1);
                log::warn!("{} pack refused: {}", self.config.protocol.name(), error);
            }
        }
    }

    fn next_pack(&mut self, now_ms: u64) {
        self.step = 0;
        self.attempts = 0;
        self.pack += 1;
        if self.pack >= self.slots.len() {
            self.pack = 0;
            let start = self.cycle_start_ms.unwrap_or(now_ms);
            self.last_cycle_ms = Some(now_ms.saturating_sub(start));
            self.rounds = self.rounds.wrapping_add(1);
            self.state = State::Idle {
                until_ms: start
                    .saturating_add(POLL_PERIOD_MS)
                    .max(now_ms.saturating_add(self.gap_ms())),
            };
        } else {
            self.state = State::Idle {
                until_ms: now_ms.saturating_add(self.gap_ms()),
            };
        }
    }

    /// Silence between an answer and the next request: 3.5 characters, as Modbus RTU asks.
    fn gap_ms(&self) -> u64 {
        wire_time_us(4, self.config.baud).div_ceil(1000)
    }

    /// The current pack's queries this round, fixed when its round starts: (all, required
    /// before a report).
    fn plan(&self) -> (Vec<Query, 8>, usize) {
        let mut plan = Vec::new();
        let Some(slot) = self.slots.get(self.pack) else {
            return (plan, 0);
        };
        let queries: &[Query] = match self.config.protocol {
            Protocol::OpenBms => &[],
            Protocol::Jbd => STEADY_JBD,
            Protocol::Jk => STEADY_JK,
            Protocol::Daly => {
                if slot.daly_counts.is_none() {
                    let _ = plan.push(Query::Daly(daly::ID_STATUS));
                }
                if !slot.daly_rated {
                    let _ = plan.push(Query::Daly(daly::ID_RATED));
                }
                STEADY_DALY
            }
        };
        let _ = plan.extend_from_slice(queries);
        let required = plan.len();
        if self.config.protocol == Protocol::Jbd && !slot.named {
            let _ = plan.push(Query::Jbd(jbd::REG_NAME));
        }
        if self.config.protocol == Protocol::Daly && self.rounds % DALY_BALANCE_EVERY_ROUNDS == 0 {
            let _ = plan.push(Query::Daly(daly::ID_BALANCE));
        }
        (plan, required)
    }

    fn plan_len(&self) -> (usize, usize) {
        (self.round.len(), self.required)
    }

    fn query(&self) -> Option<Query> {
        self.round.get(self.step).copied()
    }

    fn query_is_optional(&self) -> bool {
        self.step >= self.required
    }
}

/// The queries of every round of a JBD pack (its name is asked once, after them).
const STEADY_JBD: &[Query] = &[Query::Jbd(jbd::REG_BASIC), Query::Jbd(jbd::REG_CELLS)];
/// The query of every round of a JK pack.
const STEADY_JK: &[Query] = &[Query::Jk];
/// The queries of every round of a Daly pack (counts and rated capacity are asked in its
/// first round, balancing every [`DALY_BALANCE_EVERY_ROUNDS`] rounds).
const STEADY_DALY: &[Query] = &[
    Query::Daly(daly::ID_SOC),
    Query::Daly(daly::ID_MOS),
    Query::Daly(daly::ID_CELLS),
    Query::Daly(daly::ID_TEMPS),
];

/// How long a round of `config`'s line takes when each of its packs has `cells` cells and two
/// temperature sensors and answers after [`TYPICAL_REPLY_LATENCY_MS`], ms: requests and
/// answers on the wire, the silence between them and the latency, for the queries of every
/// round. `bms-sim cycle` measures the same in simulated time.
pub fn round_estimate_ms(config: &LineConfig, cells: u8) -> u64 {
    let queries = match config.protocol {
        Protocol::OpenBms => return 0,
        Protocol::Jbd => STEADY_JBD,
        Protocol::Jk => STEADY_JK,
        Protocol::Daly => STEADY_DALY,
    };
    let gap_us = wire_time_us(4, config.baud);
    let per_pack_us: u64 = queries
        .iter()
        .map(|&query| {
            let request = match query {
                Query::Jbd(_) => jbd::REQUEST_LEN,
                Query::Jk => jk::REQUEST_LEN,
                Query::Daly(_) => daly::FRAME_LEN,
            };
            let bytes = request + reply_len(query, cells, 2);
            wire_time_us(bytes, config.baud) + gap_us + TYPICAL_REPLY_LATENCY_MS * 1000
        })
        .sum();
    (per_pack_us * config.addresses.len() as u64).div_ceil(1000)
}

/// Bytes the answer to `query` takes for a pack of `cells` cells and `temps` sensors.
fn reply_len(query: Query, cells: u8, temps: u8) -> usize {
    match query {
        Query::Jbd(jbd::REG_BASIC) => jbd::OVERHEAD + 23 + 2 * usize::from(temps),
        Query::Jbd(jbd::REG_CELLS) => jbd::OVERHEAD + 2 * usize::from(cells),
        Query::Jbd(_) => jbd::OVERHEAD + jbd::MAX_NAME_LEN,
        Query::Jk => jk::STATUS_FRAME_LEN + jk::ECHO_LEN,
        Query::Daly(id) => {
            let frames = match id {
                daly::ID_CELLS => daly::cell_frames(cells),
                daly::ID_TEMPS => daly::temp_frames(temps),
                _ => 1,
            };
            daly::FRAME_LEN * usize::from(frames.max(1))
        }
    }
}

/// Bytes the answer to `query` takes at most (for the reply timeout).
fn expected_reply_len(query: Query, slot: &Slot) -> usize {
    match query {
        Query::Jbd(jbd::REG_BASIC) => jbd::OVERHEAD + 23 + 2 * 8,
        Query::Jbd(_) => jbd::OVERHEAD + 2 * super::MAX_PACK_CELLS,
        Query::Jk => jk::STATUS_FRAME_LEN + jk::ECHO_LEN,
        Query::Daly(id) => {
            let (cells, temps) = slot.daly_counts.unwrap_or((0, 0));
            let frames = match id {
                daly::ID_CELLS => daly::cell_frames(cells),
                daly::ID_TEMPS => daly::temp_frames(temps),
                _ => 1,
            };
            daly::FRAME_LEN * usize::from(frames.max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::emulator::{sample_pack, PackEmulator};
    use crate::drivers::MAX_REQUEST_LEN;
    use proptest::prelude::*;

    /// Runs `poller` with `packs` answering at once until `end_ms`; the reports with their time.
    fn run(
        poller: &mut Poller,
        packs: &mut [PackEmulator],
        from_ms: u64,
        end_ms: u64,
    ) -> std::vec::Vec<(u64, PackReport)> {
        let mut reports = std::vec::Vec::new();
        let mut now = from_ms;
        while now < end_ms {
            let mut tx = [0u8; MAX_REQUEST_LEN];
            let len = poller.poll(now, &mut tx);
            if len > 0 {
                let mut wire = std::vec::Vec::new();
                for pack in packs.iter_mut() {
                    pack.answer(&tx[..len], |frame| wire.extend_from_slice(frame));
                }
                // Answers arrive in small pieces, as a UART driver hands them over.
                for chunk in wire.chunks(7) {
                    poller.receive(now, chunk, |r| reports.push((now, r)));
                }
            }
            now = next_time(poller, now, len);
        }
        reports
    }

    /// The time of the poller's next deadline, at least a millisecond on when nothing was
    /// sent (`sent` bytes), so that a test loop always advances.
    fn next_time(poller: &Poller, now: u64, sent: usize) -> u64 {
        let next = poller.next_deadline_ms().unwrap();
        if sent == 0 {
            next.max(now + 1)
        } else {
            next.max(now)
        }
    }

    fn line(protocol: Protocol, addresses: &[u8]) -> Poller {
        Poller::new(LineConfig::new(protocol, 0, addresses).unwrap())
    }

    #[test]
    fn a_jbd_pack_is_read_every_round_and_named_once() {
        let mut poller = line(Protocol::Jbd, &[1]);
        let mut packs = [PackEmulator::new(
            Protocol::Jbd,
            1,
            sample_pack(Protocol::Jbd, 4, 3300),
        )];
        let reports = run(&mut poller, &mut packs, 0, 10_000);
        assert_eq!(reports.len(), 10, "one report a round");
        let (_, first) = &reports[0];
        assert_eq!(first.report.model, crate::bus::BatteryModel::Lfp12V8);
        assert_eq!(first.report.cells_mv.len(), 4);
        assert_eq!(first.soc_percent, Some(80));
        assert_eq!(first.report.capacity_dah, 1000);
        assert_eq!(poller.pack_name(0), b"OpenBMS sim pack");
        // 2 requests a round, the name once.
        assert_eq!(poller.stats().requests, 21);
        assert_eq!(poller.stats().bad_frames, 0);
        for pair in reports.windows(2) {
            assert!(pair[1].0 - pair[0].0 <= POLL_PERIOD_MS);
        }
    }

    #[test]
    fn a_sleeping_pack_answers_the_second_request() {
        let mut poller = line(Protocol::Jbd, &[1]);
        let mut pack = PackEmulator::new(Protocol::Jbd, 1, sample_pack(Protocol::Jbd, 4, 3300));
        pack.asleep = true;
        let mut packs = [pack];
        let reports = run(&mut poller, &mut packs, 0, 1_000);
        assert_eq!(reports.len(), 1);
        assert_eq!(poller.stats().retries, 1);
        assert_eq!(poller.stats().skipped, 0);
    }

    #[test]
    fn a_silent_pack_is_skipped_and_the_others_still_read_each_round() {
        let mut poller = line(Protocol::Daly, &[1, 2, 3]);
        let mut packs: std::vec::Vec<PackEmulator> = (1..=3)
            .map(|a| PackEmulator::new(Protocol::Daly, a, sample_pack(Protocol::Daly, 8, 3300)))
            .collect();
        packs[1].silent = true;
        let reports = run(&mut poller, &mut packs, 0, 5_000);
        let from = |a: u8| reports.iter().filter(|(_, r)| r.address == a).count();
        assert_eq!((from(1), from(2), from(3)), (5, 0, 5));
        assert_eq!(poller.stats().skipped, 5);
        assert_eq!(
            poller.stats().retries,
            5 * u32::from(MAX_ATTEMPTS - 1),
            "each send of the silent pack's first query"
        );
        let r = &reports[0].1.report;
        assert_eq!(r.model, crate::bus::BatteryModel::Lfp25V6);
        assert_eq!(r.serial, pack_serial(Protocol::Daly, 0, 1));
        assert_eq!(r.temps_ddegc.len(), 2);
        assert_eq!(r.capacity_dah, 1000);
    }

    #[test]
    fn jk_packs_on_one_line_each_report_under_their_own_serial() {
        let mut poller = line(Protocol::Jk, &[1, 2, 3]);
        let mut packs: std::vec::Vec<PackEmulator> = (1..=3)
            .map(|a| {
                PackEmulator::new(
                    Protocol::Jk,
                    a,
                    sample_pack(Protocol::Jk, 16, 3300 + u16::from(a)),
                )
            })
            .collect();
        let reports = run(&mut poller, &mut packs, 0, 3_000);
        assert_eq!(reports.len(), 9);
        for (_, r) in &reports {
            assert_eq!(r.report.serial, pack_serial(Protocol::Jk, 0, r.address));
            assert_eq!(r.report.cells_mv[0], 3300 + u16::from(r.address));
        }
    }

    #[test]
    fn a_status_frame_followed_by_another_packs_echo_is_refused() {
        let mut poller = line(Protocol::Jk, &[1]);
        let mut tx = [0u8; MAX_REQUEST_LEN];
        assert!(poller.poll(0, &mut tx) > 0);
        let mut other = PackEmulator::new(Protocol::Jk, 2, sample_pack(Protocol::Jk, 16, 3300));
        let mut request = [0u8; MAX_REQUEST_LEN];
        let len = jk::encode_request(2, &mut request);
        let mut reports = 0;
        other.answer(&request[..len], |f| poller.receive(1, f, |_| reports += 1));
        assert_eq!(reports, 0);
        assert_eq!(poller.stats().bad_frames, 1);
    }

    /// BANK-3 (per-battery values): a status frame carries no address; the echo after it says
    /// whose it is. Another pack's echo ends that frame's claim, so the polled pack's echo that
    /// follows (its own status frame lost on the line) does not make the other pack's cells,
    /// current and switches its report.
    #[test]
    fn bank_3_another_packs_status_frame_is_never_the_polled_packs() {
        let mut poller = line(Protocol::Jk, &[1]);
        let mut tx = [0u8; MAX_REQUEST_LEN];
        assert!(poller.poll(0, &mut tx) > 0);
        let mut data = sample_pack(Protocol::Jk, 16, 3200);
        data.charge_allowed = false;
        let mut other = PackEmulator::new(Protocol::Jk, 2, data);
        let mut request = [0u8; MAX_REQUEST_LEN];
        let len = jk::encode_request(2, &mut request);
        let mut reports = std::vec::Vec::new();
        other.answer(&request[..len], |f| {
            poller.receive(1, f, |r| reports.push(r))
        });
        let mut echo = [0u8; jk::ECHO_LEN];
        let len = jk::encode_echo(1, &mut echo);
        poller.receive(2, &echo[..len], |r| reports.push(r));
        assert_eq!(reports, [], "pack 2's frame reported as pack 1's");
    }

    /// The time is the caller's: near the end of its range the deadlines saturate instead of
    /// wrapping to the past (which sent every request again at once and skipped the pack
    /// without waiting for it) or panicking where overflow is checked (the fuzz builds).
    #[test]
    fn deadlines_near_the_end_of_the_clock_saturate() {
        for protocol in [Protocol::Jbd, Protocol::Jk, Protocol::Daly] {
            let mut poller = line(protocol, &[1]);
            let mut tx = [0u8; MAX_REQUEST_LEN];
            let now = u64::MAX - 5;
            assert!(poller.poll(now, &mut tx) > 0);
            assert_eq!(poller.next_deadline_ms(), Some(u64::MAX), "{protocol}");
            assert_eq!(
                poller.poll(now, &mut tx),
                0,
                "{protocol}: sent again at once"
            );
            // Unanswered until the end: retried, then skipped, never a wrapped deadline.
            for _ in 0..2 * usize::from(MAX_ATTEMPTS) {
                poller.poll(u64::MAX, &mut tx);
                assert!(poller.next_deadline_ms() >= Some(now), "{protocol}");
            }
        }
    }

    /// Runs a Daly line with one pack of `cells` cells whose first answer to `id` is `data`
    /// instead of its own (a garbled frame that passed the 8-bit sum, or a forged one); the
    /// reports' cell counts and capacities (0.1 Ah).
    fn daly_with_first_answer(
        cells: usize,
        id: u8,
        data: [u8; 8],
        end_ms: u64,
    ) -> std::vec::Vec<(usize, u16)> {
        let mut poller = line(Protocol::Daly, &[1]);
        let mut pack =
            PackEmulator::new(Protocol::Daly, 1, sample_pack(Protocol::Daly, cells, 3300));
        let mut first = true;
        let mut reports = std::vec::Vec::new();
        let mut now = 0;
        while now < end_ms {
            let mut tx = [0u8; MAX_REQUEST_LEN];
            let len = poller.poll(now, &mut tx);
            if len > 0 {
                let mut wire = std::vec::Vec::new();
                if first && daly::decode_request(&tx[..len]) == Some((1, id)) {
                    first = false;
                    let mut frame = [0u8; daly::FRAME_LEN];
                    let n = daly::encode_response(1, id, &data, &mut frame);
                    wire.extend_from_slice(&frame[..n]);
                } else {
                    pack.answer(&tx[..len], |f| wire.extend_from_slice(f));
                }
                poller.receive(now, &wire, |r| {
                    reports.push((r.report.cells_mv.len(), r.report.capacity_dah))
                });
            }
            let next = poller.next_deadline_ms().unwrap();
            now = if len == 0 {
                next.max(now + 1)
            } else {
                next.max(now)
            };
        }
        reports
    }

    /// [`daly_with_first_answer`] with the first 0x94 answer `counts`: the reports' cell counts.
    fn daly_with_first_counts(cells: usize, counts: [u8; 2], end_ms: u64) -> std::vec::Vec<usize> {
        let data = [counts[0], counts[1], 0, 0, 0, 0, 0, 0];
        daly_with_first_answer(cells, daly::ID_STATUS, data, end_ms)
            .into_iter()
            .map(|(cells, _)| cells)
            .collect()
    }

    /// BANK-1, MON-1: a Daly pack's rated capacity is read once (0x50). A value that is not the
    /// pack's (0.1 Ah or 4 000 Ah for a 100 Ah pack) was kept until a restart: every report
    /// carried it, and the bank took it as the battery's capacity (the SoC counted against
    /// it). A rated capacity that does not fit the capacity the pack counts (0x93) at its SoC
    /// is refused and asked again: the pack reports its own 100 Ah from the next rounds.
    #[test]
    fn bank_1_mon_1_a_daly_rated_capacity_that_does_not_fit_is_asked_again() {
        for rated_mah in [100u32, 4_000_000, 0] {
            let mut data = [0u8; 8];
            data[0..4].copy_from_slice(&rated_mah.to_be_bytes());
            let reports = daly_with_first_answer(16, daly::ID_RATED, data, 10_000);
            assert!(
                reports.iter().all(|&(_, dah)| dah == 1000),
                "rated {rated_mah} mAh first: capacities reported (0.1 Ah): {reports:?}"
            );
            assert!(reports.len() >= 8, "reports: {reports:?}");
        }
    }

    /// BANK-1, BANK-2: a Daly pack's cell count is read once (0x94). A count that is not the
    /// pack's made it, until a restart, a battery of another model reporting some of its cells
    /// (8 of 16: a 25.6 V battery on a 51.2 V bank, a configuration error) or never a battery
    /// at all (16 of 8: its 0x95 answer never complete, the pack skipped every round, lost).
    /// Cells that do not add up to the pack voltage of its 0x90 answer are refused and a
    /// skipped pack's counts asked again: the pack reports its own cells from the next rounds.
    #[test]
    fn bank_1_bank_2_a_daly_count_that_does_not_fit_is_asked_again() {
        let reports = daly_with_first_counts(16, [8, 2], 10_000);
        assert!(
            reports.iter().all(|&n| n == 16),
            "cells reported: {reports:?}"
        );
        assert!(reports.len() >= 8, "cells reported: {reports:?}");
        let reports = daly_with_first_counts(8, [16, 2], 10_000);
        assert!(
            reports.iter().all(|&n| n == 8),
            "cells reported: {reports:?}"
        );
        assert!(reports.len() >= 8, "cells reported: {reports:?}");
    }

    #[test]
    fn a_15_cell_pack_is_refused_not_reported() {
        let mut poller = line(Protocol::Jbd, &[1]);
        let mut packs = [PackEmulator::new(
            Protocol::Jbd,
            1,
            sample_pack(Protocol::Jbd, 15, 3300),
        )];
        assert!(run(&mut poller, &mut packs, 0, 3_000).is_empty());
        assert_eq!(poller.stats().refused, 3);
    }

    #[test]
    fn the_openbms_bus_passes_reports_through_and_sends_nothing() {
        let mut poller = Poller::new(LineConfig::new(Protocol::OpenBms, 0, &[]).unwrap());
        let mut tx = [0u8; MAX_REQUEST_LEN];
        assert_eq!(poller.poll(0, &mut tx), 0);
        assert_eq!(poller.next_deadline_ms(), None);
        let pack = sample_pack(Protocol::Jbd, 4, 3300);
        let report = pack.to_report(7).unwrap();
        let mut frame = [0u8; crate::bus::MAX_FRAME_LEN];
        let len = crate::bus::encode_report(&report, &mut frame).unwrap();
        let mut got = std::vec::Vec::new();
        poller.receive(0, &frame[..len], |r| got.push(r.report));
        assert_eq!(got, [report]);
    }

    proptest! {
        // Garbage between and inside answers gives bad frames, never a report it does not
        // carry, never a panic.
        #[test]
        fn garbage_gives_only_bad_frames(
            protocol in prop_oneof![Just(Protocol::Jbd), Just(Protocol::Jk), Just(Protocol::Daly)],
            garbage in proptest::collection::vec(any::<u8>(), 0..700),
            at in 0u64..5_000,
        ) {
            let mut poller = line(protocol, &[1]);
            let mut tx = [0u8; MAX_REQUEST_LEN];
            let mut reports = 0;
            for t in [at, at + 500, at + 5_000] {
                poller.poll(t, &mut tx);
                poller.receive(t, &garbage, |_| reports += 1);
            }
            prop_assert_eq!(reports, 0);
        }
    }
}
