"""SoC error of a replay against the truth: maximum, RMS, bias and end value."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class Score:
    """Error of estimated minus true SoC over the rows where the estimate is known (points)."""

    max_abs_pct: float
    rms_pct: float
    mean_pct: float
    end_pct: float
    rows: int
    unknown_rows: int
    # Share of the rows (with an estimate and a reported uncertainty) where the error is
    # within the reported 1 sigma; NaN when no uncertainty was reported.
    coverage_1sigma: float = math.nan


class ScoreError(Exception):
    """The replay output does not line up with the truth."""


def read_replay_soc(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads t_s and soc_pct from a replay output; an empty soc_pct (unknown) becomes NaN."""
    times, socs, _ = read_replay(path)
    return times, socs


def read_replay(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """t_s, soc_pct and soc_sigma_pct (NaN where empty or absent) from a replay output."""
    times, socs, sigmas = [], [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"t_s", "soc_pct"} - set(reader.fieldnames or ())
        if missing:
            raise ScoreError(f"{path}: no column {', '.join(sorted(missing))}")
        for row in reader:
            times.append(float(row["t_s"]))
            text = (row["soc_pct"] or "").strip()
            socs.append(float(text) if text else math.nan)
            sigma = (row.get("soc_sigma_pct") or "").strip()
            sigmas.append(float(sigma) if sigma else math.nan)
    return np.asarray(times), np.asarray(socs), np.asarray(sigmas)


def score(
    t_est: np.ndarray,
    soc_est: np.ndarray,
    t_true: np.ndarray,
    soc_true: np.ndarray,
    sigma: np.ndarray | None = None,
) -> Score:
    """Compares row by row; both must hold the same times (one output row per input row)."""
    if len(t_est) != len(t_true):
        raise ScoreError(f"replay has {len(t_est)} rows, truth has {len(t_true)}")
    if len(t_true) == 0:
        raise ScoreError("no rows")
    if not np.allclose(t_est, t_true, atol=0.5):
        k = int(np.argmax(np.abs(t_est - t_true) > 0.5))
        raise ScoreError(f"row {k}: replay t_s {t_est[k]} but truth t_s {t_true[k]}")
    known = ~np.isnan(soc_est)
    if not known.any():
        return Score(math.nan, math.nan, math.nan, math.nan, len(t_true), len(t_true))
    err = soc_est[known] - soc_true[known]
    coverage = math.nan
    if sigma is not None:
        sig = sigma[known]
        has = ~np.isnan(sig)
        if has.any():
            # The estimate is shown to 0.1 point: an error within the rounding counts as covered.
            coverage = float(np.mean(np.abs(err[has]) <= sig[has] + 0.05))
    return Score(
        max_abs_pct=float(np.max(np.abs(err))),
        rms_pct=float(np.sqrt(np.mean(err**2))),
        mean_pct=float(np.mean(err)),
        end_pct=float(err[-1]),
        rows=int(len(t_true)),
        unknown_rows=int(np.count_nonzero(~known)),
        coverage_1sigma=coverage,
    )


def score_files(replay_out: Path, truth: Path) -> Score:
    """Scores a replay output file against a truth file."""
    t_est, soc_est, sigma = read_replay(replay_out)
    data = np.loadtxt(truth, delimiter=",", skiprows=1, ndmin=2)
    return score(t_est, soc_est, data[:, 0], data[:, 1], sigma)
