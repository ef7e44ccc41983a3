//! What serde cannot check in a scenario: ranges, names and combinations. The numeric ranges
//! are tables (one row per key: table, key, range, unit); the few rules that relate keys to
//! one another follow them as code.

use super::{
    parse_key, Action, BatteryKind, ChargerConfig, LoadConfig, ProtocolChoice, Scenario,
    AMBIENT_MAX_C, AMBIENT_MIN_C,
};
use std::time::Duration;

/// What is wrong: table (empty for top-level keys), index of the `[[table]]`, key, message.
pub(super) type Invalid = (&'static str, Option<usize>, &'static str, String);

/// A numeric key of a single table that must lie in `lo..=hi`; `value` is `None` when the key
/// is optional and absent.
struct Range {
    table: &'static str,
    key: &'static str,
    lo: f64,
    hi: f64,
    unit: &'static str,
    value: fn(&Scenario) -> Option<f64>,
}

#[rustfmt::skip]
const RANGES: &[Range] = &[
    // BANK-3: a battery reports its capacity in 0.1 Ah in 16 bits; more cannot reach the BMS.
    Range { table: "bank", key: "capacity_ah", lo: 1.0, hi: 6_553.5, unit: "Ah", value: |s| Some(s.bank.capacity_ah) },
    Range { table: "bank", key: "baud", lo: 1_200.0, hi: 1_000_000.0, unit: "bit/s", value: |s| s.bank.baud.map(f64::from) },
    Range { table: "bank", key: "reply_latency_ms", lo: 0.0, hi: 1_000.0, unit: "ms", value: |s| Some(s.bank.reply_latency_ms) },
    Range { table: "bank", key: "initial_soc_pct", lo: 0.0, hi: 100.0, unit: "%", value: |s| Some(s.bank.initial_soc_pct) },
    Range { table: "bank", key: "initial_temp_c", lo: -40.0, hi: 80.0, unit: "°C", value: |s| s.bank.initial_temp_c },
    Range { table: "bank", key: "capacity_spread_pct", lo: 0.0, hi: 10.0, unit: "%", value: |s| Some(s.bank.capacity_spread_pct) },
    Range { table: "bank", key: "resistance_spread_pct", lo: 0.0, hi: 50.0, unit: "%", value: |s| Some(s.bank.resistance_spread_pct) },
    Range { table: "bank", key: "soc_spread_pct", lo: 0.0, hi: 10.0, unit: "%", value: |s| Some(s.bank.soc_spread_pct) },
    Range { table: "bank", key: "self_discharge_pct_per_month", lo: 0.0, hi: 30.0, unit: "%", value: |s| Some(s.bank.self_discharge_pct_per_month) },
    Range { table: "sensors", key: "current_gain_error_pct", lo: 0.0, hi: 20.0, unit: "%", value: |s| Some(s.sensors.current_gain_error_pct) },
    Range { table: "sensors", key: "current_offset_a", lo: 0.0, hi: 50.0, unit: "A", value: |s| Some(s.sensors.current_offset_a) },
    Range { table: "sensors", key: "current_noise_a", lo: 0.0, hi: 50.0, unit: "A", value: |s| Some(s.sensors.current_noise_a) },
    Range { table: "sensors", key: "cell_noise_mv", lo: 0.0, hi: 100.0, unit: "mV", value: |s| Some(s.sensors.cell_noise_mv) },
    Range { table: "sensors", key: "cell_resolution_mv", lo: 1.0, hi: 100.0, unit: "mV", value: |s| Some(f64::from(s.sensors.cell_resolution_mv)) },
    Range { table: "sensors", key: "temp_noise_c", lo: 0.0, hi: 10.0, unit: "°C", value: |s| Some(s.sensors.temp_noise_c) },
    Range { table: "sensors", key: "supply_gain_error_pct", lo: 0.0, hi: 20.0, unit: "%", value: |s| Some(s.sensors.supply_gain_error_pct) },
    Range { table: "sensors", key: "supply_resolution_mv", lo: 1.0, hi: 1_000.0, unit: "mV", value: |s| Some(f64::from(s.sensors.supply_resolution_mv)) },
    Range { table: "bms", key: "initial_soc_pct", lo: 0.0, hi: 100.0, unit: "%", value: |s| s.bms.initial_soc_pct },
    Range { table: "temperature", key: "ambient_c", lo: AMBIENT_MIN_C, hi: AMBIENT_MAX_C, unit: "°C", value: |s| Some(s.temperature.ambient_c) },
    Range { table: "temperature", key: "daily_swing_c", lo: 0.0, hi: 60.0, unit: "°C", value: |s| Some(s.temperature.daily_swing_c) },
];

