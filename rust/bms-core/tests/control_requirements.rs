//! The control path against the spec: one test (or more) per BANK, PROT and LED requirement,
//! each a transition on a fresh rig, asserting on the returned decisions.

mod control_harness;

use bms_core::balancer::BalancerState;
use bms_core::bank::{ConfigError, ReportError};
use bms_core::bus::{BatteryModel, BatteryReport};
use bms_core::codes::Code;
use bms_core::retained::{Retained, WarmRestart};
use bms_core::settings::Settings;
use bms_core::{Bms, Config, DfuEvent, Event, Inputs, LedPattern, Output, Reason, Reasons};
use control_harness::{report, Remote, Rig};

/// BANK-1: batteries, cells, series, parallel, nominal voltage and capacity are discovered.
#[test]
fn bank_1_topology_discovered_automatically() {
    let mut rig = Rig::new(4, 2, BatteryModel::Lfp12V8);
    rig.run_for(3000);
    let t = rig.bms.bank().topology().expect("topology");
    assert_eq!(
        (t.batteries, t.cells_total, t.series, t.parallel),
        (4, 16, 2, 2)
    );
    assert_eq!(t.nominal_mv, 25_600);
    assert_eq!(t.capacity_dah, 2000, "two strings of 100 Ah");
    assert_eq!(t.cells_in_series(), 8);
    assert!(rig.last().atd && rig.last().atc);

    let mut rig = Rig::new(1, 1, BatteryModel::Lfp51V2);
    rig.run_for(3000);
    let t = rig.bms.bank().topology().unwrap();
    assert_eq!(
        (t.batteries, t.cells_total, t.series, t.parallel),
        (1, 16, 1, 1)
    );
    assert_eq!(t.nominal_mv, 51_200);

    // 4 in series of 12.8 V: a 48 V bank.
    let mut rig = Rig::new(4, 4, BatteryModel::Lfp12V8);
    rig.run_for(3000);
    let t = rig.bms.bank().topology().unwrap();
    assert_eq!((t.series, t.parallel, t.nominal_mv), (4, 1, 51_200));
    assert!(rig.last().atd);
}

fn assert_config_error(rig: &mut Rig, expected: ConfigError) {
    rig.run_for(3000);
    let d = rig.last();
    assert!(!d.atd && !d.atc, "config error must free-float ATD and ATC");
    assert!(d.atd_reasons.contains(Reason::ConfigurationError));
    assert!(d.atc_reasons.contains(Reason::ConfigurationError));
    assert!(d.codes.contains(Code::ConfigurationError));
    assert_eq!(rig.bms.bank().config_error(), Some(expected));
}

/// BANK-2: mixed models, unequal strings, too many batteries and unsupported bank voltages
/// are configuration errors: alarm, ATC and ATD free-floating.
#[test]
fn bank_2_configuration_errors_free_float_atc_and_atd() {
    let mut rig = Rig::new(2, 1, BatteryModel::Lfp12V8);
    rig.batteries[1].0 = report(2000, BatteryModel::Lfp25V6, 3300);
    assert_config_error(&mut rig, ConfigError::MixedModels);

    // 3 batteries on a 24 V bank: 2 in series does not divide 3.
    let mut rig = Rig::new(3, 2, BatteryModel::Lfp12V8);
    assert_config_error(
        &mut rig,
        ConfigError::UnequalStrings {
            batteries: 3,
            series: 2,
        },
    );

    // 3 × 12.8 V in series is 38.4 V: not a 12/24/48 V bank.
    let mut rig = Rig::new(3, 3, BatteryModel::Lfp12V8);
    assert_config_error(
        &mut rig,
        ConfigError::UnsupportedVoltage { nominal_mv: 38_400 },
    );

    // 2 × 25.6 V in series is 51.2 V: fine. 2 × 51.2 V in series is not.
    let mut rig = Rig::new(2, 2, BatteryModel::Lfp25V6);
    rig.run_for(3000);
    assert!(rig.last().atd && rig.bms.bank().config_error().is_none());
    let mut rig = Rig::new(2, 2, BatteryModel::Lfp51V2);
    assert_config_error(
        &mut rig,
        ConfigError::SupplyOutOfRange { supply_mv: 105_600 },
    );

    // 25 × 51.2 V is the limit; 26 is too many.
    let mut rig = Rig::new(25, 1, BatteryModel::Lfp51V2);
    rig.run_for(3000);
    assert!(rig.last().atd, "25 batteries of 51.2 V are allowed");
    let mut rig = Rig::new(26, 1, BatteryModel::Lfp51V2);
    assert_config_error(
        &mut rig,
        ConfigError::TooManyBatteries {
            batteries: 26,
            max: 25,
        },
    );

    // 50 × 12.8 V is the limit; a 51st does not fit the table and is still counted.
    let mut rig = Rig::new(50, 1, BatteryModel::Lfp12V8);
    rig.run_for(3000);
    assert!(rig.last().atd, "50 batteries of 12.8 V are allowed");
    rig.batteries
        .push((report(9999, BatteryModel::Lfp12V8, 3300), false));
    // A newcomer joins at its third valid report in a row (BATTERY_JOIN_REPORTS).
    rig.run_for(3000);
    let d = rig.last();
    assert!(!d.atd && !d.atc && d.atd_reasons.contains(Reason::ConfigurationError));
    // PROT-11: the reason reported is the configuration error, not a lack of data in general.
    assert_eq!(d.atd_reasons, Reasons::of(Reason::ConfigurationError));
    assert_eq!(d.atc_reasons, Reasons::of(Reason::ConfigurationError));
    assert_eq!(
        rig.bms.bank().config_error(),
        Some(ConfigError::TooManyBatteries {
            batteries: 51,
            max: 50
        })
    );
}

/// BANK-1/BANK-2/PROT-1: a 24 V bank of 2×2 batteries whose reports arrive one after the
/// other in the first second raises no configuration error while half discovered (1 or 3
/// batteries on 24 V look like unequal strings); the outputs stay free-floating until the
/// layout is judged, 1.5 s after the last battery appeared, and then switch on.
#[test]
fn bank_1_bank_2_prot_1_layout_judged_after_one_report_round() {
    let mut bms = Bms::new(Config::default());
    let batteries: std::vec::Vec<BatteryReport> = (0..4)
        .map(|i| report(1000 + i, BatteryModel::Lfp12V8, 3300))
        .collect();
    let inputs = Inputs {
        remote_h_mv: 13_200,
        remote_l_mv: 13_200,
        supply_mv: 26_400,
        app_connected: false,
    };
    let mut judged_at = None;
    let mut now_ms = 0;
    while now_ms <= 5000 {
        for (i, battery) in (0u64..).zip(&batteries) {
            // Battery i reports at i × 250 ms, then once a second.
            if now_ms >= i * 250 && (now_ms - i * 250) % 1000 == 0 {
                bms.handle_report(now_ms, battery).unwrap();
            }
        }
        let d = bms.step(now_ms, &inputs);
        assert!(
            !d.codes.contains(Code::ConfigurationError)
                && !d.atd_reasons.contains(Reason::ConfigurationError),
            "false configuration error at {now_ms} ms"
        );
        assert_eq!(bms.bank().config_error(), None, "at {now_ms} ms");
        if judged_at.is_none() && d.atd && d.atc {
            judged_at = Some(now_ms);
        }
        if judged_at.is_none() {
            assert!(
                !d.atd && !d.atc,
                "free-floating before the judgement ({now_ms} ms)"
            );
        }
        now_ms += 50;
    }
    // The last battery appeared at 750 ms; the layout settles 1.5 s later.
    assert_eq!(judged_at, Some(2250));
    let t = bms.bank().topology().unwrap();
    assert_eq!((t.batteries, t.series, t.parallel), (4, 2, 2));
}

/// BANK-1/BANK-2: the layout is judged again only once the batteries have been unchanged for
/// the settle time after each change, not only after discovery: a running 24 V bank of 2
/// batteries grows to 2×2, the new batteries joining half a second apart; the 3 batteries in
/// between are no configuration error, and the outputs stay on throughout.
#[test]
fn bank_1_bank_2_batteries_joining_one_after_the_other_raise_no_false_configuration_error() {
    let mut bms = Bms::new(Config::default());
    let inputs = Inputs {
        remote_h_mv: 13_200,
        remote_l_mv: 13_200,
        supply_mv: 26_400,
        app_connected: false,
    };
    // (serial, first report at ms); each reports once a second from then on.
    let batteries = [(1000u32, 0u64), (1001, 0), (1002, 5000), (1003, 5500)];
    let mut now_ms = 0;
    while now_ms <= 12_000 {
        for &(serial, from) in &batteries {
            if now_ms >= from && (now_ms - from) % 1000 == 0 {
                let _ = bms.handle_report(now_ms, &report(serial, BatteryModel::Lfp12V8, 3300));
            }
        }
        let d = bms.step(now_ms, &inputs);
        assert!(
            !d.codes.contains(Code::ConfigurationError),
            "false configuration error at {now_ms} ms"
        );
        if now_ms >= 3000 {
            assert!(d.atd && d.atc, "outputs off at {now_ms} ms");
        }
        now_ms += 50;
    }
    let t = bms.bank().topology().unwrap();
    assert_eq!((t.batteries, t.series, t.parallel), (4, 2, 2));
}

/// BANK-2: the BMS supply (the bank voltage) outside 8-70 V leaves the topology underivable,
/// which fails safe as a configuration error.
#[test]
fn bank_2_supply_out_of_range_is_a_configuration_error() {
    let mut rig = Rig::single();
    rig.supply_mv = Some(5000);
    assert_config_error(&mut rig, ConfigError::SupplyOutOfRange { supply_mv: 5000 });
    rig.supply_mv = None;
    rig.run_for(1000);
    assert!(
        rig.last().atd && rig.last().atc,
        "recovers once the supply is plausible"
    );
}

/// BANK-3: min/max cell with battery and cell, min/max temperature, bank voltage and current,
/// and per-battery data.
#[test]
fn bank_3_bank_values_and_per_battery_data() {
    let mut rig = Rig::new(4, 2, BatteryModel::Lfp12V8);
    rig.set_cell(2, 3, 3350);
    rig.set_cell(1, 0, 3250);
    rig.batteries[3].0.temps_ddegc = heapless::Vec::from_slice(&[180, 310]).unwrap();
    rig.batteries[0].0.temps_ddegc = heapless::Vec::from_slice(&[120]).unwrap();
    for (i, (r, _)) in rig.batteries.iter_mut().enumerate() {
        r.current_ma = 1000 * (i as i32 + 1);
    }
    rig.run_for(3000);
    let a = rig.bms.bank().aggregates().expect("aggregates");
    assert_eq!(
        (a.min_cell_mv, a.min_cell.battery, a.min_cell.cell),
        (3250, 1, 0)
    );
    assert_eq!(
        (a.max_cell_mv, a.max_cell.battery, a.max_cell.cell),
        (3350, 2, 3)
    );
    assert_eq!((a.min_temp_ddegc, a.min_temp_battery), (120, 0));
    assert_eq!((a.max_temp_ddegc, a.max_temp_battery), (310, 3));
    assert_eq!(a.voltage_mv, rig.inputs().supply_mv);
    assert_eq!(
        a.current_ma,
        (1000 + 2000 + 3000 + 4000) / 2,
        "sum of currents / series"
    );
    assert_eq!(a.cell_spread_mv(), 100);

    let b = rig.bms.bank().battery(3).expect("battery 3");
    assert_eq!(b.serial, 1003);
    assert_eq!(b.capacity_dah, 1000);
    assert_eq!(b.firmware, 0x0112);
    assert_eq!((b.min_temp_ddegc, b.max_temp_ddegc), (180, 310));
    assert_eq!(b.current_ma, 4000);
    assert_eq!(b.cells_mv(), &[3300, 3300, 3300, 3300]);
    assert_eq!(b.voltage_mv(), 13_200);
    assert_eq!(rig.bms.bank().batteries().len(), 4);
}

/// BANK-4: a battery silent for 5 s is lost: alarm, ATC and ATD free-floating until every
/// battery reports again.
#[test]
fn bank_4_lost_battery_after_5_s_free_floats_until_it_reports() {
    let mut rig = Rig::new(2, 1, BatteryModel::Lfp12V8);
    rig.run_for(3000);
    let last_report = rig.bms.bank().battery(1).unwrap().last_valid_ms();
    rig.silence(1, true);
    let lost_at = rig.run_until(10_000, |d| !d.atd).expect("lost");
    assert_eq!(
        lost_at,
        last_report + 5000,
        "exactly 5 s after the last valid report"
    );
    let d = rig.last();
    assert!(!d.atc && d.atd_reasons.contains(Reason::BatteryLost));
    assert!(d.atc_reasons.contains(Reason::BatteryLost));
    // PROT-11: the reason reported is the loss, not a lack of data in general.
    assert_eq!(d.atd_reasons, Reasons::of(Reason::BatteryLost));
    assert_eq!(d.atc_reasons, Reasons::of(Reason::BatteryLost));
    assert!(d.codes.contains(Code::BatteryLost));
    assert!(d.events.contains(&Event::CodeRaised(Code::BatteryLost)));
    rig.run_for(20_000);
    assert!(
        !rig.last().atd,
        "stays free-floating while the battery is silent"
    );
    rig.silence(1, false);
    let back = rig.run_until(2000, |d| d.atd && d.atc);
    assert!(back.is_some(), "returns once every battery reports again");
    assert!(!rig.last().codes.contains(Code::BatteryLost));
}

/// BANK-4: forgetting a lost battery (taken out on purpose) lets the bank run without it.
#[test]
fn bank_4_forgetting_a_lost_battery_restores_the_outputs() {
    let mut rig = Rig::new(2, 1, BatteryModel::Lfp12V8);
    rig.run_for(3000);
    rig.silence(1, true);
    rig.run_for(8000);
    assert!(!rig.last().atd);
    assert_eq!(rig.bms.forget_lost_batteries(), 1);
    rig.batteries.pop();
    rig.run_for(1000);
    assert!(rig.last().atd && rig.last().atc);
    assert_eq!(rig.bms.bank().topology().unwrap().batteries, 1);
}

/// BANK-4: forgetting every battery leaves no valid data: the outputs stay free-floating.
#[test]
fn bank_4_forgetting_every_battery_keeps_outputs_free_floating() {
    let mut rig = Rig::started();
    rig.silence(0, true);
    rig.run_for(6000);
    assert_eq!(rig.bms.forget_lost_batteries(), 1);
    let d = rig.step().clone();
    assert!(!d.atd && !d.atc && !d.prealarm);
    assert!(d.atd_reasons.contains(Reason::NoValidData));
}

