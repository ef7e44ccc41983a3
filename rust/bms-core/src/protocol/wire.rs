//! The wire format of the GATT protocol: version byte, status numbers, characteristic numbers
//! and UUIDs, the control-point commands and the request/response codec. Specified in
//! `docs/protocol.md`; the exact bytes are pinned by `tests/protocol.rs`.

use core::fmt;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::settings::{Settings, SettingsError, SettingsField};
use crate::word::Number;

/// Protocol version: the first byte of every request that has a body and of every response.
pub const VERSION: u8 = 1;

/// Longest request accepted, in bytes; longer ones get [`Status::Oversized`] without decoding.
pub const MAX_REQUEST_LEN: usize = 32;

/// Longest response, in bytes: one ATT payload at an MTU of 247 (the usual LE Data Length
/// Extension MTU). The response buffer given to [`handle_request`](super::handle_request) must
/// hold this many bytes.
pub const MAX_RESPONSE_LEN: usize = 244;

/// Highest SoC a [`Command::SetSoc`] accepts, in 0.1 % (MON-4).
pub const MAX_SOC_PERMILLE: u16 = 1000;

use crate::limits::MAX_BONDS;
pub use crate::pairing::Bond;
pub use crate::secrets::{DeviceSecrets, MAX_PASSKEY, MIN_PASSKEY};
use crate::stable_enum::stable_enum;

/// The 128-bit UUID of the primary service. The characteristics share its base and differ in
/// the second 16-bit group: `fde4NNNN-2435-4d33-8157-077d40b73501`, NNNN = 0001 for the service,
/// 0002 + characteristic number − 1 for each [`Characteristic`].
pub const SERVICE_UUID: u128 = uuid(1);

const fn uuid(short: u16) -> u128 {
    0xfde4_0000_2435_4d33_8157_077d_40b7_3501 | ((short as u128) << 96)
}

stable_enum! {
    /// The characteristics of the service; the number is what the firmware passes to
    /// [`handle_request`](super::handle_request) (and `bms_gatt_request`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Characteristic {
        /// Status page: read, notify ([`StatusPage`](super::StatusPage)).
        Status = 1 => "status",
        /// Battery bank page: read ([`BankPage`](super::BankPage)).
        Bank = 2 => "bank",
        /// One battery: write a [`BatterySelect`] to choose it, read its
        /// [`BatteryPage`](super::BatteryPage).
        Battery = 3 => "battery",
        /// History page: read ([`HistoryPage`](super::HistoryPage)).
        History = 4 => "history",
        /// Settings: read, write ([`Settings`]).
        Settings = 5 => "settings",
        /// Control point: write a [`Command`], the response is indicated.
        ControlPoint = 6 => "control_point",
        /// Device name: read, write (authenticated) a
        /// [`DeviceName`](crate::name::DeviceName) (BLE-1).
        DeviceName = 7 => "device_name",
        /// State of charge: read ([`SocPage`](super::SocPage): how it is known, its
        /// uncertainty).
        Soc = 8 => "soc",
    }
}

impl Characteristic {
    /// Its 128-bit UUID (see [`SERVICE_UUID`]).
    pub const fn uuid(self) -> u128 {
        uuid(self as u16 + 1)
    }
}

/// The kind of GATT access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A read (the request is empty, or the battery selector kept for the connection).
    Read,
    /// A write (the request is the written value).
    Write,
}

stable_enum! {
    /// Result of a request, the second byte of every response. Numbers never change.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub enum Status {
        /// Done; the body holds the page or the action's result.
        Ok = 0 => "ok",
        /// The request ended before its message did (also an empty write).
        Truncated = 1 => "truncated",
        /// The request is longer than [`MAX_REQUEST_LEN`] or has bytes after its message.
        Oversized = 2 => "oversized",
        /// The request's version byte is not [`VERSION`]; the response's first byte is.
        UnknownVersion = 3 => "unknown_version",
        /// The control-point command number is unknown.
        UnknownCommand = 4 => "unknown_command",
        /// The bytes do not decode as the message (bad varint, bool or enum value, too many cells).
        Malformed = 5 => "malformed",
        /// A write or action on a link that is not authenticated (BLE-2).
        NotAuthenticated = 6 => "not_authenticated",
        /// A value is out of range; the body is a [`Refusal`] naming the field and the range.
        InvalidValue = 7 => "invalid_value",
        /// The selected battery does not exist.
        NoSuchBattery = 8 => "no_such_battery",
        /// The action is not possible now (e.g. set SoC before a bank was seen).
        NotAvailable = 9 => "not_available",
        /// The characteristic number is unknown.
        UnknownCharacteristic = 10 => "unknown_characteristic",
        /// The characteristic does not support this access (e.g. a write to the status page).
        UnsupportedAccess = 11 => "unsupported_access",
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Truncated => "request truncated",
            Status::Oversized => "request too long",
            Status::UnknownVersion => "unknown protocol version",
            Status::UnknownCommand => "unknown command",
            Status::Malformed => "malformed request",
            Status::NotAuthenticated => "link not authenticated",
            Status::InvalidValue => "value out of range",
            Status::NoSuchBattery => "no such battery",
            Status::NotAvailable => "not available now",
            Status::UnknownCharacteristic => "unknown characteristic",
            Status::UnsupportedAccess => "access not supported by the characteristic",
        })
    }
}

