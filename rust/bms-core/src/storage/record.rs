//! The envelope of every persisted value, and the versioned decoding of each record kind.
//!
//! A stored value is `kind | version | postcard body | CRC-32 (LE)`:
//!
//! ```text
//! offset 0     1         2 ..                n-4 .. n
//!        kind  version   body (postcard)     CRC-32/ISCSI of bytes 0 .. n-4, little-endian
//! ```
//!
//! A compact record ([`Record::COMPACT`], at most [`COMPACT_MAX_LEN`] = 8 bytes, so that ZMS
//! keeps it inside its allocation-table entry) is `version | postcard body | CRC-16 (LE)`, the
//! CRC-16 taken over the kind byte followed by the stored bytes: the kind is checked without
//! being stored.
//!
//! `kind` guards against a value landing under the wrong key; `version` is the body's format
//! version. A newer firmware decodes every older version ([`Record::decode_body`] maps it to the
//! current type); a version newer than the firmware (after a downgrade) is refused. Encoding goes
//! through postcard's CRC flavor, so the CRC code is the `crc` crate's, not ours.

use core::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::StorageError;
use crate::name::DeviceName;
use crate::secrets::{DeviceSecrets, MAX_PASSKEY};
use crate::settings::Settings;
use crate::stable_enum::stable_enum;
use crate::word::Number;

/// Longest stored value in bytes (the history record is the largest, well below this).
pub const MAX_RECORD_LEN: usize = 256;

/// Envelope bytes around a body: kind, version, CRC-32.
pub const ENVELOPE_LEN: usize = 1 + 1 + 4;

/// The CRC of every record: CRC-32/ISCSI (Castagnoli, polynomial 0x1EDC6F41, reflected, initial
/// value and final XOR 0xFFFFFFFF), sent little-endian. It detects every error of up to 5 bits in
/// a record of this size. Computed bit by bit (no 1 KB lookup table): records are short and
/// written rarely.
pub const CRC: crc::Crc<u32, crc::NoTable> = crc::Crc::<u32, crc::NoTable>::new(&crc::CRC_32_ISCSI);

/// Longest compact record in bytes: what ZMS stores inside its 16-byte allocation-table entry
/// (`ZMS_DATA_IN_ATE_SIZE`).
pub const COMPACT_MAX_LEN: usize = 8;

/// Envelope bytes around the body of a compact record: version, CRC-16.
pub const COMPACT_ENVELOPE_LEN: usize = 1 + 2;

/// The CRC of compact records: CRC-16/IBM-3740 (polynomial 0x1021, initial value 0xFFFF, not
/// reflected), sent little-endian. It detects every error of up to 3 bits and every odd number
/// of bit errors in a record of this size.
pub const CRC16: crc::Crc<u16, crc::NoTable> =
    crc::Crc::<u16, crc::NoTable>::new(&crc::CRC_16_IBM_3740);

stable_enum! {
    /// The persisted record kinds: the first byte of each stored value. Declared in the order
    /// [`super::Persistence`] writes them: the secrets before the nonce reservation (BLE-3: a
    /// start with a new readout key stores the key, then its reservation, in one poll), a
    /// point after the record it belongs to.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum RecordKind {
        /// The pairing passkey and the Instant Readout key ([`DeviceSecrets`]), under
        /// `bms/secrets`.
        Secrets = 6 => "secrets",
        /// The Instant Readout nonce reservation ([`Nonce`]), under `bms/nonce`.
        Nonce = 4 => "nonce",
        /// The user settings ([`Settings`]), under `bms/settings`.
        Settings = 1 => "settings",
        /// The whole history ([`super::HistoryStored`]), under `bms/hist`.
        History = 3 => "history",
        /// The history's counted items since the whole record ([`super::HistoryCounts`]),
        /// under `bms/hcnt`.
        HistoryCounts = 10 => "history counts",
        /// The history's fast counters since the whole record ([`super::HistoryPoint`]),
        /// under `bms/hpt`.
        HistoryPoint = 9 => "history point",
        /// The monitor's whole SoC state ([`super::SocRecord`]), under `bms/soc`.
        Soc = 2 => "soc",
        /// The SoC charge counts written at every point ([`super::SocPoint`]), under `bms/point`.
        SocPoint = 5 => "soc point",
        /// What the adaptive SoC estimator has learned ([`crate::soc::Learned`]), under
        /// `bms/learn`.
        Learned = 7 => "learned",
        /// The device name ([`DeviceName`]), under `bms/name`.
        Name = 8 => "name",
    }
}

