//! JK-PB series (JK-PB2A8S20P … JK-PB2A16S20P, firmware 14 and later) on its RS485 port with
//! protocol 001 "JK BMS RS485 Modbus V1.0", address 1..15 set by the DIP switches, 115200 bit/s
//! (protocol 013 is the same at 9600 bit/s).
//!
//! The host writes 0x0000 to register 0x1620 with Modbus function 0x10 (CRC-16/Modbus), as
//! JK's own PC monitor does; the addressed pack answers with its 300-byte status frame
//! `55 AA EB 90 02 counter data… sum` and then the Modbus echo of the write (address, 0x10,
//! register, count, CRC). The status frame carries no address, so a frame counts only when
//! the echo from the polled address follows it. The data area is the pack's Modbus register
//! block 0x1200 in its memory order (little-endian): cell voltages at 0x00, present cells at
//! 0x40, current at 0x98, temperatures at 0x9C/0x9E, balancing and SoC at 0xA6/0xA7, full
//! charge capacity at 0xAC, charge/discharge switches at 0xC0/0xC1.

use heapless::Vec;

use super::{byte, le16, le32, put_at, BadFrame, PackData, Scan, MAX_PACK_CELLS};
use crate::bus::MAX_TEMPS_PER_BATTERY;

/// The Modbus CRC of the trigger request and its echo (CRC-16/Modbus, sent low byte first).
pub const MODBUS_CRC: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_MODBUS);

/// Modbus function: write multiple registers.
pub const WRITE_MULTIPLE: u8 = 0x10;
/// The register whose write triggers the status frame.
pub const STATUS_TRIGGER: u16 = 0x1620;
/// Length of the trigger request.
pub const REQUEST_LEN: usize = 11;
/// Length of the Modbus echo after the status frame.
pub const ECHO_LEN: usize = 8;
/// Length of a status frame, checksum included.
pub const STATUS_FRAME_LEN: usize = 300;
/// First bytes of a status frame.
pub const HEADER: [u8; 4] = [0x55, 0xAA, 0xEB, 0x90];
/// Record type of the status (cell information) frame.
pub const RECORD_STATUS: u8 = 0x02;

const DATA: usize = 6;
const CELL_PRESENT: usize = 0x40;
const CURRENT: usize = 0x98;
const TEMP_1: usize = 0x9C;
const TEMP_2: usize = 0x9E;
const BALANCE_STATE: usize = 0xA6;
const SOC: usize = 0xA7;
const FULL_CHARGE_CAP: usize = 0xAC;
const CHARGE_ON: usize = 0xC0;
const DISCHARGE_ON: usize = 0xC1;

/// One frame a JK pack sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A status frame, decoded.
    Status(PackData),
    /// The echo of a trigger write from the pack at this address.
    Echo {
        /// The pack's address.
        address: u8,
    },
}

/// Writes the trigger request for the pack at `address`; returns its length (0 when `out` is
/// shorter than [`REQUEST_LEN`]).
pub fn encode_request(address: u8, out: &mut [u8]) -> usize {
    let [reg_hi, reg_lo] = STATUS_TRIGGER.to_be_bytes();
    let body = [address, WRITE_MULTIPLE, reg_hi, reg_lo, 0, 1, 2, 0, 0];
    let [crc_lo, crc_hi] = MODBUS_CRC.checksum(&body).to_le_bytes();
    let Some(slot) = out.get_mut(..REQUEST_LEN) else {
        return 0;
    };
    put_at(slot, 0, &body);
    put_at(slot, 9, &[crc_lo, crc_hi]);
    REQUEST_LEN
}

/// The address a trigger request is for, if `frame` is one.
pub fn decode_request(frame: &[u8]) -> Option<u8> {
    let (body, crc) = frame.split_at_checked(REQUEST_LEN - 2)?;
    let [reg_hi, reg_lo] = STATUS_TRIGGER.to_be_bytes();
    match *body {
        [address, WRITE_MULTIPLE, hi, lo, 0, 1, 2, 0, 0]
            if hi == reg_hi && lo == reg_lo && crc == MODBUS_CRC.checksum(body).to_le_bytes() =>
        {
            Some(address)
        }
        _ => None,
    }
}

