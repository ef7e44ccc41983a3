//! The `extern "C"` functions of `bms.h`: argument checks, then one call on the instance.
//!
//! Every pointer argument is checked (null, alignment, overlap, the handle against the one
//! instance) before use; a bad argument returns `BMS_EINVAL` and changes nothing.

use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU8, Ordering};

use bms_core::protocol::Access;
use bms_core::retained::{Retained, WarmRestart};
use bms_core::{SelfCheck, SelfCheckInputs};

use crate::abi::{
    BmsBond, BmsBondAction, BmsDfu, BmsDfuCode, BmsInputs, BmsOutputs, BMS_EAGAIN, BMS_EINVAL,
    BMS_ENOSPC, BMS_ETIMEDOUT, BMS_LINE_MAX_PACKS, BMS_LINE_REQUEST_MAX, BMS_MAX_BONDS,
    BMS_NO_DEADLINE, BMS_OK, BMS_RETAINED_LEN,
};
use crate::instance::{Claim, Instance};
use crate::logger;

/// The level `bms_open` installs the logger with (see `bms_set_log_level`).
static LOG_LEVEL: AtomicU8 = AtomicU8::new(3);

/// The product id `bms_open` gives the Instant Readout advertiser (see
/// `bms_set_readout_product_id`).
static READOUT_PRODUCT_ID: AtomicU16 = AtomicU16::new(bms_core::readout::DEFAULT_PRODUCT_ID);

/// The warm restart set for the next `bms_open` (`bms_set_warm_restart`): the retained record
/// in four words, the gap bound, and whether one is set (32-bit atomics: the Cortex-M4 has no
/// 64-bit ones).
static WARM_RECORD: [AtomicU32; 4] = [
    AtomicU32::new(0),
    AtomicU32::new(0),
    AtomicU32::new(0),
    AtomicU32::new(0),
];
static WARM_GAP_MS: AtomicU32 = AtomicU32::new(0);
static WARM_SET: AtomicBool = AtomicBool::new(false);

/// The warm restart set for this `bms_open`, taken once.
pub(crate) fn take_warm_restart() -> Option<WarmRestart> {
    if !WARM_SET.swap(false, Ordering::Relaxed) {
        return None;
    }
    let mut bytes = [0u8; BMS_RETAINED_LEN];
    for (part, word) in bytes.chunks_exact_mut(4).zip(&WARM_RECORD) {
        part.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
    }
    let retained = Retained::decode(&bytes).ok()?;
    Some(WarmRestart {
        retained,
        gap_ms: u64::from(WARM_GAP_MS.load(Ordering::Relaxed)),
    })
}

/// The product id set for the next `bms_open`.
pub(crate) fn readout_product_id() -> u16 {
    READOUT_PRODUCT_ID.load(Ordering::Relaxed)
}

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

/// Checks a caller's out-pointer: `BMS_EINVAL` when null or misaligned.
fn arg_out<T>(ptr: *mut T) -> Result<(), i32> {
    if ptr.is_null() || !ptr.is_aligned() {
        return Err(BMS_EINVAL);
    }
    Ok(())
}

/// Writes `value` through an out-pointer checked by `arg_out`.
///
/// # Safety
/// `ptr` passed `arg_out` and is writable for one `T`.
unsafe fn write_out<T>(ptr: *mut T, value: T) {
    // SAFETY: non-null and aligned (`arg_out`), writable (the caller's contract); `write` does
    // not read or drop the old contents, which may be uninitialised.
    unsafe { ptr.write(value) }
}

/// Checks a caller's buffer: `BMS_EINVAL` for a null pointer with a non-zero length or a
/// length beyond `isize::MAX`.
fn arg_buf(ptr: *const u8, len: usize) -> Result<(), i32> {
    if (ptr.is_null() && len > 0) || len > isize::MAX as usize {
        return Err(BMS_EINVAL);
    }
    Ok(())
}

