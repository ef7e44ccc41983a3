//! The engine driven step by step, as the web app's demo device drives it: GATT requests
//! answered by the core as on the device, actions applied at once, the ambient overridden.

use bms_core::codes::Code;
use bms_core::protocol::{self, Access, Characteristic, Command, Status, StatusPage};
use bms_core::settings::{Settings, SettingsField};
use bms_sim::engine::{Engine, RunOptions};
use bms_sim::scenario::{self, Action, Scenario};
use std::path::PathBuf;

fn demo() -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/web-demo.toml");
    scenario::load(&path).unwrap()
}

fn options() -> RunOptions {
    RunOptions {
        no_samples: true,
        ..RunOptions::default()
    }
}

fn request(
    engine: &mut Engine,
    chr: Characteristic,
    access: Access,
    auth: bool,
    req: &[u8],
) -> Vec<u8> {
    let mut resp = [0u8; protocol::MAX_RESPONSE_LEN];
    let reply = engine
        .gatt(chr as u8, access, auth, req, &mut resp)
        .unwrap();
    resp[..reply.len].to_vec()
}

fn status(engine: &mut Engine) -> StatusPage {
    let resp = request(engine, Characteristic::Status, Access::Read, false, &[]);
    let (st, body) = protocol::decode_response(&resp).unwrap();
    assert_eq!(st, Status::Ok);
    protocol::decode_body(body).unwrap()
}

fn encode<T: serde::Serialize>(message: &T) -> Vec<u8> {
    let mut out = [0u8; protocol::MAX_REQUEST_LEN];
    let len = protocol::encode_request(message, &mut out).unwrap();
    out[..len].to_vec()
}

#[test]
fn run_until_advances_in_steps_and_gatt_reads_the_live_status() {
    let scenario = demo();
    let mut engine = Engine::new(&scenario, &options()).unwrap();
    engine.run_until(10_000, &mut |_| {});
    assert_eq!(engine.now_ms(), 10_000);
    let first = status(&mut engine);
    assert!(first.atd && first.atc, "{first:?}");
    assert!(first
        .bank_mv
        .is_some_and(|mv| (24_000..28_000).contains(&mv)));
    engine
        .apply(Action::Enable, None, Some("inverter"), None)
        .unwrap();
    engine.run_until(12_000, &mut |_| {});
    assert!(status(&mut engine).power_w.is_some_and(|w| w < -1_500));
}

#[test]
fn settings_written_over_gatt_need_an_authenticated_link_and_stay() {
    let scenario = demo();
    let mut engine = Engine::new(&scenario, &options()).unwrap();
    engine.run_until(5_000, &mut |_| {});
    let new = Settings::default().with(SettingsField::DischargeFloor, 15);
    let refused = request(
        &mut engine,
        Characteristic::Settings,
        Access::Write,
        false,
        &encode(&new),
    );
    assert_eq!(refused[1], Status::NotAuthenticated as u8);
    let accepted = request(
        &mut engine,
        Characteristic::Settings,
        Access::Write,
        true,
        &encode(&new),
    );
    assert_eq!(accepted[1], Status::Ok as u8);
    let read = request(
        &mut engine,
        Characteristic::Settings,
        Access::Read,
        false,
        &[],
    );
    let (_, body) = protocol::decode_response(&read).unwrap();
    assert_eq!(protocol::decode_body::<Settings>(body).unwrap(), new);
    assert_eq!(engine.bms().settings(), &new);
}

#[test]
fn a_pulled_cable_raises_battery_lost_and_replugging_clears_it() {
    let scenario = demo();
    let mut engine = Engine::new(&scenario, &options()).unwrap();
    engine.run_until(5_000, &mut |_| {});
    engine
        .apply(Action::UnplugCable, Some(1), None, None)
        .unwrap();
    engine.run_until(12_000, &mut |_| {});
    let lost = 1 << Code::BatteryLost.number();
    assert_ne!(status(&mut engine).codes & lost, 0);
    engine
        .apply(Action::ReplugCable, Some(1), None, None)
        .unwrap();
    engine.run_until(20_000, &mut |_| {});
    assert_eq!(status(&mut engine).codes & lost, 0);
}

#[test]
fn apply_names_what_is_wrong_and_changes_nothing() {
    let scenario = demo();
    let mut engine = Engine::new(&scenario, &options()).unwrap();
    let err = engine
        .apply(Action::UnplugCable, Some(5), None, None)
        .unwrap_err();
    assert_eq!(err, "battery 5 does not exist (the bank has 4)");
    let err = engine
        .apply(Action::Enable, None, Some("kettle"), None)
        .unwrap_err();
    assert_eq!(err, "no load or charger is called \"kettle\"");
}