pub(crate) fn scan(buf: &[u8]) -> Scan {
    let Some(&first) = buf.first() else {
        return Scan::NeedMore;
    };
    if first == HEADER[0] {
        let head = buf.len().min(HEADER.len());
        if buf.get(..head) != HEADER.get(..head) {
            return Scan::Junk;
        }
        return if buf.len() >= STATUS_FRAME_LEN {
            Scan::Frame(STATUS_FRAME_LEN)
        } else {
            Scan::NeedMore
        };
    }
    if !(1..=247).contains(&first) {
        return Scan::Junk;
    }
    match buf.get(1) {
        None => Scan::NeedMore,
        Some(&WRITE_MULTIPLE) if buf.len() >= ECHO_LEN => Scan::Frame(ECHO_LEN),
        Some(&WRITE_MULTIPLE) => Scan::NeedMore,
        Some(_) => Scan::Junk,
    }
}

/// Decodes one frame: a status frame or a Modbus echo.
pub fn decode(frame: &[u8]) -> Result<Frame, BadFrame> {
    if frame.len() == ECHO_LEN {
        let (body, crc) = frame.split_at(ECHO_LEN - 2);
        if crc != MODBUS_CRC.checksum(body).to_le_bytes() {
            return Err(BadFrame::Checksum);
        }
        let [reg_hi, reg_lo] = STATUS_TRIGGER.to_be_bytes();
        return match *body {
            [address, WRITE_MULTIPLE, hi, lo, 0, 1] if hi == reg_hi && lo == reg_lo => {
                Ok(Frame::Echo { address })
            }
            _ => Err(BadFrame::Unexpected),
        };
    }
    if frame.len() != STATUS_FRAME_LEN || frame.get(..4) != Some(&HEADER[..]) {
        return Err(BadFrame::Framing);
    }
    let (body, sum) = frame.split_at(STATUS_FRAME_LEN - 1);
    let computed = body.iter().fold(0u8, |s, &b| s.wrapping_add(b));
    if sum != [computed] {
        return Err(BadFrame::Checksum);
    }
    if byte(frame, 4) != RECORD_STATUS {
        return Err(BadFrame::Unexpected);
    }
    let data = frame.get(DATA..).ok_or(BadFrame::Framing)?;
    decode_status(data).map(Frame::Status)
}

fn decode_status(data: &[u8]) -> Result<PackData, BadFrame> {
    let present = le32(data, CELL_PRESENT);
    // Cells are present from the first on: a gap is a damaged frame, not a pack.
    let cells = present.trailing_ones() as usize;
    if present.checked_shr(cells as u32).unwrap_or(0) != 0 || cells == 0 {
        return Err(BadFrame::Content);
    }
    let mut pack = PackData::default();
    for i in 0..cells.min(MAX_PACK_CELLS) {
        pack.cells_mv
            .push(le16(data, 2 * i))
            .map_err(|_| BadFrame::Content)?;
    }
    for at in [TEMP_1, TEMP_2].into_iter().take(MAX_TEMPS_PER_BATTERY) {
        let _ = pack.temps_ddegc.push(le16(data, at) as i16);
    }
    pack.current_ma = le32(data, CURRENT) as i32;
    let soc = byte(data, SOC);
    if soc > 100 {
        return Err(BadFrame::Content);
    }
    pack.soc_percent = Some(soc);
    pack.capacity_mah = le32(data, FULL_CHARGE_CAP);
    pack.charge_allowed = byte(data, CHARGE_ON) != 0;
    pack.discharge_allowed = byte(data, DISCHARGE_ON) != 0;
    pack.balancing = byte(data, BALANCE_STATE) != 0;
    Ok(pack)
}