/// A caller's input bytes (checked by `arg_buf`); empty for a zero length, whatever the pointer.
///
/// # Safety
/// `ptr` passed `arg_buf`, and a non-null `ptr` is readable for `len` bytes for the returned
/// lifetime and not written meanwhile.
unsafe fn in_bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: non-null with `len` in range (`arg_buf`; `u8` needs no alignment), readable and
    // not written meanwhile (the caller's contract).
    unsafe { core::slice::from_raw_parts(ptr, len) }
}

/// A caller's output buffer (checked by `arg_buf`); empty for a zero length.
///
/// # Safety
/// `ptr` passed `arg_buf`, and a non-null `ptr` is writable for `len` bytes for the returned
/// lifetime and not accessed by anyone else meanwhile (also not through another argument).
unsafe fn out_bytes<'a>(ptr: *mut u8, len: usize) -> &'a mut [u8] {
    if len == 0 {
        return &mut [];
    }
    // SAFETY: as in `in_bytes`, with exclusive write access (the caller's contract).
    unsafe { core::slice::from_raw_parts_mut(ptr, len) }
}

/// True when the byte ranges `[a, a + a_len)` and `[b, b + b_len)` share a byte.
fn overlap(a: *const u8, a_len: usize, b: *const u8, b_len: usize) -> bool {
    let (a, b) = (a as usize, b as usize);
    a_len > 0 && b_len > 0 && a < b.saturating_add(b_len) && b < a.saturating_add(a_len)
}

/// The status of a call that returns nothing else.
fn status(result: Result<(), i32>) -> i32 {
    match result {
        Ok(()) => BMS_OK,
        Err(err) => err,
    }
}

/// Opens the BMS: restores settings and records through `bms_port_storage_read` (on the first
/// start, and when the stored nonce reservation was lost, also makes the device's Instant
/// Readout key with `bms_port_random`) and sets up
/// logging through `bms_port_log`. Call once at start-up, from the thread that will own it.
///
/// Returns the handle for every other call, or NULL when the instance is open already or
/// another call is running (a call from inside a `bms_port_*` callback, this one's included).
#[no_mangle]
pub extern "C" fn bms_open() -> *mut Instance {
    // The claim spans the whole call, the logger's set-up and the last log line included, so
    // that a `bms_port_log` calling back in is refused at any point.
    let Ok(mut claim) = Claim::take() else {
        return core::ptr::null_mut();
    };
    logger::install(LOG_LEVEL.load(Ordering::Relaxed));
    match claim.open() {
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
/// writes the decisions to `outputs` and stores the records that are due. Call every
/// `outputs->tick_ms` and at the deadline of `bms_next_deadline_ms`; apply the outputs at once.
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
        let inputs = unsafe { arg_ref(inputs) }?.to_core();
        arg_out(outputs)?;
        let result = claim.instance().step(now_ms, &inputs);
        // SAFETY: checked by `arg_out`; writable by the caller's contract.
        unsafe { write_out(outputs, result) };
        Ok(())
    })())
}

/// Feeds bytes received on the battery bus at `now_ms` (any chunking: a frame may span calls).
/// Each complete valid frame is handed to the core as a battery report; bad frames and refused
/// reports are dropped, counted and logged at debug level. On a JBD, JK or Daly line
/// (`bms_line_configure`) the bytes are the packs' answers: a pack's report is taken when all
/// its answers of a round are in.
///
/// Returns the number of reports the core took (0 or more), or `BMS_EINVAL` (bad handle, null
/// `bytes` with a non-zero `len`).
///
/// # Safety
/// `bytes` must be null or readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn bms_feed_bus(
    bms: *mut Instance,
    now_ms: u64,
    bytes: *const u8,
    len: usize,
) -> i32 {
    let result = (|| {
        let mut claim = Claim::of(bms)?;
        arg_buf(bytes, len)?;
        // SAFETY: checked by `arg_buf`; readable by the caller's contract.
        let bytes = unsafe { in_bytes(bytes, len) };
        Ok(claim.instance().feed_bus(now_ms, bytes))
    })();
    result.unwrap_or_else(|err| err)
}

