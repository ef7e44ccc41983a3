//! The C-visible data: status codes, sizes and `#[repr(C)]` types, with their conversions from
//! and to bms-core's.

use bms_core::{Decisions, DfuEvent, Inputs, LedPattern, Reason};

/// Success.
pub const BMS_OK: i32 = 0;
/// The record does not exist (`-ENOENT`; returned by `bms_port_storage_read`).
pub const BMS_ENOENT: i32 = -2;
/// Storage failed (`-EIO`; returned by the `bms_port_storage_*` functions).
pub const BMS_EIO: i32 = -5;
/// Not possible yet, try again after the next step (`-EAGAIN`): no advertisement nonce is
/// stored yet.
pub const BMS_EAGAIN: i32 = -11;
/// Another `bms_*` call is running (`-EBUSY`): the threading contract was broken (another
/// thread's call, or a `bms_port_*` callback calling back in). Every function returns it then,
/// changing nothing.
pub const BMS_EBUSY: i32 = -16;
/// A bad argument: null or misaligned pointer, wrong handle, value out of range (`-EINVAL`).
pub const BMS_EINVAL: i32 = -22;
/// The caller's buffer is too small (`-ENOSPC`).
pub const BMS_ENOSPC: i32 = -28;
/// The firmware self-check failed: do not confirm the image (Zephyr's `-ETIMEDOUT`).
pub const BMS_ETIMEDOUT: i32 = -110;

/// `bms_next_deadline_ms` stores this when no step is due at any time.
pub const BMS_NO_DEADLINE: u64 = u64::MAX;

/// The response buffer of `bms_gatt_request` must hold this many bytes (an ATT MTU of 247).
pub const BMS_GATT_RESPONSE_MAX: usize = 244;

/// Length of the manufacturer data `bms_advertisement` builds (company id included).
pub const BMS_ADVERTISEMENT_LEN: usize = 26;

/// Longest request `bms_gatt_request` accepts; a longer one gets `BMS_STATUS_OVERSIZED`.
pub const BMS_GATT_REQUEST_MAX: usize = 32;

/// Longest device name `bms_device_name` gives, in bytes (its buffer holds one more, the NUL).
pub const BMS_DEVICE_NAME_MAX: usize = 18;
const _: () = assert!(BMS_DEVICE_NAME_MAX == bms_core::name::MAX_NAME_LEN);
/// Index of the status byte (`bms_status`) in every `bms_gatt_request` response; byte 0 is
/// the protocol version.
pub const BMS_RESPONSE_STATUS_OFFSET: usize = 1;
/// A refused GATT write answers the ATT application error `BMS_ATT_ERROR_BASE + status`.
pub const BMS_ATT_ERROR_BASE: u8 = 0x80;
/// Highest pairing passkey `bms_passkey` gives (six decimal digits).
pub const BMS_PASSKEY_MAX: u32 = 999_999;
/// Longest key, without its terminating NUL, that the `bms_port_storage_*` functions get.
pub const BMS_STORAGE_KEY_MAX_LEN: usize = 15;
/// A `BMS_LED_BLINK` LED is lit this long, then dark for `BMS_LED_BLINK_OFF_MS`.
pub const BMS_LED_BLINK_ON_MS: u32 = 100;
/// A `BMS_LED_BLINK` LED is dark this long after each `BMS_LED_BLINK_ON_MS`.
pub const BMS_LED_BLINK_OFF_MS: u32 = 900;
/// The core stores a user's change (settings, name, secrets, a manual SoC) at most this often;
/// the platform holds its own copies of such values (the BLE stack's name) to the same pace.
pub const BMS_USER_WRITE_INTERVAL_MS: u32 = 10_000;
/// The request buffer of `bms_line_poll` must hold this many bytes.
pub const BMS_LINE_REQUEST_MAX: usize = 16;
/// Most packs on one battery line (`bms_line_configure`).
pub const BMS_LINE_MAX_PACKS: usize = 16;
/// Bytes of the output state `bms_retained` writes for retained RAM (PROT-1).
pub const BMS_RETAINED_LEN: usize = 16;
// The numbers above are literals for cbindgen; they must be the core's.
const _: () = assert!(BMS_LINE_REQUEST_MAX == bms_core::drivers::MAX_REQUEST_LEN);
const _: () = assert!(BMS_LINE_MAX_PACKS == bms_core::drivers::MAX_PACKS_PER_LINE);
const _: () = assert!(BMS_RETAINED_LEN == bms_core::retained::RETAINED_LEN);
const _: () = assert!(BMS_GATT_RESPONSE_MAX == bms_core::protocol::MAX_RESPONSE_LEN);
const _: () = assert!(BMS_ADVERTISEMENT_LEN == bms_core::readout::MANUFACTURER_DATA_LEN);
const _: () = assert!(BMS_GATT_REQUEST_MAX == bms_core::protocol::MAX_REQUEST_LEN);
const _: () = assert!(BMS_PASSKEY_MAX == bms_core::protocol::MAX_PASSKEY);
const _: () = assert!(BMS_STORAGE_KEY_MAX_LEN == bms_core::storage::MAX_KEY_LEN);
const _: () = assert!(BMS_LED_BLINK_ON_MS == bms_core::limits::LED_BLINK_ON_MS);
const _: () = assert!(BMS_LED_BLINK_OFF_MS == bms_core::limits::LED_BLINK_OFF_MS);
const _: () =
    assert!(BMS_USER_WRITE_INTERVAL_MS as u64 == bms_core::limits::USER_WRITE_INTERVAL_MS);