/// A numeric key of each `[[table]]` entry that must lie in `lo..=hi`.
struct ItemRange<T> {
    key: &'static str,
    lo: f64,
    hi: f64,
    unit: &'static str,
    value: fn(&T) -> Option<f64>,
}

#[rustfmt::skip]
const LOAD_RANGES: &[ItemRange<LoadConfig>] = &[
    ItemRange { key: "current_a", lo: 0.0, hi: 10_000.0, unit: "A", value: |l| l.current_a },
    ItemRange { key: "power_w", lo: 0.0, hi: 500_000.0, unit: "W", value: |l| l.power_w },
];

#[rustfmt::skip]
const CHARGER_RANGES: &[ItemRange<ChargerConfig>] = &[
    ItemRange { key: "max_a", lo: 0.0, hi: 10_000.0, unit: "A", value: |c| Some(c.max_a) },
    ItemRange { key: "absorption_cell_v", lo: 3.3, hi: 3.9, unit: "V", value: |c| Some(c.absorption_cell_v) },
    ItemRange { key: "cloudiness", lo: 0.0, hi: 1.0, unit: "", value: |c| Some(c.cloudiness) },
    ItemRange { key: "sunrise_h", lo: 0.0, hi: 24.0, unit: "h", value: |c| Some(c.sunrise_h) },
    ItemRange { key: "sunset_h", lo: 0.0, hi: 24.0, unit: "h", value: |c| Some(c.sunset_h) },
];

fn check(
    ok: bool,
    table: &'static str,
    index: Option<usize>,
    key: &'static str,
    message: impl FnOnce() -> String,
) -> Result<(), Invalid> {
    if ok {
        Ok(())
    } else {
        Err((table, index, key, message()))
    }
}

fn finite_in(v: f64, lo: f64, hi: f64) -> bool {
    v.is_finite() && (lo..=hi).contains(&v)
}

fn out_of_range(value: f64, lo: f64, hi: f64, unit: &str) -> String {
    let text = format!("{value} outside {lo}–{hi} {unit}");
    text.trim_end().to_string()
}

fn check_items<T>(
    items: &[T],
    table: &'static str,
    ranges: &[ItemRange<T>],
) -> Result<(), Invalid> {
    for (i, item) in items.iter().enumerate() {
        for r in ranges {
            if let Some(v) = (r.value)(item) {
                check(finite_in(v, r.lo, r.hi), table, Some(i), r.key, || {
                    out_of_range(v, r.lo, r.hi, r.unit)
                })?;
            }
        }
    }
    Ok(())
}

/// Checks values serde cannot: ranges, names, combinations.
pub(super) fn validate(s: &Scenario) -> Result<(), Invalid> {
    check(!s.name.trim().is_empty(), "", None, "name", || {
        "must not be empty".into()
    })?;
    check(!s.duration.is_zero(), "", None, "duration", || {
        "must be longer than 0".into()
    })?;
    check(
        s.duration <= Duration::from_secs(5 * 366 * 86_400),
        "",
        None,
        "duration",
        || "at most 5 years".into(),
    )?;
    if let Some(every) = s.sample_every {
        check(
            every >= Duration::from_secs(1),
            "",
            None,
            "sample_every",
            || "at least 1 s".into(),
        )?;
    }
    for r in RANGES {
        if let Some(v) = (r.value)(s) {
            check(finite_in(v, r.lo, r.hi), r.table, None, r.key, || {
                out_of_range(v, r.lo, r.hi, r.unit)
            })?;
        }
    }
    check_bank(s)?;
    s.bms
        .settings()
        .to_settings()
        .map_err(|(key, message)| ("bms", None, key, message))?;
    if let Some(key) = &s.bms.device_key {
        check(parse_key(key).is_some(), "bms", None, "device_key", || {
            "must be 32 hex digits".into()
        })?;
    }
    let t = &s.temperature;
    for (i, p) in t.points.iter().enumerate() {
        check(
            finite_in(p.c, -40.0, 80.0),
            "temperature",
            None,
            "points",
            || format!("point {} at {} °C outside −40–80 °C", i + 1, p.c),
        )?;
        check(
            i == 0 || t.points.get(i - 1).is_some_and(|before| p.at > before.at),
            "temperature",
            None,
            "points",
            || format!("point {} is not later than the one before", i + 1),
        )?;
    }
    // The daily swing goes half above and half below the profile: the ambient it makes must
    // stay in the range `ambient_c` and the engine take.
    let bases = || {
        let only = t.points.is_empty().then_some(t.ambient_c);
        t.points.iter().map(|p| p.c).chain(only)
    };
    let half = t.daily_swing_c / 2.0;
    let coldest = bases().fold(f64::INFINITY, f64::min) - half;
    let warmest = bases().fold(f64::NEG_INFINITY, f64::max) + half;
    check(
        coldest >= AMBIENT_MIN_C && warmest <= AMBIENT_MAX_C,
        "temperature",
        None,
        "daily_swing_c",
        || {
            let reached = if warmest > AMBIENT_MAX_C {
                warmest
            } else {
                coldest
            };
            format!(
                "a {} °C swing takes the ambient to {reached} °C, outside {AMBIENT_MIN_C}–{AMBIENT_MAX_C} °C",
                t.daily_swing_c
            )
        },
    )?;
    let names = check_loads_and_chargers(s)?;
    check_events(s, &names)
}