/// BANK-4: data coming back after a loss is judged at once (as at power-up, PROT-1): a bank
/// that went below 2.80 V meanwhile keeps ATD free-floating.
#[test]
fn bank_4_returning_data_is_judged_before_outputs_return() {
    let mut rig = Rig::started();
    rig.silence(0, true);
    rig.run_for(6000);
    assert!(!rig.last().atd);
    rig.set_cells(2700);
    rig.silence(0, false);
    let back_at = rig.now_ms;
    rig.run_for(60_000);
    let since = rig.records.iter().filter(|r| r.at_ms >= back_at);
    assert!(
        since.clone().all(|r| !r.decisions.atd),
        "ATD never returns below 2.80 V"
    );
    assert!(rig.last().atc);
    assert!(rig.last().atd_reasons.contains(Reason::CellUndervoltage));
    assert!(rig.last().prealarm);
}

/// BANK-5: a battery appearing or disappearing re-derives the topology and resets the balancer
/// to Unknown.
#[test]
fn bank_5_topology_change_rederives_and_resets_balancer() {
    let mut rig = Rig::new(2, 1, BatteryModel::Lfp12V8);
    rig.run_for(3000);
    // A full charge judges the balancer.
    rig.full_charge();

    rig.batteries
        .push((report(3000, BatteryModel::Lfp12V8, 3400), false));
    // A newcomer joins at its third valid report in a row (BATTERY_JOIN_REPORTS).
    rig.run_for(3000);
    assert_eq!(rig.bms.bank().topology().unwrap().batteries, 3);
    assert_eq!((rig.bms.bank().topology().unwrap().parallel), 3);
    assert_eq!(
        rig.bms.balancer(),
        BalancerState::Unknown,
        "battery just added"
    );

    rig.silence(2, true);
    rig.run_for(6000);
    assert_eq!(
        rig.bms.bank().topology().unwrap().batteries,
        2,
        "lost battery leaves"
    );
}

/// The refused reports of PROT-13, each with the error that must name it: the audit's
/// implausible values (0 V, 5.5 V, −70 °C, 151 °C), the first values beyond the limits, and
/// reports that are malformed in other ways.
fn refused_reports() -> std::vec::Vec<(BatteryReport, ReportError)> {
    let good = report(1000, BatteryModel::Lfp12V8, 3300);
    let mut cases: std::vec::Vec<(BatteryReport, ReportError)> = std::vec::Vec::new();
    for (cell, cell_mv) in [(2u8, 0u16), (0, 5500), (1, 499), (3, 4501)] {
        let mut r = good.clone();
        r.cells_mv[usize::from(cell)] = cell_mv;
        cases.push((r, ReportError::CellVoltage { cell, cell_mv }));
    }
    for temp_ddegc in [-700i16, 1510, -401, 1001] {
        let mut r = good.clone();
        r.temps_ddegc[0] = temp_ddegc;
        cases.push((
            r,
            ReportError::Temperature {
                sensor: 0,
                temp_ddegc,
            },
        ));
    }
    let mut r = good.clone();
    r.cells_mv.pop();
    cases.push((
        r,
        ReportError::CellCount {
            expected: 4,
            got: 3,
        },
    ));
    let mut r = good.clone();
    r.temps_ddegc.clear();
    cases.push((r, ReportError::NoTemperature));
    let mut r = good.clone();
    r.capacity_dah = 0;
    cases.push((r, ReportError::NoCapacity));
    // 10 C of 100 Ah is 1 000 A: the first currents beyond it, and i32's ends.
    for current_ma in [i32::MIN, i32::MAX, -1_000_001, 1_000_001] {
        let mut r = good.clone();
        r.current_ma = current_ma;
        cases.push((
            r,
            ReportError::Current {
                current_ma,
                max_ma: 1_000_000,
            },
        ));
    }
    cases
}

/// PROT-13: one implausible report (a 0 V or 5.5 V cell, −70 °C, 151 °C, a malformed report) is
/// refused with an error naming the value, counted, and otherwise ignored like a missing one:
/// no output changes, the last valid values stay in use.
#[test]
fn prot_13_one_implausible_report_switches_no_output() {
    for (bad, expected) in refused_reports() {
        let mut rig = Rig::started();
        let before = rig.bms.bank().aggregates();
        let now = rig.now_ms;
        assert_eq!(rig.bms.handle_report(now, &bad), Err(expected));
        assert!(!expected.to_string().is_empty());
        assert_eq!(rig.bms.invalid_reports(), 1, "{expected:?} is counted");
        let inputs = rig.inputs();
        let d = rig.bms.step(now, &inputs);
        assert!(
            d.atd && d.atc && !d.prealarm,
            "{expected:?} must switch no output"
        );
        assert!(d
            .events
            .iter()
            .all(|e| !matches!(e, Event::OutputChanged { .. })));
        assert!(d.codes.contains(Code::InvalidBatteryData), "{expected:?}");
        assert_eq!(
            rig.bms.bank().aggregates(),
            before,
            "the values are not used"
        );
        // The next valid report clears the code; the outputs never moved.
        rig.run_for(1500);
        assert!(rig.last().atd && rig.last().atc, "{expected:?}");
        assert!(!rig.last().codes.contains(Code::InvalidBatteryData));
        assert!(rig
            .records
            .iter()
            .all(|r| r.at_ms < 3000 || (r.decisions.atd && r.decisions.atc)));
    }
}

/// PROT-13 with BANK-4: a battery that keeps sending implausible reports is lost 5 s after its
/// last valid report, exactly like a silent one; a valid report brings it back.
#[test]
fn prot_13_implausible_reports_for_5_s_make_the_battery_lost() {
    let mut rig = Rig::new(2, 1, BatteryModel::Lfp12V8);
    rig.run_for(3000);
    let last_valid = rig.bms.bank().battery(1).unwrap().last_valid_ms();
    rig.set_cell(1, 2, 0);
    let lost_at = rig.run_until(10_000, |d| !d.atd).expect("lost");
    assert_eq!(lost_at, last_valid + 5000, "BANK-4's 5 s, not at once");
    let d = rig.last();
    assert!(!d.atc && d.atd_reasons.contains(Reason::BatteryLost));
    // Why it is lost shows too.
    assert!(d.atd_reasons.contains(Reason::InvalidData));
    assert!(d.codes.contains(Code::BatteryLost) && d.codes.contains(Code::InvalidBatteryData));
    assert!(rig.bms.invalid_reports() >= 5);
    rig.set_cell(1, 2, 3300);
    assert!(rig.run_until(2000, |d| d.atd && d.atc).is_some());
}

/// PROT-13: a plausible value is always believed, however bad: cells at 0.5 V and 4.5 V and
/// temperatures of −40 °C and 100 °C are accepted and trip their protections.
#[test]
fn prot_13_plausible_extremes_are_believed() {
    let mut rig = Rig::started();
    rig.set_cell(0, 1, 500);
    rig.run_for(1000);
    assert_eq!(rig.bms.invalid_reports(), 0);
    assert_eq!(rig.bms.bank().aggregates().unwrap().min_cell_mv, 500);
    rig.run_for(6000);
    assert!(rig.last().prealarm && rig.last().codes.contains(Code::CellUndervoltage));

    let mut rig = Rig::started();
    rig.set_cell(0, 3, 4500);
    rig.run_for(3000);
    assert!(!rig.last().atc && rig.last().atc_reasons.contains(Reason::CellOvervoltage));

    let mut rig = Rig::started();
    rig.set_temp(-400);
    rig.run_for(4000);
    assert!(!rig.last().atc && rig.last().atc_reasons.contains(Reason::LowTemperature));

    let mut rig = Rig::started();
    rig.set_temp(1000);
    rig.run_for(4000);
    let d = rig.last();
    assert!(!d.atd && d.atd_reasons.contains(Reason::VeryHighTemperature));
    assert_eq!(rig.bms.invalid_reports(), 0);
}

/// PROT-13 with PROT-1: a battery that has never sent a valid report is no part of a complete
/// set: at power-up the outputs stay free-floating, naming the invalid data. In series (the
/// other battery alone makes no whole string) and in parallel (the other battery alone would
/// be a valid bank of one).
#[test]
fn prot_13_prot_1_never_valid_battery_keeps_outputs_free_floating() {
    for series in [2, 1] {
        let mut rig = Rig::new(2, series, BatteryModel::Lfp12V8);
        rig.set_cell(1, 0, 5500);
        rig.run_for(4000);
        assert!(
            rig.records
                .iter()
                .all(|r| !r.decisions.atd && !r.decisions.atc),
            "{series} in series"
        );
        let d = rig.last();
        assert!(d.atd_reasons.contains(Reason::InvalidData));
        assert!(d.codes.contains(Code::InvalidBatteryData));
    }
}

/// PROT-1: every output is free-floating until the first complete, valid data set.
#[test]
fn prot_1_outputs_free_floating_until_first_valid_data() {
    let mut rig = Rig::single();
    let inputs = rig.inputs();
    let d = rig.bms.step(0, &inputs);
    assert!(!d.atd && !d.atc && !d.prealarm);
    assert!(d.atd_reasons.contains(Reason::NoValidData));
    assert!(d.atc_reasons.contains(Reason::NoValidData));
    // Data arrives at t = 0; the discovery window keeps the outputs off for 2 s.
    let on_at = rig
        .run_until(10_000, |d| d.atd && d.atc)
        .expect("switches on");
    assert_eq!(on_at, 2000);
    assert!(rig
        .records
        .iter()
        .filter(|r| r.at_ms < 2000)
        .all(|r| !r.decisions.atd));

    // An unsafe first data set never switches the outputs on.
    let mut rig = Rig::single();
    rig.set_cells(2700);
    rig.run_for(60_000);
    assert!(
        rig.records.iter().all(|r| !r.decisions.atd),
        "ATD never on with cells < 2.80 V"
    );
    assert!(rig.last().atc, "charging is allowed");
    assert!(rig.last().atd_reasons.contains(Reason::CellUndervoltage));

    let mut rig = Rig::single();
    rig.set_cells(3800);
    rig.run_for(10_000);
    assert!(
        rig.records.iter().all(|r| !r.decisions.atc),
        "ATC never on with cells > 3.75 V"
    );
    assert!(rig.last().atd);

    let mut rig = Rig::single();
    rig.set_temp(30);
    rig.run_for(10_000);
    assert!(
        rig.records.iter().all(|r| !r.decisions.atc),
        "ATC never on below 5 degC"
    );
}

/// PROT-2: cells below 2.80 V for 5 s raise the pre-alarm at once; ATD goes free-floating 30 s
/// after the pre-alarm, and returns only when all cells are ≥ 3.20 V.
#[test]
fn prot_2_atd_opens_30s_after_prealarm() {
    let mut rig = Rig::started();
    rig.set_cells(2750);
    let t0 = rig.now_ms;
    // Reports arrive once a second: the drop is seen at the next report.
    let prealarm_at = rig.run_until(10_000, |d| d.prealarm).expect("pre-alarm");
    let dropped_seen = ((t0 / 1000) + 1) * 1000;
    assert_eq!(prealarm_at, dropped_seen + 5000, "5 s debounce");
    assert!(rig
        .last()
        .prealarm_reasons
        .contains(Reason::CellUndervoltage));
    assert!(rig.last().atd, "ATD still high");
    let atd_off_at = rig.run_until(60_000, |d| !d.atd).expect("ATD opens");
    assert_eq!(
        atd_off_at,
        prealarm_at + 30_000,
        "exactly 30 s after the pre-alarm"
    );
    assert!(rig.last().atd_reasons.contains(Reason::CellUndervoltage));
    assert!(rig.last().atc, "charging stays allowed");
    assert!(rig.last().codes.contains(Code::CellUndervoltage));

    // Recovery above 2.80 V but below 3.20 V is not enough.
    rig.set_cells(3190);
    rig.run_for(60_000);
    assert!(!rig.last().atd);
    rig.set_cells(3200);
    let back = rig.run_until(2000, |d| d.atd);
    assert!(back.is_some(), "ATD returns at 3.20 V");
}

/// PROT-2: with the pre-alarm already active for 30 s (from its level), ATD opens as soon as
/// the under-voltage is debounced; a pulse shorter than 5 s does not trip.
#[test]
fn prot_2_prealarm_already_active_and_pulse_loads() {
    let mut rig = Rig::started();
    rig.set_cells(3000);
    rig.run_for(60_000);
    assert!(rig.last().prealarm && rig.last().atd);
    rig.set_cells(2700);
    let t0 = rig.now_ms;
    let off = rig.run_until(20_000, |d| !d.atd).unwrap();
    assert!(
        off <= t0 + 1000 + 5000,
        "no extra 30 s once the pre-alarm ran long enough"
    );

    let mut rig = Rig::started();
    rig.set_cells(3000);
    rig.run_for(60_000);
    let t0 = rig.now_ms;
    for _ in 0..10 {
        rig.set_cells(2700);
        rig.run_for(4000);
        rig.set_cells(3000);
        rig.run_for(2000);
    }
    let after = rig.records.iter().filter(|r| r.at_ms >= t0);
    assert!(
        after.clone().all(|r| r.decisions.atd),
        "4 s pulses never trip"
    );
    assert!(after.clone().any(|r| r.decisions.prealarm));
    assert!(!rig.last().codes.contains(Code::CellUndervoltage));
}