/// Chooses what the battery line speaks (devicetree `battery-protocol`): `protocol` is a
/// `bms_protocol` value, `baud` the UART's speed, `addresses` the packs' addresses (`count` of
/// them, polled in this order), or NULL with `count` N for addresses 1..N ("scan"). The OpenBMS
/// bus takes no addresses (`count` 0); a JBD pack has none, give address 1. Call once after
/// `bms_open`; until then the line is the OpenBMS bus.
///
/// Returns `BMS_OK`, or `BMS_EINVAL` (bad handle, unknown protocol, more than
/// `BMS_LINE_MAX_PACKS` addresses, or a line the core refuses: an address outside the
/// protocol's range or given twice, a speed of 0 or above 1 Mbit/s, too many packs to read each
/// within 2.5 s at this speed; the reason is logged) and nothing changes.
///
/// # Safety
/// `addresses` must be null or readable for `count` bytes.
#[no_mangle]
pub unsafe extern "C" fn bms_line_configure(
    bms: *mut Instance,
    protocol: u8,
    baud: u32,
    addresses: *const u8,
    count: usize,
) -> i32 {
    status((|| {
        let mut claim = Claim::of(bms)?;
        let protocol = bms_core::drivers::Protocol::from_u8(protocol).ok_or(BMS_EINVAL)?;
        if count > BMS_LINE_MAX_PACKS {
            return Err(BMS_EINVAL);
        }
        let scan: [u8; BMS_LINE_MAX_PACKS] = core::array::from_fn(|i| (i + 1) as u8);
        let addresses = if addresses.is_null() {
            scan.get(..count).ok_or(BMS_EINVAL)?
        } else {
            arg_buf(addresses, count)?;
            // SAFETY: checked by `arg_buf`; readable by the caller's contract.
            unsafe { in_bytes(addresses, count) }
        };
        claim
            .instance()
            .configure_line(protocol, baud, addresses)
            .map_err(|err| {
                log::error!("battery line refused: {err}");
                BMS_EINVAL
            })
    })())
}

/// The battery line's next request at `now_ms`: writes it to `tx` and its length to `*len`
/// (0: nothing to send now), and to `*next_ms` when to call again at the latest
/// (`BMS_NO_DEADLINE` for the OpenBMS bus, which sends nothing). Transmit the request at once;
/// the answer goes to `bms_feed_bus` like every received byte.
///
/// Returns `BMS_OK`, `BMS_ENOSPC` when `cap` < `BMS_LINE_REQUEST_MAX`, or `BMS_EINVAL` (bad
/// handle, null or misaligned pointer).
///
/// # Safety
/// `tx` must be null or writable for `cap` bytes, `len` null or point to a writable `size_t`,
/// `next_ms` null or point to a writable `uint64_t`; none overlapping.
#[no_mangle]
pub unsafe extern "C" fn bms_line_poll(
    bms: *mut Instance,
    now_ms: u64,
    tx: *mut u8,
    cap: usize,
    len: *mut usize,
    next_ms: *mut u64,
) -> i32 {
    status((|| {
        let mut claim = Claim::of(bms)?;
        arg_buf(tx, cap)?;
        arg_out(len)?;
        arg_out(next_ms)?;
        let size = core::mem::size_of::<usize>();
        if overlap(tx, cap, len.cast::<u8>(), size)
            || overlap(tx, cap, next_ms.cast::<u8>(), 8)
            || overlap(len.cast::<u8>(), size, next_ms.cast::<u8>(), 8)
        {
            return Err(BMS_EINVAL);
        }
        if cap < BMS_LINE_REQUEST_MAX {
            return Err(BMS_ENOSPC);
        }
        // SAFETY: checked by `arg_buf`; writable by the caller's contract, overlapping neither
        // out-pointer (checked).
        let tx = unsafe { out_bytes(tx, cap) };
        let (used, next) = claim.instance().line_poll(now_ms, tx);
        // SAFETY: both checked by `arg_out`; writable by the caller's contract.
        unsafe {
            write_out(len, used);
            write_out(next_ms, next.unwrap_or(BMS_NO_DEADLINE));
        }
        Ok(())
    })())
}

