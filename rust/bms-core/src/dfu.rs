//! Firmware updates as the control loop sees them (PROT-10, DFU-1, DFU-2): the state of an
//! update over time ([`UpdateState`], driven by the platform's [`DfuEvent`]s and by time) and
//! the post-update self-check that decides whether a new image is confirmed ([`SelfCheck`]).
//!
//! An update in progress blocks charging; an update that fails, is aborted or makes no progress
//! for [`DFU_STALL_MS`] becomes [`UpdateState::Failed`], and [`DFU_FAILED_ATD_DELAY_MS`] later
//! the loads are disconnected until an update completes **(choice)**: a half-written image is
//! no danger to the battery, but an owner who walked away from a failed update must notice it.

use crate::limits::{
    DFU_FAILED_ATD_DELAY_MS, DFU_STALL_MS, OLDER_FORMAT_HOLD_MS, SELF_CHECK_BUS_WAIT_MS,
    SELF_CHECK_STEPS, SELF_CHECK_TIMEOUT_MS,
};
use crate::stable_enum::stable_enum;
use crate::word::Word;

stable_enum! {
    /// Firmware-update progress reported by the platform (PROT-10, DFU-2). The numbers are the
    /// C interface's `bms_dfu` values.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum DfuEvent {
        /// An update attempt started (first image chunk received).
        Started = 0 => "started",
        /// The image was received and verified completely; a reboot into it follows.
        Completed = 1 => "completed",
        /// The update failed (transfer or verification error).
        Failed = 2 => "failed",
        /// The update was aborted (link lost, cancelled).
        Aborted = 3 => "aborted",
        /// A further image chunk arrived: the upload is alive (DFU-1's stall timeout restarts).
        Progress = 4 => "progress",
    }
}

/// Where a firmware update stands. Only the combinations that can happen are representable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpdateState {
    /// No update running; the loads are not held off by an earlier failure.
    #[default]
    Idle,
    /// An upload is running: charging is blocked (PROT-10).
    InProgress {
        /// The last sign of life (start or chunk), ms: [`DFU_STALL_MS`] after it the upload
        /// counts as aborted.
        last_activity_ms: u64,
        /// An earlier failure already disconnected the loads; they stay off until an update
        /// completes.
        loads_held: bool,
    },
    /// The last attempt failed at `since_ms`: the loads go off [`DFU_FAILED_ATD_DELAY_MS`]
    /// later and stay off until an update completes.
    Failed {
        /// When the attempt failed, was aborted or stalled, ms.
        since_ms: u64,
        /// An earlier failure already disconnected the loads.
        loads_held: bool,
    },
}

impl UpdateState {
    /// The platform reports `event` at `now_ms`.
    pub fn handle(&mut self, now_ms: u64, event: DfuEvent) {
        self.expire(now_ms);
        *self = match (event, *self) {
            (DfuEvent::Started, state) => UpdateState::InProgress {
                last_activity_ms: now_ms,
                loads_held: state.loads_held(now_ms),
            },
            (DfuEvent::Progress, UpdateState::InProgress { loads_held, .. }) => {
                UpdateState::InProgress {
                    last_activity_ms: now_ms,
                    loads_held,
                }
            }
            // A chunk with no running upload (it stalled, or the link dropped and came back)
            // changes nothing: the platform reports a new start when the upload resumes.
            (DfuEvent::Progress, state) => state,
            (DfuEvent::Completed, _) => UpdateState::Idle,
            (DfuEvent::Failed | DfuEvent::Aborted, state) => UpdateState::Failed {
                since_ms: now_ms,
                loads_held: state.loads_held(now_ms),
            },
        };
        if event != DfuEvent::Progress {
            log::info!("firmware update: {}", Word(event.name()));
        }
    }

    /// Applies the stall timeout at `now_ms`: an upload silent for [`DFU_STALL_MS`] has failed
    /// at the end of that time.
    pub fn expire(&mut self, now_ms: u64) {
        if let UpdateState::InProgress {
            last_activity_ms,
            loads_held,
        } = *self
        {
            let deadline = last_activity_ms.saturating_add(DFU_STALL_MS);
            if now_ms >= deadline {
                log::warn!("firmware update: no progress for 2 min, aborted");
                *self = UpdateState::Failed {
                    since_ms: deadline,
                    loads_held,
                };
            }
        }
    }

    /// PROT-10: charging is blocked while an upload runs.
    pub const fn charge_blocked(&self) -> bool {
        matches!(self, UpdateState::InProgress { .. })
    }

    /// PROT-10: the loads are disconnected because of a failed update at `now_ms`.
    pub fn loads_held(&self, now_ms: u64) -> bool {
        match *self {
            UpdateState::Idle => false,
            UpdateState::InProgress { loads_held, .. } => loads_held,
            UpdateState::Failed {
                since_ms,
                loads_held,
            } => loads_held || now_ms >= since_ms.saturating_add(DFU_FAILED_ATD_DELAY_MS),
        }
    }

