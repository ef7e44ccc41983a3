//! Battery monitor behaviour (MON-1..8, the PROT-9 floor latch), through the public API.
// The rig's helpers return the last status; many steps only drive time.
#![allow(unused_must_use)]

use bms_core::monitor::{
    Monitor, MonitorError, MonitorInput, MonitorStatus, SocKnowledge, SocState, TTG_WINDOW_MS,
};
use bms_core::settings::Settings;
use bms_core::soc::counter::peukert_factor_q24;
use bms_core::soc::{ocv_soc_permille, NAS_PER_MAH};

const TICK_MS: u64 = 100;
const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
/// A 12.8 V 100 Ah bank: 4 cells in series.
const CAPACITY_MAH: u32 = 100_000;
const CELLS: u16 = 4;
const REST_MV: u32 = 13_200;

/// Drives a monitor tick by tick, as `Bms::step` does.
struct Rig {
    monitor: Monitor,
    settings: Settings,
    now_ms: u64,
    last: MonitorStatus,
}

impl Rig {
    fn new() -> Self {
        Rig::restored(None)
    }

    fn restored(state: Option<SocState>) -> Self {
        let mut rig = Rig {
            monitor: Monitor::new(state),
            settings: Settings::default(),
            now_ms: 0,
            last: MonitorStatus::default(),
        };
        rig.tick(REST_MV, 0);
        rig
    }

    /// A rig whose SoC was set to `soc_permille` at a rested bank.
    fn at_soc(soc_permille: u16) -> Self {
        let mut rig = Rig::new();
        rig.set_soc(soc_permille).unwrap();
        rig.tick(REST_MV, 0);
        rig
    }

    fn set_soc(&mut self, soc_permille: u16) -> Result<(), MonitorError> {
        self.monitor.set_soc(self.now_ms, soc_permille)
    }

    fn synchronise(&mut self) -> Result<(), MonitorError> {
        self.monitor.synchronise(self.now_ms)
    }

    fn input(bank_mv: u32, bank_ma: i32) -> MonitorInput {
        MonitorInput {
            bank_mv,
            bank_ma,
            capacity_mah: CAPACITY_MAH,
            cells_in_series: CELLS,
        }
    }

    fn tick(&mut self, bank_mv: u32, bank_ma: i32) -> MonitorStatus {
        self.last = self
            .monitor
            .update(self.now_ms, &Rig::input(bank_mv, bank_ma), &self.settings);
        self.now_ms += TICK_MS;
        self.last
    }

    /// Runs `duration_ms` of ticks at a constant current; returns the last status.
    fn run(&mut self, duration_ms: u64, bank_mv: u32, bank_ma: i32) -> MonitorStatus {
        for _ in 0..duration_ms / TICK_MS {
            self.tick(bank_mv, bank_ma);
        }
        self.last
    }

    /// Runs until `until` holds (at most `limit_ms`); returns the status where it first held.
    fn run_until(
        &mut self,
        limit_ms: u64,
        bank_mv: u32,
        bank_ma: i32,
        until: impl Fn(&MonitorStatus) -> bool,
    ) -> Option<MonitorStatus> {
        for _ in 0..limit_ms / TICK_MS {
            let status = self.tick(bank_mv, bank_ma);
            if until(&status) {
                return Some(status);
            }
        }
        None
    }
}

fn soc(status: &MonitorStatus) -> u16 {
    status.soc_permille.expect("soc known")
}

/// MON-1: discharge at C/20 (Peukert factor 1) counts the drawn charge 1:1 into consumed Ah and SoC.
#[test]
fn mon_1_discharge_counts_consumed_ah_and_soc() {
    let mut rig = Rig::at_soc(1000);
    let status = rig.run(HOUR_MS, REST_MV, -5_000);
    assert!((4_999..=5_001).contains(&status.consumed_mah), "{status:?}");
    assert_eq!(soc(&status), 950);
}

/// MON-1: charging counts with a charge efficiency of 99 %, in SoC and in consumed Ah.
#[test]
fn mon_1_charge_counts_at_99_percent_efficiency() {
    let mut rig = Rig::at_soc(500);
    rig.tick(REST_MV, 10_000);
    let before = rig.monitor.snapshot().used_nas;
    let status = rig.run(HOUR_MS, REST_MV, 10_000);
    let stored_nas = before - rig.monitor.snapshot().used_nas;
    // 10 A for 1 h = 10 Ah in, 9.9 Ah stored.
    assert!(
        (stored_nas - 9_900 * NAS_PER_MAH).abs() < NAS_PER_MAH,
        "{stored_nas}"
    );
    assert_eq!(soc(&status), 599);
    assert!(
        (40_099..=40_101).contains(&status.consumed_mah),
        "{status:?}"
    );
}

/// MON-1: Peukert exponent 1.05 relative to C/20: at 1 C the SoC falls 20^0.05 = 1.162 times
/// faster than the drawn charge, while consumed Ah stays the drawn charge.
#[test]
fn mon_1_peukert_makes_high_current_drain_soc_faster() {
    let mut rig = Rig::at_soc(1000);
    let status = rig.run(6 * MINUTE_MS, REST_MV, -100_000);
    // The first interval ramps from 0 A (trapezoid): 1.4 mAh less.
    assert!(
        (9_998..=10_001).contains(&status.consumed_mah),
        "{status:?}"
    );
    // 10 Ah × 1.1616 = 11.6 Ah effective: SoC 88.4 %, rounded down.
    assert_eq!(soc(&status), 883);
}

/// MON-1 (rev 2): at or below C/20 the count is not scaled: 10 Ah drawn at C/100 is 10 % of
/// the SoC, not the 9.23 % a Peukert factor (1/5)^0.05 would make it.
#[test]
fn mon_1_peukert_not_applied_below_20h_rate() {
    let mut rig = Rig::at_soc(1000);
    let status = rig.run(10 * HOUR_MS, REST_MV, -1_000);
    assert!((9_999..=10_001).contains(&status.consumed_mah));
    assert_eq!(soc(&status), 900);
}

