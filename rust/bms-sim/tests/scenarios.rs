//! Every shipped scenario, run against the real core, with its key events asserted. Long
//! scenarios run shortened (`RunOptions::until`) to the part that shows their point.

use bms_core::bms::Output;
use bms_core::codes::Code;
use bms_core::protection::Reason;
use bms_sim::engine::{Engine, LoggedEvent, RunOptions, RunResult, Sample, What};
use bms_sim::scenario;
use std::path::PathBuf;
use std::time::Duration;

struct Outcome {
    result: RunResult,
    topology: Option<bms_core::bank::Topology>,
}

fn run(file: &str, until: Option<Duration>) -> Outcome {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../scenarios")
        .join(file);
    let sc = scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let options = RunOptions {
        until,
        sample_every: Some(Duration::from_secs(30)),
        ..RunOptions::default()
    };
    let mut engine = Engine::new(&sc, &options).unwrap();
    engine.run(&mut |_| {});
    let topology = engine.bms().bank().topology();
    Outcome {
        result: engine.finish(),
        topology,
    }
}

fn hours(h: f64) -> Duration {
    Duration::from_secs_f64(h * 3600.0)
}

fn s(t_ms: u64) -> f64 {
    t_ms as f64 / 1000.0
}

/// Output changes of `output` to `high`, with their reasons.
fn changes(r: &RunResult, output: Output, high: bool) -> Vec<(u64, bms_core::protection::Reasons)> {
    r.events
        .iter()
        .filter_map(|e| match e.what {
            What::Output {
                output: o,
                high: h,
                reasons,
            } if o == output && h == high => Some((e.t_ms, reasons)),
            _ => None,
        })
        .collect()
}

fn raised(r: &RunResult, code: Code) -> Vec<u64> {
    r.events
        .iter()
        .filter(|e| e.what == What::CodeRaised(code))
        .map(|e| e.t_ms)
        .collect()
}

fn syncs(r: &RunResult) -> Vec<u64> {
    r.events
        .iter()
        .filter(|e: &&LoggedEvent| matches!(&e.what, What::Bms(t) if t.contains("synchronised")))
        .map(|e| e.t_ms)
        .collect()
}

/// The sample closest after `t_s`.
fn sample_after(r: &RunResult, t_s: f64) -> &Sample {
    r.samples.iter().find(|x| x.t_s >= t_s).unwrap()
}

/// MON-2, MON-7: the new BMS does not know its SoC until the sun first charges the battery
/// full; then it synchronises and follows the true SoC closely.
/// PROT-4: at the top of the first charge a cell runs ahead; ATC opens on cell over-voltage and
/// no cell ever passes 3.8 V, while the battery's balancer pulls the cells together.
#[test]
fn solar_camper_week_synchronises_and_protects_the_top_of_charge() {
    let o = run("solar-camper-week.toml", Some(hours(24.0)));
    let r = &o.result;
    let first_sync = *syncs(r)
        .first()
        .expect("the sun charges the battery full on day 1");
    assert!(s(first_sync) < 24.0 * 3600.0);
    for x in &r.samples {
        if x.t_s < s(first_sync) - 60.0 {
            assert_eq!(
                x.soc_bms_pct, None,
                "SoC unknown before the first sync (t = {})",
                x.t_s
            );
        } else if x.t_s > s(first_sync) + 60.0 {
            let soc = x.soc_bms_pct.expect("known after the sync");
            assert!(
                (soc - x.soc_true_pct).abs() < 2.5,
                "t = {}: {soc} vs {}",
                x.t_s,
                x.soc_true_pct
            );
        }
    }
    assert!(
        changes(r, Output::Atd, false).is_empty(),
        "loads never disconnected"
    );
    for (t, reasons) in changes(r, Output::Atc, false) {
        assert!(
            reasons.contains(Reason::CellOvervoltage),
            "ATC at {t} ms: {reasons}"
        );
    }
    assert_eq!(r.totals.overvolt_damage_s, 0.0);
    assert!(r.totals.cell_max_v < 3.8);
    assert!(r.totals.charge_in_ah > 30.0);
}