/// Errors of the caller (not of the request): nothing was decoded or changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The output buffer is too small; it must hold `required` bytes.
    BufferTooSmall {
        /// Bytes the buffer must hold.
        required: usize,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::BufferTooSmall { required } => {
                write!(
                    f,
                    "buffer too small: {} bytes required",
                    Number::from(*required)
                )
            }
        }
    }
}

/// A control-point action (BLE-1). On the wire: the variant number as a varint, then its
/// fields. Every action needs an authenticated link (BLE-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// 0: set the SoC to `soc_permille` (0–1000) now (MON-4).
    SetSoc {
        /// The new SoC in 0.1 %.
        soc_permille: u16,
    },
    /// 1: synchronise the SoC to 100 % now (MON-4).
    Synchronise,
    /// 2: clear every history item (HIST-4).
    ResetHistory,
    /// 3: restore the factory settings (SET-4).
    ResetToDefaults,
    /// 4: change the pairing passkey (1–999999) for the next pairing, and remove every bond
    /// but the asking phone's (BLE-2).
    ChangePasskey {
        /// The new six-digit passkey.
        passkey: u32,
    },
    /// 5: read the Instant Readout key (BLE-3); the body is an [`AdvertisementKey`].
    ReadAdvertisementKey,
    /// 6: list the bonds (BLE-2); the body is a [`BondList`].
    ListBonds,
    /// 7: remove one bond (BLE-2); [`Status::NotAvailable`] when there is no such bond.
    RemoveBond {
        /// The bond, as [`Command::ListBonds`] lists it.
        bond: Bond,
    },
    /// 8: forget every lost battery, after one was taken out on purpose (BANK-4); the body is a
    /// [`ForgottenBatteries`].
    ForgetLostBatteries,
    /// 9: make a new Instant Readout key (BLE-3); the body is the new [`AdvertisementKey`]
    /// (decoders need it).
    NewReadoutKey,
    /// 10: monitoring reads need an authenticated link (`true`) or are open (`false`, the
    /// default) (BLE-2).
    SetReadProtection {
        /// Read protection on.
        enabled: bool,
    },
}

impl Command {
    /// Number of commands: command numbers are `0..COUNT`.
    pub const COUNT: u32 = 11;
}

/// Body of the [`Command::ListBonds`] response: the security state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BondList {
    /// Monitoring reads need an authenticated link ([`Command::SetReadProtection`]).
    pub read_protection: bool,
    /// The bonds the device holds (at most 4).
    pub bonds: heapless::Vec<Bond, MAX_BONDS>,
}

/// Body of the [`Command::ForgetLostBatteries`] response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgottenBatteries {
    /// How many lost batteries were forgotten.
    pub count: u8,
}

/// Selects the battery the Battery characteristic returns (0-based, in serial-number order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatterySelect {
    /// Battery number, 0-based.
    pub number: u8,
}

/// Body of a [`Status::InvalidValue`] response: which field and its allowed range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The field: a [`SettingsField`] number for a settings write, 0 for a command's argument.
    pub field: u8,
    /// Smallest allowed value, in the field's unit.
    pub min: u32,
    /// Largest allowed value, in the field's unit.
    pub max: u32,
}