/// MON-1 (rev 2): the Peukert approximation matches (I/I20)^0.05 within 1e-4 above C/20, and
/// is exactly 1 at and below it.
#[test]
fn mon_1_peukert_factor_matches_powf() {
    let i20_ma = f64::from(CAPACITY_MAH) / 20.0;
    for current_ma in [
        1i64,
        7,
        50,
        499,
        1_000,
        5_000,
        5_001,
        33_333,
        100_000,
        2_000_000,
        2_000_000_000,
    ] {
        let expected = (current_ma as f64 / i20_ma).powf(0.05).max(1.0);
        let got = f64::from(peukert_factor_q24(-current_ma, CAPACITY_MAH)) / 16_777_216.0;
        assert!(
            (got - expected).abs() < 1e-4,
            "{current_ma} mA: {got} vs {expected}"
        );
    }
    assert_eq!(
        peukert_factor_q24(-5_000, 0),
        1 << 24,
        "unknown capacity: no correction"
    );
    for at_or_below_c20 in [-5_000, -4_999, -100, 5_000] {
        assert_eq!(peukert_factor_q24(at_or_below_c20, CAPACITY_MAH), 1 << 24);
    }
}

/// MON-1: integration is exact: a day of 100 ms ticks at 1 mA gives exactly 24 mAh consumed.
#[test]
fn mon_1_integration_does_not_drift() {
    let mut rig = Rig::at_soc(1000);
    rig.tick(REST_MV, -1);
    let before = rig.monitor.snapshot().consumed_nas;
    let status = rig.run(24 * HOUR_MS, REST_MV, -1);
    assert_eq!(
        rig.monitor.snapshot().consumed_nas - before,
        24 * NAS_PER_MAH
    );
    assert_eq!(status.consumed_mah, 24);
}

/// MON-1: 50 batteries × 1000 Ah at 2 kA for a week neither overflows nor leaves 0..=100 %.
#[test]
fn mon_1_large_bank_long_run_stays_in_range() {
    let mut monitor = Monitor::new(None);
    let settings = Settings::default();
    let input = |bank_ma| MonitorInput {
        bank_mv: 13_200,
        bank_ma,
        capacity_mah: 50_000_000,
        cells_in_series: 4,
    };
    monitor.update(0, &input(0), &settings);
    monitor.set_soc(0, 1000).unwrap();
    let mut now_ms = 0;
    for hour in 0..24 * 7 {
        let current = if hour % 48 < 24 {
            -2_000_000
        } else {
            2_000_000
        };
        for _ in 0..60 {
            now_ms += MINUTE_MS;
            let status = monitor.update(now_ms, &input(current), &settings);
            let soc = status.soc_permille.unwrap();
            assert!(soc <= 1000);
        }
    }
}

/// MON-2: bank voltage ≥ charged voltage and current ≤ tail current for the detection time
/// synchronise to 100 %, consumed 0, last full charge now; once per charge.
#[test]
fn mon_2_synchronises_after_charged_detection_time() {
    let mut rig = Rig::new();
    rig.run(HOUR_MS, REST_MV, -10_000);
    assert_eq!(rig.last.soc_permille, None);
    // Charged voltage 4 × 3.50 V = 14.0 V; tail current 4 % of 100 Ah = 4 A.
    let mut synced_at = None;
    let start_ms = rig.now_ms;
    for _ in 0..(10 * MINUTE_MS / TICK_MS) {
        let at = rig.now_ms;
        let status = rig.tick(14_000, 3_900);
        if status.synchronised {
            assert!(synced_at.is_none(), "synchronised twice in one charge");
            synced_at = Some(at);
            assert_eq!(status.soc_permille, Some(1000));
            assert_eq!(status.consumed_mah, 0);
            assert_eq!(status.since_full_charge_ms, Some(0));
        }
    }
    assert_eq!(synced_at, Some(start_ms + 3 * MINUTE_MS));
    assert_eq!(
        rig.last.since_full_charge_ms,
        Some(10 * MINUTE_MS - 3 * MINUTE_MS - TICK_MS)
    );
    // The age the balancer judges by (BAL-2's 30 days) is the same.
    assert_eq!(
        rig.monitor.since_full_charge_ms(),
        rig.last.since_full_charge_ms
    );
}

/// MON-2: no synchronisation while the current is above the tail current, the voltage is below
/// the charged voltage, or the condition is interrupted before the detection time.
#[test]
fn mon_2_no_sync_unless_condition_holds_continuously() {
    let mut rig = Rig::new();
    assert!(rig
        .run_until(10 * MINUTE_MS, 14_200, 4_100, |s| s.synchronised)
        .is_none());
    assert!(rig
        .run_until(10 * MINUTE_MS, 13_990, 1_000, |s| s.synchronised)
        .is_none());
    assert!(rig
        .run_until(10 * MINUTE_MS, 14_200, -4_100, |s| s.synchronised)
        .is_none());
    for _ in 0..5 {
        assert!(rig
            .run_until(2 * MINUTE_MS + 50_000, 14_100, 1_000, |s| s.synchronised)
            .is_none());
        rig.tick(14_100, 6_000);
    }
    assert_eq!(rig.last.soc_permille, None);
    // Settings apply: a 1 min detection time syncs after 1 min.
    rig.settings.charged_detection_min = 1;
    let start_ms = rig.now_ms;
    rig.run_until(2 * MINUTE_MS, 14_100, 1_000, |s| s.synchronised)
        .expect("sync");
    assert_eq!(rig.now_ms - TICK_MS - start_ms, MINUTE_MS);
}