/// BANK-1: the BMS discovers 4 batteries, 2 in series and 2 in parallel, by itself; the bank
/// runs the day with both outputs high and no error after the first report round.
#[test]
fn bank_24v_2x2_is_discovered_and_runs_without_alarms() {
    let o = run("bank-24v-2x2.toml", Some(hours(10.0)));
    let t = o.topology.expect("topology known");
    assert_eq!((t.batteries, t.series, t.parallel), (4, 2, 2));
    assert_eq!(t.capacity_dah, 4000);
    let r = &o.result;
    for x in r.samples.iter().filter(|x| x.t_s >= 5.0) {
        assert!(
            x.atd && x.atc,
            "t = {}: {} / {}",
            x.t_s,
            x.atd_reasons,
            x.atc_reasons
        );
        assert!(!x.codes.contains(Code::ConfigurationError), "t = {}", x.t_s);
    }
    // Loads of 1.8 kW at 24 V draw through both strings.
    assert!(r.samples.iter().any(|x| x.load_a > 70.0));
    assert!((22.0..27.0).contains(&r.samples[10].bank_v));
}

/// MON-1, MON-7: without a full charge the counted SoC is never synchronised and drifts from
/// the true SoC. PROT-5: ATC is free-floating on cold nights and high on mild days. PROT-2,
/// PROT-3: in the cold the battery gives less than the counted SoC says, and the cell voltage
/// protection disconnects the loads, with the pre-alarm first, before any cell is damaged.
#[test]
fn winter_weeks_drift_without_sync_and_cells_protect_the_battery() {
    let o = run("winter-weeks.toml", Some(hours(94.0)));
    let r = &o.result;
    assert!(syncs(r).is_empty(), "no full charge, no synchronisation");
    assert!(
        r.samples.iter().all(|x| x.soc_bms_pct.is_some()),
        "restored SoC stays known"
    );
    let err = |t_h: f64| {
        let x = sample_after(r, t_h * 3600.0);
        (x.soc_bms_pct.unwrap() - x.soc_true_pct).abs()
    };
    assert!(err(12.0) < 2.0, "{}", err(12.0));
    // MON-1 rev 2: no Peukert below C/20, so the drift is the offset's and the charge
    // efficiency's alone (they partly cancel).
    assert!(
        err(90.0) > err(12.0) + 1.5,
        "drift: {} then {}",
        err(12.0),
        err(90.0)
    );
    let cold_nights = changes(r, Output::Atc, false);
    assert!(cold_nights.len() >= 3);
    for (t, reasons) in &cold_nights {
        assert!(reasons.contains(Reason::LowTemperature), "{t}: {reasons}");
        // The core reads a noisy sensor (σ 0.1 °C) without debounce: allow 0.6 °C.
        assert!(sample_after(r, s(*t)).temp_c < 5.6);
    }
    assert!(
        changes(r, Output::Atc, true).len() >= 3,
        "ATC back on mild days"
    );
    let (atd_off, reasons) = changes(r, Output::Atd, false)[0];
    assert!(reasons.contains(Reason::CellUndervoltage), "{reasons}");
    let prealarm_on = changes(r, Output::Prealarm, true);
    assert!(prealarm_on.iter().any(|(t, _)| *t + 30_000 <= atd_off));
    assert!(!raised(r, Code::LowSocWarning).is_empty());
    assert_eq!(r.totals.undervolt_damage_s, 0.0);
}

/// PROT-5: the charger stays off while the battery is below 5 °C and starts only once it has
/// warmed to 7 °C; PROT-7: the battery's own flag blocks charging below 0 °C as well.
#[test]
fn cold_morning_keeps_the_charger_off_until_the_battery_is_warm() {
    let o = run("cold-morning.toml", None);
    let r = &o.result;
    let atc_on = changes(r, Output::Atc, true);
    let (t_on, _) = *atc_on.first().expect("ATC comes on once warm");
    for x in r.samples.iter().filter(|x| x.t_s > 5.0 && x.t_s < s(t_on)) {
        assert!(!x.atc);
        assert!(
            x.atc_reasons.contains(Reason::LowTemperature),
            "t = {}: {}",
            x.t_s,
            x.atc_reasons
        );
        assert_eq!(x.charge_a, 0.0, "t = {}", x.t_s);
    }
    assert!(r
        .samples
        .iter()
        .any(|x| x.atc_reasons.contains(Reason::BatteryChargeNotAllowed)));
    let at_on = sample_after(r, s(t_on));
    // The core reads a noisy sensor (σ 0.1 °C) without debounce: allow 0.6 °C.
    assert!(at_on.temp_c >= 6.4, "ATC on at {} °C", at_on.temp_c);
    assert!(r
        .samples
        .iter()
        .filter(|x| x.t_s < 1.5 * 3600.0)
        .all(|x| x.temp_c < 5.0));
    assert!(
        r.samples
            .iter()
            .any(|x| x.t_s > s(t_on) && x.charge_a > 25.0),
        "the charger works"
    );
    assert!(r.totals.charge_in_ah > 30.0);
}