impl RecordKind {
    /// The key the record is stored under (a Zephyr settings name).
    pub const fn key(self) -> &'static str {
        match self {
            RecordKind::Settings => "bms/settings",
            RecordKind::Soc => "bms/soc",
            RecordKind::History => "bms/hist",
            RecordKind::HistoryPoint => "bms/hpt",
            RecordKind::HistoryCounts => "bms/hcnt",
            RecordKind::Nonce => "bms/nonce",
            RecordKind::SocPoint => "bms/point",
            RecordKind::Secrets => "bms/secrets",
            RecordKind::Learned => "bms/learn",
            RecordKind::Name => "bms/name",
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a record could not be encoded, read or applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Nothing is stored under the record's key.
    Missing,
    /// The store failed to read it.
    Storage(StorageError),
    /// Shorter than the envelope: cut off.
    Truncated {
        /// Bytes found.
        len: usize,
    },
    /// The CRC does not match: the bytes changed (or were cut) after writing.
    BadCrc,
    /// The value belongs to another record kind.
    WrongKind {
        /// The kind byte found.
        kind: u8,
    },
    /// Written in a format version this firmware does not know (a newer firmware wrote it).
    UnknownVersion {
        /// The version byte found.
        version: u8,
    },
    /// The CRC matched but the body does not decode in its version's format.
    Malformed,
    /// The body decodes but its values are not acceptable (settings out of range, SET-1).
    Invalid,
    /// The encoded record does not fit the buffer or [`MAX_RECORD_LEN`].
    TooLarge,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Missing => f.write_str("record missing"),
            RecordError::Storage(e) => write!(f, "record unreadable: {e}"),
            RecordError::Truncated { len } => {
                write!(f, "record truncated to {} bytes", Number::from(*len))
            }
            RecordError::BadCrc => f.write_str("record crc mismatch"),
            RecordError::WrongKind { kind } => {
                write!(f, "record of another kind {}", Number::from(*kind))
            }
            RecordError::UnknownVersion { version } => {
                write!(
                    f,
                    "record format version {} unknown",
                    Number::from(*version)
                )
            }
            RecordError::Malformed => f.write_str("record body does not decode"),
            RecordError::Invalid => f.write_str("record values out of range"),
            RecordError::TooLarge => write!(
                f,
                "record larger than {} bytes",
                Number::from(MAX_RECORD_LEN)
            ),
        }
    }
}

/// A value persisted under its own key, with its format version.
///
/// The body of the current version is the type's own serde encoding through postcard. When a
/// type changes, bump `VERSION`, freeze the old layout in a private struct, and map it in
/// [`Record::decode_body`]; `migration_v1_reads_as_current` keeps every older version readable.
pub trait Record: Serialize + DeserializeOwned {
    /// The kind byte and key.
    const KIND: RecordKind;
    /// The format version written now (1 = the first).
    const VERSION: u8;
    /// Stored in the compact envelope (version, body, CRC-16; at most [`COMPACT_MAX_LEN`]
    /// bytes) instead of the full one.
    const COMPACT: bool = false;

    /// Decodes a body of format `version` (1 ..= `VERSION`) into the current type.
    fn decode_body(version: u8, body: &[u8]) -> Result<Self, RecordError> {
        match version {
            v if v == Self::VERSION => decode_exact(body),
            version => Err(RecordError::UnknownVersion { version }),
        }
    }

    /// Checks the decoded values; a record that fails is not applied.
    fn check(&self) -> Result<(), RecordError> {
        Ok(())
    }
}

/// Decodes a postcard body that must use every byte.
pub fn decode_exact<T: DeserializeOwned>(body: &[u8]) -> Result<T, RecordError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((value, [])) => Ok(value),
        _ => Err(RecordError::Malformed),
    }
}

impl Record for Settings {
    const KIND: RecordKind = RecordKind::Settings;
    const VERSION: u8 = 1;

    fn check(&self) -> Result<(), RecordError> {
        self.validate().map_err(|_| RecordError::Invalid)
    }
}

/// The Instant Readout nonce reservation: the first nonce the advertiser may use after a
/// reboot (`readout::Advertiser::nonce_to_persist`). Encoded as two fixed bytes, so the whole
/// record is 8 bytes and fits inside one ZMS allocation-table entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nonce {
    /// The first nonce to use after a reboot.
    #[serde(with = "postcard::fixint::le")]
    pub next: u16,
}

impl Record for Nonce {
    const KIND: RecordKind = RecordKind::Nonce;
    const VERSION: u8 = 1;
}