/// Handles one GATT access at `now_ms` to the OpenBMS service characteristic `characteristic`
/// (numbers in docs/protocol.md): a read (`write` 0; `req` empty, or the battery selector
/// the client last wrote) or a write of `req`. `authenticated` is non-zero on an encrypted
/// link paired with the passkey: only then are writes and actions accepted (BLE-2).
///
/// Every request gets a response (`resp[1]` is its protocol status; a refused request changes
/// nothing, BLE-4): it is written to `resp` and its length to `*resp_len`. Changed settings,
/// SoC or history are stored before the call returns; after a control-point write, read
/// `bms_passkey` again.
///
/// Returns `BMS_OK`, `BMS_ENOSPC` when `resp_cap` < `BMS_GATT_RESPONSE_MAX`, or `BMS_EINVAL`
/// (bad handle, null pointer with a non-zero length, null or misaligned `resp_len`, any two of
/// `req`, `resp` and `resp_len` overlapping).
///
/// # Safety
/// `req` must be null or readable for `req_len` bytes, `resp` null or writable for `resp_cap`
/// bytes, `resp_len` null or point to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn bms_gatt_request(
    bms: *mut Instance,
    now_ms: u64,
    characteristic: u8,
    write: u8,
    authenticated: u8,
    req: *const u8,
    req_len: usize,
    resp: *mut u8,
    resp_cap: usize,
    resp_len: *mut usize,
) -> i32 {
    status((|| {
        let mut claim = Claim::of(bms)?;
        arg_buf(req, req_len)?;
        arg_buf(resp, resp_cap)?;
        arg_out(resp_len)?;
        let size = core::mem::size_of::<usize>();
        if overlap(req, req_len, resp, resp_cap)
            || overlap(req, req_len, resp_len.cast::<u8>(), size)
            || overlap(resp, resp_cap, resp_len.cast::<u8>(), size)
        {
            return Err(BMS_EINVAL);
        }
        if resp_cap < crate::abi::BMS_GATT_RESPONSE_MAX {
            return Err(BMS_ENOSPC);
        }
        // SAFETY: checked by `arg_buf`; readable by the caller's contract, and not written
        // through `resp`, which does not overlap it (checked).
        let req = unsafe { in_bytes(req, req_len) };
        // SAFETY: checked by `arg_buf`; writable by the caller's contract, and no other
        // argument reaches it (`req` does not overlap; `resp_len` is only written after).
        let resp = unsafe { out_bytes(resp, resp_cap) };
        let access = if write != 0 {
            Access::Write
        } else {
            Access::Read
        };
        let len = claim.instance().gatt_request(
            now_ms,
            characteristic,
            access,
            authenticated != 0,
            req,
            resp,
        )?;
        // SAFETY: checked by `arg_out`; writable by the caller's contract.
        unsafe { write_out(resp_len, len) };
        Ok(())
    })())
}

/// Builds the Instant Readout advertisement (BLE-3) into `buf`: the manufacturer data of the
/// advertising packet, company id first (`BMS_ADVERTISEMENT_LEN` bytes), for
/// `BT_DATA_MANUFACTURER_DATA`. Call when a step set `adv_changed` (a new nonce is taken only
/// when the values changed; the same state gives the same packet).
///
/// Returns `BMS_OK` with the length in `*len`, `BMS_ENOSPC` when `cap` <
/// `BMS_ADVERTISEMENT_LEN`, `BMS_EAGAIN` before a step has stored the first nonce reservation
/// (the packet would need an unreserved nonce), while the readout key has used up its nonces
/// and no new one could be made (no random source), or `BMS_EINVAL` (bad handle, null pointer).
///
/// # Safety
/// `buf` must be null or writable for `cap` bytes, `len` null or point to a writable `size_t`,
/// the two not overlapping.
#[no_mangle]
pub unsafe extern "C" fn bms_advertisement(
    bms: *mut Instance,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
) -> i32 {
    // SAFETY: the caller's contract for `buf` and `len`.
    unsafe {
        fill_out(bms, buf, cap, len, |instance, buf| {
            instance.advertisement(buf)
        })
    }
}

