//! Victron Instant Readout (BLE-3): the bank state as an encrypted BLE advertisement in the
//! published "extra manufacturer data" format, record type 0x0A ((Lynx Smart) BMS, the record
//! the NG BMS family uses), so that existing decoders (VictronConnect, Venus OS, Home Assistant,
//! `victron-ble`, ESPHome) read it.
//!
//! In: [`ReadoutValues`] (plain values in core units, `None` = not available), the device's
//! 128-bit advertisement key and product id. Out: the manufacturer payload bytes for the
//! advertising data, and the nonce value the storage layer must persist.
//!
//! Layout of the manufacturer data (what Zephyr's `BT_DATA_MANUFACTURER_DATA` carries):
//!
//! ```text
//! E1 02 | 10 | 02 | pid_lo pid_hi | 0A | nonce_lo nonce_hi | key[0] | 16 bytes AES-128-CTR
//! company  prod.  "prefix" product id  record  nonce (counter      key     ciphertext of the
//! 0x02E1   adv.   byte                 type    block seed)        check   bit-packed record
//! ```
//!
//! The record fields are packed LSB first (see [`BmsRecord`]). Every value is clamped into its
//! field's range so that a present value never encodes as the field's "not available" pattern.
//!
//! Decoder quirk, documented rather than hidden: `victron-ble` (and Home Assistant through it)
//! compares the 10-bit SoC field against 0x3FFF, so the spec's "not available" SoC (0x3FF) shows
//! there as 102.3 %. No 10-bit value decodes as "none" in that library; sending 0 % or 100 %
//! instead would be a lie a user or an automation could act on, so SoC unknown is sent as the
//! spec's 0x3FF, which Venus OS and ESPHome read correctly.

use aes::Aes128;
use core::fmt;
use ctr::cipher::{KeyIvInit, StreamCipher};

use crate::word::Number;

/// Bluetooth SIG company identifier of Victron Energy BV, sent little-endian before the payload.
pub const COMPANY_ID: u16 = 0x02E1;

/// First payload byte: "Product Advertisement", the only manufacturer-data record decoders read.
pub const PRODUCT_ADVERTISEMENT: u8 = 0x10;

/// Second payload byte. Undocumented and checked by no decoder; 0x02 is what SmartShunts and
/// the reference Lynx vectors send.
pub const PREFIX_BYTE: u8 = 0x02;

/// Record type 0x0A, "(Lynx Smart) BMS", decoded by Venus OS for any product id.
pub const RECORD_TYPE_BMS: u8 = 0x0A;

/// Default product id: 0xA3EC, listed as "smallBMS" in the decoders' product tables, the product
/// class this firmware implements. The firmware overrides it from its build configuration; an
/// unknown id only changes the model name a decoder displays.
pub const DEFAULT_PRODUCT_ID: u16 = 0xA3EC;

/// Bytes of the bit-packed record (plaintext and ciphertext): 127 used bits, one unused.
pub const RECORD_LEN: usize = 16;

/// Bytes before the ciphertext: prefix (2), product id (2), record type, nonce (2), key check.
pub const HEADER_LEN: usize = 8;

/// Bytes of the manufacturer payload after the company id (`HEADER_LEN + RECORD_LEN`).
pub const PAYLOAD_LEN: usize = HEADER_LEN + RECORD_LEN;

/// Bytes of the manufacturer data including the company id: 26, which with the AD length and
/// type bytes (2) and the Flags AD (3) fills the 31-byte legacy advertising packet exactly.
pub const MANUFACTURER_DATA_LEN: usize = 2 + PAYLOAD_LEN;

/// How many nonces one persisted reservation covers at most (a run's first covers
/// [`NONCE_FIRST_BLOCK`]). A new reservation is asked for when half of the one in force is
/// used, so a reboot skips at most this many nonces and, once a run has reached it, the flash
/// is written once every `NONCE_BLOCK / 2` payload changes.
pub const NONCE_BLOCK: u16 = 4096;

/// How many nonces one key may spend (65 536 − 2 × [`NONCE_BLOCK`] = 57 344): then it is worn
/// ([`Advertiser::key_worn`], [`ReadoutError::KeyWorn`]) and needs a new key before another
/// payload changes. The 16-bit counter would come round to the key's first nonce after 65 536;
/// a restart skips up to a block and a reservation reaches up to a block ahead of the counter,
/// so two blocks to spare keep both short of it.
pub const NONCES_PER_KEY: u16 = 0u16.wrapping_sub(2 * NONCE_BLOCK);

/// The first reservation of a run, in nonces: each confirmed reservation asks for twice as many
/// the next time, up to [`NONCE_BLOCK`]. A start skips what the reservation before it left
/// unused, so runs that end early (a restart loop) skip a few nonces each, not a block.
pub const NONCE_FIRST_BLOCK: u16 = 64;

/// Errors of the readout encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadoutError {
    /// The output buffer is shorter than the payload; nothing was written or changed.
    BufferTooSmall {
        /// Bytes the buffer must hold.
        required: usize,
    },
    /// A record to seal is longer than the 16 bytes the format (and every decoder) allows.
    RecordTooLong {
        /// Length of the record given, in bytes.
        len: usize,
    },
    /// No nonce is reserved for new values (none stored yet, or the reservation could not be
    /// written): persist [`Advertiser::nonce_to_persist`] and confirm it first. The platform
    /// then advertises no readout ("not available") rather than stale values.
    NotReserved,
    /// The device has no key of its own (no random source at the first start, or a secrets
    /// fault): nothing is advertised rather than a placeholder key.
    NoKey,
    /// The key has spent its [`NONCES_PER_KEY`] nonces: new values would need a nonce the
    /// 16-bit counter already gave under it (a repeated keystream). Nothing is advertised for
    /// them (as with [`ReadoutError::NotReserved`], never the stale packet) until a new key.
    KeyWorn,
}

impl fmt::Display for ReadoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadoutError::BufferTooSmall { required } => {
                write!(
                    f,
                    "buffer too small: {} bytes required",
                    Number::from(*required)
                )
            }
            ReadoutError::RecordTooLong { len } => {
                write!(
                    f,
                    "record of {} bytes is longer than {}",
                    Number::from(*len),
                    Number::from(RECORD_LEN)
                )
            }
            ReadoutError::NotReserved => f.write_str("no advertisement nonce reserved"),
            ReadoutError::NoKey => f.write_str("no advertisement key"),
            ReadoutError::KeyWorn => {
                f.write_str("advertisement key worn: its nonces are used up, a new key is needed")
            }
        }
    }
}

/// State of one warning/alarm indicator of the record (a 2-bit field: 1 ok, 2 warning, 3 alarm;
/// 0 means not available and is what `None` encodes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Monitored, and nothing is wrong.
    Ok,
    /// The warning level is reached (e.g. the pre-alarm is active).
    Warning,
    /// The alarm level is reached: a protection is acting.
    Alarm,
}

impl Level {
    const fn raw(level: Option<Level>) -> u32 {
        match level {
            None => 0,
            Some(Level::Ok) => 1,
            Some(Level::Warning) => 2,
            Some(Level::Alarm) => 3,
        }
    }
}

/// What the readout shows, in core units; `None` = not available (sent as the field's NA
/// pattern). [`crate::Bms`] fills this from its state. Out-of-range values are clamped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadoutValues {
    /// State of charge in 0.1 % (0–1000); `None` while unknown (MON-7).
    pub soc_permille: Option<u16>,
    /// Bank voltage in mV (sent in 10 mV steps, at most 327.66 V).
    pub bank_mv: Option<u32>,
    /// Bank current in mA, positive = charging (sent in 100 mA steps, ±3276.6 A).
    pub current_ma: Option<i32>,
    /// Time remaining in minutes (MON-5; at most 65534 = 45.5 days); `None` while charging,
    /// idle or SoC unknown.
    pub time_remaining_min: Option<u32>,
    /// Charge drawn since the last full charge in mAh, ≥ 0 (sent in 0.1 Ah steps; Victron
    /// displays it as a negative number).
    pub consumed_mah: Option<u32>,
    /// Battery temperature in 0.1 °C (sent in whole degrees, −40 to 86 °C).
    pub temp_ddegc: Option<i16>,
    /// Error code (`VE_REG_BMS_ERROR`): 0 = no error, else the number of the most important
    /// active error ([`crate::codes::Code::number`]).
    pub error_code: u8,
    /// Charging is allowed (ATC high); IO status bits 2–3.
    pub allowed_to_charge: Option<bool>,
    /// Discharging is allowed (ATD high); IO status bits 4–5.
    pub allowed_to_discharge: Option<bool>,
    /// Low cell voltage: warning = pre-alarm level (PROT-3), alarm = under-voltage (PROT-2).
    pub low_cell_voltage: Option<Level>,
    /// High temperature (PROT-6).
    pub high_temperature: Option<Level>,
    /// Low SoC: warning = MON-6 level, alarm = discharge floor (PROT-9).
    pub low_soc: Option<Level>,
    /// "BMS cable": communication with the batteries (BANK-4).
    pub battery_communication: Option<Level>,
    /// Load disconnect: alarm while ATD is free-floating.
    pub load_disconnect: Option<Level>,
}

