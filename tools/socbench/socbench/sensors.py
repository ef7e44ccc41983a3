"""What a BMS would measure: hysteresis, per-cell spread, sensor errors; the CSV files.

The PyBaMM model has no OCV hysteresis, which real LiFePO4 has (the charge and discharge OCV
branches lie some 20 mV apart on the plateau). `Hysteresis` adds the usual one-state model
(Plett): the voltage offset h moves towards +H while charging and towards -H while discharging,
exponentially in the charge moved, and does not relax with time at rest.

Four identical model cells in series become cell1..cell4 with a small SoC imbalance (which
shows at the knees of the OCV curve), a resistance spread and a per-channel voltage offset.
The bank current gets a gain error, an offset, Gaussian noise and quantisation; the cell
voltages noise and 1 mV quantisation; the temperature noise and 0.1 degC quantisation.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np

INPUT_HEADER = ["t_s", "current_a", "temp_c", "cell1_v", "cell2_v", "cell3_v", "cell4_v"]
TRUTH_HEADER = ["t_s", "true_soc_pct"]


@dataclasses.dataclass(frozen=True)
class HysteresisSpec:
    """Half the gap between the charge and discharge OCV branches, and how fast h moves."""

    amplitude_v: float = 0.010
    # Charge (Ah, bank) that moves h 63 % of the way to the other branch.
    relax_ah: float = 5.0
    # Where h starts: +1 = on the charge branch, -1 = on the discharge branch.
    start: float = -1.0


class Hysteresis:
    """The hysteresis voltage state, moved by the charge that flows."""

    def __init__(self, spec: HysteresisSpec):
        self.spec = spec
        self.value_v = spec.start * spec.amplitude_v

    def update(self, charge_ah: float) -> float:
        """Moves h by `charge_ah` (positive = into the battery) and returns it (volts)."""
        if charge_ah == 0.0 or self.spec.relax_ah <= 0.0:
            return self.value_v
        target = math.copysign(self.spec.amplitude_v, charge_ah)
        keep = math.exp(-abs(charge_ah) / self.spec.relax_ah)
        self.value_v = target + (self.value_v - target) * keep
        return self.value_v


@dataclasses.dataclass(frozen=True)
class SensorSpec:
    """Cell spread and measurement errors of the battery and the BMS."""

    # Per cell: SoC offset (percent points), extra series resistance (ohm), channel offset (V).
    cell_soc_offset_pct: tuple[float, ...] = (-0.2, -0.1, 0.05, 0.25)
    cell_resistance_ohm: tuple[float, ...] = (0.00005, -0.00003, 0.0, -0.00002)
    cell_offset_v: tuple[float, ...] = (0.002, -0.001, 0.0, -0.002)
    voltage_noise_v: float = 0.0005
    voltage_step_v: float = 0.001
    # Current: reading = true * (1 + gain) + offset + noise, then quantised.
    current_gain: float = 0.005
    current_offset_a: float = 0.050
    current_noise_a: float = 0.10
    current_step_a: float = 0.01
    temp_noise_c: float = 0.2
    temp_step_c: float = 0.1


def interval_current_a(t_s: np.ndarray, q_dis_ah: np.ndarray) -> np.ndarray:
    """Average charging current over each row's interval [t_k, t_k+1) (last row repeats).

    The replay holds a row's values until the next row, so integrating these averages gives
    back exactly the charge the model moved.
    """
    dt = np.diff(t_s)
    current = -np.diff(q_dis_ah) * 3600.0 / dt
    return np.append(current, current[-1] if len(current) else 0.0)


def quantise(values: np.ndarray, step: float) -> np.ndarray:
    """Rounds to the nearest multiple of `step` (no rounding when step is 0)."""
    return np.round(values / step) * step if step > 0.0 else values


def measure(
    spec: SensorSpec,
    rng: np.random.Generator,
    t_s: np.ndarray,
    voltage_v: np.ndarray,
    hysteresis_v: np.ndarray,
    true_current_a: np.ndarray,
    temp_c: np.ndarray,
    true_soc_pct: np.ndarray,
    ocv,
) -> dict[str, np.ndarray]:
    """The BMS's readings per row: current_a, temp_c and cell1_v..cell4_v.

    `ocv(soc_pct)` is the model's rested OCV, used for the imbalance of each cell.
    """
    n = len(t_s)
    base_ocv = ocv(true_soc_pct)
    out = {"t_s": t_s}
    cell_current = true_current_a
    for i, (soc_off, res, off) in enumerate(
        zip(spec.cell_soc_offset_pct, spec.cell_resistance_ohm, spec.cell_offset_v), start=1
    ):
        true_v = voltage_v + hysteresis_v + (ocv(true_soc_pct + soc_off) - base_ocv)
        true_v = true_v + res * cell_current
        reading = true_v + off + rng.normal(0.0, spec.voltage_noise_v, n)
        out[f"cell{i}_v"] = quantise(reading, spec.voltage_step_v)
    reading = true_current_a * (1.0 + spec.current_gain) + spec.current_offset_a
    reading = reading + rng.normal(0.0, spec.current_noise_a, n)
    out["current_a"] = quantise(reading, spec.current_step_a)
    out["temp_c"] = quantise(temp_c + rng.normal(0.0, spec.temp_noise_c, n), spec.temp_step_c)
    return out


def write_input_csv(path: Path, columns: dict[str, np.ndarray]) -> None:
    """Writes the replay input (only what a BMS measures)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(INPUT_HEADER)
        cells = [columns[f"cell{i}_v"] for i in range(1, 5)]
        for k, t in enumerate(columns["t_s"]):
            w.writerow(
                [
                    f"{t:.0f}",
                    f"{columns['current_a'][k]:.2f}",
                    f"{columns['temp_c'][k]:.1f}",
                    *(f"{c[k]:.3f}" for c in cells),
                ]
            )


def write_truth_csv(path: Path, t_s: np.ndarray, soc_pct: np.ndarray) -> None:
    """Writes the true SoC (percent of the 25 degC reference capacity) per row."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(TRUTH_HEADER)
        for t, s in zip(t_s, soc_pct):
            w.writerow([f"{t:.0f}", f"{s:.3f}"])


def read_truth_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads a truth file back: (t_s, true_soc_pct)."""
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return data[:, 0], data[:, 1]