/// Writes a status frame for `pack` (frame counter `counter`); what a pack or the simulator
/// sends. Returns the length (0 when `out` is shorter than [`STATUS_FRAME_LEN`]).
pub fn encode_status(pack: &PackData, counter: u8, out: &mut [u8]) -> usize {
    let Some(frame) = out.get_mut(..STATUS_FRAME_LEN) else {
        return 0;
    };
    frame.fill(0);
    put_at(frame, 0, &HEADER);
    put_at(frame, 4, &[RECORD_STATUS, counter]);
    let mut put = |at: usize, bytes: &[u8]| put_at(frame, DATA + at, bytes);
    let mut present: u32 = 0;
    let mut total_mv: u32 = 0;
    for (i, &mv) in pack.cells_mv.iter().enumerate().take(MAX_PACK_CELLS) {
        put(2 * i, &mv.to_le_bytes());
        present |= 1 << i;
        total_mv += u32::from(mv);
    }
    put(CELL_PRESENT, &present.to_le_bytes());
    put(0x90, &total_mv.to_le_bytes());
    put(CURRENT, &pack.current_ma.to_le_bytes());
    let temps = [TEMP_1, TEMP_2];
    for (at, &t) in temps.iter().zip(pack.temps_ddegc.iter()) {
        put(*at, &t.to_le_bytes());
    }
    put(BALANCE_STATE, &[u8::from(pack.balancing)]);
    put(SOC, &[pack.soc_percent.unwrap_or(0).min(100)]);
    let remaining = pack.capacity_mah / 100 * u32::from(pack.soc_percent.unwrap_or(0));
    put(0xA8, &remaining.to_le_bytes());
    put(FULL_CHARGE_CAP, &pack.capacity_mah.to_le_bytes());
    put(0xB8, &[100]);
    put(CHARGE_ON, &[u8::from(pack.charge_allowed)]);
    put(DISCHARGE_ON, &[u8::from(pack.discharge_allowed)]);
    let sum = frame
        .get(..STATUS_FRAME_LEN - 1)
        .unwrap_or(&[])
        .iter()
        .fold(0u8, |s, &b| s.wrapping_add(b));
    put_at(frame, STATUS_FRAME_LEN - 1, &[sum]);
    STATUS_FRAME_LEN
}

/// Writes the Modbus echo of a trigger write from the pack at `address`.
pub fn encode_echo(address: u8, out: &mut [u8]) -> usize {
    let [hi, lo] = STATUS_TRIGGER.to_be_bytes();
    let body = [address, WRITE_MULTIPLE, hi, lo, 0, 1];
    let [crc_lo, crc_hi] = MODBUS_CRC.checksum(&body).to_le_bytes();
    let Some(slot) = out.get_mut(..ECHO_LEN) else {
        return 0;
    };
    put_at(slot, 0, &body);
    put_at(slot, 6, &[crc_lo, crc_hi]);
    ECHO_LEN
}

/// How many temperatures a status frame carries (two cell sensors).
pub const TEMPS: usize = 2;

