"""Generates one profile: runs the plant, adds the sensors and writes the CSV files.

A profile lives in its own folder, named after the scenario and a hash of everything that
shapes it (scenario, cell, sensor parameters, this package's source and the pinned
requirements), so a cached profile is reused only while nothing that made it has changed:

    input.csv    what the BMS measures, for `bms-sim replay`
    truth.csv    t_s,true_soc_pct from the model
    meta.json    parameters, statistics and timings
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from . import sensors
from .scenarios import Scenario

PACKAGE_DIR = Path(__file__).resolve().parent
REQUIREMENTS = PACKAGE_DIR.parent / "requirements.txt"


def cache_key(scenario: Scenario, model: str) -> str:
    """Hash of what shapes the profile: the plant (see `plant_key`), the sensors, the seed and
    the source that reads the plant through them. Titles and goals are left out, so editing
    them (or another profile) keeps the cache."""
    h = hashlib.sha256()
    h.update(plant_key(scenario, model).encode())
    h.update(json.dumps(dataclasses.asdict(scenario.sensors), sort_keys=True).encode())
    h.update(str(scenario.seed).encode())
    for name in ("generate.py", "sensors.py"):
        h.update(name.encode())
        h.update((PACKAGE_DIR / name).read_bytes())
    return h.hexdigest()[:12]


# Fields that only change how the plant is read or judged, not what it does.
_NOT_PLANT = ("name", "title", "sensors", "goal_max_err_pct", "expect_full_charge")


def plant_key(scenario: Scenario, model: str) -> str:
    """Hash of what shapes the simulated plant (not the sensors): sensor variants share it.

    The scenario's schedule (source, load and temperature per minute) is hashed rather than
    the source of `scenarios.py`, so editing another profile or a title reuses the plant runs;
    the cell, the plant loop (charger) and the hysteresis model are hashed as source.
    """
    fields = {k: v for k, v in dataclasses.asdict(scenario).items() if k not in _NOT_PLANT}
    h = hashlib.sha256()
    h.update(json.dumps(fields, sort_keys=True).encode())
    h.update(model.encode())
    schedule = scenario.schedule()
    for column in (schedule.source_a, schedule.load_a, schedule.temp_c):
        h.update(np.ascontiguousarray(column, dtype=np.float64).tobytes())
    for path in sorted(PACKAGE_DIR.glob("*.py")) + [REQUIREMENTS]:
        if path.name in ("cell.py", "plant.py", "sensors.py") or path == REQUIREMENTS:
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def profile_dir(root: Path, scenario: Scenario, model: str) -> Path:
    """The cache folder of a profile under `root`."""
    return root / f"{scenario.name}-{model}-{cache_key(scenario, model)}"


def generate(
    scenario: Scenario, model: str, dest: Path, verbose: bool = False, plants: Path | None = None
) -> dict:
    """Simulates `scenario` with PyBaMM model `model` and writes the profile into `dest`.

    With `plants`, the plant run is cached there (`<plant_key>.npz`) and reused by every
    scenario that differs only in its sensors.
    """
    from . import cell, plant  # PyBaMM is imported only when a profile is really generated

    started = time.monotonic()
    cpu_started = time.process_time()
    spec = cell.CellSpec(model=model, bank_capacity_ah=scenario.capacity_ah)
    calibration = cell.calibrate(spec)
    cached = plants / f"{plant_key(scenario, model)}.npz" if plants is not None else None
    if cached is not None and cached.exists():
        with np.load(cached) as z:
            trace = plant.Trace(
                **{k: z[k] for k in ("t_s", "voltage_v", "q_dis_ah", "hysteresis_v", "temp_c",
                                     "stage")},
                slides=int(z["slides"]),
            )
    else:
        schedule = scenario.schedule()
        the_cell = cell.Cell(spec, calibration, scenario.soc0_pct, float(schedule.temp_c[0]))
        charger = plant.Charger(scenario.charger)
        hysteresis = sensors.Hysteresis(scenario.hysteresis)

        def progress(t_s: float) -> None:
            if verbose:
                took = time.monotonic() - started
                print(
                    f"    {scenario.name}: day {t_s / 86400:.0f}/{scenario.days} ({took:.0f} s)",
                    flush=True,
                )

        trace = plant.run(
            the_cell, schedule, charger, hysteresis, scenario.sample_s, progress=progress
        )
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp.npz")
            np.savez(tmp, **{k: v for k, v in dataclasses.asdict(trace).items()})
            tmp.rename(cached)
    simulated = time.monotonic()

    true_soc = scenario.soc0_pct - 100.0 * trace.q_dis_ah / spec.bank_capacity_ah
    current = sensors.interval_current_a(trace.t_s, trace.q_dis_ah)
    rng = np.random.default_rng(scenario.seed + 1000)
    columns = sensors.measure(
        scenario.sensors,
        rng,
        trace.t_s,
        trace.voltage_v,
        trace.hysteresis_v,
        current,
        trace.temp_c,
        true_soc,
        calibration.ocv_v,
    )
    dest.mkdir(parents=True, exist_ok=True)
    tmp_input = dest / "input.csv.tmp"
    sensors.write_input_csv(tmp_input, columns)
    sensors.write_truth_csv(dest / "truth.csv", trace.t_s, true_soc)
    entered = (trace.stage[1:] == 1) & (trace.stage[:-1] != 1)
    absorptions = int(np.sum(entered)) + int(trace.stage[0] == 1)
    meta = {
        "scenario": dataclasses.asdict(scenario),
        "model": model,
        "pybamm_parameters": "Prada2013",
        "q_ref_cell_ah": calibration.q_ref_ah,
        "rows": int(len(trace.t_s)),
        "days": scenario.days,
        "soc0_pct": scenario.soc0_pct,
        "true_soc_min_pct": float(true_soc.min()),
        "true_soc_max_pct": float(true_soc.max()),
        "true_soc_end_pct": float(true_soc[-1]),
        "absorption_phases": absorptions,
        "boundary_slides": trace.slides,
        "charge_ah": float(np.sum(np.clip(current[:-1], 0, None) * np.diff(trace.t_s)) / 3600),
        "discharge_ah": float(np.sum(np.clip(-current[:-1], 0, None) * np.diff(trace.t_s)) / 3600),
        "cell_v_min": float(trace.voltage_v.min()),
        "cell_v_max": float(trace.voltage_v.max()),
        "temp_c_min": float(trace.temp_c.min()),
        "temp_c_max": float(trace.temp_c.max()),
        "simulate_s": round(simulated - started, 1),
        "cpu_s": round(time.process_time() - cpu_started, 1),
        "total_s": round(time.monotonic() - started, 1),
    }
    (dest / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    # The input appears last and atomically: its presence marks a complete profile.
    tmp_input.rename(dest / "input.csv")
    return meta