/// One call on the instance that fills a caller's buffer: checks the handle, `buf` (`cap`
/// bytes), `len` and that they do not overlap, lets `fill` write and return the length used,
/// and stores it in `*len`.
///
/// # Safety
/// `buf` must be null or writable for `cap` bytes, `len` null or point to a writable `size_t`.
unsafe fn fill_out(
    bms: *const Instance,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
    fill: impl FnOnce(&mut Instance, &mut [u8]) -> Result<usize, i32>,
) -> i32 {
    status((|| {
        let mut claim = Claim::of(bms)?;
        arg_buf(buf, cap)?;
        arg_out(len)?;
        if overlap(buf, cap, len.cast::<u8>(), core::mem::size_of::<usize>()) {
            return Err(BMS_EINVAL);
        }
        // SAFETY: checked by `arg_buf`; writable by the caller's contract, not overlapping `len`.
        let buf = unsafe { out_bytes(buf, cap) };
        let used = fill(claim.instance(), buf)?;
        // SAFETY: checked by `arg_out`; writable by the caller's contract.
        unsafe { write_out(len, used) };
        Ok(())
    })())
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
        claim.instance().dfu_event(now_ms, event);
        Ok(())
    })())
}

/// DFU-1: the firmware's self-check of a new image running in MCUboot's test mode. Call it
/// after each `bms_step` until it gives a verdict; `ble_ready` and `storage_ok` are the
/// platform's view of its Bluetooth stack and storage (non-zero = working). Confirm the image on `1`; reboot (so
/// MCUboot reverts) on `BMS_ETIMEDOUT`. The verdict is final once given.
///
/// Returns `0` while pending, `1` when passed, `BMS_ETIMEDOUT` when failed, or `BMS_EINVAL`
/// (bad handle).
///
/// # Safety
/// Any pointer value is accepted and checked; there is no requirement on the caller.
#[no_mangle]
pub unsafe extern "C" fn bms_self_check(
    bms: *mut Instance,
    now_ms: u64,
    ble_ready: u8,
    storage_ok: u8,
) -> i32 {
    let mut claim = match Claim::of(bms) {
        Ok(claim) => claim,
        Err(err) => return err,
    };
    let inputs = SelfCheckInputs {
        ble_ready: ble_ready != 0,
        storage_ok: storage_ok != 0,
    };
    match claim.instance().self_check(now_ms, inputs) {
        SelfCheck::Pending => 0,
        SelfCheck::Passed => 1,
        SelfCheck::Failed => BMS_ETIMEDOUT,
    }
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
        arg_out(deadline_ms)?;
        let deadline = claim
            .instance()
            .next_deadline_ms()
            .unwrap_or(BMS_NO_DEADLINE);
        // SAFETY: checked by `arg_out`; writable by the caller's contract.
        unsafe { write_out(deadline_ms, deadline) };
        Ok(())
    })())
}

/// Stores in `*passkey` the pairing passkey (1–999999, BLE-2: the unit's own, never 000000)
/// to give the BLE stack: at start, after each control-point write (the user may change it)
/// and after `bms_button` reset pairing.
///
/// Returns `BMS_OK`, `BMS_EAGAIN` (with 0 stored) while the device has no usable passkey (a
/// fault of the stored secrets, or no random source at the first start: refuse every pairing
/// until the button resets it), or `BMS_EINVAL` (bad handle, null or misaligned pointer).
///
/// # Safety
/// `passkey` must be null or point to a writable `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn bms_passkey(bms: *const Instance, passkey: *mut u32) -> i32 {
    status((|| {
        let mut claim = Claim::of(bms)?;
        arg_out(passkey)?;
        let value = claim.instance().passkey();
        // SAFETY: checked by `arg_out`; writable by the caller's contract.
        unsafe { write_out(passkey, value) };
        if value == 0 {
            return Err(BMS_EAGAIN);
        }
        Ok(())
    })())
}

