//! History behaviour (HIST-1..4), through the public API.
// The rig returns each status; many steps only drive time.
#![allow(unused_must_use)]

use bms_core::history::{History, HistoryInput, HistoryRecord, HistoryStatus};

const TICK_MS: u64 = 100;
const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;

struct Rig {
    history: History,
    now_ms: u64,
}

impl Rig {
    fn new() -> Self {
        Rig {
            history: History::default(),
            now_ms: 0,
        }
    }

    fn step(&mut self, input: &HistoryInput) -> HistoryStatus {
        let status = self.history.update(self.now_ms, input);
        self.now_ms += TICK_MS;
        status
    }

    /// Runs `duration_ms` of ticks with the same input; true if a counted item changed.
    fn run(&mut self, duration_ms: u64, input: &HistoryInput) -> bool {
        let mut counted = false;
        for _ in 0..duration_ms / TICK_MS {
            counted |= self.step(input).counted_changed;
        }
        counted
    }

    /// Sets the SoC for one tick.
    fn soc(&mut self, soc_permille: u16) -> HistoryStatus {
        self.step(&HistoryInput {
            soc_permille: Some(soc_permille),
            ..idle()
        })
    }
}

fn idle() -> HistoryInput {
    HistoryInput {
        bank_mv: 13_200,
        bank_ma: 0,
        min_cell_mv: Some(3_290),
        max_cell_mv: Some(3_310),
        min_temp_ddegc: Some(200),
        max_temp_ddegc: Some(210),
        soc_permille: Some(800),
        consumed_mah: 20_000,
        synchronised: false,
    }
}

/// HIST-1: cumulative Ah drawn and discharged/charged energy are integrated from current and
/// voltage.
#[test]
fn hist_1_cumulative_ah_and_energy() {
    let mut rig = Rig::new();
    let discharging = HistoryInput {
        bank_mv: 12_800,
        bank_ma: -10_000,
        ..idle()
    };
    rig.step(&discharging);
    rig.run(HOUR_MS, &discharging);
    assert_eq!(rig.history.cumulative_drawn_mah(), 10_000);
    // 12.8 V × 10 A × 1 h = 128 Wh.
    assert_eq!(rig.history.discharged_energy_mwh(), 128_000);
    assert_eq!(rig.history.charged_energy_mwh(), 0);
    let charging = HistoryInput {
        bank_mv: 14_000,
        bank_ma: 20_000,
        ..idle()
    };
    rig.step(&charging);
    let drawn = rig.history.cumulative_drawn_mah();
    rig.run(30 * MINUTE_MS, &charging);
    assert_eq!(
        rig.history.cumulative_drawn_mah(),
        drawn,
        "charging draws nothing"
    );
    // 14 V × 20 A × 0.5 h = 140 Wh, plus the ramp tick.
    let charged = rig.history.charged_energy_mwh();
    assert!((140_000..=140_010).contains(&charged), "{charged}");
}

/// HIST-1: small currents accumulate without loss: 1 mA for 10 h is 10 mAh.
#[test]
fn hist_1_small_currents_accumulate_exactly() {
    let mut rig = Rig::new();
    let trickle = HistoryInput {
        bank_ma: -1,
        ..idle()
    };
    rig.step(&trickle);
    rig.run(10 * HOUR_MS, &trickle);
    assert_eq!(rig.history.cumulative_drawn_mah(), 10);
}

/// HIST-1: deepest discharge is the largest consumed Ah seen while the SoC was known.
#[test]
fn hist_1_deepest_discharge() {
    let mut rig = Rig::new();
    rig.step(&HistoryInput {
        consumed_mah: 40_000,
        soc_permille: None,
        ..idle()
    });
    assert_eq!(
        rig.history.deepest_discharge_mah(),
        0,
        "unknown SoC: consumed is not a depth"
    );
    rig.step(&HistoryInput {
        consumed_mah: 35_000,
        ..idle()
    });
    rig.step(&HistoryInput {
        consumed_mah: 60_000,
        ..idle()
    });
    rig.step(&HistoryInput {
        consumed_mah: 10_000,
        ..idle()
    });
    assert_eq!(rig.history.deepest_discharge_mah(), 60_000);
}

