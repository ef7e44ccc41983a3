//! The SoC estimators against recorded LiFePO4 profiles: the committed small
//! profile from `tools/socbench/profiles` (made with PyBaMM, checked here without it), and any
//! other profile folders named in `SOC_PROFILES` for the ignored table test.
//!
//! The profile format is `bms-sim replay`'s input (`t_s,current_a,temp_c,cell1_v..cell4_v`,
//! values held until the next row) and a truth file (`t_s,true_soc_pct`). The monitor is fed
//! once a second, as the batteries report, with the SoC restored to the true starting value
//! as `bms-sim replay --initial-soc` does; the error is taken at every row, as the benchmark does.

use std::path::{Path, PathBuf};

use bms_core::monitor::{CellInput, Monitor, MonitorInput, SocKnowledge, SocState};
use bms_core::settings::Settings;
use bms_core::soc::EstimatorKind;
use bms_core::soc::NAS_PER_MAH;

/// The profiles' nominal capacity, what the BMS is told.
const NOMINAL_CAPACITY_MAH: u32 = 100_000;
const CELLS: u16 = 4;
const REPORT_MS: u64 = 1000;

/// One row of a replay input file.
#[derive(Clone, Copy, Debug)]
struct Row {
    t_ms: u64,
    current_ma: i32,
    temp_ddegc: i16,
    cells_mv: [u16; 4],
}

/// SoC error of a run against the truth, in percentage points.
#[derive(Clone, Copy, Debug)]
struct Score {
    max_abs_pct: f64,
    rms_pct: f64,
    end_pct: f64,
    unknown_rows: usize,
    /// Share of the rows with a reported uncertainty where |error| ≤ 2σ (`NaN`: none).
    within_2_sigma: f64,
    /// Share of the rows with a reported uncertainty where |error| ≤ σ, an error within the
    /// 0.05-point rounding of the shown SoC counted as covered (as `soc-bench` counts it).
    within_1_sigma: f64,
    /// Mean of (error / σ)² over the rows with a reported uncertainty: 1 when the σ is right
    /// in variance, whatever the errors' distribution (`NaN`: none).
    mean_z2: f64,
    /// Rows with a reported uncertainty (the weight of the above when pooling profiles).
    sigma_rows: usize,
}

/// The monitor's SoC and its reported 1-σ uncertainty after a row, in percent.
#[derive(Clone, Copy, Debug)]
struct Estimate {
    soc_pct: Option<f64>,
    sigma_pct: Option<f64>,
}

fn numbers(line: &str) -> Vec<f64> {
    line.split(',')
        .map(|f| f.trim().parse::<f64>().expect("a number"))
        .collect()
}

fn parse_input(text: &str) -> Vec<Row> {
    let mut lines = text.lines();
    assert_eq!(
        lines.next().map(str::trim),
        Some("t_s,current_a,temp_c,cell1_v,cell2_v,cell3_v,cell4_v"),
        "replay input header"
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v = numbers(l);
            assert_eq!(v.len(), 7, "row {l:?}");
            Row {
                t_ms: (v[0] * 1000.0).round() as u64,
                current_ma: (v[1] * 1000.0).round() as i32,
                temp_ddegc: (v[2] * 10.0).round() as i16,
                cells_mv: [3, 4, 5, 6].map(|i| (v[i] * 1000.0).round() as u16),
            }
        })
        .collect()
}

fn parse_truth(text: &str) -> Vec<(u64, f64)> {
    let mut lines = text.lines();
    assert_eq!(lines.next().map(str::trim), Some("t_s,true_soc_pct"));
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v = numbers(l);
            ((v[0] * 1000.0).round() as u64, v[1])
        })
        .collect()
}