/// Version 1 of the secrets record: passkey and key, before read protection.
#[derive(Deserialize)]
struct SecretsV1 {
    passkey: u32,
    adv_key: [u8; 16],
}

/// Version 2 of the secrets record: before the failed pairings against the passkey were kept.
#[derive(Deserialize)]
struct SecretsV2 {
    passkey: u32,
    adv_key: [u8; 16],
    read_protection: bool,
}

/// Version 3 of the secrets record: before the readout key's first nonce was kept.
#[derive(Deserialize)]
struct SecretsV3 {
    passkey: u32,
    adv_key: [u8; 16],
    read_protection: bool,
    failed_pairings: u8,
}

impl Record for DeviceSecrets {
    const KIND: RecordKind = RecordKind::Secrets;
    const VERSION: u8 = 4;

    fn decode_body(version: u8, body: &[u8]) -> Result<Self, RecordError> {
        match version {
            1 => decode_exact::<SecretsV1>(body).map(|v1| DeviceSecrets {
                passkey: v1.passkey,
                adv_key: v1.adv_key,
                read_protection: false,
                failed_pairings: 0,
                key_first_nonce: None,
            }),
            // The failures against the passkey before the update are not known: none.
            2 => decode_exact::<SecretsV2>(body).map(|v2| DeviceSecrets {
                passkey: v2.passkey,
                adv_key: v2.adv_key,
                read_protection: v2.read_protection,
                failed_pairings: 0,
                key_first_nonce: None,
            }),
            // BLE-3: which nonce the key started at is not known before version 4: its nonces
            // are counted from the reservation restored with it (`Config::from_restored`).
            3 => decode_exact::<SecretsV3>(body).map(|v3| DeviceSecrets {
                passkey: v3.passkey,
                adv_key: v3.adv_key,
                read_protection: v3.read_protection,
                failed_pairings: v3.failed_pairings,
                key_first_nonce: None,
            }),
            4 => decode_exact(body),
            version => Err(RecordError::UnknownVersion { version }),
        }
    }

    fn check(&self) -> Result<(), RecordError> {
        if self.passkey > MAX_PASSKEY {
            return Err(RecordError::Invalid);
        }
        Ok(())
    }
}

impl Record for DeviceName {
    const KIND: RecordKind = RecordKind::Name;
    const VERSION: u8 = 1;
}

/// Encodes `record` with its envelope into `buf`; returns the length.
pub fn encode_record<R: Record>(record: &R, buf: &mut [u8]) -> Result<usize, RecordError> {
    let limit = if R::COMPACT {
        COMPACT_MAX_LEN
    } else {
        MAX_RECORD_LEN
    };
    let buf = match buf.get_mut(..limit) {
        Some(capped) => capped,
        None => buf,
    };
    // Only the body is generic; the envelope is sealed by one copy of the code for every kind.
    let used = if R::COMPACT {
        postcard::to_slice(&(R::VERSION, record), buf)
    } else {
        postcard::to_slice(&(R::KIND as u8, R::VERSION, record), buf)
    }
    .map_err(|_| RecordError::TooLarge)?
    .len();
    seal(buf, used, R::KIND, R::COMPACT)
}

/// Appends the CRC to the `used` bytes of `buf` (CRC-16 over the kind and the bytes for a
/// compact record, CRC-32 over the bytes otherwise); returns the record's length.
#[inline(never)]
fn seal(
    buf: &mut [u8],
    used: usize,
    kind: RecordKind,
    compact: bool,
) -> Result<usize, RecordError> {
    let message = buf.get(..used).ok_or(RecordError::TooLarge)?;
    let (crc, crc_len) = if compact {
        (u32::from(compact_crc(kind, message)), 2)
    } else {
        (CRC.checksum(message), 4)
    };
    let len = used + crc_len;
    let crc = crc.to_le_bytes();
    let (Some(dst), Some(src)) = (buf.get_mut(used..len), crc.get(..crc_len)) else {
        return Err(RecordError::TooLarge);
    };
    dst.copy_from_slice(src);
    Ok(len)
}

/// Decodes a stored value of record type `R`: checks the CRC, the kind and the version, decodes
/// (migrating an older version) and checks the values.
pub fn decode_record<R: Record>(bytes: &[u8]) -> Result<R, RecordError> {
    decode_record_versioned(bytes).1
}

/// As [`decode_record`], with the stored format version when the envelope is intact (also
/// when the body then fails to decode).
pub(crate) fn decode_record_versioned<R: Record>(
    bytes: &[u8],
) -> (Option<u8>, Result<R, RecordError>) {
    match open(bytes, R::KIND, R::COMPACT) {
        Ok((version, body)) => (Some(version), decode_version(version, body)),
        Err(error) => (None, Err(error)),
    }
}