/// BLE-2: the board's button went down (`pressed` non-zero) or up at `now_ms`; pass both edges
/// (debouncing is the core's). A press opens the pairing window for 3 minutes and the blue
/// LED blinks the passkey (the log prints it once), a new one (bonds kept) when the one in
/// force has seen too many failed pairing attempts; held 10 s, it resets pairing: a new
/// passkey and a bond action removing every bond. After 1 or 2 read `bms_passkey` again.
///
/// Returns 0 when the edge asked for nothing, 1 when the pairing window opened, 2 when pairing
/// was reset (fetch `bms_bond_action`), or `BMS_EINVAL` (bad handle).
///
/// # Safety
/// Any pointer value is accepted and checked; there is no requirement on the caller.
#[no_mangle]
pub unsafe extern "C" fn bms_button(bms: *mut Instance, now_ms: u64, pressed: u8) -> i32 {
    let mut claim = match Claim::of(bms) {
        Ok(claim) => claim,
        Err(err) => return err,
    };
    match claim.instance().button(now_ms, pressed != 0) {
        None => 0,
        Some(bms_core::pairing::ButtonAction::OpenWindow) => 1,
        Some(bms_core::pairing::ButtonAction::ResetPairing) => 2,
    }
}

/// BLE-2: a pairing attempt ended at `now_ms`: `success` non-zero (pairing complete) or zero
/// (failed: wrong passkey, cancelled, timed out), which starts an exponential back-off. The
/// next `bms_step` says in `pairing_allowed` whether a new pairing may start.
///
/// Returns `BMS_OK`, or `BMS_EINVAL` (bad handle).
///
/// # Safety
/// Any pointer value is accepted and checked; there is no requirement on the caller.
#[no_mangle]
pub unsafe extern "C" fn bms_pairing_result(bms: *mut Instance, now_ms: u64, success: u8) -> i32 {
    status((|| {
        let mut claim = Claim::of(bms)?;
        claim.instance().pairing_result(now_ms, success != 0);
        Ok(())
    })())
}

/// BLE-2: the bonds the BLE stack holds now (`bt_foreach_bond`): `count` of them at `bonds`
/// (NULL with 0 for none). Call after opening and after every change (pairing complete, a
/// bond removed). More than `BMS_MAX_BONDS` is refused.
///
/// Returns `BMS_OK`, or `BMS_EINVAL` (bad handle, null or misaligned pointer with a non-zero
/// `count`, more than `BMS_MAX_BONDS`) and nothing changes.
///
/// # Safety
/// `bonds` must be null or readable for `count` `struct bms_bond`s.
#[no_mangle]
pub unsafe extern "C" fn bms_bonds_set(
    bms: *mut Instance,
    bonds: *const BmsBond,
    count: usize,
) -> i32 {
    status((|| {
        let mut claim = Claim::of(bms)?;
        if count > BMS_MAX_BONDS || (count > 0 && (bonds.is_null() || !bonds.is_aligned())) {
            return Err(BMS_EINVAL);
        }
        let mut list = [bms_core::pairing::Bond::default(); BMS_MAX_BONDS];
        for (i, slot) in list.iter_mut().enumerate().take(count) {
            // SAFETY: `bonds` is non-null and aligned (checked) and readable for `count`
            // elements (the caller's contract); `i < count`.
            *slot = unsafe { bonds.add(i).read() }.to_core();
        }
        claim.instance().set_bonds(list.get(..count).unwrap_or(&[]));
        Ok(())
    })())
}

/// BLE-2: takes the bond action that waits (after a control-point write, a step with
/// `bond_action_pending`, or `bms_button` returning 2) into `*action`: `kind` 0 when none.
/// Carry it out at once (`bt_unpair`), then report the bonds with `bms_bonds_set`.
///
/// Returns `BMS_OK`, or `BMS_EINVAL` (bad handle, null or misaligned pointer).
///
/// # Safety
/// `action` must be null or point to a writable `struct bms_bond_action`.
#[no_mangle]
pub unsafe extern "C" fn bms_bond_action(bms: *mut Instance, action: *mut BmsBondAction) -> i32 {
    status((|| {
        let mut claim = Claim::of(bms)?;
        arg_out(action)?;
        let taken = BmsBondAction::from_core(claim.instance().take_bond_action());
        // SAFETY: checked by `arg_out`; writable by the caller's contract.
        unsafe { write_out(action, taken) };
        Ok(())
    })())
}