/// PROT-2 (rev 2), PROT-1: a data set judged at power-up or after a loss is debounced like any
/// other: a cell below 2.80 V for less than 5 s keeps ATD free-floating while it is judged,
/// but latches no under-voltage (which would hold ATD off until 3.20 V); one over-voltage or
/// cold reading holds ATC off only until it is gone. A lasting under-voltage still keeps ATD
/// off with no warning period (bank_4_returning_data_is_judged_before_outputs_return).
#[test]
fn prot_2_a_short_dip_when_data_is_judged_latches_no_undervoltage() {
    // Power-up: the reports of 0, 1 and 2 s show 2.75 V (3 s), then 3.15 V.
    let mut rig = Rig::single();
    rig.set_cell(0, 2, 2750);
    rig.run_for(2500);
    assert!(!rig.last().atd, "not judged safe yet");
    assert!(rig.last().atd_reasons.contains(Reason::CellUndervoltage));
    rig.set_cell(0, 2, 3150);
    rig.run_for(10_000);
    let d = rig.last();
    assert!(
        d.atd && d.atc,
        "3 s below 2.80 V is no under-voltage: {d:?}"
    );
    assert!(!d.codes.contains(Code::CellUndervoltage));

    // After a loss: the first report back shows 2.75 V, the next 3.15 V.
    let mut rig = Rig::started();
    rig.silence(0, true);
    rig.run_for(6000);
    assert!(!rig.last().atd && rig.last().codes.contains(Code::BatteryLost));
    rig.set_cell(0, 2, 2750);
    rig.silence(0, false);
    rig.run_for(500);
    assert!(
        !rig.last().atd,
        "a cell below 2.80 V is judged before ATD returns"
    );
    rig.set_cell(0, 2, 3150);
    rig.run_for(10_000);
    let d = rig.last();
    assert!(d.atd, "ATD returns once the dip is gone: {d:?}");
    assert!(!d.codes.contains(Code::CellUndervoltage));

    // The same for ATC: one report at 3.80 V, or at 4.0 degC, then back in range.
    for (cell_mv, temp) in [(3800, 250), (3300, 40)] {
        let mut rig = Rig::started();
        rig.silence(0, true);
        rig.run_for(6000);
        rig.set_cells(cell_mv);
        rig.set_temp(temp);
        rig.silence(0, false);
        rig.run_for(500);
        assert!(!rig.last().atc, "judged before ATC returns");
        rig.set_cells(3300);
        rig.set_temp(250);
        rig.run_for(10_000);
        let d = rig.last();
        assert!(d.atc && d.atd, "{cell_mv} mV / {temp} d°C once: {d:?}");
        assert!(
            !d.codes.contains(Code::CellOvervoltage) && !d.codes.contains(Code::LowTemperature)
        );
    }
}

/// LED-2 (rev 2), PROT-11, PROT-1: an output held free-floating while returning battery data is
/// judged is held by an alarm: the row's code is active (red LED solid, the readout's and the
/// app's alarms) for as long as the output shows the row's reason, not only once the row has
/// tripped. Found by an earlier audit: after a battery came back at 2.75 V, ATD stayed
/// free-floating for 5 s with the loss cleared and no code at all, so the LED went dark while
/// the loads were off.
#[test]
fn led_2_prot_1_an_output_held_while_data_is_judged_shows_its_alarm() {
    // (cell mV, temperature d°C, the row's reason, its code)
    let cases = [
        (2750, 250, Reason::CellUndervoltage, Code::CellUndervoltage),
        (3800, 250, Reason::CellOvervoltage, Code::CellOvervoltage),
        (3300, 40, Reason::LowTemperature, Code::LowTemperature),
        (
            3300,
            620,
            Reason::VeryHighTemperature,
            Code::HighTemperature,
        ),
    ];
    for (cell_mv, temp, reason, code) in cases {
        // After a loss, and at power-up.
        for power_up in [false, true] {
            let mut rig = if power_up {
                Rig::single()
            } else {
                let mut rig = Rig::started();
                rig.silence(0, true);
                rig.run_for(6000);
                assert!(rig.last().codes.contains(Code::BatteryLost));
                rig.silence(0, false);
                rig
            };
            rig.set_cell(0, 2, cell_mv);
            rig.set_temp(temp);
            let from = rig.records.len();
            // Into the judgement (the first report back comes within a second).
            rig.run_for(if power_up { 2500 } else { 1900 });
            let held: Vec<_> = rig.records[from..]
                .iter()
                .filter(|r| {
                    let d = &r.decisions;
                    d.atd_reasons.contains(reason) || d.atc_reasons.contains(reason)
                })
                .collect();
            assert!(!held.is_empty(), "{reason:?} never held an output");
            for r in held {
                let d = &r.decisions;
                assert!(
                    d.codes.contains(code) && d.led_red == LedPattern::Solid,
                    "{cell_mv} mV {temp} d°C (power-up {power_up}) at {} ms: atd {} ({}) \
                     atc {} ({}), codes {:?}, red {:?}",
                    r.at_ms,
                    d.atd,
                    d.atd_reasons,
                    d.atc,
                    d.atc_reasons,
                    d.codes.to_string(),
                    d.led_red
                );
            }
            // Gone: the alarm goes with the output's reason.
            rig.set_cells(3300);
            rig.set_temp(250);
            rig.run_for(10_000);
            let d = rig.last();
            assert!(d.atd && d.atc && d.codes.is_empty(), "{d:?}");
        }
    }
}

/// PROT-3: the pre-alarm follows the pre-alarm level (debounced 5 s), clears at level + 50 mV
/// held for 10 s, and follows the low-SoC warning.
#[test]
fn prot_3_prealarm_level_release_and_low_soc_warning() {
    let mut rig = Rig::started();
    rig.set_cells(3099);
    let on = rig.run_until(10_000, |d| d.prealarm).unwrap();
    assert!(rig.last().prealarm_reasons.contains(Reason::PrealarmLevel));
    assert!(rig.last().codes.contains(Code::LowCellVoltage));
    assert!(on >= 5000 + 2000, "debounced");
    assert!(rig.last().atd, "the pre-alarm alone keeps ATD high");
    // 3.149 V is inside the hysteresis: stays on.
    rig.set_cells(3149);
    rig.run_for(30_000);
    assert!(rig.last().prealarm);
    rig.set_cells(3150);
    let start = rig.run_until(2000, |_| true).unwrap();
    let off = rig.run_until(20_000, |d| !d.prealarm).unwrap();
    assert!(
        off >= start + 9000 && off <= start + 11_000,
        "cleared after 10 s ({start}→{off})"
    );

    // A lower setting moves the level: 3.0 V is fine with a 2.90 V level.
    let config = Config {
        settings: Settings {
            prealarm_cell_mv: 2900,
            ..Settings::default()
        },
        ..Config::default()
    };
    let mut rig = Rig::with_config(1, 1, BatteryModel::Lfp12V8, config);
    rig.set_cells(3000);
    rig.run_for(30_000);
    assert!(rig.records.iter().all(|r| !r.decisions.prealarm));

    // The low-SoC warning (MON-6, 20 %) drives the pre-alarm.
    let mut rig = Rig::started();
    let now = rig.now_ms;
    rig.bms.set_soc(now, 150).unwrap();
    rig.run_for(200);
    let d = rig.last();
    assert!(d.prealarm && d.prealarm_reasons.contains(Reason::LowSoc));
    assert!(d.codes.contains(Code::LowSocWarning));
    let now = rig.now_ms;
    rig.bms.set_soc(now, 500).unwrap();
    rig.run_for(200);
    assert!(!rig.last().prealarm);
}

/// PROT-3 (rev 2): the pre-alarm output is released 60 s after ATD opened for under-voltage,
/// so that a buzzer or relay on it does not drain the empty battery for hours; the alarm stays
/// (code, red LED) and the release is reported with its reason. A recovered bank warns again.
#[test]
fn prot_3_prealarm_released_60_s_after_an_undervoltage_disconnect() {
    let mut rig = Rig::started();
    rig.set_cells(2750);
    let atd_off = rig.run_until(60_000, |d| !d.atd).unwrap();
    assert!(rig.last().prealarm);
    let released = rig.run_until(120_000, |d| !d.prealarm).unwrap();
    assert_eq!(released, atd_off + 60_000);
    let d = rig.last().clone();
    assert!(d.prealarm_reasons.contains(Reason::PrealarmReleased));
    assert!(d.events.contains(&Event::OutputChanged {
        output: Output::Prealarm,
        high: false,
        reasons: d.prealarm_reasons,
    }));
    assert!(d.codes.contains(Code::CellUndervoltage));
    assert_eq!(d.led_red, LedPattern::Solid, "the alarm stays on the LED");
    assert!(!d.atd && d.low_power);
    // Hours later (the deep-discharge scenario's 7.7 h): still released.
    rig.run_for(8 * 3_600_000);
    assert!(rig
        .records
        .iter()
        .filter(|r| r.at_ms >= released)
        .all(|r| !r.decisions.prealarm));
    // Charged back: ATD returns, the pre-alarm does not sound on the way up.
    rig.set_cells(3300);
    let back = rig.run_until(5000, |d| d.atd).unwrap();
    rig.run_for(30_000);
    assert!(rig
        .records
        .iter()
        .filter(|r| r.at_ms >= back)
        .all(|r| !r.decisions.prealarm));
    assert!(rig.last().prealarm_reasons.is_empty());
    // A new under-voltage warns again.
    rig.set_cells(2750);
    assert!(rig.run_until(10_000, |d| d.prealarm).is_some());
}

/// PROT-3 (rev 2), MON-6: the release lasts while the cells recover, not once the loads are
/// back: ATD returns at 3.25 V, the loads pull a cell to 3.00 V (below the 3.10 V level) within
/// the 10 s the pre-alarm level needs to clear, and the pre-alarm sounds again (it stayed
/// free-floating for good, as did the low-SoC warning's). Found by a spec audit replay.
#[test]
fn prot_3_mon_6_a_released_prealarm_sounds_again_when_a_cell_falls_low_with_the_loads_back() {
    for low_soc in [false, true] {
        let mut rig = Rig::started();
        if low_soc {
            let now = rig.now_ms;
            rig.bms.set_soc(now, 150).unwrap();
        }
        rig.set_cells(2700);
        rig.run_until(60_000, |d| !d.atd).unwrap();
        rig.run_until(120_000, |d| !d.prealarm).unwrap();
        rig.set_cells(3250);
        rig.run_until(5000, |d| d.atd)
            .expect("loads back at 3.25 V");
        rig.run_for(5000);
        assert!(!rig.last().prealarm, "quiet on the way up ({low_soc})");
        rig.set_cells(3000);
        let from = rig.now_ms;
        let warned = rig.run_until(60_000, |d| d.prealarm);
        assert!(
            warned.is_some_and(|t| t <= from + 6000),
            "low SoC {low_soc}: a cell at 3.00 V with the loads on, pre-alarm {warned:?} (from {from})"
        );
        let d = rig.last();
        assert!(d.atd && d.prealarm_reasons.contains(Reason::PrealarmLevel));
        assert_eq!(d.prealarm_reasons.contains(Reason::LowSoc), low_soc);
    }
}

/// PROT-3 (rev 2), MON-6: the release ends once the cells have recovered: after an
/// under-voltage disconnect whose pre-alarm was released, the bank is charged back (every cell
/// condition released), and a later low-SoC warning drives the pre-alarm as usual.
#[test]
fn prot_3_mon_6_after_a_recovered_undervoltage_the_low_soc_warning_sounds_the_prealarm() {
    let mut rig = Rig::started();
    rig.set_cells(2700);
    rig.run_until(60_000, |d| !d.atd).unwrap();
    rig.run_until(120_000, |d| !d.prealarm).unwrap();
    rig.set_cells(3300);
    rig.run_until(5000, |d| d.atd).expect("loads back");
    rig.run_for(30_000);
    let d = rig.last();
    assert!(!d.prealarm && d.prealarm_reasons.is_empty() && d.codes.is_empty());
    let now = rig.now_ms;
    rig.bms.set_soc(now, 150).unwrap();
    rig.run_for(200);
    let d = rig.last();
    assert!(
        d.prealarm && d.prealarm_reasons.contains(Reason::LowSoc),
        "low-SoC warning after the recovery: {d:?}"
    );
}

/// PROT-2, PROT-3: after the pre-alarm was released, the cells rise to 3.20 V for a second
/// (the loads come back) and fall again: the new under-voltage sounds the pre-alarm and waits
/// its 30 s before ATD opens (found by the PROT-2 property test).
#[test]
fn prot_2_prot_3_a_new_undervoltage_after_the_loads_return_warns_30_s_first() {
    let mut rig = Rig::started();
    rig.set_cells(2500);
    rig.run_until(60_000, |d| !d.atd).unwrap();
    rig.run_until(120_000, |d| !d.prealarm).unwrap();
    rig.set_cells(3200);
    assert!(
        rig.run_until(2_000, |d| d.atd).is_some(),
        "loads back at 3.20 V"
    );
    rig.set_cells(2500);
    let warned = rig
        .run_until(10_000, |d| d.prealarm)
        .expect("pre-alarm sounds again");
    let off = rig.run_until(60_000, |d| !d.atd).unwrap();
    assert!(
        off >= warned + 30_000,
        "ATD off {} ms after the warning",
        off - warned
    );
}

/// PROT-4: a cell above 3.75 V for 1 s makes ATC free-floating; it returns below 3.60 V.
#[test]
fn prot_4_overvoltage_trips_atc_after_1s_and_returns_below_3_60() {
    let mut rig = Rig::started();
    rig.set_cell(0, 2, 3750);
    rig.run_for(5000);
    assert!(rig.last().atc, "3.75 V is not above 3.75 V");
    rig.set_cell(0, 2, 3751);
    let t0 = rig.now_ms;
    let off = rig.run_until(5000, |d| !d.atc).unwrap();
    let seen = (t0 / 1000 + 1) * 1000;
    assert_eq!(off, seen + 1000, "1 s after the first report above 3.75 V");
    assert!(rig.last().atc_reasons.contains(Reason::CellOvervoltage));
    assert!(rig.last().atd, "loads stay allowed");
    assert!(rig.last().codes.contains(Code::CellOvervoltage));
    rig.set_cell(0, 2, 3600);
    rig.run_for(5000);
    assert!(!rig.last().atc, "3.60 V is not below 3.60 V");
    rig.set_cell(0, 2, 3599);
    assert!(rig.run_until(2000, |d| d.atc).is_some());

    // 0.9 s above the limit does not trip.
    let mut rig = Rig::started();
    rig.run_for(1000 - rig.now_ms % 1000);
    let t0 = rig.now_ms;
    let inputs = rig.inputs();
    let mut high = rig.batteries[0].0.clone();
    high.cells_mv[0] = 3900;
    rig.bms.handle_report(t0 + 1, &high).unwrap();
    assert!(rig.bms.step(t0 + 1, &inputs).atc);
    assert!(rig.bms.step(t0 + 900, &inputs).atc);
    let normal = rig.batteries[0].0.clone();
    rig.bms.handle_report(t0 + 901, &normal).unwrap();
    assert!(rig.bms.step(t0 + 901, &inputs).atc);
    assert!(rig.bms.step(t0 + 5000, &inputs).atc);
}

/// PROT-4: the 1 s debounce, measured exactly by stepping the core by hand.
#[test]
fn prot_4_overvoltage_debounce_is_1_s() {
    let mut bms = Bms::new(Config::default());
    let inputs = Inputs {
        remote_h_mv: 6000,
        remote_l_mv: 6000,
        supply_mv: 13_200,
        app_connected: false,
    };
    let mut t = 0;
    while t <= 3000 {
        bms.handle_report(t, &report(1, BatteryModel::Lfp12V8, 3300))
            .unwrap();
        let _ = bms.step(t, &inputs);
        t += 100;
    }
    let mut high = report(1, BatteryModel::Lfp12V8, 3300);
    high.cells_mv[1] = 3760;
    bms.handle_report(t, &high).unwrap();
    assert!(bms.step(t, &inputs).atc);
    assert_eq!(bms.next_deadline_ms(), Some(t + 100));
    assert!(bms.step(t + 999, &inputs).atc, "0.999 s");
    let d = bms.step(t + 1000, &inputs);
    assert!(!d.atc, "1 s");
    assert!(d.events.contains(&Event::OutputChanged {
        output: Output::Atc,
        high: false,
        reasons: d.atc_reasons
    }));
}

