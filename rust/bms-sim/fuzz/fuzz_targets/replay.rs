//! Fuzzes `bms-sim replay`'s inputs (issue 15): the settings TOML and the measurements CSV.
//! Input: the settings text, a NUL byte, then the CSV (no NUL: no settings file). Any bytes are
//! accepted or refused with an error naming the line or field; accepted rows replay without a
//! panic, one output row per input row, in bounded time (libFuzzer's `-timeout` catches a hang
//! such as the 1e10 s gap before gaps were bounded).
//!
//! Replays whose rows span more than [`MAX_SPAN_MS`] are only parsed: the core steps every
//! 100 ms of simulated time, so their run time grows with the span as the command's does, and
//! `replay::MAX_GAP_MS` bounds the span per row.
#![no_main]

use std::path::Path;

use bms_core::bms::Config;
use bms_sim::replay;
use libfuzzer_sys::fuzz_target;

/// Longest stretch of simulated time replayed per input.
const MAX_SPAN_MS: u64 = 600_000;

fuzz_target!(|data: &[u8]| {
    let (settings_text, csv) = match data.iter().position(|&b| b == 0) {
        Some(at) => (Some(&data[..at]), &data[at + 1..]),
        None => (None, data),
    };
    let settings = match settings_text {
        Some(bytes) => {
            let Ok(src) = std::str::from_utf8(bytes) else {
                return;
            };
            match replay::parse_settings(Path::new("settings.toml"), src) {
                Ok(settings) => settings,
                Err(e) => {
                    assert!(!e.message.is_empty(), "an error without a message: {e:?}");
                    return;
                }
            }
        }
        None => Default::default(),
    };
    let rows = match replay::parse_input(Path::new("in.csv"), csv) {
        Ok(rows) => rows,
        Err(e) => {
            assert!(!e.message.is_empty(), "an error without a message: {e:?}");
            assert!(e.line.is_some(), "a row error without its line: {e}");
            return;
        }
    };
    for pair in rows.windows(2) {
        assert!(
            pair[0].t_ms < pair[1].t_ms,
            "rows out of order were accepted"
        );
        assert!(pair[1].t_ms - pair[0].t_ms <= replay::MAX_GAP_MS);
    }
    let span = match (rows.first(), rows.last()) {
        (Some(first), Some(last)) => last.t_ms - first.t_ms,
        _ => 0,
    };
    if span > MAX_SPAN_MS {
        return;
    }
    let config = Config {
        settings,
        ..Config::default()
    };
    let out = replay::run_rows(&rows, config, None, 100.0, true);
    assert_eq!(out.len(), rows.len());
});
