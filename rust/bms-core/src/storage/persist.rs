//! [`Persistence`]: writes each record when it is due and restores all of them at start, each on
//! its own.
//!
//! Who decides "due": the settings and the device secrets are written whenever they differ from
//! the stored ones (SET-2, BLE-2);
//! the SoC state and the history when their owners say so (`Monitor::persist_due`: every point
//! of SoC and at most 10 minutes after any change, MON-8; `History::counted_due`: at once for a
//! counted item, `History::all_due`: at most 10 minutes after any other change, MON-8 and
//! HIST-4); the nonce whenever the
//! advertiser asks for a new reservation (`Advertiser::nonce_to_persist`: once every 2048
//! payload changes, never per advertisement); what the adaptive SoC estimator learned when it
//! moved by a meaningful step since the stored values, at most once every 4 hours
//! ([`super::learned`] explains why). A due SoC state goes into the 8-byte
//! [`SocPoint`] when only its charge counts changed, and into the whole [`SocRecord`] otherwise
//! (see [`super::soc`]); the history goes into its two compact points when they can carry what
//! changed, and into the whole record otherwise (see [`super::hist`]). A record that is missing
//! or unreadable at start is written at the first
//! poll, so the store is repaired with the values in use (the learned values once the monitor
//! knows its bank). A write that fails is reported,
//! retried after [`RETRY_MS`], and leaves the previous value in the store.
//!
//! Call order ([`crate::node::Node`] follows it): build [`Records`] from the core, [`Persistence::poll`], then
//! tell the core what was written (`Monitor::mark_persisted` when [`PollReport::soc`] is
//! written, `History::mark_persisted`, `Advertiser::nonce_persisted`) and raise or clear the
//! storage error from [`Persistence::failing`].

use super::hist::{self, HistoryCounts, HistoryPoint, HistoryStored};
use super::learned::{self, LearnedRecord, LEARNED_INTERVAL_MS};
use super::record::{
    decode_record_versioned, encode_record, Nonce, Record, RecordError, RecordKind,
};
use super::soc::{self, SocPoint, SocRecord};
use super::{Storage, StorageError, MAX_RECORD_LEN};
use crate::history::HistoryRecord;
use crate::limits::USER_WRITE_INTERVAL_MS;
use crate::monitor::SocState;
use crate::name::DeviceName;
use crate::secrets::DeviceSecrets;
use crate::settings::Settings;
use crate::soc::Learned;

/// Wait after a failed write before the same record is tried again, in ms: a broken flash is not
/// hammered every control step.
pub const RETRY_MS: u64 = 60_000;

const KINDS: usize = RecordKind::COUNT;

/// The records as the core holds them at one instant, and which of them their owners want
/// written now.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Records {
    /// The settings in use.
    pub settings: Settings,
    /// The monitor's state (`Monitor::snapshot`).
    pub soc: SocState,
    /// The monitor wants `soc` written (`Monitor::persist_due`).
    pub soc_due: bool,
    /// The balancer's judgement at the last full charge (`Balancer::judged_balanced`), kept
    /// in the SoC record; a change writes the record.
    pub balanced_at_full: Option<bool>,
    /// PROT-2: ATD is free-floating for under-voltage (`Protection::undervoltage_disconnect`),
    /// kept in the SoC record; a change writes the record at once.
    pub undervoltage_disconnect: bool,
    /// The history (`History::record`).
    pub history: HistoryRecord,
    /// The whole history is due (`History::all_due`): stored through the whole record or its
    /// points, whichever can carry it.
    pub history_due: bool,
    /// The history's counted items are due (`History::counted_due`): stored at once through the
    /// counts point (or the whole record when the point cannot carry them).
    pub history_counted_due: bool,
    /// A nonce reservation to persist (`Advertiser::nonce_to_persist`).
    pub nonce: Option<u16>,
    /// The device's passkey and Instant Readout key (`Bms::secrets`); `None` while the key is
    /// a placeholder that must not be stored (no random source at start).
    pub secrets: Option<DeviceSecrets>,
    /// What the adaptive SoC estimator learned (`Monitor::learned`); `None` with plain
    /// counting, which learns nothing. Written when it moved by a meaningful step, at most
    /// once per [`LEARNED_INTERVAL_MS`].
    pub learned: Option<Learned>,
    /// Write coalesced records now ([`Outcome::Coalesced`]): the link dropped, or the caller
    /// asks.
    pub flush: bool,
    /// The device name (`Bms::device_name`), written when it differs from the stored one.
    pub name: DeviceName,
    /// DFU-1: records the store holds in an older format stay as they are (not rewritten in
    /// the new one) while this image may still be reverted to the firmware that wrote them
    /// ([`crate::limits::OLDER_FORMAT_HOLD_MS`]); their changes wait in RAM meanwhile.
    pub hold_older_formats: bool,
}

/// What [`Persistence::poll`] did with one record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub enum Outcome {
    /// Not due: nothing written.
    #[default]
    Idle,
    /// Written; tell its owner.
    Written,
    /// Due, but the write failed; the previous value is still stored.
    Failed(StorageError),
    /// Due, but a recent write failed: waiting [`RETRY_MS`] before trying again.
    Deferred,
    /// Due (settings or secrets), but the last write of the record was less than
    /// [`USER_WRITE_INTERVAL_MS`] ago: written when that time is over, or at a flush
    /// ([`Records::flush`]). The value is in force; flash is spared a burst (M7).
    Coalesced,
}

/// What one [`Persistence::poll`] did, per record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct PollReport {
    /// The settings record.
    pub settings: Outcome,
    /// The SoC state (MON-8), through whichever record carried it: `Written` means the state
    /// given in [`Records::soc`] is stored (tell the monitor).
    pub soc: Outcome,
    /// The whole SoC record (`bms/soc`).
    pub soc_record: Outcome,
    /// The SoC point (`bms/point`).
    pub soc_point: Outcome,
    /// The history (HIST-4, MON-8), through whichever records carried it: `Written` means the
    /// history given in [`Records::history`] is stored up to the points' units
    /// (`History::mark_persisted`), possibly without a write when the store already holds it.
    pub history: Outcome,
    /// The history's counted items: `Written` means they are stored
    /// (`History::mark_counted_persisted`).
    pub history_counted: Outcome,
    /// The whole history record (`bms/hist`).
    pub history_record: Outcome,
    /// The history's fast-counter point (`bms/hpt`).
    pub history_point: Outcome,
    /// The history's counts point (`bms/hcnt`).
    pub history_counts: Outcome,
    /// The nonce record (the value written is [`Records::nonce`]).
    pub nonce: Outcome,
    /// The device secrets record.
    pub secrets: Outcome,
    /// The learned-values record (the value written is [`Records::learned`]).
    pub learned: Outcome,
    /// The device name record.
    pub name: Outcome,
    /// After this poll, the last write of some record failed ([`Persistence::failing`]):
    /// raise the storage error until a poll reports false.
    pub failing: bool,
}

impl PollReport {
    /// The outcome for the record of `kind`.
    pub fn outcome(&self, kind: RecordKind) -> Outcome {
        match kind {
            RecordKind::Settings => self.settings,
            RecordKind::Soc => self.soc_record,
            RecordKind::SocPoint => self.soc_point,
            RecordKind::History => self.history_record,
            RecordKind::HistoryPoint => self.history_point,
            RecordKind::HistoryCounts => self.history_counts,
            RecordKind::Nonce => self.nonce,
            RecordKind::Secrets => self.secrets,
            RecordKind::Learned => self.learned,
            RecordKind::Name => self.name,
        }
    }

    /// True when any write in this poll failed.
    pub fn any_failed(&self) -> bool {
        RecordKind::ALL
            .iter()
            .any(|&kind| matches!(self.outcome(kind), Outcome::Failed(_)))
    }

    fn set(&mut self, kind: RecordKind, outcome: Outcome) {
        match kind {
            RecordKind::Settings => self.settings = outcome,
            RecordKind::Soc => self.soc_record = outcome,
            RecordKind::SocPoint => self.soc_point = outcome,
            RecordKind::History => self.history_record = outcome,
            RecordKind::HistoryPoint => self.history_point = outcome,
            RecordKind::HistoryCounts => self.history_counts = outcome,
            RecordKind::Nonce => self.nonce = outcome,
            RecordKind::Secrets => self.secrets = outcome,
            RecordKind::Learned => self.learned = outcome,
            RecordKind::Name => self.name = outcome,
        }
    }
}

/// Write counters of one record kind since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordStats {
    /// Successful writes.
    pub writes: u32,
    /// Value bytes of the successful writes (envelope included).
    pub bytes: u64,
    /// Failed writes.
    pub failures: u32,
}

