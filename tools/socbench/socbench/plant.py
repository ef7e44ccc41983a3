"""The plant around the cell: a charger (solar MPPT or shore charger) and DC loads.

Bank quantities throughout, currents positive = charging the battery. The charger delivers
`I_c` in [0, S] (S = what the source offers in this minute) and never lets the terminal voltage
exceed its stage's limit; the loads draw L. So the battery current I = I_c - L is in one of
three regimes, and the cell model switches between them on its events:

    source  I_c = S, voltage below the limit      -> hold when V reaches the limit
    hold    V = limit, 0 <= I_c <= S               -> source when I_c would exceed S,
                                                       idle when I_c would go negative
    idle    I_c = 0, voltage above the limit       -> hold when V falls to the limit

Charger stages follow the usual three-stage chargers: bulk until the absorption voltage is
reached, absorption until the charger current is below the tail current for a minute or the
absorption time is over, then float. A dark (or disconnected) source for `rebulk_after_s`
restarts at bulk, as an MPPT does every morning. The terminal voltage includes the hysteresis
voltage (see `sensors.Hysteresis`), so the charger regulates the voltage a real cell would show.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import sensors
from .cell import NEVER_HIGH, NEVER_LOW, Cell, Control, EventAtStart

# At most this many regime changes inside one solver run; more means the regimes chatter.
MAX_SWITCHES = 8
# Longest single solver run (schedule steps) while nothing in the schedule changes.
MAX_RUN_STEPS = 60
TEMP_STEP_C = 0.25
TIE_V = 0.0005
TIE_A = 0.02


@dataclasses.dataclass(frozen=True)
class ChargerSpec:
    """A three-stage charger, voltages per cell."""

    absorption_v: float = 3.55
    float_v: float = 3.375
    absorption_max_s: float = 2 * 3600.0
    tail_a: float = 2.0
    rebulk_after_s: float = 3600.0
    # Repeated absorption (shore chargers): back to bulk after this long in float (0 = never).
    reabsorb_after_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class Schedule:
    """What the world does, one value per `step_s` interval from t = 0."""

    step_s: float
    source_a: np.ndarray
    load_a: np.ndarray
    temp_c: np.ndarray

    def __len__(self) -> int:
        return len(self.source_a)


@dataclasses.dataclass
class Trace:
    """The plant's output at the sample times: true cell values and states."""

    t_s: np.ndarray
    voltage_v: np.ndarray
    q_dis_ah: np.ndarray
    hysteresis_v: np.ndarray
    temp_c: np.ndarray
    stage: np.ndarray
    # Runs finished by holding the limit because the regimes chattered (see `run`).
    slides: int = 0


class Charger:
    """Stage machine of a three-stage charger."""

    BULK, ABSORPTION, FLOAT = 0, 1, 2

    def __init__(self, spec: ChargerSpec):
        self.spec = spec
        self.stage = self.BULK
        self._stage_s = 0.0
        self._tail_s = 0.0
        self._dark_s = 0.0

    def limit_v(self) -> float:
        """Terminal voltage limit of the present stage (per cell)."""
        return self.spec.float_v if self.stage == self.FLOAT else self.spec.absorption_v

    def update(self, dt_s: float, source_a: float, charger_a: float, at_limit: bool) -> None:
        """Advances the stage after `dt_s` seconds with this source, output and regulation."""
        spec = self.spec
        self._stage_s += dt_s
        self._dark_s = self._dark_s + dt_s if source_a <= 0.0 else 0.0
        if self._dark_s >= spec.rebulk_after_s and self.stage != self.BULK:
            self._enter(self.BULK)
            return
        if self.stage == self.BULK and at_limit:
            self._enter(self.ABSORPTION)
        elif self.stage == self.ABSORPTION:
            self._tail_s = self._tail_s + dt_s if at_limit and charger_a < spec.tail_a else 0.0
            if self._tail_s >= 60.0 or self._stage_s >= spec.absorption_max_s:
                self._enter(self.FLOAT)
        elif self.stage == self.FLOAT and 0.0 < spec.reabsorb_after_s <= self._stage_s:
            self._enter(self.BULK)

    def _enter(self, stage: int) -> None:
        self.stage = stage
        self._stage_s = 0.0
        self._tail_s = 0.0


def _control(regime: str, source_a: float, load_a: float, limit_v: float) -> Control:
    # The small margins keep a regime from handing straight back at a numerical tie.
    if regime == "hold":
        return Control(
            voltage_v=limit_v,
            i_above=source_a - load_a + TIE_A,
            i_below=-load_a - TIE_A,
        )
    if regime == "source":
        return Control(current_a=source_a - load_a, v_above=limit_v + TIE_V)
    return Control(current_a=-load_a, v_below=limit_v - TIE_V)


# The regime an event hands over to.
_NEXT = {"v_above": "hold", "v_below": "hold", "i_above": "source", "i_below": "idle"}