/// PROT-5: below 5 °C ATC is free-floating; it returns at ≥ 7 °C.
#[test]
fn prot_5_low_temperature_blocks_charge_until_7_degc() {
    let mut rig = Rig::started();
    rig.set_temp(49);
    assert!(rig.run_until(4000, |d| !d.atc).is_some());
    assert!(rig.last().atc_reasons.contains(Reason::LowTemperature));
    assert!(rig.last().atd);
    assert!(rig.last().codes.contains(Code::LowTemperature));
    rig.set_temp(50);
    rig.run_for(5000);
    assert!(!rig.last().atc, "5.0 degC is inside the hysteresis");
    rig.set_temp(69);
    rig.run_for(5000);
    assert!(!rig.last().atc);
    rig.set_temp(70);
    assert!(rig.run_until(4000, |d| d.atc).is_some());
}

/// PROT-6: above 50 °C ATC is free-floating until ≤ 48 °C; above 60 °C ATD too, until ≤ 55 °C.
#[test]
fn prot_6_high_temperature_blocks_charge_and_above_60_discharge() {
    let mut rig = Rig::started();
    rig.set_temp(500);
    rig.run_for(3000);
    assert!(rig.last().atc, "50.0 degC is not above 50");
    rig.set_temp(501);
    assert!(rig.run_until(4000, |d| !d.atc).is_some());
    assert!(rig.last().atc_reasons.contains(Reason::HighTemperature));
    assert!(rig.last().atd);
    rig.set_temp(601);
    assert!(rig.run_until(4000, |d| !d.atd).is_some());
    assert!(rig.last().atd_reasons.contains(Reason::VeryHighTemperature));
    assert!(rig.last().codes.contains(Code::HighTemperature));
    rig.set_temp(551);
    rig.run_for(3000);
    assert!(!rig.last().atd);
    rig.set_temp(550);
    assert!(rig.run_until(4000, |d| d.atd).is_some());
    assert!(!rig.last().atc);
    rig.set_temp(481);
    rig.run_for(3000);
    assert!(!rig.last().atc);
    rig.set_temp(480);
    assert!(rig.run_until(4000, |d| d.atc).is_some());
}

/// PROT-5/PROT-6: the temperature trips and releases are debounced (2 s), so 0.2 °C of sensor
/// noise around a threshold neither switches ATC early nor toggles it: a true 6.8 °C reading
/// 7.0/6.6 alternately keeps charging blocked, a true 5.1 °C reading 5.3/4.9 keeps it allowed,
/// a true 50.0 °C reading 50.2/49.8 keeps it allowed, and a steady 7.2 °C ± 0.1 releases it once.
#[test]
fn prot_5_prot_6_temperature_noise_does_not_toggle_atc() {
    fn noisy(rig: &mut Rig, true_ddegc: i16, noise_ddegc: i16, seconds: usize) {
        for k in 0..seconds {
            let sign = if k % 2 == 0 { 1 } else { -1 };
            rig.set_temp(true_ddegc + sign * noise_ddegc);
            rig.run_for(1000);
        }
    }
    fn atc_changes(rig: &Rig, from: usize) -> usize {
        rig.records[from..]
            .windows(2)
            .filter(|w| w[0].decisions.atc != w[1].decisions.atc)
            .count()
    }

    // Noise that stays on the safe side of a level never trips.
    let mut rig = Rig::started();
    let from = rig.records.len();
    noisy(&mut rig, 53, 2, 60);
    assert!(rig.last().atc, "5.3 degC +/- 0.2 must not block charging");
    assert_eq!(atc_changes(&rig, from), 0);
    let from = rig.records.len();
    noisy(&mut rig, 498, 2, 60);
    assert!(rig.last().atc, "49.8 degC +/- 0.2 must not block charging");
    assert_eq!(atc_changes(&rig, from), 0);

    // Noise across a level trips once (judged over the window) and the hysteresis keeps it
    // from toggling.
    let from = rig.records.len();
    noisy(&mut rig, 51, 2, 60);
    assert!(
        !rig.last().atc,
        "5.1 degC +/- 0.2 crosses 5.0 every other second"
    );
    assert_eq!(atc_changes(&rig, from), 1, "tripped once, no toggling");
    let from = rig.records.len();
    noisy(&mut rig, 68, 2, 60);
    assert!(
        !rig.last().atc,
        "6.8 degC +/- 0.2 must not release charging"
    );
    assert_eq!(atc_changes(&rig, from), 0);
    let from = rig.records.len();
    noisy(&mut rig, 72, 1, 10);
    assert!(rig.last().atc, "7.2 degC +/- 0.1 releases charging");
    assert_eq!(atc_changes(&rig, from), 1, "released once, no toggling");
}

/// PROT-5/PROT-6 (rev 2): temperature trips are judged over the 2 s window, so readings that
/// keep crossing the level every second (4.9/5.1 °C) still trip; a single reading beyond the
/// level does not.
#[test]
fn prot_5_prot_6_readings_crossing_the_level_every_second_still_trip() {
    fn alternate(rig: &mut Rig, a: i16, b: i16, seconds: usize) {
        for k in 0..seconds {
            rig.set_temp(if k % 2 == 0 { a } else { b });
            rig.run_for(1000);
        }
    }
    let mut rig = Rig::started();
    alternate(&mut rig, 49, 51, 10);
    let d = rig.last();
    assert!(!d.atc && d.atc_reasons.contains(Reason::LowTemperature));
    let mut rig = Rig::started();
    alternate(&mut rig, 501, 499, 10);
    assert!(rig.last().atc_reasons.contains(Reason::HighTemperature));
    let mut rig = Rig::started();
    alternate(&mut rig, 601, 599, 10);
    assert!(rig.last().atd_reasons.contains(Reason::VeryHighTemperature));

    // One reading beyond the level, then none: no trip.
    let mut rig = Rig::started();
    let from = rig.records.len();
    alternate(&mut rig, 49, 51, 1);
    alternate(&mut rig, 51, 51, 10);
    assert!(rig.records[from..].iter().all(|r| r.decisions.atc));

    // One reading in three beyond the level: two seconds without one is a whole window
    // missed, so the debounce starts over at each and never runs its 2 s.
    let mut rig = Rig::started();
    let from = rig.records.len();
    for _ in 0..10 {
        alternate(&mut rig, 49, 51, 1);
        alternate(&mut rig, 51, 51, 2);
    }
    assert!(rig.records[from..].iter().all(|r| r.decisions.atc));
}

/// PROT-7: a battery's own not-allowed flags free-float ATC / ATD while set.
#[test]
fn prot_7_battery_flags_block_charge_and_discharge() {
    let mut rig = Rig::new(2, 1, BatteryModel::Lfp12V8);
    rig.run_for(3000);
    rig.batteries[1].0.flags.allowed_to_charge = false;
    assert!(rig.run_until(2000, |d| !d.atc).is_some());
    assert!(rig.last().atd);
    assert!(rig
        .last()
        .atc_reasons
        .contains(Reason::BatteryChargeNotAllowed));
    rig.batteries[1].0.flags.allowed_to_discharge = false;
    assert!(rig.run_until(2000, |d| !d.atd).is_some());
    assert!(rig
        .last()
        .atd_reasons
        .contains(Reason::BatteryDischargeNotAllowed));
    rig.batteries[1].0.flags.allowed_to_charge = true;
    rig.batteries[1].0.flags.allowed_to_discharge = true;
    assert!(rig.run_until(2000, |d| d.atc && d.atd).is_some());
}

/// PROT-8: remote ON when L-H interconnected, L < 3.5 V, or 2.9 V < H < Vbat; OFF otherwise,
/// and OFF free-floats ATD, ATC and the pre-alarm.
#[test]
fn prot_8_remote_on_off_rules() {
    use bms_core::protection::remote_is_on;
    let vbat = 13_200;
    assert!(remote_is_on(6600, 6600, vbat), "L and H interconnected");
    assert!(remote_is_on(0, 3499, vbat), "L pulled to minus");
    assert!(
        !remote_is_on(0, 3500, vbat),
        "L at 3.5 V is not pulled down"
    );
    assert!(remote_is_on(2901, 5000, vbat), "H high");
    assert!(!remote_is_on(2900, 5000, vbat), "H at 2.9 V is not high");
    assert!(remote_is_on(vbat, 5000, vbat), "H at battery plus");
    assert!(!remote_is_on(vbat + 1000, 5000, vbat), "H above Vbat");
    // H wired to battery plus reads Vbat give or take the ADC's error: up to 0.3 V above the
    // measured Vbat still counts as below it, 0.3 V above does not.
    assert!(
        remote_is_on(vbat + 299, 5000, vbat),
        "H within the tolerance"
    );
    assert!(!remote_is_on(vbat + 300, 5000, vbat), "H 0.3 V above Vbat");
    assert!(!remote_is_on(0, 5000, vbat), "nothing connected");

    let mut rig = Rig::started();
    rig.set_cells(3000);
    rig.run_for(10_000);
    assert!(rig.last().prealarm);
    rig.remote = Remote::Open;
    let t0 = rig.now_ms;
    let off = rig.run_until(2000, |d| !d.atd).unwrap();
    assert_eq!(off, t0 + 500, "OFF once debounced (0.5 s)");
    let d = rig.last().clone();
    assert!(!d.atd && !d.atc && !d.prealarm);
    for r in [d.atd_reasons, d.atc_reasons] {
        assert!(r.contains(Reason::RemoteOff));
    }
    rig.remote = Remote::Loop;
    let t1 = rig.now_ms;
    let on = rig.run_until(2000, |d| d.atd).unwrap();
    assert_eq!(on, t1 + 500, "ON once debounced (0.5 s)");
    let d = rig.last();
    assert!(d.atd && d.atc && d.prealarm);
}

/// PROT-8 (rev 2): the remote state is debounced 0.5 s both ways: a 0.3 s glitch OFF switches
/// no output off, a 0.3 s glitch ON switches none on.
#[test]
fn prot_8_remote_glitches_shorter_than_half_a_second_change_nothing() {
    /// A 0.3 s glitch to `glitch`, back to `steady`: the outputs keep `high` throughout.
    fn glitch(rig: &mut Rig, glitch: Remote, steady: Remote, high: bool) {
        let from = rig.records.len();
        rig.remote = glitch;
        rig.run_for(300);
        rig.remote = steady;
        rig.run_for(5000);
        assert!(
            rig.records[from..]
                .iter()
                .all(|r| r.decisions.atd == high && r.decisions.atc == high),
            "a 0.3 s {glitch:?} glitch"
        );
    }
    let mut rig = Rig::started();
    glitch(&mut rig, Remote::Open, Remote::Loop, true);
    rig.remote = Remote::Open;
    rig.run_for(5000);
    assert!(!rig.last().atd && !rig.last().atc);
    glitch(&mut rig, Remote::Loop, Remote::Open, false);
    // Held 0.5 s, the change takes effect.
    rig.remote = Remote::Loop;
    rig.step();
    rig.run_for(500);
    assert!(rig.last().atd && rig.last().atc);
}

/// PROT-2, PROT-8 (rev 2): the remote switched ON while a cell is already under-voltage does
/// not run the loads for a 30 s warning: ATD stays free-floating until all cells are ≥ 3.20 V
/// (remote OFF at 30 s, a cell at 2.75 V from 60 s, remote ON at 200 s).
#[test]
fn prot_2_prot_8_remote_on_into_an_undervoltage_keeps_atd_off() {
    let mut rig = Rig::started();
    rig.run_for(27_000);
    rig.remote = Remote::Open;
    rig.run_for(30_000);
    rig.set_cell(0, 2, 2750);
    rig.run_for(140_000);
    assert!(rig.last().codes.contains(Code::CellUndervoltage));
    rig.remote = Remote::Loop;
    let on_at = rig.now_ms;
    rig.run_for(120_000);
    let after: std::vec::Vec<_> = rig.records.iter().filter(|r| r.at_ms >= on_at).collect();
    assert!(after.iter().all(|r| !r.decisions.atd), "ATD never high");
    assert!(
        after.iter().all(|r| !r.decisions.prealarm),
        "pre-alarm already released"
    );
    let d = rig.last();
    assert!(d.atc, "charging is allowed again");
    assert!(d.atd_reasons.contains(Reason::CellUndervoltage));
    assert!(!d.atd_reasons.contains(Reason::RemoteOff));
    rig.set_cell(0, 2, 3200);
    assert!(
        rig.run_until(3000, |d| d.atd).is_some(),
        "returns at 3.20 V"
    );

    // The same within the first minute: ATD stays off, the pre-alarm warns until 60 s after
    // the under-voltage opened ATD.
    let mut rig = Rig::started();
    rig.remote = Remote::Open;
    rig.run_for(10_000);
    rig.set_cell(0, 2, 2750);
    let uv_at = rig
        .run_until(10_000, |d| d.codes.contains(Code::CellUndervoltage))
        .unwrap();
    rig.run_for(10_000);
    rig.remote = Remote::Loop;
    let on_at = rig.now_ms;
    let warn_at = rig.run_until(2000, |d| d.prealarm).unwrap();
    assert_eq!(warn_at, on_at + 500);
    assert!(!rig.last().atd);
    let quiet_at = rig.run_until(120_000, |d| !d.prealarm).unwrap();
    assert_eq!(quiet_at, uv_at + 60_000);
    let after = rig.records.iter().filter(|r| r.at_ms >= on_at);
    assert!(after.clone().all(|r| !r.decisions.atd));
}

