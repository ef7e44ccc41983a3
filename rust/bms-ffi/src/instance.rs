//! The one BMS instance in static storage, what each C call does with it, and the checks that
//! turn a wrong handle or an overlapping call into an error status instead of undefined
//! behaviour.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, Ordering};

use bms_core::drivers::{LineError, Protocol};
use bms_core::node::Node;
use bms_core::pairing::{Bond, BondAction, ButtonAction};
use bms_core::protocol::Access;
use bms_core::readout::ReadoutError;
use bms_core::{DfuEvent, Inputs, SelfCheck, SelfCheckInputs};

use crate::abi::{BmsOutputs, BMS_EAGAIN, BMS_EBUSY, BMS_EINVAL, BMS_ENOSPC};
use crate::port;
use crate::store::PortStorage;

/// The library state behind the C handle `struct bms *`: opaque to C, in static storage. The
/// device is the core's `bms_core::node::Node` over the port's storage; each C call is one
/// delegation to it.
pub struct Instance(Node<PortStorage>);

impl Instance {
    /// Restores every record through the port and opens the node in `place`.
    fn open_in(place: &mut MaybeUninit<Instance>) {
        let product_id = crate::calls::readout_product_id();
        let mut random = |out: &mut [u8]| port::random(out).is_ok();
        place.write(Instance(Node::open_with(
            PortStorage,
            &mut random,
            |config| {
                config.product_id = product_id;
                config.warm_restart = crate::calls::take_warm_restart();
            },
        )));
    }

    /// One control step; the node writes the records that became due (and renews a readout
    /// key that has used up its nonces, BLE-3, from `bms_port_random`).
    pub(crate) fn step(&mut self, now_ms: u64, inputs: &Inputs) -> BmsOutputs {
        // The core logs every output change with its reasons (PROT-11) and every code.
        let decisions = self
            .0
            .step_with_random(now_ms, inputs, &mut |out: &mut [u8]| {
                port::random(out).is_ok()
            });
        BmsOutputs::from_decisions(&decisions, self.0.bms().read_protection())
    }

    /// PROT-1: the output state of the last step for retained RAM.
    pub(crate) fn retained(&self) -> [u8; bms_core::retained::RETAINED_LEN] {
        self.0.retained()
    }

    /// Chooses what the battery line speaks; a line the core refuses changes nothing.
    pub(crate) fn configure_line(
        &mut self,
        protocol: Protocol,
        baud: u32,
        addresses: &[u8],
    ) -> Result<(), LineError> {
        self.0.configure_line(protocol, baud, addresses)
    }

    /// Writes the request due now on the battery line into `tx`; returns its length and when
    /// to ask again (`None`: never, the OpenBMS bus).
    pub(crate) fn line_poll(&mut self, now_ms: u64, tx: &mut [u8]) -> (usize, Option<u64>) {
        self.0.line_poll(now_ms, tx)
    }

    /// Feeds bus bytes; returns how many reports the core took.
    pub(crate) fn feed_bus(&mut self, now_ms: u64, bytes: &[u8]) -> i32 {
        i32::try_from(self.0.feed_bus(now_ms, bytes)).unwrap_or(i32::MAX)
    }

    /// Answers one GATT access into `resp`; returns the response length. What it changed is
    /// stored before this returns.
    pub(crate) fn gatt_request(
        &mut self,
        now_ms: u64,
        characteristic: u8,
        access: Access,
        authenticated: bool,
        req: &[u8],
        resp: &mut [u8],
    ) -> Result<usize, i32> {
        self.0
            .gatt(
                now_ms,
                characteristic,
                access,
                authenticated,
                req,
                resp,
                &mut |out: &mut [u8]| port::random(out).is_ok(),
            )
            .map(|reply| reply.len)
            .map_err(|_| BMS_ENOSPC)
    }

    /// Builds the Instant Readout manufacturer data into `out`; returns its length.
    pub(crate) fn advertisement(&mut self, out: &mut [u8]) -> Result<usize, i32> {
        self.0.advertisement(out).map_err(|error| match error {
            ReadoutError::NotReserved | ReadoutError::NoKey | ReadoutError::KeyWorn => BMS_EAGAIN,
            // Too small a buffer (the record is the core's own, never too long).
            _ => BMS_ENOSPC,
        })
    }

    /// Firmware-update progress (logged by the core).
    pub(crate) fn dfu_event(&mut self, now_ms: u64, event: DfuEvent) {
        self.0.dfu(now_ms, event);
    }

    /// When the next step is due at the latest.
    pub(crate) fn next_deadline_ms(&self) -> Option<u64> {
        self.0.next_deadline_ms()
    }

    /// The pairing passkey to give the BLE stack (1–999999; 0 = none, nothing pairs).
    pub(crate) fn passkey(&self) -> u32 {
        self.0.passkey()
    }