    /// The failure code is raised: an attempt failed and no update has completed since.
    pub const fn failed(&self) -> bool {
        matches!(
            self,
            UpdateState::Failed { .. }
                | UpdateState::InProgress {
                    loads_held: true,
                    ..
                }
        )
    }

    /// When this state changes next without a new event (a stall or the ATD delay), ms.
    pub fn next_deadline_ms(&self, now_ms: u64) -> Option<u64> {
        let due = match *self {
            UpdateState::Idle => None,
            UpdateState::InProgress {
                last_activity_ms, ..
            } => Some(last_activity_ms.saturating_add(DFU_STALL_MS)),
            UpdateState::Failed {
                since_ms,
                loads_held: false,
            } => Some(since_ms.saturating_add(DFU_FAILED_ATD_DELAY_MS)),
            UpdateState::Failed { .. } => None,
        };
        due.filter(|&t| t > now_ms)
    }
}

/// What only the platform knows for the post-update self-check (DFU-1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SelfCheckInputs {
    /// The Bluetooth stack is up and advertising (the only way to update again).
    pub ble_ready: bool,
    /// The platform's store is up (the settings subsystem initialised).
    pub storage_ok: bool,
}

/// The verdict of the post-update self-check (DFU-1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SelfCheck {
    /// Not decided yet: ask again after the next step.
    #[default]
    Pending,
    /// Healthy: confirm the image to MCUboot. Final.
    Passed,
    /// Not healthy in time: reboot without confirming, so that MCUboot reverts. Final.
    Failed,
}

/// What the self-check has seen since start, and its verdict once given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SelfCheckProgress {
    /// First step or self-check call.
    start_ms: Option<u64>,
    /// Control steps completed.
    steps: u32,
    /// A complete, valid bank was judged at a step.
    bank_valid: bool,
    /// Bytes arrived on the battery bus or line (whether or not they made a report).
    bus_bytes_seen: bool,
    /// A record write succeeded.
    storage_written: bool,
    /// The final verdict, once given.
    verdict: Option<SelfCheck>,
}

impl SelfCheckProgress {
    /// A control step ran at `now_ms`; `bank_valid` if it judged a complete, valid bank.
    pub fn step(&mut self, now_ms: u64, bank_valid: bool) {
        self.start_ms.get_or_insert(now_ms);
        self.steps = self.steps.saturating_add(1);
        self.bank_valid |= bank_valid;
    }

    /// Bytes (or a decoded report) arrived from the batteries.
    pub fn bus_activity(&mut self) {
        self.bus_bytes_seen = true;
    }

    /// A record write succeeded.
    pub fn storage_written(&mut self) {
        self.storage_written = true;
    }

    /// Whether records may be rewritten in a newer format at `now_ms`: the self-check passed,
    /// or [`OLDER_FORMAT_HOLD_MS`] went by since the first step (an image that failed it has
    /// been reverted by then).
    pub fn formats_settled(&self, now_ms: u64) -> bool {
        self.verdict == Some(SelfCheck::Passed)
            || self
                .start_ms
                .is_some_and(|start| now_ms.saturating_sub(start) >= OLDER_FORMAT_HOLD_MS)
    }

    /// The verdict at `now_ms`, with what only the platform knows and whether a store write is
    /// failing now. Passed once all hold: [`SELF_CHECK_STEPS`] steps; the store up, written and
    /// not failing; Bluetooth up; and the bus works — a complete, valid bank was judged, or
    /// nothing at all arrived on the bus within [`SELF_CHECK_BUS_WAIT_MS`] **(choice)**: no
    /// battery connected yet (a bench, a new installation) is no firmware fault, but bytes that
    /// never make a valid bank are (an image that cannot decode the bus must not be confirmed;
    /// a broken battery or a BANK-2 configuration error also keeps it unconfirmed, and the
    /// previous image keeps protecting as before). Failed when that has not happened
    /// [`SELF_CHECK_TIMEOUT_MS`] after the first step. Once given, the verdict never changes.
    pub fn judge(
        &mut self,
        now_ms: u64,
        platform: SelfCheckInputs,
        storage_failing: bool,
    ) -> SelfCheck {
        if let Some(verdict) = self.verdict {
            return verdict;
        }
        let start_ms = *self.start_ms.get_or_insert(now_ms);
        let elapsed_ms = now_ms.saturating_sub(start_ms);
        let steps = self.steps >= SELF_CHECK_STEPS;
        let storage = platform.storage_ok && self.storage_written && !storage_failing;
        let bus = self.bank_valid || (!self.bus_bytes_seen && elapsed_ms >= SELF_CHECK_BUS_WAIT_MS);
        let verdict = if steps && storage && bus && platform.ble_ready {
            log::info!("self-check passed");
            SelfCheck::Passed
        } else if elapsed_ms >= SELF_CHECK_TIMEOUT_MS {
            log::error!(
                "self-check failed: steps {}, storage {}, bus {}, bluetooth {}",
                ok(steps),
                ok(storage),
                ok(bus),
                ok(platform.ble_ready)
            );
            SelfCheck::Failed
        } else {
            return SelfCheck::Pending;
        };
        self.verdict = Some(verdict);
        verdict
    }
}