/// MON-2, MON-4: a manual SoC set while the charged condition already holds is synchronised
/// once the condition has held for the detection time after the set, as after any other
/// value: the set re-arms the once-per-charge synchronisation. Found by an earlier audit: a
/// set at float (after the charge had synchronised, or while its detection time ran) stayed
/// until the condition broke and held again, so a bank sitting full on a charger kept a wrong
/// SoC for hours.
#[test]
fn mon_2_mon_4_a_set_while_charged_is_synchronised_after_the_detection_time() {
    let mut rig = Rig::new();
    rig.run_until(10 * MINUTE_MS, 14_100, 1_000, |s| s.synchronised)
        .expect("first sync");
    // At float: synchronised once; then the user sets 80 %.
    rig.run(10 * MINUTE_MS, 14_100, 1_000);
    rig.set_soc(800).unwrap();
    let set_ms = rig.now_ms;
    let status = rig.tick(14_100, 1_000);
    assert_eq!(status.soc_permille, Some(800), "the set shows");
    let synced = rig.run_until(10 * MINUTE_MS, 14_100, 1_000, |s| s.synchronised);
    let synced_ms = rig.now_ms - TICK_MS;
    assert!(
        synced.is_some_and(|s| s.soc_permille == Some(1000) && s.consumed_mah == 0),
        "a set at float never synchronised: {:?}",
        rig.last
    );
    assert_eq!(
        synced_ms - set_ms,
        3 * MINUTE_MS,
        "the detection time after the set"
    );

    // While the detection time runs (1 min of it held): the set restarts it.
    let mut rig = Rig::new();
    rig.run(MINUTE_MS, 14_100, 1_000);
    rig.set_soc(500).unwrap();
    let set_ms = rig.now_ms;
    rig.run_until(10 * MINUTE_MS, 14_100, 1_000, |s| s.synchronised)
        .expect("sync after the set");
    assert_eq!(rig.now_ms - TICK_MS - set_ms, 3 * MINUTE_MS);
}

/// MON-3: defaults and ranges of the monitor settings.
#[test]
fn mon_3_defaults_drive_the_monitor() {
    let settings = Settings::default();
    assert_eq!(settings.charged_bank_mv(4), 14_000);
    assert_eq!(settings.charged_bank_mv(16), 56_000);
    assert_eq!(settings.tail_current_ma(100_000), 4_000);
    assert_eq!(settings.charged_detection_ms(), 3 * MINUTE_MS);
    assert_eq!(settings.low_soc_warning_permille(), Some(200));
    assert_eq!(settings.discharge_floor_permille(), Some(100));
    assert_eq!(settings.prealarm_cell_mv, 3_100);
}

/// MON-4: setting the SoC makes it known at that value; out of range or without a bank is refused.
#[test]
fn mon_4_set_soc_and_synchronise_manually() {
    let mut monitor = Monitor::new(None);
    assert_eq!(monitor.set_soc(0, 500), Err(MonitorError::NoBank));
    let mut rig = Rig::new();
    assert_eq!(
        rig.set_soc(1001),
        Err(MonitorError::SocOutOfRange { soc_permille: 1001 })
    );
    assert_eq!(
        rig.tick(REST_MV, 0).soc_permille,
        None,
        "refused set changed nothing"
    );
    rig.set_soc(425).unwrap();
    let status = rig.tick(REST_MV, 0);
    assert_eq!(status.soc_permille, Some(425));
    assert_eq!(status.consumed_mah, 57_500);
    rig.synchronise().unwrap();
    let status = rig.tick(REST_MV, 0);
    assert_eq!(status.soc_permille, Some(1000));
    assert_eq!(status.consumed_mah, 0);
    assert!(
        !status.synchronised,
        "a manual sync is not an automatic one (HIST-3)"
    );
    assert_eq!(status.since_full_charge_ms, None);
}

/// MON-4: a refused set says why, with the value (the simulator shows the message).
#[test]
fn mon_4_refused_set_explains_why() {
    let mut monitor = Monitor::new(None);
    assert_eq!(
        monitor.set_soc(0, 500).unwrap_err().to_string(),
        "no bank capacity known yet"
    );
    let mut rig = Rig::new();
    assert_eq!(
        rig.set_soc(1001).unwrap_err().to_string(),
        "soc 1001 permille out of range 0..=1000"
    );
}

/// MON-4: a manual set is not a full charge: the time since the last full charge runs on
/// through it, by exactly the time that passed.
#[test]
fn mon_4_a_set_keeps_the_time_since_full_charge() {
    let mut rig = Rig::new();
    rig.run_until(10 * MINUTE_MS, 14_100, 1_000, |s| s.synchronised)
        .expect("sync");
    let synced_ms = rig.now_ms - TICK_MS;
    rig.run(HOUR_MS, REST_MV, 0);
    rig.set_soc(500).unwrap();
    let status = rig.tick(REST_MV, 0);
    assert_eq!(status.soc_permille, Some(500));
    assert_eq!(
        status.since_full_charge_ms,
        Some(rig.now_ms - TICK_MS - synced_ms)
    );
}

/// MON-5: time remaining = (SoC − floor) × capacity ÷ current averaged over 3 min.
#[test]
fn mon_5_time_remaining_to_floor() {
    let mut rig = Rig::at_soc(600);
    let status = rig.run(3 * MINUTE_MS, REST_MV, -5_000);
    // 60 % − 0.25 Ah drawn − 10 % floor = 49.75 Ah at 5 A (C/20, no Peukert) = 597 min.
    assert_eq!(status.ttg_min, Some(597));
    // Floor off: down to 0 %: 59.75 Ah at 5 A = 716.99 min. The 3 min window now reaches back
    // into the bucket where the discharge started, counted pro rata with its first 0.1 s ramp
    // from 0 A, so the average may read 1 mA short of 5 A: 717.
    rig.settings.discharge_floor_pct = 0;
    let ttg = rig.tick(REST_MV, -5_000).ttg_min.unwrap();
    assert!((716..=717).contains(&ttg), "ttg {ttg}");
}

/// MON-5: the discharge current is Peukert-corrected: at 50 A (10 × C/20) by 10^0.05.
#[test]
fn mon_5_time_remaining_is_peukert_corrected() {
    let mut rig = Rig::at_soc(1000);
    let status = rig.run(3 * MINUTE_MS, REST_MV, -50_000);
    let remaining_ah = 100.0 * f64::from(soc(&status)) / 1000.0 - 10.0;
    let expected_min = remaining_ah / (50.0 * 10f64.powf(0.05)) * 60.0;
    let got = f64::from(status.ttg_min.unwrap());
    assert!((got - expected_min).abs() <= 1.0, "{got} vs {expected_min}");
    assert!(
        got < remaining_ah / 50.0 * 60.0 - 5.0,
        "shorter than without Peukert"
    );
}

