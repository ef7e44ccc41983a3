//! The recorder: the timeline samples, the event log and the totals of a run, and the
//! [`RunResult`] they make. It reads the device and the plant; it changes neither.

use bms_core::bms::{Decisions, Event, Output};
use bms_core::codes::{ActiveCodes, Severity};
use bms_core::protection::Reasons;

/// One row of the timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Time since the start, seconds.
    pub t_s: f64,
    /// True state of charge of the bank, percent.
    pub soc_true_pct: f64,
    /// The BMS's state of charge, percent; `None` while unknown.
    pub soc_bms_pct: Option<f64>,
    /// Lowest cell voltage, volts.
    pub cell_min_v: f64,
    /// Highest cell voltage, volts.
    pub cell_max_v: f64,
    /// Bank voltage at the terminals, volts.
    pub bank_v: f64,
    /// Bank current, amperes (positive = charging).
    pub current_a: f64,
    /// Current drawn by the loads, amperes.
    pub load_a: f64,
    /// Current delivered by the chargers, amperes.
    pub charge_a: f64,
    /// Mean battery temperature, °C.
    pub temp_c: f64,
    /// Ambient temperature, °C.
    pub ambient_c: f64,
    /// ATD high (loads allowed).
    pub atd: bool,
    /// ATC high (charging allowed).
    pub atc: bool,
    /// Pre-alarm active.
    pub prealarm: bool,
    /// Why ATD is free-floating.
    pub atd_reasons: Reasons,
    /// Why ATC is free-floating.
    pub atc_reasons: Reasons,
    /// Active codes.
    pub codes: ActiveCodes,
}

/// Something that happened, with its time.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedEvent {
    /// Time since the start, ms.
    pub t_ms: u64,
    /// What happened.
    pub what: What,
}

/// The kinds of logged events.
#[derive(Clone, Debug, PartialEq)]
pub enum What {
    /// A BMS output changed (PROT-11); `reasons` why it is free-floating / active now.
    Output {
        /// Which output.
        output: Output,
        /// New state: true = high.
        high: bool,
        /// Why.
        reasons: Reasons,
    },
    /// The BMS raised a code.
    CodeRaised(bms_core::codes::Code),
    /// The BMS cleared a code.
    CodeCleared(bms_core::codes::Code),
    /// A scenario event was applied.
    Scenario(String),
    /// Something the BMS did that is not an output or a code (a synchronisation).
    Bms(String),
    /// The plant crossed a damage limit (a cell below 2.5 V or above 3.8 V) or came back.
    Plant(String),
}

impl std::fmt::Display for What {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            What::Output {
                output,
                high,
                reasons,
            } => {
                let name = match output {
                    Output::Atd => "ATD",
                    Output::Atc => "ATC",
                    Output::Prealarm => "pre-alarm",
                };
                let state = match (output, high) {
                    (Output::Prealarm, true) => "active",
                    (Output::Prealarm, false) => "inactive",
                    (_, true) => "high",
                    (_, false) => "free-floating",
                };
                if reasons.is_empty() {
                    write!(f, "{name} {state}")
                } else {
                    write!(f, "{name} {state} ({reasons})")
                }
            }
            What::CodeRaised(c) => {
                write!(f, "{} raised: {}", severity_name(c.severity()), c.name())
            }
            What::CodeCleared(c) => {
                write!(f, "{} cleared: {}", severity_name(c.severity()), c.name())
            }
            What::Scenario(s) => write!(f, "scenario: {s}"),
            What::Bms(s) => write!(f, "bms: {s}"),
            What::Plant(s) => write!(f, "plant: {s}"),
        }
    }
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Warning => "warning",
        Severity::Alarm => "alarm",
        Severity::Error => "error",
    }
}

