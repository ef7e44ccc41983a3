//! JBD (Jiabaida; sold as Xiaoxiang, Overkill Solar and inside many drop-in LiFePO4 batteries)
//! UART/RS485 protocol: 9600 bit/s 8N1, one pack per line (no address).
//!
//! Request `DD A5 reg 00 ck_hi ck_lo 77`; response `DD reg status len data… ck_hi ck_lo 77`.
//! The checksum is 0x10000 minus the byte sum of `reg len` (request) or `status len data`
//! (response), big-endian. Registers read: 0x03 basic information (voltage, current, capacity,
//! balancing, version, SoC, switch states, cell and sensor counts, temperatures in 0.1 K),
//! 0x04 cell voltages (mV, big-endian) and 0x05 the pack's name. A sleeping pack ignores the
//! first request and answers the next one (the poller retries).

use heapless::Vec;

use super::{be16, byte, put_at, BadFrame, PackData, Scan, MAX_PACK_CELLS};
use crate::bus::MAX_TEMPS_PER_BATTERY;

/// Start byte of every frame.
pub const START: u8 = 0xDD;
/// End byte of every frame.
pub const END: u8 = 0x77;
/// Second byte of a read request.
pub const READ: u8 = 0xA5;
/// Basic information register.
pub const REG_BASIC: u8 = 0x03;
/// Cell voltages register.
pub const REG_CELLS: u8 = 0x04;
/// Pack name (hardware version) register.
pub const REG_NAME: u8 = 0x05;
/// Length of every read request.
pub const REQUEST_LEN: usize = 7;
/// Start, register, status, length, checksum and end around the data.
pub const OVERHEAD: usize = 7;
/// Longest name kept, bytes.
pub const MAX_NAME_LEN: usize = 32;

/// Bytes of the basic information before the temperatures.
const BASIC_FIXED_LEN: usize = 23;
/// Offset of temperatures in 0.1 K: 0 °C.
const KELVIN_DDEG: i32 = 2731;

/// The basic information (register 0x03).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Basic {
    /// Pack voltage, 10 mV.
    pub voltage_10mv: u16,
    /// Current, 10 mA, positive = charging.
    pub current_10ma: i16,
    /// Remaining capacity, 10 mAh.
    pub remaining_10mah: u16,
    /// Nominal capacity, 10 mAh.
    pub nominal_10mah: u16,
    /// Charge cycles.
    pub cycles: u16,
    /// Balancing cells, bit n = cell n + 1 (cells 1..32).
    pub balance: u32,
    /// Protection flags now active.
    pub protection: u16,
    /// Software version, BCD-like: 0x10 = 1.0.
    pub version: u8,
    /// State of charge, %.
    pub soc_percent: u8,
    /// Switch states: bit 0 charge on, bit 1 discharge on.
    pub fet: u8,
    /// Cells in series.
    pub cells: u8,
    /// Temperature sensors, 0.1 °C (the first [`MAX_TEMPS_PER_BATTERY`] of them).
    pub temps_ddegc: Vec<i16, MAX_TEMPS_PER_BATTERY>,
}

/// One decoded response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Register 0x03.
    Basic(Basic),
    /// Register 0x04: cell voltages, mV.
    Cells(Vec<u16, MAX_PACK_CELLS>),
    /// Register 0x05: the pack's name, bytes as sent.
    Name(Vec<u8, MAX_NAME_LEN>),
}

fn checksum(bytes: &[u8]) -> u16 {
    let sum = bytes
        .iter()
        .fold(0u16, |sum, &b| sum.wrapping_add(u16::from(b)));
    0u16.wrapping_sub(sum)
}

/// Writes the read request for `register` into `out`; returns its length (0 when `out` is
/// shorter than [`REQUEST_LEN`]).
pub fn encode_request(register: u8, out: &mut [u8]) -> usize {
    let [hi, lo] = checksum(&[register, 0]).to_be_bytes();
    let frame = [START, READ, register, 0, hi, lo, END];
    match out.get_mut(..REQUEST_LEN) {
        Some(slot) => {
            slot.copy_from_slice(&frame);
            REQUEST_LEN
        }
        None => 0,
    }
}

/// The register a request asks for, if `frame` is a well-formed read request.
pub fn decode_request(frame: &[u8]) -> Option<u8> {
    match *frame {
        [START, READ, register, 0, hi, lo, END]
            if u16::from_be_bytes([hi, lo]) == checksum(&[register, 0]) =>
        {
            Some(register)
        }
        _ => None,
    }
}

pub(crate) fn scan(buf: &[u8]) -> Scan {
    match buf {
        [] => Scan::NeedMore,
        [first, ..] if *first != START => Scan::Junk,
        [_, _, _, len, ..] => {
            let total = OVERHEAD + usize::from(*len);
            if buf.len() >= total {
                Scan::Frame(total)
            } else {
                Scan::NeedMore
            }
        }
        _ => Scan::NeedMore,
    }
}

