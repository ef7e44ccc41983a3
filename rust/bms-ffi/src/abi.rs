//! The C-visible items: status codes, `#[repr(C)]` data and the `extern "C"` functions.
//!
//! Every pointer argument is checked (null, alignment, the handle against the one instance)
//! before use; a bad argument returns [`BMS_EINVAL`] and changes nothing.

use core::sync::atomic::{AtomicU8, Ordering};

use bms_core::bus::FrameDecoder;
use bms_core::{Bms, Config, Decisions, DfuEvent, Event, Inputs, LedPattern, Output, Reason};

use crate::instance::{Claim, Instance};
use crate::logger;

/// Success.
pub const BMS_OK: i32 = 0;
/// The record does not exist (`-ENOENT`; returned by `bms_port_storage_read`).
pub const BMS_ENOENT: i32 = -2;
/// Storage failed (`-EIO`; returned by the `bms_port_storage_*` functions).
pub const BMS_EIO: i32 = -5;
/// Another `bms_*` call is running (`-EBUSY`): the threading contract was broken.
pub const BMS_EBUSY: i32 = -16;
/// A bad argument: null or misaligned pointer, wrong handle, value out of range (`-EINVAL`).
pub const BMS_EINVAL: i32 = -22;
/// The caller's buffer is too small (`-ENOSPC`).
pub const BMS_ENOSPC: i32 = -28;
/// A malformed bus frame or GATT request (`-EBADMSG`, Zephyr/newlib numbering).
pub const BMS_EBADMSG: i32 = -77;
/// The request is valid but was refused in the current state (`-EALREADY`).
pub const BMS_EALREADY: i32 = -120;

/// `bms_next_deadline_ms` stores this when no step is due at any time.
pub const BMS_NO_DEADLINE: u64 = u64::MAX;

/// What an LED shows (LED-1, LED-2); the application plays the pattern (`bms_led` values).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BmsLed {
    /// Dark.
    Off = 0,
    /// Lit continuously.
    Solid = 1,
    /// Blinking: 500 ms on, 500 ms off.
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
    /// A battery reported invalid data.
    InvalidData = 16,
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
        }
    }
}

// The reason bits go to C unchanged, so the C numbers must be the core's.
#[allow(clippy::indexing_slicing, reason = "const evaluation: an index error fails the build")]
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
}

/// A `bms_dfu` value as passed by C: a plain byte, so that any value C passes is defined
/// behaviour (an unknown value gets `BMS_EINVAL`).
pub type BmsDfuCode = u8;

impl BmsDfu {
    fn from_code(code: BmsDfuCode) -> Option<DfuEvent> {
        const STARTED: u8 = BmsDfu::Started as u8;
        const COMPLETED: u8 = BmsDfu::Completed as u8;
        const FAILED: u8 = BmsDfu::Failed as u8;
        const ABORTED: u8 = BmsDfu::Aborted as u8;
        match code {
            STARTED => Some(DfuEvent::Started),
            COMPLETED => Some(DfuEvent::Completed),
            FAILED => Some(DfuEvent::Failed),
            ABORTED => Some(DfuEvent::Aborted),
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
    /// True while a BLE central is connected (LED-1).
    pub app_connected: bool,
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
}

impl BmsOutputs {
    fn from_decisions(d: &Decisions) -> Self {
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
        }
    }
}

/// The level `bms_open` installs the logger with (see `bms_set_log_level`).
static LOG_LEVEL: AtomicU8 = AtomicU8::new(3);

/// A shared reference to a caller's struct, or `BMS_EINVAL` for a null or misaligned pointer.
///
/// # Safety
/// A non-null, aligned `ptr` must point to a readable, initialised `T` for the returned lifetime.
unsafe fn arg_ref<'a, T>(ptr: *const T) -> Result<&'a T, i32> {
    if ptr.is_null() || !ptr.is_aligned() {
        return Err(BMS_EINVAL);
    }
    // SAFETY: non-null and aligned (checked), readable and initialised (the caller's contract).
    Ok(unsafe { &*ptr })
}

/// Writes `value` to a caller's out-pointer, or `BMS_EINVAL` for a null or misaligned pointer.
///
/// # Safety
/// A non-null, aligned `ptr` must be writable for one `T`.
unsafe fn arg_write<T>(ptr: *mut T, value: T) -> Result<(), i32> {
    if ptr.is_null() || !ptr.is_aligned() {
        return Err(BMS_EINVAL);
    }
    // SAFETY: non-null and aligned (checked), writable (the caller's contract); `write` does not
    // read or drop the old contents, which may be uninitialised.
    unsafe { ptr.write(value) };
    Ok(())
}

/// A caller's byte buffer, or `BMS_EINVAL` for a null pointer with a non-zero length or a
/// length beyond `isize::MAX`. A zero length gives an empty slice whatever the pointer.
///
/// # Safety
/// A non-null `ptr` must be readable for `len` bytes for the returned lifetime, and not be
/// written by anyone else meanwhile.
unsafe fn arg_bytes<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8], i32> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() || len > isize::MAX as usize {
        return Err(BMS_EINVAL);
    }
    // SAFETY: non-null, `u8` needs no alignment, length within `isize::MAX` (checked); readable
    // and unaliased by writers (the caller's contract).
    Ok(unsafe { core::slice::from_raw_parts(ptr, len) })
}