/// PROT-9: SoC at the floor raises the low-SoC alarm and free-floats ATD; ATD returns at
/// floor + 3 points; floor 0 disables it.
#[test]
fn prot_9_discharge_floor_opens_atd_until_floor_plus_3() {
    let mut rig = Rig::started();
    let now = rig.now_ms;
    rig.bms.set_soc(now, 100).unwrap();
    rig.run_for(200);
    let d = rig.last();
    assert!(!d.atd && d.atd_reasons.contains(Reason::DischargeFloor));
    assert!(d.atc);
    assert!(d.codes.contains(Code::LowSoc));
    let now = rig.now_ms;
    rig.bms.set_soc(now, 129).unwrap();
    rig.run_for(200);
    assert!(!rig.last().atd, "12.9 % is below floor + 3");
    let now = rig.now_ms;
    rig.bms.set_soc(now, 130).unwrap();
    rig.run_for(200);
    assert!(rig.last().atd, "13 % releases");

    let mut rig = Rig::started();
    let settings = Settings {
        discharge_floor_pct: 0,
        ..Settings::default()
    };
    rig.bms.write_settings(settings).unwrap();
    let now = rig.now_ms;
    rig.bms.set_soc(now, 0).unwrap();
    rig.run_for(200);
    assert!(rig.last().atd, "floor 0 disables PROT-9");
}

/// PROT-10, DFU-2: update progress (handle_dfu) drives the outputs. During an update ATC is
/// free-floating and ATD unchanged; a failure free-floats ATD
/// 120 s later unless a new attempt started, whose own failure restarts the 120 s.
#[test]
fn prot_10_dfu_2_firmware_update_blocks_charge_and_failure_opens_atd_after_120s() {
    let mut rig = Rig::started();
    let t = rig.now_ms;
    rig.bms.handle_dfu(t, DfuEvent::Started);
    let d = rig.step().clone();
    assert!(!d.atc && d.atc_reasons.contains(Reason::FirmwareUpdate));
    assert!(d.atd, "ATD unchanged");
    rig.run_for(30_000);
    let t_fail = rig.now_ms;
    rig.bms.handle_dfu(t_fail, DfuEvent::Failed);
    let d = rig.step().clone();
    assert!(d.atc && d.atd);
    assert!(d.codes.contains(Code::FirmwareUpdateFailed));
    let off = rig.run_until(200_000, |d| !d.atd).unwrap();
    assert_eq!(off, t_fail + 120_000);
    assert!(rig
        .last()
        .atd_reasons
        .contains(Reason::FirmwareUpdateFailed));
    // A successful new attempt restores ATD.
    let t = rig.now_ms;
    rig.bms.handle_dfu(t, DfuEvent::Started);
    rig.run_for(10_000);
    assert!(
        !rig.last().atd && !rig.last().atc,
        "ATD unchanged (still open) during the retry"
    );
    let t = rig.now_ms;
    rig.bms.handle_dfu(t, DfuEvent::Completed);
    let d = rig.step().clone();
    assert!(d.atd && d.atc);

    // A new attempt within 120 s cancels the countdown; its own failure restarts it.
    let mut rig = Rig::started();
    let t1 = rig.now_ms;
    rig.bms.handle_dfu(t1, DfuEvent::Aborted);
    rig.run_for(100_000);
    let t2 = rig.now_ms;
    rig.bms.handle_dfu(t2, DfuEvent::Started);
    rig.run_for(50_000);
    assert!(
        rig.last().atd,
        "no ATD opening at the first failure + 120 s"
    );
    let t3 = rig.now_ms;
    rig.bms.handle_dfu(t3, DfuEvent::Failed);
    let off = rig.run_until(200_000, |d| !d.atd).unwrap();
    assert_eq!(off, t3 + 120_000);
}

/// DFU-1 (rev 2), PROT-10: an upload that stops making progress (the phone walked away
/// without a word) is aborted 2 minutes after its last chunk; charging comes back then, and
/// PROT-10's 120 s later the loads go off until an update completes. Chunks keep a slow upload
/// alive for as long as it takes.
#[test]
fn dfu_1_prot_10_an_upload_without_progress_for_2_minutes_is_aborted() {
    let mut rig = Rig::started();
    let t = rig.now_ms;
    rig.bms.handle_dfu(t, DfuEvent::Started);
    for _ in 0..10 {
        rig.run_for(60_000);
        let t = rig.now_ms;
        rig.bms.handle_dfu(t, DfuEvent::Progress);
        assert!(!rig.step().atc, "a live upload blocks charging");
    }
    let last_chunk = rig.now_ms;
    let back = rig.run_until(400_000, |d| d.atc).unwrap();
    assert_eq!(
        back,
        last_chunk + 120_000,
        "aborted 2 min after the last chunk"
    );
    assert!(rig.last().atd && rig.last().codes.contains(Code::FirmwareUpdateFailed));
    let off = rig.run_until(400_000, |d| !d.atd).unwrap();
    assert_eq!(off, back + 120_000, "PROT-10's 120 s after the abort");
    assert!(rig
        .last()
        .atd_reasons
        .contains(Reason::FirmwareUpdateFailed));
}

/// PROT-11: every output change comes with an event carrying its reasons; a free-floating
/// ATD/ATC always has at least one reason.
#[test]
fn prot_11_every_output_change_is_reported_with_reasons() {
    let mut rig = Rig::single();
    rig.run_for(3000);
    rig.set_cells(2700);
    rig.run_for(60_000);
    rig.set_cells(3400);
    rig.run_for(20_000);
    rig.set_temp(600);
    rig.run_for(5000);
    rig.remote = Remote::Open;
    rig.run_for(2000);
    rig.remote = Remote::Loop;
    rig.set_temp(250);
    rig.run_for(5000);
    let mut prev = bms_core::Decisions::default();
    let mut changes = 0;
    for r in &rig.records {
        let d = &r.decisions;
        for (output, was, is, reasons) in [
            (Output::Atd, prev.atd, d.atd, d.atd_reasons),
            (Output::Atc, prev.atc, d.atc, d.atc_reasons),
            (
                Output::Prealarm,
                prev.prealarm,
                d.prealarm,
                d.prealarm_reasons,
            ),
        ] {
            let event = Event::OutputChanged {
                output,
                high: is,
                reasons,
            };
            assert_eq!(
                was != is,
                d.events.contains(&event),
                "at {} ms: {output:?}",
                r.at_ms
            );
            changes += usize::from(was != is);
        }
        assert_eq!(d.atd, d.atd_reasons.is_empty());
        assert_eq!(d.atc, d.atc_reasons.is_empty());
        assert_eq!(d.prealarm, !d.prealarm_reasons.is_empty());
        prev = d.clone();
    }
    assert!(changes >= 8, "the scenario changes outputs ({changes})");
}

/// PROT-12: low power (slow tick) while remote is OFF and after an under-voltage disconnect;
/// debounce expiries still wake the loop on time.
#[test]
fn prot_12_low_power_when_remote_off_or_after_uv_disconnect() {
    let mut rig = Rig::started();
    assert!(!rig.last().low_power);
    assert_eq!(rig.last().tick_ms, 100);
    rig.remote = Remote::Open;
    rig.step();
    let d = rig.run_for(500).clone();
    assert!(d.low_power && d.tick_ms == 1000);
    rig.remote = Remote::Loop;
    rig.step();
    let d = rig.run_for(500).clone();
    assert!(!d.low_power);

    rig.set_cells(2700);
    rig.run_until(60_000, |d| !d.atd).unwrap();
    assert!(rig.last().low_power, "after an under-voltage disconnect");
    // Monitoring continues: the release is seen within a slow tick.
    rig.set_cells(3300);
    let t = rig.now_ms;
    let back = rig.run_until(3000, |d| d.atd).unwrap();
    assert!(back <= t + 2000);
    assert!(!rig.last().low_power);

    // With a pending debounce, the deadline is the debounce expiry, not the slow tick.
    let mut rig = Rig::started();
    rig.remote = Remote::Open;
    rig.run_for(2000);
    let t = rig.now_ms;
    let inputs = rig.inputs();
    let mut high = rig.batteries[0].0.clone();
    high.cells_mv[0] = 3800;
    rig.bms.handle_report(t, &high).unwrap();
    assert_eq!(rig.bms.step(t, &inputs).tick_ms, 1000);
    rig.bms.handle_report(t + 300, &high).unwrap();
    let _ = rig.bms.step(t + 300, &inputs);
    assert_eq!(
        rig.bms.next_deadline_ms(),
        Some(t + 1000),
        "OV debounce expiry"
    );
    let d = rig.bms.step(t + 1000, &inputs);
    assert!(
        d.codes.contains(Code::CellOvervoltage),
        "tripped on time in low power"
    );
}

/// LED-1 and LED-2 through the whole BMS: blue follows the app connection, red the codes.
#[test]
fn led_1_led_2_patterns_from_the_bms() {
    let mut rig = Rig::started();
    assert_eq!(rig.last().led_blue, LedPattern::Blink);
    assert_eq!(rig.last().led_red, LedPattern::Off);
    rig.app_connected = true;
    assert_eq!(rig.step().led_blue, LedPattern::Solid);
    rig.set_cells(3050);
    rig.run_until(10_000, |d| d.prealarm).unwrap();
    assert_eq!(rig.last().led_red, LedPattern::Blink, "warning only");
    rig.set_cells(3300);
    rig.set_temp(520);
    rig.run_until(3000, |d| !d.atc).unwrap();
    assert_eq!(rig.last().led_red, LedPattern::Solid, "alarm");
}

/// LED-2 (rev 2), PROT-7: a battery's own "not allowed" flag opens an output, so it is an alarm:
/// red solid, not blinking.
#[test]
fn led_2_prot_7_a_batterys_own_flag_is_an_alarm() {
    use bms_core::codes::Severity;
    for charge in [false, true] {
        let mut rig = Rig::started();
        if charge {
            rig.batteries[0].0.flags.allowed_to_charge = false;
        } else {
            rig.batteries[0].0.flags.allowed_to_discharge = false;
        }
        rig.run_until(2000, |d| !d.atc || !d.atd).unwrap();
        let d = rig.last();
        let code = if charge {
            Code::BatteryChargeBlocked
        } else {
            Code::BatteryDischargeBlocked
        };
        assert!(d.codes.contains(code));
        assert_eq!(code.severity(), Severity::Alarm);
        assert_eq!(d.led_red, LedPattern::Solid, "{code}");
    }
}

/// HIST-3 through the BMS: an automatic synchronisation is counted when the SoC had dropped
/// below 90 % since the previous one. The first one after installation follows an unknown SoC
/// (MON-7), so no drop is known and it is not counted; after a known drop (SoC set, or restored)
/// the first one is.
#[test]
fn hist_3_first_automatic_sync_counted_only_after_a_known_drop() {
    let mut rig = Rig::started();
    rig.full_charge();
    assert_eq!(rig.bms.history().synchronisations(), 0, "SoC was unknown");

    let mut rig = Rig::started();
    let now = rig.now_ms;
    rig.bms.set_soc(now, 500).unwrap();
    rig.run_for(1000);
    rig.full_charge();
    assert_eq!(rig.bms.history().synchronisations(), 1, "known at 50 %");
}

/// BLE-3: the Instant Readout's BMS record has no field for over-voltage or low temperature
/// (docs/protocol.md): they show only as "allowed to charge = no", every alarm field OK.
#[test]
fn ble_3_overvoltage_and_low_temperature_show_as_not_allowed_to_charge() {
    use bms_core::readout::Level;
    for low_temperature in [false, true] {
        let mut rig = Rig::started();
        if low_temperature {
            rig.set_temp(30);
        } else {
            rig.set_cell(0, 0, 3800);
        }
        rig.run_for(4000);
        assert!(!rig.last().atc);
        let v = rig.bms.readout_values();
        assert_eq!(v.allowed_to_charge, Some(false));
        assert_eq!(v.allowed_to_discharge, Some(true));
        for level in [
            v.low_cell_voltage,
            v.high_temperature,
            v.low_soc,
            v.battery_communication,
            v.load_disconnect,
        ] {
            assert_eq!(level, Some(Level::Ok));
        }
        assert_eq!(v.error_code, 0, "no invented meaning in the error byte");
    }
}

/// BLE-3, PROT-8, LED-2: loads switched off by the remote input are the owner's decision, not
/// an alarm: the readout says "not allowed to discharge" with its load-disconnect field OK, as
/// the LED (dark) and the codes (none) do. A protection that opens ATD while remote is OFF is
/// an alarm again.
#[test]
fn ble_3_prot_8_remote_off_is_no_load_disconnect_alarm() {
    use bms_core::readout::Level;
    let mut rig = Rig::started();
    rig.remote = Remote::Open;
    rig.run_for(2000);
    assert!(!rig.last().atd, "remote OFF opens ATD");
    assert_eq!(rig.last().atd_reasons, Reasons::of(Reason::RemoteOff));
    let v = rig.bms.readout_values();
    assert_eq!(v.allowed_to_discharge, Some(false));
    assert_eq!(
        v.load_disconnect,
        Some(Level::Ok),
        "remote OFF alone shown as a load-disconnect alarm"
    );
    assert_eq!(
        rig.last().led_red,
        LedPattern::Off,
        "no alarm on the LED either"
    );
    // Too hot to discharge while remote is OFF: an alarm, whatever the remote says.
    rig.set_temp(650);
    rig.run_for(4000);
    assert!(rig.last().atd_reasons.contains(Reason::VeryHighTemperature));
    assert_eq!(rig.bms.readout_values().load_disconnect, Some(Level::Alarm));
    // Back to ON and cool: ATD high, field OK.
    rig.set_temp(250);
    rig.remote = Remote::Loop;
    rig.run_for(10_000);
    assert!(rig.last().atd);
    assert_eq!(rig.bms.readout_values().load_disconnect, Some(Level::Ok));
}

/// Time going backwards counts as no time passed: no panic, no debounce shortcut.
#[test]
fn time_going_backwards_is_no_time_passed() {
    let mut rig = Rig::started();
    rig.set_cell(0, 0, 3800);
    rig.run_for(1000);
    let inputs = rig.inputs();
    let t = rig.now_ms;
    let before = rig.last().clone();
    let d = rig.bms.step(5, &inputs);
    assert_eq!(rig.bms.now_ms(), t);
    assert_eq!(
        (d.atd, d.atc, d.codes),
        (before.atd, before.atc, before.codes)
    );
    assert!(rig.bms.next_deadline_ms().unwrap() >= t);
    // A later report stamped in the past counts at the current time.
    let report = rig.batteries[0].0.clone();
    rig.bms.handle_report(0, &report).unwrap();
    assert_eq!(rig.bms.bank().battery(0).unwrap().last_valid_ms(), t);
}

/// Settings refused as a whole change nothing; restored settings that do not validate fall back
/// to the defaults with an error.
#[test]
fn settings_write_is_validated_and_restored_garbage_is_an_error() {
    let mut rig = Rig::started();
    let bad = Settings {
        prealarm_cell_mv: 2000,
        ..Settings::default()
    };
    assert!(rig.bms.write_settings(bad).is_err());
    assert_eq!(*rig.bms.settings(), Settings::default());

    let config = Config {
        settings: bad,
        ..Config::default()
    };
    let mut bms = Bms::new(config);
    assert_eq!(*bms.settings(), Settings::default());
    let d = bms.step(0, &Inputs::default());
    assert!(d.codes.contains(Code::SettingsCorrupt));
    assert_eq!(d.led_red, LedPattern::Solid);
    bms.factory_reset();
    assert!(!bms
        .step(1, &Inputs::default())
        .codes
        .contains(Code::SettingsCorrupt));
}