/// MON-5: the current is averaged over 3 min: a step from 5 A to 10 A shows fully after 3 min.
#[test]
fn mon_5_current_averaged_over_3_minutes() {
    let mut rig = Rig::at_soc(900);
    rig.run(10 * MINUTE_MS, REST_MV, -5_000);
    let status = rig.run(MINUTE_MS, REST_MV, -10_000);
    let average = status.average_current_ma.unwrap();
    assert!(
        (-7_000..=-6_000).contains(&average),
        "one minute in: {average}"
    );
    let status = rig.run(3 * MINUTE_MS, REST_MV, -10_000);
    assert_eq!(status.average_current_ma, Some(-10_000));
    let expected =
        (100.0 * f64::from(soc(&status)) / 1000.0 - 10.0) / 10.0 * 60.0 / 2f64.powf(0.05);
    assert!((f64::from(status.ttg_min.unwrap()) - expected).abs() <= 1.0);
}

/// MON-5: the discharge current is averaged over 3 minutes exactly, at any moment: after 10 A,
/// then 20 A for t seconds, the average is (10 A × (180 − t) + 20 A × t) / 180 until the
/// 20 A has lasted 3 minutes (the 10 s buckets once made the window 170 to 180 s long).
#[test]
fn mon_5_the_current_is_averaged_over_exactly_3_minutes() {
    let mut rig = Rig::at_soc(900);
    rig.run(10 * MINUTE_MS, REST_MV, -10_000);
    let mut elapsed_ms = 0;
    for step_ms in [
        30_000, 30_000, 30_000, 30_000, 30_000, 20_000, 5_000, 4_000, 1_000, 60_000,
    ] {
        let status = rig.run(step_ms, REST_MV, -20_000);
        elapsed_ms += step_ms;
        let t = elapsed_ms.min(TTG_WINDOW_MS) as i64;
        let window = TTG_WINDOW_MS as i64;
        let expected = -(10_000 * (window - t) + 20_000 * t) / window;
        let average = i64::from(status.average_current_ma.unwrap());
        assert!(
            (average - expected).abs() <= 20,
            "{} s of 20 A after 10 A: average {average} mA, over 3 min {expected} mA",
            elapsed_ms / 1000
        );
    }
}

/// MON-5: after a gap in the bank data (more than 60 s without an update) the 3 min average
/// starts again from what is measured after it: the currents before the gap, and the gap itself,
/// which was not observed, do not bend the average and time remaining of the new load.
#[test]
fn mon_5_a_gap_in_the_data_restarts_the_average() {
    let mut rig = Rig::at_soc(900);
    rig.run(10 * MINUTE_MS, REST_MV, -20_000);
    rig.now_ms += 90_000;
    let status = rig.run(20_000, REST_MV, -2_000);
    assert_eq!(status.average_current_ma, Some(-2_000));
    let expected = (100.0 * f64::from(soc(&status)) / 1000.0 - 10.0) / 2.0 * 60.0;
    let got = f64::from(status.ttg_min.unwrap());
    assert!((got - expected).abs() <= 1.0, "{got} vs {expected}");
}

/// MON-5: not available while charging, idle (|I| < 0.1 % of capacity) or SoC unknown; 0 at
/// or below the floor.
#[test]
fn mon_5_time_remaining_not_available_when_charging_idle_or_unknown() {
    let mut unknown = Rig::new();
    assert_eq!(unknown.run(5 * MINUTE_MS, REST_MV, -5_000).ttg_min, None);

    let mut rig = Rig::at_soc(500);
    assert!(rig.run(5 * MINUTE_MS, REST_MV, -5_000).ttg_min.is_some());
    assert_eq!(rig.tick(REST_MV, 2_000).ttg_min, None, "charging now");
    assert_eq!(
        rig.run(5 * MINUTE_MS, REST_MV, 2_000).ttg_min,
        None,
        "charging"
    );
    assert_eq!(
        rig.run(5 * MINUTE_MS, REST_MV, -99).ttg_min,
        None,
        "idle below 100 mA"
    );
    assert!(rig.run(5 * MINUTE_MS, REST_MV, -101).ttg_min.is_some());

    let mut low = Rig::at_soc(100);
    assert_eq!(low.run(5 * MINUTE_MS, REST_MV, -5_000).ttg_min, Some(0));
}

/// MON-5: idle is |I| *below* 0.1 % of the capacity: a discharge of exactly 0.1 % (100 mA on
/// 100 Ah) has a time remaining (it was taken as idle), 99 mA is idle. Found by a spec audit.
#[test]
fn mon_5_a_discharge_of_exactly_0_1_percent_is_not_idle() {
    let mut rig = Rig::at_soc(500);
    let status = rig.run(5 * MINUTE_MS, REST_MV, -100);
    // 50 % − 10 % floor = 40 Ah, less the 8.3 mAh drawn, at 0.1 A (below C/20: no Peukert).
    let ttg = status.ttg_min.expect("100 mA on 100 Ah is a discharge");
    assert!((23_990..=24_000).contains(&ttg), "{ttg} min");
    assert_eq!(rig.tick(REST_MV, -99).ttg_min, None, "99 mA is idle");
    // A 12.5 Ah bank: 0.1 % is 12.5 mA, so 12 mA is idle and 13 mA is not.
    let mut small = Monitor::new(None);
    let settings = Settings::default();
    let input = |ma| MonitorInput {
        bank_mv: REST_MV,
        bank_ma: ma,
        capacity_mah: 12_500,
        cells_in_series: CELLS,
    };
    small.update(0, &input(0), &settings);
    small.set_soc(0, 500).unwrap();
    let mut now = 0;
    let mut last = |small: &mut Monitor, ma| {
        for _ in 0..3000 {
            now += TICK_MS;
            small.update(now, &input(ma), &settings);
        }
        small.status().ttg_min
    };
    assert_eq!(last(&mut small, -12), None, "12 mA is idle on 12.5 Ah");
    assert!(last(&mut small, -13).is_some(), "13 mA is not");
}

/// MON-5 (rev 2): idle and charging are judged on the present current, not the 3 min
/// average: time remaining goes the moment the load stops (it used to show, and rise, for
/// 3 min), and comes the moment a load starts.
#[test]
fn mon_5_idle_judged_on_the_present_current() {
    let mut rig = Rig::at_soc(600);
    assert!(rig.run(10 * MINUTE_MS, REST_MV, -5_000).ttg_min.is_some());
    assert_eq!(rig.tick(REST_MV, 0).ttg_min, None, "the load stopped");
    assert_eq!(rig.run(MINUTE_MS, REST_MV, 0).ttg_min, None);
    let status = rig.tick(REST_MV, 1_000);
    assert_eq!(status.ttg_min, None, "charging");
    // After 10 min of rest the average is 0: a new 5 A load shows at once, from the present
    // current until the average is a discharge.
    rig.run(10 * MINUTE_MS, REST_MV, 0);
    let status = rig.tick(REST_MV, -5_000);
    let expected = (100.0 * f64::from(soc(&status)) / 1000.0 - 10.0) / 5.0 * 60.0;
    let got = f64::from(status.ttg_min.expect("a load started"));
    assert!((got - expected).abs() <= 2.0, "{got} vs {expected}");
}

