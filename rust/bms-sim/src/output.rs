//! What a run leaves behind: `timeline.csv` (one row per sample), `events.csv` (every output
//! change, code and scenario event with its time) and `timeline.png` (SoC true vs estimated,
//! cell min/max, currents, temperature, outputs and alarms over time), plus the text summary.

use crate::engine::{RunResult, Sample};
use bms_core::codes::{ActiveCodes, Severity};
use plotters::prelude::*;
use plotters::style::FontStyle;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Once;

/// The font embedded in the binary, so pictures render on machines without system fonts.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER_FONT: Once = Once::new();

/// The active codes of `severity` (alarms: alarms and errors) joined by `|`.
pub fn codes_joined(codes: ActiveCodes, alarms: bool) -> String {
    let mut out = String::new();
    for code in codes.iter() {
        let is_warning = code.severity() == Severity::Warning;
        if is_warning != alarms {
            if !out.is_empty() {
                out.push('|');
            }
            out.push_str(code.name());
        }
    }
    out
}

#[derive(Serialize)]
struct Row<'a> {
    t_s: f64,
    soc_true_pct: String,
    soc_bms_pct: String,
    cell_min_v: String,
    cell_max_v: String,
    bank_v: String,
    current_a: String,
    load_a: String,
    charge_a: String,
    temp_c: String,
    ambient_c: String,
    atd: u8,
    atc: u8,
    prealarm: u8,
    atd_reasons: &'a str,
    atc_reasons: &'a str,
    alarms: &'a str,
    warnings: &'a str,
}

