//! [`Node`]: the one device shell. Every caller that runs a whole BMS — the firmware (through
//! `bms-ffi`), the simulator, `bms-sim replay`, the web app's demo device, the fuzz targets and
//! the tests — holds a `Node`, so they all restore, decode, answer and persist the same way.
//!
//! A node owns the [`Bms`], the battery line (the OpenBMS bus's [`FrameDecoder`], or the
//! [`Poller`] of JBD, JK or Daly packs), the write policy of the persisted records
//! ([`Persistence`]) and the caller's [`Storage`]. One cadence of persistence for every caller:
//! after a [`Node::step`] at which the SoC state, the history or the nonce reservation became
//! due, and at least every [`PERSIST_POLL_MS`] for the records only the store's bookkeeping
//! knows are due. What a GATT request changed is written before [`Node::gatt`] returns, so the
//! answer "stored" is true — except that settings and secrets are written at most once per
//! [`crate::limits::USER_WRITE_INTERVAL_MS`] (SET-2, M7): a change within that time of the last
//! write is in force at once and reaches flash when the time is over, or at [`Node::flush`]
//! (the firmware calls it when the link drops), whichever is first.
//!
//! ```
//! use bms_core::node::Node;
//! use bms_core::storage::MemStorage;
//! use bms_core::Inputs;
//!
//! // A random source that has nothing: the node runs without secrets (nothing pairs, nothing
//! // is advertised) and stores none.
//! let mut node = Node::open(MemStorage::new(), &mut |_: &mut [u8]| false);
//! node.feed_bus(0, &[0x00, 0x13]); // bytes as they arrive on the battery bus
//! let decisions = node.step(100, &Inputs::default());
//! assert!(!decisions.atd, "no battery data yet: loads stay disconnected (PROT-1)");
//! ```

use crate::bms::{Bms, Config, Decisions, DfuEvent, Inputs, SelfCheck, SelfCheckInputs};
use crate::bus::{BatteryReport, FrameDecoder};
use crate::drivers::poller::Poller;
use crate::drivers::{LineConfig, LineError, Protocol};
use crate::limits::PERSIST_POLL_MS;
use crate::name::DeviceName;
use crate::pairing::{Bond, BondAction, ButtonAction};
use crate::protocol::{self, Access, BmsDevice, ProtocolError, Status};
use crate::readout::ReadoutError;
use crate::secrets::DeviceSecrets;
use crate::storage::{Persistence, RecordKind, Storage};
use crate::word::Number;

/// The platform's random source: fills `out` and returns true, or returns false when it has
/// none. Asked for the device's secrets at the first start (16 bytes of key, then 8 for the
/// passkey), for a starting advertisement nonce when its reservation was lost (2 bytes), and
/// for new secrets when pairing is reset, a new readout key is asked for, or the readout key
/// has used up its nonces ([`Node::step_with_random`]). Any
/// `FnMut(&mut [u8]) -> bool` is one.
pub trait Random {
    /// Fills `out` with random bytes; false when no random source is available.
    fn fill(&mut self, out: &mut [u8]) -> bool;
}

impl<F: FnMut(&mut [u8]) -> bool> Random for F {
    fn fill(&mut self, out: &mut [u8]) -> bool {
        self(out)
    }
}

/// The answer to one GATT access ([`Node::gatt`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct GattReply {
    /// Bytes of the response written to the buffer.
    pub len: usize,
    /// The protocol status sent (also the response's second byte).
    pub status: Status,
    /// The new pairing passkey when the request changed it: give it to the BLE stack.
    pub new_passkey: Option<u32>,
    /// The request renamed the device: advertise [`Node::device_name`].
    pub renamed: bool,
}

/// One BMS device: the core, its bus decoder and its persisted records, over the caller's
/// storage `S`. See the module documentation.
#[derive(Clone, Debug)]
pub struct Node<S: Storage> {
    bms: Bms,
    /// Reassembles OpenBMS battery-bus frames across [`Node::feed_bus`] calls.
    decoder: FrameDecoder,
    /// The packs' poller when the battery line speaks JBD, JK or Daly
    /// ([`Node::configure_line`]); none for the OpenBMS bus.
    poller: Option<Poller>,
    persistence: Persistence,
    storage: S,
    /// The records are polled at the first step at or after this time even when none is due.
    next_poll_ms: u64,
    /// BLE-3: a worn readout key could not be renewed (no random source) and that was logged.
    worn_key_reported: bool,
}