/// PROT-9, MON-6: the SoC is compared with the floor and the warning level unrounded: 10.05 %
/// (shown as 10.0 %) is above a 10 % floor; 10.00 % is at it.
#[test]
fn prot_9_mon_6_soc_compared_unrounded() {
    let mut rig = Rig::at_soc(101);
    // 0.05 % of 100 Ah is 180 As: 36 s at 5 A.
    let status = rig.run(36_000, REST_MV, -5_000);
    assert_eq!(soc(&status), 100, "shown rounded down");
    assert!(!status.below_floor, "10.05 % is above a 10 % floor");
    let status = rig.run(36_100, REST_MV, -5_000);
    assert!(status.below_floor, "at 10.00 %");
    // The warning level the same way: 20.05 % is above 20 %.
    let mut rig = Rig::at_soc(201);
    let status = rig.run(36_000, REST_MV, -5_000);
    assert_eq!(soc(&status), 200);
    assert!(!status.low_soc_warning);
}

/// MON-6: low-SoC warning at SoC ≤ level, cleared at ≥ level + 3 points; off when level 0.
#[test]
fn mon_6_low_soc_warning_with_3_point_release() {
    let mut rig = Rig::at_soc(210);
    assert!(!rig.last.low_soc_warning);
    let on = rig
        .run_until(HOUR_MS, REST_MV, -5_000, |s| s.low_soc_warning)
        .unwrap();
    // The first tick at or below 20.00 % exactly, shown rounded down.
    assert_eq!(soc(&on), 199);
    let off = rig
        .run_until(2 * HOUR_MS, REST_MV, 5_000, |s| !s.low_soc_warning)
        .unwrap();
    assert_eq!(soc(&off), 230);
    // Between the level and the release the warning keeps its state.
    rig.set_soc(215).unwrap();
    assert!(!rig.tick(REST_MV, 0).low_soc_warning);
    rig.settings.low_soc_warning_pct = 0;
    rig.set_soc(50).unwrap();
    assert!(!rig.tick(REST_MV, 0).low_soc_warning, "level 0 = off");
}

/// PROT-9: the floor latch sets at SoC ≤ floor and releases at ≥ floor + 3 points; floor 0
/// disables it.
#[test]
fn prot_9_floor_latch_releases_3_points_above_floor() {
    let mut rig = Rig::at_soc(110);
    let on = rig
        .run_until(HOUR_MS, REST_MV, -5_000, |s| s.below_floor)
        .unwrap();
    // The first tick at or below 10.00 % exactly, shown rounded down.
    assert_eq!(soc(&on), 99);
    let mut rig2 = Rig::at_soc(101);
    assert!(!rig2.last.below_floor);
    let off = rig
        .run_until(2 * HOUR_MS, REST_MV, 5_000, |s| !s.below_floor)
        .unwrap();
    assert_eq!(soc(&off), 130);
    rig.set_soc(50).unwrap();
    assert!(rig.tick(REST_MV, 0).below_floor);
    rig.settings.discharge_floor_pct = 0;
    rig.settings.low_soc_warning_pct = 0;
    assert!(!rig.tick(REST_MV, 0).below_floor, "floor 0 = off");
    rig2.settings.discharge_floor_pct = 20;
    assert!(
        rig2.tick(REST_MV, 0).below_floor,
        "raising the floor above the SoC latches"
    );
}

/// MON-7: unknown until the first sync or manual set; nothing SoC-driven acts meanwhile.
#[test]
fn mon_7_soc_unknown_until_sync_or_set() {
    let mut rig = Rig::new();
    let status = rig.run(2 * HOUR_MS, REST_MV, -50_000);
    assert_eq!(status.soc_permille, None);
    assert_eq!(status.soc_estimate_permille, None);
    assert_eq!(status.ttg_min, None);
    assert!(!status.low_soc_warning);
    assert!(!status.below_floor);
    assert_eq!(rig.monitor.knowledge(), SocKnowledge::Unknown);
}

/// MON-7: after a 30 min rest the open-circuit voltage gives an estimate, flagged as estimated,
/// which never drives the floor (PROT-9), the warning or time remaining.
#[test]
fn mon_7_rested_voltage_estimate_is_flagged_and_drives_nothing() {
    let mut rig = Rig::new();
    // 3.177 V per cell rested = 10 %. LiFePO4 relaxes over minutes to hours: 30 min of rest
    // (docs/soc-benchmark.md) before the voltage is read as open-circuit.
    let cell_low_mv = 4 * 3_177;
    let before = rig.run(30 * MINUTE_MS - TICK_MS, cell_low_mv, 0);
    assert_eq!(before.soc_estimate_permille, None);
    let status = rig.tick(cell_low_mv, 0);
    assert_eq!(status.soc_estimate_permille, Some(100), "at 30 min of rest");
    assert_eq!(rig.monitor.knowledge(), SocKnowledge::Estimated);
    let status = rig.run(MINUTE_MS, cell_low_mv, 0);
    assert_eq!(status.soc_estimate_permille, Some(100));
    assert_eq!(status.soc_permille, None);
    assert!(!status.below_floor && !status.low_soc_warning);
    let status = rig.run(10 * MINUTE_MS, cell_low_mv, -10_000);
    assert!(
        status.soc_estimate_permille.unwrap() < 100,
        "counted on from the estimate"
    );
    assert!(!status.below_floor && !status.low_soc_warning);
    assert_eq!(status.ttg_min, None);
    // A sync makes it known.
    rig.set_soc(800).unwrap();
    let status = rig.tick(REST_MV, 0);
    assert_eq!(status.soc_permille, Some(800));
    assert_eq!(rig.monitor.knowledge(), SocKnowledge::Known);
    assert_eq!(status.soc_estimate_permille, None);
}