/// The characteristics of the OpenBMS GATT service: the `characteristic` argument of
/// `bms_gatt_request` (a copy of `bms_core::protocol::Characteristic`, checked equal below).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BmsChr {
    /// Status page: read, notify.
    Status = 1,
    /// Battery bank page: read.
    Bank = 2,
    /// One battery: write the selector, read its page.
    Battery = 3,
    /// History page: read.
    History = 4,
    /// Settings: read, write (authenticated).
    Settings = 5,
    /// Control point: write (authenticated), response by indication.
    ControlPoint = 6,
    /// Device name: read, write (authenticated); after an accepted write, advertise
    /// `bms_device_name`.
    DeviceName = 7,
    /// State of charge (how it is known, its uncertainty): read.
    Soc = 8,
}

impl BmsChr {
    /// The C number of a core characteristic; exhaustive, so a new one fails the build here.
    const fn of(chr: bms_core::protocol::Characteristic) -> BmsChr {
        use bms_core::protocol::Characteristic;
        match chr {
            Characteristic::Status => BmsChr::Status,
            Characteristic::Bank => BmsChr::Bank,
            Characteristic::Battery => BmsChr::Battery,
            Characteristic::History => BmsChr::History,
            Characteristic::Settings => BmsChr::Settings,
            Characteristic::ControlPoint => BmsChr::ControlPoint,
            Characteristic::DeviceName => BmsChr::DeviceName,
            Characteristic::Soc => BmsChr::Soc,
        }
    }
}

/// The status byte of every response (`resp[BMS_RESPONSE_STATUS_OFFSET]`; a copy of
/// `bms_core::protocol::Status`, checked equal below).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BmsStatus {
    /// Done.
    Ok = 0,
    /// The request ended before its message did.
    Truncated = 1,
    /// Longer than `BMS_GATT_REQUEST_MAX`, or bytes after the message.
    Oversized = 2,
    /// Unknown protocol version.
    UnknownVersion = 3,
    /// Unknown control-point command.
    UnknownCommand = 4,
    /// The bytes do not decode as the message.
    Malformed = 5,
    /// A write or action on a link that is not authenticated.
    NotAuthenticated = 6,
    /// A value out of range.
    InvalidValue = 7,
    /// The selected battery does not exist.
    NoSuchBattery = 8,
    /// Not possible now.
    NotAvailable = 9,
    /// Unknown characteristic number.
    UnknownCharacteristic = 10,
    /// The characteristic does not support this access.
    UnsupportedAccess = 11,
}

