//! The battery bus: what each battery reports to the BMS, and the frame codec that carries it.
//!
//! In: raw UART bytes, in chunks split anywhere ([`FrameDecoder::feed`]). Out: decoded
//! [`BatteryReport`]s and [`BusStats`] counting every frame that was dropped and why. The other
//! direction, [`encode_report`], is what a battery (or the simulator's batteries) sends.
//!
//! A frame is `version | kind | postcard body | CRC-16 (LE)`, COBS-encoded and ended by one
//! `0x00`; `docs/battery-bus.md` is the full description with an exact-bytes example. Framing
//! and CRC come from postcard's own flavors (encoding) and its `cobs`/`crc` crates (decoding),
//! so no byte-stuffing or CRC code lives here. Garbage, truncated, corrupted and oversize frames
//! are counted and dropped; nothing a sender puts on the wire can make the decoder panic.
//!
//! ```
//! use bms_core::bus::{encode_report, BatteryFlags, BatteryModel, BatteryReport, FrameDecoder};
//!
//! let report = BatteryReport {
//!     serial: 7,
//!     model: BatteryModel::Lfp12V8,
//!     capacity_dah: 1000,
//!     firmware: 0x0112,
//!     cells_mv: heapless::Vec::from_slice(&[3300, 3301, 3302, 3303]).unwrap(),
//!     temps_ddegc: heapless::Vec::from_slice(&[250]).unwrap(),
//!     current_ma: -1500,
//!     flags: BatteryFlags { allowed_to_charge: true, allowed_to_discharge: true, balancing: false },
//! };
//! let mut wire = [0u8; bms_core::bus::MAX_FRAME_LEN];
//! let len = encode_report(&report, &mut wire).unwrap();
//!
//! let mut decoder = FrameDecoder::new();
//! let mut got = None;
//! // Any split of the byte stream gives the same result.
//! let (first, rest) = wire[..len].split_at(5);
//! decoder.feed(first, |r| got = Some(r));
//! decoder.feed(rest, |r| got = Some(r));
//! assert_eq!(got, Some(report));
//! assert_eq!(decoder.stats().good, 1);
//! ```

use core::fmt;

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::word::Number;

/// Most cells one battery can have (a 51.2 V battery).
pub const MAX_CELLS_PER_BATTERY: usize = 16;
/// Most temperature sensors one battery reports.
pub const MAX_TEMPS_PER_BATTERY: usize = 4;

/// The protocol version this codec speaks: the first byte of every frame. It changes only when
/// an existing field changes meaning or encoding; appending a field to a body does not change it.
pub const PROTOCOL_VERSION: u8 = 1;

/// UART speed of the battery bus in bit/s (8 data bits, no parity, 1 stop bit).
pub const BAUD_RATE: u32 = 115_200;

/// How often each battery sends its [`BatteryReport`], in ms.
pub const REPORT_PERIOD_MS: u64 = 1_000;

/// A battery whose last valid report is this old is lost (BANK-4), in ms: five missed reports.
pub const LOST_AFTER_MS: u64 = 5 * REPORT_PERIOD_MS;

/// The CRC of every frame: CRC-16/IBM-3740 (also known as CRC-16/CCITT-FALSE; polynomial
/// 0x1021, initial value 0xFFFF, not reflected, no final XOR), sent little-endian.
pub const CRC: crc::Crc<u16, CrcTable> = crc::Crc::<u16, CrcTable>::new(&crc::CRC_16_IBM_3740);

/// How [`CRC`] is computed. On the device bit by bit: a byte table costs more flash than the
/// instructions it saves are worth (docs/ffi.md has both numbers). With the `crc-table` feature
/// (the simulator, which encodes and decodes every report of every simulated battery) from the
/// table: the same CRC, a faster simulator (docs/simulator.md, Speed).
#[cfg(not(feature = "crc-table"))]
pub type CrcTable = crc::NoTable;
/// How [`CRC`] is computed: from a byte table (the `crc-table` feature).
#[cfg(feature = "crc-table")]
pub type CrcTable = crc::Table<1>;

