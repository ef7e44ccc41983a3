//! Invariants of the control path under random input sequences (proptest).

mod control_harness;

use bms_core::bus::{BatteryFlags, BatteryModel, BatteryReport};
use bms_core::codes::Code;
use bms_core::protection::remote_is_on;
use bms_core::settings::Settings;
use bms_core::{Bms, Config, Decisions, DfuEvent, Inputs, Reason};
use control_harness::{report, Remote, Rig};
use proptest::prelude::*;

/// One thing that happens to the rig, then time advances by `hold_ms`.
#[derive(Clone, Debug)]
enum Change {
    Cells(u16),
    Cell {
        battery: usize,
        cell: usize,
        mv: u16,
    },
    Temp(i16),
    Remote(bool),
    Silence {
        battery: usize,
        silent: bool,
    },
    Dfu(u8),
    Soc(u16),
    Flags {
        battery: usize,
        charge: bool,
        discharge: bool,
    },
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (2500u16..3900).prop_map(Change::Cells),
        2 => (0usize..2, 0usize..4, 2500u16..3900)
            .prop_map(|(battery, cell, mv)| Change::Cell { battery, cell, mv }),
        1 => (-100i16..700).prop_map(Change::Temp),
        1 => any::<bool>().prop_map(Change::Remote),
        1 => (0usize..2, any::<bool>()).prop_map(|(battery, silent)| Change::Silence { battery, silent }),
        1 => (0u8..4).prop_map(Change::Dfu),
        1 => (0u16..=1000).prop_map(Change::Soc),
        1 => (0usize..2, any::<bool>(), any::<bool>())
            .prop_map(|(battery, charge, discharge)| Change::Flags { battery, charge, discharge }),
    ]
}

fn apply(rig: &mut Rig, change: &Change) {
    match *change {
        Change::Cells(mv) => rig.set_cells(mv),
        Change::Cell { battery, cell, mv } => rig.set_cell(battery, cell, mv),
        Change::Temp(t) => rig.set_temp(t),
        Change::Remote(on) => rig.remote = if on { Remote::Loop } else { Remote::Open },
        Change::Silence { battery, silent } => rig.silence(battery, silent),
        Change::Dfu(n) => {
            let now = rig.now_ms;
            rig.bms.handle_dfu(now, DfuEvent::from_u8(n).unwrap());
        }
        Change::Soc(permille) => {
            let now = rig.now_ms;
            let _ = rig.bms.set_soc(now, permille);
        }
        Change::Flags {
            battery,
            charge,
            discharge,
        } => {
            rig.batteries[battery].0.flags.allowed_to_charge = charge;
            rig.batteries[battery].0.flags.allowed_to_discharge = discharge;
        }
    }
}

/// Runs a scenario on a two-battery 12 V bank; returns every step's decisions.
fn run(changes: &[(Change, u32)]) -> Rig {
    let mut rig = Rig::new(2, 1, BatteryModel::Lfp12V8);
    rig.run_for(3000);
    for (change, hold_ms) in changes {
        apply(&mut rig, change);
        rig.run_for(u64::from(*hold_ms));
    }
    rig
}