impl ReadoutValues {
    /// Nothing known yet (before the first battery data): every field not available.
    pub const NOT_AVAILABLE: ReadoutValues = ReadoutValues {
        soc_permille: None,
        bank_mv: None,
        current_ma: None,
        time_remaining_min: None,
        consumed_mah: None,
        temp_ddegc: None,
        error_code: 0,
        allowed_to_charge: None,
        allowed_to_discharge: None,
        low_cell_voltage: None,
        high_temperature: None,
        low_soc: None,
        battery_communication: None,
        load_disconnect: None,
    };
}

impl Default for ReadoutValues {
    fn default() -> Self {
        ReadoutValues::NOT_AVAILABLE
    }
}

/// The raw fields of record 0x0A, in wire units, before bit-packing.
///
/// | bits | width | field | unit | not available |
/// |---|---|---|---|---|
/// | 0 | 8 | error | code | – |
/// | 8 | 16 | time to go | 1 min | 0xFFFF |
/// | 24 | 16 | voltage, signed | 0.01 V | 0x7FFF |
/// | 40 | 16 | current, signed | 0.1 A | 0x7FFF |
/// | 56 | 16 | IO status | 2-bit fields | 0 |
/// | 72 | 18 | warnings/alarms | 2-bit fields | 0 |
/// | 90 | 10 | SoC | 0.1 % | 0x3FF |
/// | 100 | 20 | consumed Ah | 0.1 Ah | 0xFFFFF |
/// | 120 | 7 | temperature | °C + 40 | 0x7F |
/// | 127 | 1 | unused, always 1 | | |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BmsRecord {
    /// Error code, 0 = none.
    pub error: u8,
    /// Time to go in minutes; [`BmsRecord::TTG_NA`] = not available.
    pub ttg_min: u16,
    /// Battery voltage in 0.01 V; [`BmsRecord::I16_NA`] = not available.
    pub voltage_cv: i16,
    /// Battery current in 0.1 A, positive = charging; [`BmsRecord::I16_NA`] = not available.
    pub current_da: i16,
    /// IO status: bits 2–3 allowed to charge, 4–5 allowed to discharge (0 NA, 1 yes, 2 no).
    pub io_status: u16,
    /// Warnings/alarms, 18 bits of 2-bit fields (see [`BmsRecord::WA_LOW_CELL_VOLTAGE`] ...).
    pub warnings_alarms: u32,
    /// SoC in 0.1 % (10 bits); [`BmsRecord::SOC_NA`] = not available.
    pub soc_permille: u16,
    /// Consumed charge in 0.1 Ah (20 bits); [`BmsRecord::CONSUMED_NA`] = not available.
    pub consumed_dah: u32,
    /// Temperature in °C + 40 (7 bits); [`BmsRecord::TEMP_NA`] = not available.
    pub temp_raw: u8,
}

impl BmsRecord {
    /// Time to go "not available".
    pub const TTG_NA: u16 = 0xFFFF;
    /// Voltage and current "not available" (largest positive 16-bit value).
    pub const I16_NA: i16 = 0x7FFF;
    /// SoC "not available" (all ones in 10 bits).
    pub const SOC_NA: u16 = 0x3FF;
    /// Consumed Ah "not available" (all ones in 20 bits).
    pub const CONSUMED_NA: u32 = 0xF_FFFF;
    /// Temperature "not available" (all ones in 7 bits).
    pub const TEMP_NA: u8 = 0x7F;
    /// Bit offset of "allowed to charge" in the IO status.
    pub const IO_ALLOWED_TO_CHARGE: u32 = 2;
    /// Bit offset of "allowed to discharge" in the IO status.
    pub const IO_ALLOWED_TO_DISCHARGE: u32 = 4;
    /// Bit offset of "low cell voltage" in the warnings/alarms.
    pub const WA_LOW_CELL_VOLTAGE: u32 = 0;
    /// Bit offset of "BMS cable" (battery communication) in the warnings/alarms.
    pub const WA_BMS_CABLE: u32 = 8;
    /// Bit offset of "load disconnect" in the warnings/alarms.
    pub const WA_LOAD_DISCONNECT: u32 = 10;
    /// Bit offset of "low SoC" in the warnings/alarms.
    pub const WA_LOW_SOC: u32 = 12;
    /// Bit offset of "high temperature" in the warnings/alarms.
    pub const WA_HIGH_TEMPERATURE: u32 = 16;

    /// The record for `values`: rounded to the field units (half away from zero), clamped into
    /// each field's range, and never the NA pattern for a present value.
    pub fn from_values(values: &ReadoutValues) -> BmsRecord {
        let ttg_min = match values.time_remaining_min {
            Some(min) => clamp_u64(u64::from(min), u64::from(BmsRecord::TTG_NA) - 1) as u16,
            None => BmsRecord::TTG_NA,
        };
        let voltage_cv = match values.bank_mv {
            Some(mv) => clamp_i64(div_round(i64::from(mv), 10), 0, i64::from(i16::MAX) - 1) as i16,
            None => BmsRecord::I16_NA,
        };
        let current_da = match values.current_ma {
            Some(ma) => clamp_i64(
                div_round(i64::from(ma), 100),
                i64::from(i16::MIN),
                i64::from(i16::MAX) - 1,
            ) as i16,
            None => BmsRecord::I16_NA,
        };
        let io_status = io_field(values.allowed_to_charge, BmsRecord::IO_ALLOWED_TO_CHARGE)
            | io_field(
                values.allowed_to_discharge,
                BmsRecord::IO_ALLOWED_TO_DISCHARGE,
            );
        let warnings_alarms = [
            (values.low_cell_voltage, BmsRecord::WA_LOW_CELL_VOLTAGE),
            (values.battery_communication, BmsRecord::WA_BMS_CABLE),
            (values.load_disconnect, BmsRecord::WA_LOAD_DISCONNECT),
            (values.low_soc, BmsRecord::WA_LOW_SOC),
            (values.high_temperature, BmsRecord::WA_HIGH_TEMPERATURE),
        ]
        .into_iter()
        .fold(0, |acc, (level, shift)| acc | (Level::raw(level) << shift));
        let soc_permille = match values.soc_permille {
            Some(soc) => soc.min(1000),
            None => BmsRecord::SOC_NA,
        };
        let consumed_dah = match values.consumed_mah {
            Some(mah) => clamp_u64(
                u64::from(mah).saturating_add(50) / 100,
                u64::from(BmsRecord::CONSUMED_NA) - 1,
            ) as u32,
            None => BmsRecord::CONSUMED_NA,
        };
        let temp_raw = match values.temp_ddegc {
            Some(ddegc) => (clamp_i64(div_round(i64::from(ddegc), 10), -40, 86) + 40) as u8,
            None => BmsRecord::TEMP_NA,
        };
        BmsRecord {
            error: values.error_code,
            ttg_min,
            voltage_cv,
            current_da,
            io_status,
            warnings_alarms,
            soc_permille,
            consumed_dah,
            temp_raw,
        }
    }

    /// The 16-byte plaintext: fields packed LSB first, values wider than their field masked to
    /// it, the unused last bit set to 1.
    pub fn pack(&self) -> [u8; RECORD_LEN] {
        let mut bits = BitWriter::new();
        bits.put(u32::from(self.error), 8);
        bits.put(u32::from(self.ttg_min), 16);
        bits.put(u32::from(self.voltage_cv as u16), 16);
        bits.put(u32::from(self.current_da as u16), 16);
        bits.put(u32::from(self.io_status), 16);
        bits.put(self.warnings_alarms, 18);
        bits.put(u32::from(self.soc_permille), 10);
        bits.put(self.consumed_dah, 20);
        bits.put(u32::from(self.temp_raw), 7);
        bits.finish()
    }

