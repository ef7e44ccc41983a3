//! `bms-sim`: run scenarios, replay recordings and benchmark the OpenBMS core.

use bms_core::drivers::Protocol;
use bms_sim::{bench, cycle, engine, output, replay, scenario, serial};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "bms-sim",
    version,
    about = "OpenBMS simulator: the BMS core against a simulated LiFePO4 bank"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario: writes timeline.csv, events.csv and timeline.png, prints a summary.
    Run {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// Output directory (default: out/<scenario name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Directory holding the BMS's persisted records (settings, SoC, history) across runs.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Stop after this much simulated time ("36h", "2d").
        #[arg(long, value_parser = humantime::parse_duration)]
        until: Option<Duration>,
        /// Timeline sample period ("1min"), at least 1 s.
        #[arg(long, value_parser = parse_sample_period)]
        sample_every: Option<Duration>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Feed recorded measurements of one 12.8, 25.6 or 51.2 V battery to the core and write its
    /// decisions.
    Replay(replay::ReplayArgs),
    /// Measure simulated control ticks per second for banks of several sizes.
    Bench {
        /// Bank sizes (number of 12.8 V batteries, 1 to 50) to measure.
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4, 16, 50],
              value_parser = parse_batteries)]
        batteries: Vec<usize>,
        /// Simulated time per measurement.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1day")]
        simulate: Duration,
        /// What the batteries speak: openbms (bus reports) or jbd, jk, daly (packs the core
        /// polls on simulated serial lines).
        #[arg(long, default_value = "openbms", value_parser = parse_protocol)]
        protocol: Protocol,
    },
    /// Emulate packs with a JBD, JK-PB or Daly BMS on a serial port (USB-UART, RS485
    /// adapter) wired to a board's battery UART: they answer its requests as real ones do.
    Serial {
        /// The serial device (/dev/ttyUSB0, COM3).
        #[arg(long)]
        device: String,
        /// What the packs speak.
        #[arg(long, value_parser = parse_pack_protocol)]
        protocol: Protocol,
        /// Packs at addresses 1..N (JBD: 1).
        #[arg(long, default_value_t = 1)]
        packs: u8,
        /// Line speed, bit/s; default the protocol's own (JBD, Daly 9600; JK 115200).
        #[arg(long)]
        baud: Option<u32>,
        /// Cells per pack: 4 (12.8 V), 8 (25.6 V) or 16 (51.2 V).
        #[arg(long, default_value_t = 4)]
        cells: usize,
        /// Every cell's voltage, mV.
        #[arg(long, default_value_t = 3300)]
        cell_mv: u16,
        /// The packs fall silent after this long ("2min"): the board should lose them 5 s
        /// later.
        #[arg(long, value_parser = humantime::parse_duration)]
        silent_after: Option<Duration>,
        /// Stop after this long (default: run until interrupted).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        run_for: Option<Duration>,
    },
    /// Time to read every pack on one JBD, JK or Daly line, in simulated time (wire time and
    /// a 20 ms reply latency per answer).
    Cycle {
        /// Protocols to measure.
        #[arg(long, value_delimiter = ',', default_values = ["jbd", "jk", "daly"], value_parser = parse_protocol)]
        protocols: Vec<Protocol>,
        /// Line speeds, bit/s.
        #[arg(long, value_delimiter = ',', default_values_t = [9600u32, 115_200])]
        baud: Vec<u32>,
        /// Packs on the line (at most the protocol's addresses: JBD 1, JK 15, Daly 16).
        #[arg(long, default_value_t = 16)]
        packs: u8,
        /// Cells per pack.
        #[arg(long, default_value_t = 16)]
        cells: usize,
    },
}

/// `serial --protocol`: a protocol whose packs are asked (not the OpenBMS bus).
fn parse_pack_protocol(name: &str) -> Result<Protocol, String> {
    match parse_protocol(name)? {
        Protocol::OpenBms => Err("openbms batteries send unasked: jbd, jk or daly".into()),
        p => Ok(p),
    }
}