/// What was found in the store at start, per record: the value, or why it was not applied (the
/// caller then uses that record's defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Restored {
    /// The stored settings.
    pub settings: Result<Settings, RecordError>,
    /// The stored SoC state: the whole record with its point applied when the point belongs to
    /// it (pass `.ok()` to `Monitor::new`).
    pub soc: Result<SocState, RecordError>,
    /// The stored SoC point as read (applied in `soc` only on top of its own record).
    pub soc_point: Result<SocPoint, RecordError>,
    /// The balancer's judgement at the last full charge, from the SoC record (`None` without
    /// one).
    pub balanced_at_full: Option<bool>,
    /// PROT-2: the under-voltage disconnect latch, from the SoC record (false without one).
    pub undervoltage_disconnect: bool,
    /// The stored history (`History::from`): the whole record with each point applied that
    /// belongs to it.
    pub history: Result<HistoryRecord, RecordError>,
    /// The stored history point as read (applied in `history` only on top of its own record).
    pub history_point: Result<HistoryPoint, RecordError>,
    /// The stored history counts as read (applied in `history` only on top of its own record).
    pub history_counts: Result<HistoryCounts, RecordError>,
    /// The stored nonce reservation (first nonce for `Advertiser::new`).
    pub nonce: Result<Nonce, RecordError>,
    /// The stored passkey and Instant Readout key.
    pub secrets: Result<DeviceSecrets, RecordError>,
    /// What the adaptive SoC estimator had learned (`Monitor::restore_learned`, which keeps
    /// the priors when the values are out of range).
    pub learned: Result<Learned, RecordError>,
    /// The stored device name.
    pub name: Result<DeviceName, RecordError>,
}

impl Restored {
    /// True when the store holds no record at all: a new (or erased) device, where missing
    /// records are no error.
    pub fn first_boot(&self) -> bool {
        RecordKind::ALL
            .iter()
            .all(|&kind| self.error(kind) == Some(RecordError::Missing))
    }

    /// Why the record of `kind` was not restored, `None` when it was.
    pub fn error(&self, kind: RecordKind) -> Option<RecordError> {
        match kind {
            RecordKind::Settings => self.settings.err(),
            RecordKind::Soc => self.soc.err(),
            RecordKind::SocPoint => self.soc_point.err(),
            RecordKind::History => self.history.err(),
            RecordKind::HistoryPoint => self.history_point.err(),
            RecordKind::HistoryCounts => self.history_counts.err(),
            RecordKind::Nonce => self.nonce.err(),
            RecordKind::Secrets => self.secrets.err(),
            RecordKind::Learned => self.learned.err(),
            RecordKind::Name => self.name.err(),
        }
    }

    /// The error to raise and report for `kind` (SET-3): any reason it was not restored, except
    /// that nothing is missing on a first boot, and a missing SoC or history point, learned or
    /// name record never is an error (no point is written until the SoC or history moves;
    /// nothing is learned with plain counting, nor before the monitor knows its bank; a
    /// firmware that predates a record kind wrote none: the history points, the learned
    /// values, the device name).
    pub fn fault(&self, kind: RecordKind) -> Option<RecordError> {
        match self.error(kind) {
            Some(RecordError::Missing)
                if self.first_boot()
                    || matches!(
                        kind,
                        RecordKind::SocPoint
                            | RecordKind::HistoryPoint
                            | RecordKind::HistoryCounts
                            | RecordKind::Learned
                            | RecordKind::Name
                    ) =>
            {
                None
            }
            other => other,
        }
    }

    /// The settings to run with: the stored ones, or the factory defaults.
    pub fn settings_or_default(&self) -> Settings {
        self.settings.unwrap_or_default()
    }

    /// The first nonce for the advertiser: the stored reservation, or `fallback` (a random value
    /// from the platform) when it was lost, so that nonces likely do not repeat.
    pub fn first_nonce(&self, fallback: u16) -> u16 {
        self.nonce.map_or(fallback, |nonce| nonce.next)
    }
}

/// The write policy and bookkeeping of the persisted records. Holds no storage itself: the
/// caller passes its [`Storage`] to each call. Fixed size, no heap.
#[derive(Clone, Debug, Default)]
pub struct Persistence {
    /// The settings the store holds (restored or last written), `None` when unknown.
    settings_stored: Option<Settings>,
    /// The secrets the store holds (restored or last written), `None` when unknown.
    secrets_stored: Option<DeviceSecrets>,
    /// The device name the store holds (restored or last written), `None` when unknown.
    name_stored: Option<DeviceName>,
    /// The whole SoC record the store holds (restored or last written), `None` when unknown.
    soc_stored: Option<SocRecord>,
    /// The generation of the SoC point the store holds, `None` when it holds none.
    point_generation: Option<u8>,
    /// The whole history record the store holds (restored or last written), `None` when
    /// unknown.
    history_stored: Option<HistoryStored>,
    /// The generations of the history points the store holds, `None` when it holds none.
    history_point_generation: Option<u8>,
    history_counts_generation: Option<u8>,
    /// The history points the store holds when they belong to `history_stored` (what a
    /// restore applies), `None` otherwise.
    history_point_applied: Option<HistoryPoint>,
    history_counts_applied: Option<HistoryCounts>,
    /// The learned values the store holds (restored or last written), `None` when unknown.
    learned_stored: Option<Learned>,
    /// No learned record is written for a lesson before this time (one [`LEARNED_INTERVAL_MS`]
    /// after the last lesson written; 0 until the first).
    learned_hold_until_ms: u64,
    /// Per kind (index [`RecordKind::index`]): the store holds no valid value yet.
    unstored: [bool; KINDS],
    /// Per kind: do not retry before this time after a failed write.
    retry_at_ms: [Option<u64>; KINDS],
    /// Per kind: the last attempted write failed.
    failing: [bool; KINDS],
    /// Per kind (settings and secrets): not written again before this time unless flushed.
    coalesce_until_ms: [u64; KINDS],
    stats: [RecordStats; KINDS],
    /// Per kind: the store held it in an older format version at start.
    older_format: [bool; KINDS],
}

impl Persistence {
    /// Policy state for a store whose contents are unknown: every record is written at the
    /// first poll. Prefer [`Persistence::restore`] at start.
    pub fn new() -> Self {
        Persistence {
            unstored: [true; KINDS],
            ..Persistence::default()
        }
    }

    /// Reads every record at start, each on its own: a missing or unreadable record does not
    /// keep the others from being restored. Records that were not restored are written (with
    /// the values then in use) at the first [`Persistence::poll`]; a missing SoC point is not
    /// (it is written when the SoC moves).
    pub fn restore<S: Storage + ?Sized>(storage: &mut S) -> (Persistence, Restored) {
        let mut reader = Reader {
            storage,
            older_format: [false; KINDS],
        };
        let soc_record = reader.read::<SocRecord>();
        let soc_point = reader.read::<SocPoint>();
        let history = reader.read::<HistoryStored>();
        let history_point = reader.read::<HistoryPoint>();
        let history_counts = reader.read::<HistoryCounts>();
        let restored = Restored {
            settings: reader.read::<Settings>(),
            soc: soc_record.map(|record| soc::combine(&record, soc_point.as_ref().ok())),
            soc_point,
            balanced_at_full: soc_record.ok().and_then(|record| record.balanced_at_full),
            undervoltage_disconnect: soc_record
                .ok()
                .is_some_and(|record| record.undervoltage_disconnect),
            history: history.map(|stored| {
                hist::combine(
                    &stored,
                    history_point.as_ref().ok(),
                    history_counts.as_ref().ok(),
                )
            }),
            history_point,
            history_counts,
            nonce: reader.read::<Nonce>(),
            secrets: reader.read::<DeviceSecrets>(),
            learned: reader.read::<LearnedRecord>().map(|record| record.0),
            name: reader.read::<DeviceName>(),
        };
        // The history's points belong to the whole record: they count as older with it (a
        // point written now would apply to the older record, also after a revert and a later
        // update).
        let mut older_format = reader.older_format;
        let history_older = older_format
            .get(RecordKind::History.index())
            .copied()
            .unwrap_or(false);
        for kind in [RecordKind::HistoryPoint, RecordKind::HistoryCounts] {
            if let Some(slot) = older_format.get_mut(kind.index()) {
                *slot = history_older;
            }
        }
        let mut persistence = Persistence {
            settings_stored: restored.settings.ok(),
            secrets_stored: restored.secrets.ok(),
            name_stored: restored.name.ok(),
            soc_stored: soc_record.ok(),
            point_generation: soc_point.ok().map(|point| point.generation),
            history_stored: history.ok(),
            history_point_generation: history_point.ok().map(|point| point.generation),
            history_counts_generation: history_counts.ok().map(|counts| counts.generation),
            history_point_applied: history_point.ok().filter(|point| {
                history
                    .as_ref()
                    .is_ok_and(|stored| stored.generation == point.generation)
            }),
            history_counts_applied: history_counts.ok().filter(|counts| {
                history
                    .as_ref()
                    .is_ok_and(|stored| stored.generation == counts.generation)
            }),
            learned_stored: restored.learned.ok(),
            older_format,
            ..Persistence::default()
        };
        for kind in RecordKind::ALL {
            if let Some(slot) = persistence.unstored.get_mut(kind.index()) {
                *slot = match restored.error(kind) {
                    Some(RecordError::Missing) => !matches!(
                        kind,
                        RecordKind::SocPoint | RecordKind::HistoryPoint | RecordKind::HistoryCounts
                    ),
                    Some(_) => true,
                    None => false,
                };
            }
        }
        (persistence, restored)
    }