/// The whole BMS with 50 × 16 cells must fit the static RAM budget.
#[test]
fn bms_fits_16_kib() {
    let size = core::mem::size_of::<Bms>();
    assert!(size <= 16 * 1024, "Bms is {size} bytes");
}

/// BANK-1 (M1): after discovery, one valid frame from an unknown serial (a ghost) adds no
/// battery, so nothing is lost 5 s later and the outputs stay on; a refused report from an
/// unknown serial creates nothing either; a real newcomer joins at its
/// BATTERY_JOIN_REPORTS-th valid report in a row.
#[test]
fn bank_1_a_ghost_frame_adds_no_battery_and_a_newcomer_joins_after_reports_in_a_row() {
    use bms_core::limits::BATTERY_JOIN_REPORTS;
    let mut rig = Rig::started();
    let now = rig.now_ms;
    let ghost = report(0xDEAD_BEEF, BatteryModel::Lfp12V8, 3300);
    assert_eq!(
        rig.bms.handle_report(now, &ghost),
        Err(ReportError::NotYetJoined {
            serial: 0xDEAD_BEEF,
            seen: 1
        })
    );
    let mut broken = report(0xBAD, BatteryModel::Lfp12V8, 3300);
    broken.cells_mv[0] = 6000;
    assert!(rig.bms.handle_report(now, &broken).is_err());
    rig.run_for(10_000);
    assert_eq!(rig.bms.bank().batteries().len(), 1, "a ghost joined");
    let d = rig.last();
    assert!(d.atd && d.atc, "{:?} {:?}", d.atd_reasons, d.atc_reasons);

    let newcomer = report(2000, BatteryModel::Lfp12V8, 3300);
    for seen in 1..BATTERY_JOIN_REPORTS {
        let now = rig.now_ms;
        assert_eq!(
            rig.bms.handle_report(now, &newcomer),
            Err(ReportError::NotYetJoined { serial: 2000, seen })
        );
        rig.run_for(1_000);
    }
    let now = rig.now_ms;
    assert_eq!(rig.bms.handle_report(now, &newcomer), Ok(()));
    assert_eq!(rig.bms.bank().batteries().len(), 2);
    assert_eq!(
        rig.bms.invalid_reports(),
        1,
        "only the broken report counts"
    );

    // Reports 5 s apart are not in a row (a gap of the lost time starts over): ghost frames now
    // and then never add a battery, however many come.
    let mut rig = Rig::started();
    let occasional = report(3000, BatteryModel::Lfp12V8, 3300);
    for _ in 0..2 * BATTERY_JOIN_REPORTS {
        let now = rig.now_ms;
        assert_eq!(
            rig.bms.handle_report(now, &occasional),
            Err(ReportError::NotYetJoined {
                serial: 3000,
                seen: 1
            })
        );
        rig.run_for(5_000);
    }
    assert_eq!(rig.bms.bank().batteries().len(), 1);
    assert!(rig.last().atd && rig.last().atc);
}

/// BANK-4: a battery taken out on purpose is lost (outputs free-floating); the authenticated
/// ForgetLostBatteries command forgets it and the bank is complete again.
#[test]
fn bank_4_forget_lost_batteries_command_restores_the_bank() {
    use bms_core::protocol::{
        decode_body, decode_response, encode_request, handle_request, Access, BmsDevice,
        Characteristic, Command, ForgottenBatteries, Status, MAX_RESPONSE_LEN,
    };
    let mut rig = Rig::new(2, 1, BatteryModel::Lfp12V8);
    rig.run_for(3_000);
    assert!(rig.last().atd);
    rig.silence(1, true);
    rig.run_for(6_000);
    assert!(!rig.last().atd && rig.last().atd_reasons.contains(Reason::BatteryLost));
    let mut req = [0u8; 8];
    let n = encode_request(&Command::ForgetLostBatteries, &mut req).unwrap();
    let mut resp = [0u8; MAX_RESPONSE_LEN];
    let now = rig.now_ms;
    for (authenticated, want) in [(false, Status::NotAuthenticated), (true, Status::Ok)] {
        let mut random = |_: &mut [u8]| false;
        let mut device = BmsDevice {
            bms: &mut rig.bms,
            random: &mut random,
        };
        let reply = handle_request(
            &mut device,
            now,
            Characteristic::ControlPoint as u8,
            Access::Write,
            authenticated,
            &req[..n],
            &mut resp,
        )
        .unwrap();
        assert_eq!(reply.status, want);
    }
    let (_, body) = decode_response(&resp).unwrap();
    let len = 1;
    assert_eq!(
        decode_body::<ForgottenBatteries>(&body[..len])
            .unwrap()
            .count,
        1
    );
    rig.run_for(3_000);
    assert!(
        rig.last().atd && rig.last().atc,
        "{:?}",
        rig.last().atd_reasons
    );
    assert_eq!(rig.bms.bank().batteries().len(), 1);
}

/// A single-battery rig started warm from `retained`, the reset `gap_ms` after it was written.
fn warm_rig(retained: Retained, gap_ms: u64) -> Rig {
    let config = Config {
        warm_restart: Some(WarmRestart { retained, gap_ms }),
        ..Config::default()
    };
    Rig::with_config(1, 1, BatteryModel::Lfp12V8, config)
}

/// The retained state of a healthy, running bank (through its bytes, as the firmware keeps it).
fn running_state() -> Retained {
    let rig = Rig::started();
    let kept = rig.bms.retained();
    assert!(kept.atd && kept.atc && !kept.prealarm && kept.safe);
    Retained::decode(&kept.encode()).unwrap()
}

/// PROT-1 (rev 2), DFU-1: after a warm restart (a firmware update's reboot, a watchdog reset)
/// ATD and ATC are driven at the first step from the retained state, before any battery data,
/// and stay driven through the discovery of the batteries; the judged data then rules (a bank
/// found under-voltage runs loads: the pre-alarm warns and ATD opens 30 s later, PROT-2 rev 2).
#[test]
fn prot_1_dfu_1_warm_restart_drives_the_outputs_at_the_first_step() {
    let mut rig = warm_rig(running_state(), 3000);
    let d = rig.step().clone();
    assert!(d.atd && d.atc, "driven at once: {d:?}");
    assert!(!d.prealarm);
    rig.run_for(10_000);
    assert!(rig
        .records
        .iter()
        .all(|r| r.decisions.atd && r.decisions.atc));
    assert!(
        rig.bms.retained().safe,
        "safe again once the data was judged"
    );

    let mut rig = warm_rig(running_state(), 0);
    rig.set_cells(2700);
    let warned = rig.run_until(10_000, |d| d.prealarm).unwrap();
    assert!(rig.records.iter().all(|r| r.decisions.atd), "loads run");
    let off = rig.run_until(60_000, |d| !d.atd).unwrap();
    assert_eq!(off, warned + 30_000, "the pre-alarm's 30 s lead");
    assert!(rig.last().atd_reasons.contains(Reason::CellUndervoltage));
}

/// PROT-1 (rev 2), PROT-2, PROT-4: after a warm restart the outputs driven from the retained
/// state run the loads and chargers, so the first data set's conditions are debounced as for
/// running outputs: a 3 s dip to 2.75 V (a surge) in the first reports did cut the loads for
/// 2 s, and a 0.5 s spike to 3.76 V opened ATC for 1 s, neither debounced. Found by a spec
/// audit.
#[test]
fn prot_1_prot_2_prot_4_a_dip_or_spike_at_a_warm_restart_switches_nothing() {
    let mut rig = warm_rig(running_state(), 0);
    rig.set_cells(2750);
    rig.run_for(3000);
    rig.set_cells(3300);
    rig.run_for(10_000);
    let cut = rig.records.iter().find(|r| !r.decisions.atd);
    assert!(cut.is_none(), "loads cut by a 3 s dip: {cut:?}");
    assert!(rig.records.iter().all(|r| !r.decisions.prealarm));

    let mut rig = warm_rig(running_state(), 0);
    rig.set_cell(0, 1, 3760);
    rig.run_for(2500);
    rig.set_cell(0, 1, 3400);
    rig.run_for(5000);
    let cut = rig.records.iter().find(|r| !r.decisions.atc);
    assert!(cut.is_none(), "charging cut by a 0.5 s spike: {cut:?}");
}

/// PROT-1 (rev 2), BANK-4: with no battery data after a warm restart the outputs go
/// free-floating 5 s after the start; the state kept meanwhile is not safe, so a second reset
/// does not restore them again.
#[test]
fn prot_1_warm_restart_without_battery_data_ends_after_5_s() {
    let mut rig = warm_rig(running_state(), 3000);
    rig.silence(0, true);
    assert!(rig.step().atd);
    assert!(!rig.bms.retained().safe, "held, not judged");
    let off = rig.run_until(10_000, |d| !d.atd).unwrap();
    assert_eq!(off, 5000);
    let d = rig.last();
    assert!(!d.atc && d.atd_reasons.contains(Reason::NoValidData));
}

/// PROT-1: a cold start, a retained state 10 s old or older, or one made with an alarm active
/// leaves every output free-floating until the first data set, as at power-up.
#[test]
fn prot_1_old_or_unsafe_retained_state_waits_for_data() {
    for (state, gap_ms) in [
        (running_state(), 10_000),
        (
            Retained {
                safe: false,
                ..running_state()
            },
            0,
        ),
    ] {
        let mut rig = warm_rig(state, gap_ms);
        let d = rig.step().clone();
        assert!(!d.atd && !d.atc, "{state:?} {gap_ms}");
        assert!(d.atd_reasons.contains(Reason::NoValidData));
        assert!(
            rig.run_until(5000, |d| d.atd).is_some(),
            "then as at power-up"
        );
    }
    let mut rig = Rig::started();
    rig.set_cells(2750);
    rig.run_until(60_000, |d| !d.atd).unwrap();
    assert!(!rig.bms.retained().safe, "an alarm is active");
    let mut rig = Rig::single();
    assert!(!rig.step().atd);
    assert!(!rig.bms.retained().safe, "nothing judged yet");
}

/// PROT-11 (rev 2): the restart is in the event log: each output that was high went
/// free-floating at the reset (reason `restart`), then came back at the first step; an output
/// not restored reports only the drop.
#[test]
fn prot_11_a_warm_restart_reports_the_drop_and_the_return() {
    let outputs = |d: &bms_core::Decisions| -> std::vec::Vec<Event> {
        d.events
            .iter()
            .filter(|e| matches!(e, Event::OutputChanged { .. }))
            .copied()
            .collect()
    };
    let restart = bms_core::Reasons::of(Reason::Restart);
    let empty = bms_core::Reasons::EMPTY;
    let change = |output, high, reasons| Event::OutputChanged {
        output,
        high,
        reasons,
    };
    let drops = [
        change(Output::Atd, false, restart),
        change(Output::Atc, false, restart),
    ];
    let returns = [
        change(Output::Atd, true, empty),
        change(Output::Atc, true, empty),
    ];
    let mut rig = warm_rig(running_state(), 0);
    let d = rig.step().clone();
    assert_eq!(outputs(&d), [drops, returns].concat());
    let mut rig = warm_rig(running_state(), 20_000);
    let d = rig.step().clone();
    assert_eq!(outputs(&d), drops.to_vec(), "too old: only the drop");
}

/// PROT-1 (rev 2), PROT-8: the remote read OFF at the warm start keeps the outputs off.
#[test]
fn prot_1_prot_8_warm_restart_with_the_remote_off_keeps_outputs_off() {
    let mut rig = warm_rig(running_state(), 0);
    rig.remote = Remote::Open;
    let d = rig.step().clone();
    assert!(!d.atd && !d.atc && d.atd_reasons.contains(Reason::RemoteOff));
}

/// MON-2, BANK-4: the charged condition must hold continuously, as observed, for the charged
/// detection time. While the battery is lost nothing is observed, so the time restarts when its
/// data returns: with 1 min, 20 s charged, 30 s of the battery unplugged, then charged again,
/// the synchronisation comes 1 min after the data returned, not 1 min after the first 20 s.
#[test]
fn mon_2_bank_4_a_data_loss_restarts_the_charged_detection_time() {
    let settings = Settings {
        charged_detection_min: 1,
        ..Settings::default()
    };
    let config = Config {
        settings,
        ..Config::default()
    };
    let mut rig = Rig::with_config(1, 1, BatteryModel::Lfp12V8, config);
    rig.run_for(3000);
    rig.set_cells(3600);
    rig.set_current(1000);
    rig.run_for(20_000);
    rig.silence(0, true);
    rig.run_until(10_000, |d| d.codes.contains(Code::BatteryLost))
        .expect("battery lost");
    rig.run_for(25_000);
    rig.silence(0, false);
    let back = rig
        .run_until(2_000, |d| !d.codes.contains(Code::BatteryLost))
        .expect("battery back");
    assert_eq!(rig.bms.monitor().soc_permille(), None);
    let mut synced = None;
    while synced.is_none() && rig.now_ms < back + 120_000 {
        rig.advance();
        if rig.bms.monitor().soc_permille().is_some() {
            synced = Some(rig.now_ms);
        }
    }
    let synced = synced.expect("synchronised once the condition was seen for 1 min");
    assert!(
        synced >= back + 60_000,
        "synchronised {} ms after the data returned: the unobserved 30 s counted",
        synced - back
    );
    assert!(
        synced <= back + 61_000,
        "synchronised {} ms after",
        synced - back
    );
}

/// BANK-1, BANK-2, PROT-2: the batteries in series are derived from the bank voltage the BMS
/// measures and the battery voltages the batteries report once a second. A surge moves the first
/// at once and the reports up to a second later; that moment is no new layout. 48 V bank of four
/// 12.8 V batteries at 3.30 V, a 3 s surge to 2.75 V per cell: no configuration error, ATD and
/// ATC stay high (PROT-2 debounces such a dip), the layout stays 4 in series.
#[test]
fn bank_1_bank_2_prot_2_a_surge_is_no_new_layout() {
    let mut rig = Rig::new(4, 4, BatteryModel::Lfp12V8);
    rig.run_for(3000);
    assert!(rig.last().atd && rig.last().atc);
    // Just after a report round: the supply follows the cells at once, the reports next second.
    rig.run_for(100);
    let from = rig.records.len();
    rig.set_cells(2750);
    rig.run_for(3000);
    rig.set_cells(3300);
    rig.run_for(3000);
    for r in &rig.records[from..] {
        assert!(
            r.decisions.atd
                && r.decisions.atc
                && !r.decisions.codes.contains(Code::ConfigurationError),
            "at {} ms: atd {} atc {} codes {}",
            r.at_ms,
            r.decisions.atd,
            r.decisions.atc,
            r.decisions.codes
        );
    }
    assert_eq!(rig.bms.bank().topology().map(|t| t.series), Some(4));
}

