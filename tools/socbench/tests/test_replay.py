"""The replay step against stand-in simulators: with and without `--estimator`."""

import json
import stat
from pathlib import Path

import pytest

from socbench import cli, metrics, replay

# A stand-in for bms-sim: `replay --help` lists its options; a replay copies the truth next to
# the input into soc_pct, shifted by +1 point for `--estimator plain`.
FAKE = """#!/usr/bin/env bash
set -euo pipefail
[ "$1" = replay ] || exit 2
shift
if [ "$1" = --help ]; then echo "--out <OUT> --initial-soc <PCT> HELP_EXTRA"; exit 0; fi
input=$1; shift
out=""; shift_pct=0
while [ $# -gt 0 ]; do
    case $1 in
        --out) out=$2; shift 2 ;;
        --estimator) [ "$2" = plain ] && shift_pct=1; echo "$2" >> "$(dirname "$input")/estimators"; shift 2 ;;
        *) shift 2 ;;
    esac
done
echo "t_s,soc_pct,atd,atc,prealarm,alarms,warnings" > "$out"
tail -n +2 "$(dirname "$input")/truth.csv" | awk -F, -v d=$shift_pct '{printf "%s,%.3f,1,1,0,,\\n", $1, $2 + d}' >> "$out"
"""


def _fake(tmp_path: Path, help_extra: str) -> Path:
    path = tmp_path / "bms-sim"
    path.write_text(FAKE.replace("HELP_EXTRA", help_extra))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def _profile(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "profiles" / "winter-x"
    folder.mkdir(parents=True)
    (folder / "input.csv").write_text("t_s,current_a,temp_c,cell1_v,cell2_v,cell3_v,cell4_v\n")
    (folder / "truth.csv").write_text("t_s,true_soc_pct\n0,80.000\n10,79.500\n")
    (folder / "meta.json").write_text(json.dumps({"days": 14, "soc0_pct": 80.0}))
    return {"winter": folder}


def test_both_estimators_are_scored_when_the_flag_exists(tmp_path):
    sim = replay.probe(_fake(tmp_path, "--estimator <plain|adaptive>"))
    assert sim.has_replay and sim.has_estimator_flag
    dirs = _profile(tmp_path)
    rows = cli.replay_all(["winter"], dirs, tmp_path, sim, workers=2)
    assert isinstance(rows[0]["plain"], metrics.Score)
    assert rows[0]["plain"].max_abs_pct == pytest.approx(1.0)
    assert rows[0]["adaptive"].max_abs_pct == pytest.approx(0.0)
    used = sorted((dirs["winter"] / "estimators").read_text().split())
    assert used == ["adaptive", "plain"]
    text = cli.print_table(rows)
    assert "met" in text


def test_missing_flag_is_reported_not_faked(tmp_path):
    sim = replay.probe(_fake(tmp_path, ""))
    assert sim.has_replay and not sim.has_estimator_flag
    dirs = _profile(tmp_path)
    rows = cli.replay_all(["winter"], dirs, tmp_path, sim, workers=1)
    assert isinstance(rows[0]["plain"], metrics.Score)
    assert rows[0]["adaptive"] == "estimator flag not available"
    assert not (dirs["winter"] / "estimators").exists()
    assert "winter adaptive: estimator flag not available" in cli.print_table(rows)


def test_a_missing_simulator_is_reported(tmp_path):
    sim = replay.probe(tmp_path / "nowhere")
    rows = cli.replay_all(["winter"], _profile(tmp_path), tmp_path, sim, workers=1)
    assert rows[0]["plain"] == rows[0]["adaptive"] == "bms-sim not built"
