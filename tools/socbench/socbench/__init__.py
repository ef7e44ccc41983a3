"""SoC benchmark for OpenBMS: PyBaMM LiFePO4 profiles replayed through `bms-sim replay`.

Modules: `cell` (the PyBaMM cell and its reference capacity), `plant` (charger and load around
the cell, stepped in time), `scenarios` (the drive profiles), `sensors` (hysteresis, per-cell
spread and measurement errors, CSV output), `metrics` (SoC error against the truth), `cli`.
"""