/// Longest postcard body of a [`BatteryReport`], in bytes: every varint at its longest and both
/// vectors full (serial 5, model 1, capacity 3, firmware 3, cells 1 + 16 × 3, temperatures
/// 1 + 4 × 3, current 5, flags 3).
pub const MAX_REPORT_BODY_LEN: usize =
    5 + 1 + 3 + 3 + (1 + 3 * MAX_CELLS_PER_BATTERY) + (1 + 3 * MAX_TEMPS_PER_BATTERY) + 5 + 3;

/// Longest decoded frame: version, kind, body, CRC.
const MAX_DECODED_LEN: usize = 1 + 1 + MAX_REPORT_BODY_LEN + 2;

/// Longest frame on the wire, in bytes, delimiter included: COBS adds one byte per started run
/// of 254 bytes, then the `0x00` delimiter follows. A buffer of this size always fits
/// [`encode_report`]'s output; a longer frame is dropped as oversize by the decoder.
pub const MAX_FRAME_LEN: usize = MAX_DECODED_LEN + MAX_DECODED_LEN / 254 + 1 + 1;

/// The battery model, which fixes the number of cells in series inside the battery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatteryModel {
    /// LiFePO4 12.8 V, 4 cells in series.
    Lfp12V8,
    /// LiFePO4 25.6 V, 8 cells in series.
    Lfp25V6,
    /// LiFePO4 51.2 V, 16 cells in series.
    Lfp51V2,
}

impl BatteryModel {
    /// Cells in series inside one battery of this model.
    pub const fn cells(self) -> usize {
        match self {
            BatteryModel::Lfp12V8 => 4,
            BatteryModel::Lfp25V6 => 8,
            BatteryModel::Lfp51V2 => 16,
        }
    }

    /// Nominal battery voltage in millivolts (3.2 V per cell).
    pub const fn nominal_mv(self) -> u32 {
        self.cells() as u32 * 3200
    }
}

/// Flags a battery sets about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatteryFlags {
    /// The battery's own BMS allows charging.
    pub allowed_to_charge: bool,
    /// The battery's own BMS allows discharging.
    pub allowed_to_discharge: bool,
    /// The battery is balancing its cells right now.
    pub balancing: bool,
}

/// One report of one battery, as received over the battery bus.
///
/// Units are in the names: millivolts, milliamperes (positive = charging), tenths of a degree
/// Celsius, tenths of an ampere-hour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatteryReport {
    /// Serial number, unique per battery; identifies it on the bus.
    pub serial: u32,
    /// Battery model (fixes the number of cells).
    pub model: BatteryModel,
    /// Nominal capacity in 0.1 Ah.
    pub capacity_dah: u16,
    /// Firmware version, major in the high byte, minor in the low byte (0x0112 = v1.18).
    pub firmware: u16,
    /// Cell voltages in mV, first cell first; exactly `model.cells()` entries when valid.
    pub cells_mv: Vec<u16, MAX_CELLS_PER_BATTERY>,
    /// Cell temperatures in 0.1 °C; at least one entry when valid.
    pub temps_ddegc: Vec<i16, MAX_TEMPS_PER_BATTERY>,
    /// Current through the battery in mA, positive = charging.
    pub current_ma: i32,
    /// The battery's own flags.
    pub flags: BatteryFlags,
}

/// What a frame carries: its second byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageKind {
    /// A [`BatteryReport`], sent by each battery every [`REPORT_PERIOD_MS`].
    Report = 1,
}

impl MessageKind {
    /// The kind with this wire byte, if this protocol version knows it.
    pub const fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(MessageKind::Report),
            _ => None,
        }
    }
}