/// The bank's layout against its protocol and model (BANK-2, BANK-4).
fn check_bank(s: &Scenario) -> Result<(), Invalid> {
    let b = &s.bank;
    check(
        b.series >= 1 && b.parallel >= 1,
        "bank",
        None,
        "series",
        || "series and parallel must be at least 1".into(),
    )?;
    let packs = b.series.saturating_mul(b.parallel);
    let per_line = match b.protocol {
        ProtocolChoice::Openbms => usize::MAX,
        ProtocolChoice::Jbd => 16,
        ProtocolChoice::Jk => 15,
        ProtocolChoice::Daly => 16,
    };
    check(packs <= per_line, "bank", None, "protocol", || {
        format!(
            "{packs} {} packs: at most {per_line} (one line; JBD: one line each, 16 lines)",
            b.protocol.protocol().name()
        )
    })?;
    if b.protocol != ProtocolChoice::Openbms && b.protocol != ProtocolChoice::Jbd {
        // The line the engine builds, checked as the firmware checks its devicetree line: one
        // too slow to read every pack in time is refused (BANK-4).
        let protocol = b.protocol.protocol();
        let baud = b.baud.unwrap_or(protocol.default_baud());
        let count = u8::try_from(packs).unwrap_or(u8::MAX);
        let line = bms_core::drivers::LineConfig::scan(protocol, baud, 0, count);
        check(line.is_ok(), "bank", None, "protocol", || {
            line.err().map(|e| e.to_string()).unwrap_or_default()
        })?;
    }
    let max_batteries = if b.battery == BatteryKind::V48 {
        25
    } else {
        50
    };
    check(packs <= max_batteries, "bank", None, "parallel", || {
        format!("{packs} batteries, at most {max_batteries} with this model (BANK-2)")
    })
}

/// Loads and chargers: ranges, unique names, the rules between keys. Returns the names.
fn check_loads_and_chargers(s: &Scenario) -> Result<Vec<&str>, Invalid> {
    check_items(&s.loads, "load", LOAD_RANGES)?;
    check_items(&s.chargers, "charger", CHARGER_RANGES)?;
    let mut names: Vec<&str> = Vec::new();
    for (i, l) in s.loads.iter().enumerate() {
        let ix = Some(i);
        add_name(&mut names, &l.name, "load", ix)?;
        check(
            l.current_a.is_some() != l.power_w.is_some(),
            "load",
            ix,
            "current_a",
            || "give exactly one of current_a and power_w".into(),
        )?;
        check_hours(&l.hours, "load", ix)?;
        check(
            l.on_for.is_some() == l.off_for.is_some(),
            "load",
            ix,
            "on_for",
            || "give both on_for and off_for, or neither".into(),
        )?;
        if let (Some(on), Some(off)) = (l.on_for, l.off_for) {
            check(
                !on.is_zero() && !off.is_zero(),
                "load",
                ix,
                "on_for",
                || "on_for and off_for must be longer than 0".into(),
            )?;
        }
    }
    for (i, c) in s.chargers.iter().enumerate() {
        let ix = Some(i);
        add_name(&mut names, &c.name, "charger", ix)?;
        check(
            finite_in(c.float_cell_v, 3.2, c.absorption_cell_v),
            "charger",
            ix,
            "float_cell_v",
            || "outside 3.2 V–absorption".into(),
        )?;
        check(c.sunrise_h < c.sunset_h, "charger", ix, "sunset_h", || {
            format!(
                "sunset_h {} is not after sunrise_h {}: need 0 ≤ sunrise_h < sunset_h ≤ 24",
                c.sunset_h, c.sunrise_h
            )
        })?;
        check_hours(&c.hours, "charger", ix)?;
    }
    Ok(names)
}

