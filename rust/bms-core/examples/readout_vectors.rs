//! Prints Instant Readout advertisements built by `bms_core::readout` as JSON lines, for the
//! conformance test that decodes them with the real Python decoders (tests/conformance).
//!
//! Lines with `"kind":"vector"` seal the inputs of the published reference vectors of the
//! Instant Readout format (the VECTORS table below); lines with `"kind":"state"` give one generated
//! bank state, the advertiser's key, nonce and the complete manufacturer data (company id
//! first). States come from a fixed-seed generator plus hand-picked extremes, so every run
//! prints the same lines. Usage: `cargo run -p bms-core --example readout_vectors [count]`.

use bms_core::readout::{
    seal, Advertiser, Header, Level, ReadoutValues, DEFAULT_PRODUCT_ID, MANUFACTURER_DATA_LEN,
    PAYLOAD_LEN,
};
use std::fmt::Write as _;

/// The published reference vectors: name, key, nonce, prefix byte, product id, record type, plaintext.
const VECTORS: [(&str, &str, u16, u8, u16, u8, &str); 16] = [
    (
        "smartshunt",
        "aff4d0995b7d1e176c0c33ecb9e70dcd",
        0x40B0,
        0x02,
        0xA389,
        0x02,
        "ffffe50400000000030000f40140df",
    ),
    (
        "battery_sense",
        "0da694539597f9cf6c613cde60d7bf05",
        0x155F,
        0x00,
        0xA3A4,
        0x02,
        "ffffc60400007d73feff7fffffffff",
    ),
    (
        "vebus_float",
        "da3f5fa2860cb1cf86ba7a6d1d16b9dd",
        0x5212,
        0x03,
        0x2780,
        0x0C,
        "0500e800a505b305b02000c8ff",
    ),
    (
        "vebus_inverting",
        "da3f5fa2860cb1cf86ba7a6d1d16b9dd",
        0xB2E1,
        0x03,
        0x2780,
        0x0C,
        "0900c5ffdb840000680100c6ff",
    ),
    (
        "solar",
        "adeccb947395801a4dd45a2eaa44bf17",
        0x0762,
        0x02,
        0xA042,
        0x01,
        "04006c050e000300130000fe",
    ),
    (
        "battery_protect",
        "fac570d66380b797a5b7543758be00e4",
        0x2335,
        0x80,
        0xA3B0,
        0x09,
        "f90100000000001b051b0500000000",
    ),
    (
        "orion",
        "64ba49f1a8562e45197a8e1fe50d7658",
        0x1D12,
        0x00,
        0xA3C0,
        0x04,
        "00002305ff7f80000000",
    ),
    (
        "dc_meter",
        "aff4d0995b7d1e176c0c33ecb9e70dcd",
        0x7F78,
        0x02,
        0xA389,
        0x0D,
        "fdffe4040000ffff000000",
    ),
    (
        "ac_charger",
        "c129cf8f75c3fe5a1655b481e205fb7d",
        0x26F9,
        0x00,
        0xA330,
        0x08,
        "0600458500ffffffffffffbdff",
    ),
    (
        "multi_rs",
        "346c410e8c824dd723c0f5b13b9eabc8",
        0xE4F4,
        0x00,
        0xA443,
        0x0B,
        "090080ff33940000d20200001402",
    ),
    (
        "smart_lithium",
        "0102030405060708090a0b0c0d0e0f10",
        0x0010,
        0x02,
        0xA0E5,
        0x05,
        "000000060000c7e3f1f8ffffff2c35b5",
    ),
    (
        "smart_lithium_8",
        "0102030405060708090a0b0c0d0e0f10",
        0x0011,
        0x02,
        0xA0EF,
        0x05,
        "000000060000cce592b95c2e997b1ad0",
    ),
    (
        "lynx",
        "0102030405060708090a0b0c0d0e0f10",
        0x0020,
        0x02,
        0xA3E5,
        0x0A,
        "0040388b0afaff951555148ccf0200ff",
    ),
    (
        "synthetic_bm",
        "0102030405060708090a0b0c0d0e0f10",
        0x0001,
        0x02,
        0xA389,
        0x02,
        "58022f05000077741e3fff9900b0f6",
    ),
    (
        "synthetic_sl",
        "0102030405060708090a0b0c0d0e0f10",
        0x0102,
        0x02,
        0xA0E5,
        0x05,
        "00000006000047a4f1f8ffffff2c15c1",
    ),
    (
        "synthetic_lynx",
        "0102030405060708090a0b0c0d0e0f10",
        0x0203,
        0x02,
        0xA3E5,
        0x0A,
        "00ffff8b0afaff951555148ccf0200bc",
    ),
];