/// BANK-2, BANK-4: a battery of a series string that falls silent is lost, not a wrong layout.
/// The members left (one of the two 12.8 V batteries of a 24 V bank) do not form whole
/// strings, but the bank is not misconfigured: no configuration error is raised (it would be
/// recorded in the history's last errors and sent as the readout's error), and the outputs
/// come back as soon as the battery reports again, not once the layout has been judged anew.
#[test]
fn bank_2_bank_4_a_lost_battery_of_a_string_is_no_configuration_error() {
    let mut rig = Rig::new(2, 2, BatteryModel::Lfp12V8);
    rig.run_for(3000);
    assert!(rig.last().atd && rig.last().atc);
    rig.silence(1, true);
    let from = rig.records.len();
    rig.run_for(15_000);
    assert!(rig.last().codes.contains(Code::BatteryLost));
    for r in &rig.records[from..] {
        assert!(
            !r.decisions.codes.contains(Code::ConfigurationError),
            "at {} ms: codes {}",
            r.at_ms,
            r.decisions.codes
        );
    }
    let config_error = Some(u16::from(Code::ConfigurationError.number()));
    assert!(!rig.bms.history().last_errors().contains(&config_error));
    rig.silence(1, false);
    let back_from = rig.now_ms;
    let back = rig
        .run_until(5000, |d| d.atd && d.atc)
        .expect("outputs back");
    assert!(
        back - back_from <= 1000,
        "outputs back {} ms after the battery reports again",
        back - back_from
    );
    assert!(rig.last().codes.is_empty(), "codes {}", rig.last().codes);
}

/// The loads and chargers run and the balancer judgement is gone: `why` the bank changed.
fn assert_running_with_the_balancer_unknown(rig: &Rig, why: &str) {
    assert!(
        rig.last().atd && rig.last().atc,
        "codes {}",
        rig.last().codes
    );
    assert_eq!(rig.bms.balancer(), BalancerState::Unknown, "{why}");
}

/// BANK-5, BAL-2: a battery added to the bank makes the balancer Unknown even when the bank's
/// capacity stays the same: a second 100 Ah battery wired in series (12 V bank made 24 V), or
/// a battery swapped for a new one of the same capacity (the old one lost and forgotten); so
/// does one taken out of a series string.
#[test]
fn bank_5_bal_2_a_battery_added_at_the_same_capacity_makes_the_balancer_unknown() {
    // A second battery in series: 100 Ah at 12.8 V becomes 100 Ah at 25.6 V.
    let mut rig = Rig::new(1, 1, BatteryModel::Lfp12V8);
    rig.run_for(3000);
    rig.full_charge();
    assert_eq!(rig.bms.balancer(), BalancerState::Balanced);
    rig.series = 2;
    rig.batteries
        .push((report(3000, BatteryModel::Lfp12V8, 3400), false));
    rig.run_for(10_000);
    let t = rig.bms.bank().topology().unwrap();
    assert_eq!((t.batteries, t.series, t.capacity_dah), (2, 2, 1000));
    assert_running_with_the_balancer_unknown(&rig, "a battery was just added in series");

    // A battery swapped for a new one of the same capacity.
    let mut rig = Rig::new(1, 1, BatteryModel::Lfp12V8);
    rig.run_for(3000);
    rig.full_charge();
    assert_eq!(rig.bms.balancer(), BalancerState::Balanced);
    rig.silence(0, true);
    rig.run_for(60_000);
    rig.batteries
        .push((report(3000, BatteryModel::Lfp12V8, 3400), false));
    rig.run_for(5000);
    assert_eq!(rig.bms.forget_lost_batteries(), 1);
    rig.batteries.remove(0);
    rig.run_for(3000);
    let t = rig.bms.bank().topology().unwrap();
    assert_eq!((t.batteries, t.capacity_dah), (1, 1000));
    assert_running_with_the_balancer_unknown(&rig, "the battery was just replaced");

    // A battery of a series string taken out (lost, then forgotten): 100 Ah at 25.6 V becomes
    // 100 Ah at 12.8 V, a battery disappearing (BANK-5) with no battery added.
    let mut rig = Rig::new(2, 2, BatteryModel::Lfp12V8);
    rig.run_for(3000);
    rig.full_charge();
    assert_eq!(rig.bms.balancer(), BalancerState::Balanced);
    // Forgetting with no battery lost changes no bank.
    assert_eq!(rig.bms.forget_lost_batteries(), 0);
    rig.run_for(1000);
    assert_eq!(
        rig.bms.balancer(),
        BalancerState::Balanced,
        "nothing removed"
    );
    rig.silence(1, true);
    rig.run_for(10_000);
    assert_eq!(rig.bms.forget_lost_batteries(), 1);
    rig.batteries.pop();
    rig.series = 1;
    rig.run_for(3000);
    let t = rig.bms.bank().topology().unwrap();
    assert_eq!((t.batteries, t.series, t.capacity_dah), (1, 1, 1000));
    assert_running_with_the_balancer_unknown(&rig, "a battery was just removed");
}

/// BANK-1: more new batteries than the newcomer table holds (4), connected at once after
/// discovery, all join: each joins at its third valid report in a row once it has a place. The
/// table pushed out its oldest entry for every further newcomer, so five or more batteries
/// reporting every second pushed each other out for ever and none ever joined.
#[test]
fn bank_1_six_batteries_added_at_once_all_join() {
    let mut rig = Rig::started();
    for serial in 3000..3006 {
        rig.batteries
            .push((report(serial, BatteryModel::Lfp12V8, 3300), false));
    }
    // The four with a place join together at their third report (one joining does not wipe
    // the others' count).
    rig.run_for(3 * 1000);
    assert_eq!(rig.bms.bank().topology().unwrap().batteries, 5);
    rig.run_for(17_000);
    assert_eq!(rig.bms.bank().topology().unwrap().batteries, 7);
    assert!(
        rig.last().atd && rig.last().atc,
        "codes {}",
        rig.last().codes
    );
}

/// Eight 12.8 V batteries in parallel whose first reports come one after another over 3 s, as
/// packs polled in turn on a slow line do (the first round also reads their counts and
/// capacity: 16 Daly packs at 115 200 bit/s take 2.8 s, 9 at 9 600 bit/s about 4 s).
fn staggered_rig(config: Config) -> Rig {
    let mut rig = Rig::with_config(8, 1, BatteryModel::Lfp12V8, config);
    for i in 1..8 {
        rig.silence(i, true);
    }
    rig
}

/// Runs `rig` for `ms`, letting battery i report from 400·i ms on.
fn run_staggered(rig: &mut Rig, ms: u64) {
    let end = rig.now_ms + ms;
    while rig.now_ms < end {
        for i in 1..8 {
            if rig.now_ms >= 400 * i as u64 {
                rig.silence(i, false);
            }
        }
        rig.run_for(100);
    }
}

/// BANK-1, PROT-1: batteries whose first reports come one after another (a polled line whose
/// first round is longer than the 2 s discovery window) are all found before the first data set
/// is judged: the outputs switch on with the whole bank, and its capacity never changes after.
/// The later batteries were taken as newcomers: the set was judged complete with 6 of 8
/// batteries (16 Daly packs at 115 200 bit/s: 12 of 16), the outputs switched on, and the
/// capacity went 600 → 800 Ah 3 s later (the SoC rescaled, the balancer's judgement lost at
/// every start, BAL-2).
#[test]
fn bank_1_prot_1_batteries_read_one_after_another_are_all_found_before_the_outputs_switch_on() {
    let mut rig = staggered_rig(Config::default());
    run_staggered(&mut rig, 15_000);
    let first_on = rig
        .records
        .iter()
        .position(|r| r.decisions.atd && r.decisions.atc)
        .expect("outputs on");
    let on_at = rig.records[first_on].at_ms;
    assert!(on_at <= 5_100, "outputs on at {on_at} ms");
    assert_eq!(rig.bms.bank().topology().unwrap().batteries, 8);
    assert_eq!(rig.bms.monitor().capacity_mah(), 800_000);
    // From the first step with the outputs on, the monitor counted with the whole bank.
    let mut check = staggered_rig(Config::default());
    run_staggered(&mut check, on_at);
    assert_eq!(check.bms.bank().topology().unwrap().batteries, 8);
    assert_eq!(check.bms.monitor().capacity_mah(), 800_000, "at {on_at} ms");
}

/// PROT-1 (rev 2), BANK-1: after a warm restart the outputs stay driven while the batteries of
/// a slow line are still being found (reports keep coming), past the 5 s a silent bus gets.
#[test]
fn prot_1_bank_1_a_warm_restart_holds_the_outputs_while_batteries_are_found() {
    let config = Config {
        warm_restart: Some(WarmRestart {
            retained: running_state(),
            gap_ms: 0,
        }),
        ..Config::default()
    };
    let mut rig = staggered_rig(config);
    // The first battery only reports from 3 s on: discovery ends 2 s after the last one found.
    rig.silence(0, true);
    let end = rig.now_ms + 15_000;
    while rig.now_ms < end {
        if rig.now_ms >= 3000 {
            rig.silence(0, false);
            for i in 1..8 {
                if rig.now_ms >= 3000 + 400 * i as u64 {
                    rig.silence(i, false);
                }
            }
        }
        rig.run_for(100);
    }
    let cut = rig
        .records
        .iter()
        .find(|r| !r.decisions.atd || !r.decisions.atc);
    assert!(cut.is_none(), "outputs cut: {cut:?}");
    assert_eq!(rig.bms.bank().topology().unwrap().batteries, 8);
}

/// BANK-1, BANK-5, MON-1: the bank capacity is the sum of what the batteries report. One report
/// with another capacity (a garbled frame that passed its checksum, or a forged one) is no new
/// bank: before, the monitor counted the report period against it and rescaled the SoC to it
/// and back (one report of 0.1 Ah with a 100 A discharge took a 100 Ah battery at 30 % to 5 %,
/// under the discharge floor: ATD off until the next full charge; PROT-13's current limit now
/// bounds that too), and the balancer forgot its judgement of the last full charge as for a
/// battery added (BAL-2). A capacity that holds (a pack that learned its capacity anew) is
/// taken after the settle time.
#[test]
fn bank_1_mon_1_prot_9_one_report_of_another_capacity_moves_no_soc() {
    let mut rig = Rig::single();
    rig.run_for(3000);
    rig.full_charge();
    rig.set_current(-5000);
    rig.run_for(5050);
    let before = rig.bms.monitor_status().soc_permille.unwrap();
    let mut forged = rig.batteries[0].0.clone();
    forged.capacity_dah = 10;
    forged.current_ma = -10_000;
    assert_eq!(rig.bms.handle_report(rig.now_ms, &forged), Ok(()));
    let from = rig.records.len();
    rig.run_for(3000);
    let after = rig.bms.monitor_status().soc_permille.unwrap();
    assert!(
        before - after <= 1,
        "one report took the SoC from {before} to {after} permille"
    );
    assert_eq!(rig.bms.balancer(), BalancerState::Balanced);
    assert!(rig.records[from..].iter().all(|r| r.decisions.atd));
    assert_eq!(
        rig.bms.bank().topology().map(|t| t.capacity_dah),
        Some(1000)
    );
    // A capacity the battery keeps reporting is the bank's.
    rig.batteries[0].0.capacity_dah = 900;
    rig.run_for(3000);
    assert_eq!(rig.bms.bank().topology().map(|t| t.capacity_dah), Some(900));
    assert_eq!(rig.bms.monitor().capacity_mah(), 90_000);
}

/// BANK-1, MON-1: a capacity is taken only once the same value has held for the settle time:
/// reports that keep giving other values (garbled or forged frames, 90 Ah and 80 Ah in turn, or
/// 90 Ah every other report) never do, however long they go on; the settle time starts over at
/// each new value and at each report of the capacity in use.
#[test]
fn bank_1_mon_1_capacities_that_keep_changing_are_never_taken() {
    let mut rig = Rig::started();
    for k in 0..40 {
        let other = if k < 20 { 800 } else { 1000 };
        rig.batteries[0].0.capacity_dah = if k % 2 == 0 { 900 } else { other };
        rig.run_for(1000);
        assert_eq!(
            rig.bms.bank().topology().map(|t| t.capacity_dah),
            Some(1000),
            "after {} alternating reports",
            k + 1
        );
    }
    assert_eq!(rig.bms.monitor().capacity_mah(), 100_000);
}

/// PROT-13, BANK-5: a battery does not change its cell count. One valid report of another model
/// (a frame garbled past its check, or a forged one) made the battery no member for a moment
/// and the layout was derived anew from it: a 12.8 V battery reporting 16 cells was no battery
/// in series, and ATD and ATC went free-floating ("no valid data", no code) until its next
/// report. Such a report is refused like an implausible one (the data of the last valid report
/// stays in use, the error is raised until the next valid report); a model the battery keeps
/// reporting is taken after the settle time, as before.
#[test]
fn prot_13_bank_5_one_report_of_another_model_switches_no_output() {
    let mut rig = Rig::single();
    rig.run_for(3000);
    rig.run_for(50);
    let mut forged = rig.batteries[0].0.clone();
    forged.model = BatteryModel::Lfp51V2;
    forged.cells_mv = heapless::Vec::from_slice(&[3300; 16]).unwrap();
    assert_eq!(
        rig.bms.handle_report(rig.now_ms, &forged),
        Err(ReportError::ModelChanged {
            cells: 4,
            reported_cells: 16
        })
    );
    let from = rig.records.len();
    rig.run_for(6000);
    for r in &rig.records[from..] {
        assert!(
            r.decisions.atd && r.decisions.atc,
            "at {} ms: atd {} ({}) atc {} ({})",
            r.at_ms,
            r.decisions.atd,
            r.decisions.atd_reasons,
            r.decisions.atc,
            r.decisions.atc_reasons
        );
    }
    assert!(rig.records[from]
        .decisions
        .codes
        .contains(Code::InvalidBatteryData));
    assert!(!rig.last().codes.contains(Code::InvalidBatteryData));
    assert_eq!(rig.bms.bank().batteries()[0].model, BatteryModel::Lfp12V8);
    // A model the battery keeps reporting is the battery's.
    rig.batteries[0].0 = forged;
    rig.run_for(3000);
    assert_eq!(rig.bms.bank().batteries()[0].model, BatteryModel::Lfp51V2);
}