/// The CRC-16 of a compact record: over its kind (not stored, so a value under another kind's
/// key fails the check) and its bytes.
fn compact_crc(kind: RecordKind, message: &[u8]) -> u16 {
    let mut digest = CRC16.digest();
    digest.update(&[kind as u8]);
    digest.update(message);
    digest.finalize()
}

/// Checks the envelope of a stored value of `kind`; returns its format version and body.
#[inline(never)]
fn open(bytes: &[u8], kind: RecordKind, compact: bool) -> Result<(u8, &[u8]), RecordError> {
    let truncated = RecordError::Truncated { len: bytes.len() };
    let message = if compact {
        if bytes.len() < COMPACT_ENVELOPE_LEN {
            return Err(truncated);
        }
        if bytes.len() > COMPACT_MAX_LEN {
            return Err(RecordError::TooLarge);
        }
        let (message, crc_bytes) = bytes.split_last_chunk::<2>().ok_or(truncated)?;
        if compact_crc(kind, message) != u16::from_le_bytes(*crc_bytes) {
            return Err(RecordError::BadCrc);
        }
        message
    } else {
        if bytes.len() < ENVELOPE_LEN {
            return Err(truncated);
        }
        let (message, crc_bytes) = bytes.split_last_chunk::<4>().ok_or(truncated)?;
        if CRC.checksum(message) != u32::from_le_bytes(*crc_bytes) {
            return Err(RecordError::BadCrc);
        }
        let [stored_kind, rest @ ..] = message else {
            return Err(truncated);
        };
        if *stored_kind != kind as u8 {
            return Err(RecordError::WrongKind { kind: *stored_kind });
        }
        rest
    };
    match message {
        [version, body @ ..] => Ok((*version, body)),
        [] => Err(truncated),
    }
}

