"""Command line: generate the profiles (cached), replay them, print the error table."""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import generate, metrics, replay
from .scenarios import BENCHMARK, DRIFT, DRIFT_TUNING, SCENARIOS

ROOT = generate.PACKAGE_DIR.parent.parent.parent
COMMITTED = generate.PACKAGE_DIR.parent / "profiles"
SMALL = "small-2day"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="soc-bench",
        description="SoC benchmark: PyBaMM LiFePO4 profiles through bms-sim replay "
        "(docs/soc-benchmark.md).",
    )
    p.add_argument(
        "command",
        nargs="?",
        default="run",
        choices=("run", "generate", "small", "list", "test"),
        help="run: generate what is missing, replay, print the table (default); "
        "generate: profiles only; small: rewrite the committed small profile; "
        "list: the profiles; test: the generator's own tests (pytest)",
    )
    p.add_argument(
        "--profiles",
        default="benchmark,drift",
        help="comma-separated profile names, or groups: benchmark (the first five), drift "
        "(the held-out drift profiles, reported), tuning (the drift profiles the estimator "
        "was developed against); default: benchmark,drift",
    )
    p.add_argument("--model", default="SPMe", choices=("SPM", "SPMe", "DFN"), help="PyBaMM model")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "socbench", help="output folder")
    p.add_argument("--jobs", type=int, default=2, help="profiles generated in parallel")
    p.add_argument("--force", action="store_true", help="regenerate even when cached")
    p.add_argument(
        "--bms-sim", type=Path, help="bms-sim binary (default: cargo build --release)"
    )
    return p


GROUPS = {"benchmark": BENCHMARK + (SMALL,), "drift": DRIFT, "tuning": DRIFT_TUNING}


def _generate_one(name: str, model: str, dest: str, plants: str) -> tuple[str, dict]:
    scenario = SCENARIOS[name]
    return name, generate.generate(scenario, model, Path(dest), verbose=True, plants=Path(plants))


def ensure_profiles(
    names: list[str], model: str, out: Path, jobs: int, force: bool
) -> dict[str, Path]:
    """Generates the profiles not yet in the cache; returns each profile's folder."""
    dirs = {n: generate.profile_dir(out / "profiles", SCENARIOS[n], model) for n in names}
    todo = [n for n in names if force or not (dirs[n] / "input.csv").exists()]
    for n in names:
        if n not in todo:
            print(f"  cached     {n:14s} {dirs[n].name}", flush=True)
    if not todo:
        return dirs
    started = time.monotonic()
    # Sensor variants share one plant run: the first of each plant goes first, the others
    # read its cached trace afterwards.
    first: dict[str, str] = {}
    for n in todo:
        first.setdefault(generate.plant_key(SCENARIOS[n], model), n)
    waves = [list(first.values()), [n for n in todo if n not in first.values()]]
    plants = out / "plants"
    for wave in waves:
        _generate_wave(wave, model, dirs, plants, jobs)
    print(f"  generation took {time.monotonic() - started:.0f} s", flush=True)
    return dirs


def _generate_wave(
    names: list[str], model: str, dirs: dict[str, Path], plants: Path, jobs: int
) -> None:
    if not names:
        return
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = []
        for n in names:
            # Older versions of this profile (other hashes) and a half-written one go.
            for stale in dirs[n].parent.glob(f"{glob.escape(n)}-{model}-*"):
                shutil.rmtree(stale)
            futures.append(pool.submit(_generate_one, n, model, str(dirs[n]), str(plants)))
        for fut in concurrent.futures.as_completed(futures):
            n, meta = fut.result()
            size_mb = (dirs[n] / "input.csv").stat().st_size / 1e6
            print(
                f"  generated  {n:14s} {meta['simulate_s']:6.0f} s ({meta['cpu_s']:.0f} s CPU) "
                f"{meta['rows']:7d} rows "
                f"{size_mb:6.1f} MB  true SoC {meta['true_soc_min_pct']:.1f}..."
                f"{meta['true_soc_max_pct']:.1f} %  absorptions {meta['absorption_phases']}",
                flush=True,
            )