/// Totals over a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    /// Simulated time, seconds.
    pub duration_s: f64,
    /// Calls of [`Bms::step`].
    pub ticks: u64,
    /// Energy into the bank, Wh.
    pub energy_in_wh: f64,
    /// Energy out of the bank, Wh.
    pub energy_out_wh: f64,
    /// Charge into the bank, Ah.
    pub charge_in_ah: f64,
    /// Charge out of the bank, Ah.
    pub charge_out_ah: f64,
    /// Mean |BMS SoC − true SoC| over the samples where the BMS knew its SoC, points.
    pub soc_error_mean_pct: Option<f64>,
    /// Largest |BMS SoC − true SoC|, points.
    pub soc_error_max_pct: Option<f64>,
    /// BMS SoC − true SoC at the end, points.
    pub soc_error_final_pct: Option<f64>,
    /// Lowest cell voltage seen, volts.
    pub cell_min_v: f64,
    /// Highest cell voltage seen, volts.
    pub cell_max_v: f64,
    /// Time any cell spent below 2.5 V, seconds (damage the BMS should prevent).
    pub undervolt_damage_s: f64,
    /// Time any cell spent above 3.8 V, seconds.
    pub overvolt_damage_s: f64,
    /// Bus frames the decoder dropped.
    pub frames_dropped: u32,
    /// Bus frames decoded.
    pub frames_good: u32,
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// Timeline samples.
    pub samples: Vec<Sample>,
    /// Events in time order.
    pub events: Vec<LoggedEvent>,
    /// Totals.
    pub totals: Totals,
}

impl RunResult {
    /// Times (ms) at which `output` changed to `high`.
    pub fn output_changes(&self, output: Output, high: bool) -> Vec<u64> {
        self.events
            .iter()
            .filter_map(|e| match e.what {
                What::Output {
                    output: o, high: h, ..
                } if o == output && h == high => Some(e.t_ms),
                _ => None,
            })
            .collect()
    }
}

/// What a run records as it goes.
pub(super) struct Recorder {
    samples: Vec<Sample>,
    events: Vec<LoggedEvent>,
    pub(super) totals: Totals,
    soc_err_sum: f64,
    soc_err_n: u64,
    /// False for benchmarks: no timeline samples.
    pub(super) record_samples: bool,
    sample_ms: u64,
    /// When the next timeline sample is due, ms.
    pub(super) next_sample_ms: u64,
}

impl Recorder {
    pub(super) fn new(record_samples: bool, sample_ms: u64) -> Recorder {
        Recorder {
            samples: Vec::new(),
            events: Vec::new(),
            totals: Totals {
                cell_min_v: f64::MAX,
                cell_max_v: f64::MIN,
                ..Totals::default()
            },
            soc_err_sum: 0.0,
            soc_err_n: 0,
            record_samples,
            sample_ms,
            next_sample_ms: 0,
        }
    }

    pub(super) fn log(&mut self, t_ms: u64, what: What) {
        self.events.push(LoggedEvent { t_ms, what });
    }

    /// The events of one control step at `t_ms` (output changes and codes, PROT-11).
    pub(super) fn step(&mut self, t_ms: u64, decisions: &Decisions) {
        self.totals.ticks += 1;
        for e in &decisions.events {
            let what = match *e {
                Event::OutputChanged {
                    output,
                    high,
                    reasons,
                } => What::Output {
                    output,
                    high,
                    reasons,
                },
                Event::CodeRaised(c) => What::CodeRaised(c),
                Event::CodeCleared(c) => What::CodeCleared(c),
            };
            self.log(t_ms, what);
        }
    }

    /// Adds one timeline row; the next is due one sample period later.
    pub(super) fn sample(&mut self, sample: Sample) {
        if let Some(soc) = sample.soc_bms_pct {
            let err = (soc - sample.soc_true_pct).abs();
            self.soc_err_sum += err;
            self.soc_err_n += 1;
            let max = self.totals.soc_error_max_pct.get_or_insert(0.0);
            *max = max.max(err);
        }
        self.samples.push(sample);
        self.next_sample_ms = self.next_sample_ms.saturating_add(self.sample_ms);
    }

    /// The result, with the run's length and the SoC error at its end.
    pub(super) fn finish(mut self, duration_s: f64, soc_error_final_pct: Option<f64>) -> RunResult {
        self.totals.duration_s = duration_s;
        if self.soc_err_n > 0 {
            self.totals.soc_error_mean_pct = Some(self.soc_err_sum / self.soc_err_n as f64);
        }
        self.totals.soc_error_final_pct = soc_error_final_pct;
        RunResult {
            samples: self.samples,
            events: self.events,
            totals: self.totals,
        }
    }
}