impl BmsStatus {
    /// Every status, in number order, to check against the core's list.
    const ALL: [BmsStatus; 12] = [
        BmsStatus::Ok,
        BmsStatus::Truncated,
        BmsStatus::Oversized,
        BmsStatus::UnknownVersion,
        BmsStatus::UnknownCommand,
        BmsStatus::Malformed,
        BmsStatus::NotAuthenticated,
        BmsStatus::InvalidValue,
        BmsStatus::NoSuchBattery,
        BmsStatus::NotAvailable,
        BmsStatus::UnknownCharacteristic,
        BmsStatus::UnsupportedAccess,
    ];
}

// The characteristic and status numbers go over the wire: the C numbers must be the core's.
#[allow(
    clippy::indexing_slicing,
    reason = "const evaluation: an index error fails the build"
)]
const _: () = {
    use bms_core::protocol::{Characteristic, Status};
    let mut i = 0;
    while i < Characteristic::ALL.len() {
        let chr = Characteristic::ALL[i];
        assert!(BmsChr::of(chr) as u8 == chr as u8);
        i += 1;
    }
    // The core's Status is non-exhaustive: a status added there changes its list's length.
    assert!(BmsStatus::ALL.len() == Status::ALL.len());
    let mut i = 0;
    while i < Status::ALL.len() {
        assert!(BmsStatus::ALL[i] as u8 == Status::ALL[i] as u8);
        i += 1;
    }
};

/// What the packs on the battery line speak: the `protocol` argument of `bms_line_configure`,
/// in the order of the devicetree property `battery-protocol` (a copy of
/// `bms_core::drivers::Protocol`, checked equal below).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BmsProtocol {
    /// The OpenBMS battery bus: batteries report unasked, nothing is sent.
    Openbms = 0,
    /// JBD / Xiaoxiang / Overkill Solar: one pack per line, no address.
    Jbd = 1,
    /// JK-PB RS485: addresses 1..15.
    Jk = 2,
    /// Daly UART/RS485: boards 1..16.
    Daly = 3,
}

// The protocol numbers are devicetree's enum indices: the C numbers must be the core's.
#[allow(
    clippy::indexing_slicing,
    reason = "const evaluation: an index error fails the build"
)]
const _: () = {
    use bms_core::drivers::Protocol;
    let c = [
        BmsProtocol::Openbms,
        BmsProtocol::Jbd,
        BmsProtocol::Jk,
        BmsProtocol::Daly,
    ];
    assert!(c.len() == Protocol::ALL.len());
    let mut i = 0;
    while i < c.len() {
        assert!(c[i] as u8 == Protocol::ALL[i] as u8);
        i += 1;
    }
};

/// What an LED shows (LED-1, LED-2); the application plays the pattern (`bms_led` values).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BmsLed {
    /// Dark.
    Off = 0,
    /// Lit continuously.
    Solid = 1,
    /// Blinking: `BMS_LED_BLINK_ON_MS` lit, then `BMS_LED_BLINK_OFF_MS` dark.
    Blink = 2,
}

impl From<LedPattern> for BmsLed {
    fn from(pattern: LedPattern) -> Self {
        match pattern {
            LedPattern::Off => BmsLed::Off,
            LedPattern::Solid => BmsLed::Solid,
            LedPattern::Blink => BmsLed::Blink,
        }
    }
}