    /// The record packed in `plaintext` (the inverse of [`BmsRecord::pack`]).
    pub fn unpack(plaintext: &[u8; RECORD_LEN]) -> BmsRecord {
        let mut bits = BitReader {
            data: plaintext,
            pos: 0,
        };
        BmsRecord {
            error: bits.take(8) as u8,
            ttg_min: bits.take(16) as u16,
            voltage_cv: bits.take(16) as u16 as i16,
            current_da: bits.take(16) as u16 as i16,
            io_status: bits.take(16) as u16,
            warnings_alarms: bits.take(18),
            soc_permille: bits.take(10) as u16,
            consumed_dah: bits.take(20),
            temp_raw: bits.take(7) as u8,
        }
    }
}

/// The fixed header fields of a manufacturer payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Second payload byte ([`PREFIX_BYTE`] for this firmware).
    pub prefix: u8,
    /// Product id, sent little-endian.
    pub product_id: u16,
    /// Record type ([`RECORD_TYPE_BMS`] for this firmware).
    pub record_type: u8,
}

/// Encrypt `record` (at most 16 bytes) with AES-128-CTR under `key` and `nonce` and write the
/// manufacturer payload (without company id) to `out`; returns its length, `8 + record.len()`.
/// Any record type can be sealed, which is how the reference vectors of every device type are
/// checked; the [`Advertiser`] seals record 0x0A.
pub fn seal(
    key: &[u8; 16],
    nonce: u16,
    header: Header,
    record: &[u8],
    out: &mut [u8],
) -> Result<usize, ReadoutError> {
    if record.len() > RECORD_LEN {
        return Err(ReadoutError::RecordTooLong { len: record.len() });
    }
    let len = HEADER_LEN + record.len();
    let Some((head, body)) = out
        .get_mut(..len)
        .and_then(|out| out.split_at_mut_checked(HEADER_LEN))
    else {
        return Err(ReadoutError::BufferTooSmall { required: len });
    };
    let [pid_lo, pid_hi] = header.product_id.to_le_bytes();
    let [nonce_lo, nonce_hi] = nonce.to_le_bytes();
    head.copy_from_slice(&[
        PRODUCT_ADVERTISEMENT,
        header.prefix,
        pid_lo,
        pid_hi,
        header.record_type,
        nonce_lo,
        nonce_hi,
        key[0],
    ]);
    body.copy_from_slice(record);
    // Counter block = nonce little-endian in bytes 0-1, zeros after: a 128-bit little-endian
    // counter starting at the nonce (records fit one block, so the increment never matters).
    let mut iv = [0u8; 16];
    iv[0] = nonce_lo;
    iv[1] = nonce_hi;
    let mut cipher = ctr::Ctr128LE::<Aes128>::new(key.into(), &iv.into());
    cipher
        .try_apply_keystream(body)
        .map_err(|_| ReadoutError::RecordTooLong { len: record.len() })?;
    Ok(len)
}

/// Builds the advertisement of one device: owns the key, the product id and the nonce counter.
///
/// The nonce moves to the next value whenever the plaintext changes (never two different
/// plaintexts under one key and nonce within a run); an unchanged state re-sends the identical
/// packet. Across reboots the storage layer keeps the counter moving forward: persist the value
/// [`Advertiser::nonce_to_persist`] asks for, confirm it with [`Advertiser::nonce_persisted`],
/// and pass the stored value to [`Advertiser::new`] at the next boot. Only reserved nonces are
/// used: while none is left (the reservation could not be written) new values get no packet
/// ([`ReadoutError::NotReserved`]: "not available", never stale values), and before the first
/// reservation there is no packet. The field is 16 bits, so the counter comes round to nonces
/// already sent after 65536 changes: a key is worn after [`NONCES_PER_KEY`] nonces counted from
/// the first one used under it (skipped ones included), and then gives no nonce for new values
/// ([`ReadoutError::KeyWorn`]) and reserves none, so that no nonce is ever used twice under one
/// key; [`crate::node::Node`] renews a worn key ([`crate::limits::READOUT_MIN_CHANGE_MS`] keeps
/// that weeks away).
#[derive(Clone, Debug)]
pub struct Advertiser {
    key: [u8; 16],
    /// The key is the device's own (false: a placeholder, nothing is advertised).
    keyed: bool,
    product_id: u16,
    /// Nonce of the last payload built, or of the first payload before any was built.
    nonce: u16,
    /// Plaintext of the last payload built.
    last: Option<[u8; RECORD_LEN]>,
    /// Nonces still covered by the persisted reservation, after `nonce`'s successor.
    reserved_left: u16,
    /// Nonces the reservation in force covered when it was confirmed (0 before the first):
    /// the next one asks for twice as many, from [`NONCE_FIRST_BLOCK`] up to [`NONCE_BLOCK`].
    reservation: u16,
    /// The first nonce used under the key in force: the nonces it has spent are counted from it.
    key_first: u16,
}

impl Advertiser {
    /// An advertiser for the device `key`, announcing `product_id` (default
    /// [`DEFAULT_PRODUCT_ID`]); `first_nonce` is the value last persisted through
    /// [`Advertiser::nonce_to_persist`] (any value, e.g. 0, on the very first boot).
    /// The key is new: it has spent no nonce ([`Advertiser::restored`] for a key that has).
    pub fn new(key: [u8; 16], product_id: u16, first_nonce: u16) -> Advertiser {
        Advertiser::restored(key, product_id, first_nonce, first_nonce)
    }

    /// As [`Advertiser::new`], for a key whose first nonce was `key_first_nonce` (persisted
    /// with the key, [`Advertiser::key_first_nonce`]): the nonces from it up to `first_nonce`
    /// count as spent under the key.
    pub fn restored(
        key: [u8; 16],
        product_id: u16,
        first_nonce: u16,
        key_first_nonce: u16,
    ) -> Advertiser {
        Advertiser {
            key,
            keyed: true,
            product_id,
            nonce: first_nonce,
            last: None,
            reserved_left: 0,
            reservation: 0,
            key_first: key_first_nonce,
        }
    }

    /// An advertiser without a key of its own: every payload is [`ReadoutError::NoKey`] until
    /// [`Advertiser::set_key`].
    pub fn without_key(product_id: u16, first_nonce: u16) -> Advertiser {
        Advertiser {
            keyed: false,
            ..Advertiser::new([0; 16], product_id, first_nonce)
        }
    }

    /// Whether the advertiser has a key of its own.
    pub fn keyed(&self) -> bool {
        self.keyed
    }

    /// The advertisement key (readable over an authenticated link, BLE-3).
    pub fn key(&self) -> &[u8; 16] {
        &self.key
    }

    /// Replace the advertisement key (its first byte is sent as the key check). The nonce keeps
    /// counting; the next payload is encrypted under the new key, which has spent no nonce yet.
    /// The key in force set again is no new key: the nonces it spent still count (BLE-3).
    pub fn set_key(&mut self, key: [u8; 16]) {
        let same = self.keyed && key == self.key;
        self.nonce = self.next_unused();
        if !same {
            self.key_first = self.nonce;
        }
        self.last = None;
        self.key = key;
        self.keyed = true;
    }

    /// The first nonce used under the key in force (the next unused one when the key was set):
    /// persist it with the key and pass it to [`Advertiser::restored`] at the next boot.
    pub fn key_first_nonce(&self) -> u16 {
        self.key_first
    }

    /// The nonces the key in force has spent: from its first nonce to the next unused one,
    /// those a restart skipped included.
    pub fn nonces_spent(&self) -> u16 {
        self.next_unused().wrapping_sub(self.key_first)
    }

    /// BLE-3: the key has spent [`NONCES_PER_KEY`] nonces: no new values go out under it
    /// ([`ReadoutError::KeyWorn`]) and no nonce is reserved for it; it needs a new key
    /// ([`Advertiser::set_key`]).
    pub fn key_worn(&self) -> bool {
        self.nonces_spent() >= NONCES_PER_KEY
    }

    /// The announced product id.
    pub fn product_id(&self) -> u16 {
        self.product_id
    }

    /// The nonce of the payload last built, or of the first one before any was built.
    pub fn nonce(&self) -> u16 {
        self.nonce
    }

    /// The value the storage layer must persist now (and pass to [`Advertiser::new`] at the
    /// next boot), or `None` while the current reservation still covers at least half of what
    /// it covered. The first reservation of a run covers [`NONCE_FIRST_BLOCK`] nonces, each
    /// next one twice its predecessor, up to [`NONCE_BLOCK`]: a start skips what the run
    /// before left of its reservation, and a short run leaves little. A reservation never
    /// reaches beyond the key's [`NONCES_PER_KEY`] nonces: near the end it covers what is left,
    /// and once that is reserved (or the key is worn) there is nothing more to ask for.
    /// Call after building a payload; asks again until [`Advertiser::nonce_persisted`] confirms.
    #[must_use]
    pub fn nonce_to_persist(&self) -> Option<u16> {
        if self.reserved_left > self.reservation / 2 {
            return None;
        }
        let block = self
            .reservation
            .saturating_mul(2)
            .clamp(NONCE_FIRST_BLOCK, NONCE_BLOCK);
        let ahead = block.min(self.nonces_left());
        (ahead > self.reserved_left).then(|| self.next_unused().wrapping_add(ahead))
    }