/// Writes `timeline.csv`.
pub fn write_timeline(path: &Path, samples: &[Sample]) -> Result<(), String> {
    let mut w = csv::Writer::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for s in samples {
        let (atd_reasons, atc_reasons) = (s.atd_reasons.to_string(), s.atc_reasons.to_string());
        let (alarms, warnings) = (codes_joined(s.codes, true), codes_joined(s.codes, false));
        w.serialize(Row {
            t_s: s.t_s,
            soc_true_pct: format!("{:.2}", s.soc_true_pct),
            soc_bms_pct: s.soc_bms_pct.map(|v| format!("{v:.1}")).unwrap_or_default(),
            cell_min_v: format!("{:.4}", s.cell_min_v),
            cell_max_v: format!("{:.4}", s.cell_max_v),
            bank_v: format!("{:.3}", s.bank_v),
            current_a: format!("{:.3}", s.current_a),
            load_a: format!("{:.3}", s.load_a),
            charge_a: format!("{:.3}", s.charge_a),
            temp_c: format!("{:.2}", s.temp_c),
            ambient_c: format!("{:.2}", s.ambient_c),
            atd: u8::from(s.atd),
            atc: u8::from(s.atc),
            prealarm: u8::from(s.prealarm),
            atd_reasons: &atd_reasons,
            atc_reasons: &atc_reasons,
            alarms: &alarms,
            warnings: &warnings,
        })
        .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    w.flush().map_err(|e| format!("{}: {e}", path.display()))
}

#[derive(Serialize)]
struct EventRow {
    t_s: f64,
    event: String,
}

/// Writes `events.csv`.
pub fn write_events(path: &Path, result: &RunResult) -> Result<(), String> {
    let mut w = csv::Writer::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for e in &result.events {
        w.serialize(EventRow {
            t_s: e.t_ms as f64 / 1000.0,
            event: e.what.to_string(),
        })
        .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    w.flush().map_err(|e| format!("{}: {e}", path.display()))
}

/// `12345.6` seconds as `3h25m45.6s`-style text, for the summary.
pub fn format_time(t_s: f64) -> String {
    let total = t_s.max(0.0);
    let days = (total / 86_400.0).floor();
    let rest = total - days * 86_400.0;
    let h = (rest / 3600.0).floor();
    let m = ((rest - h * 3600.0) / 60.0).floor();
    let s = rest - h * 3600.0 - m * 60.0;
    if days > 0.0 {
        format!("{days}d {h:02}:{m:02}:{s:04.1}")
    } else {
        format!("{h:02}:{m:02}:{s:04.1}")
    }
}

/// The text summary: events with times and reasons, SoC error, energy in/out.
pub fn summary(name: &str, result: &RunResult) -> String {
    let t = &result.totals;
    let mut out = String::new();
    let _ = writeln!(out, "scenario: {name}");
    let _ = writeln!(
        out,
        "simulated: {} ({} control ticks)",
        format_time(t.duration_s),
        t.ticks
    );
    let _ = writeln!(out, "events:");
    for e in &result.events {
        let _ = writeln!(
            out,
            "  {:>16}  {}",
            format_time(e.t_ms as f64 / 1000.0),
            e.what
        );
    }
    let pct = |v: Option<f64>| {
        v.map_or("n/a (SoC unknown)".to_string(), |v| {
            format!("{v:.2} points")
        })
    };
    let _ = writeln!(
        out,
        "soc error: mean {}, max {}, at end {}",
        pct(t.soc_error_mean_pct),
        pct(t.soc_error_max_pct),
        pct(t.soc_error_final_pct)
    );
    let _ = writeln!(
        out,
        "energy: in {:.1} Wh ({:.1} Ah), out {:.1} Wh ({:.1} Ah)",
        t.energy_in_wh, t.charge_in_ah, t.energy_out_wh, t.charge_out_ah
    );
    let _ = writeln!(
        out,
        "cells: min {:.3} V, max {:.3} V; below 2.5 V for {:.0} s, above 3.8 V for {:.0} s",
        t.cell_min_v, t.cell_max_v, t.undervolt_damage_s, t.overvolt_damage_s
    );
    let _ = writeln!(
        out,
        "bus: {} frames decoded, {} dropped",
        t.frames_good, t.frames_dropped
    );
    out
}

/// Draws `timeline.png`: five stacked panels sharing the time axis.
pub fn write_picture(path: &Path, title: &str, samples: &[Sample]) -> Result<(), String> {
    REGISTER_FONT.call_once(|| {
        // The embedded font is a valid TTF; if registering failed, text would just be missing.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
    draw(path, title, samples).map_err(|e| format!("{}: {e}", path.display()))
}

/// One lane of the outputs panel: name, colour, and whether it is on in a sample.
type Lane<'a> = (&'a str, RGBColor, &'a dyn Fn(&Sample) -> bool);

fn draw(path: &Path, title: &str, samples: &[Sample]) -> Result<(), Box<dyn std::error::Error>> {
    let end_s = samples.last().map_or(1.0, |s| s.t_s).max(1.0);
    let (unit, unit_s) = if end_s > 3.0 * 86_400.0 {
        ("days", 86_400.0)
    } else {
        ("hours", 3600.0)
    };
    let x_end = end_s / unit_s;
    let x = |s: &Sample| s.t_s / unit_s;

    let root = BitMapBackend::new(path, (1400, 1500)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 26))?;
    let panels = root.split_by_breakpoints::<i32, i32, _, _>([], [330, 610, 860, 1080]);

    let range = |f: &dyn Fn(&Sample) -> f64, pad: f64| {
        let (lo, hi) = samples
            .iter()
            .map(f)
            .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        if lo > hi {
            (0.0, 1.0)
        } else {
            (lo - pad, hi + pad)
        }
    };

    let mut soc = ChartBuilder::on(&panels[0])
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .caption("State of charge", ("sans-serif", 18))
        .build_cartesian_2d(0.0..x_end, 0.0..105.0)?;
    soc.configure_mesh().y_desc("%").x_desc(unit).draw()?;
    soc.draw_series(LineSeries::new(
        samples.iter().map(|s| (x(s), s.soc_true_pct)),
        BLUE.stroke_width(2),
    ))?
    .label("true")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    // The BMS's SoC is drawn only where known, as separate runs.
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut last_known = false;
    for s in samples {
        match s.soc_bms_pct {
            Some(v) => {
                if !last_known {
                    runs.push(Vec::new());
                }
                if let Some(run) = runs.last_mut() {
                    run.push((x(s), v));
                }
                last_known = true;
            }
            None => last_known = false,
        }
    }
    let mut first = true;
    for run in runs {
        let series = soc.draw_series(LineSeries::new(run, RED.stroke_width(2)))?;
        if first {
            series
                .label("BMS estimate")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
            first = false;
        }
    }
    soc.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;

    let (lo, hi) = range(&|s| s.cell_min_v, 0.02);
    let (_, hi2) = range(&|s| s.cell_max_v, 0.02);
    let mut cells = ChartBuilder::on(&panels[1])
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .caption("Cell voltage min / max", ("sans-serif", 18))
        .build_cartesian_2d(0.0..x_end, lo.min(3.0)..hi.max(hi2).max(3.4))?;
    cells.configure_mesh().y_desc("V").x_desc(unit).draw()?;
    cells
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (x(s), s.cell_max_v)),
            MAGENTA,
        ))?
        .label("max")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA));
    cells
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (x(s), s.cell_min_v)),
            BLUE,
        ))?
        .label("min")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    cells
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;

    let (clo, chi) = range(&|s| s.current_a.min(-s.load_a), 1.0);
    let (_, chi2) = range(&|s| s.charge_a, 1.0);
    let mut current = ChartBuilder::on(&panels[2])
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .caption("Current (positive = charging)", ("sans-serif", 18))
        .build_cartesian_2d(0.0..x_end, clo..chi.max(chi2))?;
    current.configure_mesh().y_desc("A").x_desc(unit).draw()?;
    current
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (x(s), s.charge_a)),
            GREEN,
        ))?
        .label("chargers")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    current
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (x(s), -s.load_a)),
            RED,
        ))?
        .label("loads")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    current
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (x(s), s.current_a)),
            BLACK,
        ))?
        .label("bank")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    current
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;

    let (tlo, thi) = range(&|s| s.temp_c.min(s.ambient_c), 2.0);
    let (_, thi2) = range(&|s| s.ambient_c.max(s.temp_c), 2.0);
    let mut temp = ChartBuilder::on(&panels[3])
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .caption("Temperature", ("sans-serif", 18))
        .build_cartesian_2d(0.0..x_end, tlo..thi.max(thi2))?;
    temp.configure_mesh().y_desc("°C").x_desc(unit).draw()?;
    temp.draw_series(LineSeries::new(
        samples.iter().map(|s| (x(s), s.ambient_c)),
        CYAN,
    ))?
    .label("ambient")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], CYAN));
    temp.draw_series(LineSeries::new(
        samples.iter().map(|s| (x(s), s.temp_c)),
        BLUE,
    ))?
    .label("battery")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    temp.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;

    // Outputs and alarms as lanes: each lane is 0.8 high when on.
    let lanes: [Lane; 5] = [
        ("ATD high", GREEN, &|s| s.atd),
        ("ATC high", BLUE, &|s| s.atc),
        ("pre-alarm", RGBColor(255, 140, 0), &|s| s.prealarm),
        ("alarm/error", RED, &|s| {
            s.codes.any(Severity::Alarm) || s.codes.any(Severity::Error)
        }),
        ("warning", RGBColor(200, 170, 0), &|s| {
            s.codes.any(Severity::Warning)
        }),
    ];
    let mut outputs = ChartBuilder::on(&panels[4])
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .caption("Outputs and alarms", ("sans-serif", 18))
        .build_cartesian_2d(0.0..x_end, 0.0..lanes.len() as f64 + 0.2)?;
    outputs
        .configure_mesh()
        .x_desc(unit)
        .y_labels(0)
        .disable_y_mesh()
        .draw()?;
    for (i, (name, color, on)) in lanes.iter().enumerate() {
        let base = (lanes.len() - 1 - i) as f64 + 0.1;
        outputs
            .draw_series(LineSeries::new(
                samples
                    .iter()
                    .map(|s| (x(s), base + if on(s) { 0.8 } else { 0.0 })),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    outputs
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}
