"""The PyBaMM LiFePO4 cell: Prada2013 parameters, scaled to one cell of a 100 Ah bank.

The cell is one of PyBaMM's physics models (SPM, SPMe or DFN) with the "Prada2013" LFP/graphite
parameter set. Its external circuit is a single algebraic equation switched by input parameters,
so one built model serves both current control and voltage control (CV) without rebuilding:

    mode = 0:  I = I_set            (current control, PyBaMM sign: positive = discharge)
    mode = 1:  V = V_set            (voltage control)

Four termination events, also set through inputs, stop a step when the charger has to change
regime (see `plant`). The cell temperature is an input too (isothermal model, piecewise constant).

Truth: 100 % is the state after a CC charge at C/2 to 3.65 V and a CV hold until C/50 at 25 degC;
the reference capacity is what a C/20 discharge from there to 2.5 V at 25 degC delivers. SoC is
linear in the charge moved (the model has no side reactions), and the cell is scaled so that the
reference capacity is exactly the bank capacity (100 Ah).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pybamm

REF_TEMP_K = 298.15
GAS_CONSTANT = 8.314462618
KELVIN = 273.15
# Far-away event thresholds: an event input set to these never fires.
NEVER_HIGH = 1.0e4
NEVER_LOW = -1.0e4
OUTPUTS = ["Voltage [V]", "Current [A]", "Discharge capacity [A.h]"]
MODELS = ("SPM", "SPMe", "DFN")


@dataclasses.dataclass(frozen=True)
class CellSpec:
    """Which PyBaMM model and which additions to the parameter set."""

    model: str = "SPMe"
    # Prada2013 gives temperature-independent solid diffusivities; LFP and graphite slow down
    # markedly in the cold, so both get an Arrhenius factor around 25 degC (0 disables it).
    diffusivity_activation_j_mol: float = 35000.0
    bank_capacity_ah: float = 100.0


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Reference states of the unscaled cell (average particle concentrations, mol/m3)."""

    q_ref_ah: float
    c_pos_full: float
    c_neg_full: float
    c_pos_empty: float
    c_neg_empty: float
    c_pos_max: float
    c_neg_max: float

    def concentrations(self, soc_pct: float) -> tuple[float, float]:
        """Uniform (rested) positive and negative concentrations at a true SoC."""
        f = soc_pct / 100.0
        c_pos = self.c_pos_empty + (self.c_pos_full - self.c_pos_empty) * f
        c_neg = self.c_neg_empty + (self.c_neg_full - self.c_neg_empty) * f
        return c_pos, c_neg

    def ocv_v(self, soc_pct: np.ndarray) -> np.ndarray:
        """Rested open-circuit voltage of the model at 25 degC, without hysteresis."""
        params = pybamm.ParameterValues("Prada2013")
        u_pos = params["Positive electrode OCP [V]"]
        u_neg = params["Negative electrode OCP [V]"]
        soc = np.clip(np.asarray(soc_pct, dtype=float), 0.0, 100.0)
        c_pos, c_neg = self.concentrations(soc)
        return u_pos(c_pos / self.c_pos_max) - u_neg(c_neg / self.c_neg_max)


def _arrhenius_diffusivity(d_ref: float, activation_j_mol: float):
    def diffusivity(sto, temp_k):
        return d_ref * np.exp(activation_j_mol / GAS_CONSTANT * (1.0 / REF_TEMP_K - 1.0 / temp_k))

    return diffusivity


def parameter_values(spec: CellSpec) -> pybamm.ParameterValues:
    """Prada2013 with wide safety cut-offs, Arrhenius diffusivities and temperature as input."""
    params = pybamm.ParameterValues("Prada2013")
    # The charger model keeps the cell inside 2.5-3.65 V; these only catch a runaway solve.
    params["Upper voltage cut-off [V]"] = 3.9
    params["Lower voltage cut-off [V]"] = 2.0
    if spec.diffusivity_activation_j_mol > 0.0:
        for electrode in ("Positive", "Negative"):
            key = f"{electrode} particle diffusivity [m2.s-1]"
            params[key] = _arrhenius_diffusivity(params[key], spec.diffusivity_activation_j_mol)
    return params


def calibrate(spec: CellSpec) -> Calibration:
    """Runs the reference charge and C/20 discharge at 25 degC on one unscaled cell."""
    params = parameter_values(spec)
    q_nom = params["Nominal cell capacity [A.h]"]
    c_rate = f"{q_nom / 20.0:.6f} A"
    experiment = pybamm.Experiment(
        [
            f"Charge at {q_nom / 2.0:.6f} A until 3.65 V",
            f"Hold at 3.65 V until {q_nom / 50.0:.6f} A",
            "Rest for 2 hours",
            f"Discharge at {c_rate} until 2.5 V",
            "Rest for 2 hours",
        ],
        period="5 minutes",
    )
    model = getattr(pybamm.lithium_ion, spec.model)()
    sim = pybamm.Simulation(
        model, parameter_values=params, experiment=experiment, solver=pybamm.IDAKLUSolver()
    )
    sol = sim.solve()
    steps = sol.sub_solutions
    if len(steps) != 5:
        raise RuntimeError(f"reference cycle stopped after {len(steps)} of 5 steps")

    def last(step, name):
        return float(step[name].entries[-1])

    q_dis = steps[3]["Discharge capacity [A.h]"].entries
    pos = "Average positive particle concentration [mol.m-3]"
    neg = "Average negative particle concentration [mol.m-3]"
    return Calibration(
        q_ref_ah=float(q_dis[-1] - q_dis[0]),
        c_pos_full=last(steps[2], pos),
        c_neg_full=last(steps[2], neg),
        c_pos_empty=last(steps[4], pos),
        c_neg_empty=last(steps[4], neg),
        c_pos_max=float(params["Maximum concentration in positive electrode [mol.m-3]"]),
        c_neg_max=float(params["Maximum concentration in negative electrode [mol.m-3]"]),
    )