    /// The storage layer has durably written `value` (from [`Advertiser::nonce_to_persist`]):
    /// nonces up to it may be used without another write. A value that is not ahead of the
    /// counter (stale write), or beyond the key's [`NONCES_PER_KEY`], is ignored.
    pub fn nonce_persisted(&mut self, value: u16) {
        let ahead = value.wrapping_sub(self.next_unused());
        if ahead <= NONCE_BLOCK && ahead <= self.nonces_left() {
            self.reserved_left = ahead;
            self.reservation = ahead;
        }
    }

    /// Build the manufacturer payload (without company id, what decoders get) for `values`
    /// into `out`; returns its length, [`PAYLOAD_LEN`]. Changed values take the next nonce only
    /// while one is reserved; otherwise [`ReadoutError::NotReserved`] (not the stale packet),
    /// or [`ReadoutError::KeyWorn`] once the key has spent its nonces.
    /// Without a key, [`ReadoutError::NoKey`]. On error nothing changes.
    pub fn payload(
        &mut self,
        values: &ReadoutValues,
        out: &mut [u8],
    ) -> Result<usize, ReadoutError> {
        if out.len() < PAYLOAD_LEN {
            return Err(ReadoutError::BufferTooSmall {
                required: PAYLOAD_LEN,
            });
        }
        if !self.keyed {
            return Err(ReadoutError::NoKey);
        }
        let plaintext = BmsRecord::from_values(values).pack();
        if self.last != Some(plaintext) {
            if self.key_worn() {
                // The next nonce may come round to one already sent under this key.
                return Err(ReadoutError::KeyWorn);
            }
            if self.reserved_left == 0 {
                // A nonce not covered by the persisted reservation could be used again after a
                // reboot, and the last packet would show stale values: nothing.
                return Err(ReadoutError::NotReserved);
            }
            self.nonce = self.next_unused();
            self.reserved_left -= 1;
            self.last = Some(plaintext);
        }
        let header = Header {
            prefix: PREFIX_BYTE,
            product_id: self.product_id,
            record_type: RECORD_TYPE_BMS,
        };
        seal(&self.key, self.nonce, header, &plaintext, out)
    }

    /// Build the complete manufacturer data for the advertising packet: company id 0x02E1
    /// (little-endian) followed by the payload; what `bt_le_adv_update_data` gets as
    /// `BT_DATA_MANUFACTURER_DATA`. Returns [`MANUFACTURER_DATA_LEN`]. On error nothing changes.
    pub fn manufacturer_data(
        &mut self,
        values: &ReadoutValues,
        out: &mut [u8],
    ) -> Result<usize, ReadoutError> {
        let Some((company, payload)) = out.split_at_mut_checked(2) else {
            return Err(ReadoutError::BufferTooSmall {
                required: MANUFACTURER_DATA_LEN,
            });
        };
        if payload.len() < PAYLOAD_LEN {
            return Err(ReadoutError::BufferTooSmall {
                required: MANUFACTURER_DATA_LEN,
            });
        }
        // The company id only after the payload: a refusal (no key, no reserved nonce) leaves
        // the caller's buffer as it was.
        let len = self.payload(values, payload)?;
        company.copy_from_slice(&COMPANY_ID.to_le_bytes());
        Ok(len.saturating_add(2))
    }

    fn next_unused(&self) -> u16 {
        match self.last {
            Some(_) => self.nonce.wrapping_add(1),
            None => self.nonce,
        }
    }

    /// Nonces the key in force may still spend (0 once worn).
    fn nonces_left(&self) -> u16 {
        NONCES_PER_KEY.saturating_sub(self.nonces_spent())
    }
}

/// `n / d` rounded half away from zero; `d` > 0.
fn div_round(n: i64, d: i64) -> i64 {
    let half = d / 2;
    if n >= 0 {
        n.saturating_add(half) / d
    } else {
        n.saturating_sub(half) / d
    }
}

fn clamp_i64(v: i64, min: i64, max: i64) -> i64 {
    v.clamp(min, max)
}

fn clamp_u64(v: u64, max: u64) -> u64 {
    v.min(max)
}

fn io_field(allowed: Option<bool>, shift: u32) -> u16 {
    let raw: u16 = match allowed {
        None => 0,
        Some(true) => 1,
        Some(false) => 2,
    };
    raw << shift
}

/// LSB-first bit packer over one record; bits never written stay 1.
struct BitWriter {
    data: [u8; RECORD_LEN],
    pos: usize,
}

impl BitWriter {
    fn new() -> BitWriter {
        BitWriter {
            data: [0xFF; RECORD_LEN],
            pos: 0,
        }
    }

    fn put(&mut self, value: u32, width: u32) {
        for i in 0..width {
            let bit = (value >> i) & 1 == 1;
            if let Some(byte) = self.data.get_mut(self.pos / 8) {
                let mask = 1u8 << (self.pos % 8);
                if bit {
                    *byte |= mask;
                } else {
                    *byte &= !mask;
                }
            }
            self.pos = self.pos.saturating_add(1);
        }
    }

    fn finish(self) -> [u8; RECORD_LEN] {
        self.data
    }
}

/// LSB-first bit reader over one record, the same rule decoders use.
struct BitReader<'a> {
    data: &'a [u8; RECORD_LEN],
    pos: usize,
}