/// PROT-3: the pre-alarm comes when a cell falls below 3.10 V; PROT-2: ATD opens on cell
/// under-voltage only after the pre-alarm has been active 30 s, the ATD loads stop (a direct
/// load keeps drawing), no cell reaches 2.5 V, and ATD returns only when every cell is back at
/// 3.20 V after the generator starts. PROT-3 (rev 2): the pre-alarm output is released 60 s
/// after ATD opened, not held for the hours until the generator starts.
#[test]
fn deep_discharge_prealarm_load_disconnect_and_recovery() {
    let o = run("deep-discharge.toml", None);
    let r = &o.result;
    let (pre_on, pre_reasons) = changes(r, Output::Prealarm, true)[0];
    assert!(pre_reasons.contains(Reason::PrealarmLevel), "{pre_reasons}");
    let (atd_off, atd_reasons) = changes(r, Output::Atd, false)[0];
    assert!(
        atd_reasons.contains(Reason::CellUndervoltage),
        "{atd_reasons}"
    );
    assert!(
        atd_off >= pre_on + 30_000,
        "pre-alarm {pre_on} ms, ATD {atd_off} ms"
    );
    assert!(sample_after(r, s(pre_on) - 30.0).cell_min_v < 3.12);
    let before = r
        .samples
        .iter()
        .rev()
        .find(|x| x.t_s <= s(atd_off))
        .unwrap();
    assert!(before.cell_min_v < 2.85, "{}", before.cell_min_v);
    for x in r
        .samples
        .iter()
        .filter(|x| x.t_s > s(atd_off) + 1.0 && x.t_s < 10.0 * 3600.0)
    {
        assert!(!x.atd);
        assert!(
            (x.load_a - 0.03).abs() < 1e-9,
            "only the alarm system draws: {}",
            x.load_a
        );
    }
    let (atd_on, _) = *changes(r, Output::Atd, true).last().unwrap();
    assert!(
        s(atd_on) > 10.0 * 3600.0,
        "back only after the generator started"
    );
    let pre_off = changes(r, Output::Prealarm, false);
    let (released, why) = pre_off[0];
    assert_eq!(released, atd_off + 60_000, "released 60 s after ATD opened");
    assert!(why.contains(Reason::PrealarmReleased), "{why}");
    assert!(r
        .samples
        .iter()
        .filter(|x| x.t_s > s(released) + 1.0)
        .all(|x| !x.prealarm));
    assert!(
        raised(r, Code::CellUndervoltage).len() == 1,
        "the alarm itself stays"
    );
    let at_return = r.samples.iter().rev().find(|x| x.t_s <= s(atd_on)).unwrap();
    assert!(at_return.cell_min_v >= 3.19, "{}", at_return.cell_min_v);
    assert_eq!(r.totals.undervolt_damage_s, 0.0);
    assert!(r.totals.cell_min_v > 2.7);
}