#[test]
fn a_cold_ambient_cools_the_bank_until_charging_stops() {
    let scenario = demo();
    let mut engine = Engine::new(&scenario, &options()).unwrap();
    engine.set_ambient_c(Some(-10.0)).unwrap();
    engine.run_until(12 * 3_600_000, &mut |_| {});
    assert!(engine.bank().temp_c() < 0.0, "{}", engine.bank().temp_c());
    let page = status(&mut engine);
    assert!(!page.atc, "charging stopped in the cold: {page:?}");
    assert_ne!(page.codes & (1 << Code::LowTemperature.number()), 0);
}

fn command(engine: &mut Engine, command: Command) -> Vec<u8> {
    let req = encode(&command);
    request(
        engine,
        Characteristic::ControlPoint,
        Access::Write,
        true,
        &req,
    )
}

#[test]
fn control_point_commands_answer_as_on_the_device() {
    let scenario = demo();
    let mut engine = Engine::new(&scenario, &options()).unwrap();
    engine.run_until(5_000, &mut |_| {});
    let key = command(&mut engine, Command::ReadAdvertisementKey);
    assert_eq!(key[1], Status::Ok as u8);
    assert_eq!(key[2..6], [0x0d, 0xf4, 0xe1, 0xa2]);
    let bad = command(&mut engine, Command::SetSoc { soc_permille: 1001 });
    assert_eq!(bad[1], Status::InvalidValue as u8);
}

/// MON-4: a set_soc applied at run time (the demo device's and a caller's `Engine::apply`)
/// takes its SoC from 0 to 100 % as a scenario's event does; a missing, non-finite or
/// out-of-range one is refused naming what is wrong and the value, and the SoC stays. It was
/// taken as 0 % (a missing value, NaN, −5, −∞: `as u16` saturates), which sets the discharge
/// floor's alarm and opens ATD.
#[test]
fn mon_4_apply_set_soc_refuses_a_missing_or_bad_value_and_changes_nothing() {
    let scenario = demo();
    for (soc_pct, what) in [
        (None, "set_soc needs soc_pct"),
        (Some(f64::NAN), "NaN"),
        (Some(f64::INFINITY), "inf"),
        (Some(f64::NEG_INFINITY), "-inf"),
        (Some(-5.0), "-5"),
        (Some(100.5), "100.5"),
    ] {
        let mut engine = Engine::new(&scenario, &options()).unwrap();
        engine.run_until(10_000, &mut |_| {});
        let before = engine.bms().monitor_status().soc_permille;
        assert!(before.is_some_and(|p| p > 100), "{before:?}");
        let result = engine.apply(Action::SetSoc, None, None, soc_pct);
        let error = result.expect_err(&format!("set_soc {soc_pct:?} accepted"));
        assert!(error.contains("soc_pct"), "{error}");
        assert!(error.contains(what), "{error} does not name {what}");
        assert_eq!(engine.bms().monitor_status().soc_permille, before);
    }
    // soc_pct belongs to set_soc alone, as in a scenario.
    let mut engine = Engine::new(&scenario, &options()).unwrap();
    engine.run_until(10_000, &mut |_| {});
    let error = engine
        .apply(Action::Synchronise, None, None, Some(20.0))
        .unwrap_err();
    assert!(error.contains("soc_pct"), "{error}");
    // A good one is taken.
    engine
        .apply(Action::SetSoc, None, None, Some(42.0))
        .unwrap();
    assert_eq!(engine.bms().monitor_status().soc_permille, Some(420));
}

/// The ambient set at run time (the demo's "cold" button) is a temperature the scenario's
/// `ambient_c` could hold (−40 to 80 °C); NaN, ±∞ or 1e300 are refused naming the value, and
/// the bank keeps a real temperature. NaN made the simulated bank's temperature NaN for good.
#[test]
fn set_ambient_refuses_what_no_scenario_could_hold() {
    let scenario = demo();
    for celsius in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e300,
        -41.0,
        80.5,
    ] {
        let mut engine = Engine::new(&scenario, &options()).unwrap();
        engine.run_until(10_000, &mut |_| {});
        let error = engine
            .set_ambient_c(Some(celsius))
            .expect_err(&format!("ambient {celsius} accepted"));
        assert!(error.contains(&format!("{celsius}")), "{error}");
        engine.run_until(600_000, &mut |_| {});
        let temp = engine.bank().temp_c();
        assert!(temp.is_finite() && (-40.0..=80.0).contains(&temp), "{temp}");
    }
    let mut engine = Engine::new(&scenario, &options()).unwrap();
    engine.set_ambient_c(Some(-10.0)).unwrap();
    engine.set_ambient_c(None).unwrap();
}