    /// Writes every record that is due at `now_ms`: the secrets first, then the nonce
    /// reservation (only for the key the store holds, BLE-3), then settings, history, SoC
    /// state and the learned values.
    pub fn poll<S: Storage + ?Sized>(
        &mut self,
        storage: &mut S,
        now_ms: u64,
        records: &Records,
    ) -> PollReport {
        let mut report = PollReport::default();
        for kind in RecordKind::ALL {
            if records.hold_older_formats && self.older_format(kind) {
                continue;
            }
            let outcome = match kind {
                RecordKind::Nonce => match records.nonce {
                    // BLE-3: a reservation only once the store holds the key it is for. After
                    // a lost reservation the start makes a new key and a random first nonce;
                    // a reservation stored before that key would be restored beside the old
                    // key should the power go first (or the secrets write fail), and the old
                    // key would go on from nonces it may already have been sent with. Asked
                    // again at the next poll, once the secrets below are written.
                    Some(_) if self.key_unstored(records) => Outcome::Idle,
                    Some(next) => self.write_due(storage, now_ms, &Nonce { next }),
                    None => Outcome::Idle,
                },
                RecordKind::Secrets => match records.secrets {
                    Some(secrets)
                        if self.secrets_stored != Some(secrets) || self.unstored(kind) =>
                    {
                        let outcome = self.write_user(storage, now_ms, &secrets, records.flush);
                        if outcome == Outcome::Written {
                            self.secrets_stored = Some(secrets);
                        }
                        outcome
                    }
                    _ => Outcome::Idle,
                },
                RecordKind::Settings => {
                    if self.settings_stored == Some(records.settings) && !self.unstored(kind) {
                        Outcome::Idle
                    } else {
                        let outcome =
                            self.write_user(storage, now_ms, &records.settings, records.flush);
                        if outcome == Outcome::Written {
                            self.settings_stored = Some(records.settings);
                        }
                        outcome
                    }
                }
                RecordKind::Name => {
                    if self.name_stored == Some(records.name) && !self.unstored(kind) {
                        Outcome::Idle
                    } else {
                        let outcome =
                            self.write_user(storage, now_ms, &records.name, records.flush);
                        if outcome == Outcome::Written {
                            self.name_stored = Some(records.name);
                        }
                        outcome
                    }
                }
                RecordKind::History => self.poll_history(storage, now_ms, records, &mut report),
                // Written with the whole record, just above.
                RecordKind::HistoryPoint | RecordKind::HistoryCounts => report.outcome(kind),
                RecordKind::Soc => {
                    let outcome = self.poll_soc_record(storage, now_ms, records);
                    if outcome != Outcome::Idle {
                        report.soc = outcome;
                    }
                    outcome
                }
                RecordKind::SocPoint => {
                    let outcome = self.poll_soc_point(storage, now_ms, records, report.soc);
                    if report.soc == Outcome::Idle && records.soc_due {
                        report.soc = outcome;
                    }
                    outcome
                }
                RecordKind::Learned => self.poll_learned(storage, now_ms, records.learned),
            };
            report.set(kind, outcome);
        }
        report.failing = self.failing();
        report
    }

    /// The whole SoC record, when it is unstored or the due state cannot be a point on top of
    /// the stored one. Its generation differs from the stored point's, so that point can never
    /// apply to it.
    fn poll_soc_record<S: Storage + ?Sized>(
        &mut self,
        storage: &mut S,
        now_ms: u64,
        records: &Records,
    ) -> Outcome {
        let needed = match &self.soc_stored {
            Some(stored) if !self.unstored(RecordKind::Soc) => {
                (records.soc_due && soc::needs_record(&stored.state, &records.soc))
                    || stored.balanced_at_full != records.balanced_at_full
                    || stored.undervoltage_disconnect != records.undervoltage_disconnect
            }
            _ => true,
        };
        if !needed {
            return Outcome::Idle;
        }
        let previous = self.soc_stored.map_or(0, |stored| stored.generation);
        let record = SocRecord {
            generation: self.point_generation.unwrap_or(previous).wrapping_add(1),
            state: records.soc,
            balanced_at_full: records.balanced_at_full,
            undervoltage_disconnect: records.undervoltage_disconnect,
        };
        let outcome = self.write_due(storage, now_ms, &record);
        if outcome == Outcome::Written {
            self.soc_stored = Some(record);
        }
        outcome
    }

    /// The SoC point: when the SoC is due and the whole record did not just carry it (or could
    /// not be written), or to repair an unreadable point.
    fn poll_soc_point<S: Storage + ?Sized>(
        &mut self,
        storage: &mut S,
        now_ms: u64,
        records: &Records,
        record_outcome: Outcome,
    ) -> Outcome {
        let Some(stored) = self.soc_stored else {
            return Outcome::Idle;
        };
        let repair = self.unstored(RecordKind::SocPoint);
        let due = records.soc_due && record_outcome == Outcome::Idle;
        if !(due || repair) {
            return Outcome::Idle;
        }
        // A point on top of a record whose slow fields differ from the state would restore a
        // mix; the record is then written (or retried) instead.
        let state = if soc::needs_record(&stored.state, &records.soc) {
            if !repair {
                return Outcome::Idle;
            }
            stored.state
        } else {
            records.soc
        };
        let Some(point) = SocPoint::of(&state, stored.generation) else {
            return Outcome::Idle;
        };
        let outcome = self.write_due(storage, now_ms, &point);
        if outcome == Outcome::Written {
            self.point_generation = Some(point.generation);
        }
        outcome
    }

    /// The history (MON-8, HIST-4; see [`super::hist`]). When its owner says the whole history
    /// is due, the points carry what changed since the stored record, each written only when
    /// it differs from the one stored; when only the counted items are due, the counts point
    /// alone. The whole record is written instead when the points cannot carry the change
    /// (or the store lacks a valid record), with a generation neither stored point has. A
    /// corrupt point is rewritten at the first poll. Sets the history's outcomes in `report`;
    /// returns the whole record's.
    fn poll_history<S: Storage + ?Sized>(
        &mut self,
        storage: &mut S,
        now_ms: u64,
        records: &Records,
        report: &mut PollReport,
    ) -> Outcome {
        let (all, counted) = (records.history_due, records.history_counted_due);
        let repair_point = self.unstored(RecordKind::HistoryPoint);
        let repair_counts = self.unstored(RecordKind::HistoryCounts);
        let stored = self
            .history_stored
            .filter(|_| !self.unstored(RecordKind::History));
        if stored.is_some() && !(all || counted || repair_point || repair_counts) {
            return Outcome::Idle;
        }
        let split = stored.and_then(|stored| {
            hist::split(&stored.history, &records.history, stored.generation)
                .map(|points| (stored, points))
        });
        let Some((stored, (point, counts))) = split else {
            let outcome = self.write_history_record(storage, now_ms, &records.history, report);
            report.history = outcome;
            report.history_counted = outcome;
            return outcome;
        };
        let held_counts = self.history_counts_applied.or_else(|| {
            hist::split(&stored.history, &stored.history, stored.generation).map(|(_, c)| c)
        });
        let counts_outcome = if repair_counts || ((all || counted) && held_counts != Some(counts)) {
            self.write_history_counts(storage, now_ms, &counts)
        } else {
            Outcome::Idle
        };
        let held_point = self.history_point_applied.unwrap_or(HistoryPoint {
            generation: stored.generation,
            ..HistoryPoint::default()
        });
        let point_outcome = if repair_point || (all && held_point != point) {
            self.write_history_point(storage, now_ms, &point)
        } else {
            Outcome::Idle
        };
        report.history_counts = counts_outcome;
        report.history_point = point_outcome;
        let stored_as = |outcome: Outcome| match outcome {
            Outcome::Idle | Outcome::Written => Outcome::Written,
            other => other,
        };
        if all || counted {
            report.history_counted = stored_as(counts_outcome);
        }
        if all {
            report.history = match stored_as(counts_outcome) {
                Outcome::Written => stored_as(point_outcome),
                other => other,
            };
        }
        Outcome::Idle
    }