/// BANK-4: 5 s without a valid report from one battery and ATD and ATC go free-floating with
/// "battery communication lost"; they return when it reports again. Line noise on the bus
/// costs a frame, not the outputs.
#[test]
fn cable_unplugged_opens_both_outputs_until_replugged() {
    let o = run("cable-unplugged.toml", None);
    let r = &o.result;
    let unplug_ms = 30 * 60_000;
    let replug_ms = 50 * 60_000;
    for output in [Output::Atd, Output::Atc] {
        let off = changes(r, output, false);
        assert_eq!(off.len(), 1, "{output:?}");
        let (t, reasons) = off[0];
        assert!(reasons.contains(Reason::BatteryLost), "{reasons}");
        assert!(
            t > unplug_ms + 3_900 && t <= unplug_ms + 6_100,
            "{output:?} off at {t} ms"
        );
        let t_on = changes(r, output, true)
            .into_iter()
            .map(|c| c.0)
            .find(|&t| t > unplug_ms)
            .unwrap();
        assert!(
            t_on >= replug_ms && t_on <= replug_ms + 2_000,
            "{output:?} on at {t_on} ms"
        );
    }
    assert!(raised(r, Code::BatteryLost).len() == 1);
    for x in r
        .samples
        .iter()
        .filter(|x| x.t_s > 30.0 * 60.0 + 7.0 && x.t_s < 50.0 * 60.0)
    {
        assert!(
            !x.atd && !x.atc && x.load_a == 0.0 && x.charge_a == 0.0,
            "t = {}",
            x.t_s
        );
    }
    assert!(r.totals.frames_dropped >= 1, "the noise hit a frame");
    assert!(r
        .samples
        .iter()
        .filter(|x| x.t_s > 51.0 * 60.0 && x.t_s < 90.0 * 60.0)
        .all(|x| x.atd && x.atc));
}

/// PROT-8: remote OFF opens ATD and ATC and keeps the pre-alarm free-floating; remote ON
/// brings them back. PROT-12: the BMS ticks slower while the remote is OFF.
#[test]
fn remote_switch_turns_outputs_off_and_on() {
    let o = run("remote-switch.toml", None);
    let r = &o.result;
    for output in [Output::Atd, Output::Atc] {
        let (off, reasons) = changes(r, output, false)[0];
        assert!(reasons.contains(Reason::RemoteOff), "{reasons}");
        assert!((3_600_000..=3_601_000).contains(&off), "{off}");
        let (on, _) = *changes(r, output, true).last().unwrap();
        assert!(
            (8 * 3_600_000..=8 * 3_600_000 + 1_000).contains(&on),
            "{on}"
        );
    }
    assert!(changes(r, Output::Prealarm, true).is_empty());
    for x in r
        .samples
        .iter()
        .filter(|x| x.t_s > 3601.0 && x.t_s < 8.0 * 3600.0)
    {
        assert!(
            (x.load_a - 0.02).abs() < 1e-9 && x.charge_a == 0.0,
            "t = {}",
            x.t_s
        );
    }
    // 12 h at 10 ticks/s would be 432 000 ticks; 7 h of it in low power.
    assert!(r.totals.ticks < 300_000, "{}", r.totals.ticks);
}

/// PROT-10: during an update ATC is free-floating and ATD unchanged; a failed or aborted
/// update opens ATD 120 s later unless a new attempt has started; a completed update brings
/// everything back.
#[test]
fn firmware_update_failure_opens_atd_120s_later_unless_retried() {
    let o = run("firmware-update-fails.toml", None);
    let r = &o.result;
    let min = 60_000;
    let near = |t: u64, at: u64| t >= at && t <= at + 1_000;
    let atc_off: Vec<u64> = changes(r, Output::Atc, false).iter().map(|c| c.0).collect();
    assert_eq!(
        atc_off,
        vec![30 * min, 41 * min, 80 * min, 120 * min, 150 * min]
    );
    for (_, reasons) in changes(r, Output::Atc, false) {
        assert!(reasons.contains(Reason::FirmwareUpdate), "{reasons}");
    }
    let atd_off = changes(r, Output::Atd, false);
    assert_eq!(atd_off.len(), 2, "the retry within 120 s kept the loads on");
    for (_, reasons) in &atd_off {
        assert!(reasons.contains(Reason::FirmwareUpdateFailed), "{reasons}");
    }
    assert!(
        near(atd_off[0].0, 52 * min),
        "ATD off at {} ms",
        atd_off[0].0
    );
    // DFU-1: the stalled upload (last chunk within the second before 130 min) is aborted 2 min
    // later, and the loads go off PROT-10's 120 s after that.
    let atc_on: Vec<u64> = changes(r, Output::Atc, true).iter().map(|c| c.0).collect();
    assert!(
        atc_on.iter().any(|&t| near(t, 132 * min - 1_000)),
        "charging back after the stall: {atc_on:?}"
    );
    assert!(
        near(atd_off[1].0, 134 * min - 1_000),
        "ATD off at {} ms",
        atd_off[1].0
    );
    let (atd_on, _) = *changes(r, Output::Atd, true).last().unwrap();
    assert!(near(atd_on, 155 * min), "ATD on at {atd_on} ms");
    assert!(r
        .samples
        .iter()
        .filter(|x| x.t_s > 5.0 && x.t_s < 52.0 * 60.0)
        .all(|x| x.atd));
    assert!(r
        .samples
        .iter()
        .filter(|x| x.t_s > 91.0 * 60.0 && x.t_s < 120.0 * 60.0 || x.t_s > 156.0 * 60.0)
        .all(|x| x.atd && x.atc));
}