impl From<SettingsError> for Refusal {
    fn from(error: SettingsError) -> Refusal {
        match error {
            SettingsError::OutOfRange {
                field, min, max, ..
            } => Refusal {
                field: field as u8,
                min: u32::from(min),
                max: u32::from(max),
            },
            SettingsError::WarningNotAboveFloor { floor_pct, .. } => {
                let max = u32::from(SettingsField::LowSocWarningLevel.bounds().max);
                let min = u32::from(floor_pct).saturating_add(1);
                // With the floor at the top no level is above it: only 0 (off) is accepted,
                // never an empty range (SET-1).
                let (min, max) = if min > max { (0, 0) } else { (min, max) };
                Refusal {
                    field: SettingsField::LowSocWarningLevel as u8,
                    min,
                    max,
                }
            }
        }
    }
}

/// Body of the [`Command::ReadAdvertisementKey`] response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertisementKey {
    /// The 128-bit AES key of the Instant Readout (16 raw bytes on the wire).
    pub key: [u8; 16],
}

fn decode_error(error: postcard::Error) -> Status {
    match error {
        postcard::Error::DeserializeUnexpectedEnd => Status::Truncated,
        _ => Status::Malformed,
    }
}

/// Strip and check the version byte of a request.
fn body_of(req: &[u8]) -> Result<&[u8], Status> {
    match req.split_first() {
        None => Err(Status::Truncated),
        Some((&VERSION, body)) => Ok(body),
        Some(_) => Err(Status::UnknownVersion),
    }
}

/// Decode a request: the version byte, then exactly one postcard-encoded `T`. Errors are the
/// statuses the response carries.
pub fn decode_request<T: DeserializeOwned>(req: &[u8]) -> Result<T, Status> {
    if req.len() > MAX_REQUEST_LEN {
        return Err(Status::Oversized);
    }
    let (value, rest) = postcard::take_from_bytes::<T>(body_of(req)?).map_err(decode_error)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(Status::Oversized)
    }
}

/// Decode a control-point request, telling an unknown command number
/// ([`Status::UnknownCommand`]) from a malformed or truncated known one.
pub fn decode_command(req: &[u8]) -> Result<Command, Status> {
    if req.len() > MAX_REQUEST_LEN {
        return Err(Status::Oversized);
    }
    let (number, _) = postcard::take_from_bytes::<u32>(body_of(req)?).map_err(decode_error)?;
    if number >= Command::COUNT {
        return Err(Status::UnknownCommand);
    }
    decode_request(req)
}

/// Decode a settings write (not yet range-checked: see [`Settings::validate`]).
pub fn decode_settings(req: &[u8]) -> Result<Settings, Status> {
    decode_request(req)
}

/// Encode a request (the client side): the version byte, then `message`. Returns its length.
pub fn encode_request<T: Serialize>(message: &T, out: &mut [u8]) -> Result<usize, ProtocolError> {
    encode_versioned(&[VERSION], message, out)
}

/// Encode a response: version, `status`, then `body` if any. Returns its length.
pub fn encode_response<T: Serialize>(
    status: Status,
    body: Option<&T>,
    out: &mut [u8],
) -> Result<usize, ProtocolError> {
    match body {
        Some(body) => encode_versioned(&[VERSION, status as u8], body, out),
        None => encode_versioned(&[VERSION, status as u8], &(), out),
    }
}

fn encode_versioned<T: Serialize>(
    head: &[u8],
    message: &T,
    out: &mut [u8],
) -> Result<usize, ProtocolError> {
    let too_small = ProtocolError::BufferTooSmall {
        required: MAX_RESPONSE_LEN,
    };
    let (h, rest) = out.split_at_mut_checked(head.len()).ok_or(too_small)?;
    h.copy_from_slice(head);
    let used = postcard::to_slice(message, rest)
        .map_err(|_| too_small)?
        .len();
    Ok(head.len().saturating_add(used))
}

/// Split a response (the client side) into its status and body; the body decodes with
/// [`decode_body`]. Fails on an empty response or an unknown version or status.
pub fn decode_response(resp: &[u8]) -> Result<(Status, &[u8]), Status> {
    match resp {
        [VERSION, status, body @ ..] => {
            Ok((Status::from_u8(*status).ok_or(Status::Malformed)?, body))
        }
        [_, _, ..] => Err(Status::UnknownVersion),
        _ => Err(Status::Truncated),
    }
}

/// Decode a response body as exactly one `T`.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Status> {
    let (value, rest) = postcard::take_from_bytes::<T>(body).map_err(decode_error)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(Status::Oversized)
    }
}