/// Why [`encode_report`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is too small; `required` bytes (at most [`MAX_FRAME_LEN`]) always fit.
    BufferTooSmall {
        /// Bytes that are always enough for this report.
        required: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall { required } => {
                write!(
                    f,
                    "frame buffer too small: {} bytes needed",
                    Number::from(*required)
                )
            }
        }
    }
}

/// Why a received frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Not a COBS frame, or too short to hold version, kind and CRC: line noise, a sender that
    /// started mid-frame, or a frame cut short.
    Garbage,
    /// The CRC does not match: bits changed on the way.
    Crc,
    /// Longer than [`MAX_FRAME_LEN`] before its delimiter (a lost delimiter joins two frames).
    Oversize,
    /// The CRC matched, but the frame is from a protocol version this codec does not speak.
    UnknownVersion {
        /// The version byte received.
        version: u8,
    },
    /// The CRC and version matched, but the message kind is unknown to this codec.
    UnknownKind {
        /// The kind byte received.
        kind: u8,
    },
    /// The CRC, version and kind matched, but the body does not decode: a sender bug.
    Malformed,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Garbage => f.write_str("garbage frame (bad framing or too short)"),
            FrameError::Crc => f.write_str("frame crc mismatch"),
            FrameError::Oversize => {
                write!(f, "frame longer than {} bytes", Number::from(MAX_FRAME_LEN))
            }
            FrameError::UnknownVersion { version } => {
                write!(f, "unknown bus protocol version {}", Number::from(*version))
            }
            FrameError::UnknownKind { kind } => {
                write!(f, "unknown bus message kind {}", Number::from(*kind))
            }
            FrameError::Malformed => f.write_str("frame body does not decode"),
        }
    }
}

/// Frame counters of one [`FrameDecoder`], each saturating at `u32::MAX`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Frames decoded into a report.
    pub good: u32,
    /// Frames dropped as [`FrameError::Garbage`].
    pub garbage: u32,
    /// Frames dropped as [`FrameError::Crc`].
    pub crc: u32,
    /// Frames dropped as [`FrameError::Oversize`].
    pub oversize: u32,
    /// Frames dropped as [`FrameError::UnknownVersion`].
    pub unknown_version: u32,
    /// Frames dropped as [`FrameError::UnknownKind`].
    pub unknown_kind: u32,
    /// Frames dropped as [`FrameError::Malformed`].
    pub malformed: u32,
}

impl BusStats {
    /// All dropped frames, whatever the reason.
    pub fn dropped(&self) -> u32 {
        self.garbage
            .saturating_add(self.crc)
            .saturating_add(self.oversize)
            .saturating_add(self.unknown_version)
            .saturating_add(self.unknown_kind)
            .saturating_add(self.malformed)
    }

    fn count(&mut self, outcome: &Result<BatteryReport, FrameError>) {
        let counter = match outcome {
            Ok(_) => &mut self.good,
            Err(FrameError::Garbage) => &mut self.garbage,
            Err(FrameError::Crc) => &mut self.crc,
            Err(FrameError::Oversize) => &mut self.oversize,
            Err(FrameError::UnknownVersion { .. }) => &mut self.unknown_version,
            Err(FrameError::UnknownKind { .. }) => &mut self.unknown_kind,
            Err(FrameError::Malformed) => &mut self.malformed,
        };
        *counter = counter.saturating_add(1);
    }
}

