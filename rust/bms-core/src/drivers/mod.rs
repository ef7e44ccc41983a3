//! Battery drivers: reading the internal BMS of batteries people already own (JBD, JK, Daly) and
//! the OpenBMS bus, so that each pack becomes a bank member like a bus battery.
//!
//! Sans-IO like the rest of the core: a [`poller::Poller`] says which bytes to send and when
//! (the caller passes the time), takes the bytes that arrive in any chunking, and hands out one
//! [`PackReport`] per pack and polling round. Its [`PackReport::report`] is the same
//! [`BatteryReport`] the bank takes from the OpenBMS bus, so the PROT rules, the topology
//! (BANK-1/2) and the lost-battery timeout (BANK-4) apply unchanged.
//!
//! One file per protocol holds its framing and codec, both directions (the simulator's packs
//! answer with the same code): [`openbms`], [`jbd`], [`jk`], [`daly`]. [`emulator`] answers
//! requests as a real pack does; `docs/install.md` lists the packs and their wiring.

use core::fmt;

use heapless::Vec;

use crate::bus::{BatteryFlags, BatteryModel, BatteryReport, MAX_TEMPS_PER_BATTERY};
use crate::stable_enum::stable_enum;
use crate::word::Number;

pub mod daly;
pub mod emulator;
pub mod jbd;
pub mod jk;
pub mod openbms;
pub mod poller;

/// Most packs on one serial line (RS485 multi-drop).
pub const MAX_PACKS_PER_LINE: usize = 16;

/// Most cells a pack may report; only 4, 8 and 16 make a supported battery.
pub const MAX_PACK_CELLS: usize = 32;

/// Longest request any driver sends, bytes.
pub const MAX_REQUEST_LEN: usize = 16;

/// Longest response frame any driver receives, bytes (a JK-PB status frame).
pub const MAX_RESPONSE_LEN: usize = jk::STATUS_FRAME_LEN;

stable_enum! {
    /// The protocol a battery line speaks. One protocol per bank: packs of different makes do not
    /// share a bank (their SoC and flags mean different things).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Protocol {
        /// The OpenBMS battery bus: batteries send reports unasked (`docs/battery-bus.md`).
        OpenBms = 0 => "openbms",
        /// JBD / Xiaoxiang / Overkill Solar UART protocol: `0xDD … 0x77` frames, one pack per line.
        Jbd = 1 => "jbd",
        /// JK-PB series RS485 (protocol 001): Modbus-framed trigger, status frame `55 AA EB 90`.
        Jk = 2 => "jk",
        /// Daly UART/RS485 protocol: 13-byte `0xA5` frames, address per pack.
        Daly = 3 => "daly",
    }
}

impl Protocol {
    /// The protocol named `name` (as [`Protocol::name`] writes it).
    pub fn from_name(name: &str) -> Option<Self> {
        Protocol::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The line speed the packs use out of the box, bit/s (8N1).
    pub const fn default_baud(self) -> u32 {
        match self {
            Protocol::OpenBms | Protocol::Jk => 115_200,
            Protocol::Jbd | Protocol::Daly => 9_600,
        }
    }

    /// Whether packs have an address, so several share one RS485 line. JBD packs answer
    /// whatever reaches them: one pack per line.
    pub const fn addressed(self) -> bool {
        matches!(self, Protocol::Jk | Protocol::Daly)
    }

    /// The addresses a pack may have: JK DIP switches 1..=15, Daly board numbers 1..=16.
    pub const fn address_range(self) -> (u8, u8) {
        match self {
            Protocol::OpenBms | Protocol::Jbd => (1, 1),
            Protocol::Jk => (1, 15),
            Protocol::Daly => (1, 16),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a received frame was dropped. Nothing on the wire gives anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadFrame {
    /// The checksum or CRC does not match.
    Checksum,
    /// Start, length or end bytes do not frame a response of this protocol.
    Framing,
    /// A well-framed response whose content is impossible (length, counts, values).
    Content,
    /// A valid frame nobody asked for: another pack's answer, or the line echoing a request.
    Unexpected,
}

impl fmt::Display for BadFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadFrame::Checksum => "bad frame: checksum mismatch",
            BadFrame::Framing => "bad frame: framing",
            BadFrame::Content => "bad frame: content",
            BadFrame::Unexpected => "bad frame: not the awaited reply",
        })
    }
}