impl BitReader<'_> {
    fn take(&mut self, width: u32) -> u32 {
        let mut value = 0;
        for i in 0..width {
            let bit = self
                .data
                .get(self.pos / 8)
                .map_or(0, |b| (b >> (self.pos % 8)) & 1);
            value |= u32::from(bit) << i;
            self.pos = self.pos.saturating_add(1);
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn key(s: &str) -> [u8; 16] {
        hex(s).try_into().unwrap()
    }

    /// Decrypts a payload built by this module (CTR is its own inverse).
    fn open(key: &[u8; 16], payload: &[u8]) -> [u8; RECORD_LEN] {
        let nonce = u16::from_le_bytes([payload[5], payload[6]]);
        let header = Header {
            prefix: payload[1],
            product_id: 0,
            record_type: payload[4],
        };
        let mut out = [0u8; PAYLOAD_LEN];
        let n = seal(key, nonce, header, &payload[HEADER_LEN..], &mut out).unwrap();
        out[HEADER_LEN..n].try_into().unwrap()
    }

    fn sample() -> ReadoutValues {
        ReadoutValues {
            soc_permille: Some(875),
            bank_mv: Some(13_270),
            current_ma: Some(-12_345),
            time_remaining_min: Some(600),
            consumed_mah: Some(15_300),
            temp_ddegc: Some(250),
            error_code: 0,
            allowed_to_charge: Some(true),
            allowed_to_discharge: Some(true),
            low_cell_voltage: Some(Level::Ok),
            high_temperature: Some(Level::Ok),
            low_soc: Some(Level::Ok),
            battery_communication: Some(Level::Ok),
            load_disconnect: Some(Level::Ok),
        }
    }

    /// BLE-3: every published end-to-end vector (upstream devices, SmartLithium, Battery
    /// Monitor and Lynx BMS) is reproduced byte for byte from its key,
    /// nonce, header and plaintext.
    #[test]
    fn ble_3_reference_vectors_seal_byte_for_byte() {
        let vectors = [
            (
                "100289a302b040af925d09a4d89aa0128bdef48c6298a9",
                "aff4d0995b7d1e176c0c33ecb9e70dcd",
                "ffffe50400000000030000f40140df",
            ),
            (
                "1000a4a3025f150d8dcbff517f30eb65e76b22a04ac4e1",
                "0da694539597f9cf6c613cde60d7bf05",
                "ffffc60400007d73feff7fffffffff",
            ),
            (
                "100380270c1252dad26f0b8eb39162074d140df410",
                "da3f5fa2860cb1cf86ba7a6d1d16b9dd",
                "0500e800a505b305b02000c8ff",
            ),
            (
                "100380270ce1b2dabd34912a6ecec963899227a220",
                "da3f5fa2860cb1cf86ba7a6d1d16b9dd",
                "0900c5ffdb840000680100c6ff",
            ),
            (
                "100242a0016207adceb37b605d7e0ee21b24df5c",
                "adeccb947395801a4dd45a2eaa44bf17",
                "04006c050e000300130000fe",
            ),
            (
                "1080b0a3093523fadedea38b1af8bcbde91ca8b6dbb60e",
                "fac570d66380b797a5b7543758be00e4",
                "f90100000000001b051b0500000000",
            ),
            (
                "1000c0a304121d64ca8d442b90bbdf6a8cba",
                "64ba49f1a8562e45197a8e1fe50d7658",
                "00002305ff7f80000000",
            ),
            (
                "100289a30d787fafde83ccec982199fd815286",
                "aff4d0995b7d1e176c0c33ecb9e70dcd",
                "fdffe4040000ffff000000",
            ),
            (
                "100030a308f926c1b5170a0d2280335bf12d5ed083",
                "c129cf8f75c3fe5a1655b481e205fb7d",
                "0600458500ffffffffffffbdff",
            ),
            (
                "100043a40bf4e434af0e46c3b8eb68e08e616993f70c",
                "346c410e8c824dd723c0f5b13b9eabc8",
                "090080ff33940000d20200001402",
            ),
            (
                "1002e5a00510000158b7d466494931fa5561399f921dbb0a",
                "0102030405060708090a0b0c0d0e0f10",
                "000000060000c7e3f1f8ffffff2c35b5",
            ),
            (
                "1002efa005110001bd360cdc19eae2408a5b325b480a3109",
                "0102030405060708090a0b0c0d0e0f10",
                "000000060000cce592b95c2e997b1ad0",
            ),
            (
                "1002e5a30a2000016e3fd7b272a86c97839163cca489cde0",
                "0102030405060708090a0b0c0d0e0f10",
                "0040388b0afaff951555148ccf0200ff",
            ),
            (
                "100289a3020100011d208f389800ea215bd2bd62d8858e",
                "0102030405060708090a0b0c0d0e0f10",
                "58022f05000077741e3fff9900b0f6",
            ),
            (
                "1002e5a00502010114a68b1f89341bd2026744ea141110b4",
                "0102030405060708090a0b0c0d0e0f10",
                "00000006000047a4f1f8ffffff2c15c1",
            ),
            (
                "1002e5a30a0302013dc8bbdd00b05287c717ae92e097217d",
                "0102030405060708090a0b0c0d0e0f10",
                "00ffff8b0afaff951555148ccf0200bc",
            ),
        ];
        for (payload, k, plain) in vectors {
            let expected = hex(payload);
            let header = Header {
                prefix: expected[1],
                product_id: u16::from_le_bytes([expected[2], expected[3]]),
                record_type: expected[4],
            };
            let nonce = u16::from_le_bytes([expected[5], expected[6]]);
            let mut out = [0u8; PAYLOAD_LEN];
            let n = seal(&key(k), nonce, header, &hex(plain), &mut out).unwrap();
            assert_eq!(&out[..n], &expected[..], "vector {payload}");
        }
    }

    /// BLE-3: the 0x0A record packs the reference Lynx plaintexts exactly (fields LSB first,
    /// NA patterns, trailing bit 1) and unpacks them back.
    #[test]
    fn ble_3_bms_record_packs_reference_plaintexts() {
        let upstream = BmsRecord {
            error: 0,
            ttg_min: 14_400,
            voltage_cv: 2699,
            current_da: -6,
            io_status: 0x1595,
            warnings_alarms: 0x01455,
            soc_permille: 995,
            consumed_dah: 44,
            temp_raw: BmsRecord::TEMP_NA,
        };
        assert_eq!(
            upstream.pack().to_vec(),
            hex("0040388b0afaff951555148ccf0200ff")
        );
        let synthetic = BmsRecord {
            ttg_min: BmsRecord::TTG_NA,
            temp_raw: 60,
            ..upstream
        };
        assert_eq!(
            synthetic.pack().to_vec(),
            hex("00ffff8b0afaff951555148ccf0200bc")
        );
        assert_eq!(BmsRecord::unpack(&synthetic.pack()), synthetic);
        assert_eq!(BmsRecord::unpack(&upstream.pack()), upstream);
    }

    /// BLE-3: the advertiser's payload is `10 02 <pid LE> 0A <nonce LE> key[0]` and 16 bytes
    /// that decrypt to the record of the values; the whole manufacturer data leads with E1 02.
    #[test]
    fn ble_3_advertiser_payload_layout() {
        let mut adv = reserved(Advertiser::new(KEY, 0xA3E5, 0x0203));
        let mut out = [0u8; MANUFACTURER_DATA_LEN];
        assert_eq!(adv.manufacturer_data(&sample(), &mut out), Ok(26));
        assert_eq!(
            out[..10],
            [0xE1, 0x02, 0x10, 0x02, 0xE5, 0xA3, 0x0A, 0x03, 0x02, 0x01]
        );
        let plain = open(&KEY, &out[2..]);
        assert_eq!(plain, BmsRecord::from_values(&sample()).pack());
        let record = BmsRecord::unpack(&plain);
        assert_eq!(record.ttg_min, 600);
        assert_eq!(record.voltage_cv, 1327);
        assert_eq!(record.current_da, -123);
        assert_eq!(record.soc_permille, 875);
        assert_eq!(record.consumed_dah, 153);
        assert_eq!(record.temp_raw, 65);
        assert_eq!(record.io_status, 0b01_0100);
        assert_eq!(record.warnings_alarms, 0x1_1501);
        assert_ne!(out[10..], plain[..], "the record is encrypted");
    }

    /// BLE-3: the nonce moves only when the plaintext changes; an unchanged state re-sends the
    /// identical packet, and a change after that gets the next nonce.
    #[test]
    fn ble_3_nonce_bumps_only_when_content_changes() {
        let mut adv = reserved(Advertiser::new(KEY, DEFAULT_PRODUCT_ID, 7));
        let (mut a, mut b, mut c) = ([0u8; 24], [0u8; 24], [0u8; 24]);
        adv.payload(&sample(), &mut a).unwrap();
        assert_eq!(adv.nonce(), 7);
        adv.payload(&sample(), &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(adv.nonce(), 7);
        // 13.274 V rounds to the same 0.01 V: no content change, no new nonce.
        let same = ReadoutValues {
            bank_mv: Some(13_274),
            ..sample()
        };
        adv.payload(&same, &mut b).unwrap();
        assert_eq!(a, b);
        let changed = ReadoutValues {
            soc_permille: Some(874),
            ..sample()
        };
        adv.payload(&changed, &mut c).unwrap();
        assert_eq!(adv.nonce(), 8);
        assert_eq!(c[5..7], [8, 0]);
        adv.payload(&sample(), &mut c).unwrap();
        assert_eq!(
            adv.nonce(),
            9,
            "going back to an old state is still a change"
        );
        assert_ne!(a, c);
    }

    /// `adv` with its first reservation persisted, as the storage layer does at boot.
    fn reserved(mut adv: Advertiser) -> Advertiser {
        if let Some(value) = adv.nonce_to_persist() {
            adv.nonce_persisted(value);
        }
        adv
    }

    /// BLE-3: only reserved nonces are used. Before the first reservation there is no packet;
    /// when the reservation runs out (its writes fail), changed values do not take a new nonce
    /// and get no packet ("not available", not the stale packet: M4); unchanged values still
    /// get theirs; a confirmed reservation brings packets back.
    #[test]
    fn ble_3_no_nonce_beyond_the_reservation_and_no_stale_packet() {
        let mut adv = Advertiser::new(KEY, DEFAULT_PRODUCT_ID, 40);
        let mut out = [0u8; PAYLOAD_LEN];
        assert_eq!(
            adv.payload(&sample(), &mut out),
            Err(ReadoutError::NotReserved)
        );
        assert_eq!(adv.nonce(), 40, "no nonce used");
        let first = adv.nonce_to_persist().unwrap();
        adv.nonce_persisted(first);
        let mut last = [0u8; PAYLOAD_LEN];
        for i in 0..u32::from(NONCE_FIRST_BLOCK) {
            let values = ReadoutValues {
                time_remaining_min: Some(i),
                ..sample()
            };
            adv.payload(&values, &mut last).unwrap();
            // The new reservations are never confirmed: the writes fail.
        }
        assert_eq!(adv.nonce(), first.wrapping_sub(1), "the whole block used");
        for i in 0..10 {
            let values = ReadoutValues {
                soc_permille: Some(100 + i),
                ..sample()
            };
            let mut again = [0u8; PAYLOAD_LEN];
            assert_eq!(
                adv.payload(&values, &mut again),
                Err(ReadoutError::NotReserved),
                "stale or unreserved packet"
            );
            assert_eq!(adv.nonce(), first.wrapping_sub(1));
        }
        let unchanged = ReadoutValues {
            time_remaining_min: Some(u32::from(NONCE_FIRST_BLOCK) - 1),
            ..sample()
        };
        let mut again = [0u8; PAYLOAD_LEN];
        assert_eq!(adv.payload(&unchanged, &mut again), Ok(PAYLOAD_LEN));
        assert_eq!(again, last);
        // A reboot now starts at `first`, never at a nonce already sent. The next reservation
        // covers twice the first.
        assert_eq!(
            adv.nonce_to_persist(),
            Some(first.wrapping_add(2 * NONCE_FIRST_BLOCK))
        );
        adv.nonce_persisted(first.wrapping_add(2 * NONCE_FIRST_BLOCK));
        let mut next = [0u8; PAYLOAD_LEN];
        adv.payload(&ReadoutValues::NOT_AVAILABLE, &mut next)
            .unwrap();
        assert_eq!(adv.nonce(), first);
        assert_eq!(
            open(&KEY, &next),
            BmsRecord::from_values(&ReadoutValues::NOT_AVAILABLE).pack()
        );
        assert_eq!(
            ReadoutError::NotReserved.to_string(),
            "no advertisement nonce reserved"
        );
    }

    /// BLE-3: a refused advertisement (no key, no reserved nonce, short buffer) leaves the
    /// caller's buffer untouched (found by the FFI fuzz target: the company id was written
    /// before the refusal).
    #[test]
    fn ble_3_a_refused_advertisement_writes_nothing() {
        let mut unreserved = Advertiser::new(KEY, DEFAULT_PRODUCT_ID, 40);
        let mut keyless = reserved(Advertiser::without_key(DEFAULT_PRODUCT_ID, 0));
        for (adv, error) in [
            (&mut unreserved, ReadoutError::NotReserved),
            (&mut keyless, ReadoutError::NoKey),
        ] {
            let mut out = [0xA5u8; MANUFACTURER_DATA_LEN];
            assert_eq!(adv.manufacturer_data(&sample(), &mut out), Err(error));
            assert_eq!(out, [0xA5; MANUFACTURER_DATA_LEN], "{error}");
        }
        let mut adv = reserved(Advertiser::new(KEY, DEFAULT_PRODUCT_ID, 40));
        let mut short = [0xA5u8; MANUFACTURER_DATA_LEN - 1];
        assert!(adv.manufacturer_data(&sample(), &mut short).is_err());
        assert_eq!(short, [0xA5; MANUFACTURER_DATA_LEN - 1]);
    }

    /// BLE-3: an advertiser without a key of its own sends nothing until it gets one.
    #[test]
    fn ble_3_no_packet_with_a_placeholder_key() {
        let mut adv = reserved(Advertiser::without_key(DEFAULT_PRODUCT_ID, 0));
        let mut out = [0u8; MANUFACTURER_DATA_LEN];
        assert_eq!(
            adv.manufacturer_data(&sample(), &mut out),
            Err(ReadoutError::NoKey)
        );
        adv.set_key(KEY);
        let adv = &mut reserved(adv);
        assert_eq!(adv.manufacturer_data(&sample(), &mut out), Ok(26));
    }

    /// BLE-3: the 16-bit counter wraps from 0xFFFF to 0 like every device of this format.
    #[test]
    fn ble_3_nonce_wraps_at_16_bits() {
        let mut adv = reserved(Advertiser::new(KEY, DEFAULT_PRODUCT_ID, 0xFFFF));
        let mut out = [0u8; 24];
        adv.payload(&sample(), &mut out).unwrap();
        adv.payload(&ReadoutValues::NOT_AVAILABLE, &mut out)
            .unwrap();
        assert_eq!(adv.nonce(), 0);
        assert_eq!(out[5..7], [0, 0]);
    }

    /// BLE-3: nonces never repeat across reboots: the advertiser asks for a reservation before
    /// it is used up, and a restart from the persisted value continues ahead of every nonce sent.
    #[test]
    fn ble_3_nonce_reservation_survives_reboot() {
        let mut adv = Advertiser::new(KEY, DEFAULT_PRODUCT_ID, 100);
        assert_eq!(
            adv.nonce_to_persist(),
            Some(100 + NONCE_FIRST_BLOCK),
            "nothing reserved at boot: a small first reservation"
        );
        adv.nonce_persisted(100 + NONCE_FIRST_BLOCK);
        assert_eq!(adv.nonce_to_persist(), None);
        let mut persisted = 100 + NONCE_FIRST_BLOCK;
        let mut block = NONCE_FIRST_BLOCK;
        let mut out = [0u8; 24];
        let mut highest_sent = 0;
        for i in 0..3 * u32::from(NONCE_BLOCK) {
            let values = ReadoutValues {
                time_remaining_min: Some(i),
                ..sample()
            };
            adv.payload(&values, &mut out).unwrap();
            highest_sent = adv.nonce();
            assert!(
                highest_sent.wrapping_sub(100) < persisted.wrapping_sub(100),
                "nonce {highest_sent} sent beyond the reservation {persisted}"
            );
            if let Some(value) = adv.nonce_to_persist() {
                // Asked when half of the reservation in force is left; each covers twice
                // the one before, up to NONCE_BLOCK.
                assert_eq!(persisted.wrapping_sub(highest_sent) - 1, block / 2);
                block = (2 * block).min(NONCE_BLOCK);
                assert_eq!(value, highest_sent.wrapping_add(1).wrapping_add(block));
                persisted = value;
                adv.nonce_persisted(value);
            }
        }
        assert_eq!(block, NONCE_BLOCK, "a long run reserves whole blocks");
        // Reboot: the first nonce is ahead of every nonce already sent.
        let mut rebooted = reserved(Advertiser::new(KEY, DEFAULT_PRODUCT_ID, persisted));
        rebooted.payload(&sample(), &mut out).unwrap();
        let ahead = rebooted.nonce().wrapping_sub(highest_sent);
        assert!((1..=NONCE_BLOCK + 1).contains(&ahead), "ahead by {ahead}");
        // A stale confirmation (behind the counter) does not extend the reservation.
        let mut fresh = Advertiser::new(KEY, DEFAULT_PRODUCT_ID, 100);
        fresh.nonce_persisted(99);
        assert_eq!(fresh.nonce_to_persist(), Some(100 + NONCE_FIRST_BLOCK));
        fresh.nonce_persisted(100 + NONCE_BLOCK + 1);
        assert_eq!(
            fresh.nonce_to_persist(),
            Some(100 + NONCE_FIRST_BLOCK),
            "beyond one block"
        );
    }

    /// BLE-3: with no data yet every field is sent as its "not available" pattern (IO and
    /// warnings 0, SoC 0x3FF, ...), never as a value a decoder would show as real.
    #[test]
    fn ble_3_no_data_encodes_not_available() {
        let record = BmsRecord::from_values(&ReadoutValues::NOT_AVAILABLE);
        assert_eq!(
            record,
            BmsRecord {
                error: 0,
                ttg_min: 0xFFFF,
                voltage_cv: 0x7FFF,
                current_da: 0x7FFF,
                io_status: 0,
                warnings_alarms: 0,
                soc_permille: 0x3FF,
                consumed_dah: 0xF_FFFF,
                temp_raw: 0x7F,
            }
        );
        assert_eq!(
            record.pack().to_vec(),
            hex("00ffffff7fff7f00000000fcffffffff")
        );
    }

    /// BLE-3: extremes are clamped into the field range and stay off the NA patterns: SoC 0
    /// and 100 %, ±huge currents, −40 and 85 °C (and beyond), huge times and charges.
    #[test]
    fn ble_3_extremes_clamp_into_field_range() {
        let low = BmsRecord::from_values(&ReadoutValues {
            soc_permille: Some(0),
            bank_mv: Some(0),
            current_ma: Some(i32::MIN),
            time_remaining_min: Some(0),
            consumed_mah: Some(0),
            temp_ddegc: Some(-400),
            ..sample()
        });
        assert_eq!(
            (low.soc_permille, low.voltage_cv, low.current_da),
            (0, 0, -32768)
        );
        assert_eq!((low.ttg_min, low.consumed_dah, low.temp_raw), (0, 0, 0));
        let high = BmsRecord::from_values(&ReadoutValues {
            soc_permille: Some(u16::MAX),
            bank_mv: Some(u32::MAX),
            current_ma: Some(i32::MAX),
            time_remaining_min: Some(u32::MAX),
            consumed_mah: Some(u32::MAX),
            temp_ddegc: Some(i16::MAX),
            ..sample()
        });
        assert_eq!(
            (high.soc_permille, high.voltage_cv, high.current_da),
            (1000, 32766, 32766)
        );
        assert_eq!(
            (high.ttg_min, high.consumed_dah, high.temp_raw),
            (65534, 0xF_FFFE, 126)
        );
        let hot = BmsRecord::from_values(&ReadoutValues {
            temp_ddegc: Some(850),
            ..sample()
        });
        assert_eq!(hot.temp_raw, 125);
        let cold = BmsRecord::from_values(&ReadoutValues {
            temp_ddegc: Some(i16::MIN),
            ..sample()
        });
        assert_eq!(cold.temp_raw, 0);
    }

    /// BLE-3: values are rounded half away from zero to the field units.
    #[test]
    fn ble_3_values_round_to_field_units() {
        let r = |v: ReadoutValues| BmsRecord::from_values(&v);
        assert_eq!(
            r(ReadoutValues {
                bank_mv: Some(12_345),
                ..sample()
            })
            .voltage_cv,
            1235
        );
        assert_eq!(
            r(ReadoutValues {
                bank_mv: Some(12_344),
                ..sample()
            })
            .voltage_cv,
            1234
        );
        assert_eq!(
            r(ReadoutValues {
                current_ma: Some(-12_350),
                ..sample()
            })
            .current_da,
            -124
        );
        assert_eq!(
            r(ReadoutValues {
                current_ma: Some(-12_349),
                ..sample()
            })
            .current_da,
            -123
        );
        assert_eq!(
            r(ReadoutValues {
                current_ma: Some(50),
                ..sample()
            })
            .current_da,
            1
        );
        assert_eq!(
            r(ReadoutValues {
                temp_ddegc: Some(-15),
                ..sample()
            })
            .temp_raw,
            38
        );
        assert_eq!(
            r(ReadoutValues {
                temp_ddegc: Some(-14),
                ..sample()
            })
            .temp_raw,
            39
        );
        assert_eq!(
            r(ReadoutValues {
                consumed_mah: Some(149),
                ..sample()
            })
            .consumed_dah,
            1
        );
        assert_eq!(
            r(ReadoutValues {
                consumed_mah: Some(150),
                ..sample()
            })
            .consumed_dah,
            2
        );
    }

    /// BLE-3: ATC/ATD map to "allowed to charge/discharge" (1 yes, 2 no) and each warning field
    /// to its 2-bit slot (1 ok, 2 warning, 3 alarm).
    #[test]
    fn ble_3_io_status_and_alarm_fields() {
        let r = BmsRecord::from_values(&ReadoutValues {
            allowed_to_charge: Some(false),
            allowed_to_discharge: Some(true),
            low_cell_voltage: Some(Level::Alarm),
            high_temperature: Some(Level::Warning),
            low_soc: Some(Level::Warning),
            battery_communication: Some(Level::Alarm),
            load_disconnect: None,
            ..sample()
        });
        assert_eq!(r.io_status, (2 << 2) | (1 << 4));
        assert_eq!(r.warnings_alarms, 3 | (3 << 8) | (2 << 12) | (2 << 16));
    }

    /// BLE-3: a buffer too small is an error naming the size, and the nonce does not move.
    #[test]
    fn ble_3_small_buffer_is_refused_without_change() {
        let mut adv = reserved(Advertiser::new(KEY, DEFAULT_PRODUCT_ID, 5));
        let mut small = [0u8; MANUFACTURER_DATA_LEN - 1];
        assert_eq!(
            adv.manufacturer_data(&sample(), &mut small),
            Err(ReadoutError::BufferTooSmall {
                required: MANUFACTURER_DATA_LEN
            })
        );
        assert_eq!(
            adv.payload(&sample(), &mut small[..PAYLOAD_LEN - 1]),
            Err(ReadoutError::BufferTooSmall {
                required: PAYLOAD_LEN
            })
        );
        let mut out = [0u8; PAYLOAD_LEN];
        adv.payload(&sample(), &mut out).unwrap();
        assert_eq!(adv.nonce(), 5, "the failed calls used no nonce");
        // A larger buffer is no error: the payload fills its first PAYLOAD_LEN bytes.
        let mut big = [0u8; PAYLOAD_LEN + 1];
        assert_eq!(adv.payload(&sample(), &mut big), Ok(PAYLOAD_LEN));
        assert_eq!(big[..PAYLOAD_LEN], out);
        assert_eq!(
            seal(
                &KEY,
                0,
                Header {
                    prefix: 0,
                    product_id: 0,
                    record_type: 0
                },
                &[0; 17],
                &mut [0; 40]
            ),
            Err(ReadoutError::RecordTooLong { len: 17 })
        );
        assert_eq!(
            ReadoutError::BufferTooSmall { required: 26 }.to_string(),
            "buffer too small: 26 bytes required"
        );
    }

    /// BLE-3: a new key changes the key-check byte and the ciphertext, and uses a new nonce.
    #[test]
    fn ble_3_set_key_changes_key_check_and_nonce() {
        let mut adv = reserved(Advertiser::new(KEY, DEFAULT_PRODUCT_ID, 1));
        let mut a = [0u8; 24];
        adv.payload(&sample(), &mut a).unwrap();
        let mut new_key = KEY;
        new_key[0] = 2;
        adv.set_key(new_key);
        let mut b = [0u8; 24];
        adv.payload(&sample(), &mut b).unwrap();
        assert_eq!((a[7], b[7]), (1, 2));
        assert_eq!(adv.nonce(), 2);
        assert_eq!(adv.key(), &new_key);
        assert_eq!(open(&new_key, &b), open(&KEY, &a));
    }

    /// Values that differ for every `i` (consumed charge in 0.1 Ah steps).
    fn change(i: u32) -> ReadoutValues {
        ReadoutValues {
            consumed_mah: Some(i * 100),
            ..sample()
        }
    }

    /// What the storage layer and a restart do with an advertiser, for the wear tests.
    struct Device {
        adv: Advertiser,
        /// The reservation the store holds.
        stored: u16,
    }

    impl Device {
        fn new(key: [u8; 16], first: u16) -> Device {
            let mut device = Device {
                adv: Advertiser::new(key, DEFAULT_PRODUCT_ID, first),
                stored: first,
            };
            device.persist();
            device
        }

        /// Writes what the advertiser asks for (it never reserves past the key's nonces).
        fn persist(&mut self) {
            if let Some(value) = self.adv.nonce_to_persist() {
                let spent = value.wrapping_sub(self.adv.key_first_nonce());
                assert!(
                    spent <= NONCES_PER_KEY,
                    "reservation {value} reaches {spent} nonces past the key's first"
                );
                self.stored = value;
                self.adv.nonce_persisted(value);
            }
        }

        /// A restart: the stored reservation and the key's first nonce (stored with the key).
        fn restart(&mut self) {
            self.adv = Advertiser::restored(
                *self.adv.key(),
                DEFAULT_PRODUCT_ID,
                self.stored,
                self.adv.key_first_nonce(),
            );
            self.persist();
        }
    }

    /// BLE-3: no nonce is ever used twice under one key. The 16-bit nonce advances once per
    /// payload change (4 320 a day at most), so after 15–40 days under one key the counter came
    /// round to nonces already sent: identical keystreams, and a listener XORing two packets of
    /// one nonce recovers the (low-entropy) telemetry. A key is worn after `NONCES_PER_KEY`
    /// nonces counted from its first (restarts' skipped nonces included): it refuses new values
    /// (no stale packet: unchanged values still go out) and reserves nothing more until a new
    /// key. Two and a half counters' worth of changes, with a restart every 5 000.
    #[test]
    fn ble_3_a_worn_key_never_uses_a_nonce_twice() {
        let mut device = Device::new(KEY, 0xF000);
        let mut sent = std::vec![false; 1 << 16];
        let mut out = [0u8; PAYLOAD_LEN];
        let (mut keys, mut refused) = (1u8, 0);
        for i in 0..165_000u32 {
            if i % 5_000 == 4_999 {
                device.restart();
            }
            let values = change(i);
            match device.adv.payload(&values, &mut out) {
                Ok(_) => {
                    let nonce = u16::from_le_bytes([out[5], out[6]]);
                    assert!(
                        !core::mem::replace(&mut sent[usize::from(nonce)], true),
                        "change {i}: nonce {nonce} sent twice under key {keys}"
                    );
                    assert_eq!(
                        open(device.adv.key(), &out),
                        BmsRecord::from_values(&values).pack()
                    );
                }
                Err(ReadoutError::KeyWorn) => {
                    refused += 1;
                    assert!(device.adv.key_worn());
                    assert_eq!(device.adv.nonces_spent(), NONCES_PER_KEY);
                    assert_eq!(
                        device.adv.nonce_to_persist(),
                        None,
                        "nothing more to reserve"
                    );
                    // The last values go out again, unchanged, under the nonce they had.
                    let unchanged = change(i - 1);
                    let mut again = [0u8; PAYLOAD_LEN];
                    assert_eq!(device.adv.payload(&unchanged, &mut again), Ok(PAYLOAD_LEN));
                    assert_eq!(again, out);
                    // What the node does: a new key, which starts a new count.
                    let mut key = KEY;
                    key[1] = keys;
                    keys += 1;
                    device.adv.set_key(key);
                    assert_eq!(device.adv.nonces_spent(), 0);
                    sent.fill(false);
                }
                Err(e) => panic!("change {i}: {e}"),
            }
            device.persist();
        }
        assert!(refused >= 2, "worn {refused} times in 165 000 changes");
        assert_eq!(
            ReadoutError::KeyWorn.to_string(),
            "advertisement key worn: its nonces are used up, a new key is needed"
        );
    }

    /// BLE-3: without a new key a worn key stays worn: new values get no packet and no nonce
    /// (a restart, which restores the key's first nonce, does not wear it off), and the
    /// reservation stops short of the key's first nonce for good.
    #[test]
    fn ble_3_a_worn_key_without_a_new_one_sends_nothing_new() {
        let first = 0x1234;
        let mut device = Device::new(KEY, first);
        let mut out = [0u8; PAYLOAD_LEN];
        let mut highest = 0u32;
        for i in 0..70_000u32 {
            if i % 20_000 == 19_999 {
                device.restart();
            }
            let values = change(i);
            match device.adv.payload(&values, &mut out) {
                Ok(_) => {
                    let spent = u32::from(device.adv.nonce().wrapping_sub(first));
                    assert!(spent > highest || i == 0, "change {i}: nonce repeated");
                    highest = spent;
                }
                Err(ReadoutError::KeyWorn) => assert!(device.adv.key_worn()),
                Err(e) => panic!("change {i}: {e}"),
            }
            device.persist();
        }
        assert!(highest < u32::from(NONCES_PER_KEY), "{highest}");
        assert!(u32::from(device.stored.wrapping_sub(first)) <= u32::from(NONCES_PER_KEY));
        device.restart();
        assert!(device.adv.key_worn(), "the count survives the restart");
        assert_eq!(
            device.adv.payload(&sample(), &mut out),
            Err(ReadoutError::KeyWorn)
        );
        // A stale or too far confirmation reserves nothing beyond the key's nonces.
        device
            .adv
            .nonce_persisted(device.adv.nonce().wrapping_add(NONCE_BLOCK));
        assert_eq!(
            device.adv.payload(&sample(), &mut out),
            Err(ReadoutError::KeyWorn)
        );
        // A new key sends again, from the next nonce.
        device.adv.set_key([7; 16]);
        device.persist();
        assert_eq!(device.adv.payload(&sample(), &mut out), Ok(PAYLOAD_LEN));
    }

    /// BLE-3: setting the key in force again (`Bms::set_device_key` with the same key) is no
    /// new key: the nonces it spent still count, so a worn key stays worn and never sends a
    /// nonce it already sent. Another key starts a new count.
    #[test]
    fn ble_3_the_same_key_set_again_keeps_the_nonces_it_spent() {
        let first = 0x0100;
        let mut device = Device::new(KEY, first);
        let mut out = [0u8; PAYLOAD_LEN];
        let mut sent = std::vec![false; 1 << 16];
        let mut i = 0u32;
        loop {
            match device.adv.payload(&change(i), &mut out) {
                Ok(_) => {
                    let nonce = u16::from_le_bytes([out[5], out[6]]);
                    assert!(
                        !core::mem::replace(&mut sent[usize::from(nonce)], true),
                        "change {i}: nonce {nonce} sent twice under one key"
                    );
                }
                Err(ReadoutError::KeyWorn) if i > u32::from(NONCES_PER_KEY) + 10 => break,
                Err(ReadoutError::KeyWorn) => {
                    // The same key again, as a caller might when it (re)applies its key.
                    device.adv.set_key(KEY);
                    assert!(device.adv.key_worn(), "the same key is still worn");
                }
                Err(e) => panic!("change {i}: {e}"),
            }
            device.persist();
            i += 1;
            assert!(i < 2 * u32::from(NONCES_PER_KEY), "never worn");
        }
        assert_eq!(device.adv.nonces_spent(), NONCES_PER_KEY);
        device.adv.set_key([8; 16]);
        assert_eq!(
            device.adv.nonces_spent(),
            0,
            "another key starts a new count"
        );
        device.persist();
        assert_eq!(device.adv.payload(&change(i), &mut out), Ok(PAYLOAD_LEN));
    }

    fn level() -> impl Strategy<Value = Option<Level>> {
        prop_oneof![
            Just(None),
            Just(Some(Level::Ok)),
            Just(Some(Level::Warning)),
            Just(Some(Level::Alarm))
        ]
    }

    prop_compose! {
        fn values()(
            soc in proptest::option::of(any::<u16>()),
            mv in proptest::option::of(any::<u32>()),
            ma in proptest::option::of(any::<i32>()),
            ttg in proptest::option::of(any::<u32>()),
            mah in proptest::option::of(any::<u32>()),
            temp in proptest::option::of(any::<i16>()),
            error_code in any::<u8>(),
            atc in proptest::option::of(any::<bool>()),
            atd in proptest::option::of(any::<bool>()),
            l in (level(), level(), level(), level(), level()),
        ) -> ReadoutValues {
            ReadoutValues {
                soc_permille: soc, bank_mv: mv, current_ma: ma, time_remaining_min: ttg,
                consumed_mah: mah, temp_ddegc: temp, error_code,
                allowed_to_charge: atc, allowed_to_discharge: atd,
                low_cell_voltage: l.0, high_temperature: l.1, low_soc: l.2,
                battery_communication: l.3, load_disconnect: l.4,
            }
        }
    }

    proptest! {
        /// BLE-3: a present value never encodes as its field's NA pattern and every field stays
        /// within its width; an absent one always encodes as NA; the last bit is always 1.
        #[test]
        fn ble_3_present_values_never_encode_as_na(v in values()) {
            let r = BmsRecord::from_values(&v);
            prop_assert_eq!(v.soc_permille.is_none(), r.soc_permille == BmsRecord::SOC_NA);
            prop_assert!(r.soc_permille <= 1000 || r.soc_permille == BmsRecord::SOC_NA);
            prop_assert_eq!(v.bank_mv.is_none(), r.voltage_cv == BmsRecord::I16_NA);
            prop_assert_eq!(v.current_ma.is_none(), r.current_da == BmsRecord::I16_NA);
            prop_assert_eq!(v.time_remaining_min.is_none(), r.ttg_min == BmsRecord::TTG_NA);
            prop_assert_eq!(v.consumed_mah.is_none(), r.consumed_dah == BmsRecord::CONSUMED_NA);
            prop_assert!(r.consumed_dah <= BmsRecord::CONSUMED_NA);
            prop_assert_eq!(v.temp_ddegc.is_none(), r.temp_raw == BmsRecord::TEMP_NA);
            prop_assert!(r.temp_raw <= BmsRecord::TEMP_NA);
            prop_assert!(r.warnings_alarms < 1 << 18);
            let packed = r.pack();
            prop_assert_eq!(packed[15] & 0x80, 0x80);
            prop_assert_eq!(BmsRecord::unpack(&packed), r);
        }

        /// BLE-3: the sealed payload always decrypts back to the record of the values, with
        /// the key-check byte and the nonce in clear.
        #[test]
        fn ble_3_payload_decrypts_to_record(v in values(), k in any::<[u8; 16]>(), nonce in any::<u16>()) {
            let mut adv = reserved(Advertiser::new(k, DEFAULT_PRODUCT_ID, nonce));
            let mut out = [0u8; PAYLOAD_LEN];
            prop_assert_eq!(adv.payload(&v, &mut out), Ok(PAYLOAD_LEN));
            prop_assert_eq!(out[7], k[0]);
            prop_assert_eq!(u16::from_le_bytes([out[5], out[6]]), nonce);
            prop_assert_eq!(open(&k, &out), BmsRecord::from_values(&v).pack());
        }
    }
}