/// Encodes `report` as one complete frame (delimiter included) into `buf`; returns the number
/// of bytes written. A buffer of [`MAX_FRAME_LEN`] bytes is always enough.
pub fn encode_report(report: &BatteryReport, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let too_small = EncodeError::BufferTooSmall {
        required: MAX_FRAME_LEN,
    };
    // CRC outside, COBS inside: the CRC covers the plain bytes and is then stuffed with them.
    let mut plain = [0u8; MAX_DECODED_LEN];
    let message = (PROTOCOL_VERSION, MessageKind::Report as u8, report);
    // Serialising a report can only fail for lack of room: its vectors are bounded.
    let body_len = postcard::to_slice(&message, &mut plain)
        .map_err(|_| too_small)?
        .len();
    let crc = CRC.checksum(plain.get(..body_len).ok_or(too_small)?);
    let plain_len = body_len + 2;
    plain
        .get_mut(body_len..plain_len)
        .ok_or(too_small)?
        .copy_from_slice(&crc.to_le_bytes());
    let encoded =
        cobs::try_encode(plain.get(..plain_len).ok_or(too_small)?, buf).map_err(|_| too_small)?;
    *buf.get_mut(encoded).ok_or(too_small)? = 0;
    Ok(encoded + 1)
}

/// Decodes one complete frame: `frame` holds the COBS bytes between two delimiters (without
/// them) and is decoded in place, so its contents are scratch afterwards.
pub fn decode_frame(frame: &mut [u8]) -> Result<BatteryReport, FrameError> {
    let len = cobs::decode_in_place(frame).map_err(|_| FrameError::Garbage)?;
    let decoded = frame.get(..len).ok_or(FrameError::Garbage)?;
    let (message, crc_bytes) = decoded.split_last_chunk::<2>().ok_or(FrameError::Garbage)?;
    let Some((&version, rest)) = message.split_first() else {
        return Err(FrameError::Garbage);
    };
    let Some((&kind, body)) = rest.split_first() else {
        return Err(FrameError::Garbage);
    };
    if CRC.checksum(message) != u16::from_le_bytes(*crc_bytes) {
        return Err(FrameError::Crc);
    }
    if version != PROTOCOL_VERSION {
        return Err(FrameError::UnknownVersion { version });
    }
    match MessageKind::from_byte(kind) {
        // Bytes after the report are fields appended by a newer sender of the same version.
        Some(MessageKind::Report) => postcard::take_from_bytes::<BatteryReport>(body)
            .map(|(report, _newer_fields)| report)
            .map_err(|_| FrameError::Malformed),
        None => Err(FrameError::UnknownKind { kind }),
    }
}

/// Streaming decoder for the bytes received from the battery bus.
///
/// Feed it whatever the UART delivered, in chunks split anywhere; it collects bytes up to each
/// `0x00` delimiter, decodes the frame, hands good reports to the caller and counts the rest in
/// [`BusStats`]. After any bad frame it resynchronises at the next delimiter. Empty frames
/// (consecutive delimiters, which a sender may use to flush a receiver) are skipped uncounted.
#[derive(Clone, Debug, Default)]
pub struct FrameDecoder {
    frame: Vec<u8, MAX_FRAME_LEN>,
    overflowed: bool,
    stats: BusStats,
}

impl FrameDecoder {
    /// A decoder waiting for the first delimiter-ended frame.
    pub const fn new() -> Self {
        FrameDecoder {
            frame: Vec::new(),
            overflowed: false,
            stats: BusStats {
                good: 0,
                garbage: 0,
                crc: 0,
                oversize: 0,
                unknown_version: 0,
                unknown_kind: 0,
                malformed: 0,
            },
        }
    }

    /// Feeds received bytes; `on_report` is called once per good report, in bus order.
    pub fn feed(&mut self, bytes: &[u8], mut on_report: impl FnMut(BatteryReport)) {
        self.feed_frames(bytes, |outcome| {
            if let Ok(report) = outcome {
                on_report(report);
            }
        });
    }

    /// Feeds received bytes; `on_frame` is called once per non-empty frame with its outcome
    /// (the report, or why the frame was dropped), for callers that log bus errors.
    pub fn feed_frames(
        &mut self,
        bytes: &[u8],
        mut on_frame: impl FnMut(Result<BatteryReport, FrameError>),
    ) {
        for &byte in bytes {
            if let Some(outcome) = self.push(byte) {
                on_frame(outcome);
            }
        }
    }