/// MON-7: the 30 min of rest are timed from when the load stopped, however long the monitor
/// ran before: a voltage still relaxing from a load is not read as open-circuit.
#[test]
fn mon_7_the_rest_is_timed_from_when_the_load_stopped() {
    let mut rig = Rig::new();
    rig.run(HOUR_MS, REST_MV, -20_000);
    let stopped_ms = rig.now_ms;
    let estimated = rig
        .run_until(HOUR_MS, 4 * 3_177, 0, |s| s.soc_estimate_permille.is_some())
        .expect("an estimate after the rest");
    assert_eq!(estimated.soc_estimate_permille, Some(100));
    assert_eq!(rig.now_ms - TICK_MS - stopped_ms, 30 * MINUTE_MS);
}

/// MON-7, MON-5: the bank rests while its current is below 0.1 % of the capacity (MON-5's
/// idle): a standby draw of 50 mA on 100 Ah still gives an estimate after 30 min; a load of
/// exactly 0.1 % (100 mA), which MON-5 counts as a discharge, is not a rest.
#[test]
fn mon_7_rest_is_a_current_below_0_1_percent() {
    let mut rig = Rig::new();
    rig.run(HOUR_MS, REST_MV, -20_000);
    let standby = rig.run_until(HOUR_MS, 4 * 3_177, -50, |s| {
        s.soc_estimate_permille.is_some()
    });
    assert!(standby.is_some(), "50 mA on 100 Ah is a rest");

    let mut rig = Rig::new();
    rig.run(HOUR_MS, REST_MV, -20_000);
    let loaded = rig.run_until(HOUR_MS, 4 * 3_177, -100, |s| {
        s.soc_estimate_permille.is_some()
    });
    assert_eq!(loaded, None, "100 mA on 100 Ah is a discharge (MON-5)");
}

/// MON-7: the OCV table interpolates and clamps.
#[test]
fn mon_7_ocv_table() {
    assert_eq!(ocv_soc_permille(0), 0);
    assert_eq!(ocv_soc_permille(2_833), 0);
    assert_eq!(ocv_soc_permille(3_265), 500);
    assert_eq!(ocv_soc_permille(3_392), 1000);
    assert_eq!(ocv_soc_permille(4_000), 1000);
    let mut last = 0;
    for mv in 2_800..3_400 {
        let soc = ocv_soc_permille(mv);
        assert!(soc >= last);
        last = soc;
    }
}

/// MON-7, MON-8: a restored record continues known, with its latches.
#[test]
fn mon_8_restored_state_continues() {
    let mut rig = Rig::at_soc(100);
    rig.tick(REST_MV, -5_000);
    rig.run(10 * MINUTE_MS, REST_MV, 5_000);
    let state = rig.monitor.snapshot();
    let mut buf = [0u8; 64];
    let bytes = postcard::to_slice(&state, &mut buf).unwrap();
    let decoded: SocState = postcard::from_bytes(bytes).unwrap();
    assert_eq!(decoded, state);

    let mut restored = Rig::restored(Some(decoded));
    assert_eq!(restored.last.soc_permille, rig.last.soc_permille);
    assert_eq!(restored.last.consumed_mah, rig.last.consumed_mah);
    assert!(
        restored.last.below_floor,
        "a reboot does not release the floor latch"
    );
    assert!(!restored.last.persist_due);
    let status = restored.run(MINUTE_MS, REST_MV, -5_000);
    assert!(status.soc_permille.unwrap() < rig.last.soc_permille.unwrap());
}

/// MON-8, MON-6, PROT-9: a reboot restores the latches as they were: a warning or floor latch
/// that was off stays off when the SoC lies between the level and its release, so a reboot
/// neither raises the pre-alarm nor stops the discharge by itself.
#[test]
fn mon_8_a_restored_state_keeps_latches_that_were_off() {
    // 21.5 %: above the 20 % warning level, below its 23 % release.
    let rig = Rig::at_soc(215);
    assert!(!rig.last.low_soc_warning);
    let restored = Rig::restored(Some(rig.monitor.snapshot()));
    assert_eq!(restored.last.soc_permille, Some(215));
    assert!(!restored.monitor.status().low_soc_warning);
    // 11.5 %: warning on, above the 10 % floor, below its 13 % release.
    let rig = Rig::at_soc(115);
    assert!(rig.last.low_soc_warning && !rig.last.below_floor);
    let restored = Rig::restored(Some(rig.monitor.snapshot()));
    assert!(restored.last.low_soc_warning);
    assert!(!restored.last.below_floor, "a reboot stopped the discharge");
}

/// MON-8: persist at once when the SoC changed by 1 point, and not while nothing changes.
#[test]
fn mon_8_persist_due_every_point_of_soc() {
    let mut rig = Rig::at_soc(800);
    assert!(rig.last.persist_due, "a manual set is persisted at once");
    rig.monitor.mark_persisted();
    assert!(
        !rig.run(HOUR_MS, REST_MV, 0).persist_due,
        "nothing changes: no write"
    );
    // 10 A on 100 Ah: 1 point in under 6 min, before the 10 min rule.
    let due = rig
        .run_until(HOUR_MS, REST_MV, -10_000, |s| s.persist_due)
        .unwrap();
    assert_eq!(soc(&due), 790);
    rig.monitor.mark_persisted();
    let due = rig
        .run_until(HOUR_MS, REST_MV, -10_000, |s| s.persist_due)
        .unwrap();
    assert_eq!(soc(&due), 780);
}

/// MON-8: a slow change is persisted at least every 10 minutes.
#[test]
fn mon_8_persist_due_at_least_every_10_minutes_while_changing() {
    let mut rig = Rig::at_soc(800);
    rig.monitor.mark_persisted();
    let start_ms = rig.now_ms;
    // 200 mA: 0.2 point per 6 min.
    rig.run_until(HOUR_MS, REST_MV, -200, |s| s.persist_due)
        .unwrap();
    let waited_ms = rig.now_ms - TICK_MS - start_ms;
    assert!(
        (10 * MINUTE_MS..10 * MINUTE_MS + 2 * TICK_MS).contains(&waited_ms),
        "{waited_ms}"
    );
    assert!(rig.monitor.persist_due(rig.now_ms));
    rig.monitor.mark_persisted();
    assert!(!rig.monitor.persist_due(rig.now_ms));
}