    /// The device name to advertise (BLE-1), UTF-8.
    pub(crate) fn device_name(&self) -> &[u8] {
        self.0.device_name().as_bytes()
    }

    /// BLE-2: the button's edge; what it asked for.
    pub(crate) fn button(&mut self, now_ms: u64, pressed: bool) -> Option<ButtonAction> {
        self.0.button(now_ms, pressed, &mut |out: &mut [u8]| {
            port::random(out).is_ok()
        })
    }

    /// BLE-2: a pairing attempt ended.
    pub(crate) fn pairing_result(&mut self, now_ms: u64, success: bool) {
        self.0.pairing_result(now_ms, success);
    }

    /// BLE-2: the bonds the stack holds.
    pub(crate) fn set_bonds(&mut self, bonds: &[Bond]) {
        self.0.set_bonds(bonds);
    }

    /// BLE-2: the bond action that waits, if any.
    pub(crate) fn take_bond_action(&mut self) -> Option<BondAction> {
        self.0.take_bond_action()
    }

    /// Writes every record that is due, coalesced ones included.
    pub(crate) fn flush(&mut self, now_ms: u64) {
        self.0.flush(now_ms);
    }

    /// DFU-1: the core's verdict on the running image (see `bms_self_check`).
    pub(crate) fn self_check(&mut self, now_ms: u64, inputs: SelfCheckInputs) -> SelfCheck {
        self.0.self_check(now_ms, inputs)
    }
}

/// Static storage for the instance plus two flags: `open` says whether `cell` holds a live
/// `Instance`, `busy` says whether a call is using it right now.
struct Slot {
    open: AtomicBool,
    busy: AtomicBool,
    cell: UnsafeCell<MaybeUninit<Instance>>,
}

// SAFETY: the cell is only reached through `Claim`, of which at most one exists at a time (the
// `busy` flag is taken with an atomic swap), so no two threads ever access the cell at once.
unsafe impl Sync for Slot {}

static SLOT: Slot = Slot {
    open: AtomicBool::new(false),
    busy: AtomicBool::new(false),
    cell: UnsafeCell::new(MaybeUninit::uninit()),
};

/// Exclusive access to the slot for the duration of one C call; released on drop.
pub(crate) struct Claim(());

impl Claim {
    /// Takes the slot for a call that needs no open instance (`bms_open`, the setters), or
    /// `BMS_EBUSY` when another call holds it: another thread's, or the call whose
    /// `bms_port_*` callback is calling back in.
    pub(crate) fn take() -> Result<Claim, i32> {
        if SLOT.busy.swap(true, Ordering::Acquire) {
            return Err(BMS_EBUSY);
        }
        Ok(Claim(()))
    }

    /// Takes the slot for a call on `handle`: `BMS_EINVAL` unless `handle` is the pointer
    /// `bms_open` returned and the instance is open, `BMS_EBUSY` during another call.
    pub(crate) fn of(handle: *const Instance) -> Result<Claim, i32> {
        if handle.is_null() || handle != SLOT.cell.get().cast::<Instance>().cast_const() {
            return Err(BMS_EINVAL);
        }
        let claim = Claim::take()?;
        if !SLOT.open.load(Ordering::Relaxed) {
            return Err(BMS_EINVAL);
        }
        Ok(claim)
    }

    /// Opens the instance in the free slot and returns the C handle, or `None` when an
    /// instance is open already.
    pub(crate) fn open(&mut self) -> Option<*mut Instance> {
        if SLOT.open.load(Ordering::Relaxed) {
            return None;
        }
        // SAFETY: we hold the claim, so nothing else accesses the cell and this is the only
        // reference; `open` is false, so it holds no live instance that writing over could leak.
        Instance::open_in(unsafe { &mut *SLOT.cell.get() });
        SLOT.open.store(true, Ordering::Relaxed);
        Some(SLOT.cell.get().cast::<Instance>())
    }

    /// The open instance.
    pub(crate) fn instance(&mut self) -> &mut Instance {
        // SAFETY: a `Claim` from `Claim::of` exists only while `open` is true, so the cell is
        // initialised; the claim is exclusive and the returned borrow cannot outlive it, so
        // this is the only reference.
        unsafe { (*SLOT.cell.get()).assume_init_mut() }
    }

    /// Drops the open instance and frees the slot for the next `bms_open`.
    pub(crate) fn close(self) {
        // SAFETY: as in `instance`: the claim (from `Claim::of`) proves the cell is initialised
        // and exclusively ours; `open` is cleared right after, so it is never dropped twice.
        unsafe { (*SLOT.cell.get()).assume_init_drop() };
        SLOT.open.store(false, Ordering::Relaxed);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        SLOT.busy.store(false, Ordering::Release);
    }
}