fn scenario() -> impl Strategy<Value = Vec<(Change, u32)>> {
    proptest::collection::vec((change(), 100u32..60_000), 1..30)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// PROT-2: whenever ATD goes free-floating for under-voltage, the pre-alarm output has been
    /// active for at least 30 s.
    #[test]
    fn prot_2_prealarm_active_30s_before_every_uv_disconnect(changes in scenario()) {
        let rig = run(&changes);
        let mut prev: Option<&Decisions> = None;
        let mut prealarm_since: Option<u64> = None;
        for r in &rig.records {
            let d = &r.decisions;
            if let Some(p) = prev {
                // ATD goes free-floating (from high) with under-voltage among the reasons.
                let uv_opening = p.atd && !d.atd && d.atd_reasons.contains(Reason::CellUndervoltage);
                if uv_opening {
                    let since = prealarm_since.expect("pre-alarm active before UV disconnect");
                    prop_assert!(r.at_ms - since >= 30_000, "pre-alarm only {} ms", r.at_ms - since);
                }
            }
            prealarm_since = if d.prealarm { prealarm_since.or(Some(r.at_ms)) } else { None };
            prev = Some(d);
        }
    }

    /// PROT-2 (rev 2): ATD never switches on while an under-voltage is active: loads that are
    /// off (remote OFF, lost data, any reason) are not switched on into it.
    #[test]
    fn prot_2_atd_never_switches_on_into_an_undervoltage(changes in scenario()) {
        let rig = run(&changes);
        for w in rig.records.windows(2) {
            let (p, d) = (&w[0].decisions, &w[1].decisions);
            if !p.atd && d.atd {
                prop_assert!(!d.codes.contains(Code::CellUndervoltage), "at {} ms", w[1].at_ms);
            }
        }
    }

    /// PROT-8: every output is free-floating whenever the remote has read OFF for 0.5 s.
    #[test]
    fn prot_8_all_outputs_free_floating_while_remote_off(changes in scenario()) {
        let rig = run(&changes);
        let mut off_since: Option<u64> = None;
        for r in &rig.records {
            let d = &r.decisions;
            let i = r.inputs;
            off_since = if remote_is_on(i.remote_h_mv, i.remote_l_mv, i.supply_mv) {
                None
            } else {
                off_since.or(Some(r.at_ms))
            };
            if off_since.is_some_and(|t| r.at_ms - t >= 500) {
                prop_assert!(!d.atd && !d.atc && !d.prealarm, "at {} ms", r.at_ms);
                prop_assert!(d.atd_reasons.contains(Reason::RemoteOff));
                prop_assert!(d.atc_reasons.contains(Reason::RemoteOff));
                prop_assert!(d.low_power);
            }
        }
    }

    /// BANK-4: every output is free-floating whenever the data is lost or breaks the
    /// configuration rules (an invalid report alone switches nothing, PROT-13).
    #[test]
    fn bank_4_outputs_free_floating_while_data_lost_or_invalid(changes in scenario()) {
        let rig = run(&changes);
        for r in &rig.records {
            let d = &r.decisions;
            let bad = [Code::BatteryLost, Code::ConfigurationError]
                .into_iter()
                .any(|c| d.codes.contains(c));
            // Ground truth: a battery silent for 5 s is lost whatever the codes say.
            if r.longest_silence_ms >= 5000 {
                prop_assert!(d.codes.contains(Code::BatteryLost), "at {} ms", r.at_ms);
            }
            if bad || r.longest_silence_ms >= 5000 {
                prop_assert!(!d.atd && !d.atc && !d.prealarm, "at {} ms: {:?}", r.at_ms, d);
            }
        }
    }
}

/// Anything the outside world can send.
#[derive(Clone, Debug)]
enum Input {
    Report(BatteryReport),
    Step { inputs: Inputs },
    Dfu(u8),
    SetSoc(u16),
    Synchronise,
    Settings(Settings),
    FactoryReset,
    ResetHistory,
    Forget,
}

fn model() -> impl Strategy<Value = BatteryModel> {
    prop_oneof![
        Just(BatteryModel::Lfp12V8),
        Just(BatteryModel::Lfp25V6),
        Just(BatteryModel::Lfp51V2)
    ]
}