def _control(variables):
    mode = pybamm.InputParameter("mode")
    current = variables["Current [A]"]
    voltage = variables["Voltage [V]"]
    i_scale = pybamm.InputParameter("i_scale")
    return (
        mode * (voltage - pybamm.InputParameter("v_set"))
        + (1 - mode) * (current - pybamm.InputParameter("i_set")) / i_scale
    )


@dataclasses.dataclass
class Control:
    """One step's control: current (bank A, positive = charging) or voltage, and its events.

    Events stop the step when the cell voltage rises above `v_above` or falls below `v_below`,
    or the charging current rises above `i_above` or falls below `i_below`.
    """

    current_a: float | None = None
    voltage_v: float | None = None
    v_above: float = NEVER_HIGH
    v_below: float = NEVER_LOW
    i_above: float = NEVER_HIGH
    i_below: float = NEVER_LOW


@dataclasses.dataclass
class Segment:
    """What one step produced: sample times (s), cell voltage, charging current, Ah discharged."""

    t_s: np.ndarray
    voltage_v: np.ndarray
    current_a: np.ndarray
    q_dis_ah: np.ndarray
    event: str | None


class EventAtStart(Exception):
    """The requested control's event already holds at the start of the step."""

    def __init__(self, event: str):
        super().__init__(f"event {event} holds at the start of the step")
        self.event = event


class Cell:
    """One scaled cell, stepped forward in time by `advance`."""

    EVENTS = ("v_above", "v_below", "i_above", "i_below")

    def __init__(self, spec: CellSpec, calibration: Calibration, soc0_pct: float, temp0_c: float):
        params = parameter_values(spec)
        scale = spec.bank_capacity_ah / calibration.q_ref_ah
        params["Number of electrodes connected in parallel to make a cell"] = scale
        params["Nominal cell capacity [A.h]"] = spec.bank_capacity_ah
        c_pos, c_neg = calibration.concentrations(soc0_pct)
        params["Initial concentration in positive electrode [mol.m-3]"] = c_pos
        params["Initial concentration in negative electrode [mol.m-3]"] = c_neg
        params["Ambient temperature [K]"] = "[input]"
        params["Initial temperature [K]"] = "[input]"

        model = getattr(pybamm.lithium_ion, spec.model)({"operating mode": _control})
        voltage = model.variables["Voltage [V]"]
        charging = -model.variables["Current [A]"]
        inp = pybamm.InputParameter
        model.events.extend(
            [
                pybamm.Event("v_above", inp("ev_v_above") - voltage),
                pybamm.Event("v_below", voltage - inp("ev_v_below")),
                pybamm.Event("i_above", inp("ev_i_above") - charging),
                pybamm.Event("i_below", charging - inp("ev_i_below")),
            ]
        )
        self._solver = pybamm.IDAKLUSolver(output_variables=OUTPUTS)
        sim = pybamm.Simulation(model, parameter_values=params, solver=self._solver)
        sim.build()
        self._model = sim.built_model
        self._capacity_ah = spec.bank_capacity_ah
        self._solution = None
        self._temp_k = temp0_c + KELVIN
        self.last_voltage_v = float(calibration.ocv_v(np.array([soc0_pct]))[0])
        self.last_current_a = 0.0

    def advance(self, dt_s: float, control: Control, temp_c: float, t_rel: np.ndarray) -> Segment:
        """Steps `dt_s` seconds (or until an event) and returns the points at `t_rel` (0..dt).

        Raises `EventAtStart` when an event of `control` already holds at the start.
        """
        temp_k = temp_c + KELVIN
        inputs = {
            "mode": 0.0 if control.voltage_v is None else 1.0,
            "v_set": control.voltage_v if control.voltage_v is not None else 3.3,
            "i_set": -(control.current_a or 0.0),
            "i_scale": self._capacity_ah,
            "ev_v_above": control.v_above,
            "ev_v_below": control.v_below,
            "ev_i_above": control.i_above,
            "ev_i_below": control.i_below,
            "Ambient temperature [K]": temp_k,
            "Initial temperature [K]": self._temp_k if self._solution is None else temp_k,
        }
        try:
            sol = self._solver.step(
                self._solution,
                self._model,
                dt_s,
                t_eval=np.array([0.0, dt_s]),
                t_interp=t_rel,
                inputs=inputs,
                save=False,
            )
        except pybamm.SolverError as err:
            text = str(err)
            if "non-positive at initial conditions" in text:
                for name in self.EVENTS:
                    if f"'{name}'" in text:
                        raise EventAtStart(name) from err
            raise
        event = None
        if sol.termination != "final time":
            event = sol.termination.removeprefix("event: ").strip()
            if event not in self.EVENTS:
                raise RuntimeError(f"cell left its safe range: {sol.termination}")
            # Let the solver continue from here: it refuses to step past a terminated solution.
            sol.termination = "final time"
        self._solution = sol
        self._temp_k = temp_k
        t = np.asarray(sol.t, dtype=float)
        voltage = np.asarray(sol["Voltage [V]"].entries, dtype=float)
        current = -np.asarray(sol["Current [A]"].entries, dtype=float)
        q_dis = np.asarray(sol["Discharge capacity [A.h]"].entries, dtype=float)
        self.last_voltage_v = float(voltage[-1])
        self.last_current_a = float(current[-1])
        if not all(math.isfinite(x) for x in (voltage[-1], current[-1], q_dis[-1])):
            raise RuntimeError("cell model returned a non-finite value")
        return Segment(t, voltage, current, q_dis, event)