/// The status a C function returns for a `Result`.
fn status(result: Result<(), i32>) -> i32 {
    match result {
        Ok(()) => BMS_OK,
        Err(err) => err,
    }
}

/// Logs what happened in one step (PROT-11: every output change is logged with its reasons).
fn log_events(decisions: &Decisions) {
    for event in &decisions.events {
        match *event {
            Event::OutputChanged {
                output,
                high,
                reasons,
            } => {
                let name = match output {
                    Output::Atd => "ATD",
                    Output::Atc => "ATC",
                    Output::Prealarm => "pre-alarm",
                };
                let state = if high { "high" } else { "free-floating" };
                log::info!("{name} {state} (reasons {:#x})", reasons.bits());
                for reason in reasons.iter() {
                    log::info!("{name} reason: {}", reason.name());
                }
            }
            Event::CodeRaised(code) => log::warn!("code {} raised: {}", code.number(), code.name()),
            Event::CodeCleared(code) => log::info!("code {} cleared: {}", code.number(), code.name()),
        }
    }
    if decisions.events_dropped > 0 {
        log::warn!("{} events not logged", decisions.events_dropped);
    }
}

/// Opens the BMS: restores settings and records through `bms_port_storage_read` and sets up
/// logging through `bms_port_log`. Call once at start-up, from the thread that will own it.
///
/// Returns the handle for every other call, or NULL when the instance is open already.
#[no_mangle]
pub extern "C" fn bms_open() -> *mut Instance {
    logger::install(LOG_LEVEL.load(Ordering::Relaxed));
    let handle = Claim::open(|| Instance {
        bms: Bms::new(Config::default()),
        decoder: FrameDecoder::new(),
    });
    match handle {
        Some(handle) => {
            log::info!("open");
            handle
        }
        None => core::ptr::null_mut(),
    }
}

/// Closes the BMS; the handle is invalid afterwards and `bms_open` may be called again.
///
/// Returns `BMS_OK`, or `BMS_EINVAL` for a handle that is not the open instance.
///
/// # Safety
/// Any pointer value is accepted and checked; there is no requirement on the caller.
#[no_mangle]
pub unsafe extern "C" fn bms_close(bms: *mut Instance) -> i32 {
    status(Claim::of(bms).map(Claim::close))
}