/// Why an output is free-floating (ATD, ATC) or active (pre-alarm): the bit numbers of the
/// `*_reasons` fields of `bms_outputs` (`reasons & (1u << BMS_REASON_CELL_UNDERVOLTAGE)`).
///
/// A copy of `bms_core::Reason`, because cbindgen writes C only for this crate's types; the
/// numbers are checked equal at compile time (abi.rs).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BmsReason {
    /// PROT-1: no complete, valid set of battery data judged safe yet.
    NoValidData = 0,
    /// PROT-8: the remote on/off input is OFF.
    RemoteOff = 1,
    /// PROT-2: imminent cell under-voltage.
    CellUndervoltage = 2,
    /// PROT-3: a cell is below the pre-alarm level.
    PrealarmLevel = 3,
    /// MON-6: the low-SoC warning is active.
    LowSoc = 4,
    /// PROT-4: cell over-voltage.
    CellOvervoltage = 5,
    /// PROT-5: a cell is too cold to charge.
    LowTemperature = 6,
    /// PROT-6: a cell is too hot to charge.
    HighTemperature = 7,
    /// PROT-6: a cell is too hot to discharge too.
    VeryHighTemperature = 8,
    /// PROT-7: a battery does not allow charging.
    BatteryChargeNotAllowed = 9,
    /// PROT-7: a battery does not allow discharging.
    BatteryDischargeNotAllowed = 10,
    /// PROT-9: SoC at or below the discharge floor.
    DischargeFloor = 11,
    /// PROT-10: a firmware update is in progress.
    FirmwareUpdate = 12,
    /// PROT-10: a firmware update failed or was aborted 120 s ago.
    FirmwareUpdateFailed = 13,
    /// BANK-4: a battery stopped reporting.
    BatteryLost = 14,
    /// BANK-2: the bank breaks the configuration rules.
    ConfigurationError = 15,
    /// PROT-13: a battery that never sent a valid report sends implausible data.
    InvalidData = 16,
    /// PROT-3: the pre-alarm is released after an under-voltage disconnect (pre-alarm only).
    PrealarmReleased = 17,
    /// PROT-1/PROT-11: the output went free-floating at a restart.
    Restart = 18,
}

impl BmsReason {
    /// The C name of a core reason; exhaustive, so a new core reason fails the build here.
    const fn of(reason: Reason) -> BmsReason {
        match reason {
            Reason::NoValidData => BmsReason::NoValidData,
            Reason::RemoteOff => BmsReason::RemoteOff,
            Reason::CellUndervoltage => BmsReason::CellUndervoltage,
            Reason::PrealarmLevel => BmsReason::PrealarmLevel,
            Reason::LowSoc => BmsReason::LowSoc,
            Reason::CellOvervoltage => BmsReason::CellOvervoltage,
            Reason::LowTemperature => BmsReason::LowTemperature,
            Reason::HighTemperature => BmsReason::HighTemperature,
            Reason::VeryHighTemperature => BmsReason::VeryHighTemperature,
            Reason::BatteryChargeNotAllowed => BmsReason::BatteryChargeNotAllowed,
            Reason::BatteryDischargeNotAllowed => BmsReason::BatteryDischargeNotAllowed,
            Reason::DischargeFloor => BmsReason::DischargeFloor,
            Reason::FirmwareUpdate => BmsReason::FirmwareUpdate,
            Reason::FirmwareUpdateFailed => BmsReason::FirmwareUpdateFailed,
            Reason::BatteryLost => BmsReason::BatteryLost,
            Reason::ConfigurationError => BmsReason::ConfigurationError,
            Reason::InvalidData => BmsReason::InvalidData,
            Reason::PrealarmReleased => BmsReason::PrealarmReleased,
            Reason::Restart => BmsReason::Restart,
        }
    }
}

// The reason bits go to C unchanged, so the C numbers must be the core's.
#[allow(
    clippy::indexing_slicing,
    reason = "const evaluation: an index error fails the build"
)]
const _: () = {
    let mut i = 0;
    while i < Reason::ALL.len() {
        let reason = Reason::ALL[i];
        assert!(BmsReason::of(reason) as u8 == reason as u8);
        i += 1;
    }
};

/// Firmware-update progress (PROT-10, DFU-2): the values of the `event` argument of
/// `bms_dfu_event`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BmsDfu {
    /// An update attempt started (MGMT_EVT_OP_IMG_MGMT_DFU_STARTED).
    Started = 0,
    /// The image was received and verified; a reboot into it follows (DFU_PENDING).
    Completed = 1,
    /// The update failed (transfer or verification error).
    Failed = 2,
    /// The update was aborted (DFU_STOPPED before completion: link lost, cancelled, timed out).
    Aborted = 3,
    /// A further image chunk was written: the upload is alive (an upload silent for 2 min is
    /// aborted by the core, DFU-1).
    Progress = 4,
}

/// A `bms_dfu` value as passed by C: a plain byte, so that any value C passes is defined
/// behaviour (an unknown value gets `BMS_EINVAL`).
pub type BmsDfuCode = u8;