fn parse_protocol(name: &str) -> Result<Protocol, String> {
    Protocol::from_name(name)
        .ok_or_else(|| format!("unknown protocol {name:?}: openbms, jbd, jk or daly"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            scenario,
            out,
            state,
            until,
            sample_every,
            quiet,
        } => run(scenario, out, state, until, sample_every, quiet),
        Command::Replay(args) => match replay::replay(&args) {
            Ok(()) | Err(replay::ReplayError::BrokenPipe) => ExitCode::SUCCESS,
            Err(replay::ReplayError::Input(e)) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
            Err(replay::ReplayError::Output(e)) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        Command::Bench {
            batteries,
            simulate,
            protocol,
        } => {
            for n in batteries {
                let line = match bench::measure(n, simulate, protocol) {
                    Ok(r) => format!("{r}\n"),
                    Err(e) => format!("{n:>3} batteries: not measured: {e}\n"),
                };
                if let Err(code) = print_out(&line) {
                    return code;
                }
            }
            ExitCode::SUCCESS
        }
        Command::Serial {
            device,
            protocol,
            packs,
            baud,
            cells,
            cell_mv,
            silent_after,
            run_for,
        } => {
            let setup = serial::SerialPacks {
                protocol,
                packs,
                cells,
                cell_mv,
                silent_after,
            };
            run_serial(
                &device,
                baud.unwrap_or(protocol.default_baud()),
                &setup,
                run_for,
            )
        }
        Command::Cycle {
            protocols,
            baud,
            packs,
            cells,
        } => {
            for protocol in protocols {
                let on_line = packs.min(cycle::max_packs(protocol));
                for &speed in &baud {
                    match cycle::measure(protocol, speed, on_line, cells) {
                        Ok(r) => {
                            if let Err(code) = print_out(&format!("{r}\n")) {
                                return code;
                            }
                        }
                        Err(e) => {
                            eprintln!("error: {e}");
                            return ExitCode::from(2);
                        }
                    }
                }
            }
            ExitCode::SUCCESS
        }
    }
}

fn run_serial(
    device: &str,
    baud: u32,
    setup: &serial::SerialPacks,
    run_for: Option<Duration>,
) -> ExitCode {
    if !matches!(setup.cells, 4 | 8 | 16) {
        eprintln!("error: --cells {}: 4, 8 or 16", setup.cells);
        return ExitCode::from(2);
    }
    let emulators = match setup.emulators(baud) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut port = match serialport::new(device, baud)
        .timeout(Duration::from_millis(20))
        .open_native()
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {device}: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "{} {} packs ({} cells at {} mV) on {device} at {baud} bit/s, addresses 1..{}{}",
        setup.packs,
        setup.protocol.name(),
        setup.cells,
        setup.cell_mv,
        setup.packs,
        if run_for.is_none() {
            "; Ctrl-C stops"
        } else {
            ""
        }
    );
    let start = std::time::Instant::now();
    let mut reported = 0;
    let responder = serial::Responder::new(setup.protocol, emulators);
    let served = serial::serve(&mut port, setup, responder, |r| {
        if r.requests >= reported + 100 {
            reported = r.requests;
            println!("{} requests answered", r.requests);
        }
        run_for.is_none_or(|d| start.elapsed() < d)
    });
    match served {
        Ok(requests) => {
            println!("{requests} requests answered");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {device}: {e}");
            ExitCode::from(1)
        }
    }
}

/// Writes `text` to standard output. A reader that went away (`bms-sim bench | head -1`) ends
/// the program quietly with success, as it would a shell tool; any other failure is an error.
fn print_out(text: &str) -> Result<(), ExitCode> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: standard output: {e}");
            Err(ExitCode::from(1))
        }
    }
}

/// `--sample-every`: a duration of at least 1 s, as the scenario file's `sample_every`.
fn parse_sample_period(s: &str) -> Result<Duration, String> {
    let every = humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e}"))?;
    if every < Duration::from_secs(1) {
        return Err(format!("`{s}` is shorter than 1 s"));
    }
    Ok(every)
}

/// `bench --batteries`: a bank size the core supports (1 to 50 batteries of 12.8 V).
fn parse_batteries(s: &str) -> Result<usize, String> {
    let max = bms_core::limits::MAX_BATTERIES;
    match s.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a number of batteries from 1 to {max}"
        )),
    }
}

fn run(
    path: PathBuf,
    out: Option<PathBuf>,
    state: Option<PathBuf>,
    until: Option<Duration>,
    sample_every: Option<Duration>,
    quiet: bool,
) -> ExitCode {
    let sc = match scenario::load(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let out = out.unwrap_or_else(|| {
        let stem = path
            .file_stem()
            .map_or_else(|| "run".into(), |s| s.to_string_lossy().into_owned());
        PathBuf::from("out").join(stem)
    });
    let options = engine::RunOptions {
        until,
        sample_every,
        no_samples: false,
        state_dir: state,
    };
    let end_s = until
        .map_or(sc.duration, |u| u.min(sc.duration))
        .as_secs_f64();
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(end_s.ceil() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{bar:40}] {percent:>3}% simulated {msg} ({elapsed} real)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let result = engine::run(&sc, &options, &mut |t_s| {
        bar.set_position(t_s as u64);
        bar.set_message(output::format_time(t_s));
    });
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            bar.abandon();
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    bar.finish_and_clear();
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("error: {}: cannot create: {e}", out.display());
        return ExitCode::from(1);
    }
    let written = output::write_timeline(&out.join("timeline.csv"), &result.samples)
        .and_then(|()| output::write_events(&out.join("events.csv"), &result))
        .and_then(|()| output::write_picture(&out.join("timeline.png"), &sc.name, &result.samples));
    if let Err(e) = written {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    let text = format!(
        "{}wrote {}/timeline.csv, events.csv, timeline.png\n",
        output::summary(&sc.name, &result),
        out.display()
    );
    print_out(&text).err().unwrap_or(ExitCode::SUCCESS)
}
