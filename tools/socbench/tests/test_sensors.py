"""Hysteresis, sensor errors and CSV round trips (no PyBaMM needed)."""

import numpy as np
import pytest

from socbench import sensors


def test_hysteresis_moves_towards_the_branch_of_the_current_direction():
    h = sensors.Hysteresis(sensors.HysteresisSpec(amplitude_v=0.01, relax_ah=5.0, start=-1.0))
    assert h.value_v == pytest.approx(-0.01)
    # 5 Ah of charge moves h 63 % of the way from -10 mV to +10 mV.
    assert h.update(5.0) == pytest.approx(0.01 - 0.02 * np.exp(-1.0))
    for _ in range(100):
        h.update(1.0)
    assert h.value_v == pytest.approx(0.01, abs=1e-6)
    h.update(-50.0)
    assert h.value_v == pytest.approx(-0.01, abs=1e-6)


def test_hysteresis_does_not_relax_at_rest():
    h = sensors.Hysteresis(sensors.HysteresisSpec(start=1.0))
    before = h.value_v
    for _ in range(1000):
        h.update(0.0)
    assert h.value_v == before


def test_hysteresis_is_path_independent_of_step_size():
    a = sensors.Hysteresis(sensors.HysteresisSpec())
    b = sensors.Hysteresis(sensors.HysteresisSpec())
    a.update(3.0)
    for _ in range(30):
        b.update(0.1)
    assert a.value_v == pytest.approx(b.value_v)


def test_interval_current_integrates_back_to_the_charge_moved():
    t = np.arange(0.0, 3600.0 + 1, 10.0)
    q_dis = 0.5 * np.sin(t / 600.0) - t / 3600.0 * 2.0
    current = sensors.interval_current_a(t, q_dis)
    charge_ah = np.sum(current[:-1] * np.diff(t)) / 3600.0
    assert charge_ah == pytest.approx(-(q_dis[-1] - q_dis[0]))
    assert len(current) == len(t)


def test_measure_applies_gain_offset_and_quantisation():
    spec = sensors.SensorSpec(current_noise_a=0.0, voltage_noise_v=0.0, temp_noise_c=0.0)
    n = 5
    t = np.arange(n) * 10.0
    cols = sensors.measure(
        spec,
        np.random.default_rng(1),
        t,
        np.full(n, 3.3),
        np.full(n, 0.01),
        np.array([-100.0, 0.0, 10.0, 50.0, 0.0]),
        np.full(n, 25.04),
        np.full(n, 50.0),
        lambda soc: 3.2 + 0.001 * np.asarray(soc),
    )
    assert cols["current_a"] == pytest.approx([-100.45, 0.05, 10.1, 50.3, 0.05])
    assert cols["temp_c"] == pytest.approx([25.0] * n)
    # Cell 1: 3.3 V + 10 mV hysteresis + imbalance -0.2 % * 1 mV/% + 50 uohm * I + 2 mV offset.
    expected = np.round((3.312 - 0.0002 + 0.00005 * np.array([-100.0, 0, 10, 50, 0])) * 1000) / 1000
    assert cols["cell1_v"] == pytest.approx(expected)


def test_csv_files_have_the_replay_headers(tmp_path):
    t = np.array([0.0, 10.0])
    cols = {
        "t_s": t,
        "current_a": np.array([1.234, -5.0]),
        "temp_c": np.array([20.0, 20.1]),
        **{f"cell{i}_v": np.array([3.3, 3.301]) for i in range(1, 5)},
    }
    sensors.write_input_csv(tmp_path / "in.csv", cols)
    lines = (tmp_path / "in.csv").read_text().splitlines()
    assert lines[0] == "t_s,current_a,temp_c,cell1_v,cell2_v,cell3_v,cell4_v"
    assert lines[1] == "0,1.23,20.0,3.300,3.300,3.300,3.300"
    sensors.write_truth_csv(tmp_path / "truth.csv", t, np.array([55.0, 54.9876]))
    tt, soc = sensors.read_truth_csv(tmp_path / "truth.csv")
    assert (tmp_path / "truth.csv").read_text().splitlines()[0] == "t_s,true_soc_pct"
    assert list(tt) == [0.0, 10.0]
    assert soc == pytest.approx([55.0, 54.988])