/// The capacity the BMS is told: the nominal one, or `SOC_CAPACITY_MAH` for an experiment
/// (telling it an aged pack's true capacity shows how much of an error is the capacity's).
fn capacity_mah() -> u32 {
    std::env::var("SOC_CAPACITY_MAH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(NOMINAL_CAPACITY_MAH)
}

/// The SoC the run starts from: the true one, or that plus `SOC_INITIAL_ERROR_PCT` points
/// (clamped to 0..100) for an experiment with a wrong start (a set or restored SoC that is off).
fn initial_soc(true_soc_pct: f64) -> f64 {
    let error = std::env::var("SOC_INITIAL_ERROR_PCT")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    (true_soc_pct + error).clamp(0.0, 100.0)
}

/// A stretch without bank data, from `SOC_GAP_H` = `start_h,hours` (an experiment): the
/// monitor is told the data is missing every second instead of being updated, as the node
/// does while a battery is lost.
fn gap_ms() -> Option<(u64, u64)> {
    let v = std::env::var("SOC_GAP_H").ok()?;
    let (start, hours) = v.split_once(',')?;
    let start: f64 = start.trim().parse().ok()?;
    let hours: f64 = hours.trim().parse().ok()?;
    let start_ms = (start * 3.6e6) as u64;
    Some((start_ms, start_ms + (hours * 3.6e6) as u64))
}

fn restored(soc_pct: f64) -> SocState {
    let capacity_mah = capacity_mah();
    let soc_pct = initial_soc(soc_pct);
    let used_nas =
        ((100.0 - soc_pct) / 100.0 * f64::from(capacity_mah) * NAS_PER_MAH as f64).round() as i64;
    SocState {
        knowledge: SocKnowledge::Known,
        capacity_mah,
        used_nas,
        consumed_nas: used_nas,
        ..SocState::default()
    }
}

/// Runs one estimator over a profile; returns the estimate after every row.
fn run(kind: EstimatorKind, rows: &[Row], soc0_pct: f64) -> Vec<Estimate> {
    run_traced(kind, rows, soc0_pct, &mut |_, _| {})
}

/// [`run`], calling `trace` after every row with the row index and the monitor.
fn run_traced(
    kind: EstimatorKind,
    rows: &[Row],
    soc0_pct: f64,
    trace: &mut dyn FnMut(usize, &Monitor),
) -> Vec<Estimate> {
    let mut monitor = Monitor::with_kind(kind, Some(restored(soc0_pct)));
    let settings = Settings::default();
    let capacity_mah = capacity_mah();
    let gap = gap_ms();
    let in_gap = |t: u64| gap.is_some_and(|(from, to)| (from..to).contains(&t));
    let mut out = Vec::with_capacity(rows.len());
    for (k, row) in rows.iter().enumerate() {
        let next_ms = rows.get(k + 1).map_or(row.t_ms + 1, |r| r.t_ms);
        let input = MonitorInput {
            bank_mv: row.cells_mv.iter().map(|&v| u32::from(v)).sum(),
            bank_ma: row.current_ma,
            capacity_mah,
            cells_in_series: CELLS,
        };
        let cells = CellInput {
            min_cell_mv: row.cells_mv.iter().copied().min(),
            max_cell_mv: row.cells_mv.iter().copied().max(),
            min_temp_ddegc: Some(row.temp_ddegc),
            max_temp_ddegc: Some(row.temp_ddegc),
        };
        let mut t = row.t_ms;
        let status = if in_gap(t) {
            monitor.data_missing();
            *monitor.status()
        } else {
            monitor.update_with(t, &input, &cells, &settings)
        };
        out.push(Estimate {
            soc_pct: status.soc_permille.map(|p| f64::from(p) / 10.0),
            sigma_pct: status.soc_uncertainty_permille.map(|p| f64::from(p) / 10.0),
        });
        trace(k, &monitor);
        t += REPORT_MS;
        while t < next_ms {
            if in_gap(t) {
                monitor.data_missing();
            } else {
                let _ = monitor.update_with(t, &input, &cells, &settings);
            }
            t += REPORT_MS;
        }
    }
    out
}

fn score(estimates: &[Estimate], truth: &[(u64, f64)]) -> Score {
    assert_eq!(estimates.len(), truth.len(), "one truth row per input row");
    let errors: Vec<(f64, Option<f64>)> = estimates
        .iter()
        .zip(truth)
        .filter_map(|(e, (_, t))| e.soc_pct.map(|s| (s - t, e.sigma_pct)))
        .collect();
    let n = errors.len().max(1) as f64;
    let with_sigma: Vec<bool> = errors
        .iter()
        .filter_map(|(e, sigma)| sigma.map(|s| e.abs() <= 2.0 * s.max(0.1)))
        .collect();
    let in_1_sigma: Vec<bool> = errors
        .iter()
        .filter_map(|(e, sigma)| sigma.map(|s| e.abs() <= s + 0.05))
        .collect();
    let z2: Vec<f64> = errors
        .iter()
        .filter_map(|(e, sigma)| sigma.map(|s| (e / s.max(0.1)).powi(2)))
        .collect();
    Score {
        max_abs_pct: errors.iter().fold(0.0, |m, (e, _)| e.abs().max(m)),
        rms_pct: (errors.iter().map(|(e, _)| e * e).sum::<f64>() / n).sqrt(),
        end_pct: errors.last().map_or(f64::NAN, |(e, _)| *e),
        unknown_rows: estimates.iter().filter(|e| e.soc_pct.is_none()).count(),
        within_2_sigma: with_sigma.iter().filter(|&&ok| ok).count() as f64
            / with_sigma.len() as f64,
        within_1_sigma: in_1_sigma.iter().filter(|&&ok| ok).count() as f64
            / in_1_sigma.len() as f64,
        mean_z2: z2.iter().sum::<f64>() / z2.len() as f64,
        sigma_rows: z2.len(),
    }
}

/// Plain and adaptive scores over one profile.
fn compare(input: &str, truth: &str) -> (Score, Score) {
    let rows = parse_input(input);
    let truth = parse_truth(truth);
    assert_eq!(rows.len(), truth.len());
    for (row, (t, _)) in rows.iter().zip(&truth) {
        assert_eq!(row.t_ms, *t, "input and truth rows at the same times");
    }
    let soc0 = truth.first().expect("rows").1;
    let plain = score(&run(EstimatorKind::Plain, &rows, soc0), &truth);
    let adaptive = score(&run(EstimatorKind::Adaptive, &rows, soc0), &truth);
    (plain, adaptive)
}

fn print_row(name: &str, plain: &Score, adaptive: &Score) {
    println!(
        "{name:24} | plain max {:6.2} rms {:5.2} end {:+6.2} | adaptive max {:6.2} rms {:5.2} end {:+6.2} in 1σ {:5.1} % in 2σ {:5.1} % (error/σ)² {:6.2} over {} rows | unknown rows {}/{}",
        plain.max_abs_pct,
        plain.rms_pct,
        plain.end_pct,
        adaptive.max_abs_pct,
        adaptive.rms_pct,
        adaptive.end_pct,
        adaptive.within_1_sigma * 100.0,
        adaptive.within_2_sigma * 100.0,
        adaptive.mean_z2,
        adaptive.sigma_rows,
        plain.unknown_rows,
        adaptive.unknown_rows
    );
}

/// The small PyBaMM profile committed with the benchmark (2 days, 60 s rows, Prada2013 cell,
/// sensor gain +0.5 %, offset +50 mA, noise): a dull day without a full charge, then a sunny
/// one with a synchronisation.
const SMALL_INPUT: &str = include_str!("../../../tools/socbench/profiles/small-2day.csv");
const SMALL_TRUTH: &str = include_str!("../../../tools/socbench/profiles/small-2day.truth.csv");

/// The goal for profiles with a full charge (docs/soc-benchmark.md): the adaptive estimator stays within 1.5
/// points of the truth and is never worse than plain counting; its reported uncertainty
/// covers the error (|error| ≤ 2σ) nearly everywhere.
#[test]
fn adaptive_estimator_beats_plain_counting_on_the_committed_profile() {
    let (plain, adaptive) = compare(SMALL_INPUT, SMALL_TRUTH);
    print_row("small-2day", &plain, &adaptive);
    assert_eq!(
        adaptive.unknown_rows, 0,
        "the restored SoC is known throughout"
    );
    assert!(
        adaptive.max_abs_pct <= 1.5,
        "adaptive max error {:.2} points",
        adaptive.max_abs_pct
    );
    assert!(
        adaptive.max_abs_pct <= plain.max_abs_pct,
        "adaptive {:.2} worse than plain {:.2}",
        adaptive.max_abs_pct,
        plain.max_abs_pct
    );
    assert!(
        adaptive.within_2_sigma >= 0.9,
        "uncertainty covers the error in only {:.0} % of the rows",
        adaptive.within_2_sigma * 100.0
    );
}

/// Folders holding `input.csv` and `truth.csv`, from `SOC_PROFILES` (comma-separated).
fn profile_dirs() -> Vec<PathBuf> {
    std::env::var("SOC_PROFILES")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| PathBuf::from(s.trim()))
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The table for the profiles in `SOC_PROFILES` (run with `--ignored --nocapture`, best in
/// release: `cargo test --release -p bms-core --test estimator_profiles -- --ignored`).
#[test]
#[ignore = "needs SOC_PROFILES; prints a table"]
fn estimator_profile_table() {
    for dir in profile_dirs() {
        let (plain, adaptive) =
            compare(&read(&dir.join("input.csv")), &read(&dir.join("truth.csv")));
        print_row(&dir.display().to_string(), &plain, &adaptive);
    }
}

/// Writes `trace.csv` next to each profile in `SOC_PROFILES`: truth, both estimates and the
/// adaptive estimator's state, one line per minute.
#[test]
#[ignore = "needs SOC_PROFILES; writes trace.csv files"]
fn estimator_profile_trace() {
    use std::fmt::Write as _;
    for dir in profile_dirs() {
        let rows = parse_input(&read(&dir.join("input.csv")));
        let truth = parse_truth(&read(&dir.join("truth.csv")));
        let soc0 = truth[0].1;
        let plain = run(EstimatorKind::Plain, &rows, soc0);
        let mut text = String::from(
            "t_h,truth,plain,adaptive,sigma,offset_ma,thr_err,bias_lo,hyst,cell_mv,current_a,knee,float,syncs,loaded,capf,fallbacks\n",
        );
        let mut last_min = u64::MAX;
        let _ = run_traced(EstimatorKind::Adaptive, &rows, soc0, &mut |k, m| {
            let row = rows[k];
            let minute = row.t_ms / 60_000;
            if minute == last_min {
                return;
            }
            last_min = minute;
            let a = m.estimator().adaptive().expect("adaptive");
            let c = a.corrections();
            let _ = writeln!(
                text,
                "{:.4},{:.3},{},{},{:.2},{:.1},{:.2},{:.1},{:.2},{:.1},{:.2},{},{},{},{},{:.4},{}",
                row.t_ms as f64 / 3.6e6,
                truth[k].1,
                plain[k]
                    .soc_pct
                    .map_or(String::new(), |v| format!("{v:.1}")),
                m.soc_permille()
                    .map_or(String::new(), |v| format!("{:.1}", f64::from(v) / 10.0)),
                a.soc_sigma() * 100.0,
                a.offset_ma(),
                a.throughput_error() * 100.0,
                a.table_bias(0.2) * 100.0,
                a.hysteresis(),
                row.cells_mv.iter().map(|&v| f64::from(v)).sum::<f64>() / 4.0,
                f64::from(row.current_ma) / 1000.0,
                c.knee_readings,
                c.float_readings,
                c.syncs,
                c.loaded_readings,
                a.capacity_factor(),
                c.fallbacks
            );
        });
        std::fs::write(dir.join("trace.csv"), text).expect("trace written");
    }
}