impl BmsDfu {
    /// The core's event for a code from C, `None` for an unknown code.
    pub(crate) fn from_code(code: BmsDfuCode) -> Option<DfuEvent> {
        const STARTED: u8 = BmsDfu::Started as u8;
        const COMPLETED: u8 = BmsDfu::Completed as u8;
        const FAILED: u8 = BmsDfu::Failed as u8;
        const ABORTED: u8 = BmsDfu::Aborted as u8;
        const PROGRESS: u8 = BmsDfu::Progress as u8;
        match code {
            STARTED => Some(DfuEvent::Started),
            COMPLETED => Some(DfuEvent::Completed),
            FAILED => Some(DfuEvent::Failed),
            ABORTED => Some(DfuEvent::Aborted),
            PROGRESS => Some(DfuEvent::Progress),
            _ => None,
        }
    }
}

/// The BMS's own measurements for one `bms_step`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BmsInputs {
    /// Voltage at the Remote H terminal in mV, against battery minus.
    pub remote_h_mv: u32,
    /// Voltage at the Remote L terminal in mV, against battery minus.
    pub remote_l_mv: u32,
    /// The BMS supply voltage in mV, which is the bank voltage.
    pub supply_mv: u32,
    /// Non-zero while a BLE central is connected (LED-1). An integer, not `bool`: C may store
    /// any byte here, and a Rust `bool` other than 0 or 1 is undefined behaviour.
    pub app_connected: u8,
}

/// The decisions of one `bms_step`, to apply right away.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BmsOutputs {
    /// Why ATD is free-floating: bit `n` = reason number `n` (docs/protocol.md); 0 when high.
    pub atd_reasons: u32,
    /// Why ATC is free-floating, as `atd_reasons`; 0 when high.
    pub atc_reasons: u32,
    /// Why the pre-alarm is active, as `atd_reasons`; 0 when free-floating.
    pub prealarm_reasons: u32,
    /// Active error, alarm and warning codes: bit `n` = code number `n`.
    pub codes: u32,
    /// Call `bms_step` again after this many ms at the latest (100, or slower in low power).
    pub tick_ms: u32,
    /// Load disconnect output: true = drive high = loads allowed.
    pub atd: bool,
    /// Charge disconnect output: true = drive high = charging allowed.
    pub atc: bool,
    /// Pre-alarm output: true = drive high = alarm.
    pub prealarm: bool,
    /// Blue LED pattern (a `bms_led` value).
    pub led_blue: BmsLed,
    /// Red LED pattern (a `bms_led` value).
    pub led_red: BmsLed,
    /// PROT-12: low-power mode (slower advertising).
    pub low_power: bool,
    /// The advertisement changed: fetch it with `bms_advertisement` and update it.
    pub adv_changed: bool,
    /// The status page changed: notify subscribed GATT clients.
    pub status_changed: bool,
    /// BLE-2: a new pairing may start now (the pairing-accept callback answers with it).
    pub pairing_allowed: bool,
    /// BLE-2: a bond action waits: fetch it with `bms_bond_action` and carry it out.
    pub bond_action_pending: bool,
    /// BLE-2: read protection is on (monitoring reads need an authenticated link), so a link
    /// that never authenticates can do nothing useful: the platform disconnects it after a
    /// time limit (docs/security.md).
    pub read_protection: bool,
}

// The C harness asserts the same sizes, so a layout change shows on both sides.
const _: () = assert!(core::mem::size_of::<BmsInputs>() == 16);
const _: () = assert!(core::mem::size_of::<BmsOutputs>() == 32);

/// BLE-2: one bond of the BLE stack, as `bms_bonds_set` takes it and `bms_bond_action` gives
/// it: the peer's identity address (Zephyr's `bt_addr_le_t`: type, then the address least
/// significant byte first).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BmsBond {
    /// 0 public, 1 random (static) identity address.
    pub address_type: u8,
    /// The address, least significant byte first.
    pub address: [u8; 6],
}