/// Most garbage bytes one `bus_noise` event sends (a megabyte: far beyond any frame, and a
/// run stays short and its memory small).
pub const MAX_BUS_NOISE_BYTES: usize = 1_000_000;

/// Each event's keys against its action, the bank and the loads and chargers `names`.
fn check_events(s: &Scenario, names: &[&str]) -> Result<(), Invalid> {
    let batteries = s.bank.series * s.bank.parallel;
    for (i, e) in s.events.iter().enumerate() {
        let ix = Some(i);
        check(e.at <= s.duration, "event", ix, "at", || {
            "after the end of the scenario".into()
        })?;
        // Events run in the order listed, each once its time has come: one listed after a
        // later one would run late, at that one's time.
        if let Some(before) = i.checked_sub(1).and_then(|b| s.events.get(b)) {
            check(e.at >= before.at, "event", ix, "at", || {
                format!(
                    "{} is before the previous event's {}: list the events in time order",
                    humantime::format_duration(e.at),
                    humantime::format_duration(before.at)
                )
            })?;
        }
        // Which keys the action takes: battery, target, soc_pct, count.
        let (battery, target, soc, count) = match e.action {
            Action::UnplugCable | Action::ReplugCable => (true, false, false, false),
            Action::Enable | Action::Disable => (false, true, false, false),
            Action::SetSoc => (false, false, true, false),
            Action::BusNoise => (false, false, false, true),
            _ => (false, false, false, false),
        };
        check(
            battery || e.battery.is_none(),
            "event",
            ix,
            "battery",
            || "only for unplug_cable and replug_cable".into(),
        )?;
        if let Some(n) = e.battery {
            check((1..=batteries).contains(&n), "event", ix, "battery", || {
                format!("{n} outside 1–{batteries}")
            })?;
        }
        check(e.target.is_some() == target, "event", ix, "target", || {
            "needed by enable/disable, and only there".into()
        })?;
        if let Some(t) = &e.target {
            check(names.contains(&t.as_str()), "event", ix, "target", || {
                format!("no load or charger named `{t}`")
            })?;
        }
        check(e.soc_pct.is_some() == soc, "event", ix, "soc_pct", || {
            "needed by set_soc, and only there".into()
        })?;
        if let Some(p) = e.soc_pct {
            check(finite_in(p, 0.0, 100.0), "event", ix, "soc_pct", || {
                out_of_range(p, 0.0, 100.0, "%")
            })?;
        }
        check(e.count.is_some() == count, "event", ix, "count", || {
            "needed by bus_noise, and only there".into()
        })?;
        if let Some(n) = e.count {
            check(
                (1..=MAX_BUS_NOISE_BYTES).contains(&n),
                "event",
                ix,
                "count",
                || format!("{n} bytes outside 1–{MAX_BUS_NOISE_BYTES}"),
            )?;
        }
    }
    Ok(())
}

/// Adds a load's or charger's `name` to `names`, refused when it is there already.
fn add_name<'s>(
    names: &mut Vec<&'s str>,
    name: &'s str,
    table: &'static str,
    ix: Option<usize>,
) -> Result<(), Invalid> {
    check(!names.contains(&name), table, ix, "name", || {
        format!("`{name}` is used twice")
    })?;
    names.push(name);
    Ok(())
}