fn garbage_report() -> impl Strategy<Value = BatteryReport> {
    (
        0u32..60,
        model(),
        any::<u16>(),
        proptest::collection::vec(prop_oneof![any::<u16>(), 2500u16..3700], 0..=16),
        proptest::collection::vec(any::<i16>(), 0..=4),
        any::<i32>(),
        any::<(bool, bool, bool)>(),
    )
        .prop_map(
            |(serial, model, capacity_dah, cells, temps, current_ma, f)| BatteryReport {
                serial,
                model,
                capacity_dah,
                firmware: 0,
                cells_mv: heapless::Vec::from_slice(&cells).unwrap(),
                temps_ddegc: heapless::Vec::from_slice(&temps).unwrap(),
                current_ma,
                flags: BatteryFlags {
                    allowed_to_charge: f.0,
                    allowed_to_discharge: f.1,
                    balancing: f.2,
                },
            },
        )
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        4 => garbage_report().prop_map(Input::Report),
        4 => (any::<u32>(), any::<u32>(), prop_oneof![any::<u32>(), 8000u32..70_000], any::<bool>())
            .prop_map(|(h, l, s, app)| Input::Step {
                inputs: Inputs { remote_h_mv: h, remote_l_mv: l, supply_mv: s, app_connected: app }
            }),
        1 => any::<u8>().prop_map(Input::Dfu),
        1 => any::<u16>().prop_map(Input::SetSoc),
        1 => Just(Input::Synchronise),
        1 => (any::<u16>(), any::<u16>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u16>())
            .prop_map(|(a, b, c, d, e, f)| Input::Settings(Settings {
                charged_cell_mv: a,
                tail_current_permille: b,
                charged_detection_min: c,
                low_soc_warning_pct: d,
                discharge_floor_pct: e,
                prealarm_cell_mv: f,
            })),
        1 => Just(Input::FactoryReset),
        1 => Just(Input::ResetHistory),
        1 => Just(Input::Forget),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// No input sequence panics: garbage reports, absurd voltages, time jumping backwards and
    /// far forwards, random user actions. Outputs stay consistent with their reasons.
    #[test]
    fn no_input_sequence_panics(
        seq in proptest::collection::vec((input(), prop_oneof![0u64..2000, any::<u64>()], any::<bool>()), 1..120)
    ) {
        let mut bms = Bms::new(Config::default());
        let mut now: u64 = 0;
        let mut buf = [0u8; 32];
        for (input, dt, backwards) in seq {
            now = if backwards { now.saturating_sub(dt) } else { now.saturating_add(dt) };
            match input {
                Input::Report(r) => { let _ = bms.handle_report(now, &r); }
                Input::Step { inputs } => {
                    let d = bms.step(now, &inputs);
                    if !bms.bank().health().complete {
                        prop_assert!(!d.atd && !d.atc && !d.prealarm, "incomplete data: {:?}", d);
                    }
                    prop_assert_eq!(d.atd, d.atd_reasons.is_empty());
                    prop_assert_eq!(d.atc, d.atc_reasons.is_empty());
                    // PROT-3: a released pre-alarm is free-floating and says why.
                    let released = d.prealarm_reasons.contains(Reason::PrealarmReleased);
                    prop_assert_eq!(d.prealarm, !d.prealarm_reasons.is_empty() && !released);
                    prop_assert!(bms.next_deadline_ms().is_some_and(|t| t >= bms.now_ms().min(u64::MAX - 1000)));
                    let _ = bms.manufacturer_data(&mut buf);
                    let _ = bms.readout_values();
                }
                Input::Dfu(n) => {
                    if let Some(e) = DfuEvent::from_u8(n) { bms.handle_dfu(now, e); }
                }
                Input::SetSoc(p) => {
                    let before = bms.soc_record();
                    if bms.set_soc(now, p).is_err() {
                        prop_assert_eq!(before, bms.soc_record(), "refused set changes nothing");
                    }
                }
                Input::Synchronise => { let _ = bms.synchronise(now); }
                Input::Settings(s) => {
                    let before = *bms.settings();
                    match bms.write_settings(s) {
                        Ok(()) => prop_assert_eq!(*bms.settings(), s),
                        Err(_) => prop_assert_eq!(*bms.settings(), before),
                    }
                }
                Input::FactoryReset => bms.factory_reset(),
                Input::ResetHistory => bms.reset_history(),
                Input::Forget => { let _ = bms.forget_lost_batteries(); }
            }
        }
    }
}

/// A healthy bank keeps every output high through ordinary use (sanity check for the
/// invariants above: they are not satisfied by outputs that never switch on).
#[test]
fn healthy_bank_keeps_outputs_on() {
    let mut rig = Rig::new(2, 1, BatteryModel::Lfp12V8);
    rig.run_for(3000);
    rig.run_for(120_000);
    let d = rig.last();
    assert!(d.atd && d.atc && !d.prealarm && d.codes.is_empty());
    assert_eq!(report(1, BatteryModel::Lfp12V8, 3300).cells_mv.len(), 4);
}