    /// Takes one received byte; returns the outcome when it ended a non-empty frame.
    pub fn push(&mut self, byte: u8) -> Option<Result<BatteryReport, FrameError>> {
        if byte != 0 {
            if self.frame.push(byte).is_err() {
                self.overflowed = true;
                self.frame.clear();
            }
            return None;
        }
        let outcome = if self.overflowed {
            Err(FrameError::Oversize)
        } else if self.frame.is_empty() {
            return None;
        } else {
            decode_frame(&mut self.frame)
        };
        self.frame.clear();
        self.overflowed = false;
        self.stats.count(&outcome);
        Some(outcome)
    }

    /// Drops a partly received frame, e.g. after a UART framing or overrun error; the next frame
    /// is decoded normally.
    pub fn reset(&mut self) {
        self.frame.clear();
        self.overflowed = false;
    }

    /// The frame counters since this decoder was made.
    pub fn stats(&self) -> BusStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> BatteryReport {
        BatteryReport {
            serial: 123_456,
            model: BatteryModel::Lfp12V8,
            capacity_dah: 2000,
            firmware: 0x0112,
            cells_mv: Vec::from_slice(&[3312, 3315, 3309, 3311]).unwrap(),
            temps_ddegc: Vec::from_slice(&[215]).unwrap(),
            current_ma: -12_345,
            flags: BatteryFlags {
                allowed_to_charge: true,
                allowed_to_discharge: true,
                balancing: false,
            },
        }
    }

    fn largest() -> BatteryReport {
        BatteryReport {
            serial: u32::MAX,
            model: BatteryModel::Lfp51V2,
            capacity_dah: u16::MAX,
            firmware: u16::MAX,
            cells_mv: Vec::from_slice(&[u16::MAX; MAX_CELLS_PER_BATTERY]).unwrap(),
            temps_ddegc: Vec::from_slice(&[i16::MIN; MAX_TEMPS_PER_BATTERY]).unwrap(),
            current_ma: i32::MIN,
            flags: BatteryFlags {
                allowed_to_charge: true,
                allowed_to_discharge: true,
                balancing: true,
            },
        }
    }

    fn encode(report: &BatteryReport) -> std::vec::Vec<u8> {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let len = encode_report(report, &mut buf).unwrap();
        buf[..len].to_vec()
    }

    /// Decodes `bytes` with a fresh decoder: the reports and the counters.
    fn decode_all(bytes: &[u8]) -> (std::vec::Vec<BatteryReport>, BusStats) {
        let mut decoder = FrameDecoder::new();
        let mut reports = std::vec::Vec::new();
        decoder.feed(bytes, |r| reports.push(r));
        (reports, decoder.stats())
    }

    /// Parses the hex bytes of the fenced block that follows `marker` in the document.
    fn doc_hex_after(doc: &str, marker: &str) -> std::vec::Vec<u8> {
        let start = doc.find(marker).expect("marker in docs/battery-bus.md");
        let block = doc[start..].split("```").nth(1).expect("fenced block");
        block
            .lines()
            .skip(1)
            .flat_map(|line| line.split('#').next().unwrap().split_whitespace())
            .map(|hex| u8::from_str_radix(hex, 16).expect("hex byte"))
            .collect()
    }

    fn arb_report() -> impl Strategy<Value = BatteryReport> {
        (
            any::<u32>(),
            prop_oneof![
                Just(BatteryModel::Lfp12V8),
                Just(BatteryModel::Lfp25V6),
                Just(BatteryModel::Lfp51V2)
            ],
            any::<u16>(),
            any::<u16>(),
            proptest::collection::vec(any::<u16>(), 0..=MAX_CELLS_PER_BATTERY),
            proptest::collection::vec(any::<i16>(), 0..=MAX_TEMPS_PER_BATTERY),
            any::<i32>(),
            any::<(bool, bool, bool)>(),
        )
            .prop_map(
                |(serial, model, capacity_dah, firmware, cells, temps, current_ma, flags)| {
                    BatteryReport {
                        serial,
                        model,
                        capacity_dah,
                        firmware,
                        cells_mv: Vec::from_slice(&cells).unwrap(),
                        temps_ddegc: Vec::from_slice(&temps).unwrap(),
                        current_ma,
                        flags: BatteryFlags {
                            allowed_to_charge: flags.0,
                            allowed_to_discharge: flags.1,
                            balancing: flags.2,
                        },
                    }
                },
            )
    }