/// MON-8: the BMS restarts 90 min in and restores its SoC from the store; PROT-1: after the
/// restart the outputs stay free-floating until both batteries have reported valid data.
#[test]
fn reboot_restores_the_soc_and_waits_for_valid_data() {
    let o = run("cable-unplugged.toml", None);
    let r = &o.result;
    let reboot_ms = 90 * 60_000;
    assert!(r.events.iter().any(|e| e.t_ms == reboot_ms
        && matches!(&e.what, What::Bms(t) if t.contains("records restored"))));
    let before = r
        .samples
        .iter()
        .rev()
        .find(|x| x.t_s < s(reboot_ms))
        .unwrap();
    let after = sample_after(r, s(reboot_ms) + 1.0);
    let (b, a) = (before.soc_bms_pct.unwrap(), after.soc_bms_pct.unwrap());
    assert!((a - b).abs() < 0.3, "SoC {b} before, {a} after the reboot");
    // The restarted core starts free-floating and reports going high once both batteries have
    // sent valid data: within a report round or two.
    let atd_back = changes(r, Output::Atd, true)
        .into_iter()
        .map(|c| c.0)
        .find(|&t| t > reboot_ms)
        .unwrap();
    assert!(
        atd_back > reboot_ms + 500 && atd_back <= reboot_ms + 3_000,
        "{atd_back}"
    );
    assert!(r
        .samples
        .iter()
        .filter(|x| x.t_s > s(reboot_ms) + 5.0)
        .all(|x| x.atd && x.atc));
}

/// PROT-2, MON-8: the deep discharge with the BMS rebooted at 3h30, 38 min after ATD opened
/// for under-voltage, the cells resting at 2.92 V. Found by a spec audit: the restarted BMS
/// switched the 12 A inverter back on at 03:30:02 (2.92 V is no trip) and opened ATD for
/// under-voltage again at 03:33:49. The latch is stored: ATD stays free-floating, with its
/// reason, and only the alarm system draws; the pre-alarm stays released.
#[test]
fn prot_2_mon_8_deep_discharge_rebooted_keeps_the_loads_off() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/deep-discharge.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let generator = "[[event]]\nat = \"10h\"";
    assert!(text.contains(generator));
    let text = text.replace(
        generator,
        &format!("[[event]]\nat = \"3h 30min\"\naction = \"reboot\"\n\n{generator}"),
    );
    let sc = scenario::parse(&path, &text).unwrap();
    let options = RunOptions {
        until: Some(hours(4.0)),
        sample_every: Some(Duration::from_secs(30)),
        ..RunOptions::default()
    };
    let mut engine = Engine::new(&sc, &options).unwrap();
    engine.run(&mut |_| {});
    let r = engine.finish();
    let reboot_ms = 210 * 60_000;
    assert!(r.events.iter().any(|e| e.t_ms == reboot_ms
        && matches!(&e.what, What::Bms(t) if t.contains("records restored"))));
    let (atd_off, reasons) = changes(&r, Output::Atd, false)[0];
    assert!(reasons.contains(Reason::CellUndervoltage), "{reasons}");
    assert!(atd_off < reboot_ms - 30 * 60_000, "{atd_off}");
    let on = changes(&r, Output::Atd, true);
    assert!(
        on.iter().all(|&(t, _)| t < atd_off),
        "ATD high again at {on:?} (opened at {atd_off})"
    );
    let after: Vec<&Sample> = r
        .samples
        .iter()
        .filter(|x| x.t_s > s(reboot_ms) + 1.0)
        .collect();
    assert!(after.len() > 50);
    for x in after {
        assert!(!x.atd && !x.prealarm, "{x:?}");
        assert!(x.atd_reasons.contains(Reason::CellUndervoltage), "{x:?}");
        assert!((x.load_a - 0.03).abs() < 1e-9, "{}", x.load_a);
        assert!(
            x.cell_min_v > 2.85 && x.cell_min_v < 3.2,
            "{}",
            x.cell_min_v
        );
    }
}