fn decode_version<R: Record>(version: u8, body: &[u8]) -> Result<R, RecordError> {
    if version == 0 || version > R::VERSION {
        return Err(RecordError::UnknownVersion { version });
    }
    let record = R::decode_body(version, body)?;
    record.check()?;
    Ok(record)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::history::{History, HistoryInput, HistoryRecord};
    use crate::monitor::{SocKnowledge, SocState};
    use crate::soc::Learned;
    use crate::storage::learned::LearnedRecord;
    use crate::storage::{HistoryCounts, HistoryPoint, HistoryStored, SocPoint, SocRecord};

    pub(crate) fn sample_settings() -> Settings {
        Settings {
            charged_cell_mv: 3450,
            tail_current_permille: 30,
            charged_detection_min: 5,
            low_soc_warning_pct: 25,
            discharge_floor_pct: 15,
            prealarm_cell_mv: 3050,
        }
    }

    pub(crate) fn sample_soc() -> SocState {
        SocState {
            knowledge: SocKnowledge::Known,
            capacity_mah: 200_000,
            used_nas: 123_456_789_000_000,
            consumed_nas: 120_000_000_000_000,
            since_full_charge_ms: Some(86_400_000),
            low_soc_warning: false,
            below_floor: false,
        }
    }

    pub(crate) fn sample_soc_record() -> SocRecord {
        SocRecord {
            generation: 9,
            state: sample_soc(),
            balanced_at_full: Some(false),
            undervoltage_disconnect: true,
        }
    }

    pub(crate) fn sample_point() -> SocPoint {
        SocPoint {
            generation: 9,
            used: 40_000,
            consumed: 9_000,
        }
    }

    pub(crate) fn sample_name() -> DeviceName {
        DeviceName::new("Boat 2").unwrap()
    }

    pub(crate) fn sample_secrets() -> DeviceSecrets {
        DeviceSecrets {
            passkey: 123_456,
            adv_key: [0x5A; 16],
            read_protection: false,
            failed_pairings: 0,
            key_first_nonce: Some(0xBEEF),
        }
    }

    pub(crate) fn sample_learned() -> Learned {
        Learned {
            capacity_mah: 200_000,
            offset_ma: (-12.5, 20.0),
            throughput_error: (0.004, 0.008),
            table_bias_low: [
                (0.01, 0.02),
                (-0.03, 0.1),
                (0.05, 0.15),
                (0.0, 0.2),
                (0.02, 0.21),
                (-0.1, 0.2),
            ],
            table_bias_high: (0.003, 0.01),
            capacity_factor: (0.96, 0.02),
        }
    }

    pub(crate) fn sample_history() -> HistoryRecord {
        let mut history = History::default();
        let mut input = HistoryInput {
            bank_mv: 13_200,
            bank_ma: -20_000,
            min_cell_mv: Some(3290),
            max_cell_mv: Some(3310),
            min_temp_ddegc: Some(180),
            max_temp_ddegc: Some(240),
            soc_permille: Some(600),
            consumed_mah: 80_000,
            synchronised: false,
        };
        let _ = history.update(0, &input);
        input.bank_mv = 13_100;
        let _ = history.update(3_600_000, &input);
        history.record_error(3);
        *history.record()
    }

    pub(crate) fn sample_history_stored() -> HistoryStored {
        HistoryStored {
            generation: 2,
            history: sample_history(),
        }
    }

    pub(crate) fn sample_history_point() -> HistoryPoint {
        HistoryPoint {
            generation: 2,
            since: 0x85,
            drawn: 1023,
            discharged: 512,
            charged: 7,
        }
    }

    pub(crate) fn sample_history_counts() -> HistoryCounts {
        HistoryCounts {
            generation: 2,
            cycle_started: true,
            sync_armed: false,
            cycles: 7,
            synchronisations: 3,
            deepest: 1000,
            errors: [17, 3, 31, 0],
        }
    }

    fn encode<R: Record>(record: &R) -> std::vec::Vec<u8> {
        let mut buf = [0u8; MAX_RECORD_LEN];
        let len = encode_record(record, &mut buf).unwrap();
        buf[..len].to_vec()
    }

    fn unhex(text: &str) -> std::vec::Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Every single-bit flip and every truncation of `bytes` is refused (SET-3).
    fn assert_every_corruption_detected<R: Record + core::fmt::Debug>(bytes: &[u8]) {
        for len in 0..bytes.len() {
            assert!(
                decode_record::<R>(&bytes[..len]).is_err(),
                "{:?} truncated to {len} bytes decoded",
                R::KIND
            );
        }
        for bit in 0..bytes.len() * 8 {
            let mut corrupt = bytes.to_vec();
            corrupt[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_record::<R>(&corrupt).is_err(),
                "{:?} with bit {bit} flipped decoded",
                R::KIND
            );
        }
    }

    #[test]
    fn the_crc_is_crc32_iscsi() {
        // The standard check value of CRC-32/ISCSI over "123456789".
        assert_eq!(CRC.checksum(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn every_record_kind_round_trips() {
        assert_eq!(
            decode_record::<Settings>(&encode(&sample_settings())),
            Ok(sample_settings())
        );
        assert_eq!(
            decode_record::<SocRecord>(&encode(&sample_soc_record())),
            Ok(sample_soc_record())
        );
        assert_eq!(
            decode_record::<SocPoint>(&encode(&sample_point())),
            Ok(sample_point())
        );
        assert_eq!(
            decode_record::<HistoryStored>(&encode(&sample_history_stored())),
            Ok(sample_history_stored())
        );
        assert_eq!(
            decode_record::<HistoryPoint>(&encode(&sample_history_point())),
            Ok(sample_history_point())
        );
        assert_eq!(
            decode_record::<HistoryCounts>(&encode(&sample_history_counts())),
            Ok(sample_history_counts())
        );
        let nonce = Nonce { next: 0xBEEF };
        assert_eq!(decode_record::<Nonce>(&encode(&nonce)), Ok(nonce));
        assert_eq!(
            decode_record::<DeviceSecrets>(&encode(&sample_secrets())),
            Ok(sample_secrets())
        );
        assert_eq!(
            decode_record::<LearnedRecord>(&encode(&LearnedRecord(sample_learned()))),
            Ok(LearnedRecord(sample_learned()))
        );
    }

    /// The largest whole history record (every count at its maximum): the bound `storage_wear`
    /// uses for the live data ZMS copies at each garbage collection.
    #[test]
    fn the_history_record_is_at_most_139_bytes() {
        let history = HistoryRecord {
            deepest_discharge_mah: u32::MAX,
            drawn_mah: u64::MAX,
            drawn_rem_nas: u64::MAX,
            discharged_mwh: u64::MAX,
            discharged_rem_nj: u64::MAX,
            charged_mwh: u64::MAX,
            charged_rem_nj: u64::MAX,
            synchronisations: u32::MAX,
            cycles: u32::MAX,
            since_full_charge_ms: Some(u64::MAX),
            min_bank_mv: Some(u32::MAX),
            max_bank_mv: Some(u32::MAX),
            min_cell_mv: Some(u16::MAX),
            max_cell_mv: Some(u16::MAX),
            min_temp_ddegc: Some(i16::MIN),
            max_temp_ddegc: Some(i16::MIN),
            last_errors: [Some(u16::MAX); 4],
            cycle_started: true,
            sync_armed: true,
        };
        let stored = HistoryStored {
            generation: 3,
            history,
        };
        assert_eq!(encode(&stored).len(), 139);
    }

    #[test]
    fn the_learned_record_is_91_bytes() {
        for capacity_mah in [1, 200_000, u32::MAX] {
            let learned = Learned {
                capacity_mah,
                ..sample_learned()
            };
            assert_eq!(encode(&LearnedRecord(learned)).len(), 91);
        }
    }

    /// The secrets record (version 4) is 27–31 bytes, as docs/persistence.md says.
    #[test]
    fn the_secrets_record_is_27_to_31_bytes() {
        let smallest = DeviceSecrets {
            passkey: 1,
            key_first_nonce: Some(0),
            ..sample_secrets()
        };
        let largest = DeviceSecrets {
            passkey: MAX_PASSKEY,
            failed_pairings: u8::MAX,
            key_first_nonce: Some(u16::MAX),
            ..sample_secrets()
        };
        assert_eq!(encode(&smallest).len(), 27);
        assert_eq!(encode(&largest).len(), 31);
    }

    #[test]
    fn the_nonce_and_point_records_fit_a_zms_entry() {
        assert_eq!(encode(&Nonce { next: u16::MAX }).len(), 8);
        assert_eq!(encode(&sample_history_point()).len(), COMPACT_MAX_LEN);
        assert_eq!(encode(&sample_history_counts()).len(), COMPACT_MAX_LEN);
        let largest = SocPoint {
            generation: u8::MAX,
            used: u16::MAX,
            consumed: u16::MAX,
        };
        assert_eq!(encode(&largest).len(), COMPACT_MAX_LEN);
    }

    #[test]
    fn a_compact_record_checks_its_kind_through_the_crc() {
        let bytes = encode(&sample_point());
        assert_eq!(bytes[0], SocPoint::VERSION);
        let mut digest = CRC16.digest();
        digest.update(&[RecordKind::SocPoint as u8]);
        digest.update(&bytes[..bytes.len() - 2]);
        assert_eq!(digest.finalize().to_le_bytes(), bytes[bytes.len() - 2..]);
        // The same bytes sealed for another kind are refused.
        let mut other = CRC16.digest();
        other.update(&[RecordKind::Nonce as u8]);
        other.update(&bytes[..bytes.len() - 2]);
        let mut wrong = bytes[..bytes.len() - 2].to_vec();
        wrong.extend_from_slice(&other.finalize().to_le_bytes());
        assert_eq!(decode_record::<SocPoint>(&wrong), Err(RecordError::BadCrc));
        assert_eq!(
            decode_record::<SocPoint>(&[0; COMPACT_MAX_LEN + 1]),
            Err(RecordError::TooLarge)
        );
        assert_eq!(
            decode_record::<SocPoint>(&bytes[..2]),
            Err(RecordError::Truncated { len: 2 })
        );
    }

    #[test]
    fn the_crc16_is_crc16_ibm_3740() {
        // The standard check value of CRC-16/IBM-3740 over "123456789".
        assert_eq!(CRC16.checksum(b"123456789"), 0x29B1);
    }

    /// SET-3: stored data carries a format version and a checksum; every single-bit flip and
    /// every truncation of every record kind is detected (exhaustive over a sample of each).
    #[test]
    fn set_3_every_bit_flip_and_truncation_of_every_record_kind_is_detected() {
        for kind in RecordKind::ALL {
            // Exhaustive: a new kind does not compile until it is covered here.
            match kind {
                RecordKind::Settings => {
                    assert_every_corruption_detected::<Settings>(&encode(&sample_settings()))
                }
                RecordKind::Soc => {
                    assert_every_corruption_detected::<SocRecord>(&encode(&sample_soc_record()))
                }
                RecordKind::SocPoint => {
                    assert_every_corruption_detected::<SocPoint>(&encode(&sample_point()))
                }
                RecordKind::History => assert_every_corruption_detected::<HistoryStored>(&encode(
                    &sample_history_stored(),
                )),
                RecordKind::HistoryPoint => assert_every_corruption_detected::<HistoryPoint>(
                    &encode(&sample_history_point()),
                ),
                RecordKind::HistoryCounts => assert_every_corruption_detected::<HistoryCounts>(
                    &encode(&sample_history_counts()),
                ),
                RecordKind::Nonce => {
                    assert_every_corruption_detected::<Nonce>(&encode(&Nonce { next: 0x1234 }))
                }
                RecordKind::Secrets => {
                    assert_every_corruption_detected::<DeviceSecrets>(&encode(&sample_secrets()))
                }
                // MON-8: the learned values are refused whole when damaged (priors used).
                RecordKind::Learned => assert_every_corruption_detected::<LearnedRecord>(&encode(
                    &LearnedRecord(sample_learned()),
                )),
                RecordKind::Name => {
                    assert_every_corruption_detected::<DeviceName>(&encode(&sample_name()))
                }
            }
        }
    }

    #[test]
    fn kinds_are_counted_and_indexed_once() {
        let mut seen = [false; RecordKind::COUNT];
        for kind in RecordKind::ALL {
            assert!(!core::mem::replace(&mut seen[kind.index()], true), "{kind}");
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn envelope_errors_are_named() {
        let good = encode(&sample_settings());
        assert_eq!(
            decode_record::<Settings>(&good[..3]),
            Err(RecordError::Truncated { len: 3 })
        );
        let mut bad_crc = good.clone();
        bad_crc[3] ^= 0x10;
        assert_eq!(
            decode_record::<Settings>(&bad_crc),
            Err(RecordError::BadCrc)
        );
        assert_eq!(
            decode_record::<SocRecord>(&good),
            Err(RecordError::WrongKind { kind: 1 })
        );
    }

    /// Re-seals `message` (kind, version, body) with a correct CRC, as a buggy or future writer
    /// would produce it.
    fn seal(message: &[u8]) -> std::vec::Vec<u8> {
        let mut bytes = message.to_vec();
        bytes.extend_from_slice(&CRC.checksum(message).to_le_bytes());
        bytes
    }

    #[test]
    fn newer_version_extra_bytes_and_bad_values_are_refused() {
        let good = encode(&sample_settings());
        let message = &good[..good.len() - 4];
        let mut newer = message.to_vec();
        newer[1] = 2;
        assert_eq!(
            decode_record::<Settings>(&seal(&newer)),
            Err(RecordError::UnknownVersion { version: 2 })
        );
        newer[1] = 0;
        assert_eq!(
            decode_record::<Settings>(&seal(&newer)),
            Err(RecordError::UnknownVersion { version: 0 })
        );
        let mut longer = message.to_vec();
        longer.push(0);
        assert_eq!(
            decode_record::<Settings>(&seal(&longer)),
            Err(RecordError::Malformed)
        );
        let out_of_range = Settings {
            charged_cell_mv: 4000,
            ..sample_settings()
        };
        let mut buf = [0u8; MAX_RECORD_LEN];
        let len = encode_record(&out_of_range, &mut buf).unwrap();
        assert_eq!(
            decode_record::<Settings>(&buf[..len]),
            Err(RecordError::Invalid)
        );
        // BLE-2: a passkey beyond 999999 is never applied.
        let bad_passkey = DeviceSecrets {
            passkey: MAX_PASSKEY + 1,
            ..sample_secrets()
        };
        assert_eq!(
            decode_record::<DeviceSecrets>(&encode(&bad_passkey)),
            Err(RecordError::Invalid)
        );
    }

    #[test]
    fn encoding_into_a_small_buffer_fails_cleanly() {
        let mut buf = [0u8; 5];
        assert_eq!(
            encode_record(&sample_settings(), &mut buf),
            Err(RecordError::TooLarge)
        );
    }

    /// Version 1 of every record, frozen as first written. A later firmware must keep decoding
    /// these bytes into its current types (migrating in `Record::decode_body`); if a record type
    /// changes without a new version and a migration, this test fails.
    const V1_SETTINGS: &str = "0101fa1a1e05190fea17670f8833";
    const V1_SOC: &str = "020102c09a0c80bdede09092388080fcd5f5c8360180b89929000078114073";
    /// Version 2 of the SoC record (generation and state), frozen the same way.
    const V2_SOC: &str = "02020902c09a0c80bdede09092388080fcd5f5c8360180b899290000763e724b";
    /// Version 3 of the SoC record (with the balancer's judgement), frozen the same way.
    const V3_SOC: &str = "02030902c09a0c80bdede09092388080fcd5f5c8360180b8992900000100d11c155f";
    const V1_NONCE: &str = "0401efbea6f04f14";
    const V1_POINT: &str = "0109409c28233f9d";
    const V1_SECRETS: &str = "0601c0c4075a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a44e53ffc";
    const V2_SECRETS: &str = "0602c0c4075a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a0020607ec3";
    /// Version 3 of the secrets record (with 3 failed pairings), before the key's first nonce.
    const V3_SECRETS: &str = "0603c0c4075a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a0003afbe463d";
    const V1_LEARNED: &str = concat!(
        "070154400d0300000048c10000a0416f12833b6f12033ca69b443b0ad7233c8fc2753f0ad7a33c0ad7233c",
        "0ad7a33c8fc2f5bccdcccc3dcdcc4c3d9a99193e00000000cdcc4c3e0ad7a33c3d0a573ecdccccbdcdcc4c",
        "3e31296a97",
    );
    /// Version 1 of the history point and counts (`sample_history_point`, `_counts`).
    const V1_HISTORY_POINT: &str = "0116fe0fe001c847";
    const V1_HISTORY_COUNTS: &str = "01f6a11fc70747b9";
    const V1_HISTORY: &str = concat!(
        "030180f104cd0280989abc049f2280989abc04000000000001ac6601906701da1901ee1901e802",
        "01e003010300000001015e410ab7"
    );

    #[test]
    fn migration_v1_reads_as_current() {
        assert_eq!(
            decode_record::<Settings>(&unhex(V1_SETTINGS)),
            Ok(sample_settings())
        );
        // Version 1 of the SoC record was the bare state: generation 0, which no point has;
        // neither it nor version 2 held the balancer's judgement; none of 1 to 3 held the
        // under-voltage latch (PROT-2), which reads as not latched.
        assert_eq!(
            decode_record::<SocRecord>(&unhex(V1_SOC)),
            Ok(SocRecord {
                generation: 0,
                state: sample_soc(),
                balanced_at_full: None,
                undervoltage_disconnect: false,
            })
        );
        assert_eq!(
            decode_record::<SocRecord>(&unhex(V2_SOC)),
            Ok(SocRecord {
                balanced_at_full: None,
                undervoltage_disconnect: false,
                ..sample_soc_record()
            })
        );
        assert_eq!(
            decode_record::<SocRecord>(&unhex(V3_SOC)),
            Ok(SocRecord {
                undervoltage_disconnect: false,
                ..sample_soc_record()
            })
        );
        assert_eq!(
            decode_record::<SocPoint>(&unhex(V1_POINT)),
            Ok(sample_point())
        );
        // Versions 1 to 3 did not keep the readout key's first nonce (BLE-3): not known.
        let before_v4 = DeviceSecrets {
            key_first_nonce: None,
            ..sample_secrets()
        };
        assert_eq!(
            decode_record::<DeviceSecrets>(&unhex(V1_SECRETS)),
            Ok(before_v4)
        );
        // Version 2 (read protection, before the failed pairings were kept): none failed.
        assert_eq!(
            decode_record::<DeviceSecrets>(&unhex(V2_SECRETS)),
            Ok(before_v4)
        );
        assert_eq!(
            decode_record::<DeviceSecrets>(&unhex(V3_SECRETS)),
            Ok(DeviceSecrets {
                failed_pairings: 3,
                ..before_v4
            })
        );
        assert_eq!(
            decode_record::<Nonce>(&unhex(V1_NONCE)),
            Ok(Nonce { next: 0xBEEF })
        );
        assert_eq!(
            decode_record::<LearnedRecord>(&unhex(V1_LEARNED)),
            Ok(LearnedRecord(sample_learned()))
        );
        // Version 1 of the history was the bare record: generation 0, which only the points a
        // later firmware writes on top of it carry.
        let stored = decode_record::<HistoryStored>(&unhex(V1_HISTORY)).unwrap();
        assert_eq!(stored.generation, 0);
        let record = stored.history;
        let mut v1 = std::vec![RecordKind::History as u8, 1];
        v1.extend_from_slice(&postcard::to_allocvec(&record).unwrap());
        v1.extend_from_slice(&CRC.checksum(&v1).to_le_bytes());
        assert_eq!(v1, unhex(V1_HISTORY), "version 1 is the bare record");
        assert_eq!(
            decode_record::<HistoryPoint>(&unhex(V1_HISTORY_POINT)),
            Ok(sample_history_point())
        );
        assert_eq!(
            decode_record::<HistoryCounts>(&unhex(V1_HISTORY_COUNTS)),
            Ok(sample_history_counts())
        );
        let history = History::from(record);
        assert_eq!(history.min_cell_mv(), Some(3290));
        assert_eq!(history.max_cell_mv(), Some(3310));
        assert_eq!(history.max_temp_ddegc(), Some(240));
        assert_eq!(history.last_errors(), [Some(3), None, None, None]);
    }
}