/// Why a pack's complete reading does not make a battery report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackError {
    /// The pack has `cells` cells in series; only 4, 8 and 16 (12.8, 25.6, 51.2 V) are batteries
    /// the bank supports.
    UnsupportedCellCount {
        /// Cells the pack reported.
        cells: u8,
    },
}

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackError::UnsupportedCellCount { cells } => write!(
                f,
                "pack has {} cells in series; 4, 8 or 16 are supported",
                Number::from(*cells)
            ),
        }
    }
}

/// What one pack told in one polling round, in the units of [`BatteryReport`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackData {
    /// Cell voltages, mV, first cell first.
    pub cells_mv: Vec<u16, MAX_PACK_CELLS>,
    /// Temperature sensors of the cells, 0.1 °C (the pack's power-stage sensor is not a cell).
    pub temps_ddegc: Vec<i16, MAX_TEMPS_PER_BATTERY>,
    /// Current, mA, positive = charging.
    pub current_ma: i32,
    /// The pack's own state of charge, %, when it has one.
    pub soc_percent: Option<u8>,
    /// Capacity the pack states, mAh.
    pub capacity_mah: u32,
    /// Firmware version, major in the high byte (0 when the protocol does not tell).
    pub firmware: u16,
    /// The pack's BMS lets it charge (its charge switch is on).
    pub charge_allowed: bool,
    /// The pack's BMS lets it discharge (its discharge switch is on).
    pub discharge_allowed: bool,
    /// The pack is balancing cells now.
    pub balancing: bool,
}

impl PackData {
    /// The battery model the cell count makes: a 4-cell pack is a 12.8 V battery.
    pub fn model(&self) -> Result<BatteryModel, PackError> {
        match self.cells_mv.len() {
            4 => Ok(BatteryModel::Lfp12V8),
            8 => Ok(BatteryModel::Lfp25V6),
            16 => Ok(BatteryModel::Lfp51V2),
            other => Err(PackError::UnsupportedCellCount {
                cells: u8::try_from(other).unwrap_or(u8::MAX),
            }),
        }
    }

    /// The bank's battery report for this reading, with `serial` as the battery's identity.
    /// The bank checks the values (BANK-2, PROT-13); this only maps units.
    pub fn to_report(&self, serial: u32) -> Result<BatteryReport, PackError> {
        let model = self.model()?;
        let mut cells_mv = Vec::new();
        for &mv in self.cells_mv.iter().take(model.cells()) {
            // The model's cell count fits the report by construction.
            let _ = cells_mv.push(mv);
        }
        Ok(BatteryReport {
            serial,
            model,
            capacity_dah: u16::try_from(self.capacity_mah / 100).unwrap_or(u16::MAX),
            firmware: self.firmware,
            cells_mv,
            temps_ddegc: self.temps_ddegc.clone(),
            current_ma: self.current_ma,
            flags: BatteryFlags {
                allowed_to_charge: self.charge_allowed,
                allowed_to_discharge: self.discharge_allowed,
                balancing: self.balancing,
            },
        })
    }
}

/// One pack's reading after a polling round, as the [`poller::Poller`] hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackReport {
    /// The pack's address on its line (1 for a JBD pack, which has none).
    pub address: u8,
    /// The pack's own state of charge, %, when it has one (shown, not used for decisions).
    pub soc_percent: Option<u8>,
    /// The report for the bank ([`crate::Bms::handle_report`]).
    pub report: BatteryReport,
}

/// The battery serial number of the pack at `address` on line `line` speaking `protocol`:
/// stable across reboots (the bank numbers batteries by serial), unique per line and address,
/// and never one an OpenBMS bus battery uses (those are below 2^31).
pub const fn pack_serial(protocol: Protocol, line: u8, address: u8) -> u32 {
    0x8000_0000 | (protocol as u32) << 16 | (line as u32) << 8 | address as u32
}

/// Time on the wire for `bytes` bytes at `baud` bit/s, 8N1 (10 bits a byte), µs, rounded up.
pub const fn wire_time_us(bytes: usize, baud: u32) -> u64 {
    let bits = bytes as u64 * 10 * 1_000_000;
    let baud = if baud == 0 { 1 } else { baud as u64 };
    bits.div_ceil(baud)
}