/// MON-4: the user sets the SoC by hand and later synchronises it to 100 %; both reach the
/// core through the scenario's events, and a manual set before the bank is known is refused.
#[test]
fn mon_4_manual_set_soc_and_synchronise() {
    let text = r#"
name = "manual actions"
duration = "20min"

[bank]
battery = "12.8V"
capacity_ah = 100
initial_soc_pct = 50

[[event]]
at = "0s"
action = "set_soc"
soc_pct = 10

[[event]]
at = "5min"
action = "set_soc"
soc_pct = 42.5

[[event]]
at = "10min"
action = "synchronise"
"#;
    let sc = scenario::parse(std::path::Path::new("inline.toml"), text).unwrap();
    let options = RunOptions {
        sample_every: Some(Duration::from_secs(60)),
        ..RunOptions::default()
    };
    let mut engine = Engine::new(&sc, &options).unwrap();
    engine.run(&mut |_| {});
    let r = engine.finish();
    let refused = r.events.iter().any(|e| {
        e.t_ms == 0 && matches!(&e.what, What::Scenario(t) if t.starts_with("set_soc") && t.contains("refused"))
    });
    assert!(refused, "no bank known at t = 0: {:?}", r.events);
    assert_eq!(sample_after(&r, 4.0 * 60.0).soc_bms_pct, None);
    assert_eq!(sample_after(&r, 6.0 * 60.0).soc_bms_pct, Some(42.5));
    assert_eq!(sample_after(&r, 11.0 * 60.0).soc_bms_pct, Some(100.0));
}

/// BANK-1, BANK-4 with packs that are asked (JBD): two 4-cell JBD packs join the bank as
/// 12.8 V batteries in series, run the outputs like bus batteries, and the one whose cable is
/// pulled is lost 5 s after its last answer (rounds are 1 s apart, so 4..6 s after the pull).
#[test]
fn bank_4_bank_24v_jbd_packs_join_and_a_silent_pack_is_lost_after_5_s() {
    let o = run("bank-24v-jbd.toml", None);
    let t = o.topology.expect("topology known");
    assert_eq!((t.batteries, t.series, t.parallel), (2, 2, 1));
    assert_eq!(t.model, bms_core::bus::BatteryModel::Lfp12V8);
    assert_eq!(t.capacity_dah, 1000);
    let r = &o.result;
    let unplug_ms = 30 * 60_000;
    let replug_ms = 40 * 60_000;
    for x in r.samples.iter().filter(|x| x.t_s >= 10.0 && x.t_s < 1800.0) {
        assert!(
            x.atd && x.atc,
            "t = {}: {} / {}",
            x.t_s,
            x.atd_reasons,
            x.atc_reasons
        );
    }
    for output in [Output::Atd, Output::Atc] {
        let off: Vec<_> = changes(r, output, false)
            .into_iter()
            .filter(|c| c.0 > 10_000)
            .collect();
        assert_eq!(off.len(), 1, "{output:?}");
        let (t, reasons) = off[0];
        assert!(reasons.contains(Reason::BatteryLost), "{reasons}");
        assert!(
            t >= unplug_ms + 4_000 && t <= unplug_ms + 6_100,
            "{output:?} off at {t} ms"
        );
        let t_on = changes(r, output, true)
            .into_iter()
            .map(|c| c.0)
            .find(|&t| t > unplug_ms)
            .unwrap();
        assert!(
            t_on >= replug_ms && t_on <= replug_ms + 3_000,
            "{output:?} on at {t_on} ms"
        );
    }
    assert_eq!(raised(r, Code::BatteryLost).len(), 1);
    assert!(r.totals.frames_good > 2 * 3000, "{}", r.totals.frames_good);
    assert_eq!(r.totals.frames_dropped, 0);
}