/// PROT-13, MON-1: one report of an absurd current (a garbled frame's i32::MIN mA, 2.1 million
/// amps) was counted for the report period: the SoC of a 100 Ah battery went from 50 % to 0 %
/// at once (ATD free-floating for the discharge floor until the next full charge), and i32::MAX
/// took it to 100 % (the floor no longer guarding the discharge). A current beyond 10 C of the
/// battery's capacity in use is refused like an implausible report; 10 C is believed.
#[test]
fn prot_13_mon_1_one_report_of_an_absurd_current_moves_no_soc() {
    for current_ma in [i32::MIN, i32::MAX] {
        let mut rig = Rig::single();
        rig.run_for(3000);
        rig.bms.set_soc(rig.now_ms, 500).unwrap();
        rig.run_for(5050);
        let mut forged = rig.batteries[0].0.clone();
        forged.current_ma = current_ma;
        // A capacity claimed with it does not widen the limit.
        forged.capacity_dah = u16::MAX;
        assert_eq!(
            rig.bms.handle_report(rig.now_ms, &forged),
            Err(ReportError::Current {
                current_ma,
                max_ma: 1_000_000
            })
        );
        let from = rig.records.len();
        rig.run_for(3000);
        let soc = rig.bms.monitor_status().soc_permille;
        assert_eq!(soc, Some(500), "{current_ma} mA took the SoC to {soc:?}");
        assert!(rig.records[from..].iter().all(|r| r.decisions.atd));
    }
    let mut rig = Rig::single();
    rig.run_for(3000);
    let mut heavy = rig.batteries[0].0.clone();
    heavy.current_ma = -1_000_000;
    assert_eq!(rig.bms.handle_report(rig.now_ms, &heavy), Ok(()));
}

/// BLE-3: every change of the Instant Readout payload takes a nonce of 16 bits. Measurements
/// change it at most once per READOUT_MIN_CHANGE_MS, but a change of the outputs, the error or
/// an alarm went out at once, however often: a battery whose charge switch flaps every second
/// (a pack's MOSFET cycling at the top of charge, or a forged frame on the battery bus every
/// second) made ATC flap and took a nonce a second, 3 600 an hour, so the nonce came round under
/// the same key after 18 hours and the readout's keystream repeated. Such changes now draw on a
/// budget of READOUT_URGENT_BURST that refills once per READOUT_MIN_CHANGE_MS: the first goes
/// out at once, the nonces of a day stay within the documented worst case.
#[test]
fn ble_3_a_flapping_output_takes_no_more_nonces_than_the_interval_allows() {
    use bms_core::limits::{READOUT_MIN_CHANGE_MS, READOUT_URGENT_BURST};
    let mut rig = Rig::single();
    rig.run_for(10_000);
    let start = rig.now_ms;
    let mut changes = 0u64;
    let mut first = None;
    let mut flag = true;
    let mut next_toggle = start;
    while rig.now_ms < start + 3_600_000 {
        if rig.now_ms >= next_toggle {
            flag = !flag;
            rig.batteries[0].0.flags.allowed_to_charge = flag;
            next_toggle += 1000;
        }
        let (adv_changed, atc) = {
            let d = rig.advance();
            (d.adv_changed, d.atc)
        };
        if adv_changed {
            changes += 1;
            first.get_or_insert(rig.now_ms);
        }
        assert!(
            first.is_some() || atc,
            "ATC went free-floating at {} ms and the readout waited",
            rig.now_ms
        );
        if rig.records.len() > 1000 {
            rig.records.drain(..900);
        }
    }
    let allowed = READOUT_URGENT_BURST + 3_600_000 / READOUT_MIN_CHANGE_MS;
    assert!(
        changes <= allowed,
        "{changes} advertisement changes (nonces) in an hour, at most {allowed}"
    );
    assert!(
        first.is_some_and(|t| t <= start + 1000),
        "the first change waited"
    );
}

/// Steps one 12.8 V battery's BMS the way the firmware does: at each report (sent at the
/// times of `reports`, with their nominal capacity, 0.1 Ah), 30 ms after it (a step for
/// something else, a BLE request, which moves the tick), and otherwise only at
/// [`Bms::next_deadline_ms`] (always later than the step, or the firmware would spin), up to
/// `until_ms`. Returns each step's time, ATD, whether "battery communication lost" is raised,
/// and the bank capacity in use.
fn run_on_deadlines(
    reports: &[(u64, u16)],
    until_ms: u64,
) -> std::vec::Vec<(u64, bool, bool, u32)> {
    let mut bms = Bms::new(Config::default());
    let mut battery = report(1000, BatteryModel::Lfp12V8, 3300);
    let inputs = Inputs {
        remote_h_mv: 6600,
        remote_l_mv: 6600,
        supply_mv: 13_200,
        app_connected: false,
    };
    let mut steps = std::vec::Vec::new();
    let mut now_ms = 0;
    let _ = bms.step(now_ms, &inputs);
    loop {
        let next_report = reports.iter().map(|r| r.0).find(|&t| t > now_ms);
        let other = reports.iter().map(|r| r.0 + 30).find(|&t| t > now_ms);
        let next = [bms.next_deadline_ms(), next_report, other]
            .into_iter()
            .flatten()
            .min()
            .expect("a deadline");
        if next > until_ms {
            return steps;
        }
        assert!(
            next > now_ms,
            "a deadline at {next} ms, not after {now_ms} ms"
        );
        now_ms = next;
        if let Some(&(_, capacity_dah)) = reports.iter().find(|r| r.0 == now_ms) {
            battery.capacity_dah = capacity_dah;
            bms.handle_report(now_ms, &battery).unwrap();
        }
        let d = bms.step(now_ms, &inputs);
        let capacity_dah = bms.bank().topology().map_or(0, |t| t.capacity_dah);
        steps.push((
            now_ms,
            d.atd,
            d.codes.contains(Code::BatteryLost),
            capacity_dah,
        ));
    }
}

/// Reports of 100 Ah every 950 ms from 1 s on, until 3.85 s.
const REPORTS_100_AH: [(u64, u16); 4] = [(1000, 1000), (1950, 1000), (2900, 1000), (3850, 1000)];

/// BANK-1/PROT-1: the discovery window ends on time (2 s after the first report) although no
/// tick falls on it: the bank's deadline makes the BMS step then, and the outputs switch on.
#[test]
fn bank_1_prot_1_the_discovery_window_ends_on_time_between_ticks() {
    let steps = run_on_deadlines(&REPORTS_100_AH, 4000);
    let on = steps.iter().find(|s| s.1).map(|s| s.0);
    assert_eq!(on, Some(3000), "steps: {steps:?}");
}

/// BANK-4: a battery is lost exactly 5 s after its last valid report although no tick falls on
/// it: the bank's deadline makes the BMS step then.
#[test]
fn bank_4_a_battery_is_lost_on_time_between_ticks() {
    let steps = run_on_deadlines(&REPORTS_100_AH, 10_000);
    let lost = steps.iter().find(|s| s.2).map(|s| s.0);
    assert_eq!(lost, Some(3850 + 5000), "steps: {steps:?}");
    assert!(steps.iter().any(|&(t, atd, _, _)| t == 8850 && !atd));
}

/// BANK-1: a new capacity that holds is taken exactly the settle time (1.5 s) after it first
/// came, although no tick falls on it.
#[test]
fn bank_1_a_new_capacity_is_taken_on_time_between_ticks() {
    let mut reports = REPORTS_100_AH.to_vec();
    reports.extend([(4800, 2000), (5750, 2000), (6700, 2000), (7650, 2000)]);
    let steps = run_on_deadlines(&reports, 8000);
    let taken = steps.iter().find(|s| s.3 == 2000).map(|s| s.0);
    assert_eq!(taken, Some(4800 + 1500), "steps: {steps:?}");
}

/// BANK-1: the discovery window is 2 s from the first report, its end excluded: a battery first
/// heard exactly then is a newcomer, which joins only at its third report in a row, while one
/// heard a millisecond earlier is found at once.
#[test]
fn bank_1_a_battery_first_heard_when_discovery_ends_is_a_newcomer() {
    let inputs = Inputs {
        remote_h_mv: 6600,
        remote_l_mv: 6600,
        supply_mv: 13_200,
        app_connected: false,
    };
    for (first_heard_ms, found_at_once) in [(1999, true), (2000, false)] {
        let mut bms = Bms::new(Config::default());
        let a = report(1000, BatteryModel::Lfp12V8, 3300);
        let b = report(1001, BatteryModel::Lfp12V8, 3300);
        bms.handle_report(0, &a).unwrap();
        let _ = bms.step(0, &inputs);
        bms.handle_report(1000, &a).unwrap();
        let _ = bms.step(1000, &inputs);
        let _ = bms.handle_report(first_heard_ms, &b);
        let _ = bms.step(first_heard_ms, &inputs);
        assert_eq!(
            bms.bank().batteries().len(),
            if found_at_once { 2 } else { 1 },
            "first heard at {first_heard_ms} ms"
        );
    }
}

/// BANK-3: on a tie, the extreme cell (and the battery with the extreme temperature) named is
/// the first: the lowest battery number, then the lowest cell. The page shows a steady place,
/// not one that depends on the order of the comparison.
#[test]
fn bank_3_a_tie_names_the_first_battery_and_cell() {
    let mut rig = Rig::new(3, 1, BatteryModel::Lfp12V8);
    rig.run_for(3000);
    let a = rig.bms.bank().aggregates().expect("aggregates");
    assert_eq!((a.min_cell.battery, a.min_cell.cell), (0, 0));
    assert_eq!((a.max_cell.battery, a.max_cell.cell), (0, 0));
    assert_eq!((a.min_temp_battery, a.max_temp_battery), (0, 0));
    rig.set_cell(1, 2, 3250);
    rig.set_cell(2, 1, 3250);
    rig.set_cell(1, 3, 3350);
    rig.set_cell(2, 0, 3350);
    rig.run_for(2000);
    let a = rig.bms.bank().aggregates().expect("aggregates");
    assert_eq!(
        (a.min_cell_mv, a.min_cell.battery, a.min_cell.cell),
        (3250, 1, 2)
    );
    assert_eq!(
        (a.max_cell_mv, a.max_cell.battery, a.max_cell.cell),
        (3350, 1, 3)
    );
}

/// BANK-1: the batteries in series are the bank voltage over the mean battery voltage, rounded
/// to the nearest: a bank voltage the BMS measures a little below the batteries' sum (a drop
/// in the wiring, a load) is still 2 in series, and so is one a little above.
#[test]
fn bank_1_series_is_the_voltage_ratio_rounded() {
    for supply_mv in [26_000, 26_400, 27_000] {
        let mut rig = Rig::new(2, 2, BatteryModel::Lfp12V8);
        rig.supply_mv = Some(supply_mv);
        rig.run_for(3000);
        let t = rig.bms.bank().topology().expect("topology");
        assert_eq!((t.series, t.parallel), (2, 1), "bank at {supply_mv} mV");
        assert!(rig.last().atd && rig.last().atc, "bank at {supply_mv} mV");
    }
}

/// BANK-2/BANK-4: a bank left with no battery (every one forgotten) breaks no configuration
/// rule: the outputs are free-floating for the lack of data alone.
#[test]
fn bank_2_bank_4_no_battery_left_is_no_configuration_error() {
    let mut rig = Rig::started();
    rig.silence(0, true);
    rig.run_for(6000);
    assert_eq!(rig.bms.forget_lost_batteries(), 1);
    let d = rig.run_for(3000).clone();
    assert_eq!(rig.bms.bank().config_error(), None);
    assert!(!d.atd && !d.atc);
    assert_eq!(d.atd_reasons, Reasons::of(Reason::NoValidData));
    assert!(!d.codes.contains(Code::ConfigurationError));
}

/// BANK-2: more batteries than any bank may hold are a configuration error even when none of
/// them has sent valid data yet (no layout to judge).
#[test]
fn bank_2_too_many_batteries_without_valid_data_is_a_configuration_error() {
    let mut rig = Rig::new(51, 1, BatteryModel::Lfp12V8);
    rig.set_cells(5500);
    rig.run_for(3000);
    assert_eq!(
        rig.bms.bank().config_error(),
        Some(ConfigError::TooManyBatteries {
            batteries: 51,
            max: 50
        })
    );
    let d = rig.last();
    assert!(!d.atd && !d.atc && d.codes.contains(Code::ConfigurationError));
}

/// BANK-3: a bank current beyond what the page can carry (50 batteries of 6553.5 Ah at their
/// plausible 10 C) saturates on its own side, never wraps to the other direction.
#[test]
fn bank_3_a_bank_current_beyond_range_saturates_on_its_side() {
    for (current_ma, bank_ma) in [(65_000_000, i32::MAX), (-65_000_000, i32::MIN)] {
        let mut rig = Rig::new(50, 1, BatteryModel::Lfp12V8);
        for (r, _) in &mut rig.batteries {
            r.capacity_dah = u16::MAX;
        }
        rig.set_current(current_ma);
        rig.run_for(3000);
        let a = rig.bms.bank().aggregates().expect("aggregates");
        assert_eq!(a.current_ma, bank_ma, "50 × {current_ma} mA");
    }
}

/// BANK-3: below 0 °C the highest temperature is the highest reported, not 0 °C.
#[test]
fn bank_3_the_highest_temperature_below_freezing() {
    let mut rig = Rig::new(2, 1, BatteryModel::Lfp12V8);
    rig.set_temp(-150);
    rig.batteries[1].0.temps_ddegc = heapless::Vec::from_slice(&[-120, -200]).unwrap();
    rig.run_for(3000);
    let a = rig.bms.bank().aggregates().expect("aggregates");
    assert_eq!((a.max_temp_ddegc, a.max_temp_battery), (-120, 1));
    assert_eq!((a.min_temp_ddegc, a.min_temp_battery), (-200, 1));
}

/// BANK-3/BAL-3: the bank is balancing when any battery reports active balancing.
#[test]
fn bank_3_bal_3_any_battery_balancing_is_the_bank_balancing() {
    let mut rig = Rig::new(2, 1, BatteryModel::Lfp12V8);
    rig.run_for(3000);
    assert!(!rig.bms.bank().aggregates().expect("aggregates").balancing);
    rig.batteries[1].0.flags.balancing = true;
    rig.run_for(2000);
    assert!(rig.bms.bank().aggregates().expect("aggregates").balancing);
}
