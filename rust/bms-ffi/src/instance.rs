//! The one BMS instance in static storage, what each C call does with it, and the checks that
//! turn a wrong handle or an overlapping call into an error status instead of undefined
//! behaviour.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, Ordering};

use bms_core::bus::FrameDecoder;
use bms_core::drivers::poller::Poller;
use bms_core::drivers::{LineConfig, LineError, Protocol};
use bms_core::protocol::{self, Access, BmsDevice};
use bms_core::readout::ReadoutError;
use bms_core::storage::Persistence;
use bms_core::{Bms, Config, DfuEvent, Inputs, SelfCheck, SelfCheckInputs};

use crate::abi::{BmsOutputs, BMS_EAGAIN, BMS_EBUSY, BMS_EINVAL, BMS_ENOSPC};
use crate::port;
use crate::store::PortStorage;

/// The library state behind the C handle `struct bms *`: opaque to C, in static storage.
pub struct Instance {
    bms: Bms,
    /// Reassembles battery-bus frames across `bms_feed_bus` calls.
    decoder: FrameDecoder,
    /// The packs' poller when the battery line speaks JBD, JK or Daly (`bms_line_configure`);
    /// none for the OpenBMS bus.
    poller: Option<Poller>,
    /// The write policy of the persisted records.
    persistence: Persistence,
}

impl Instance {
    /// Restores every record through the port and builds the instance from them in `place`.
    ///
    /// Field by field, so that no whole `Instance` is built on the stack first (`Bms::new` still
    /// returns its several KiB through a stack temporary: see docs/ffi.md on stack sizes).
    ///
    /// # Safety
    /// `place` must be valid for writes of one `Instance` and hold no live value.
    unsafe fn open_in(place: *mut Instance) {
        let mut storage = PortStorage;
        let (persistence, restored) = Persistence::restore(&mut storage);
        // A new Instant Readout key only when none was restored; without a random source the
        // core runs with a placeholder key that it does not store.
        let random_key = match restored.secrets {
            Ok(_) => None,
            Err(_) => random_key(),
        };
        let config = Config {
            product_id: crate::calls::readout_product_id(),
            ..Config::from_restored(&restored, random_key, random_u16())
        };
        // SAFETY: `place` is valid for writes (the caller's contract); `addr_of_mut!` makes
        // field pointers without reading or referencing the uninitialised memory, and `write`
        // does not drop the old contents. Every field is written, so the value is complete.
        unsafe {
            core::ptr::addr_of_mut!((*place).bms).write(Bms::new(config));
            core::ptr::addr_of_mut!((*place).decoder).write(FrameDecoder::new());
            core::ptr::addr_of_mut!((*place).poller).write(None);
            core::ptr::addr_of_mut!((*place).persistence).write(persistence);
        }
    }

    /// One control step, then the records that became due are written.
    pub(crate) fn step(&mut self, now_ms: u64, inputs: &Inputs) -> BmsOutputs {
        // The core logs every output change with its reasons (PROT-11) and every code.
        let decisions = self.bms.step(now_ms, inputs);
        self.persist(now_ms);
        BmsOutputs::from_decisions(&decisions)
    }

    /// Writes what is due (and what was never stored).
    fn persist(&mut self, now_ms: u64) {
        // The report needs no handling here: the core logs a failed write and raises
        // StorageWriteFailed from it.
        let _report = self
            .bms
            .persist(now_ms, &mut self.persistence, &mut PortStorage);
    }

    /// Chooses what the battery line speaks; a line the core refuses changes nothing.
    pub(crate) fn configure_line(
        &mut self,
        protocol: Protocol,
        baud: u32,
        addresses: &[u8],
    ) -> Result<(), LineError> {
        let config = LineConfig::with_baud(protocol, baud, 0, addresses)?;
        // Integers through Number, as everywhere in the core: no integer formatting code.
        log::info!(
            "battery line: {} at {} bit/s, {} packs",
            protocol.name(),
            bms_core::word::Number::from(baud),
            bms_core::word::Number::from(config.addresses.len())
        );
        self.poller = match protocol {
            Protocol::OpenBms => None,
            _ => Some(Poller::new(config)),
        };
        Ok(())
    }

    /// Writes the request due now on the battery line into `tx`; returns its length and when
    /// to ask again (`None`: never, the OpenBMS bus).
    pub(crate) fn line_poll(&mut self, now_ms: u64, tx: &mut [u8]) -> (usize, Option<u64>) {
        match &mut self.poller {
            Some(poller) => {
                let len = poller.poll(now_ms, tx);
                (len, poller.next_deadline_ms())
            }
            None => (0, None),
        }
    }