/// xorshift64*: a fixed-seed generator, so the printed states are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// `Some(value)` most of the time, `None` one time in eight.
    fn maybe<T>(&mut self, value: T) -> Option<T> {
        (self.below(8) != 0).then_some(value)
    }

    fn level(&mut self) -> Option<Level> {
        [
            None,
            Some(Level::Ok),
            Some(Level::Warning),
            Some(Level::Alarm),
        ][self.below(4) as usize]
    }

    fn key(&mut self) -> [u8; 16] {
        let mut key = [0u8; 16];
        for byte in &mut key {
            *byte = self.next() as u8;
        }
        key
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex literal"))
        .collect()
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "null".to_string(), |v| v.to_string())
}

fn level(v: Option<Level>) -> &'static str {
    match v {
        None => "null",
        Some(Level::Ok) => "\"ok\"",
        Some(Level::Warning) => "\"warning\"",
        Some(Level::Alarm) => "\"alarm\"",
    }
}

fn values_json(v: &ReadoutValues) -> String {
    format!(
        concat!(
            "{{\"soc_permille\":{},\"bank_mv\":{},\"current_ma\":{},\"time_remaining_min\":{},",
            "\"consumed_mah\":{},\"temp_ddegc\":{},\"error_code\":{},\"allowed_to_charge\":{},",
            "\"allowed_to_discharge\":{},\"low_cell_voltage\":{},\"high_temperature\":{},",
            "\"low_soc\":{},\"battery_communication\":{},\"load_disconnect\":{}}}"
        ),
        opt(v.soc_permille),
        opt(v.bank_mv),
        opt(v.current_ma),
        opt(v.time_remaining_min),
        opt(v.consumed_mah),
        opt(v.temp_ddegc),
        v.error_code,
        opt(v.allowed_to_charge),
        opt(v.allowed_to_discharge),
        level(v.low_cell_voltage),
        level(v.high_temperature),
        level(v.low_soc),
        level(v.battery_communication),
        level(v.load_disconnect),
    )
}

/// A plausible random bank state: 12/24/48 V banks, currents up to ±2000 A, -45..90 °C.
fn random_state(rng: &mut Rng) -> ReadoutValues {
    let nominal_mv = [12_800, 25_600, 51_200][rng.below(3) as usize];
    let soc = rng.below(1001) as u16;
    let mv = (nominal_mv * 3 / 4 + rng.below(nominal_mv / 2)) as u32;
    let ma = rng.range(-2_000_000, 2_000_000) as i32;
    let ttg = rng.below(70_000) as u32;
    let mah = rng.below(20_000_000) as u32;
    let temp = rng.range(-450, 900) as i16;
    let error_code = if rng.below(4) == 0 {
        rng.below(16) as u8
    } else {
        0
    };
    let atc = rng.below(2) == 0;
    let atd = rng.below(2) == 0;
    ReadoutValues {
        soc_permille: rng.maybe(soc),
        bank_mv: rng.maybe(mv),
        current_ma: rng.maybe(ma),
        time_remaining_min: rng.maybe(ttg),
        consumed_mah: rng.maybe(mah),
        temp_ddegc: rng.maybe(temp),
        error_code,
        allowed_to_charge: rng.maybe(atc),
        allowed_to_discharge: rng.maybe(atd),
        low_cell_voltage: rng.level(),
        high_temperature: rng.level(),
        low_soc: rng.level(),
        battery_communication: rng.level(),
        load_disconnect: rng.level(),
    }
}

