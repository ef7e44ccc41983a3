//! The `bms-sim` command line: `run` writes its files, `replay` keeps its fixed interface, and
//! bad input gets one clear line naming file, line and field, exit code 2, nothing written.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bms_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bms-sim"))
        .args(args)
        .output()
        .unwrap()
}

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn data(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .display()
        .to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn run_writes_timeline_events_and_picture_and_prints_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let scenario = repo("scenarios/firmware-update-fails.toml");
    let o = bms_sim(&[
        "run",
        s(&scenario),
        "--out",
        s(&out),
        "--until",
        "1h",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary = String::from_utf8_lossy(&o.stdout);
    assert!(
        summary.contains("ATC free-floating (firmware_update)"),
        "{summary}"
    );
    assert!(summary.contains("energy: in"), "{summary}");
    let csv = fs::read_to_string(out.join("timeline.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(
        header.starts_with("t_s,soc_true_pct,soc_bms_pct,cell_min_v,cell_max_v"),
        "{header}"
    );
    assert!(csv.lines().count() > 100);
    let events = fs::read_to_string(out.join("events.csv")).unwrap();
    assert!(
        events.contains("1800.0,scenario: dfu_start\n1800.0,ATC free-floating (firmware_update)"),
        "{events}"
    );
    let png = fs::read(out.join("timeline.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 20_000, "a real picture, not an empty canvas");
}

#[test]
fn run_with_state_restores_the_records_at_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let scenario = repo("scenarios/remote-switch.toml");
    let out = dir.path().join("o");
    let args = [
        "run",
        s(&scenario),
        "--out",
        s(&out),
        "--until",
        "2min",
        "--quiet",
        "--state",
        s(&state),
    ];
    let first = bms_sim(&args);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(!String::from_utf8_lossy(&first.stdout).contains("restored"));
    assert!(state.join("bms/settings").exists());
    let second = bms_sim(&args);
    assert!(String::from_utf8_lossy(&second.stdout).contains("bms: restored the stored records"));
}

#[test]
fn run_refuses_an_unknown_scenario_key_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    fs::write(&bad, "name = \"x\"\nduration = \"1h\"\n\n[bank]\nbattery = \"12.8V\"\ncapacity_ah = 100\ninitial_soc_pct = 50\nvoltage = 12\n").unwrap();
    let out = dir.path().join("out");
    let o = bms_sim(&["run", s(&bad), "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("bad.toml line 8 field `voltage`: unknown field `voltage`"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
    let missing = bms_sim(&["run", s(&dir.path().join("nope.toml")), "--out", s(&out)]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("nope.toml: cannot read"),
        "{}",
        stderr(&missing)
    );
}

/// A `bus_noise` count of 2^32 hung the run and 2^63 aborted it: refused with the value.
#[test]
fn run_refuses_a_bus_noise_count_beyond_a_megabyte() {
    let dir = tempfile::tempdir().unwrap();
    for (count, ok) in [
        ("4294967296", false),
        ("9223372036854775808", false),
        ("0", false),
        ("1000", true),
    ] {
        let bad = dir.path().join("noise.toml");
        fs::write(
            &bad,
            format!("name = \"x\"\nduration = \"1m\"\n\n[bank]\nbattery = \"12.8V\"\ncapacity_ah = 100\ninitial_soc_pct = 50\n\n[[event]]\nat = \"10s\"\naction = \"bus_noise\"\ncount = {count}\n"),
        )
        .unwrap();
        let out = dir.path().join("out");
        let o = bms_sim(&["run", s(&bad), "--out", s(&out)]);
        if ok {
            assert!(o.status.success(), "{count}: {}", stderr(&o));
            continue;
        }
        assert_eq!(o.status.code(), Some(2), "{count}");
        let err = stderr(&o);
        assert!(err.contains("count"), "{count}: {err}");
        assert!(!out.exists(), "nothing written");
    }
}

#[test]
fn every_shipped_scenario_parses() {
    let mut count = 0;
    for entry in fs::read_dir(repo("scenarios")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            bms_sim::scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            count += 1;
        }
    }
    assert!(count >= 8, "{count} scenarios");
}

/// PROT-1, PROT-8, PROT-3 through the fixed replay interface: outputs high once the battery has
/// reported, remote off opens ATD/ATC, a cell under the pre-alarm level for 5 s raises the
/// pre-alarm, and the output has one row per input row.
#[test]
fn replay_writes_one_row_of_decisions_per_input_row() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("decisions.csv");
    let o = bms_sim(&["replay", &data("replay-small.csv"), "--out", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut reader = csv::Reader::from_path(&out).unwrap();
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["t_s", "soc_pct", "atd", "atc", "prealarm", "alarms", "warnings"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 47);
    let row = |t: &str| rows.iter().find(|r| &r[0] == t).unwrap().clone();
    assert_eq!(&row("0")[2], "0", "free-floating until valid data (PROT-1)");
    assert_eq!((&row("5")[2], &row("5")[3], &row("5")[4]), ("1", "1", "0"));
    assert_eq!(&row("5")[1], "", "SoC unknown without --initial-soc");
    assert_eq!(
        (&row("13")[2], &row("13")[3]),
        ("0", "0"),
        "remote off (PROT-8)"
    );
    assert_eq!((&row("16")[2], &row("16")[3]), ("1", "1"));
    assert_eq!(&row("23")[4], "0", "pre-alarm waits for its 5 s debounce");
    assert_eq!(&row("26")[4], "1", "cell 4 at 3.05 V for 5 s (PROT-3)");
    assert_eq!(&row("26")[6], "low_cell_voltage");
    assert_eq!(
        &row("75.5")[4],
        "0",
        "cleared after the cell recovered for 10 s"
    );
}

#[test]
fn replay_with_initial_soc_and_key_adds_soc_and_advertisement() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d.csv");
    let settings = dir.path().join("s.toml");
    fs::write(&settings, "prealarm_cell_mv = 3000\n").unwrap();
    let o = bms_sim(&[
        "replay",
        &data("replay-small.csv"),
        "--out",
        s(&out),
        "--initial-soc",
        "55",
        "--adv-key",
        "000102030405060708090a0b0c0d0e0f",
        "--settings",
        s(&settings),
        "--capacity-ah",
        "200",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut reader = csv::Reader::from_path(&out).unwrap();
    assert_eq!(&reader.headers().unwrap()[7], "adv_hex");
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(&rows[0][1], "55.0");
    for r in &rows {
        assert_eq!(
            r[7].len(),
            48,
            "24-byte payload without company id: {}",
            &r[7]
        );
        assert!(
            r[7].starts_with("10"),
            "product advertisement record: {}",
            &r[7]
        );
        assert_eq!(&r[4], "0", "3.05 V is above a 3.00 V pre-alarm level");
    }
}

/// `replay --estimator plain|adaptive` selects the SoC estimator for the benchmark (default:
/// the product default, adaptive); the output columns stay the fixed ones and the protection
/// decisions do not depend on the estimator; an unknown estimator is refused and writes nothing.
#[test]
fn replay_estimator_flag_selects_the_estimator_and_keeps_the_columns() {
    let help = bms_sim(&["replay", "--help"]);
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--estimator"), "{help}");
    assert!(
        help.contains("plain") && help.contains("adaptive"),
        "{help}"
    );
    assert!(help.contains("[default: adaptive]"), "{help}");

    let dir = tempfile::tempdir().unwrap();
    let input = data("replay-small.csv");
    let mut runs = Vec::new();
    for kind in [None, Some("plain"), Some("adaptive")] {
        let out = dir.path().join(format!("{kind:?}.csv"));
        let mut args = vec!["replay", &input, "--out", s(&out), "--initial-soc", "55"];
        args.extend(kind.iter().flat_map(|k| ["--estimator", *k]));
        let o = bms_sim(&args);
        assert!(o.status.success(), "{kind:?}: {}", stderr(&o));
        let mut reader = csv::Reader::from_path(&out).unwrap();
        assert_eq!(
            reader.headers().unwrap().iter().collect::<Vec<_>>(),
            ["t_s", "soc_pct", "atd", "atc", "prealarm", "alarms", "warnings"],
            "{kind:?}"
        );
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 47, "{kind:?}");
        assert_eq!(&rows[0][1], "55.0", "{kind:?}");
        runs.push(rows);
    }
    assert_eq!(runs[0], runs[2], "the default is the adaptive estimator");
    let decisions = |rows: &[csv::StringRecord]| -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| r.iter().skip(2).map(str::to_owned).collect())
            .collect()
    };
    assert_eq!(decisions(&runs[1]), decisions(&runs[2]));

    let out = dir.path().join("bad.csv");
    let o = bms_sim(&[
        "replay",
        &data("replay-small.csv"),
        "--out",
        s(&out),
        "--estimator",
        "kalman",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("kalman"), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn replay_bad_input_names_file_line_and_field_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d.csv");
    let cases = [
        ("t_s,current_a,temp_c,cell1_v,cell2_v,cell3_v\n0,1,20,3.3,3.3,3.3\n", "line 1 field `cell4_v`: missing column"),
        ("t_s,current_a,temp_c,cell1_v,cell2_v,cell3_v,cell4_v,extra\n", "line 1 field `extra`: unknown column"),
        ("t_s,current_a,temp_c,cell1_v,cell2_v,cell3_v,cell4_v\n0,1,20,3.3,3.3,3.3,3.3\nabc,1,20,3.3,3.3,3.3,3.3\n", "line 3 field `t_s`: not a number"),
        ("t_s,current_a,temp_c,cell1_v,cell2_v,cell3_v,cell4_v\n5,1,20,3.3,3.3,3.3,3.3\n5,1,20,3.3,3.3,3.3,3.3\n", "line 3 field `t_s`: time 5 is not after"),
        ("t_s,current_a,temp_c,cell1_v,cell2_v,cell3_v,cell4_v\n0,x,20,3.3,3.3,3.3,3.3\n", "line 2 field `current_a`: not a number"),
        ("t_s,current_a,temp_c,cell1_v,cell2_v,cell3_v,cell4_v,remote_on\n0,1,20,3.3,3.3,3.3,3.3,yes\n", "line 2 field `remote_on`"),
        ("t_s,current_a,temp_c,cell1_v,cell2_v,cell3_v,cell4_v\n0,-3e6,20,3.3,3.3,3.3,3.3\n", "line 2 field `current_a`: -3e6 A is beyond ±2 MA"),
        ("t_s,current_a,temp_c,cell1_v,cell2_v,cell3_v,cell4_v\n0,1,250,3.3,3.3,3.3,3.3\n", "line 2 field `temp_c`: 250 outside −100–200 °C"),
        ("t_s,current_a,temp_c,cell1_v,cell2_v,cell3_v,cell4_v\n0,1,20,3.3,3.3,7.5,3.3\n", "line 2 field `cell3_v`: 7.5 outside 0–6 V"),
        // A gap of 1e10 s would step the core for days: refused, naming the row.
        ("t_s,current_a,temp_c,cell1_v,cell2_v,cell3_v,cell4_v\n0,1,20,3.3,3.3,3.3,3.3\n1e10,1,20,3.3,3.3,3.3,3.3\n", "line 3 field `t_s`: time 1e10 is more than 604800 s after the previous row's 0"),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        assert_replay_refused(dir.path(), i, text, expected, &out);
    }
    let o = bms_sim(&[
        "replay",
        s(&dir.path().join("missing.csv")),
        "--out",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("missing.csv: cannot read"));
    let settings = dir.path().join("bad.toml");
    fs::write(&settings, "prealarm_cell_mv = 3000\ncolour = 1\n").unwrap();
    let o = bms_sim(&[
        "replay",
        &data("replay-small.csv"),
        "--out",
        s(&out),
        "--settings",
        s(&settings),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("bad.toml line 2 field `colour`"),
        "{}",
        stderr(&o)
    );
    fs::write(&settings, "prealarm_cell_mv = 2000\n").unwrap();
    let o = bms_sim(&[
        "replay",
        &data("replay-small.csv"),
        "--out",
        s(&out),
        "--settings",
        s(&settings),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("bad.toml line 1 field `prealarm_cell_mv`"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    let o = bms_sim(&[
        "replay",
        &data("replay-small.csv"),
        "--out",
        s(&out),
        "--initial-soc",
        "150",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

/// Times are taken to the millisecond: two rows within one millisecond are refused with what is
/// wrong (0.002 is after 0.0015, so "not after" was a false statement), and nothing is written.
#[test]
fn replay_two_times_in_one_millisecond_are_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d.csv");
    let input = dir.path().join("in.csv");
    let header = "t_s,current_a,temp_c,cell1_v,cell2_v,cell3_v,cell4_v\n";
    let row = ",1,20,3.3,3.3,3.3,3.3\n";
    fs::write(&input, format!("{header}0{row}0.0015{row}0.002{row}")).unwrap();
    let o = bms_sim(&["replay", s(&input), "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("in.csv line 4 field `t_s`: time 0.002 is in the same millisecond as the previous row's 0.0015"),
        "{err}"
    );
    assert!(!out.exists());
    fs::write(&input, format!("{header}5{row}4.9999{row}")).unwrap();
    let err = stderr(&bms_sim(&["replay", s(&input), "--out", s(&out)]));
    assert!(
        err.contains("time 4.9999 is not after the previous row's 5"),
        "{err}"
    );
}

#[test]
fn bench_prints_ticks_per_second_for_each_size() {
    let o = bms_sim(&["bench", "--batteries", "1,4", "--simulate", "2min"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().all(|l| l.contains("ticks/s")), "{text}");
}

/// `--sample-every` on the command line obeys the scenario file's rule (at least 1 s): `0s`
/// is refused with the value named, exit code 2, nothing written.
#[test]
fn run_refuses_a_sample_period_under_1s() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let scenario = repo("scenarios/cable-unplugged.toml");
    for every in ["0s", "500ms"] {
        let o = bms_sim(&[
            "run",
            s(&scenario),
            "--out",
            s(&out),
            "--sample-every",
            every,
            "--quiet",
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("--sample-every") && err.contains(every),
            "{err}"
        );
        assert!(!out.exists());
    }
}

/// `bench --batteries` outside the sizes the core supports (1 to 50) is a usage error naming
/// the value, not a panic.
#[test]
fn bench_refuses_0_and_51_batteries() {
    for n in ["0", "51"] {
        let o = bms_sim(&["bench", "--batteries", n, "--simulate", "1min"]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("`{n}`")) && err.contains("1 to 50"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A reader that goes away (`bms-sim ... | head`) ends the program quietly: no panic, exit 0.
#[test]
fn a_closed_standard_output_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("long.csv");
    let mut text = String::from("t_s,current_a,temp_c,cell1_v,cell2_v,cell3_v,cell4_v\n");
    for t in 0..20_000 {
        text.push_str(&format!("{t},-5,25,3.3,3.3,3.3,3.3\n"));
    }
    fs::write(&input, text).unwrap();
    for args in [
        vec!["replay", s(&input), "--out", "-"],
        vec!["bench", "--batteries", "1", "--simulate", "1min"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bms-sim"))
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).is_empty(), "{args:?}: {}", stderr(&o));
    }
}

/// An input with a header and no rows gives an output with the header and no rows (the same
/// header a run with rows writes), not an empty file.
#[test]
fn replay_header_only_input_writes_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.csv");
    fs::write(
        &empty,
        "t_s,current_a,temp_c,cell1_v,cell2_v,cell3_v,cell4_v\n",
    )
    .unwrap();
    let key = "00112233445566778899aabbccddeeff";
    let header_of = |input: &str, out: &Path| {
        let o = bms_sim(&[
            "replay",
            input,
            "--out",
            s(out),
            "--adv-key",
            key,
            "--uncertainty",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        fs::read_to_string(out).unwrap()
    };
    let from_empty = header_of(s(&empty), &dir.path().join("a.csv"));
    let from_rows = header_of(&data("replay-small.csv"), &dir.path().join("b.csv"));
    assert_eq!(
        from_empty,
        "t_s,soc_pct,atd,atc,prealarm,alarms,warnings,adv_hex,soc_sigma_pct\n"
    );
    assert_eq!(from_rows.lines().next(), from_empty.lines().next());
    let plain = dir.path().join("c.csv");
    let o = bms_sim(&["replay", s(&empty), "--out", s(&plain)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read_to_string(&plain).unwrap(),
        "t_s,soc_pct,atd,atc,prealarm,alarms,warnings\n"
    );
}

/// `--out -` writes the decisions to standard output (no file named `-`).
#[test]
fn replay_out_dash_writes_to_standard_output() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_bms-sim"))
        .current_dir(dir.path())
        .args(["replay", &data("replay-small.csv"), "--out", "-"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.starts_with("t_s,soc_pct,atd,atc,prealarm,alarms,warnings\n"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 48, "{text}");
    assert!(!dir.path().join("-").exists());
}

// `bms-sim serial` on one end of a pseudo-terminal, a board's requests on the other: what a
// board wired to a USB-UART sees.
#[test]
fn serial_answers_a_jbd_request_on_a_pty() {
    use bms_core::drivers::jbd;
    use serialport::SerialPort as _;
    use std::io::{Read as _, Write as _};
    use std::time::{Duration, Instant};

    let (mut board, packs) = serialport::TTYPort::pair().unwrap();
    let device = packs.name().unwrap();
    board.set_timeout(Duration::from_millis(50)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_bms-sim"))
        .args(["serial", "--device", &device, "--protocol", "jbd"])
        .args(["--cells", "4", "--cell-mv", "3310", "--for", "4s"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut request = [0u8; jbd::REQUEST_LEN];
    jbd::encode_request(jbd::REG_CELLS, &mut request);
    // Asked once. The pseudo-terminal keeps the request until the child opens the port a moment
    // after it starts (opening does not flush it), and the child answers every request it
    // finds: asking again while it starts (a loaded machine) queues several, whose answers
    // arrive together and are not one frame.
    board.write_all(&request).unwrap();
    let mut answer = Vec::new();
    // Generous: a loaded machine can take seconds to start the child; once it reads, it answers
    // within milliseconds.
    let deadline = Instant::now() + Duration::from_secs(60);
    while jbd::decode(&answer).is_err() && Instant::now() < deadline {
        let mut rx = [0u8; 64];
        match board.read(&mut rx) {
            Ok(n) => answer.extend_from_slice(&rx[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        jbd::decode(&answer),
        Ok(jbd::Response::Cells(
            heapless::Vec::from_slice(&[3310; 4]).unwrap()
        )),
        "the bytes that came back: {answer:02x?}"
    );
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!(
            "1 jbd packs (4 cells at 3310 mV) on {device} at 9600 bit/s"
        )),
        "{text}"
    );
    assert!(text.trim_end().ends_with("requests answered"), "{text}");
}

#[test]
fn serial_refuses_a_line_the_core_refuses_and_the_openbms_bus() {
    let o = bms_sim(&[
        "serial",
        "--device",
        "/dev/null",
        "--protocol",
        "daly",
        "--packs",
        "16",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("16 daly packs at 9600 bit/s need"),
        "{}",
        stderr(&o)
    );
    let o = bms_sim(&["serial", "--device", "/dev/null", "--protocol", "openbms"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("jbd, jk or daly"), "{}", stderr(&o));
    let o = bms_sim(&[
        "serial",
        "--device",
        "/dev/null",
        "--protocol",
        "jk",
        "--cells",
        "15",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--cells 15"), "{}", stderr(&o));
}

const REPLAY_HEADER: &str = "t_s,current_a,temp_c,cell1_v,cell2_v,cell3_v,cell4_v";

/// Replays `text` (written to `name` in `dir`) to standard output: exit code, stdout, stderr.
fn replay_text(
    dir: &Path,
    name: &str,
    text: &[u8],
    extra: &[&str],
) -> (Option<i32>, String, String) {
    let input = dir.join(name);
    fs::write(&input, text).unwrap();
    let mut args = vec!["replay", s(&input), "--out", "-"];
    args.extend_from_slice(extra);
    let o = bms_sim(&args);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr(&o),
    )
}

/// A bad row is named by its line in the file as an editor counts it: after blank lines, with
/// CRLF or CR line ends, after a byte-order mark and after a quoted field that holds a line
/// break (the CSV reader's own count said line 3 for line 5 after two blank lines, and one
/// line short with CRLF ends).
#[test]
fn replay_a_bad_row_is_named_by_its_line_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let r = ",-5,20,3.3,3.3,3.3,3.3";
    let bad = ",-5,20,x,3.3,3.3,3.3";
    let h = REPLAY_HEADER;
    let cases = [
        (format!("{h}\n0{r}\n\n\n1{bad}\n"), 5),
        (format!("{h}\r\n0{r}\r\n1{r}\r\n2{bad}\r\n"), 4),
        (format!("{h}\r\n0{r}\r\n\r\n2{bad}\r\n"), 4),
        (format!("{h}\r0{r}\r1{r}\r2{bad}\r"), 4),
        (format!("\u{feff}{h}\n0{r}\n1{bad}\n"), 3),
        (format!("\n\n{h}\n0{r}\n1{bad}\n"), 5),
        (format!("{h}\n0{r}\n\"1\n\"{r}\n2{bad}\n"), 5),
        (format!("{h}\n0{r}\n1{r}\n2{r}\n3{bad}"), 5),
    ];
    for (i, (text, line)) in cases.iter().enumerate() {
        let (code, out, err) = replay_text(dir.path(), &format!("in{i}.csv"), text.as_bytes(), &[]);
        assert_eq!(code, Some(2), "case {i}: {err}");
        assert!(
            err.contains(&format!(
                "in{i}.csv line {line} field `cell1_v`: not a number: \"x\""
            )),
            "case {i}: {err}"
        );
        assert!(out.is_empty(), "case {i}: nothing written: {out}");
    }
}

/// A row with more or fewer values than the header has columns (a trailing comma, a cell count
/// that changes mid-file, a comment line), a cell that is not UTF-8 and a header with an empty
/// column name are refused naming the line, the column and the value — not with the CSV
/// reader's "the previous record has 7 fields" or its field index.
#[test]
fn replay_rows_that_do_not_fit_the_header_name_line_column_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let r = ",-5,20,3.3,3.3,3.3,3.3";
    let h = REPLAY_HEADER;
    let cases: [(Vec<u8>, &str); 7] = [
        (
            format!("{h}\n0{r}\n1{r},\n").into_bytes(),
            "line 3: 8 values for the header's 7 columns: \"\" after `cell4_v`",
        ),
        (
            format!("{h}\n0{r}\n1{r},3.31,3.32,3.30,3.29\n").into_bytes(),
            "line 3: 11 values for the header's 7 columns: \"3.31\" after `cell4_v`",
        ),
        (
            format!("{h}\n0{r}\n1,-5,20,3.3,3.3,3.3\n").into_bytes(),
            "line 3 field `cell4_v`: missing (6 values for the header's 7 columns)",
        ),
        (
            format!("{h}\n0{r}\n# pause\n1{r}\n").into_bytes(),
            "line 3 field `current_a`: missing (1 value for the header's 7 columns)",
        ),
        (
            [
                format!("{h}\n0{r}\n1,-5,20,3.3,3.3,3.3,3.3").as_bytes(),
                b"\xff\n",
            ]
            .concat(),
            "line 3 field `cell4_v`: not UTF-8 text",
        ),
        (
            format!("{h},\n0{r},\n").into_bytes(),
            "line 1 field ``: empty column name (a trailing comma?)",
        ),
        (
            format!("{h}\n0,-5,20,3.3,inf,3.3,3.3\n").into_bytes(),
            "line 2 field `cell2_v`: not a finite number: \"inf\"",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let (code, out, err) = replay_text(dir.path(), &format!("in{i}.csv"), text, &[]);
        assert_eq!(code, Some(2), "case {i}: {err}");
        assert_eq!(err.lines().count(), 1, "case {i}: {err}");
        assert!(
            err.contains(&format!("in{i}.csv {expected}")),
            "case {i}: {err}"
        );
        assert!(out.is_empty(), "case {i}: nothing written: {out}");
    }
}

/// The replay runs as it reads (a year of rows at 1 s is 31.5 million rows): memory does not
/// grow with the length of the file. One million rows at 10 ms took 420 MB when every input
/// and output row was held until the end; here the process may use 150 MB of address space.
#[test]
fn replay_memory_does_not_grow_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("long.csv");
    let out = dir.path().join("d.csv");
    let mut text = String::with_capacity(45_000_000);
    text.push_str(REPLAY_HEADER);
    text.push('\n');
    for i in 0..1_000_000u32 {
        text.push_str(&format!(
            "{}.{:02},-5,20,3.301,3.302,3.300,3.299\n",
            i / 100,
            i % 100
        ));
    }
    fs::write(&input, text).unwrap();
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 150000 && exec '{}' replay '{}' --out '{}'",
            env!("CARGO_BIN_EXE_bms-sim"),
            s(&input),
            s(&out)
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let written = fs::read_to_string(&out).unwrap();
    assert_eq!(written.lines().count(), 1_000_001);
    assert!(
        written.ends_with("9999.99,,1,1,0,,\n"),
        "{}",
        &written[written.len() - 100..]
    );
}

/// Bad input found late in a long file leaves no output: an existing output file keeps its
/// contents and no partial file is left beside it; a good replay replaces it whole. An output
/// that cannot be written (a directory, a missing one) is an error (exit code 1).
#[test]
fn replay_a_late_error_changes_no_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let out_dir = dir.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("d.csv");
    fs::write(&out, "earlier results\n").unwrap();
    let mut text = format!("{REPLAY_HEADER}\n");
    for t in 0..5000 {
        text.push_str(&format!("{t},-5,20,3.3,3.3,3.3,3.3\n"));
    }
    fs::write(&input, format!("{text}5000,-5,20,3.3,3.3,3.3,-\n")).unwrap();
    let o = bms_sim(&["replay", s(&input), "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("in.csv line 5002 field `cell4_v`: not a number: \"-\""),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::read_to_string(&out).unwrap(), "earlier results\n");
    assert_eq!(
        fs::read_dir(&out_dir).unwrap().count(),
        1,
        "no partial file left"
    );
    let o = bms_sim(&["replay", s(&input), "--out", "-"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty(), "nothing on standard output either");

    fs::write(&input, &text).unwrap();
    let o = bms_sim(&["replay", s(&input), "--out", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let written = fs::read_to_string(&out).unwrap();
    assert_eq!(written.lines().count(), 5001);
    assert_eq!(
        fs::read_dir(&out_dir).unwrap().count(),
        1,
        "no partial file left"
    );
    let o = bms_sim(&["replay", s(&input), "--out", s(&out_dir)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("out: is a directory"), "{}", stderr(&o));
    let missing = dir.path().join("no-such-dir/d.csv");
    let o = bms_sim(&["replay", s(&input), "--out", s(&missing)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no-such-dir"), "{}", stderr(&o));
}

/// The options of `bms-sim replay --help` are those its usage lines in README.md and
/// docs/simulator.md show, and a replay with every one of them writes every documented column
/// (simulator.md's usage left out `--estimator` and `--uncertainty`, README's `--uncertainty`).
#[test]
fn replay_help_and_the_documented_usage_name_the_same_options() {
    let options = |text: &str| -> std::collections::BTreeSet<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|w| w.starts_with("--") && w.len() > 2 && w != &"--help")
            .map(str::to_owned)
            .collect()
    };
    let help = bms_sim(&["replay", "--help"]);
    assert!(help.status.success());
    let from_help = options(&String::from_utf8_lossy(&help.stdout));
    for doc in ["README.md", "docs/simulator.md"] {
        let text = fs::read_to_string(repo(doc)).unwrap();
        let usage = text
            .lines()
            .find(|l| l.trim_start().starts_with("bms-sim replay "))
            .unwrap_or_else(|| panic!("{doc}: no usage line"));
        assert_eq!(options(usage), from_help, "{doc}: {usage}");
    }
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("s.toml");
    fs::write(&settings, "prealarm_cell_mv = 3000\n").unwrap();
    let out = dir.path().join("d.csv");
    let o = bms_sim(&[
        "replay",
        &data("replay-small.csv"),
        "--out",
        s(&out),
        "--settings",
        s(&settings),
        "--initial-soc",
        "55",
        "--adv-key",
        "000102030405060708090a0b0c0d0e0f",
        "--capacity-ah",
        "200",
        "--estimator",
        "plain",
        "--uncertainty",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut reader = csv::Reader::from_path(&out).unwrap();
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "t_s",
            "soc_pct",
            "atd",
            "atc",
            "prealarm",
            "alarms",
            "warnings",
            "adv_hex",
            "soc_sigma_pct"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 47);
    assert!(rows.iter().all(|r| r.len() == 9));
}

/// One replay's rows: a signal `at(t)` (the cells of the row in effect at `t`) written at `times`.
fn replay_signal(
    dir: &Path,
    name: &str,
    times: &[f64],
    at: impl Fn(f64) -> String,
    extra: &[&str],
) -> Vec<csv::StringRecord> {
    let mut text = format!("{REPLAY_HEADER},remote_on\n");
    for &t in times {
        text.push_str(&format!("{t},{}\n", at(t)));
    }
    let (code, out, err) = replay_text(dir, name, text.as_bytes(), extra);
    assert_eq!(code, Some(0), "{name}: {err}");
    let mut reader = csv::Reader::from_reader(out.as_bytes());
    reader.records().map(Result::unwrap).collect()
}

/// Remote off 50–60 s, cell 1 at 2.70 V 100–250 s, 2 °C 300–320 s, cell 1 at 3.80 V 330–340 s,
/// charging at 30 A 400–600 s (current, temperature, cells, remote).
fn faults(t: f64) -> String {
    let (mut current, mut temp, mut cell, mut remote) = (-10.0, 20.0, 3.3, 1);
    if (50.0..60.0).contains(&t) {
        remote = 0;
    }
    if (100.0..250.0).contains(&t) {
        cell = 2.7;
    }
    if (300.0..320.0).contains(&t) {
        temp = 2.0;
    }
    if (330.0..340.0).contains(&t) {
        cell = 3.8;
    }
    if (400.0..600.0).contains(&t) {
        (current, cell) = (30.0, 3.45);
    }
    format!("{current},{temp},{cell},3.3,3.3,3.3,{remote}")
}

/// Replays `text` as `in{i}.csv` in `dir` into `out`: refused with exit code 2 and one line
/// naming the file and `expected`, and nothing written.
fn assert_replay_refused(dir: &Path, i: usize, text: impl AsRef<[u8]>, expected: &str, out: &Path) {
    let input = dir.join(format!("in{i}.csv"));
    fs::write(&input, text).unwrap();
    let o = bms_sim(&["replay", s(&input), "--out", s(out)]);
    assert_eq!(o.status.code(), Some(2), "case {i}");
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "case {i}: {err}");
    assert!(
        err.contains(&format!("in{i}.csv {expected}")),
        "case {i}: {err}"
    );
    assert!(!out.exists(), "case {i}: nothing written");
}

/// PROT-2, PROT-3, PROT-4, PROT-5, PROT-8 through the replay: the decisions are those the spec
/// gives, at the times it gives, and the same whether the rows are 1 s, 100 ms or irregularly
/// apart (3 000 random times and the fault edges), and whether the file starts at 0 s, 10^6 s,
/// 10^9 s or just before 10^10 s (the report grid starts at the first row's time): debounces are
/// judged in time, not rows.
#[test]
fn prot_2_replay_decisions_do_not_depend_on_row_spacing_or_start_time() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--initial-soc", "50"];
    let every_second: Vec<f64> = (0..700).map(f64::from).collect();
    let base = replay_signal(dir.path(), "1s.csv", &every_second, faults, &args);
    let at = |t: &str| base.iter().find(|r| &r[0] == t).unwrap().clone();
    // (time, atd, atc, pre-alarm, alarms, why)
    let expected = [
        ("49", "1", "1", "0", "", "before the remote switch"),
        ("50", "1", "1", "0", "", "remote debounced 0.5 s"),
        ("51", "0", "0", "0", "", "remote off (PROT-8)"),
        ("104", "1", "1", "0", "", "2.70 V for 4 s"),
        (
            "105",
            "1",
            "1",
            "1",
            "cell_undervoltage",
            "PROT-2 after 5 s, pre-alarm first (PROT-3)",
        ),
        (
            "134",
            "1",
            "1",
            "1",
            "cell_undervoltage",
            "pre-alarm for 29 s",
        ),
        (
            "135",
            "0",
            "1",
            "1",
            "cell_undervoltage",
            "ATD 30 s after the pre-alarm",
        ),
        (
            "195",
            "0",
            "1",
            "0",
            "cell_undervoltage",
            "pre-alarm released 60 s after ATD (PROT-3)",
        ),
        ("250", "1", "1", "0", "", "back at 3.30 V ≥ 3.20 V"),
        ("301", "1", "1", "0", "", "cold for 1 s"),
        ("302", "1", "0", "0", "low_temperature", "PROT-5 after 2 s"),
        ("331", "1", "0", "0", "cell_overvoltage", "PROT-4 after 1 s"),
        ("340", "1", "1", "0", "", "back under 3.60 V"),
    ];
    for (t, atd, atc, pre, alarms, why) in expected {
        let r = at(t);
        assert_eq!(
            [&r[2], &r[3], &r[4], &r[5]],
            [atd, atc, pre, alarms],
            "{t} s: {why}"
        );
    }

    let tenths: Vec<f64> = (0..7000).map(|i| f64::from(i) / 10.0).collect();
    let mut irregular: Vec<f64> = (0..700).step_by(50).map(f64::from).collect();
    for edge in [50, 60, 100, 250, 300, 320, 330, 340, 400, 600] {
        irregular.extend((edge - 5..edge + 5).map(f64::from));
    }
    let mut x: u64 = 1;
    for _ in 0..3000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        irregular.push(((x >> 11) % 700_000) as f64 / 1000.0);
    }
    irregular.sort_by(f64::total_cmp);
    irregular.dedup();
    for (name, times) in [("tenths.csv", &tenths), ("irregular.csv", &irregular)] {
        let rows = replay_signal(dir.path(), name, times, faults, &args);
        let mut common = 0;
        for r in &rows {
            if let Some(b) = base.iter().find(|b| b[0] == r[0]) {
                assert_eq!(b, r, "{name} at {}", &r[0]);
                common += 1;
            }
        }
        assert!(common >= 80, "{name}: {common} rows at whole seconds");
    }
    for start in [1e6, 1e9, 9_999_999_000.0] {
        let shifted: Vec<f64> = every_second.iter().map(|t| t + start).collect();
        let rows = replay_signal(
            dir.path(),
            "late.csv",
            &shifted,
            |t| faults(t - start),
            &args,
        );
        assert_eq!(rows.len(), base.len());
        for (r, b) in rows.iter().zip(&base) {
            assert_eq!(
                r.iter().skip(1).collect::<Vec<_>>(),
                b.iter().skip(1).collect::<Vec<_>>(),
                "start {start} at {}",
                &r[0]
            );
        }
    }
}

/// PROT-2's 5 s debounce and 30 s warning with rows 10 minutes apart, and with rows 1 ms apart:
/// 2.70 V for 4.999 s trips nothing, for 5.5 s raises the pre-alarm and the alarm at 5 s.
#[test]
fn prot_2_replay_debounce_with_10_minute_gaps_and_1_ms_rows() {
    let dir = tempfile::tempdir().unwrap();
    let gaps = [0.0, 600.0, 1200.0, 1800.0, 2400.0];
    let cell = |t: f64| {
        if (600.0..1800.0).contains(&t) {
            2.7
        } else {
            3.3
        }
    };
    let rows = replay_signal(
        dir.path(),
        "gaps.csv",
        &gaps,
        |t| format!("-5,20,{},3.3,3.3,3.3,1", cell(t)),
        &[],
    );
    let got: Vec<String> = rows
        .iter()
        .map(|r| r.iter().collect::<Vec<_>>().join(","))
        .collect();
    assert_eq!(
        got,
        [
            "0,,0,0,0,,",
            "600,,1,1,0,,",
            "1200,,0,1,0,cell_undervoltage,low_cell_voltage",
            "1800,,1,1,0,,low_cell_voltage",
            "2400,,1,1,0,,",
        ],
        "ATD open 35 s into the gap, the pre-alarm released 60 s later; back at 3.30 V"
    );

    let millis: Vec<f64> = (0..40_000).map(|i| f64::from(i) / 1000.0).collect();
    let dips = |t: f64| (10.0..14.999).contains(&t) || (20.0..25.5).contains(&t);
    let rows = replay_signal(
        dir.path(),
        "ms.csv",
        &millis,
        |t| format!("-5,20,{},3.3,3.3,3.3,1", if dips(t) { 2.7 } else { 3.3 }),
        &[],
    );
    assert_eq!(rows.len(), 40_000);
    let first_pre = rows.iter().find(|r| &r[4] == "1").map(|r| r[0].to_string());
    assert_eq!(first_pre.as_deref(), Some("25"), "not at the 4.999 s dip");
    assert!(rows
        .iter()
        .all(|r| &r[2] == "1" || r[0].parse::<f64>().unwrap() < 2.0));
}

/// The same rows written differently replay the same: CRLF ends, a byte-order mark, blank
/// lines, quoted cells, exponents, spaces around values, columns in another order.
#[test]
fn replay_reads_the_same_rows_written_differently_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let times: Vec<f64> = (0..40).map(f64::from).collect();
    let value = |t: f64| if t < 20.0 { "3.3" } else { "2.7" };
    let mut plain = format!("{REPLAY_HEADER}\n");
    let mut crlf = format!("\u{feff}{REPLAY_HEADER}\r\n");
    let mut quoted = "\"t_s\",current_a,temp_c,cell1_v,cell2_v,cell3_v,cell4_v\n\n".to_string();
    let mut reordered =
        "remote_on,cell4_v,cell3_v,cell2_v,cell1_v,temp_c,current_a,t_s\n".to_string();
    for t in times {
        let v = value(t);
        plain.push_str(&format!("{t},-5,20,{v},3.3,3.3,3.3\n"));
        crlf.push_str(&format!("{t},-5,20,{v},3.3,3.3,3.3\r\n\r\n"));
        quoted.push_str(&format!("\"{t}\", -5e0 ,2.0E1,\"{v}\",33e-1,3.3,3.3\n\n"));
        reordered.push_str(&format!("1,3.3,3.3,3.3,{v},20,-5,{t}\n"));
    }
    let (code, expected, err) = replay_text(dir.path(), "plain.csv", plain.as_bytes(), &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(expected.contains("cell_undervoltage"), "{expected}");
    for (name, text) in [
        ("crlf.csv", crlf),
        ("quoted.csv", quoted),
        ("reordered.csv", reordered),
    ] {
        let (code, out, err) = replay_text(dir.path(), name, text.as_bytes(), &[]);
        assert_eq!(code, Some(0), "{name}: {err}");
        assert_eq!(out, expected, "{name}");
    }
}

/// PROT-13 through the replay: a cell at 0.3 V or a temperature of −60 °C is within what the
/// file may hold but implausible: the report is invalid data (alarm), the battery is lost 5 s
/// later (BANK-4), and the outputs stay free-floating.
#[test]
fn prot_13_replay_implausible_values_are_invalid_reports_not_refused_rows() {
    let dir = tempfile::tempdir().unwrap();
    let times: Vec<f64> = (0..12).map(f64::from).collect();
    for (name, row) in [
        ("cell.csv", "-5,20,0.3,3.3,3.3,3.3,1"),
        ("cold.csv", "-5,-60,3.3,3.3,3.3,3.3,1"),
    ] {
        let rows = replay_signal(dir.path(), name, &times, |_| row.to_string(), &[]);
        for r in &rows {
            assert_eq!((&r[2], &r[3]), ("0", "0"), "{name} at {}", &r[0]);
            assert!(r[5].contains("invalid_battery_data"), "{name}: {:?}", r);
        }
        assert!(
            !rows[4][5].contains("battery_lost"),
            "{name}: {:?}",
            rows[4]
        );
        assert!(
            rows[11][5].contains("battery_lost"),
            "{name}: {:?}",
            rows[11]
        );
    }
}

/// An output that is not a plain file is written into, never replaced: a symbolic link keeps
/// pointing at its file, which gets the decisions, and a named pipe (as `/dev/null` or
/// `/dev/stdout` would be) stays a pipe and its reader gets them (a partial file renamed over
/// the pipe replaced it with a plain file).
#[test]
fn replay_writes_into_a_link_or_a_pipe_without_replacing_it() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target.csv");
    fs::write(&target, "earlier\n").unwrap();
    let link = dir.path().join("link.csv");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let o = bms_sim(&["replay", &data("replay-small.csv"), "--out", s(&link)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read_to_string(&target).unwrap().lines().count(), 48);

    let fifo = dir.path().join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read_to_string(fifo).unwrap())
    };
    let o = bms_sim(&["replay", &data("replay-small.csv"), "--out", s(&fifo)]);
    assert!(o.status.success(), "{}", stderr(&o));
    use std::os::unix::fs::FileTypeExt as _;
    // (Were the pipe replaced, its reader would wait for ever: the test ends without it.)
    assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
    let read = reader.join().unwrap();
    assert_eq!(read.lines().count(), 48, "{read}");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        3,
        "no partial file left"
    );
}

/// BANK-2 through the replay: a 25.6 V battery (cell1_v..cell8_v) and a 51.2 V one
/// (cell1_v..cell16_v) replay as such: outputs high once the battery has reported (PROT-1), a
/// cell under 2.80 V among eight trips PROT-2 after 5 s, one over 3.75 V among sixteen trips
/// PROT-4 after 1 s, and the 51.2 V battery at 3.55 V per cell with a small charge current
/// synchronises after the charged detection time (MON-2: 3.50 V × 16 cells). Another number of
/// cell columns, or a gap in them, is refused naming the column. (They were refused as unknown
/// columns.)
#[test]
fn bank_2_replay_takes_a_25_6_v_and_a_51_2_v_battery() {
    let dir = tempfile::tempdir().unwrap();
    let header = |n: usize| {
        let cells: Vec<String> = (1..=n).map(|k| format!("cell{k}_v")).collect();
        format!("t_s,current_a,temp_c,{}\n", cells.join(","))
    };
    let row = |t: u32, current: f64, cells: &[f64]| {
        let cells: Vec<String> = cells.iter().map(f64::to_string).collect();
        format!("{t},{current},20,{}\n", cells.join(","))
    };
    // 25.6 V: cell 7 at 2.70 V from 10 s.
    let mut text = header(8);
    for t in 0..60 {
        let mut cells = [3.3; 8];
        if t >= 10 {
            cells[6] = 2.7;
        }
        text.push_str(&row(t, -5.0, &cells));
    }
    let (code, out, err) = replay_text(dir.path(), "b24.csv", text.as_bytes(), &[]);
    assert_eq!(code, Some(0), "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows[1 + 5], "5,,1,1,0,,", "PROT-1");
    assert_eq!(rows[1 + 14], "14,,1,1,0,,");
    assert_eq!(
        rows[1 + 15],
        "15,,1,1,1,cell_undervoltage,low_cell_voltage",
        "PROT-2"
    );
    assert_eq!(
        rows[1 + 45],
        "45,,0,1,1,cell_undervoltage,low_cell_voltage",
        "ATD 30 s after the pre-alarm"
    );

    // 51.2 V: cell 16 at 3.80 V 10–20 s, then 1 A of charge with every cell at 3.45 V (55.2 V,
    // under the charged voltage), from 250 s at 3.55 V (56.8 V).
    let mut text = header(16);
    for t in 0..600 {
        let mut cells = [3.3; 16];
        let mut current = -5.0;
        if (10..20).contains(&t) {
            cells[15] = 3.8;
        }
        if t >= 30 {
            cells = [if t >= 250 { 3.55 } else { 3.45 }; 16];
            current = 1.0;
        }
        text.push_str(&row(t, current, &cells));
    }
    let (code, out, err) = replay_text(
        dir.path(),
        "b48.csv",
        text.as_bytes(),
        &["--initial-soc", "80"],
    );
    assert_eq!(code, Some(0), "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert!(rows[1 + 10].ends_with(",1,1,0,,"), "{}", rows[1 + 10]);
    assert!(
        rows[1 + 11].ends_with(",1,0,0,cell_overvoltage,"),
        "PROT-4: {}",
        rows[1 + 11]
    );
    assert!(rows[1 + 20].ends_with(",1,1,0,,"), "{}", rows[1 + 20]);
    let synchronised = rows[1..]
        .iter()
        .find(|r| r.split(',').nth(1) == Some("100.0"))
        .map(|r| r.split(',').next().unwrap().parse::<u32>().unwrap());
    assert!(
        synchronised.is_some_and(|t| (430..=432).contains(&t)),
        "MON-2 3 min after 3.55 V from 250 s: {synchronised:?}"
    );

    for (n, gap, expected) in [
        (6, None, "field `cell7_v`: missing column (6 cell columns; a battery has 4 (12.8 V), 8 (25.6 V) or 16 (51.2 V) cells)"),
        (12, None, "field `cell13_v`: missing column (12 cell columns; a battery has 4 (12.8 V), 8 (25.6 V) or 16 (51.2 V) cells)"),
        (8, Some(5), "field `cell5_v`: missing column"),
    ] {
        let mut h = header(n);
        if let Some(k) = gap {
            h = h.replace(&format!(",cell{k}_v"), "");
        }
        let (code, _, err) = replay_text(dir.path(), "odd.csv", h.as_bytes(), &[]);
        assert_eq!(code, Some(2), "{n}: {err}");
        assert!(err.contains(&format!("odd.csv line 1 {expected}")), "{n}: {err}");
    }
    let (code, _, err) = replay_text(
        dir.path(),
        "b17.csv",
        header(16).replace('\n', ",cell17_v\n").as_bytes(),
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("field `cell17_v`: unknown column"), "{err}");
}

/// What an outside tool may write that the replay does not take is refused naming the line, the
/// column and the value, and nothing is written: NaN, an empty temperature, a header repeated
/// mid-file (files joined), a comment before the header, a second battery's column, `remote_on`
/// written as 1.0, a time going back after 1 ms rows, a time in the same millisecond as the last,
/// an empty file (named as a missing `t_s` column).
#[test]
fn replay_refuses_what_it_does_not_take_naming_line_column_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let h = REPLAY_HEADER;
    let r = ",-5,20,3.3,3.3,3.3,3.3";
    let cases = [
        (format!("{h}\n0,-5,20,NaN,3.3,3.3,3.3\n"), "line 2 field `cell1_v`: not a finite number: \"NaN\""),
        (format!("{h}\n0,-5,,3.3,3.3,3.3,3.3\n"), "line 2 field `temp_c`: not a number: \"\""),
        (format!("{h}\n0{r}\n{h}\n1{r}\n"), "line 3 field `t_s`: not a number: \"t_s\""),
        (format!("# logger v2\n{h}\n0{r}\n"), "line 1 field `# logger v2`: unknown column"),
        (format!("{h},b2_cell1_v\n0{r},3.3\n"), "line 1 field `b2_cell1_v`: unknown column"),
        (format!("{h},remote_on\n0{r},1.0\n"), "line 2 field `remote_on`: \"1.0\" is not 1 or 0"),
        (format!("{h}\n0.000{r}\n0.001{r}\n0.002{r}\n0.001{r}\n"), "line 5 field `t_s`: time 0.001 is not after the previous row's 0.002"),
        (format!("{h}\n600{r}\n600.0004{r}\n"), "line 3 field `t_s`: time 600.0004 is in the same millisecond as the previous row's 600"),
    ];
    let cases = [
        cases.as_slice(),
        &[
            (String::new(), "line 1: no header: the file is empty"),
            ("\n\n".into(), "line 1: no header: the file is empty"),
        ],
    ]
    .concat();
    for (i, (text, expected)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("out{i}.csv"));
        assert_replay_refused(dir.path(), i, text, expected, &out);
    }
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        cases.len(),
        "no partial file left"
    );
}