/// HIST-1: min and max battery voltage, cell voltage and battery temperature only widen.
#[test]
fn hist_1_extremes() {
    let mut rig = Rig::new();
    assert_eq!(rig.history.min_bank_mv(), None);
    rig.step(&idle());
    rig.step(&HistoryInput {
        bank_mv: 12_100,
        min_cell_mv: Some(3_000),
        max_cell_mv: Some(3_200),
        min_temp_ddegc: Some(-55),
        max_temp_ddegc: Some(0),
        ..idle()
    });
    rig.step(&HistoryInput {
        bank_mv: 14_300,
        min_cell_mv: Some(3_500),
        max_cell_mv: Some(3_650),
        min_temp_ddegc: None,
        max_temp_ddegc: Some(412),
        ..idle()
    });
    let h = &rig.history;
    assert_eq!(
        (h.min_bank_mv(), h.max_bank_mv()),
        (Some(12_100), Some(14_300))
    );
    assert_eq!(
        (h.min_cell_mv(), h.max_cell_mv()),
        (Some(3_000), Some(3_650))
    );
    assert_eq!(
        (h.min_temp_ddegc(), h.max_temp_ddegc()),
        (Some(-55), Some(412))
    );
}

/// HIST-1: the last 4 errors, newest first.
#[test]
fn hist_1_last_four_errors() {
    let mut rig = Rig::new();
    assert_eq!(rig.history.last_errors(), [None; 4]);
    for code in [11, 12, 13, 14, 15] {
        rig.history.record_error(code);
    }
    assert_eq!(
        rig.history.last_errors(),
        [Some(15), Some(14), Some(13), Some(12)]
    );
    assert!(
        rig.history.persist_due(rig.now_ms),
        "a new error is persisted at once"
    );
}

/// HIST-1: time since the last full charge restarts at each automatic synchronisation.
#[test]
fn hist_1_time_since_last_full_charge() {
    let mut rig = Rig::new();
    rig.run(MINUTE_MS, &idle());
    assert_eq!(rig.history.since_full_charge_ms(), None);
    rig.step(&HistoryInput {
        synchronised: true,
        soc_permille: Some(1000),
        ..idle()
    });
    assert_eq!(rig.history.since_full_charge_ms(), Some(0));
    rig.run(HOUR_MS, &idle());
    assert_eq!(rig.history.since_full_charge_ms(), Some(HOUR_MS));
}

/// HIST-2: a cycle is counted when the SoC drops below 65 % and later rises above 90 %.
#[test]
fn hist_2_cycle_counted_below_65_then_above_90() {
    let mut rig = Rig::new();
    for soc in [1000, 700, 650, 950, 1000] {
        assert!(!rig.soc(soc).counted_changed);
    }
    assert_eq!(rig.history.cycles(), 0, "never below 65 %");
    rig.soc(649);
    rig.soc(900);
    assert_eq!(rig.history.cycles(), 0, "not above 90 % yet");
    rig.soc(500);
    assert!(rig.soc(901).counted_changed);
    assert_eq!(rig.history.cycles(), 1);
    rig.soc(950);
    rig.soc(700);
    rig.soc(1000);
    assert_eq!(rig.history.cycles(), 1, "one cycle per dip");
    rig.soc(100);
    rig.step(&HistoryInput {
        soc_permille: None,
        ..idle()
    });
    rig.soc(1000);
    assert_eq!(rig.history.cycles(), 2);
}

/// HIST-3: an automatic synchronisation is counted only if the SoC dropped below 90 % since the
/// previous one.
#[test]
fn hist_3_synchronisation_counted_after_dropping_below_90() {
    let mut rig = Rig::new();
    let sync = HistoryInput {
        synchronised: true,
        soc_permille: Some(1000),
        ..idle()
    };
    assert!(
        !rig.step(&sync).counted_changed,
        "no known dip before the first one"
    );
    rig.soc(950);
    rig.step(&sync);
    assert_eq!(rig.history.synchronisations(), 0, "stayed above 90 %");
    rig.soc(899);
    rig.soc(990);
    assert!(rig.step(&sync).counted_changed);
    assert_eq!(rig.history.synchronisations(), 1);
    rig.step(&sync);
    assert_eq!(rig.history.synchronisations(), 1);
    rig.soc(200);
    rig.step(&sync);
    assert_eq!(rig.history.synchronisations(), 2);
}

/// HIST-3: exactly 90 % is not below 90 %: a synchronisation after the SoC went down to 90.0 %
/// and no lower is not counted; after 89.9 % it is.
#[test]
fn hist_3_exactly_90_percent_does_not_arm_the_count() {
    let mut rig = Rig::new();
    let sync = HistoryInput {
        synchronised: true,
        soc_permille: Some(1000),
        ..idle()
    };
    rig.step(&sync);
    rig.soc(900);
    assert!(!rig.step(&sync).counted_changed);
    assert_eq!(
        rig.history.synchronisations(),
        0,
        "90.0 % is not below 90 %"
    );
    rig.soc(899);
    assert!(rig.step(&sync).counted_changed);
    assert_eq!(rig.history.synchronisations(), 1);
}