    #[test]
    fn exact_bytes_match_the_documented_example() {
        let doc = include_str!("../../../docs/battery-bus.md");
        let sample = sample();
        assert_eq!(
            encode(&sample),
            doc_hex_after(doc, "<!-- frame-on-the-wire -->"),
            "docs/battery-bus.md frame on the wire"
        );
        let mut decoded = doc_hex_after(doc, "<!-- frame-decoded -->");
        let crc = CRC.checksum(&decoded[..decoded.len() - 2]);
        assert_eq!(crc.to_le_bytes(), decoded[decoded.len() - 2..]);
        let body = postcard::to_allocvec(&sample).unwrap();
        assert_eq!(&decoded[2..decoded.len() - 2], &body[..]);
        decoded.truncate(2);
        assert_eq!(decoded, [PROTOCOL_VERSION, MessageKind::Report as u8]);
    }

    #[test]
    fn the_crc_is_crc16_ibm_3740() {
        // The standard check value of CRC-16/IBM-3740 (CCITT-FALSE) over "123456789".
        assert_eq!(CRC.checksum(b"123456789"), 0x29B1);
    }

    proptest! {
        // The device (bit by bit) and the simulator (`crc-table`) compute the same CRC.
        #[test]
        fn the_bitwise_and_the_table_crc_agree(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let bitwise = crc::Crc::<u16, crc::NoTable>::new(&crc::CRC_16_IBM_3740);
            let table = crc::Crc::<u16, crc::Table<1>>::new(&crc::CRC_16_IBM_3740);
            prop_assert_eq!(bitwise.checksum(&bytes), table.checksum(&bytes));
            prop_assert_eq!(CRC.checksum(&bytes), table.checksum(&bytes));
        }
    }

    #[test]
    fn largest_report_fits_max_frame_len_exactly() {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let len = encode_report(&largest(), &mut buf).unwrap();
        assert_eq!(len, MAX_FRAME_LEN);
        let (reports, stats) = decode_all(&buf);
        assert_eq!(reports, [largest()]);
        assert_eq!(stats.good, 1);
    }

    #[test]
    fn encode_into_a_small_buffer_says_how_much_is_needed() {
        let needed = encode(&sample()).len();
        for cap in 0..needed {
            let mut buf = std::vec![0u8; cap];
            assert_eq!(
                encode_report(&sample(), &mut buf),
                Err(EncodeError::BufferTooSmall {
                    required: MAX_FRAME_LEN
                }),
                "capacity {cap}"
            );
        }
    }

    #[test]
    fn frame_has_one_delimiter_at_the_end() {
        let frame = encode(&largest());
        assert_eq!(frame.iter().filter(|&&b| b == 0).count(), 1);
        assert_eq!(frame.last(), Some(&0));
    }

    #[test]
    fn every_truncation_of_a_frame_is_dropped() {
        let frame = encode(&sample());
        let body = &frame[..frame.len() - 1];
        for cut in 1..body.len() {
            let mut wire = body[..cut].to_vec();
            wire.push(0);
            let (reports, stats) = decode_all(&wire);
            assert!(reports.is_empty(), "truncated to {cut} bytes decoded");
            assert_eq!(stats.dropped(), 1, "truncated to {cut} bytes not counted");
        }
    }