fn check_hours(hours: &[[f64; 2]], table: &'static str, ix: Option<usize>) -> Result<(), Invalid> {
    for [from, to] in hours {
        check(
            finite_in(*from, 0.0, 24.0) && finite_in(*to, 0.0, 24.0),
            table,
            ix,
            "hours",
            || format!("[{from}, {to}] outside 0–24 h"),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const MINIMAL: &str = "name = \"minimal\"\nduration = \"1h\"\n\n[bank]\nbattery = \"12.8V\"\ncapacity_ah = 100\ninitial_soc_pct = 50\n";

    /// BANK-3: a battery reports its nominal capacity in 0.1 Ah in 16 bits, so 6553.5 Ah is the
    /// most the BMS can be told. A larger capacity is refused naming the key and the value, not
    /// run with the BMS counting against 6553.5 Ah (8000 Ah ran with the SoC 7.4 points off
    /// after 2 h and the floor cutting the loads early).
    #[test]
    fn bank_3_a_capacity_the_bus_cannot_carry_is_refused() {
        let src = MINIMAL.replace("capacity_ah = 100", "capacity_ah = 6553.6");
        let e = super::super::parse(Path::new("s.toml"), &src).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("bank.capacity_ah"), "{e}");
        assert!(e.message.contains("6553.6"), "{e}");
        let src = MINIMAL.replace("capacity_ah = 100", "capacity_ah = 6553.5");
        assert!(super::super::parse(Path::new("s.toml"), &src).is_ok());
    }

    /// The ambient temperature stays within −40–80 °C with its daily swing on top: 80 °C with a
    /// 60 °C swing ran the ambient up to 110 °C (batteries at 106 °C, PROT-13 invalid data),
    /// a temperature `ambient_c` and the engine refuse. The error names the swing and the
    /// temperature it reaches; within range is accepted.
    #[test]
    fn the_daily_swing_keeps_the_ambient_in_range() {
        let parse = |t: &str| {
            super::super::parse(
                Path::new("s.toml"),
                &format!("{MINIMAL}\n[temperature]\n{t}\n"),
            )
        };
        let e = parse("ambient_c = 80\ndaily_swing_c = 60").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("temperature.daily_swing_c"), "{e}");
        assert!(e.message.contains("110"), "{e}");
        let e = parse("ambient_c = -20\ndaily_swing_c = 41").unwrap_err();
        assert!(e.message.contains("-40.5"), "{e}");
        let e = parse(
            "daily_swing_c = 20\npoints = [{ at = \"0s\", c = 10.0 }, { at = \"1h\", c = 75.0 }]",
        )
        .unwrap_err();
        assert!(e.message.contains("85"), "{e}");
        assert!(parse("ambient_c = 50\ndaily_swing_c = 60").is_ok());
        assert!(parse("daily_swing_c = 20\npoints = [{ at = \"0s\", c = 70.0 }]").is_ok());
    }

    /// A solar charger's sun must rise before it sets, as the error says (0 ≤ sunrise_h <
    /// sunset_h ≤ 24): sunrise_h = sunset_h = 12 ran a charger that never charged.
    #[test]
    fn a_sun_that_sets_when_it_rises_is_refused() {
        let charger = |rise: f64, set: f64| {
            format!("{MINIMAL}\n[[charger]]\nname = \"s\"\nkind = \"solar\"\nmax_a = 20\nsunrise_h = {rise}\nsunset_h = {set}\n")
        };
        let e = super::super::parse(Path::new("s.toml"), &charger(12.0, 12.0)).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("charger.sunset_h"), "{e}");
        assert!(super::super::parse(Path::new("s.toml"), &charger(12.0, 12.5)).is_ok());
    }

    /// Every row of the range tables refuses a value just above its range, naming the table,
    /// the key, its line and the value given.
    #[test]
    fn every_range_row_refuses_a_value_above_it() {
        for r in RANGES {
            let line = format!("{} = {}", r.key, r.hi + 1.0);
            let src = if r.table == "bank" {
                let kept: Vec<&str> = MINIMAL
                    .lines()
                    .filter(|l| !l.starts_with(&format!("{} =", r.key)))
                    .collect();
                format!("{}\n{line}\n", kept.join("\n"))
            } else {
                format!("{MINIMAL}\n[{}]\n{line}\n", r.table)
            };
            let e = super::super::parse(Path::new("s.toml"), &src).unwrap_err();
            let field = format!("{}.{}", r.table, r.key);
            assert_eq!(e.field.as_deref(), Some(field.as_str()), "{e}");
            assert!(e.message.contains(&format!("{}", r.hi + 1.0)), "{e}");
            let at = src.lines().position(|l| l == line).map(|n| n + 1);
            assert_eq!(e.line, at, "{e}");
        }
        for (table, key, hi) in [
            ("load", "current_a", LOAD_RANGES[0].hi),
            ("charger", "max_a", CHARGER_RANGES[0].hi),
        ] {
            let src = format!(
                "{MINIMAL}\n[[{table}]]\nname = \"x\"\n{key} = {}\n",
                hi + 1.0
            );
            let e = super::super::parse(Path::new("s.toml"), &src).unwrap_err();
            assert_eq!(
                e.field.as_deref(),
                Some(format!("{table}.{key}").as_str()),
                "{e}"
            );
        }
    }
}
