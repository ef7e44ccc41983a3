//! The one BMS instance in static storage, and the checks that turn a wrong handle or an
//! overlapping call into an error status instead of undefined behaviour.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, Ordering};

use bms_core::bus::FrameDecoder;
use bms_core::Bms;

use crate::abi::{BMS_EBUSY, BMS_EINVAL};

/// The library state behind the C handle `struct bms *`: opaque to C, in static storage.
pub struct Instance {
    pub(crate) bms: Bms,
    /// Reassembles battery-bus frames across `bms_feed_bus` calls.
    pub(crate) decoder: FrameDecoder,
}

/// Static storage for the instance plus two flags: `open` says whether `cell` holds a live
/// `Instance`, `busy` says whether a call is using it right now.
struct Slot {
    open: AtomicBool,
    busy: AtomicBool,
    cell: UnsafeCell<MaybeUninit<Instance>>,
}

// SAFETY: the cell is only reached through `Slot::claim`, which hands out at most one `Claim`
// at a time (the `busy` flag is taken with an atomic swap), so no two threads ever access the
// cell at once.
unsafe impl Sync for Slot {}

static SLOT: Slot = Slot {
    open: AtomicBool::new(false),
    busy: AtomicBool::new(false),
    cell: UnsafeCell::new(MaybeUninit::uninit()),
};

/// Exclusive access to the slot for the duration of one C call; released on drop.
pub(crate) struct Claim(());

impl Claim {
    /// Takes the slot, or `BMS_EBUSY` when another call holds it.
    fn take() -> Result<Claim, i32> {
        if SLOT.busy.swap(true, Ordering::Acquire) {
            return Err(BMS_EBUSY);
        }
        Ok(Claim(()))
    }

    /// Takes the slot for a call on `handle`: `BMS_EINVAL` unless `handle` is the pointer
    /// `bms_open` returned and the instance is open.
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

    /// Puts a new instance into the free slot and returns the C handle, or `None` when an
    /// instance is already open or another call is running.
    pub(crate) fn open(make: impl FnOnce() -> Instance) -> Option<*mut Instance> {
        let _claim = Claim::take().ok()?;
        if SLOT.open.load(Ordering::Relaxed) {
            return None;
        }
        // SAFETY: we hold the claim, so nothing else accesses the cell, and `open` is false, so
        // the cell holds no live instance that writing over could leak.
        let instance = unsafe { (*SLOT.cell.get()).write(make()) };
        SLOT.open.store(true, Ordering::Relaxed);
        Some(core::ptr::from_mut(instance))
    }

    /// The open instance.
    pub(crate) fn instance(&mut self) -> &mut Instance {
        // SAFETY: a `Claim` obtained through `Claim::of` exists only while `open` is true, so
        // the cell is initialised; the claim is exclusive and the returned borrow cannot outlive
        // it, so this is the only reference.
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