    #[test]
    fn every_single_bit_flip_of_a_frame_is_detected_and_the_decoder_resynchronises() {
        let frame = encode(&sample());
        for bit in 0..frame.len() * 8 {
            let mut corrupt = frame.clone();
            corrupt[bit / 8] ^= 1 << (bit % 8);
            // A flipped delimiter joins the frame to whatever follows; the lone delimiter after
            // it ends that joined frame so that the next good frame starts clean.
            let mut wire = corrupt;
            wire.push(0);
            let mut decoder = FrameDecoder::new();
            let mut reports = std::vec::Vec::new();
            decoder.feed(&wire, |r| reports.push(r));
            assert!(reports.is_empty(), "bit {bit}: corrupt frame decoded");
            assert!(decoder.stats().dropped() >= 1, "bit {bit}: not counted");
            decoder.feed(&frame, |r| reports.push(r));
            assert_eq!(reports, [sample()], "bit {bit}: no resync");
        }
    }

    #[test]
    fn every_byte_value_at_every_position_is_detected() {
        let frame = encode(&sample());
        for pos in 0..frame.len() - 1 {
            for value in 1..=255u8 {
                if value == frame[pos] {
                    continue;
                }
                let mut corrupt = frame.clone();
                corrupt[pos] = value;
                let (reports, stats) = decode_all(&corrupt);
                assert!(reports.is_empty(), "byte {pos} = {value:#04x} decoded");
                assert_eq!(stats.dropped(), 1);
            }
        }
    }

    #[test]
    fn crc_mismatch_is_counted_as_crc() {
        let mut frame = encode(&sample());
        // Byte 3 is a plain body byte (serial), not a COBS code byte.
        frame[3] ^= 0x01;
        let (reports, stats) = decode_all(&frame);
        assert!(reports.is_empty());
        assert_eq!(stats.crc, 1);
    }

    /// Builds a frame with any version, kind and body, as a future or broken sender would.
    fn raw_frame(version: u8, kind: u8, body: &[u8]) -> std::vec::Vec<u8> {
        let mut plain = std::vec![version, kind];
        plain.extend_from_slice(body);
        plain.extend_from_slice(&CRC.checksum(&plain).to_le_bytes());
        let mut wire = std::vec![0u8; plain.len() + plain.len() / 254 + 2];
        let len = cobs::encode(&plain, &mut wire);
        wire.truncate(len);
        wire.push(0);
        wire
    }

    #[test]
    fn unknown_version_and_kind_are_counted_and_dropped() {
        let body = postcard::to_allocvec(&sample()).unwrap();
        let mut wire = raw_frame(2, 1, &body);
        wire.extend(raw_frame(PROTOCOL_VERSION, 9, &body));
        wire.extend(raw_frame(PROTOCOL_VERSION, 1, &body[..body.len() - 3]));
        let mut decoder = FrameDecoder::new();
        let mut outcomes = std::vec::Vec::new();
        decoder.feed_frames(&wire, |o| outcomes.push(o));
        assert_eq!(
            outcomes,
            [
                Err(FrameError::UnknownVersion { version: 2 }),
                Err(FrameError::UnknownKind { kind: 9 }),
                Err(FrameError::Malformed),
            ]
        );
        let stats = decoder.stats();
        assert_eq!(
            (stats.unknown_version, stats.unknown_kind, stats.malformed),
            (1, 1, 1)
        );
    }

    #[test]
    fn fields_appended_by_a_newer_sender_are_ignored() {
        let mut body = postcard::to_allocvec(&sample()).unwrap();
        body.extend_from_slice(&[0x2A, 0x07]);
        let (reports, stats) = decode_all(&raw_frame(PROTOCOL_VERSION, 1, &body));
        assert_eq!(reports, [sample()]);
        assert_eq!(stats.good, 1);
    }