fn ok(pass: bool) -> Word {
    Word(if pass { "ok" } else { "FAILED" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dfu_event_numbers_match_the_c_abi() {
        for n in 0..=4u8 {
            assert_eq!(DfuEvent::from_u8(n).map(|e| e as u8), Some(n));
        }
        assert_eq!(DfuEvent::from_u8(5), None);
    }

    /// DFU-1: newer record formats wait for a passed self-check, or for the time by which an
    /// image that failed it has been reverted; never before the first step.
    #[test]
    fn dfu_1_newer_record_formats_wait_for_the_self_check() {
        let mut progress = SelfCheckProgress::default();
        assert!(!progress.formats_settled(u64::MAX), "before the first step");
        progress.step(1_000, false);
        assert!(!progress.formats_settled(1_000 + OLDER_FORMAT_HOLD_MS - 1));
        assert!(progress.formats_settled(1_000 + OLDER_FORMAT_HOLD_MS));
        // The hold outlasts the self-check's own timeout: an image that fails its self-check
        // reboots (and MCUboot reverts it) before it rewrites a record in the newer format.
        assert!(!progress.formats_settled(1_000 + SELF_CHECK_TIMEOUT_MS));

        let mut passed = SelfCheckProgress::default();
        let platform = SelfCheckInputs {
            ble_ready: true,
            storage_ok: true,
        };
        passed.storage_written();
        for t in 0..SELF_CHECK_STEPS {
            passed.step(u64::from(t) * 100, true);
        }
        assert!(!passed.formats_settled(2_000));
        assert_eq!(passed.judge(2_000, platform, false), SelfCheck::Passed);
        assert!(passed.formats_settled(2_000), "passed: at once");
    }

    #[test]
    fn an_upload_kept_alive_by_chunks_never_stalls() {
        let mut state = UpdateState::default();
        state.handle(0, DfuEvent::Started);
        for t in (60_000..=600_000).step_by(60_000) {
            state.handle(t, DfuEvent::Progress);
            assert!(state.charge_blocked(), "still uploading at {t} ms");
        }
        state.handle(610_000, DfuEvent::Completed);
        assert_eq!(state, UpdateState::Idle);
    }

    #[test]
    fn a_silent_upload_fails_at_the_stall_deadline() {
        let mut state = UpdateState::default();
        state.handle(1_000, DfuEvent::Started);
        assert_eq!(state.next_deadline_ms(1_000), Some(1_000 + DFU_STALL_MS));
        state.expire(1_000 + DFU_STALL_MS - 1);
        assert!(state.charge_blocked());
        state.expire(1_000 + DFU_STALL_MS);
        assert_eq!(
            state,
            UpdateState::Failed {
                since_ms: 1_000 + DFU_STALL_MS,
                loads_held: false
            }
        );
        // A late chunk does not revive it; a new start does.
        state.handle(1_000 + DFU_STALL_MS + 5, DfuEvent::Progress);
        assert!(!state.charge_blocked());
        state.handle(1_000 + DFU_STALL_MS + 10, DfuEvent::Started);
        assert!(state.charge_blocked());
    }

    #[test]
    fn held_loads_stay_held_through_a_retry_that_stalls() {
        let mut state = UpdateState::Failed {
            since_ms: 0,
            loads_held: false,
        };
        assert!(state.loads_held(DFU_FAILED_ATD_DELAY_MS));
        state.handle(DFU_FAILED_ATD_DELAY_MS + 1, DfuEvent::Started);
        assert!(state.loads_held(DFU_FAILED_ATD_DELAY_MS + 1) && state.failed());
        let stalled = DFU_FAILED_ATD_DELAY_MS + 1 + DFU_STALL_MS;
        state.expire(stalled);
        assert!(state.loads_held(stalled), "no second 120 s of loads on");
    }

    #[test]
    fn bytes_that_never_make_a_bank_fail_the_self_check() {
        let platform = SelfCheckInputs {
            ble_ready: true,
            storage_ok: true,
        };
        let mut check = SelfCheckProgress::default();
        check.storage_written();
        check.bus_activity();
        let mut verdict = SelfCheck::Pending;
        for t in (0..=SELF_CHECK_TIMEOUT_MS).step_by(100) {
            check.step(t, false);
            verdict = check.judge(t, platform, false);
            if verdict != SelfCheck::Pending {
                break;
            }
        }
        assert_eq!(verdict, SelfCheck::Failed);

        let mut silent = SelfCheckProgress::default();
        silent.storage_written();
        for t in (0..=SELF_CHECK_BUS_WAIT_MS).step_by(100) {
            silent.step(t, false);
        }
        assert_eq!(
            silent.judge(SELF_CHECK_BUS_WAIT_MS, platform, false),
            SelfCheck::Passed,
            "a bus with nothing on it is a bench, not a fault"
        );
    }
}
