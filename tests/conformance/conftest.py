"""Loads the advertisements printed by the Rust example `readout_vectors` (bms-core).

scripts/conformance runs the example and passes the output file in READOUT_VECTORS; when the
variable is unset (pytest run by hand) the example is run here through cargo.
"""

import json
import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def _lines() -> list[str]:
    path = os.environ.get("READOUT_VECTORS")
    if path:
        return pathlib.Path(path).read_text().splitlines()
    out = subprocess.run(
        ["cargo", "run", "-q", "-p", "bms-core", "--example", "readout_vectors"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.splitlines()


@pytest.fixture(scope="session")
def readout_lines() -> list[dict]:
    lines = [json.loads(line) for line in _lines() if line.strip()]
    assert lines, "the readout_vectors example printed nothing"
    return lines


@pytest.fixture(scope="session")
def vectors(readout_lines) -> dict[str, str]:
    return {l["name"]: l["payload"] for l in readout_lines if l["kind"] == "vector"}


@pytest.fixture(scope="session")
def states(readout_lines) -> list[dict]:
    return [l for l in readout_lines if l["kind"] == "state"]