impl<S: Storage> Node<S> {
    /// Restores every record from `storage` and starts the core from them
    /// ([`Config::from_restored`]): what is missing or corrupt is replaced by its defaults and
    /// reported (SET-3), and written back at the first step.
    pub fn open(storage: S, random: &mut dyn Random) -> Self {
        Node::open_with(storage, random, |_| {})
    }

    /// As [`Node::open`], with `adjust` applied to the restored configuration before the core
    /// starts: the firmware sets its product id, the simulator a scenario's settings.
    pub fn open_with(
        mut storage: S,
        random: &mut dyn Random,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        let (persistence, restored) = Persistence::restore(&mut storage);
        // New secrets only when none were restored (or the passkey is the old 000000):
        // `Config::from_restored` decides whether they may be used (a true first start) or the
        // stored record is faulty and kept.
        // A lost nonce reservation needs a new readout key too (BLE-3).
        let fresh = match restored.secrets {
            Ok(stored)
                if stored.passkey != DeviceSecrets::DEFAULT_PASSKEY
                    && restored.fault(RecordKind::Nonce).is_none() =>
            {
                None
            }
            _ => fresh_secrets(random),
        };
        let mut nonce = [0u8; 2];
        let random_nonce = if random.fill(&mut nonce) {
            u16::from_le_bytes(nonce)
        } else {
            0
        };
        let mut config = Config::from_restored(&restored, fresh, random_nonce);
        adjust(&mut config);
        Node {
            bms: Bms::new(config),
            decoder: FrameDecoder::new(),
            poller: None,
            persistence,
            storage,
            next_poll_ms: 0,
            worn_key_reported: false,
        }
    }

    /// PROT-1 (rev 2): the output state of the last step, encoded for the platform's retained
    /// RAM ([`crate::retained`]).
    pub fn retained(&self) -> [u8; crate::retained::RETAINED_LEN] {
        self.bms.retained().encode()
    }

    /// Chooses what the battery line speaks (`baud` bit/s, the packs at `addresses`); a line
    /// the core refuses changes nothing.
    pub fn configure_line(
        &mut self,
        protocol: Protocol,
        baud: u32,
        addresses: &[u8],
    ) -> Result<(), LineError> {
        let config = LineConfig::with_baud(protocol, baud, 0, addresses)?;
        log::info!(
            "battery line: {} at {} bit/s, {} packs",
            protocol.name(),
            Number::from(baud),
            Number::from(config.addresses.len())
        );
        self.poller = match protocol {
            Protocol::OpenBms => None,
            _ => Some(Poller::new(config)),
        };
        Ok(())
    }

    /// Writes the request due now on the battery line into `tx`; returns its length and when
    /// to ask again (`None`: never, the OpenBMS bus, where the batteries report unasked).
    pub fn line_poll(&mut self, now_ms: u64, tx: &mut [u8]) -> (usize, Option<u64>) {
        match &mut self.poller {
            Some(poller) => {
                let len = poller.poll(now_ms, tx);
                (len, poller.next_deadline_ms())
            }
            None => (0, None),
        }
    }

    /// Feeds bytes from the battery line at `now_ms`; returns how many battery reports the core
    /// took. Frames may be split across calls; a refused report is logged and counted by the
    /// core, a broken frame by the decoder or the poller.
    pub fn feed_bus(&mut self, now_ms: u64, bytes: &[u8]) -> usize {
        let Node {
            bms,
            decoder,
            poller,
            ..
        } = self;
        let mut taken = 0usize;
        if !bytes.is_empty() {
            bms.note_bus_activity();
        }
        if let Some(poller) = poller {
            poller.receive(now_ms, bytes, |pack| {
                if bms.handle_report(now_ms, &pack.report).is_ok() {
                    taken = taken.saturating_add(1);
                }
            });
            return taken;
        }
        decoder.feed_frames(bytes, |outcome| match outcome {
            Ok(report) => {
                if bms.handle_report(now_ms, &report).is_ok() {
                    taken = taken.saturating_add(1);
                }
            }
            Err(err) => log::debug!("bus frame dropped: {err}"),
        });
        taken
    }

    /// A battery report that did not come through the bus codec (a JBD, JK or Daly pack read
    /// by a poller) at `now_ms`; true when the core took it.
    pub fn handle_report(&mut self, now_ms: u64, report: &BatteryReport) -> bool {
        self.bms.handle_report(now_ms, report).is_ok()
    }