/// BANK-1, BANK-4 with packs on one RS485 line (JK-PB at 115200, Daly at 9600): they join as
/// the batteries their cell counts make, run the outputs, and the one whose cable is pulled is
/// lost 5 s after its last answer and back after it is plugged in again.
#[test]
fn bank_4_jk_and_daly_packs_on_rs485_join_and_a_silent_pack_is_lost_after_5_s() {
    for (file, batteries, model, capacity_dah) in [
        (
            "bank-48v-jk.toml",
            3,
            bms_core::bus::BatteryModel::Lfp51V2,
            3000,
        ),
        (
            "bank-12v-daly.toml",
            2,
            bms_core::bus::BatteryModel::Lfp12V8,
            4000,
        ),
    ] {
        let o = run(file, None);
        let t = o.topology.expect("topology known");
        assert_eq!(
            (t.batteries, t.series, t.parallel),
            (batteries, 1, batteries),
            "{file}"
        );
        assert_eq!(t.model, model, "{file}");
        assert_eq!(t.capacity_dah, capacity_dah, "{file}");
        let r = &o.result;
        let unplug_ms = 20 * 60_000;
        let replug_ms = 30 * 60_000;
        for x in r.samples.iter().filter(|x| x.t_s >= 10.0 && x.t_s < 1200.0) {
            assert!(
                x.atd && x.atc,
                "{file} t = {}: {} / {}",
                x.t_s,
                x.atd_reasons,
                x.atc_reasons
            );
        }
        for output in [Output::Atd, Output::Atc] {
            let off: Vec<_> = changes(r, output, false)
                .into_iter()
                .filter(|c| c.0 > 10_000)
                .collect();
            assert_eq!(off.len(), 1, "{file} {output:?}");
            let (t, reasons) = off[0];
            assert!(reasons.contains(Reason::BatteryLost), "{file} {reasons}");
            assert!(
                t >= unplug_ms + 4_000 && t <= unplug_ms + 6_100,
                "{file} {output:?} off at {t} ms"
            );
            let t_on = changes(r, output, true)
                .into_iter()
                .map(|c| c.0)
                .find(|&t| t > unplug_ms)
                .unwrap();
            assert!(
                t_on >= replug_ms && t_on <= replug_ms + 3_000,
                "{file} {output:?} on at {t_on} ms"
            );
        }
        assert_eq!(raised(r, Code::BatteryLost).len(), 1, "{file}");
        assert_eq!(r.totals.frames_dropped, 0, "{file}");
    }
}

/// Durations beyond what `Duration` arithmetic or u64 milliseconds hold (found by the scenario
/// fuzz target, issue 15): a load's `on_for` + `off_for` overflowed `Duration` (a panic), a
/// `sample_every` of 4e8 years overflowed the next sample time (a panic). They run: the load
/// is on for its whole `on_for`, the timeline has its first and last sample.
#[test]
fn durations_beyond_the_clock_run_without_a_panic() {
    let src = r#"
name = "huge durations"
duration = "10min"
sample_every = "400000000years"

[bank]
battery = "12.8V"
capacity_ah = 100
initial_soc_pct = 50

[[load]]
name = "fridge"
current_a = 20
via = "direct"
on_for = "580000000000years"
off_for = "580000000000years"

[[charger]]
name = "shore"
max_a = 10
absorption_time = "400000000years"
"#;
    let sc = scenario::parse(std::path::Path::new("huge.toml"), src).unwrap();
    for sample_every in [None, Some(Duration::MAX)] {
        let options = RunOptions {
            sample_every,
            ..RunOptions::default()
        };
        let mut engine = Engine::new(&sc, &options).unwrap();
        engine.run(&mut |_| {});
        assert_eq!(engine.now_ms(), 600_000);
        let r = engine.finish();
        assert_eq!(r.samples.len(), 2, "the first and the last sample");
        assert!(
            r.totals.charge_out_ah > 0.5,
            "the load was on: {:?}",
            r.totals
        );
    }
}