def write_small(model: str, out: Path) -> None:
    """Regenerates the committed small profile under tools/socbench/profiles/."""
    scenario = SCENARIOS[SMALL]
    dest = out / "small-staging"
    if dest.exists():
        shutil.rmtree(dest)
    meta = generate.generate(scenario, model, dest)
    COMMITTED.mkdir(parents=True, exist_ok=True)
    shutil.copy(dest / "input.csv", COMMITTED / f"{SMALL}.csv")
    shutil.copy(dest / "truth.csv", COMMITTED / f"{SMALL}.truth.csv")
    meta.pop("simulate_s")
    meta.pop("total_s")
    (COMMITTED / f"{SMALL}.meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    for suffix in (".csv", ".truth.csv", ".meta.json"):
        path = COMMITTED / f"{SMALL}{suffix}"
        print(f"  wrote {path.relative_to(ROOT)} ({path.stat().st_size / 1000:.0f} kB)")


def _fmt(x: float) -> str:
    return "     -" if math.isnan(x) else f"{x:6.2f}"


def _cell(result) -> tuple[str, str]:
    if isinstance(result, str):
        return result, ""
    return _fmt(result.max_abs_pct), _fmt(result.rms_pct)


def _verdict(name: str, plain, adaptive) -> str:
    if not isinstance(adaptive, metrics.Score):
        return ""
    scenario = SCENARIOS[name]
    ok = adaptive.max_abs_pct <= scenario.goal_max_err_pct
    if isinstance(plain, metrics.Score):
        ok = ok and adaptive.max_abs_pct <= plain.max_abs_pct
    return "met" if ok else "MISSED"


def replay_all(
    names: list[str], dirs: dict[str, Path], out: Path, sim: replay.Simulator, workers: int
) -> list[dict]:
    """Replays every profile with both estimators (`workers` at a time) and scores them."""
    rows = []
    jobs = []
    for name in names:
        meta = json.loads((dirs[name] / "meta.json").read_text())
        row = {"profile": name, "days": meta["days"], "meta": meta}
        for est in replay.ESTIMATORS:
            if not sim.has_replay:
                row[est] = sim.problem or "replay not available"
            elif est != "plain" and not sim.has_estimator_flag:
                row[est] = "estimator flag not available"
            else:
                jobs.append((row, est, dirs[name], meta["soc0_pct"]))
        rows.append(row)

    def one(job) -> None:
        row, est, folder, soc0 = job
        out_csv = out / "replay" / f"{folder.name}.{est}.csv"
        out_csv.parent.mkdir(parents=True, exist_ok=True)
        try:
            flag = est if sim.has_estimator_flag else None
            replay.run(sim, folder / "input.csv", out_csv, soc0, 100.0, flag)
            row[est] = metrics.score_files(out_csv, folder / "truth.csv")
        except (RuntimeError, metrics.ScoreError, OSError) as err:
            row[est] = f"error: {err}"

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, jobs))
    return rows


def print_table(results: list[dict]) -> str:
    """Prints (and returns as text) the side-by-side table."""
    lines = [
        "SoC error, estimate minus truth, percentage points (max |err| and RMS over all rows)",
        "",
        f"{'profile':28s} {'days':>4s} | {'plain max':>9s} {'plain RMS':>9s} | "
        f"{'adaptive max':>12s} {'adaptive RMS':>12s} {'in 1σ':>6s} | {'goal':>6s}",
        "-" * 100,
    ]
    notes = []
    for r in results:
        p_max, p_rms = _cell(r["plain"])
        a_max, a_rms = _cell(r["adaptive"])
        for est in replay.ESTIMATORS:
            if isinstance(r[est], str):
                notes.append(f"{r['profile']} {est}: {r[est]}")
            elif r[est].unknown_rows:
                notes.append(f"{r['profile']} {est}: SoC unknown in {r[est].unknown_rows} rows")
        if isinstance(r["plain"], str):
            p_max, p_rms = "n/a", ""
        if isinstance(r["adaptive"], str):
            a_max, a_rms = "n/a", ""
        goal = SCENARIOS[r["profile"]].goal_max_err_pct
        cover = r["adaptive"].coverage_1sigma if isinstance(r["adaptive"], metrics.Score) else 0
        cover_text = "     -" if math.isnan(cover) else f"{100 * cover:5.0f}%"
        verdict = _verdict(r["profile"], r["plain"], r["adaptive"])
        lines.append(
            f"{r['profile']:28s} {r['days']:4d} | {p_max:>9s} {p_rms:>9s} | "
            f"{a_max:>12s} {a_rms:>12s} {cover_text:>6s} | <={goal:3.1f} {verdict}"
        )
    lines += _group_summary(results)
    scores = [r["adaptive"] for r in results if isinstance(r["adaptive"], metrics.Score)]
    cover = _coverage(scores)
    if not math.isnan(cover):
        lines += ["", f"adaptive 1σ coverage over all rows: {100 * cover:.0f}% (goal 60-80 %)"]
    lines += [""] + sorted(set(notes))
    text = "\n".join(lines)
    print(text)
    return text


def _coverage(scores: list) -> float:
    """Share of all rows (over several profiles) whose error is within the reported 1σ."""
    weighted = [(s.coverage_1sigma, s.rows) for s in scores if not math.isnan(s.coverage_1sigma)]
    total = sum(n for _, n in weighted)
    return sum(c * n for c, n in weighted) / total if total else math.nan


