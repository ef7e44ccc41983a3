"""Runs `bms-sim replay` and finds out what the simulator supports."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

ESTIMATORS = ("plain", "adaptive")


@dataclasses.dataclass(frozen=True)
class Simulator:
    """The bms-sim binary and what its `replay` subcommand offers."""

    path: Path | None
    has_replay: bool
    has_estimator_flag: bool
    problem: str = ""
    has_uncertainty_flag: bool = False


def build(root: Path) -> Path:
    """Builds bms-sim with the `release` profile and returns the binary's path."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", root / "target"))
    subprocess.run(
        ["cargo", "build", "--quiet", "--release", "-p", "bms-sim"],
        cwd=root,
        check=True,
    )
    return target / "release" / "bms-sim"


def probe(binary: Path | None) -> Simulator:
    """Asks `bms-sim replay --help` whether replay and `--estimator` exist."""
    if binary is None or not binary.exists():
        return Simulator(binary, False, False, "bms-sim not built")
    try:
        res = subprocess.run(
            [str(binary), "replay", "--help"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return Simulator(binary, False, False, f"bms-sim does not run: {err}")
    text = res.stdout + res.stderr
    if res.returncode != 0 or "--out" not in text:
        return Simulator(binary, False, False, "replay not available")
    return Simulator(binary, True, "--estimator" in text, "", "--uncertainty" in text)


def run(
    sim: Simulator,
    input_csv: Path,
    out_csv: Path,
    initial_soc_pct: float,
    capacity_ah: float,
    estimator: str | None,
) -> None:
    """Replays one profile; `estimator` None leaves the simulator's default."""
    if sim.path is None or not sim.has_replay:
        raise RuntimeError(sim.problem or "replay not available")
    cmd = [
        str(sim.path),
        "replay",
        str(input_csv),
        "--out",
        str(out_csv),
        "--initial-soc",
        f"{initial_soc_pct:.1f}",
        "--capacity-ah",
        f"{capacity_ah:g}",
    ]
    if estimator is not None:
        cmd += ["--estimator", estimator]
    if sim.has_uncertainty_flag:
        cmd += ["--uncertainty"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"bms-sim replay failed ({res.returncode}): {' | '.join(tail)}")