/// Why a line configuration is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineError {
    /// No pack address given.
    NoPacks,
    /// More addresses than [`MAX_PACKS_PER_LINE`].
    TooManyPacks {
        /// Addresses given.
        count: u8,
    },
    /// An address outside the protocol's [`Protocol::address_range`].
    Address {
        /// The protocol.
        protocol: Protocol,
        /// The address given.
        address: u8,
    },
    /// The same address twice.
    DuplicateAddress {
        /// The address given twice.
        address: u8,
    },
    /// A line speed of 0 or above 1 Mbit/s.
    Baud {
        /// The speed given, bit/s.
        baud: u32,
    },
    /// The packs of the line cannot all be read within
    /// [`crate::limits::MAX_POLL_ROUND_MS`] ([`poller::round_estimate_ms`] with 16-cell packs).
    RoundTooLong {
        /// The protocol.
        protocol: Protocol,
        /// Line speed, bit/s.
        baud: u32,
        /// Packs on the line.
        packs: u8,
        /// The round's estimated length, ms.
        round_ms: u64,
    },
    /// Two lines of one bank speak different protocols.
    MixedProtocols {
        /// The first line's protocol.
        first: Protocol,
        /// The other protocol.
        other: Protocol,
    },
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::NoPacks => f.write_str("battery line has no pack address"),
            LineError::TooManyPacks { count } => write!(
                f,
                "{} packs on one battery line, at most {}",
                Number::from(*count),
                Number::from(MAX_PACKS_PER_LINE)
            ),
            LineError::Address { protocol, address } => {
                let (low, high) = protocol.address_range();
                write!(
                    f,
                    "{} pack address {} outside {}..{}",
                    protocol.name(),
                    Number::from(*address),
                    Number::from(low),
                    Number::from(high)
                )
            }
            LineError::DuplicateAddress { address } => {
                write!(f, "pack address {} given twice", Number::from(*address))
            }
            LineError::Baud { baud } => {
                write!(f, "battery line speed {} bit/s", Number::from(*baud))
            }
            LineError::RoundTooLong {
                protocol,
                baud,
                packs,
                round_ms,
            } => write!(
                f,
                "{} {} packs at {} bit/s need {} ms to be read once, at most {}: fewer packs \
                 on this line or a faster line",
                Number::from(*packs),
                protocol.name(),
                Number::from(*baud),
                Number::from(*round_ms),
                Number::from(crate::limits::MAX_POLL_ROUND_MS)
            ),
            LineError::MixedProtocols { first, other } => write!(
                f,
                "mixed battery protocols in one bank: {} and {}",
                first.name(),
                other.name()
            ),
        }
    }
}

/// One serial line with its packs: what a board's devicetree (or a scenario) chooses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineConfig {
    /// The protocol every pack on the line speaks.
    pub protocol: Protocol,
    /// Line speed, bit/s (8N1).
    pub baud: u32,
    /// Number of the line on the board (0 for the first), part of each pack's serial.
    pub line: u8,
    /// The packs' addresses, polled in this order.
    pub addresses: Vec<u8, MAX_PACKS_PER_LINE>,
}

impl LineConfig {
    /// A line at the protocol's default speed with `addresses`; checked.
    pub fn new(protocol: Protocol, line: u8, addresses: &[u8]) -> Result<Self, LineError> {
        Self::with_baud(protocol, protocol.default_baud(), line, addresses)
    }

    /// A line at `baud` with `addresses`; checked.
    pub fn with_baud(
        protocol: Protocol,
        baud: u32,
        line: u8,
        addresses: &[u8],
    ) -> Result<Self, LineError> {
        let count = u8::try_from(addresses.len()).unwrap_or(u8::MAX);
        let addresses =
            Vec::from_slice(addresses).map_err(|_| LineError::TooManyPacks { count })?;
        let config = LineConfig {
            protocol,
            baud,
            line,
            addresses,
        };
        config.check()?;
        Ok(config)
    }

    /// A line whose packs have addresses 1..=`count` ("scan 1..N").
    pub fn scan(protocol: Protocol, baud: u32, line: u8, count: u8) -> Result<Self, LineError> {
        let mut addresses: Vec<u8, MAX_PACKS_PER_LINE> = Vec::new();
        for address in 1..=count {
            addresses
                .push(address)
                .map_err(|_| LineError::TooManyPacks { count })?;
        }
        Self::with_baud(protocol, baud, line, &addresses)
    }

    /// Checks the configuration; the first problem found.
    pub fn check(&self) -> Result<(), LineError> {
        if self.baud == 0 || self.baud > 1_000_000 {
            return Err(LineError::Baud { baud: self.baud });
        }
        if self.protocol == Protocol::OpenBms {
            return Ok(());
        }
        if self.addresses.is_empty() {
            return Err(LineError::NoPacks);
        }
        let (low, high) = self.protocol.address_range();
        for (i, &address) in self.addresses.iter().enumerate() {
            if !(low..=high).contains(&address) {
                return Err(LineError::Address {
                    protocol: self.protocol,
                    address,
                });
            }
            if self.addresses.iter().take(i).any(|&a| a == address) {
                return Err(LineError::DuplicateAddress { address });
            }
        }
        let round_ms = poller::round_estimate_ms(self, poller::ESTIMATE_CELLS);
        if round_ms > crate::limits::MAX_POLL_ROUND_MS {
            return Err(LineError::RoundTooLong {
                protocol: self.protocol,
                baud: self.baud,
                packs: u8::try_from(self.addresses.len()).unwrap_or(u8::MAX),
                round_ms,
            });
        }
        Ok(())
    }
}

