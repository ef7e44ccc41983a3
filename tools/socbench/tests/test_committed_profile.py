"""The small profile committed for cargo tests is a valid replay input with its truth."""

import json
from pathlib import Path

import numpy as np

from socbench import sensors

PROFILES = Path(__file__).resolve().parent.parent / "profiles"


def test_small_profile_lines_up_with_its_truth():
    lines = (PROFILES / "small-2day.csv").read_text().splitlines()
    assert lines[0].split(",") == sensors.INPUT_HEADER
    data = np.loadtxt(PROFILES / "small-2day.csv", delimiter=",", skiprows=1)
    t_true, soc = sensors.read_truth_csv(PROFILES / "small-2day.truth.csv")
    meta = json.loads((PROFILES / "small-2day.meta.json").read_text())
    assert len(data) == len(t_true) == meta["rows"]
    assert np.array_equal(data[:, 0], t_true)
    assert np.all(np.diff(t_true) > 0)
    assert soc[0] == meta["soc0_pct"]
    assert 0.0 < soc.min() and soc.max() < 100.0
    assert np.all((data[:, 3:7] > 2.5) & (data[:, 3:7] < 3.65))
    # The profile holds a full charge (absorption) and a rest (loads off, no sun).
    assert meta["absorption_phases"] >= 1
    assert np.any(np.abs(data[:, 1]) < 0.5)


def test_small_profile_current_integrates_to_the_truth_within_the_sensor_errors():
    data = np.loadtxt(PROFILES / "small-2day.csv", delimiter=",", skiprows=1)
    _, soc = sensors.read_truth_csv(PROFILES / "small-2day.truth.csv")
    spec = sensors.SensorSpec()
    # Undo gain and offset: what is left is noise and quantisation.
    current = (data[:, 1] - spec.current_offset_a) / (1.0 + spec.current_gain)
    counted = (
        soc[0] + np.concatenate(([0.0], np.cumsum(current[:-1] * np.diff(data[:, 0])))) / 3600.0
    )
    assert np.max(np.abs(counted - soc)) < 0.3