/// Hand-picked extremes: no data yet, SoC 0 and 100 %, field limits and beyond.
fn extremes() -> Vec<ReadoutValues> {
    let base = ReadoutValues {
        soc_permille: Some(500),
        bank_mv: Some(26_400),
        current_ma: Some(-5_000),
        time_remaining_min: Some(120),
        consumed_mah: Some(50_000),
        temp_ddegc: Some(200),
        error_code: 0,
        allowed_to_charge: Some(true),
        allowed_to_discharge: Some(true),
        low_cell_voltage: Some(Level::Ok),
        high_temperature: Some(Level::Ok),
        low_soc: Some(Level::Ok),
        battery_communication: Some(Level::Ok),
        load_disconnect: Some(Level::Ok),
    };
    let with = |f: &dyn Fn(&mut ReadoutValues)| {
        let mut v = base;
        f(&mut v);
        v
    };
    vec![
        ReadoutValues::NOT_AVAILABLE,
        base,
        with(&|v| v.soc_permille = Some(0)),
        with(&|v| v.soc_permille = Some(1000)),
        with(&|v| v.soc_permille = Some(u16::MAX)),
        with(&|v| v.current_ma = Some(i32::MIN)),
        with(&|v| v.current_ma = Some(i32::MAX)),
        with(&|v| v.current_ma = Some(-3_276_800)),
        with(&|v| v.current_ma = Some(3_276_600)),
        with(&|v| v.current_ma = Some(3_276_700)),
        with(&|v| v.current_ma = Some(-50)),
        with(&|v| v.current_ma = Some(49)),
        with(&|v| v.temp_ddegc = Some(-400)),
        with(&|v| v.temp_ddegc = Some(850)),
        with(&|v| v.temp_ddegc = Some(i16::MIN)),
        with(&|v| v.temp_ddegc = Some(i16::MAX)),
        with(&|v| v.temp_ddegc = Some(-5)),
        with(&|v| v.bank_mv = Some(0)),
        with(&|v| v.bank_mv = Some(u32::MAX)),
        with(&|v| v.bank_mv = Some(327_660)),
        with(&|v| v.time_remaining_min = Some(0)),
        with(&|v| v.time_remaining_min = Some(u32::MAX)),
        with(&|v| v.consumed_mah = Some(0)),
        with(&|v| v.consumed_mah = Some(u32::MAX)),
        with(&|v| v.error_code = 255),
        with(&|v| {
            v.allowed_to_charge = Some(false);
            v.allowed_to_discharge = Some(false);
            v.low_cell_voltage = Some(Level::Alarm);
            v.high_temperature = Some(Level::Alarm);
            v.low_soc = Some(Level::Alarm);
            v.battery_communication = Some(Level::Alarm);
            v.load_disconnect = Some(Level::Alarm);
        }),
    ]
}

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .map_or(500, |n| n.parse().expect("count"));
    for (name, key, nonce, prefix, product_id, record_type, plain) in VECTORS {
        let key: [u8; 16] = unhex(key).try_into().expect("16-byte key");
        let header = Header {
            prefix,
            product_id,
            record_type,
        };
        let mut out = [0u8; PAYLOAD_LEN];
        let n = seal(&key, nonce, header, &unhex(plain), &mut out).expect("vector fits");
        println!(
            "{{\"kind\":\"vector\",\"name\":\"{name}\",\"payload\":\"{}\"}}",
            hex(&out[..n])
        );
    }

    let mut rng = Rng(0x0B15_2024_5EED_0001);
    let mut states = extremes();
    for _ in 0..count {
        let state = random_state(&mut rng);
        states.push(state);
        // Every fourth state is sent twice: an unchanged state must re-send the same packet.
        if rng.below(4) == 0 {
            states.push(state);
        }
    }
    // A few advertisers (keys, starting nonces) in turn, one of them starting at the wrap.
    let mut advertisers: Vec<Advertiser> = (0..3)
        .map(|i| {
            let first_nonce = [0xFFF0, 0, rng.below(0x10000) as u16][i];
            Advertiser::new(rng.key(), DEFAULT_PRODUCT_ID, first_nonce)
        })
        .collect();
    for (seq, state) in states.iter().enumerate() {
        let id = seq * advertisers.len() / states.len();
        let adv = &mut advertisers[id];
        // The firmware persists each nonce reservation before advertising with it.
        if let Some(v) = adv.nonce_to_persist() {
            adv.nonce_persisted(v);
        }
        let mut out = [0u8; MANUFACTURER_DATA_LEN];
        let n = adv.manufacturer_data(state, &mut out).expect("buffer fits");
        println!(
            "{{\"kind\":\"state\",\"seq\":{seq},\"advertiser\":{id},\"key\":\"{}\",\"nonce\":{},\"values\":{},\"manufacturer_data\":\"{}\"}}",
            hex(adv.key()),
            adv.nonce(),
            values_json(state),
            hex(&out[..n]),
        );
    }
}