    /// One control step at `now_ms` (see [`Bms::step`]), then the records that became due are
    /// written (see the module documentation for when). A caller without a random source: a
    /// worn readout key cannot be renewed ([`Node::step_with_random`]).
    pub fn step(&mut self, now_ms: u64, inputs: &Inputs) -> Decisions {
        self.step_with_random(now_ms, inputs, &mut |_: &mut [u8]| false)
    }

    /// As [`Node::step`], with the platform's random source: BLE-3, a readout key that has
    /// used up its nonces ([`crate::readout::NONCES_PER_KEY`]) is replaced by a new one from
    /// `random` (as command 9, NewReadoutKey, does: its key-check byte differs), stored at once,
    /// before any nonce reservation for it. Without a random source the worn key advertises
    /// nothing new ([`ReadoutError::KeyWorn`]; logged once) and never reuses a nonce.
    pub fn step_with_random(
        &mut self,
        now_ms: u64,
        inputs: &Inputs,
        random: &mut dyn Random,
    ) -> Decisions {
        let decisions = self.bms.step(now_ms, inputs);
        let now_ms = self.bms.now_ms();
        if self.renew_worn_readout_key(random) {
            self.flush(now_ms);
        } else if self.bms.persist_due() || now_ms >= self.next_poll_ms {
            self.persist(now_ms);
        }
        decisions
    }

    /// Answers one GATT access at `now_ms` into `resp` (which must hold
    /// [`protocol::MAX_RESPONSE_LEN`] bytes; see [`protocol::handle_request`]). What the request
    /// changed is stored before this returns (settings and secrets: see the module
    /// documentation); `random` is asked only for a new readout key. A bond action the request
    /// asked for waits in [`Node::take_bond_action`].
    #[allow(clippy::too_many_arguments)]
    pub fn gatt(
        &mut self,
        now_ms: u64,
        characteristic: u8,
        access: Access,
        authenticated: bool,
        req: &[u8],
        resp: &mut [u8],
        random: &mut dyn Random,
    ) -> Result<GattReply, ProtocolError> {
        let mut device = BmsDevice {
            bms: &mut self.bms,
            random,
        };
        let reply = protocol::handle_request(
            &mut device,
            now_ms,
            characteristic,
            access,
            authenticated,
            req,
            resp,
        )?;
        let changed = reply.changed;
        if changed.settings || changed.soc || changed.history || changed.secrets || changed.name {
            self.persist(now_ms);
        }
        Ok(GattReply {
            len: reply.len,
            status: reply.status,
            new_passkey: changed.secrets.then(|| self.bms.passkey()),
            renamed: changed.name,
        })
    }

    /// BLE-3: the Instant Readout manufacturer data (company id first) into `out`; its length.
    /// [`ReadoutError::NotReserved`] until a step has stored the first nonce reservation,
    /// [`ReadoutError::KeyWorn`] for new values once the key has used up its nonces and no
    /// step could renew it.
    pub fn advertisement(&mut self, out: &mut [u8]) -> Result<usize, ReadoutError> {
        self.bms.manufacturer_data(out)
    }

    /// Firmware-update progress at `now_ms` (PROT-10, DFU-2); takes effect at the next step.
    pub fn dfu(&mut self, now_ms: u64, event: DfuEvent) {
        self.bms.handle_dfu(now_ms, event);
    }

    /// DFU-1: the post-update self-check (see [`Bms::self_check`]).
    pub fn self_check(&mut self, now_ms: u64, inputs: SelfCheckInputs) -> SelfCheck {
        self.bms.self_check(now_ms, inputs)
    }

