"""Scoring a replay output against the truth."""

import math

import numpy as np
import pytest

from socbench import metrics


def test_score_reports_max_rms_bias_and_end():
    t = np.array([0.0, 10.0, 20.0, 30.0])
    s = metrics.score(t, np.array([50.0, 51.0, 47.0, 50.5]), t, np.array([50.0, 50.0, 50.0, 50.0]))
    assert s.max_abs_pct == pytest.approx(3.0)
    assert s.rms_pct == pytest.approx(math.sqrt((0 + 1 + 9 + 0.25) / 4))
    assert s.mean_pct == pytest.approx(-1.5 / 4)
    assert s.end_pct == pytest.approx(0.5)
    assert s.unknown_rows == 0


def test_unknown_rows_are_counted_and_left_out():
    t = np.array([0.0, 10.0, 20.0])
    s = metrics.score(t, np.array([math.nan, 52.0, 49.0]), t, np.array([50.0, 50.0, 50.0]))
    assert s.unknown_rows == 1
    assert s.max_abs_pct == pytest.approx(2.0)


def test_misaligned_rows_are_refused():
    with pytest.raises(metrics.ScoreError, match="rows"):
        metrics.score(np.zeros(2), np.zeros(2), np.zeros(3), np.zeros(3))
    with pytest.raises(metrics.ScoreError, match="row 1"):
        metrics.score(np.array([0.0, 10.0]), np.zeros(2), np.array([0.0, 20.0]), np.zeros(2))


def test_replay_output_with_empty_soc_is_read_as_unknown(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text(
        "t_s,soc_pct,atd,atc,prealarm,alarms,warnings\n0,,1,1,0,0,0\n10,49.5,1,1,0,0,0\n"
    )
    truth = tmp_path / "truth.csv"
    truth.write_text("t_s,true_soc_pct\n0,50.000\n10,50.000\n")
    s = metrics.score_files(out, truth)
    assert s.unknown_rows == 1
    assert s.max_abs_pct == pytest.approx(0.5)


def test_replay_output_without_soc_column_is_refused(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("t_s,atd\n0,1\n")
    with pytest.raises(metrics.ScoreError, match="soc_pct"):
        metrics.read_replay_soc(out)