    #[test]
    fn too_many_cells_in_a_body_is_malformed() {
        let mut body = postcard::to_allocvec(&largest()).unwrap();
        // Cell count byte sits after serial (5), model (1), capacity (3), firmware (3).
        assert_eq!(body[12], MAX_CELLS_PER_BATTERY as u8);
        body[12] = MAX_CELLS_PER_BATTERY as u8 + 1;
        let (reports, stats) = decode_all(&raw_frame(PROTOCOL_VERSION, 1, &body));
        assert!(reports.is_empty());
        assert_eq!(stats.malformed, 1);
    }

    #[test]
    fn oversize_frame_is_counted_once_then_the_next_frame_decodes() {
        let mut wire = std::vec![0x55u8; 3 * MAX_FRAME_LEN];
        wire.push(0);
        wire.extend(encode(&sample()));
        let (reports, stats) = decode_all(&wire);
        assert_eq!(reports, [sample()]);
        assert_eq!(stats.oversize, 1);
        assert_eq!(stats.dropped(), 1);
    }

    #[test]
    fn empty_frames_are_skipped_uncounted() {
        let mut wire = std::vec![0, 0, 0];
        wire.extend(encode(&sample()));
        wire.extend([0, 0]);
        let (reports, stats) = decode_all(&wire);
        assert_eq!(reports, [sample()]);
        assert_eq!(
            stats,
            BusStats {
                good: 1,
                ..BusStats::default()
            }
        );
    }

    #[test]
    fn reset_drops_a_partial_frame() {
        let frame = encode(&sample());
        let mut decoder = FrameDecoder::new();
        let mut reports = std::vec::Vec::new();
        decoder.feed(&frame[..10], |r| reports.push(r));
        decoder.reset();
        decoder.feed(&frame, |r| reports.push(r));
        assert_eq!(reports, [sample()]);
        assert_eq!(decoder.stats().dropped(), 0);
    }

    #[test]
    fn errors_display_in_lowercase() {
        let errors = [
            FrameError::Garbage.to_string(),
            FrameError::Crc.to_string(),
            FrameError::Oversize.to_string(),
            FrameError::UnknownVersion { version: 3 }.to_string(),
            FrameError::UnknownKind { kind: 4 }.to_string(),
            FrameError::Malformed.to_string(),
            EncodeError::BufferTooSmall { required: 88 }.to_string(),
        ];
        for text in errors {
            assert!(text.chars().next().unwrap().is_lowercase(), "{text}");
        }
        assert_eq!(
            FrameError::UnknownVersion { version: 3 }.to_string(),
            "unknown bus protocol version 3"
        );
    }

    proptest! {
        #[test]
        fn round_trip_through_any_chunking(
            reports in proptest::collection::vec(arb_report(), 1..6),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let wire: std::vec::Vec<u8> = reports.iter().flat_map(encode).collect();
            let mut cuts: std::vec::Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
            cuts.sort_unstable();
            let mut decoder = FrameDecoder::new();
            let mut got = std::vec::Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([wire.len()]) {
                decoder.feed(&wire[start..cut], |r| got.push(r));
                start = cut;
            }
            prop_assert_eq!(&got, &reports);
            prop_assert_eq!(decoder.stats(), BusStats { good: reports.len() as u32, ..BusStats::default() });
        }

        #[test]
        fn random_garbage_never_panics_and_the_next_frame_after_a_delimiter_decodes(
            garbage in proptest::collection::vec(any::<u8>(), 0..600),
            report in arb_report(),
        ) {
            let mut decoder = FrameDecoder::new();
            let mut got = std::vec::Vec::new();
            decoder.feed(&garbage, |r| got.push(r));
            let before = got.len();
            // The delimiter ends whatever the garbage left open; the frame after it is clean.
            decoder.feed(&[0], |r| got.push(r));
            decoder.feed(&encode(&report), |r| got.push(r));
            prop_assert_eq!(got.len(), before + 1);
            prop_assert_eq!(got.last(), Some(&report));
        }

        #[test]
        fn decode_frame_never_panics(mut bytes in proptest::collection::vec(1u8..=255, 0..200)) {
            let _ = decode_frame(&mut bytes);
        }
    }
}