    /// Feeds bus bytes; returns how many reports the core took.
    pub(crate) fn feed_bus(&mut self, now_ms: u64, bytes: &[u8]) -> i32 {
        let Instance {
            bms,
            decoder,
            poller,
            ..
        } = self;
        let mut taken: i32 = 0;
        if let Some(poller) = poller {
            poller.receive(now_ms, bytes, |pack| {
                // The core logs a refused report.
                if bms.handle_report(now_ms, &pack.report).is_ok() {
                    taken = taken.saturating_add(1);
                }
            });
            return taken;
        }
        decoder.feed_frames(bytes, |outcome| match outcome {
            // The core logs a refused report.
            Ok(report) => {
                if bms.handle_report(now_ms, &report).is_ok() {
                    taken = taken.saturating_add(1);
                }
            }
            Err(err) => log::debug!("bus frame dropped: {err}"),
        });
        taken
    }

    /// Answers one GATT access into `resp`; returns the response length.
    pub(crate) fn gatt_request(
        &mut self,
        now_ms: u64,
        characteristic: u8,
        access: Access,
        authenticated: bool,
        req: &[u8],
        resp: &mut [u8],
    ) -> Result<usize, i32> {
        // The core holds the passkey; the protocol changes this copy, range-checked.
        let mut secrets = self.bms.secrets();
        let mut device = BmsDevice {
            bms: &mut self.bms,
            secrets: &mut secrets,
        };
        let reply = protocol::handle_request(
            &mut device,
            now_ms,
            characteristic,
            access,
            authenticated,
            req,
            resp,
        )
        .map_err(|_| BMS_ENOSPC)?;
        let changed = reply.changed;
        if changed.secrets {
            if let Err(err) = self.bms.set_passkey(secrets.passkey) {
                log::error!("passkey not changed: {err}");
            }
        }
        // What a request changed is stored now, not at the next step.
        if changed.settings || changed.soc || changed.history || changed.secrets {
            self.persist(now_ms);
        }
        Ok(reply.len)
    }

    /// Builds the Instant Readout manufacturer data into `out`; returns its length.
    pub(crate) fn advertisement(&mut self, out: &mut [u8]) -> Result<usize, i32> {
        self.bms
            .manufacturer_data(out)
            .map_err(|error| match error {
                ReadoutError::NotReserved => BMS_EAGAIN,
                // Too small a buffer (the record is the core's own, never too long).
                _ => BMS_ENOSPC,
            })
    }

    /// Firmware-update progress.
    pub(crate) fn dfu_event(&mut self, now_ms: u64, event: DfuEvent) {
        // Logged by the core.
        self.bms.handle_dfu(now_ms, event);
    }

    /// When the next step is due at the latest.
    pub(crate) fn next_deadline_ms(&self) -> Option<u64> {
        self.bms.next_deadline_ms()
    }

    /// The pairing passkey to give the BLE stack (0–999999).
    pub(crate) fn passkey(&self) -> u32 {
        self.bms.passkey()
    }

    /// DFU-1: the core's verdict on the running image (see `bms_self_check`).
    pub(crate) fn self_check(&mut self, now_ms: u64, inputs: SelfCheckInputs) -> SelfCheck {
        self.bms.self_check(now_ms, inputs)
    }
}

/// A random Instant Readout key from the port, `None` when it has none.
fn random_key() -> Option<[u8; 16]> {
    let mut key = [0u8; 16];
    port::random(&mut key).ok().map(|()| key)
}

/// A random 16-bit value from the port, 0 when it has none.
fn random_u16() -> u16 {
    let mut bytes = [0u8; 2];
    match port::random(&mut bytes) {
        Ok(()) => u16::from_le_bytes(bytes),
        Err(_) => 0,
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
    /// Takes the slot, or `BMS_EBUSY` when another call holds it.
    fn take() -> Result<Claim, i32> {
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
    /// instance is open already or another call is running.
    pub(crate) fn open() -> Option<*mut Instance> {
        let _claim = Claim::take().ok()?;
        if SLOT.open.load(Ordering::Relaxed) {
            return None;
        }
        let place = SLOT.cell.get().cast::<Instance>();
        // SAFETY: we hold the claim, so nothing else accesses the cell, which is valid for one
        // `Instance`; `open` is false, so it holds no live instance that writing over could leak.
        unsafe { Instance::open_in(place) };
        SLOT.open.store(true, Ordering::Relaxed);
        Some(place)
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