    /// The whole history record, with a generation neither stored point has; a corrupt point
    /// is then rewritten as the empty point of the new record.
    fn write_history_record<S: Storage + ?Sized>(
        &mut self,
        storage: &mut S,
        now_ms: u64,
        history: &HistoryRecord,
        report: &mut PollReport,
    ) -> Outcome {
        let record = HistoryStored {
            generation: hist::next_generation(
                self.history_stored.map_or(0, |stored| stored.generation),
                self.history_point_generation,
                self.history_counts_generation,
            ),
            history: *history,
        };
        let outcome = self.write_due(storage, now_ms, &record);
        if outcome != Outcome::Written {
            return outcome;
        }
        self.history_stored = Some(record);
        self.history_point_applied = None;
        self.history_counts_applied = None;
        if let Some((point, counts)) = hist::split(history, history, record.generation) {
            if self.unstored(RecordKind::HistoryCounts) {
                report.history_counts = self.write_history_counts(storage, now_ms, &counts);
            }
            if self.unstored(RecordKind::HistoryPoint) {
                report.history_point = self.write_history_point(storage, now_ms, &point);
            }
        }
        outcome
    }

    fn write_history_point<S: Storage + ?Sized>(
        &mut self,
        storage: &mut S,
        now_ms: u64,
        point: &HistoryPoint,
    ) -> Outcome {
        let outcome = self.write_due(storage, now_ms, point);
        if outcome == Outcome::Written {
            self.history_point_generation = Some(point.generation);
            self.history_point_applied = Some(*point);
        }
        outcome
    }

    fn write_history_counts<S: Storage + ?Sized>(
        &mut self,
        storage: &mut S,
        now_ms: u64,
        counts: &HistoryCounts,
    ) -> Outcome {
        let outcome = self.write_due(storage, now_ms, counts);
        if outcome == Outcome::Written {
            self.history_counts_generation = Some(counts.generation);
            self.history_counts_applied = Some(*counts);
        }
        outcome
    }

    /// The learned values: when the store holds none, or they moved by a meaningful step from
    /// the stored ones ([`learned::needs_write`]); at most once per [`LEARNED_INTERVAL_MS`], and
    /// never before the monitor knows its bank's capacity (nothing learned yet).
    fn poll_learned<S: Storage + ?Sized>(
        &mut self,
        storage: &mut S,
        now_ms: u64,
        learned: Option<Learned>,
    ) -> Outcome {
        let Some(now) = learned.filter(|learned| learned.capacity_mah > 0) else {
            return Outcome::Idle;
        };
        let lesson = match &self.learned_stored {
            Some(stored) if !self.unstored(RecordKind::Learned) => {
                if !learned::needs_write(stored, &now) || now_ms < self.learned_hold_until_ms {
                    return Outcome::Idle;
                }
                true
            }
            _ => false,
        };
        let outcome = self.write_due(storage, now_ms, &LearnedRecord(now));
        if outcome == Outcome::Written {
            self.learned_stored = Some(now);
            // A repair (nothing valid stored) starts no hold, so that the first lesson after
            // it is not delayed; it happens at most once per start.
            if lesson {
                self.learned_hold_until_ms = now_ms.saturating_add(LEARNED_INTERVAL_MS);
            }
        }
        outcome
    }

    /// True while the last write of any record failed (raise a storage error until it clears).
    pub fn failing(&self) -> bool {
        self.failing.iter().any(|&f| f)
    }

    /// The write counters of `kind` since start.
    pub fn stats(&self, kind: RecordKind) -> RecordStats {
        self.stats.get(kind.index()).copied().unwrap_or_default()
    }

    fn unstored(&self, kind: RecordKind) -> bool {
        self.unstored.get(kind.index()).copied().unwrap_or(true)
    }

    /// The store held `kind` in an older format at start (see [`Records::hold_older_formats`]).
    fn older_format(&self, kind: RecordKind) -> bool {
        self.older_format
            .get(kind.index())
            .copied()
            .unwrap_or(false)
    }

    fn write_due<R: Record, S: Storage + ?Sized>(
        &mut self,
        storage: &mut S,
        now_ms: u64,
        record: &R,
    ) -> Outcome {
        if self.deferred(R::KIND, now_ms) {
            return Outcome::Deferred;
        }
        let mut buf = [0u8; MAX_RECORD_LEN];
        let len = encode_record(record, &mut buf);
        // Only the encoding is generic; one copy of the rest serves every kind.
        self.write_encoded(storage, now_ms, R::KIND, &buf, len)
    }

    /// BLE-3: whether the readout key in use is not the one the store holds (a new key not
    /// written yet, or the stored secrets unknown): no nonce reservation is written for it.
    fn key_unstored(&self, records: &Records) -> bool {
        records.secrets.is_some_and(|secrets| {
            self.secrets_stored.map(|stored| stored.adv_key) != Some(secrets.adv_key)
        })
    }

    /// A record the user changes (settings, secrets, name): written at most once per
    /// [`USER_WRITE_INTERVAL_MS`] unless `flush`.
    fn write_user<R: Record, S: Storage + ?Sized>(
        &mut self,
        storage: &mut S,
        now_ms: u64,
        record: &R,
        flush: bool,
    ) -> Outcome {
        let i = R::KIND.index();
        let held = self
            .coalesce_until_ms
            .get(i)
            .is_some_and(|&until| now_ms < until);
        let repair = self.unstored(R::KIND);
        if held && !flush && !repair {
            return Outcome::Coalesced;
        }
        let outcome = self.write_due(storage, now_ms, record);
        // Writing a record the store lacks (a first start, a repair) is no change of the
        // user's and starts no interval.
        if outcome == Outcome::Written && !repair {
            if let Some(until) = self.coalesce_until_ms.get_mut(i) {
                *until = now_ms.saturating_add(USER_WRITE_INTERVAL_MS);
            }
        }
        outcome
    }

    /// Whether a settings, secrets or name change waits to be written ([`Outcome::Coalesced`]).
    pub fn coalesced(&self, kind: RecordKind, now_ms: u64) -> bool {
        self.coalesce_until_ms
            .get(kind.index())
            .is_some_and(|&until| now_ms < until)
    }

    fn deferred(&self, kind: RecordKind, now_ms: u64) -> bool {
        self.retry_at_ms
            .get(kind.index())
            .copied()
            .flatten()
            .is_some_and(|at_ms| now_ms < at_ms)
    }

    #[inline(never)]
    fn write_encoded<S: Storage + ?Sized>(
        &mut self,
        storage: &mut S,
        now_ms: u64,
        kind: RecordKind,
        buf: &[u8],
        len: Result<usize, RecordError>,
    ) -> Outcome {
        let i = kind.index();
        let result = len.map_err(|_| StorageError::Full).and_then(|len| {
            let bytes = buf.get(..len).ok_or(StorageError::Full)?;
            storage.write(kind.key(), bytes).map(|()| len)
        });
        let (Some(stats), Some(retry_at_ms), Some(failing), Some(unstored)) = (
            self.stats.get_mut(i),
            self.retry_at_ms.get_mut(i),
            self.failing.get_mut(i),
            self.unstored.get_mut(i),
        ) else {
            return Outcome::Idle;
        };
        match result {
            Ok(len) => {
                stats.writes = stats.writes.saturating_add(1);
                stats.bytes = stats.bytes.saturating_add(len as u64);
                *retry_at_ms = None;
                *failing = false;
                *unstored = false;
                Outcome::Written
            }
            Err(error) => {
                stats.failures = stats.failures.saturating_add(1);
                *retry_at_ms = Some(now_ms.saturating_add(RETRY_MS));
                *failing = true;
                Outcome::Failed(error)
            }
        }
    }
}

/// Reads the records at start, each once, noting which the store holds in a format version
/// older than this firmware writes ([`Records::hold_older_formats`]).
struct Reader<'s, S: Storage + ?Sized> {
    storage: &'s mut S,
    older_format: [bool; KINDS],
}

impl<S: Storage + ?Sized> Reader<'_, S> {
    fn read<R: Record>(&mut self) -> Result<R, RecordError> {
        let mut buf = [0u8; MAX_RECORD_LEN];
        let bytes = read_raw(self.storage, R::KIND, &mut buf)?;
        let (version, record) = decode_record_versioned::<R>(bytes);
        if let Some(slot) = self.older_format.get_mut(R::KIND.index()) {
            *slot = version.is_some_and(|version| version < R::VERSION);
        }
        record
    }
}