/// MON-8: synchronisation, latches and the first knowledge are persisted at once.
#[test]
fn mon_8_persist_due_on_sync_and_latch_changes() {
    let mut rig = Rig::new();
    rig.monitor.mark_persisted();
    let synced = rig
        .run_until(10 * MINUTE_MS, 14_100, 1_000, |s| s.synchronised)
        .unwrap();
    assert!(synced.persist_due);
    rig.monitor.mark_persisted();
    rig.set_soc(101).unwrap();
    rig.tick(REST_MV, 0);
    rig.monitor.mark_persisted();
    let latched = rig
        .run_until(HOUR_MS, REST_MV, -5_000, |s| s.below_floor)
        .unwrap();
    assert!(latched.persist_due);
}

/// MON-8: at a full bank at rest only the time since the last full charge advances; the record
/// is written for it every 6 hours (docs/persistence.md, flash wear), not more often.
#[test]
fn mon_8_time_since_full_alone_is_persisted_every_6_hours() {
    let mut rig = Rig::new();
    rig.run_until(10 * MINUTE_MS, 14_100, 1_000, |s| s.synchronised)
        .expect("sync");
    rig.monitor.mark_persisted();
    let written = rig.last.since_full_charge_ms.unwrap();
    let due = rig
        .run_until(7 * HOUR_MS, REST_MV, 0, |s| s.persist_due)
        .expect("due within 7 h");
    assert_eq!(due.since_full_charge_ms.unwrap() - written, 6 * HOUR_MS);
    assert_eq!(
        (soc(&due), due.consumed_mah),
        (1000, 0),
        "nothing else changed"
    );
}

/// MON-8, MON-4, MON-6: a manual set is persisted at once even when it moves the SoC by less
/// than a point, and so is the low-SoC warning switching on while the SoC moved less than a
/// point since the last write.
#[test]
fn mon_8_a_small_manual_set_and_the_warning_are_persisted_at_once() {
    let mut rig = Rig::at_soc(800);
    rig.monitor.mark_persisted();
    rig.set_soc(805).unwrap();
    assert!(rig.tick(REST_MV, 0).persist_due, "a set of half a point");

    let mut rig = Rig::at_soc(201);
    rig.monitor.mark_persisted();
    let warned = rig
        .run_until(HOUR_MS, REST_MV, -5_000, |s| s.low_soc_warning)
        .expect("warning");
    assert!(soc(&warned) >= 199, "{warned:?}");
    assert!(warned.persist_due, "the warning switched on");
}

/// MON-8: changes below the record's resolution (0.1 % of SoC, 0.1 Ah consumed) are not
/// written: a 1000 Ah bank drawing 20 mA changes neither for hours, and is not written for it.
#[test]
fn mon_8_changes_below_the_resolution_are_not_written() {
    let mut monitor = Monitor::new(None);
    let settings = Settings::default();
    let input = MonitorInput {
        capacity_mah: 1_000_000,
        ..Rig::input(REST_MV, -20)
    };
    monitor.update(0, &input, &settings);
    monitor.set_soc(0, 800).unwrap();
    monitor.mark_persisted();
    let mut now_ms = 0;
    // The first drain takes the SoC below 80.0 % (rounded down): written 10 min later.
    loop {
        now_ms += TICK_MS;
        if monitor.update(now_ms, &input, &settings).persist_due {
            break;
        }
    }
    assert_eq!(now_ms, 10 * MINUTE_MS + TICK_MS);
    monitor.mark_persisted();
    for _ in 0..(HOUR_MS / TICK_MS) {
        now_ms += TICK_MS;
        let status = monitor.update(now_ms, &input, &settings);
        assert!(!status.persist_due, "{} mAh consumed", status.consumed_mah);
    }
}

/// MON-1, MON-2: a time going backwards counts as no time; a gap is counted only up to 60 s and
/// restarts the charged detection.
#[test]
fn mon_1_time_backwards_and_gaps() {
    let mut rig = Rig::at_soc(1000);
    rig.run(MINUTE_MS, REST_MV, -100_000);
    let input = Rig::input(REST_MV, -100_000);
    let consumed = |m: &Monitor| m.snapshot().consumed_nas;
    let t = rig.now_ms;
    rig.monitor.update(t, &input, &rig.settings);
    let before = consumed(&rig.monitor);
    rig.monitor.update(t - 50_000, &input, &rig.settings);
    assert_eq!(consumed(&rig.monitor), before, "older time: no time passed");
    rig.monitor.update(t + HOUR_MS, &input, &rig.settings);
    assert_eq!(
        consumed(&rig.monitor) - before,
        100_000 * 60_000 * 1_000,
        "capped at 60 s"
    );

    let mut rig = Rig::new();
    rig.run(2 * MINUTE_MS, 14_100, 1_000);
    rig.now_ms += 5 * MINUTE_MS;
    assert!(
        !rig.tick(14_100, 1_000).synchronised,
        "a gap restarts the detection time"
    );
    assert!(rig
        .run_until(3 * MINUTE_MS + TICK_MS, 14_100, 1_000, |s| s.synchronised)
        .is_some());
}

/// MON-2: an interval of exactly 60 s between updates is counted, not a gap (a gap is longer):
/// the charged detection time runs on through it.
#[test]
fn mon_2_an_interval_of_60_s_is_not_a_gap() {
    let mut rig = Rig::new();
    let start_ms = rig.now_ms;
    rig.run(MINUTE_MS, 14_100, 1_000);
    // The next update comes exactly 60 s after the last one.
    rig.now_ms += MINUTE_MS - TICK_MS;
    assert!(!rig.tick(14_100, 1_000).synchronised);
    let synced = rig.run_until(2 * MINUTE_MS, 14_100, 1_000, |s| s.synchronised);
    assert!(synced.is_some(), "the detection time restarted");
    assert_eq!(rig.now_ms - TICK_MS - start_ms, 3 * MINUTE_MS);
}