impl BmsBond {
    pub(crate) fn to_core(self) -> bms_core::pairing::Bond {
        bms_core::pairing::Bond {
            address_type: self.address_type,
            address: self.address,
        }
    }
}

/// BLE-2: what the platform must do with the BLE stack's bonds (`struct bms_bond_action`'s
/// `kind`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BmsBondActionKind {
    /// Nothing waits.
    None = 0,
    /// Remove every bond (`bt_unpair(BT_ID_DEFAULT, NULL)`): pairing was reset.
    RemoveAll = 1,
    /// Remove every bond but the one of the connected phone that changed the passkey.
    RemoveOthers = 2,
    /// Remove `bond` (the RemoveBond command).
    Remove = 3,
}

/// BLE-2: a bond action for the platform (`bms_bond_action`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BmsBondAction {
    /// A `bms_bond_action_kind` value.
    pub kind: u8,
    /// The bond, for `BMS_BOND_ACTION_KIND_REMOVE`; zero otherwise.
    pub bond: BmsBond,
}

impl BmsBondAction {
    pub(crate) fn from_core(action: Option<bms_core::pairing::BondAction>) -> Self {
        use bms_core::pairing::BondAction;
        let (kind, bond) = match action {
            None => (BmsBondActionKind::None, BmsBond::default()),
            Some(BondAction::RemoveAll) => (BmsBondActionKind::RemoveAll, BmsBond::default()),
            Some(BondAction::RemoveOthers) => (BmsBondActionKind::RemoveOthers, BmsBond::default()),
            Some(BondAction::Remove(bond)) => (
                BmsBondActionKind::Remove,
                BmsBond {
                    address_type: bond.address_type,
                    address: bond.address,
                },
            ),
        };
        BmsBondAction {
            kind: kind as u8,
            bond,
        }
    }
}

/// Most bonds `bms_bonds_set` takes (the firmware's `CONFIG_BT_MAX_PAIRED`).
pub const BMS_MAX_BONDS: usize = 4;
const _: () = assert!(BMS_MAX_BONDS == bms_core::limits::MAX_BONDS);

impl BmsInputs {
    /// The core's inputs.
    pub(crate) fn to_core(self) -> Inputs {
        Inputs {
            remote_h_mv: self.remote_h_mv,
            remote_l_mv: self.remote_l_mv,
            supply_mv: self.supply_mv,
            app_connected: self.app_connected != 0,
        }
    }
}

impl BmsOutputs {
    /// The C view of one step's decisions and the read-protection setting they were taken with.
    pub(crate) fn from_decisions(d: &Decisions, read_protection: bool) -> Self {
        BmsOutputs {
            atd_reasons: d.atd_reasons.bits(),
            atc_reasons: d.atc_reasons.bits(),
            prealarm_reasons: d.prealarm_reasons.bits(),
            codes: d.codes.bits(),
            tick_ms: d.tick_ms,
            atd: d.atd,
            atc: d.atc,
            prealarm: d.prealarm,
            led_blue: d.led_blue.into(),
            led_red: d.led_red.into(),
            low_power: d.low_power,
            adv_changed: d.adv_changed,
            status_changed: d.status_changed,
            pairing_allowed: d.pairing_allowed,
            bond_action_pending: d.bond_action_pending,
            read_protection,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// C fills `BmsInputs`; any byte it stores in a flag is read as a defined value.
    #[test]
    fn ffi_inputs_take_any_byte_as_a_flag() {
        for byte in [1u8, 2, 0x7f, 0xff] {
            let inputs = BmsInputs {
                app_connected: byte,
                ..BmsInputs::default()
            };
            assert!(inputs.to_core().app_connected, "byte {byte}");
        }
        assert!(!BmsInputs::default().to_core().app_connected);
    }

    /// The C numbers of the update events are the core's, and nothing else is accepted.
    #[test]
    fn ffi_dfu_codes_are_the_cores_event_numbers() {
        for event in DfuEvent::ALL {
            assert_eq!(BmsDfu::from_code(event as u8), Some(event));
        }
        assert_eq!(BmsDfu::from_code(DfuEvent::COUNT as u8), None);
    }
}