/// Decodes one response frame (start to end byte).
pub fn decode(frame: &[u8]) -> Result<Response, BadFrame> {
    let (&[START, register, status, len], rest) =
        frame.split_first_chunk::<4>().ok_or(BadFrame::Framing)?
    else {
        return Err(BadFrame::Framing);
    };
    let len = usize::from(len);
    if rest.len() != len + 3 || rest.last() != Some(&END) {
        return Err(BadFrame::Framing);
    }
    let data = rest.get(..len).ok_or(BadFrame::Framing)?;
    let sent = be16(rest, len);
    let covered = frame.get(2..4 + len).ok_or(BadFrame::Framing)?;
    if checksum(covered) != sent {
        return Err(BadFrame::Checksum);
    }
    if status != 0 {
        return Err(BadFrame::Content);
    }
    match register {
        REG_BASIC => decode_basic(data).map(Response::Basic),
        REG_CELLS => {
            if len % 2 != 0 || len / 2 > MAX_PACK_CELLS {
                return Err(BadFrame::Content);
            }
            let mut cells = Vec::new();
            for pair in data.chunks_exact(2) {
                cells.push(be16(pair, 0)).map_err(|_| BadFrame::Content)?;
            }
            Ok(Response::Cells(cells))
        }
        REG_NAME => {
            let mut name = Vec::new();
            for &b in data.iter().take(MAX_NAME_LEN) {
                let _ = name.push(b);
            }
            Ok(Response::Name(name))
        }
        _ => Err(BadFrame::Unexpected),
    }
}

fn decode_basic(data: &[u8]) -> Result<Basic, BadFrame> {
    if data.len() < BASIC_FIXED_LEN {
        return Err(BadFrame::Content);
    }
    let ntc = usize::from(byte(data, 22));
    if data.len() < BASIC_FIXED_LEN + 2 * ntc {
        return Err(BadFrame::Content);
    }
    let mut temps_ddegc = Vec::new();
    for i in 0..ntc.min(MAX_TEMPS_PER_BATTERY) {
        let kelvin_ddeg = i32::from(be16(data, BASIC_FIXED_LEN + 2 * i));
        let ddegc = i16::try_from(kelvin_ddeg - KELVIN_DDEG).map_err(|_| BadFrame::Content)?;
        let _ = temps_ddegc.push(ddegc);
    }
    Ok(Basic {
        voltage_10mv: be16(data, 0),
        current_10ma: be16(data, 2) as i16,
        remaining_10mah: be16(data, 4),
        nominal_10mah: be16(data, 6),
        cycles: be16(data, 8),
        balance: u32::from(be16(data, 12)) | u32::from(be16(data, 14)) << 16,
        protection: be16(data, 16),
        version: byte(data, 18),
        soc_percent: byte(data, 19),
        fet: byte(data, 20),
        cells: byte(data, 21),
        temps_ddegc,
    })
}

/// Writes a response frame for `register` with `data` into `out`; returns its length (0 when
/// `out` is too short or `data` longer than 255 bytes). What a pack (or the simulator) sends.
pub fn encode_response(register: u8, data: &[u8], out: &mut [u8]) -> usize {
    let Ok(len) = u8::try_from(data.len()) else {
        return 0;
    };
    let total = OVERHEAD + data.len();
    let Some(frame) = out.get_mut(..total) else {
        return 0;
    };
    put_at(frame, 0, &[START, register, 0, len]);
    put_at(frame, 4, data);
    let sum = checksum(frame.get(2..4 + data.len()).unwrap_or(&[]));
    put_at(frame, 4 + data.len(), &sum.to_be_bytes());
    put_at(frame, total - 1, &[END]);
    total
}

/// The data of a basic information response for `pack` (23 bytes and 2 per sensor).
pub fn basic_data(pack: &PackData, out: &mut Vec<u8, 64>) {
    out.clear();
    let cells_mv: u32 = pack.cells_mv.iter().map(|&mv| u32::from(mv)).sum();
    let current_10ma = (pack.current_ma / 10).clamp(i32::from(i16::MIN), i32::from(i16::MAX));
    let nominal_10mah = u16::try_from(pack.capacity_mah / 10).unwrap_or(u16::MAX);
    let soc = u32::from(pack.soc_percent.unwrap_or(0));
    let remaining = u16::try_from(u32::from(nominal_10mah) * soc / 100).unwrap_or(u16::MAX);
    let balance: u16 = if pack.balancing { 1 } else { 0 };
    let fet = u8::from(pack.charge_allowed) | u8::from(pack.discharge_allowed) << 1;
    let version = ((pack.firmware >> 8) as u8) << 4 | (pack.firmware as u8 & 0x0F);
    let words = [
        u16::try_from(cells_mv / 10).unwrap_or(u16::MAX),
        current_10ma as i16 as u16,
        remaining,
        nominal_10mah,
        0,
        0x2C2A, // 2022-01-10: a date is sent, nobody reads it
        balance,
        0,
        0,
    ];
    for word in words {
        let _ = out.extend_from_slice(&word.to_be_bytes());
    }
    let _ = out.extend_from_slice(&[
        version,
        pack.soc_percent.unwrap_or(0),
        fet,
        u8::try_from(pack.cells_mv.len()).unwrap_or(u8::MAX),
        u8::try_from(pack.temps_ddegc.len()).unwrap_or(u8::MAX),
    ]);
    for &t in &pack.temps_ddegc {
        let kelvin = u16::try_from(i32::from(t) + KELVIN_DDEG).unwrap_or(0);
        let _ = out.extend_from_slice(&kelvin.to_be_bytes());
    }
}