/// MON-1: while the bank's capacity is not known (0) nothing is counted and the SoC is kept;
/// when it is known again the count continues from the same SoC.
#[test]
fn mon_1_an_unknown_capacity_counts_nothing_and_keeps_the_soc() {
    let mut rig = Rig::at_soc(600);
    let unknown = MonitorInput {
        capacity_mah: 0,
        ..Rig::input(REST_MV, -50_000)
    };
    for _ in 0..600 {
        rig.now_ms += TICK_MS;
        rig.monitor.update(rig.now_ms, &unknown, &rig.settings);
    }
    assert_eq!(rig.monitor.status().soc_permille, Some(600));
    assert_eq!(rig.monitor.status().consumed_mah, 40_000);
    let status = rig.tick(REST_MV, 0);
    assert_eq!(status.soc_permille, Some(600));
    assert_eq!(status.consumed_mah, 40_000);
}

/// MON-2, MON-7: while the bank's capacity is not known there is no synchronisation, even at
/// the charged voltage with no current for longer than the detection time: the SoC stays
/// unknown.
#[test]
fn mon_2_no_synchronisation_while_the_capacity_is_unknown() {
    let mut monitor = Monitor::new(None);
    let settings = Settings::default();
    let unknown = MonitorInput {
        capacity_mah: 0,
        ..Rig::input(14_100, 0)
    };
    let mut now_ms = 0;
    for _ in 0..(10 * MINUTE_MS / TICK_MS) {
        assert!(!monitor.update(now_ms, &unknown, &settings).synchronised);
        now_ms += TICK_MS;
    }
    let status = monitor.update(now_ms, &Rig::input(14_100, 0), &settings);
    assert_eq!(status.soc_permille, None);
    assert!(!status.synchronised);
}

/// MON-2, BANK-4: steps without bank data restart the charged detection time: the condition
/// was not observed, so it holds continuously only from when the data returns.
#[test]
fn mon_2_missing_bank_data_restarts_the_detection_time() {
    let mut rig = Rig::new();
    rig.run(2 * MINUTE_MS, 14_100, 1_000);
    // 30 s without data (shorter than a gap).
    for _ in 0..300 {
        rig.monitor.data_missing();
        rig.now_ms += TICK_MS;
    }
    let back_ms = rig.now_ms;
    rig.run_until(5 * MINUTE_MS, 14_100, 1_000, |s| s.synchronised)
        .expect("sync");
    assert_eq!(rig.now_ms - TICK_MS - back_ms, 3 * MINUTE_MS);
}

/// MON-2: a bank whose cells in series are not known (0) has no charged voltage, so it is
/// never taken as charged, whatever its voltage and however small the current.
#[test]
fn mon_2_no_synchronisation_without_cells_in_series() {
    let mut rig = Rig::new();
    let no_cells = MonitorInput {
        cells_in_series: 0,
        ..Rig::input(REST_MV, 0)
    };
    for _ in 0..(10 * MINUTE_MS / TICK_MS) {
        rig.now_ms += TICK_MS;
        let status = rig.monitor.update(rig.now_ms, &no_cells, &rig.settings);
        assert!(!status.synchronised);
    }
    assert_eq!(rig.monitor.status().soc_permille, None);
}

/// MON-7: while the bank's capacity is not known nothing is estimated either: the rest that
/// makes an estimate is timed from when the capacity is known.
#[test]
fn mon_7_no_estimate_while_the_capacity_is_unknown() {
    let mut monitor = Monitor::new(None);
    let settings = Settings::default();
    let unknown = MonitorInput {
        capacity_mah: 0,
        ..Rig::input(REST_MV, 0)
    };
    let mut now_ms = 0;
    for _ in 0..(40 * MINUTE_MS / TICK_MS) {
        monitor.update(now_ms, &unknown, &settings);
        now_ms += TICK_MS;
    }
    let status = monitor.update(now_ms, &Rig::input(REST_MV, 0), &settings);
    assert_eq!(status.soc_estimate_permille, None);
    assert_eq!(monitor.knowledge(), SocKnowledge::Unknown);
}

/// MON-1: the count stays between empty and full: charge beyond full is not kept as a reserve
/// that a discharge uses up before the SoC moves, a discharge beyond empty is not a debt that
/// a charge pays off before the SoC moves, and consumed Ah never goes below 0.
#[test]
fn mon_1_the_count_stays_between_empty_and_full() {
    // 10 Ah charged at 100 %, then 5 Ah drawn: 95 %, 5 Ah consumed.
    let mut rig = Rig::at_soc(1000);
    rig.run(HOUR_MS, REST_MV, 10_000);
    let status = rig.run(HOUR_MS, REST_MV, -5_000);
    assert_eq!(soc(&status), 950);
    assert!((4_999..=5_001).contains(&status.consumed_mah), "{status:?}");

    // 5 Ah drawn beyond empty, then 1 Ah charged (0.99 Ah stored): 0.9 %, not 0.
    let mut rig = Rig::at_soc(50);
    rig.run(HOUR_MS, REST_MV, -10_000);
    let status = rig.run(6 * MINUTE_MS, REST_MV, 10_000);
    assert_eq!(soc(&status), 9);

    // 10 Ah drawn at 1 C (11.6 Ah of SoC with Peukert), 10.5 Ah charged (10.4 Ah stored: the
    // SoC is not full yet, the drawn charge is back): consumed Ah 0, not -0.4 Ah; 5 Ah drawn
    // then show as 5 Ah.
    let mut rig = Rig::at_soc(1000);
    rig.run(6 * MINUTE_MS, REST_MV, -100_000);
    let status = rig.run(63 * MINUTE_MS, REST_MV, 10_000);
    assert!(
        soc(&status) < 1000 && status.consumed_mah == 0,
        "{status:?}"
    );
    let status = rig.run(HOUR_MS, REST_MV, -5_000);
    assert!((4_999..=5_001).contains(&status.consumed_mah), "{status:?}");
}

/// MON-1: a change of bank capacity (battery added) keeps the SoC and scales consumed Ah.
#[test]
fn mon_1_capacity_change_keeps_soc() {
    let mut rig = Rig::at_soc(600);
    let settings = Settings::default();
    let doubled = MonitorInput {
        capacity_mah: 2 * CAPACITY_MAH,
        ..Rig::input(REST_MV, 0)
    };
    let status = rig.monitor.update(rig.now_ms, &doubled, &settings);
    assert_eq!(status.soc_permille, Some(600));
    assert_eq!(status.consumed_mah, 80_000);
}