/// HIST-4: reset clears every item and is persisted at once.
#[test]
fn hist_4_reset_clears_every_item() {
    let mut rig = Rig::new();
    let busy = HistoryInput {
        bank_ma: -50_000,
        consumed_mah: 70_000,
        soc_permille: Some(300),
        ..idle()
    };
    rig.run(HOUR_MS, &busy);
    rig.soc(950);
    rig.step(&HistoryInput {
        synchronised: true,
        soc_permille: Some(1000),
        ..idle()
    });
    rig.history.record_error(7);
    assert_eq!(
        (rig.history.cycles(), rig.history.synchronisations()),
        (1, 1)
    );
    rig.history.mark_persisted(rig.now_ms);

    rig.history.reset();
    assert_eq!(rig.history, History::default());
    assert_eq!(*rig.history.record(), HistoryRecord::default());
    assert_eq!(rig.history.last_errors(), [None; 4]);
    assert_eq!(rig.history.since_full_charge_ms(), None);
    assert_eq!(rig.history.min_bank_mv(), None);
    assert!(rig.history.persist_due(rig.now_ms));
    // The rules restart too: a sync right after the reset is not counted.
    rig.step(&HistoryInput {
        synchronised: true,
        soc_permille: Some(1000),
        ..idle()
    });
    assert_eq!(rig.history.synchronisations(), 0);
}

/// HIST-4, MON-8: history is persisted at once when a counted item changes, 10 minutes after
/// the first change of anything else, never when nothing changes; and survives a round trip.
#[test]
fn hist_4_persistence_policy_and_round_trip() {
    let mut rig = Rig::new();
    rig.step(&idle());
    rig.history.mark_persisted(rig.now_ms);
    assert!(!rig.step(&idle()).persist_due, "nothing changed");
    let load = HistoryInput {
        bank_ma: -5_000,
        ..idle()
    };
    let start_ms = rig.now_ms;
    let mut due_at = None;
    for _ in 0..(2 * HOUR_MS / TICK_MS) {
        let at = rig.now_ms;
        if rig.step(&load).persist_due {
            due_at = Some(at);
            break;
        }
    }
    // 10 minutes exactly (docs/persistence.md), not at every step: each write wears the flash.
    assert_eq!(due_at, Some(start_ms + 10 * MINUTE_MS));
    rig.history.mark_persisted(rig.now_ms);
    rig.soc(500);
    assert!(rig.soc(950).persist_due, "a cycle is persisted at once");

    let mut buf = [0u8; 256];
    let bytes = postcard::to_slice(&rig.history, &mut buf).unwrap();
    let restored: History = postcard::from_bytes(bytes).unwrap();
    assert_eq!(restored, rig.history);
    assert_ne!(
        restored,
        History::default(),
        "a history with a cycle is not an empty one"
    );
    assert_eq!(restored.cycles(), 1);
    assert!(
        !restored.persist_due(u64::MAX),
        "a restored history has nothing to persist"
    );
}

/// HIST-4: time going backwards counts as no time.
#[test]
fn hist_4_time_backwards_adds_nothing() {
    let mut history = History::default();
    let load = HistoryInput {
        bank_ma: -100_000,
        ..idle()
    };
    history.update(HOUR_MS, &load);
    history.update(HOUR_MS + MINUTE_MS, &load);
    let drawn = history.cumulative_drawn_mah();
    history.update(0, &load);
    history.update(HOUR_MS, &load);
    assert_eq!(history.cumulative_drawn_mah(), drawn);
}

/// HIST-1, HIST-4: while only the time since the last full charge advances (a full bank at
/// rest), the history is persisted an hour after the last write (docs/persistence.md): a power
/// cut loses at most an hour of it, and the flash is not written every 10 minutes for a clock.
#[test]
fn hist_4_time_since_full_alone_is_persisted_hourly() {
    let mut rig = Rig::new();
    let full = HistoryInput {
        soc_permille: Some(1000),
        consumed_mah: 0,
        ..idle()
    };
    rig.step(&HistoryInput {
        synchronised: true,
        ..full
    });
    rig.step(&full);
    let written_ms = rig.now_ms - TICK_MS;
    rig.history.mark_persisted(written_ms);
    let mut due_at = None;
    for _ in 0..(2 * HOUR_MS / TICK_MS) {
        let at = rig.now_ms;
        if rig.step(&full).persist_due {
            due_at = Some(at);
            break;
        }
    }
    assert_eq!(due_at, Some(written_ms + HOUR_MS));
    assert_eq!(rig.history.since_full_charge_ms(), Some(HOUR_MS + TICK_MS));
}
