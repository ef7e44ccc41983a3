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
    engine.set_ambient_c(Some(-10.0));
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