/// Makes `pack`'s temperatures fit what a status frame carries (for round trips and the
/// simulator): exactly [`TEMPS`] sensors.
pub fn fit_temps(pack: &mut PackData) {
    let first = pack.temps_ddegc.first().copied().unwrap_or(250);
    let mut temps: Vec<i16, MAX_TEMPS_PER_BATTERY> = Vec::new();
    for i in 0..TEMPS {
        let _ = temps.push(pack.temps_ddegc.get(i).copied().unwrap_or(first));
    }
    pack.temps_ddegc = temps;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::hex;
    use proptest::prelude::*;

    // The trigger JK's PC monitor sends, used by Louisvdw/dbus-serialbattery
    // etc/dbus-serialbattery/bms/jkbms_pb.py (`command_status`).
    #[test]
    fn trigger_request_matches_dbus_serialbattery() {
        let mut out = [0u8; 16];
        assert_eq!(encode_request(1, &mut out), REQUEST_LEN);
        assert_eq!(out[..11], hex("01 10 16 20 00 01 02 00 00 D6 F1")[..]);
        assert_eq!(decode_request(&out[..11]), Some(1));
        assert_eq!(encode_request(1, &mut [0u8; 10]), 0);
    }

    // A 16-cell JK-PB on an RS485 bus with 314 Ah cells, captured with a sniffer and published
    // in the notes "Multiple JK-BMS Modbus RJ485 integration" of the picoides-monitor JK-BMS
    // Home Assistant integration (gitlab.stn.pl/picoides-monitor/bms/jk-bms): slave 01's answer
    // to the trigger of the pack at address 0 (the bus master), then its Modbus echo; also the
    // master's requests to addresses 2..15 and its own status frame (below).
    const CAPTURED_STATUS: &str = "55 AA EB 90 02 05 C4 0C C4 0C C4 0C C4 0C C4 0C C4 0C C4 0C C3 0C C4 0C C4 0C C4 0C C4 0C C4 0C C4 0C C4 0C C4 0C 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 FF FF 00 00 C4 0C 01 00 00 05 3A 00 37 00 3A 00 37 00 3A 00 38 00 3A 00 37 00 3B 00 39 00 3B 00 38 00 3B 00 3A 00 3C 00 3A 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 AE 00 00 00 00 00 3F CC 00 00 00 00 00 00 00 00 00 00 A7 00 AC 00 00 00 08 00 00 00 00 40 CA 14 03 00 90 CA 04 00 00 00 00 00 16 02 00 00 64 00 00 00 A8 FF 03 00 01 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 FF 00 01 00 00 00 A8 03 00 00 00 00 9C D7 3E 40 00 00 00 00 6C 14 00 00 00 01 01 01 00 06 00 00 F4 6B 26 00 00 00 00 00 AE 00 AB 00 A9 00 A4 03 80 B8 1F 09 03 00 00 00 80 51 01 00 00 00 01 00 49 6D 00 00 00 00 00 00 00 FE FF 7F DC 2F 01 01 B0 0F 00 00 00 2D";

    #[test]
    fn captured_status_frame_decodes_byte_for_byte() {
        let frame = hex(CAPTURED_STATUS);
        assert_eq!(frame.len(), STATUS_FRAME_LEN);
        let Frame::Status(pack) = decode(&frame).unwrap() else {
            panic!("not a status frame");
        };
        let mut cells = [3268u16; 16];
        cells[7] = 3267;
        assert_eq!(&pack.cells_mv[..], &cells);
        assert_eq!(&pack.temps_ddegc[..], &[167, 172]); // 16.7 and 17.2 °C
        assert_eq!(pack.current_ma, 0);
        assert_eq!(pack.soc_percent, Some(64));
        assert_eq!(pack.capacity_mah, 314_000);
        assert!(pack.charge_allowed && pack.discharge_allowed && !pack.balancing);
        let report = pack.to_report(1).unwrap();
        assert_eq!(report.model, crate::bus::BatteryModel::Lfp51V2);
        assert_eq!(report.capacity_dah, 3140);
    }

    // The same capture: the master pack's own status frame, broadcast before it polls.
    const CAPTURED_MASTER_STATUS: &str = "55 AA EB 90 02 00 C7 0C C7 0C C7 0C C7 0C C7 0C C7 0C C7 0C C7 0C C7 0C C7 0C C8 0C C7 0C C8 0C C7 0C C8 0C C8 0C 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 FF FF 00 00 C7 0C 01 00 00 01 3E 00 3B 00 3D 00 3B 00 3E 00 3B 00 3D 00 3B 00 3E 00 3C 00 3E 00 3C 00 3E 00 3D 00 3F 00 3D 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 BD 00 00 00 00 00 70 CC 00 00 00 00 00 00 00 00 00 00 A9 00 AD 00 00 00 08 00 00 00 00 41 6B 18 03 00 90 CA 04 00 00 00 00 00 FB 01 00 00 64 00 00 00 D8 FF 03 00 01 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 FF 00 01 00 00 00 AF 03 00 00 00 00 5E 48 3F 40 00 00 00 00 71 14 00 00 00 01 01 01 00 06 00 00 72 70 26 00 00 00 00 00 BD 00 AE 00 A8 00 AB 03 7F B8 1F 09 05 00 00 00 80 51 01 00 00 00 02 03 A5 67 00 00 00 00 00 00 00 FE FF 7F DC 2F 01 01 B0 0F 00 00 00 C5";

    #[test]
    fn captured_master_status_frame_decodes_byte_for_byte() {
        let Frame::Status(pack) = decode(&hex(CAPTURED_MASTER_STATUS)).unwrap() else {
            panic!("not a status frame");
        };
        // C7 0C = 3271 mV; cells 11, 13, 15 and 16 are C8 0C = 3272 mV.
        let mut cells = [3271u16; 16];
        for i in [10, 12, 14, 15] {
            cells[i] = 3272;
        }
        assert_eq!(&pack.cells_mv[..], &cells);
        assert_eq!(&pack.temps_ddegc[..], &[169, 173]); // A9 00, AD 00: 16.9 and 17.3 °C
        assert_eq!(pack.current_ma, 0);
        assert_eq!(pack.soc_percent, Some(65)); // 0x41
        assert_eq!(pack.capacity_mah, 314_000); // 90 CA 04 00
        assert!(pack.charge_allowed && pack.discharge_allowed && !pack.balancing);
    }

    #[test]
    fn captured_echo_and_requests_decode() {
        assert_eq!(
            decode(&hex("01 10 16 20 00 01 04 4B")),
            Ok(Frame::Echo { address: 1 })
        );
        let captured = [
            "02 10 16 20 00 01 02 00 00 C2 01",
            "03 10 16 20 00 01 02 00 00 CF 91",
            "0F 10 16 20 00 01 02 00 00 9A 91",
        ];
        for (line, address) in captured.iter().zip([2u8, 3, 15]) {
            let mut out = [0u8; REQUEST_LEN];
            encode_request(address, &mut out);
            assert_eq!(out[..], hex(line)[..], "address {address}");
        }
    }

    #[test]
    fn a_changed_byte_of_the_captured_frame_is_a_bad_frame() {
        let frame = hex(CAPTURED_STATUS);
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] = bad[i].wrapping_add(1);
            assert!(decode(&bad).is_err(), "byte {i}");
        }
    }

    fn arb_pack() -> impl Strategy<Value = PackData> {
        (
            proptest::collection::vec(any::<u16>(), 1..=MAX_PACK_CELLS),
            any::<[i16; 2]>(),
            any::<i32>(),
            0u8..=100,
            any::<u32>(),
            any::<(bool, bool, bool)>(),
        )
            .prop_map(|(cells, temps, current, soc, cap, flags)| PackData {
                cells_mv: Vec::from_slice(&cells).unwrap(),
                temps_ddegc: Vec::from_slice(&temps).unwrap(),
                current_ma: current,
                soc_percent: Some(soc),
                capacity_mah: cap,
                firmware: 0,
                charge_allowed: flags.0,
                discharge_allowed: flags.1,
                balancing: flags.2,
            })
    }

    proptest! {
        #[test]
        fn status_frames_round_trip(pack in arb_pack(), counter in any::<u8>(), address in 1u8..=15) {
            let mut frame = [0u8; STATUS_FRAME_LEN];
            encode_status(&pack, counter, &mut frame);
            prop_assert_eq!(decode(&frame), Ok(Frame::Status(pack)));
            let mut echo = [0u8; ECHO_LEN];
            encode_echo(address, &mut echo);
            prop_assert_eq!(decode(&echo), Ok(Frame::Echo { address }));
        }

        #[test]
        fn any_bytes_decode_to_a_frame_or_bad_frame(bytes in proptest::collection::vec(any::<u8>(), 0..320)) {
            let _ = decode(&bytes);
            let _ = decode_request(&bytes);
        }
    }
}