/// SET-2: writes every record that is due at `now_ms`, including settings and secrets changes
/// held back to spare the flash (at most one write per 10 s while a phone writes in bursts).
/// Call when a link drops and before a planned reboot.
///
/// Returns `BMS_OK`, or `BMS_EINVAL` (bad handle).
///
/// # Safety
/// Any pointer value is accepted and checked; there is no requirement on the caller.
#[no_mangle]
pub unsafe extern "C" fn bms_flush(bms: *mut Instance, now_ms: u64) -> i32 {
    status((|| {
        let mut claim = Claim::of(bms)?;
        claim.instance().flush(now_ms);
        Ok(())
    })())
}

/// Stores in `name` the device name to advertise (BLE-1): UTF-8 without control characters,
/// NUL-terminated for `bt_set_name`; its length without the NUL in `*len`. Read it at start and
/// after an accepted write to `BMS_CHR_DEVICE_NAME`.
///
/// Returns `BMS_OK`, `BMS_ENOSPC` when `cap` < `BMS_DEVICE_NAME_MAX + 1`, or `BMS_EINVAL` (bad
/// handle, null pointer).
///
/// # Safety
/// `name` must be null or writable for `cap` bytes, `len` null or point to a writable
/// `size_t`, the two not overlapping.
#[no_mangle]
pub unsafe extern "C" fn bms_device_name(
    bms: *const Instance,
    name: *mut u8,
    cap: usize,
    len: *mut usize,
) -> i32 {
    // SAFETY: the caller's contract for `name` and `len`.
    unsafe {
        fill_out(bms, name, cap, len, |instance, out| {
            if out.len() < crate::abi::BMS_DEVICE_NAME_MAX + 1 {
                return Err(BMS_ENOSPC);
            }
            let text = instance.device_name();
            out.fill(0);
            out.iter_mut().zip(text).for_each(|(to, from)| *to = *from);
            Ok(text.len())
        })
    }
}

/// Sets which library log records reach `bms_port_log`: 0 none, 1 errors, 2 + warnings,
/// 3 + info (the default), 4 + debug, 5 + trace. May be called at any time, also before
/// `bms_open`, but not from inside another call.
///
/// Returns `BMS_OK`, or `BMS_EBUSY` during another call (a `bms_port_*` callback calling
/// back in), which changes nothing.
#[no_mangle]
pub extern "C" fn bms_set_log_level(level: u8) -> i32 {
    status(Claim::take().map(|_claim| {
        LOG_LEVEL.store(level, Ordering::Relaxed);
        log::set_max_level(logger::level_filter(level));
    }))
}

/// PROT-1 (rev 2): after a *warm* reset (a software reset such as a firmware update's, a
/// watchdog reset), hands the next `bms_open` the `len` bytes `bms_retained` wrote before the
/// reset and `gap_ms`, the longest time the reset may have come after they were written (the
/// control thread's watchdog period). At its first step the core then drives ATD and ATC again
/// as they were, if the record is intact, was safe and is less than 10 s old (`gap_ms` + time
/// since start); BANK-4 applies if no battery data follows. Do not call it after a cold
/// power-up: every output then waits for battery data.
///
/// Returns `BMS_OK`, `BMS_EINVAL` when the bytes are no intact record (null, wrong length,
/// bad magic, version or CRC), which sets nothing: the start is a cold one, or `BMS_EBUSY`
/// during another call (a `bms_port_*` callback calling back in), which sets nothing either.
///
/// # Safety
/// `retained` must be null or readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn bms_set_warm_restart(retained: *const u8, len: usize, gap_ms: u64) -> i32 {
    status((|| {
        let _claim = Claim::take()?;
        arg_buf(retained, len)?;
        // SAFETY: checked by `arg_buf`; readable by the caller's contract.
        let bytes = unsafe { in_bytes(retained, len) };
        Retained::decode(bytes).map_err(|_| BMS_EINVAL)?;
        for (part, word) in bytes.chunks_exact(4).zip(&WARM_RECORD) {
            let mut raw = [0u8; 4];
            raw.copy_from_slice(part);
            word.store(u32::from_le_bytes(raw), Ordering::Relaxed);
        }
        // Longer than 49 days is "too old" either way.
        WARM_GAP_MS.store(u32::try_from(gap_ms).unwrap_or(u32::MAX), Ordering::Relaxed);
        WARM_SET.store(true, Ordering::Relaxed);
        Ok(())
    })())
}