/// The data of a cell voltages response for `pack`.
pub fn cells_data(pack: &PackData, out: &mut Vec<u8, 64>) {
    out.clear();
    for &mv in &pack.cells_mv {
        let _ = out.extend_from_slice(&mv.to_be_bytes());
    }
}

/// Takes a basic information response into `pack`.
pub fn apply_basic(basic: &Basic, pack: &mut PackData) {
    pack.current_ma = i32::from(basic.current_10ma) * 10;
    pack.capacity_mah = u32::from(basic.nominal_10mah) * 10;
    pack.soc_percent = Some(basic.soc_percent);
    pack.firmware = u16::from(basic.version >> 4) << 8 | u16::from(basic.version & 0x0F);
    pack.charge_allowed = basic.fet & 0x01 != 0;
    pack.discharge_allowed = basic.fet & 0x02 != 0;
    pack.balancing = basic.balance != 0;
    pack.temps_ddegc = basic.temps_ddegc.clone();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::hex;
    use proptest::prelude::*;

    // Worked examples of the manufacturer's protocol document ("Software Board Universal
    // Protocol", JBD), as transcribed in mahmoudamr1205/Electra_Bike
    // JBD_BMS/Software_Board_Universal_Protocol_V13.md, sections 3.1-3.3.
    #[test]
    fn requests_match_the_jbd_protocol_document() {
        let mut out = [0u8; 8];
        assert_eq!(encode_request(REG_BASIC, &mut out), 7);
        assert_eq!(out[..7], hex("DD A5 03 00 FF FD 77")[..]);
        encode_request(REG_CELLS, &mut out);
        assert_eq!(out[..7], hex("DD A5 04 00 FF FC 77")[..]);
        encode_request(REG_NAME, &mut out);
        assert_eq!(out[..7], hex("DD A5 05 00 FF FB 77")[..]);
        assert_eq!(decode_request(&out[..7]), Some(REG_NAME));
        assert_eq!(encode_request(REG_NAME, &mut [0u8; 6]), 0);
    }

    // Same document, section 3.1. The V13 transcription inserts the three "callback id"
    // bytes AA BB CC before the checksum; the checksum FB FF covers the 27 data bytes without
    // them, exactly as in the document's V4 edition (reproduced byte for byte in
    // jblance/mpp-solar's JBD protocol notes), so the frame here is the V4 one.
    #[test]
    fn basic_info_of_the_protocol_document_decodes_byte_for_byte() {
        let frame = hex(
            "DD 03 00 1B 17 00 00 00 02 D0 03 E8 00 00 20 78 00 00 00 00 00 00 10 48 03 0F 02 0B 76 0B 82 FB FF 77",
        );
        let Response::Basic(b) = decode(&frame).unwrap() else {
            panic!("not basic info");
        };
        assert_eq!(b.voltage_10mv, 0x1700); // 58.88 V
        assert_eq!(b.current_10ma, 0);
        assert_eq!(b.remaining_10mah, 0x02D0); // 7.2 Ah
        assert_eq!(b.nominal_10mah, 0x03E8); // 10 Ah
        assert_eq!(b.cycles, 0);
        assert_eq!(b.balance, 0);
        assert_eq!(b.protection, 0);
        assert_eq!(b.version, 0x10);
        assert_eq!(b.soc_percent, 0x48); // 72 %
        assert_eq!(b.fet, 0x03); // both switches on
        assert_eq!(b.cells, 15);
        assert_eq!(&b.temps_ddegc[..], &[2934 - 2731, 2946 - 2731]); // 20.3 and 21.5 °C
        let mut pack = PackData::default();
        apply_basic(&b, &mut pack);
        assert_eq!(pack.capacity_mah, 10_000);
        assert_eq!(pack.firmware, 0x0100);
        assert!(pack.charge_allowed && pack.discharge_allowed && !pack.balancing);
    }

    // Same document, section 3.2: a 15-cell pack.
    #[test]
    fn cell_voltages_of_the_protocol_document_decode_byte_for_byte() {
        let frame = hex(
            "DD 04 00 1E 0F 66 0F 63 0F 63 0F 64 0F 3E 0F 63 0F 37 0F 5B 0F 65 0F 3B 0F 63 0F 63 0F 3C 0F 66 0F 3D F9 F9 77",
        );
        let Response::Cells(cells) = decode(&frame).unwrap() else {
            panic!("not cells");
        };
        assert_eq!(
            &cells[..],
            &[
                3942, 3939, 3939, 3940, 3902, 3939, 3895, 3931, 3941, 3899, 3939, 3939, 3900, 3942,
                3901
            ]
        );
    }

    // Same document, section 3.3: the name "0123456789".
    #[test]
    fn name_of_the_protocol_document_decodes_byte_for_byte() {
        let frame = hex("DD 05 00 0A 30 31 32 33 34 35 36 37 38 39 FD E9 77");
        assert_eq!(
            decode(&frame).unwrap(),
            Response::Name(Vec::from_slice(b"0123456789").unwrap())
        );
    }

    // A 4-cell 12.8 V pack (LIONTRON LX Smart BMS 12.8 V 100 Ah) read over BLE, whose module
    // relays the UART bytes unchanged: the reply logged in a public gatttool script
    // ("BMS answer: dd03001b0528…fc3977"), found through the code search of this project.
    #[test]
    fn basic_info_of_a_real_4_cell_pack_decodes() {
        let frame = hex(
            "dd 03 00 1b 05 28 00 00 1b b2 2a ef 00 02 29 0a 00 00 00 00 00 00 25 41 03 04 02 0b 74 0b 6b fc 39 77",
        );
        let Response::Basic(b) = decode(&frame).unwrap() else {
            panic!("not basic info");
        };
        assert_eq!(b.voltage_10mv, 1320); // 13.20 V
        assert_eq!(b.nominal_10mah, 10_991); // 109.91 Ah
        assert_eq!(b.cycles, 2);
        assert_eq!(b.soc_percent, 65);
        assert_eq!(b.cells, 4);
        assert_eq!(&b.temps_ddegc[..], &[201, 192]);
    }

    #[test]
    fn a_changed_byte_is_a_bad_frame() {
        let frame = hex("DD 05 00 0A 30 31 32 33 34 35 36 37 38 39 FD E9 77");
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x01;
            if i == 1 {
                // The register byte is outside the checksum: a changed one is another reply,
                // which the poller refuses as not the one it asked for.
                assert!(!matches!(decode(&bad), Ok(Response::Name(_))));
            } else {
                assert!(decode(&bad).is_err(), "byte {i}");
            }
        }
        let mut error_status = hex("DD 05 80 00 FF 80 77");
        assert_eq!(decode(&error_status), Err(BadFrame::Content));
        error_status[2] = 0;
        assert_eq!(decode(&error_status), Err(BadFrame::Checksum));
    }

    fn arb_pack() -> impl Strategy<Value = PackData> {
        (
            proptest::collection::vec(1u16..5000, 1..=MAX_PACK_CELLS),
            proptest::collection::vec(-400i16..1000, 0..=MAX_TEMPS_PER_BATTERY),
            -300_000i32..300_000,
            0u8..=100,
            1u32..600_000,
            any::<(bool, bool, bool)>(),
        )
            .prop_map(|(cells, temps, current, soc, cap, flags)| PackData {
                cells_mv: Vec::from_slice(&cells).unwrap(),
                temps_ddegc: Vec::from_slice(&temps).unwrap(),
                current_ma: current / 10 * 10,
                soc_percent: Some(soc),
                capacity_mah: cap / 10 * 10,
                firmware: 0x0102,
                charge_allowed: flags.0,
                discharge_allowed: flags.1,
                balancing: flags.2,
            })
    }

    proptest! {
        #[test]
        fn responses_round_trip(pack in arb_pack()) {
            let mut data = Vec::new();
            let mut frame = [0u8; 80];
            basic_data(&pack, &mut data);
            let len = encode_response(REG_BASIC, &data, &mut frame);
            let Ok(Response::Basic(basic)) = decode(&frame[..len]) else { panic!("basic") };
            let mut got = PackData::default();
            apply_basic(&basic, &mut got);
            cells_data(&pack, &mut data);
            let len = encode_response(REG_CELLS, &data, &mut frame);
            let Ok(Response::Cells(cells)) = decode(&frame[..len]) else { panic!("cells") };
            got.cells_mv = cells;
            prop_assert_eq!(got, pack);
        }

        #[test]
        fn any_bytes_decode_to_a_frame_or_bad_frame(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode(&bytes);
            let _ = decode_request(&bytes);
        }
    }
}