/// Checks that the lines of one bank all speak one protocol (BANK-2: a bank is one kind of
/// battery); each line is checked too.
pub fn check_bank_lines(lines: &[LineConfig]) -> Result<(), LineError> {
    let Some(first) = lines.first() else {
        return Ok(());
    };
    for line in lines {
        line.check()?;
        if line.protocol != first.protocol {
            return Err(LineError::MixedProtocols {
                first: first.protocol,
                other: line.protocol,
            });
        }
    }
    Ok(())
}

/// What the frame scanner found at the start of the receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Not the start of a frame: drop one byte and look again.
    Junk,
    /// The start of a frame; more bytes needed.
    NeedMore,
    /// A complete frame of this many bytes.
    Frame(usize),
}

/// Reassembles response frames across receive calls (any chunking), hunting for start bytes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Assembler {
    buf: Vec<u8, MAX_RESPONSE_LEN>,
}

impl Assembler {
    /// Feeds `bytes`; calls `frame` with each complete frame `scan` finds.
    pub(crate) fn feed(
        &mut self,
        bytes: &[u8],
        scan: fn(&[u8]) -> Scan,
        mut frame: impl FnMut(&[u8]),
    ) {
        for &byte in bytes {
            if self.buf.push(byte).is_err() {
                // Only a scanner bug could leave a full buffer; start over rather than stall.
                self.buf.clear();
                continue;
            }
            loop {
                match scan(&self.buf) {
                    Scan::NeedMore => break,
                    Scan::Junk => {
                        drop_front(&mut self.buf, 1);
                        if self.buf.is_empty() {
                            break;
                        }
                    }
                    Scan::Frame(len) => {
                        frame(self.buf.get(..len).unwrap_or(&[]));
                        drop_front(&mut self.buf, len);
                        if self.buf.is_empty() {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Drops whatever partial frame is held (after a timeout, before a new request).
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
    }
}

fn drop_front<const N: usize>(buf: &mut Vec<u8, N>, count: usize) {
    let len = buf.len();
    let count = count.min(len);
    buf.copy_within(count..len, 0);
    buf.truncate(len - count);
}

/// Copies `bytes` into `buf` at `at`; nothing when they do not fit (callers size buffers).
pub(crate) fn put_at(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(slot) = buf.get_mut(at..at.saturating_add(bytes.len())) {
        slot.copy_from_slice(bytes);
    }
}

/// Big-endian u16 at `at` (0 past the end: callers check lengths first).
pub(crate) fn be16(bytes: &[u8], at: usize) -> u16 {
    match bytes.get(at..at + 2) {
        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
        _ => 0,
    }
}

/// Little-endian u16 at `at` (0 past the end).
pub(crate) fn le16(bytes: &[u8], at: usize) -> u16 {
    match bytes.get(at..at + 2) {
        Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
        _ => 0,
    }
}

/// Little-endian u32 at `at` (0 past the end).
pub(crate) fn le32(bytes: &[u8], at: usize) -> u32 {
    match bytes.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// Byte at `at` (0 past the end).
pub(crate) fn byte(bytes: &[u8], at: usize) -> u8 {
    bytes.get(at).copied().unwrap_or(0)
}

/// Bytes from a frame written as in the protocol documents ("DD A5 03 00"), for the drivers'
/// tests.
#[cfg(test)]
pub(crate) fn hex(text: &str) -> std::vec::Vec<u8> {
    text.split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names_round_trip() {
        for p in Protocol::ALL {
            assert_eq!(Protocol::from_name(p.name()), Some(p));
            assert_eq!(Protocol::from_u8(p as u8), Some(p));
        }
        assert_eq!(Protocol::from_name("pylontech"), None);
    }

    #[test]
    fn a_4_cell_pack_is_a_12v8_battery() {
        let mut data = PackData::default();
        data.cells_mv.extend_from_slice(&[3300; 4]).unwrap();
        assert_eq!(data.model(), Ok(BatteryModel::Lfp12V8));
        data.cells_mv.extend_from_slice(&[3300; 4]).unwrap();
        assert_eq!(data.model(), Ok(BatteryModel::Lfp25V6));
        data.cells_mv.extend_from_slice(&[3300; 7]).unwrap();
        assert_eq!(
            data.model(),
            Err(PackError::UnsupportedCellCount { cells: 15 })
        );
        assert_eq!(
            PackError::UnsupportedCellCount { cells: 15 }.to_string(),
            "pack has 15 cells in series; 4, 8 or 16 are supported"
        );
    }

    #[test]
    fn bank_2_mixed_protocols_in_one_bank_are_refused() {
        let jbd = LineConfig::new(Protocol::Jbd, 0, &[1]).unwrap();
        let jk = LineConfig::new(Protocol::Jk, 1, &[1, 2]).unwrap();
        assert_eq!(check_bank_lines(&[jbd.clone(), jbd.clone()]), Ok(()));
        let err = check_bank_lines(&[jbd, jk]).unwrap_err();
        assert_eq!(
            err,
            LineError::MixedProtocols {
                first: Protocol::Jbd,
                other: Protocol::Jk
            }
        );
        assert_eq!(
            err.to_string(),
            "mixed battery protocols in one bank: jbd and jk"
        );
    }

    #[test]
    fn line_config_errors_name_the_value() {
        assert_eq!(
            LineConfig::new(Protocol::Jk, 0, &[1, 16]).unwrap_err(),
            LineError::Address {
                protocol: Protocol::Jk,
                address: 16
            }
        );
        assert_eq!(
            LineConfig::new(Protocol::Jk, 0, &[1, 16])
                .unwrap_err()
                .to_string(),
            "jk pack address 16 outside 1..15"
        );
        assert_eq!(
            LineConfig::new(Protocol::Daly, 0, &[3, 3]).unwrap_err(),
            LineError::DuplicateAddress { address: 3 }
        );
        assert_eq!(
            LineConfig::new(Protocol::Jbd, 0, &[]).unwrap_err(),
            LineError::NoPacks
        );
        assert_eq!(
            LineConfig::with_baud(Protocol::Jbd, 0, 0, &[1]).unwrap_err(),
            LineError::Baud { baud: 0 }
        );
        assert_eq!(
            LineConfig::scan(Protocol::Daly, 9600, 0, 17).unwrap_err(),
            LineError::TooManyPacks { count: 17 }
        );
        assert_eq!(
            LineConfig::scan(Protocol::Daly, 115_200, 0, 16)
                .unwrap()
                .addresses
                .len(),
            16
        );
    }

    #[test]
    fn bank_4_a_line_too_slow_to_read_every_pack_in_time_is_refused() {
        // 16 Daly packs at 9600 bit/s: 4 requests and 9 answer frames a pack, 4.4 s a round;
        // with one missed answer a pack would be lost before it is read again.
        let err = LineConfig::scan(Protocol::Daly, 9600, 0, 16).unwrap_err();
        assert_eq!(
            err,
            LineError::RoundTooLong {
                protocol: Protocol::Daly,
                baud: 9600,
                packs: 16,
                round_ms: 4364
            }
        );
        assert_eq!(
            err.to_string(),
            "16 daly packs at 9600 bit/s need 4364 ms to be read once, at most 2500: fewer \
             packs on this line or a faster line"
        );
        assert!(LineConfig::scan(Protocol::Daly, 9600, 0, 9).is_ok());
        assert!(LineConfig::scan(Protocol::Daly, 9600, 0, 10).is_err());
        // A JK-PB status frame is 300 bytes: at 9600 bit/s (protocol 013) 7 packs fit.
        assert!(LineConfig::scan(Protocol::Jk, 9600, 0, 7).is_ok());
        assert!(LineConfig::scan(Protocol::Jk, 9600, 0, 8).is_err());
        assert!(LineConfig::scan(Protocol::Jk, 115_200, 0, 15).is_ok());
    }

    #[test]
    fn wire_time_is_ten_bits_a_byte() {
        assert_eq!(wire_time_us(96, 9600), 100_000);
        assert_eq!(wire_time_us(1, 115_200), 87);
    }

    #[test]
    fn pack_serials_differ_per_line_and_address() {
        let a = pack_serial(Protocol::Jk, 0, 1);
        assert_ne!(a, pack_serial(Protocol::Jk, 0, 2));
        assert_ne!(a, pack_serial(Protocol::Jk, 1, 1));
        assert_ne!(a, pack_serial(Protocol::Daly, 0, 1));
        assert!(a >= 0x8000_0000);
    }
}