/// PROT-1 (rev 2): writes the output state of the last step (`BMS_RETAINED_LEN` bytes) to
/// `buf`, for RAM that survives a reset (retained RAM); call after every `bms_step` and keep
/// the bytes for `bms_set_warm_restart` at the next start.
///
/// Returns `BMS_OK` with the length in `*len`, `BMS_ENOSPC` when `cap` < `BMS_RETAINED_LEN`, or
/// `BMS_EINVAL` (bad handle, null pointer).
///
/// # Safety
/// `buf` must be null or writable for `cap` bytes, `len` null or point to a writable `size_t`,
/// the two not overlapping.
#[no_mangle]
pub unsafe extern "C" fn bms_retained(
    bms: *mut Instance,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
) -> i32 {
    // SAFETY: the caller's contract for `buf` and `len`.
    unsafe {
        fill_out(bms, buf, cap, len, |instance, buf| {
            let record = instance.retained();
            buf.get_mut(..record.len())
                .ok_or(BMS_ENOSPC)?
                .copy_from_slice(&record);
            Ok(record.len())
        })
    }
}

/// Sets the Victron product id that Instant Readout advertisements announce (BLE-3: bytes 4–5
/// of the manufacturer data, little-endian; the apps show it as the model). The default is
/// 0xA3EC, "smallBMS" in the decoders' product tables. Takes effect at the next `bms_open`:
/// call it before.
///
/// Returns `BMS_OK`, `BMS_EINVAL` for 0x0000 and 0xFFFF (no product; erased flash), or
/// `BMS_EBUSY` during another call (a `bms_port_*` callback calling back in); a refusal
/// changes nothing.
#[no_mangle]
pub extern "C" fn bms_set_readout_product_id(product_id: u16) -> i32 {
    status((|| {
        let _claim = Claim::take()?;
        if product_id == 0 || product_id == u16::MAX {
            return Err(BMS_EINVAL);
        }
        READOUT_PRODUCT_ID.store(product_id, Ordering::Relaxed);
        Ok(())
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_any_shared_byte() {
        let p = |a: usize| a as *const u8;
        assert!(overlap(p(100), 10, p(109), 1));
        assert!(overlap(p(109), 1, p(100), 10));
        assert!(!overlap(p(100), 10, p(110), 5));
        assert!(!overlap(p(110), 5, p(100), 10));
        assert!(
            !overlap(p(100), 0, p(100), 10),
            "an empty range shares nothing"
        );
        assert!(
            overlap(p(usize::MAX - 4), 10, p(usize::MAX - 1), 1),
            "no wrap-around"
        );
    }

    #[test]
    fn buffers_need_a_pointer_unless_empty() {
        assert_eq!(arg_buf(core::ptr::null(), 0), Ok(()));
        assert_eq!(arg_buf(core::ptr::null(), 1), Err(BMS_EINVAL));
        let byte = 0u8;
        assert_eq!(arg_buf(&byte, usize::MAX), Err(BMS_EINVAL));
        assert_eq!(arg_out(core::ptr::null_mut::<u32>()), Err(BMS_EINVAL));
        let mut word = [0u32; 2];
        let misaligned = word.as_mut_ptr().cast::<u8>().wrapping_add(1).cast::<u32>();
        assert_eq!(arg_out(misaligned), Err(BMS_EINVAL));
    }
}