    /// When to step again at the latest (see [`Bms::next_deadline_ms`]).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.bms.next_deadline_ms()
    }

    /// BLE-2: the pairing passkey (1–999999) to give the BLE stack; 0 when there is none
    /// (nothing may pair).
    pub fn passkey(&self) -> u32 {
        self.bms.passkey()
    }

    /// BLE-2: the board's button went down (`pressed`) or up at `now_ms` (see [`Bms::button`]).
    /// Held for the reset time, pairing is reset: new secrets from `random` are stored at once
    /// and every bond is to be removed ([`Node::take_bond_action`]).
    pub fn button(
        &mut self,
        now_ms: u64,
        pressed: bool,
        random: &mut dyn Random,
    ) -> Option<ButtonAction> {
        let action = self.bms.button(now_ms, pressed);
        match action {
            Some(ButtonAction::ResetPairing) => {
                self.bms.reset_pairing(fresh_secrets(random));
                self.flush(now_ms);
            }
            // BLE-2: a worn passkey is replaced as the window opens, before anyone reads it.
            Some(ButtonAction::OpenWindow) if self.bms.passkey_worn() => {
                if let Some(fresh) = fresh_secrets(random) {
                    self.bms.renew_passkey(fresh.passkey);
                    self.flush(now_ms);
                }
            }
            _ => {}
        }
        action
    }

    /// BLE-2: a pairing attempt ended at `now_ms` (`success`, or failed: back-off). A success
    /// wears the passkey ([`crate::pairing::Pairing::attempt`]), stored at once: a restart
    /// before the next write would otherwise give the next window the passkey a listener knows.
    pub fn pairing_result(&mut self, now_ms: u64, success: bool) {
        self.bms.pairing_result(now_ms, success);
        if success {
            self.flush(self.bms.now_ms());
        }
    }

    /// BLE-2: the bonds the BLE stack holds (at start and after every change).
    pub fn set_bonds(&mut self, bonds: &[Bond]) {
        self.bms.set_bonds(bonds);
    }

    /// BLE-2: what to do with the BLE stack's bonds now, if anything (after a GATT request, a
    /// step that set `bond_action_pending`, or a button reset).
    pub fn take_bond_action(&mut self) -> Option<BondAction> {
        self.bms.take_bond_action()
    }

    /// Writes every record that is due now, coalesced ones included (the link dropped, or the
    /// device is about to stop).
    pub fn flush(&mut self, now_ms: u64) {
        self.persist_with(now_ms, true);
    }

    /// BLE-1: the device name to advertise.
    pub fn device_name(&self) -> &DeviceName {
        self.bms.device_name()
    }

    /// The core, for reading its state.
    pub fn bms(&self) -> &Bms {
        &self.bms
    }

    /// The core, for user actions outside GATT (the simulator's scripted events, tests). What
    /// they change is written at the next [`Node::step`].
    pub fn bms_mut(&mut self) -> &mut Bms {
        &mut self.bms
    }

    /// The bus decoder's frame counters.
    pub fn bus_stats(&self) -> crate::bus::BusStats {
        self.decoder.stats()
    }

    /// The write policy's bookkeeping (write counters per record).
    pub fn persistence(&self) -> &Persistence {
        &self.persistence
    }

    /// The storage the records go to.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The storage, for tests that break or inspect it.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    /// Ends the node and hands back its storage (a reboot opens a new node on it).
    pub fn into_storage(self) -> S {
        self.storage
    }

    /// BLE-3: a worn readout key replaced by a new one from `random`; true when it was.
    fn renew_worn_readout_key(&mut self, random: &mut dyn Random) -> bool {
        if !self.bms.readout_key_worn() {
            self.worn_key_reported = false;
            return false;
        }
        let mut key = [0u8; 16];
        if random.fill(&mut key) && self.bms.new_device_key(key).is_ok() {
            log::warn!("readout key renewed: its nonces were used up; decoders need the new key");
            self.worn_key_reported = false;
            return true;
        }
        if !self.worn_key_reported {
            log::error!(
                "readout key worn (its nonces are used up) and no random source for a new one: \
                 nothing new is advertised"
            );
            self.worn_key_reported = true;
        }
        false
    }

    /// Writes every record that is due now, and tells the core what was written.
    fn persist(&mut self, now_ms: u64) {
        self.persist_with(now_ms, false);
    }

    fn persist_with(&mut self, now_ms: u64, flush: bool) {
        self.next_poll_ms = now_ms.saturating_add(PERSIST_POLL_MS);
        let records = self.bms.records(flush);
        let report = self.persistence.poll(&mut self.storage, now_ms, &records);
        // A failed write is logged by the core and raises StorageWriteFailed at the next step.
        self.bms.records_written(now_ms, &records, &report);
    }
}

/// New secrets from `random` (16 bytes of key, then 8 for the passkey), `None` without one.
fn fresh_secrets(random: &mut dyn Random) -> Option<DeviceSecrets> {
    let mut bytes = [0u8; 24];
    let (key, seed) = bytes.split_at_mut(16);
    (random.fill(key) && random.fill(seed)).then(|| DeviceSecrets::from_random(&bytes))
}
