//! `bms-sim bench`: simulated control ticks per second of wall time, for banks of several sizes.
//! A benchmark, not a test: the numbers go into the README.

use crate::engine::{Engine, RunOptions};
use crate::error::InputError;
use crate::scenario;
use bms_core::drivers::Protocol;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

/// One measurement.
#[derive(Clone, Debug)]
pub struct BenchResult {
    /// Batteries in the bank.
    pub batteries: usize,
    /// What they speak.
    pub protocol: Protocol,
    /// Control ticks simulated.
    pub ticks: u64,
    /// Simulated time.
    pub simulated: Duration,
    /// Wall time taken.
    pub wall: Duration,
    /// CPU time of the simulating thread: what one core needs, whatever else the machine
    /// is doing.
    pub cpu: Duration,
}

impl BenchResult {
    /// Control ticks per second of CPU time on one core.
    pub fn ticks_per_s(&self) -> f64 {
        self.ticks as f64 / self.cpu.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for BenchResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let speedup = self.simulated.as_secs_f64() / self.cpu.as_secs_f64().max(1e-9);
        let year_s = 365.0 * 86_400.0 / speedup;
        write!(
            f,
            "{:>3} batteries ({}): {:>9.0} ticks/s, {:>8.0}x real time, a simulated year in {:>6.1} s \
             ({} ticks, {:.2} s CPU, {:.2} s wall)",
            self.batteries,
            self.protocol.name(),
            self.ticks_per_s(),
            speedup,
            year_s,
            self.ticks,
            self.cpu.as_secs_f64(),
            self.wall.as_secs_f64()
        )
    }
}

/// The bench scenario: `batteries` 12.8 V 100 Ah batteries in parallel (two in series when
/// even, for 24 V banks of 4 and more), a cycling load and a mains charger in the evening, so
/// the core sees discharge, charge and synchronisation. The batteries speak `protocol`: bus
/// reports, or packs the core polls on simulated serial lines.
pub fn scenario_text(batteries: usize, simulated: Duration, protocol: Protocol) -> String {
    let (series, parallel) = if batteries >= 4 && batteries % 2 == 0 {
        (2, batteries / 2)
    } else {
        (1, batteries)
    };
    format!(
        r#"
name = "bench {batteries} batteries"
duration = "{secs}s"
seed = 7

[bank]
battery = "12.8V"
capacity_ah = 100
series = {series}
parallel = {parallel}
initial_soc_pct = 90
protocol = "{protocol}"

[[load]]
name = "load"
current_a = {load}
on_for = "20min"
off_for = "10min"

[[charger]]
name = "mains"
max_a = {charge}
hours = [[18, 23]]
"#,
        secs = simulated.as_secs().max(1),
        load = 8.0 * parallel as f64,
        charge = 40.0 * parallel as f64,
        protocol = protocol.name(),
    )
}

/// Runs the bench scenario for `batteries` speaking `protocol` and times it; refused when the
/// protocol cannot have that many packs (JK: 15 on its line).
pub fn measure(
    batteries: usize,
    simulated: Duration,
    protocol: Protocol,
) -> Result<BenchResult, InputError> {
    let text = scenario_text(batteries, simulated, protocol);
    let sc = scenario::parse(Path::new("bench"), &text)?;
    let options = RunOptions {
        no_samples: true,
        ..RunOptions::default()
    };
    let start = Instant::now();
    let cpu_start = cpu_time::ThreadTime::now();
    let Ok(mut engine) = Engine::new(&sc, &options) else {
        unreachable!("the bench keeps no state directory")
    };
    engine.run(&mut |_| {});
    let result = engine.finish();
    Ok(BenchResult {
        batteries,
        protocol,
        ticks: result.totals.ticks,
        simulated: Duration::from_secs_f64(result.totals.duration_s),
        wall: start.elapsed(),
        cpu: cpu_start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_scenarios_parse_for_every_size() {
        for n in [1, 4, 16, 50, 7] {
            let sc = scenario::parse(
                Path::new("bench"),
                &scenario_text(n, Duration::from_secs(60), Protocol::OpenBms),
            )
            .unwrap();
            assert_eq!(sc.bank.series * sc.bank.parallel, n);
        }
        for protocol in [Protocol::Jbd, Protocol::Jk, Protocol::Daly] {
            let sc = scenario::parse(
                Path::new("bench"),
                &scenario_text(4, Duration::from_secs(60), protocol),
            )
            .unwrap();
            assert_eq!(sc.bank.protocol.protocol(), protocol);
        }
        let too_many = measure(16, Duration::from_secs(1), Protocol::Jk).unwrap_err();
        assert!(too_many.to_string().contains("jk"), "{too_many}");
    }
}