/// One control step at `now_ms` (monotonic ms): takes the BMS's own measurements `inputs`,
/// writes the decisions to `outputs`. Call every `outputs->tick_ms` and at the deadline of
/// `bms_next_deadline_ms`; apply the outputs at once.
///
/// Returns `BMS_OK`, or `BMS_EINVAL` (bad handle, null or misaligned pointer; `outputs`
/// unchanged).
///
/// # Safety
/// `inputs` must be null or point to a readable `struct bms_inputs`, `outputs` null or point to
/// a writable `struct bms_outputs`.
#[no_mangle]
pub unsafe extern "C" fn bms_step(
    bms: *mut Instance,
    now_ms: u64,
    inputs: *const BmsInputs,
    outputs: *mut BmsOutputs,
) -> i32 {
    status((|| {
        let mut claim = Claim::of(bms)?;
        // SAFETY: the caller's contract for `inputs`.
        let inputs = unsafe { arg_ref(inputs) }?;
        if outputs.is_null() || !outputs.is_aligned() {
            return Err(BMS_EINVAL);
        }
        let inputs = Inputs {
            remote_h_mv: inputs.remote_h_mv,
            remote_l_mv: inputs.remote_l_mv,
            supply_mv: inputs.supply_mv,
            app_connected: inputs.app_connected,
        };
        let decisions = claim.instance().bms.step(now_ms, &inputs);
        log_events(&decisions);
        // SAFETY: the caller's contract for `outputs` (null and alignment checked above).
        unsafe { arg_write(outputs, BmsOutputs::from_decisions(&decisions)) }
    })())
}

/// Feeds bytes received on the battery bus at `now_ms` (any chunking: a frame may span calls).
/// Each complete valid frame is handed to the core as a battery report; bad frames and refused
/// reports are dropped, counted and logged at debug level.
///
/// Returns the number of reports the core took (0 or more), or `BMS_EINVAL` (bad handle, null `bytes`
/// with a non-zero `len`).
///
/// # Safety
/// `bytes` must be null or readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn bms_feed_bus(bms: *mut Instance, now_ms: u64, bytes: *const u8, len: usize) -> i32 {
    let result = (|| {
        let mut claim = Claim::of(bms)?;
        // SAFETY: the caller's contract for `bytes`.
        let bytes = unsafe { arg_bytes(bytes, len) }?;
        let Instance { bms, decoder, .. } = claim.instance();
        let mut taken: i32 = 0;
        decoder.feed_frames(bytes, |outcome| match outcome {
            Ok(report) => match bms.handle_report(now_ms, &report) {
                Ok(()) => taken = taken.saturating_add(1),
                Err(err) => log::debug!("battery {} report refused: {err}", report.serial),
            },
            Err(err) => log::debug!("bus frame dropped: {err}"),
        });
        Ok(taken)
    })();
    match result {
        Ok(taken) => taken,
        Err(err) => err,
    }
}

/// Reports firmware-update progress at `now_ms` (PROT-10): `event` is a `bms_dfu` value.
///
/// Returns `BMS_OK`, or `BMS_EINVAL` (bad handle or unknown event).
///
/// # Safety
/// Any pointer value is accepted and checked; there is no requirement on the caller.
#[no_mangle]
pub unsafe extern "C" fn bms_dfu_event(bms: *mut Instance, now_ms: u64, event: BmsDfuCode) -> i32 {
    status((|| {
        let mut claim = Claim::of(bms)?;
        let event = BmsDfu::from_code(event).ok_or(BMS_EINVAL)?;
        claim.instance().bms.handle_dfu(now_ms, event);
        Ok(())
    })())
}

/// Stores in `*deadline_ms` when `bms_step` must run next at the latest (monotonic ms; may be
/// in the past: step now), or `BMS_NO_DEADLINE`. Sleep until then unless data arrives.
///
/// Returns `BMS_OK`, or `BMS_EINVAL` (bad handle, null or misaligned pointer).
///
/// # Safety
/// `deadline_ms` must be null or point to a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn bms_next_deadline_ms(bms: *const Instance, deadline_ms: *mut u64) -> i32 {
    status((|| {
        let mut claim = Claim::of(bms)?;
        let deadline = claim.instance().bms.next_deadline_ms().unwrap_or(BMS_NO_DEADLINE);
        // SAFETY: the caller's contract for `deadline_ms`.
        unsafe { arg_write(deadline_ms, deadline) }
    })())
}

/// Sets which library log records reach `bms_port_log`: 0 none, 1 errors, 2 + warnings,
/// 3 + info (the default), 4 + debug, 5 + trace. May be called at any time, also before
/// `bms_open`.
#[no_mangle]
pub extern "C" fn bms_set_log_level(level: u8) {
    LOG_LEVEL.store(level, Ordering::Relaxed);
    log::set_max_level(logger::level_filter(level));
}