/// The stored bytes of `kind`, read into `buf`.
#[inline(never)]
fn read_raw<'a, S: Storage + ?Sized>(
    storage: &mut S,
    kind: RecordKind,
    buf: &'a mut [u8; MAX_RECORD_LEN],
) -> Result<&'a [u8], RecordError> {
    let len = storage.read(kind.key(), buf).map_err(|e| match e {
        StorageError::NotFound => RecordError::Missing,
        StorageError::TooLarge { .. } => RecordError::TooLarge,
        other => RecordError::Storage(other),
    })?;
    buf.get(..len).ok_or(RecordError::TooLarge)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::soc::NAS_PER_MAH;
    use crate::storage::record::tests::{
        sample_history, sample_learned, sample_name, sample_secrets, sample_settings, sample_soc,
    };
    use crate::storage::MemStorage;

    /// `a` restored through a SoC point equals `b` up to the point's resolution.
    pub(crate) fn assert_near(a: &SocState, b: &SocState) {
        let capacity_nas = i64::from(b.capacity_mah) * NAS_PER_MAH;
        assert!(
            a.used_nas.abs_diff(b.used_nas) <= (capacity_nas / 65_535) as u64,
            "{a:?} != {b:?}"
        );
        assert!(
            a.consumed_nas.abs_diff(b.consumed_nas) <= (capacity_nas / 16_384) as u64,
            "{a:?} != {b:?}"
        );
        let slow = |s: &SocState| {
            (
                s.knowledge,
                s.capacity_mah,
                s.low_soc_warning,
                s.below_floor,
            )
        };
        assert_eq!(slow(a), slow(b));
    }

    /// A store whose writes can be made to fail, as a worn or disconnected flash would.
    #[derive(Default)]
    pub(crate) struct FaultyStorage {
        pub(crate) inner: MemStorage,
        pub(crate) fail_writes: bool,
    }

    impl Storage for FaultyStorage {
        fn read(&mut self, key: &str, buf: &mut [u8]) -> Result<usize, StorageError> {
            self.inner.read(key, buf)
        }
        fn write(&mut self, key: &str, value: &[u8]) -> Result<(), StorageError> {
            if self.fail_writes {
                return Err(StorageError::Io { code: -5 });
            }
            self.inner.write(key, value)
        }
        fn delete(&mut self, key: &str) -> Result<(), StorageError> {
            self.inner.delete(key)
        }
    }

    fn records() -> Records {
        Records {
            settings: sample_settings(),
            soc: sample_soc(),
            soc_due: false,
            balanced_at_full: Some(false),
            undervoltage_disconnect: false,
            history: sample_history(),
            history_due: false,
            history_counted_due: false,
            nonce: None,
            secrets: Some(sample_secrets()),
            learned: Some(sample_learned()),
            flush: false,
            hold_older_formats: false,
            name: sample_name(),
        }
    }

    /// A store holding every record of `records()` and the nonce 0x4000.
    fn full_store() -> MemStorage {
        let mut store = MemStorage::new();
        let mut persistence = Persistence::new();
        let all = Records {
            nonce: Some(0x4000),
            ..records()
        };
        let report = persistence.poll(&mut store, 0, &all);
        assert!(!report.any_failed());
        store
    }

    /// BLE-3: `poll` writes in the order of `RecordKind::ALL`, the secrets before the nonce
    /// reservation.
    #[test]
    fn ble_3_the_secrets_are_written_before_the_nonce_reservation() {
        let at = |kind| RecordKind::ALL.iter().position(|k| *k == kind);
        assert!(at(RecordKind::Secrets) < at(RecordKind::Nonce));
    }

    #[test]
    fn first_boot_is_no_fault_and_writes_every_record_once() {
        let mut store = MemStorage::new();
        let (mut persistence, restored) = Persistence::restore(&mut store);
        assert!(restored.first_boot());
        for kind in RecordKind::ALL {
            assert_eq!(restored.error(kind), Some(RecordError::Missing));
            assert_eq!(restored.fault(kind), None);
        }
        assert_eq!(restored.settings_or_default(), Settings::default());
        assert_eq!(restored.first_nonce(77), 77);
        let report = persistence.poll(&mut store, 0, &records());
        assert_eq!(
            (report.settings, report.soc, report.history, report.nonce),
            (
                Outcome::Written,
                Outcome::Written,
                Outcome::Written,
                Outcome::Idle
            )
        );
        let again = persistence.poll(&mut store, 100, &records());
        assert_eq!(again, PollReport::default(), "nothing due twice");
    }

    /// SET-2: settings are persisted on change and a reboot restores them exactly; unchanged
    /// settings are never rewritten.
    #[test]
    fn set_2_settings_written_on_change_and_restored_exactly_after_reboot() {
        let mut store = full_store();
        let (mut persistence, restored) = Persistence::restore(&mut store);
        assert_eq!(restored.settings, Ok(sample_settings()));
        for step in 0..100u64 {
            let report = persistence.poll(&mut store, step * 100, &records());
            assert_eq!(
                report.settings,
                Outcome::Idle,
                "unchanged settings rewritten"
            );
        }
        let changed = Settings {
            discharge_floor_pct: 5,
            ..sample_settings()
        };
        let report = persistence.poll(
            &mut store,
            20_000,
            &Records {
                settings: changed,
                ..records()
            },
        );
        assert_eq!(report.settings, Outcome::Written);
        let (_, after_reboot) = Persistence::restore(&mut store);
        assert_eq!(after_reboot.settings, Ok(changed));
        assert_eq!(after_reboot.fault(RecordKind::Settings), None);
        assert_eq!(persistence.stats(RecordKind::Settings).writes, 1);
    }

    /// SET-3: a corrupt record (every bit flip, every truncation) is never applied: that record
    /// alone falls back to defaults with an error raised, every other record is restored, and
    /// the store is repaired with the values in use at the first poll.
    #[test]
    fn set_3_corrupt_record_is_not_applied_and_the_others_are_restored() {
        let store = full_store();
        for kind in RecordKind::ALL {
            let stored = store.get(kind.key()).unwrap().to_vec();
            let mut variants: std::vec::Vec<std::vec::Vec<u8>> = (0..stored.len())
                .map(|len| stored[..len].to_vec())
                .collect();
            for bit in 0..stored.len() * 8 {
                let mut corrupt = stored.clone();
                corrupt[bit / 8] ^= 1 << (bit % 8);
                variants.push(corrupt);
            }
            for variant in variants {
                let mut damaged = store.clone();
                damaged.write(kind.key(), &variant).unwrap();
                let (mut persistence, restored) = Persistence::restore(&mut damaged);
                assert!(!restored.first_boot());
                for other in RecordKind::ALL {
                    if other == kind {
                        let fault = restored.fault(kind);
                        assert!(fault.is_some(), "{kind} {variant:02x?} applied");
                        assert_ne!(fault, Some(RecordError::Missing));
                    } else {
                        assert_eq!(restored.fault(other), None, "{other} lost with {kind}");
                    }
                }
                assert_eq!(restored.soc.is_ok(), kind != RecordKind::Soc);
                if kind == RecordKind::Settings {
                    assert_eq!(restored.settings_or_default(), Settings::default());
                } else {
                    assert_eq!(restored.settings, Ok(sample_settings()));
                }
                // The first poll repairs the damaged record (the nonce once one is asked for).
                let in_use = Records {
                    settings: restored.settings_or_default(),
                    nonce: Some(0x5000),
                    ..records()
                };
                let report = persistence.poll(&mut damaged, 0, &in_use);
                assert_eq!(
                    report.outcome(kind),
                    Outcome::Written,
                    "{kind} not repaired"
                );
                let (_, repaired) = Persistence::restore(&mut damaged);
                assert_eq!(repaired.fault(kind), None);
            }
        }
    }

    #[test]
    fn missing_record_next_to_others_is_a_fault() {
        let mut store = full_store();
        store.delete(RecordKind::History.key()).unwrap();
        let (_, restored) = Persistence::restore(&mut store);
        assert_eq!(
            restored.fault(RecordKind::History),
            Some(RecordError::Missing)
        );
        assert_eq!(restored.fault(RecordKind::Soc), None);
    }

    #[test]
    fn unreadable_store_is_reported_per_record() {
        struct Broken;
        impl Storage for Broken {
            fn read(&mut self, _: &str, _: &mut [u8]) -> Result<usize, StorageError> {
                Err(StorageError::Io { code: -5 })
            }
            fn write(&mut self, _: &str, _: &[u8]) -> Result<(), StorageError> {
                Err(StorageError::Io { code: -5 })
            }
            fn delete(&mut self, _: &str) -> Result<(), StorageError> {
                Err(StorageError::Io { code: -5 })
            }
        }
        let (mut persistence, restored) = Persistence::restore(&mut Broken);
        for kind in RecordKind::ALL {
            assert_eq!(
                restored.fault(kind),
                Some(RecordError::Storage(StorageError::Io { code: -5 }))
            );
        }
        let report = persistence.poll(&mut Broken, 0, &records());
        assert!(report.any_failed());
        assert!(persistence.failing());
    }

    /// A failed write leaves the previous value readable, raises an error, is retried after
    /// RETRY_MS (not every step), and clears once a write succeeds.
    #[test]
    fn failed_write_keeps_the_previous_value_and_is_retried_later() {
        let mut store = FaultyStorage {
            inner: full_store(),
            fail_writes: false,
        };
        let (mut persistence, _) = Persistence::restore(&mut store);
        let changed = Records {
            settings: Settings {
                tail_current_permille: 50,
                ..sample_settings()
            },
            soc_due: true,
            ..records()
        };
        store.fail_writes = true;
        let report = persistence.poll(&mut store, 1_000, &changed);
        assert_eq!(
            report.settings,
            Outcome::Failed(StorageError::Io { code: -5 })
        );
        assert_eq!(report.soc, Outcome::Failed(StorageError::Io { code: -5 }));
        assert!(report.any_failed() && report.failing);
        assert!(persistence.failing());
        let (_, restored) = Persistence::restore(&mut store);
        assert_eq!(
            restored.settings,
            Ok(sample_settings()),
            "previous value lost"
        );
        assert_near(&restored.soc.unwrap(), &sample_soc());

        let report = persistence.poll(&mut store, 1_000 + RETRY_MS - 1, &changed);
        assert_eq!(report.settings, Outcome::Deferred);
        assert!(
            !report.any_failed() && report.failing,
            "still failing while deferred"
        );
        assert_eq!(persistence.stats(RecordKind::Settings).failures, 1);

        store.fail_writes = false;
        let report = persistence.poll(&mut store, 1_000 + RETRY_MS, &changed);
        assert_eq!(report.settings, Outcome::Written);
        assert_eq!(report.soc, Outcome::Written);
        assert!(!persistence.failing() && !report.failing);
        let (_, restored) = Persistence::restore(&mut store);
        assert_eq!(restored.settings, Ok(changed.settings));
    }

    #[test]
    fn records_are_written_only_when_their_owner_says_so() {
        let mut store = full_store();
        let (mut persistence, _) = Persistence::restore(&mut store);
        let idle = persistence.poll(&mut store, 0, &records());
        assert_eq!(idle, PollReport::default());
        let due = persistence.poll(
            &mut store,
            0,
            &Records {
                soc_due: true,
                history_due: true,
                nonce: Some(9),
                ..records()
            },
        );
        assert_eq!(
            (due.soc, due.history, due.nonce, due.settings),
            (
                Outcome::Written,
                Outcome::Written,
                Outcome::Written,
                Outcome::Idle
            )
        );
        let (_, restored) = Persistence::restore(&mut store);
        assert_eq!(restored.first_nonce(0), 9);
    }

    /// MON-8: a due SoC state whose charge counts alone changed goes into the 8-byte point; a
    /// change of a slow field (here a latch) writes the whole record; a reboot restores both.
    #[test]
    fn mon_8_counts_go_to_the_point_and_slow_fields_to_the_record() {
        let mut store = full_store();
        let (mut persistence, _) = Persistence::restore(&mut store);
        let capacity_nas = i64::from(sample_soc().capacity_mah) * NAS_PER_MAH;
        let moved = SocState {
            used_nas: capacity_nas / 2,
            consumed_nas: capacity_nas / 2,
            ..sample_soc()
        };
        let report = persistence.poll(
            &mut store,
            1_000,
            &Records {
                soc: moved,
                soc_due: true,
                ..records()
            },
        );
        assert_eq!(
            (report.soc, report.soc_record, report.soc_point),
            (Outcome::Written, Outcome::Idle, Outcome::Written)
        );
        assert_eq!(store.get(RecordKind::SocPoint.key()).unwrap().len(), 8);
        let (_, restored) = Persistence::restore(&mut store);
        assert_near(&restored.soc.unwrap(), &moved);

        let latched = SocState {
            low_soc_warning: true,
            used_nas: capacity_nas / 3,
            ..moved
        };
        let report = persistence.poll(
            &mut store,
            2_000,
            &Records {
                soc: latched,
                soc_due: true,
                ..records()
            },
        );
        assert_eq!(
            (report.soc, report.soc_record, report.soc_point),
            (Outcome::Written, Outcome::Written, Outcome::Idle)
        );
        let (_, restored) = Persistence::restore(&mut store);
        assert_eq!(restored.soc, Ok(latched), "the record alone, exactly");
        assert_eq!(persistence.stats(RecordKind::SocPoint).writes, 1);
        assert_eq!(persistence.stats(RecordKind::Soc).writes, 1);
    }

    /// PROT-2, MON-8: a change of the under-voltage latch writes the whole SoC record at once,
    /// though the monitor asks for nothing, and a reboot restores it; the next change (the
    /// release) is written the same way. Nothing else writes it.
    #[test]
    fn prot_2_mon_8_the_undervoltage_latch_is_written_at_once_and_restored() {
        let mut store = full_store();
        let (mut persistence, restored) = Persistence::restore(&mut store);
        assert!(!restored.undervoltage_disconnect);
        for (at_ms, latched) in [(1_000, true), (2_000, false)] {
            let records = Records {
                undervoltage_disconnect: latched,
                ..records()
            };
            let report = persistence.poll(&mut store, at_ms, &records);
            assert_eq!(
                (report.soc_record, report.soc_point),
                (Outcome::Written, Outcome::Idle),
                "latched {latched}"
            );
            assert_eq!(
                persistence.poll(&mut store, at_ms + 1, &records),
                PollReport::default(),
                "written once"
            );
            let (_, restored) = Persistence::restore(&mut store);
            assert_eq!(restored.undervoltage_disconnect, latched);
            assert_eq!(restored.soc, Ok(sample_soc()), "the state as it was");
            assert_eq!(restored.fault(RecordKind::Soc), None);
        }
        assert_eq!(persistence.stats(RecordKind::Soc).writes, 2);
    }

    /// MON-8: a point never applies on top of a record written after it, however many records
    /// are written without a point in between (the generation never meets the stored point's).
    #[test]
    fn mon_8_an_older_point_never_applies_to_a_newer_record() {
        let mut store = full_store();
        let (mut persistence, _) = Persistence::restore(&mut store);
        let stale_point = store.get(RecordKind::SocPoint.key()).unwrap().to_vec();
        let capacity_nas = i64::from(sample_soc().capacity_mah) * NAS_PER_MAH;
        for i in 0..600u64 {
            let state = SocState {
                below_floor: i % 2 == 0,
                used_nas: capacity_nas / 600 * (i as i64),
                ..sample_soc()
            };
            let report = persistence.poll(
                &mut store,
                i * 1_000,
                &Records {
                    soc: state,
                    soc_due: true,
                    ..records()
                },
            );
            assert_eq!(report.soc_record, Outcome::Written);
            assert_eq!(
                store.get(RecordKind::SocPoint.key()).unwrap(),
                &stale_point[..]
            );
            let (_, restored) = Persistence::restore(&mut store);
            assert_eq!(
                restored.soc,
                Ok(state),
                "stale point applied after {i} records"
            );
        }
    }

    /// MON-8: a power cut between a point and the next record, or a point write that fails,
    /// restores the latest state that was completely written.
    #[test]
    fn mon_8_a_failed_point_keeps_the_previous_point() {
        let mut store = FaultyStorage {
            inner: full_store(),
            fail_writes: false,
        };
        let (mut persistence, before) = Persistence::restore(&mut store);
        let capacity_nas = i64::from(sample_soc().capacity_mah) * NAS_PER_MAH;
        let moved = SocState {
            used_nas: capacity_nas / 4,
            ..sample_soc()
        };
        store.fail_writes = true;
        let due = Records {
            soc: moved,
            soc_due: true,
            ..records()
        };
        let report = persistence.poll(&mut store, 0, &due);
        assert_eq!(report.soc, Outcome::Failed(StorageError::Io { code: -5 }));
        assert!(persistence.failing());
        let (_, restored) = Persistence::restore(&mut store);
        assert_eq!(restored.soc, before.soc);
        store.fail_writes = false;
        let report = persistence.poll(&mut store, RETRY_MS, &due);
        assert_eq!(report.soc, Outcome::Written);
        assert!(!persistence.failing());
        let (_, restored) = Persistence::restore(&mut store);
        assert_near(&restored.soc.unwrap(), &moved);
    }

    /// MON-8, HIST-4: what changed of the history goes into its points (the fast counters
    /// into one, the counted items into the other), rounded down to the points' units; a
    /// change the points cannot carry (an extreme) writes the whole record.
    #[test]
    fn mon_8_hist_4_history_changes_go_to_the_points_and_extremes_to_the_record() {
        let mut store = full_store();
        let (mut persistence, _) = Persistence::restore(&mut store);
        let mut moved = sample_history();
        moved.drawn_mah += 5_400;
        moved.discharged_mwh += 70_000;
        moved.cycles += 1;
        moved.last_errors = [Some(9), Some(3), None, None];
        let report = persistence.poll(
            &mut store,
            1_000,
            &Records {
                history: moved,
                history_due: true,
                ..records()
            },
        );
        assert_eq!(
            (
                report.history,
                report.history_record,
                report.history_point,
                report.history_counts
            ),
            (
                Outcome::Written,
                Outcome::Idle,
                Outcome::Written,
                Outcome::Written
            )
        );
        let (_, restored) = Persistence::restore(&mut store);
        let restored = restored.history.unwrap();
        let mut want = moved;
        want.drawn_mah = sample_history().drawn_mah + 5_000;
        want.drawn_rem_nas = 0;
        want.discharged_mwh = sample_history().discharged_mwh + 60_000;
        want.discharged_rem_nj = 0;
        assert_eq!(restored, want, "rounded down to 1 Ah and 20 Wh");

        // The same history again: nothing to write, and it is stored.
        let again = persistence.poll(
            &mut store,
            2_000,
            &Records {
                history: moved,
                history_due: true,
                ..records()
            },
        );
        assert_eq!(again.history, Outcome::Written);
        assert_eq!(
            (again.history_point, again.history_counts),
            (Outcome::Idle, Outcome::Idle)
        );

        let mut widened = moved;
        widened.min_bank_mv = Some(9_000);
        let report = persistence.poll(
            &mut store,
            3_000,
            &Records {
                history: widened,
                history_due: true,
                ..records()
            },
        );
        assert_eq!(report.history_record, Outcome::Written);
        let (_, restored) = Persistence::restore(&mut store);
        assert_eq!(restored.history, Ok(widened), "the record alone, exactly");
    }

    /// MON-8, HIST-4: history points never apply on top of a record written after them,
    /// however many records follow without a point, and a counts point written for the new
    /// record applies without the stale fast-counter point.
    #[test]
    fn mon_8_hist_4_an_older_history_point_never_applies_to_a_newer_record() {
        let mut store = full_store();
        let (mut persistence, _) = Persistence::restore(&mut store);
        let mut moved = sample_history();
        moved.drawn_mah += 300_000;
        moved.charged_mwh += 1_000_000;
        moved.synchronisations += 2;
        moved.deepest_discharge_mah += 50_000;
        let report = persistence.poll(
            &mut store,
            0,
            &Records {
                history: moved,
                history_due: true,
                ..records()
            },
        );
        assert_eq!(
            (report.history_point, report.history_counts),
            (Outcome::Written, Outcome::Written)
        );
        let stale_point = store.get(RecordKind::HistoryPoint.key()).unwrap().to_vec();
        let stale_counts = store.get(RecordKind::HistoryCounts.key()).unwrap().to_vec();
        for i in 0..600u32 {
            // An extreme that widens at each record, with the counters of the sample: the
            // points' deltas do not belong to any of these records.
            let mut record = sample_history();
            record.min_bank_mv = Some(12_000 - i);
            let report = persistence.poll(
                &mut store,
                u64::from(i) * 1_000,
                &Records {
                    history: record,
                    history_due: true,
                    ..records()
                },
            );
            assert_eq!(report.history_record, Outcome::Written);
            assert_eq!(
                store.get(RecordKind::HistoryPoint.key()).unwrap(),
                &stale_point[..]
            );
            assert_eq!(
                store.get(RecordKind::HistoryCounts.key()).unwrap(),
                &stale_counts[..]
            );
            let (_, restored) = Persistence::restore(&mut store);
            assert_eq!(
                restored.history,
                Ok(record),
                "stale point applied after {i} records"
            );
        }
        // A counted change on top of the last record goes to the counts point alone; the
        // stale fast-counter point still does not apply.
        let mut record = sample_history();
        record.min_bank_mv = Some(12_000 - 599);
        let mut counted = record;
        counted.cycles += 1;
        counted.last_errors = [Some(4), Some(3), None, None];
        let report = persistence.poll(
            &mut store,
            700_000,
            &Records {
                history: counted,
                history_counted_due: true,
                ..records()
            },
        );
        assert_eq!(
            (
                report.history_counted,
                report.history_counts,
                report.history_point
            ),
            (Outcome::Written, Outcome::Written, Outcome::Idle)
        );
        assert_eq!(
            report.history,
            Outcome::Idle,
            "only the counted items are stored"
        );
        let (_, restored) = Persistence::restore(&mut store);
        assert_eq!(restored.history, Ok(counted));
    }

    /// MON-8, HIST-4: while the history changes (a load), it is stored at least every 10
    /// minutes and costs at most one point of each kind per 10 minutes; a counted item is
    /// stored at once; at rest (and no time since full running) nothing is written at all.
    #[test]
    fn mon_8_hist_4_history_is_stored_every_10_minutes_while_it_changes_and_never_at_rest() {
        use crate::history::{History, HistoryInput};
        const STEP_MS: u64 = 1_000;
        const MON_8_MS: u64 = 10 * 60_000;
        const HOUR_MS: u64 = 3_600_000;
        let mut store = MemStorage::new();
        let (mut persistence, _) = Persistence::restore(&mut store);
        let mut history = History::default();
        let mut stored_at = std::vec::Vec::new();
        let mut writes = std::vec::Vec::new();
        let mut t_ms = 0;
        while t_ms < 6 * HOUR_MS {
            t_ms += STEP_MS;
            let input = HistoryInput {
                bank_mv: 13_200,
                bank_ma: if t_ms < 3 * HOUR_MS { -20_000 } else { 0 },
                min_cell_mv: Some(3_300),
                max_cell_mv: Some(3_310),
                min_temp_ddegc: Some(200),
                max_temp_ddegc: Some(210),
                soc_permille: Some(700),
                consumed_mah: 20_000,
                synchronised: false,
            };
            let _ = history.update(t_ms, &input);
            let error_now = t_ms == 3 * HOUR_MS / 2;
            if error_now {
                history.record_error(7);
            }
            let before = [
                RecordKind::History,
                RecordKind::HistoryPoint,
                RecordKind::HistoryCounts,
            ]
            .map(|kind| persistence.stats(kind).writes);
            let report = persistence.poll(
                &mut store,
                t_ms,
                &Records {
                    history: *history.record(),
                    history_due: history.all_due(t_ms),
                    history_counted_due: history.counted_due(),
                    ..Records::default()
                },
            );
            if report.history == Outcome::Written {
                history.mark_persisted(t_ms);
                stored_at.push(t_ms);
            } else if report.history_counted == Outcome::Written {
                history.mark_counted_persisted();
            }
            if error_now {
                assert_eq!(report.history_counted, Outcome::Written, "an error at once");
                assert_eq!(
                    History::from(Persistence::restore(&mut store).1.history.unwrap())
                        .last_errors()[0],
                    Some(7)
                );
            }
            let after = [
                RecordKind::History,
                RecordKind::HistoryPoint,
                RecordKind::HistoryCounts,
            ]
            .map(|kind| persistence.stats(kind).writes);
            for (kind, (b, a)) in before.iter().zip(after).enumerate() {
                if a > *b {
                    writes.push((t_ms, kind));
                }
            }
        }
        // While loaded: stored every 10 minutes (the first change after a store starts the
        // next 10 minutes, one step later).
        let loaded: std::vec::Vec<u64> = core::iter::once(0)
            .chain(stored_at.iter().copied().filter(|&t| t <= 3 * HOUR_MS))
            .collect();
        for pair in loaded.windows(2) {
            assert!(
                pair[1] - pair[0] <= MON_8_MS + STEP_MS,
                "stored at {} then {}",
                pair[0],
                pair[1]
            );
        }
        assert!(3 * HOUR_MS - loaded.last().unwrap() <= MON_8_MS + STEP_MS);
        // ... and at most one point of each kind per 10 minutes, but the counted item.
        for kind in 1..=2 {
            let times: std::vec::Vec<u64> = writes
                .iter()
                .filter(|&&(t, k)| k == kind && t != 3 * HOUR_MS / 2)
                .map(|&(t, _)| t)
                .collect();
            for pair in times.windows(2) {
                assert!(pair[1] - pair[0] >= MON_8_MS, "kind {kind} {pair:?}");
            }
        }
        let points = writes.iter().filter(|&&(_, k)| k == 1).count();
        assert!((17..=19).contains(&points), "{points} points in 3 hours");
        // At rest, once the last of the load is stored: nothing.
        let at_rest: std::vec::Vec<_> = writes
            .iter()
            .filter(|&&(t, _)| t > 3 * HOUR_MS + MON_8_MS + STEP_MS)
            .collect();
        assert_eq!(at_rest, std::vec::Vec::<&(u64, usize)>::new());
    }

    /// A store that fails one write in `fail_one_in` (the previous value stays) and keeps a copy
    /// of itself after every write that succeeded: a power cut after any write of a poll.
    struct CutAnywhere {
        inner: MemStorage,
        after_each_write: std::vec::Vec<MemStorage>,
        rng: u64,
        fail_one_in: u64,
    }

    impl Storage for CutAnywhere {
        fn read(&mut self, key: &str, buf: &mut [u8]) -> Result<usize, StorageError> {
            self.inner.read(key, buf)
        }
        fn write(&mut self, key: &str, value: &[u8]) -> Result<(), StorageError> {
            // xorshift64*
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            if self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % self.fail_one_in == 0 {
                return Err(StorageError::Io { code: -5 });
            }
            self.inner.write(key, value)?;
            self.after_each_write.push(self.inner.clone());
            Ok(())
        }
        fn delete(&mut self, key: &str) -> Result<(), StorageError> {
            self.inner.delete(key)
        }
    }

    /// The counters a restart must neither invent nor lose: drawn mAh, discharged and charged
    /// mWh, deepest discharge mAh, cycles, synchronisations.
    fn history_counters(r: &HistoryRecord) -> [u64; 6] {
        [
            r.drawn_mah,
            r.discharged_mwh,
            r.charged_mwh,
            r.deepest_discharge_mah.into(),
            r.cycles.into(),
            r.synchronisations.into(),
        ]
    }

    /// MON-8, HIST-4: with one write in six failing and a power cut after any write of any
    /// poll, the history restored is never above what was counted (since the last reset that
    /// was stored), never below what was stored (less than one point unit; counted items
    /// exactly), and a stored reset is never undone. Charge and discharge up to 150 A, SoC
    /// cycles and synchronisations (cycles and synchronisations beyond the counts' 7), error
    /// codes up to 40 (beyond the counts' 31), a new extreme now and then, and resets.
    #[test]
    fn mon_8_hist_4_failing_writes_and_cuts_inside_a_poll_never_invent_or_lose_history() {
        use crate::history::{History, HistoryInput};
        // What a point may round off: 1 Ah, 20 Wh, 20 Wh, 1 Ah, and counted items exactly.
        const UNITS: [u64; 6] = [1_000, 20_000, 20_000, 1_000, 1, 1];
        let mut multi_write_polls = 0;
        let mut resets_stored = 0;
        for seed in 1..=60u64 {
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut draw = move |n: u64| {
                rng ^= rng >> 12;
                rng ^= rng << 25;
                rng ^= rng >> 27;
                rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
            };
            let mut store = CutAnywhere {
                inner: MemStorage::new(),
                after_each_write: std::vec::Vec::new(),
                rng: seed | 1,
                fail_one_in: 6,
            };
            let (mut persistence, _) = Persistence::restore(&mut store);
            let mut history = History::default();
            // Highest of each counter given to the store since the last stored reset, and the
            // lowest a restart may show (what was stored, less a unit).
            let mut ceiling = [0u64; 6];
            let mut floor = [0u64; 6];
            let mut reset_unstored = false;
            let (mut soc, mut rising) = (950i32, false);
            let mut t_ms = 0u64;
            for step in 0..20_000u32 {
                t_ms += 10_000;
                let bank_ma = match draw(4) {
                    0 => 0,
                    1 => -(draw(150_000) as i32),
                    2 => draw(150_000) as i32,
                    _ => -5_000,
                };
                soc += if rising { 7 } else { -7 };
                rising = (rising || soc < 300) && soc <= 990;
                let input = HistoryInput {
                    bank_mv: 13_000 + if draw(200) == 0 { step / 10 } else { 0 },
                    bank_ma,
                    min_cell_mv: Some(3_300),
                    max_cell_mv: Some(3_310),
                    min_temp_ddegc: Some(200),
                    max_temp_ddegc: Some(210),
                    soc_permille: Some(soc as u16),
                    consumed_mah: ((1_000 - soc) * 200) as u32,
                    synchronised: soc > 985 && draw(3) == 0,
                };
                let _ = history.update(t_ms, &input);
                if draw(300) == 0 {
                    history.record_error(1 + draw(40) as u16);
                }
                if draw(1_500) == 0 {
                    history.reset();
                    reset_unstored = true;
                }
                let record = *history.record();
                for (c, v) in ceiling.iter_mut().zip(history_counters(&record)) {
                    *c = (*c).max(v);
                }
                store.after_each_write.clear();
                let report = persistence.poll(
                    &mut store,
                    t_ms,
                    &Records {
                        history: record,
                        history_due: history.all_due(t_ms),
                        history_counted_due: history.counted_due(),
                        ..Records::default()
                    },
                );
                if store.after_each_write.len() > 1 {
                    multi_write_polls += 1;
                }
                for cut in &store.after_each_write {
                    let (_, restored) = Persistence::restore(&mut cut.clone());
                    let Ok(got) = restored.history else {
                        continue;
                    };
                    for (i, got) in history_counters(&got).into_iter().enumerate() {
                        assert!(
                            got <= ceiling[i],
                            "seed {seed} step {step}: counter {i} restored {got}, counted {}",
                            ceiling[i]
                        );
                        assert!(
                            reset_unstored || got >= floor[i],
                            "seed {seed} step {step}: counter {i} restored {got}, stored {}",
                            floor[i]
                        );
                    }
                }
                if report.history == Outcome::Written {
                    history.mark_persisted(t_ms);
                    if reset_unstored {
                        reset_unstored = false;
                        resets_stored += 1;
                        ceiling = history_counters(&record);
                        floor = [0; 6];
                    }
                    for ((f, v), unit) in floor.iter_mut().zip(history_counters(&record)).zip(UNITS)
                    {
                        *f = (*f).max(v.saturating_sub(unit - 1));
                    }
                } else if report.history_counted == Outcome::Written {
                    history.mark_counted_persisted();
                    if !reset_unstored {
                        for (f, v) in floor.iter_mut().zip(history_counters(&record)).skip(4) {
                            *f = (*f).max(v);
                        }
                    }
                }
            }
        }
        assert!(
            multi_write_polls > 1_000,
            "{multi_write_polls} polls of several writes"
        );
        assert!(resets_stored > 100, "{resets_stored} resets stored");
    }

    #[test]
    fn a_missing_point_is_no_fault_and_not_rewritten() {
        let mut store = full_store();
        store.delete(RecordKind::SocPoint.key()).unwrap();
        let (mut persistence, restored) = Persistence::restore(&mut store);
        assert_eq!(
            restored.error(RecordKind::SocPoint),
            Some(RecordError::Missing)
        );
        assert_eq!(restored.fault(RecordKind::SocPoint), None);
        assert_eq!(restored.soc, Ok(sample_soc()), "the record alone");
        assert_eq!(
            persistence.poll(&mut store, 0, &records()),
            PollReport::default()
        );
    }

    /// BLE-2, BLE-3: the passkey and the Instant Readout key survive a reboot; they are written
    /// when they change and never rewritten unchanged; a placeholder key (`None`) is not stored.
    #[test]
    fn ble_2_secrets_written_on_change_and_restored() {
        let mut store = full_store();
        let (mut persistence, restored) = Persistence::restore(&mut store);
        assert_eq!(restored.secrets, Ok(sample_secrets()));
        assert_eq!(
            persistence.poll(&mut store, 0, &records()),
            PollReport::default()
        );
        let changed = DeviceSecrets {
            passkey: 654_321,
            ..sample_secrets()
        };
        let report = persistence.poll(
            &mut store,
            100,
            &Records {
                secrets: Some(changed),
                ..records()
            },
        );
        assert_eq!(report.secrets, Outcome::Written);
        let (_, restored) = Persistence::restore(&mut store);
        assert_eq!(restored.secrets, Ok(changed));

        let mut fresh = MemStorage::new();
        let (mut persistence, _) = Persistence::restore(&mut fresh);
        let report = persistence.poll(
            &mut fresh,
            0,
            &Records {
                secrets: None,
                ..records()
            },
        );
        assert_eq!(report.secrets, Outcome::Idle);
        let (_, restored) = Persistence::restore(&mut fresh);
        assert_eq!(
            restored.error(RecordKind::Secrets),
            Some(RecordError::Missing)
        );
    }
}
