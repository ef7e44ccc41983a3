"""The held-out and tuning profile sets, and the cache keys that let them share plant runs."""

import dataclasses

from socbench import cli, generate, metrics
from socbench.scenarios import (
    DRIFT,
    DRIFT_TUNING,
    HELD_OUT_SEEDS,
    SCENARIOS,
    SENSOR_VARIANTS,
    TUNING_SEEDS,
)


def test_held_out_sensors_are_the_whole_grid_of_the_issue():
    grid = {(round(o * 1000), g) for o, g in SENSOR_VARIANTS["held-out"]}
    assert grid == {(o, g) for o in (-100, -50, 0, 50, 100) for g in (-0.01, 0.01)}
    for base in ("light-winter", "cold-weeks", "pack-85", "deep-winter"):
        assert sum(n.startswith(base + "~") for n in DRIFT) == 10


def test_tuning_profiles_share_no_seed_and_no_sensor_with_the_reported_ones():
    assert not set(TUNING_SEEDS.values()) & set(HELD_OUT_SEEDS.values())
    assert not set(SENSOR_VARIANTS["tuning"]) & set(SENSOR_VARIANTS["held-out"])
    assert not set(DRIFT) & set(DRIFT_TUNING)
    assert all("-tune~" in n for n in DRIFT_TUNING)


def test_sensor_variants_share_the_plant_and_titles_do_not_reach_the_cache():
    a, b = SCENARIOS["light-winter~o-100g-1"], SCENARIOS["light-winter~o+100g+1"]
    assert generate.plant_key(a, "SPM") == generate.plant_key(b, "SPM")
    assert generate.cache_key(a, "SPM") != generate.cache_key(b, "SPM")
    retitled = dataclasses.replace(a, title="another title", goal_max_err_pct=9.0)
    assert generate.cache_key(retitled, "SPM") == generate.cache_key(a, "SPM")
    other_seed = dataclasses.replace(a, seed=a.seed + 1)
    assert generate.plant_key(other_seed, "SPM") != generate.plant_key(a, "SPM")


def _score(max_abs: float, rms: float, cover: float) -> metrics.Score:
    return metrics.Score(max_abs, rms, 0.0, 0.0, 100, 0, cover)


def test_group_summary_takes_the_worst_variant_and_pools_rows():
    results = [
        {"profile": "pack-85~o-100g-1", "plain": _score(8.0, 4.0, 0.5), "adaptive": _score(3.0, 1.0, 0.6)},
        {"profile": "pack-85~o+100g+1", "plain": _score(2.0, 1.0, 0.5), "adaptive": _score(4.0, 2.0, 0.8)},
        {"profile": "winter", "plain": _score(9.0, 9.0, 0.5), "adaptive": _score(9.0, 9.0, 0.5)},
    ]
    lines = cli._group_summary(results)
    row = next(line for line in lines if line.startswith("pack-85 "))
    fields = row.split()
    assert fields[1] == "2"
    assert float(fields[3]) == 8.0 and float(fields[6]) == 4.0
    assert fields[8] == "70%"
    # o+100g+1: adaptive 4.0 is worse than plain 2.0, so one of two met the goal.
    assert row.endswith("1 of  2")
    assert not any(line.startswith("winter") for line in lines)
