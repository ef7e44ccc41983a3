//! Fuzzes the scenario reader and the engine behind `bms-sim run` (issue 15): any text is a
//! scenario or an error naming what is wrong; a scenario that is accepted runs without a panic,
//! and in bounded time for a bounded stretch of simulated time (libFuzzer's `-timeout` catches a
//! hang such as the `bus_noise count` of 2^32 before it was bounded).
//!
//! Every event is moved into the first [`WINDOW`] of simulated time, so that each one is
//! applied in the stretch that runs; the rest of the scenario runs as written.
#![no_main]

use std::path::Path;
use std::time::Duration;

use bms_sim::engine::{Engine, RunOptions};
use bms_sim::scenario;
use libfuzzer_sys::fuzz_target;

/// Simulated time each accepted scenario runs (600 control steps of 100 ms).
const WINDOW: Duration = Duration::from_secs(60);

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let mut scenario = match scenario::parse(Path::new("fuzz.toml"), src) {
        Ok(scenario) => scenario,
        Err(e) => {
            assert!(!e.message.is_empty(), "an error without a message: {e:?}");
            return;
        }
    };
    for event in &mut scenario.events {
        event.at = event.at.min(WINDOW);
    }
    let options = RunOptions {
        until: Some(WINDOW),
        ..RunOptions::default()
    };
    let mut engine = Engine::new(&scenario, &options).expect("no state directory to open");
    engine.run(&mut |_| {});
    let end = scenario.duration.min(WINDOW).as_millis() as u64;
    assert_eq!(
        engine.now_ms(),
        end,
        "the run stopped elsewhere than its end"
    );
    let _ = engine.finish();
});