def _group_summary(results: list[dict]) -> list[str]:
    """One line per profile read through several sensors (`name~variant`): the worst maximum
    of each estimator, the RMS over all its rows, the 1σ coverage, and how many variants
    met the goal."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        if "~" in r["profile"]:
            groups.setdefault(r["profile"].split("~")[0], []).append(r)
    if not groups:
        return []
    lines = [
        "",
        f"{'over its sensor variants':28s} {'runs':>4s} | {'plain max':>9s} {'plain RMS':>9s} | "
        f"{'adaptive max':>12s} {'adaptive RMS':>12s} {'in 1σ':>6s} | {'goal met':>8s}",
        "-" * 100,
    ]
    for base, rows in groups.items():
        scored = [r for r in rows if all(isinstance(r[e], metrics.Score) for e in ("plain", "adaptive"))]
        if not scored:
            continue

        def worst(est: str) -> float:
            return max(r[est].max_abs_pct for r in scored)

        def rms(est: str) -> float:
            n = sum(r[est].rows for r in scored)
            return math.sqrt(sum(r[est].rms_pct ** 2 * r[est].rows for r in scored) / n)

        met = sum(_verdict(r["profile"], r["plain"], r["adaptive"]) == "met" for r in scored)
        cover = _coverage([r["adaptive"] for r in scored])
        cover_text = "     -" if math.isnan(cover) else f"{100 * cover:5.0f}%"
        lines.append(
            f"{base:28s} {len(scored):4d} | {_fmt(worst('plain')):>9s} {_fmt(rms('plain')):>9s} | "
            f"{_fmt(worst('adaptive')):>12s} {_fmt(rms('adaptive')):>12s} {cover_text:>6s} | "
            f"{met:3d} of {len(scored):2d}"
        )
    return lines


def markdown_table(results: list[dict]) -> str:
    """The results as the Markdown table of docs/soc-benchmark.md."""
    lines = [
        "| profile | days | (a) plain max | (a) plain RMS | (b) adaptive max | (b) adaptive RMS "
        "| (b) in 1σ | goal for (b) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if not all(isinstance(r[e], metrics.Score) for e in replay.ESTIMATORS):
            continue
        p, a = r["plain"], r["adaptive"]
        goal = SCENARIOS[r["profile"]].goal_max_err_pct
        cover = "-" if math.isnan(a.coverage_1sigma) else f"{100 * a.coverage_1sigma:.0f} %"
        lines.append(
            f"| `{r['profile']}` | {r['days']} | {p.max_abs_pct:.2f} | {p.rms_pct:.2f} "
            f"| {a.max_abs_pct:.2f} | {a.rms_pct:.2f} | {cover} "
            f"| ≤ {goal:.1f} and ≤ (a): {_verdict(r['profile'], p, a)} |"
        )
    return "\n".join(lines)


def _as_json(results: list[dict]) -> list[dict]:
    out = []
    for r in results:
        row = {"profile": r["profile"], "days": r["days"]}
        for est in replay.ESTIMATORS:
            v = r[est]
            row[est] = v if isinstance(v, str) else v.__dict__
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of `scripts/soc-bench`."""
    args = _parser().parse_args(argv)
    if args.command == "list":
        for name, s in SCENARIOS.items():
            group = next((g for g, members in GROUPS.items() if name in members), "")
            print(f"{name:28s} {group:9s} {s.days:3d} days  {s.title}")
        return 0
    if args.command == "test":
        import pytest

        return int(pytest.main(["-q", str(generate.PACKAGE_DIR.parent / "tests")]))
    if args.command == "small":
        write_small(args.model, args.out)
        return 0
    names = []
    for n in (n.strip() for n in args.profiles.split(",")):
        names += list(GROUPS.get(n, (n,) if n else ()))
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown profile(s): {', '.join(unknown)} (see `soc-bench list`)", file=sys.stderr)
        return 2
    print(f"profiles ({args.model}, cache {args.out / 'profiles'}):", flush=True)
    dirs = ensure_profiles(names, args.model, args.out, args.jobs, args.force)
    if args.command == "generate":
        return 0
    binary = args.bms_sim
    if binary is None:
        try:
            binary = replay.build(ROOT)
        except (OSError, subprocess.CalledProcessError) as err:
            print(f"bms-sim build failed: {err}", file=sys.stderr)
            binary = None
    sim = replay.probe(binary)
    print(flush=True)
    started = time.monotonic()
    results = replay_all(names, dirs, args.out, sim, args.jobs)
    print(f"replays took {time.monotonic() - started:.0f} s\n", flush=True)
    text = print_table(results)
    (args.out / "results.txt").write_text(text + "\n")
    (args.out / "results.md").write_text(markdown_table(results) + "\n")
    (args.out / "results.json").write_text(json.dumps(_as_json(results), indent=1) + "\n")
    return 0