def run(
    cell: Cell,
    schedule: Schedule,
    charger: Charger,
    hysteresis: sensors.Hysteresis,
    sample_s: float,
    low_cutoff_v: float = 2.8,
    progress=None,
) -> Trace:
    """Runs the whole schedule and returns the plant's trace at every `sample_s` seconds.

    Below `low_cutoff_v` per cell the loads are disconnected (as a BMS would), so a profile
    that is too heavy for the battery rests instead of leaving the model's valid range.
    `progress(t_s)` is called after every simulated day.
    """
    step_s = schedule.step_s
    n_steps = len(schedule)
    times, volts, q_dis, hyst = [0.0], [cell.last_voltage_v], [0.0], [hysteresis.value_v]
    stages = []
    regime = "idle"
    slides = 0
    h_v = hysteresis.value_v
    q_last = 0.0
    # The model sees the temperature in steps of TEMP_STEP_C, so that runs of minutes with
    # the same source, load and temperature become one solver call.
    temp_model = np.round(np.asarray(schedule.temp_c, dtype=float) / TEMP_STEP_C) * TEMP_STEP_C
    k = 0
    while k < n_steps:
        j = k + 1
        while (
            j < n_steps
            and j - k < MAX_RUN_STEPS
            and schedule.source_a[j] == schedule.source_a[k]
            and schedule.load_a[j] == schedule.load_a[k]
            and temp_model[j] == temp_model[k]
        ):
            j += 1
        source = max(0.0, float(schedule.source_a[k]))
        load = max(0.0, float(schedule.load_a[k]))
        temp = float(temp_model[k])
        if cell.last_voltage_v + h_v < low_cutoff_v and load > 0.0:
            load = 0.0
        t0 = k * step_s
        run_s = (j - k) * step_s
        remaining = run_s
        switches = 0
        if regime == "hold":
            charger_a = cell.last_current_a + load
            regime = (
                "hold"
                if 0.0 <= charger_a <= source
                else ("source" if charger_a > source else "idle")
            )
        elif regime == "source" and cell.last_voltage_v + h_v >= charger.limit_v():
            regime = "hold"
        elif regime == "idle" and cell.last_voltage_v + h_v <= charger.limit_v():
            regime = "hold"
        while remaining > 1e-6:
            # A lower limit (absorption over, float begins) leaves the charger idle until the
            # battery has settled down to it, instead of pulling the voltage down at once.
            if regime == "hold" and cell.last_voltage_v + h_v > charger.limit_v() + TIE_V:
                regime = "idle"
            if source <= 0.0:
                regime, control = "dark", Control(current_a=-load)
            elif switches > MAX_SWITCHES:
                # Sliding along the boundary (the charger current needed at the limit is just
                # S): hold the limit without events for the rest of the run. The cell tapers,
                # so the excess over S is small and short.
                regime, control = "hold", Control(voltage_v=charger.limit_v() - h_v)
                slides += 1
            else:
                regime = "source" if regime == "dark" else regime
                control = _control(regime, source, load, charger.limit_v() - h_v)
            done = run_s - remaining
            grid = np.arange(np.ceil(done / sample_s) * sample_s, run_s, sample_s) - done
            t_rel = np.unique(np.concatenate(([0.0], grid[grid > 1e-9], [remaining])))
            try:
                seg = cell.advance(remaining, control, temp, t_rel)
            except EventAtStart as start:
                switches += 1
                regime = _NEXT[start.event]
                continue
            seg_s = float(seg.t_s[-1] - seg.t_s[0])
            base = t0 + done - seg.t_s[0]
            for t, v, q in zip(seg.t_s[1:], seg.voltage_v[1:], seg.q_dis_ah[1:]):
                h_v = hysteresis.update(q_last - q)
                q_last = q
                times.append(base + t)
                volts.append(v)
                q_dis.append(q)
                hyst.append(h_v)
            charger_a = cell.last_current_a + load if source > 0.0 else 0.0
            charger.update(seg_s, source, charger_a, regime == "hold")
            remaining -= seg_s
            if seg.event is not None:
                switches += 1
                regime = _NEXT[seg.event]
        stages.extend([charger.stage] * (j - k))
        if progress is not None and (j * step_s) // 86400 > (k * step_s) // 86400:
            progress(j * step_s)
        k = j

    t_all = np.asarray(times)
    order = np.argsort(t_all, kind="stable")
    t_all = t_all[order]
    sample_t = np.arange(0.0, n_steps * step_s + 1e-9, sample_s)
    # Voltage just after the sample time, so a row's voltage goes with the row's current.
    probe = np.minimum(sample_t + 1e-3, t_all[-1])
    step_idx = np.minimum((sample_t // step_s).astype(int), n_steps - 1)
    return Trace(
        t_s=sample_t,
        voltage_v=np.interp(probe, t_all, np.asarray(volts)[order]),
        q_dis_ah=np.interp(sample_t, t_all, np.asarray(q_dis)[order]),
        hysteresis_v=np.interp(probe, t_all, np.asarray(hyst)[order]),
        temp_c=np.asarray(schedule.temp_c, dtype=float)[step_idx],
        stage=np.asarray(stages)[step_idx],
        slides=slides,
    )


__all__ = ["ChargerSpec", "Charger", "Schedule", "Trace", "run", "NEVER_HIGH", "NEVER_LOW"]
