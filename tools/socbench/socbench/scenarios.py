"""The drive profiles: who charges and who draws, minute by minute, for a 12.8 V 100 Ah bank.

Every profile is data (this module's dataclasses) plus a seeded random generator, so a profile
is reproducible from its parameters alone; the generator's cache key is their hash.

    solar-summer  14 days off-grid in summer: long days, 25 A of solar, a full charge most days
    winter        14 winter days without a full charge: short dim days, a generator now and then
    shore-week    7 days on shore power with small loads, one day unplugged
    temp-swing    10 spring days, the battery between about 5 and 35 degC every day
    small-2day    2 days at 60 s rows (committed for cargo test): discharge, rest, partial
                  charge on a dull day, full charge on a sunny one
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .plant import ChargerSpec, Schedule
from .sensors import HysteresisSpec, SensorSpec

STEP_S = 60.0
MIN_PER_DAY = 1440


@dataclasses.dataclass(frozen=True)
class Solar:
    """A PV array behind an MPPT: clear-sky bell between sunrise and sunset, times clouds."""

    peak_a: float = 25.0
    sunrise_h: float = 5.5
    sunset_h: float = 21.0
    # One factor per day (repeats if shorter); partly cloudy days (0.3-0.9) also flicker.
    cloud: tuple[float, ...] = (1.0,)


@dataclasses.dataclass(frozen=True)
class Generator:
    """A charger on a generator (or alternator): `current_a` from `start_h` for `hours`."""

    day: int
    start_h: float
    hours: float
    current_a: float = 40.0


@dataclasses.dataclass(frozen=True)
class Shore:
    """A mains charger, connected except in the listed (day, start_h, hours) windows."""

    current_a: float = 30.0
    unplugged: tuple[tuple[int, float, float], ...] = ()


@dataclasses.dataclass(frozen=True)
class Loads:
    """DC loads: standby, a compressor fridge, evening use, inverter bursts, idle windows."""

    standby_a: float = 0.4
    fridge_on_a: float = 3.5
    fridge_duty: float = 0.4
    fridge_period_min: float = 40.0
    evening_a: float = 4.0
    evening_h: tuple[float, float] = (19.0, 23.0)
    # Morning inverter burst (kettle, coffee): current, minutes, probability per day.
    morning_a: float = 70.0
    morning_min: tuple[int, int] = (3, 7)
    morning_p: float = 0.8
    # Random daytime bursts (pump, tools): mean count per day, current range, minute range.
    bursts_per_day: float = 1.0
    burst_a: tuple[float, float] = (20.0, 50.0)
    burst_min: tuple[int, int] = (5, 20)
    # (day, start_h, hours) windows with every load off: the battery rests.
    off: tuple[tuple[int, float, float], ...] = ()


@dataclasses.dataclass(frozen=True)
class Temperature:
    """Battery temperature: daily sine (coldest at 06:00) plus extra degrees per day."""

    mean_c: float = 25.0
    swing_c: float = 0.0
    per_day_c: tuple[float, ...] = (0.0,)


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One drive profile and everything that shapes it."""

    name: str
    title: str
    days: int
    soc0_pct: float
    seed: int
    sample_s: float = 10.0
    solar: Solar | None = None
    generators: tuple[Generator, ...] = ()
    shore: Shore | None = None
    charger: ChargerSpec = ChargerSpec()
    loads: Loads = Loads()
    temperature: Temperature = Temperature()
    hysteresis: HysteresisSpec = HysteresisSpec()
    sensors: SensorSpec = SensorSpec()
    # Goal reported by the benchmark (max |SoC error| of the new estimator, percent points).
    goal_max_err_pct: float = 1.5
    expect_full_charge: bool = True

    def schedule(self) -> Schedule:
        """Source current, load current and battery temperature per minute."""
        rng = np.random.default_rng(self.seed)
        n = self.days * MIN_PER_DAY
        minute = np.arange(n)
        day = minute // MIN_PER_DAY
        hour = (minute % MIN_PER_DAY) / 60.0
        source = np.zeros(n)
        if self.solar is not None:
            source += _solar(self.solar, rng, day, hour)
        for g in self.generators:
            on = (day == g.day) & (hour >= g.start_h) & (hour < g.start_h + g.hours)
            source[on] += g.current_a
        if self.shore is not None:
            plugged = np.ones(n, dtype=bool)
            for d, start, hours in self.shore.unplugged:
                plugged &= ~((day == d) & (hour >= start) & (hour < start + hours))
            source += np.where(plugged, self.shore.current_a, 0.0)
        load = _loads(self.loads, rng, day, hour)
        t = self.temperature
        per_day = np.asarray(t.per_day_c)[np.minimum(day, len(t.per_day_c) - 1)]
        temp = t.mean_c + per_day - t.swing_c * np.cos(2 * np.pi * (hour - 6.0) / 24.0)
        # A 100 Ah battery lags the air by hours: first-order lag, 2 h time constant.
        temp = _lag(temp, 120.0)
        return Schedule(STEP_S, source, load, temp)


def _lag(x: np.ndarray, tau_min: float) -> np.ndarray:
    y = np.empty_like(x)
    a = 1.0 - np.exp(-1.0 / tau_min)
    acc = float(x[0])
    for i, v in enumerate(x):
        acc += a * (float(v) - acc)
        y[i] = acc
    return y


def _solar(s: Solar, rng: np.random.Generator, day: np.ndarray, hour: np.ndarray) -> np.ndarray:
    span = s.sunset_h - s.sunrise_h
    phase = np.clip((hour - s.sunrise_h) / span, 0.0, 1.0)
    clear = s.peak_a * np.sin(np.pi * phase) ** 1.5
    cloud = np.asarray(s.cloud)[day % len(s.cloud)]
    # Passing clouds: AR(1) flicker, strongest on partly cloudy days.
    flicker = np.empty(len(hour))
    acc = 0.0
    noise = rng.normal(0.0, 1.0, len(hour))
    for i, z in enumerate(noise):
        acc = 0.9 * acc + 0.44 * z
        flicker[i] = acc
    depth = np.where((cloud > 0.25) & (cloud < 0.95), 0.35, 0.08)
    factor = np.clip(cloud * (1.0 + depth * flicker), 0.03, 1.1)
    return np.round(clear * factor, 2)


def _loads(spec: Loads, rng: np.random.Generator, day: np.ndarray, hour: np.ndarray) -> np.ndarray:
    n = len(hour)
    load = np.full(n, spec.standby_a)
    # Fridge: compressor cycles with a jittered period.
    fridge = np.zeros(n)
    i = int(rng.integers(0, int(spec.fridge_period_min)))
    while i < n and spec.fridge_duty > 0.0:
        period = spec.fridge_period_min * rng.uniform(0.8, 1.2)
        on = int(round(period * spec.fridge_duty))
        fridge[i : i + on] = spec.fridge_on_a
        i += max(1, int(round(period)))
    load += fridge
    days = int(day[-1]) + 1 if n else 0
    for d in range(days):
        base = d * MIN_PER_DAY
        lo, hi = spec.evening_h
        for m in range(int(lo * 60), int(hi * 60), 30):
            level = spec.evening_a * rng.uniform(0.6, 1.4)
            load[base + m : base + min(m + 30, int(hi * 60))] += level
        if rng.uniform() < spec.morning_p:
            start = base + int(rng.uniform(6.75, 8.0) * 60)
            length = int(rng.integers(spec.morning_min[0], spec.morning_min[1] + 1))
            load[start : start + length] += spec.morning_a
        for _ in range(int(rng.poisson(spec.bursts_per_day))):
            start = base + int(rng.uniform(9.0, 18.0) * 60)
            length = int(rng.integers(spec.burst_min[0], spec.burst_min[1] + 1))
            load[start : start + length] += rng.uniform(*spec.burst_a)
    for d, start, hours in spec.off:
        load[(day == d) & (hour >= start) & (hour < start + hours)] = 0.0
    return np.round(load, 2)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="solar-summer",
            title="14 days off-grid in summer, full charge most days",
            days=14,
            soc0_pct=70.0,
            seed=11,
            solar=Solar(
                peak_a=25.0,
                sunrise_h=5.5,
                sunset_h=21.0,
                cloud=(1.0, 0.9, 0.4, 1.0, 0.95, 0.25, 0.3, 0.85, 1.0, 0.7, 1.0, 0.9, 0.5, 1.0),
            ),
            temperature=Temperature(mean_c=25.0, swing_c=4.0),
        ),
        Scenario(
            name="winter",
            title="14 winter days without a full charge",
            days=14,
            soc0_pct=85.0,
            seed=12,
            solar=Solar(
                peak_a=12.0,
                sunrise_h=8.5,
                sunset_h=16.5,
                cloud=(0.3, 0.5, 0.2, 0.6, 0.4, 0.15, 0.3, 0.7, 0.5, 0.2, 0.4, 0.6, 0.3, 0.5),
            ),
            generators=tuple(
                Generator(day=d, start_h=h, hours=1.25, current_a=30.0)
                for d, h in ((2, 17.0), (5, 10.0), (7, 17.5), (10, 11.0), (12, 16.0))
            ),
            loads=Loads(
                fridge_duty=0.0,
                evening_a=3.0,
                evening_h=(16.5, 22.5),
                bursts_per_day=0.5,
            ),
            temperature=Temperature(mean_c=12.0, swing_c=3.0),
            goal_max_err_pct=5.0,
            expect_full_charge=False,
        ),
        Scenario(
            name="shore-week",
            title="7 days on shore power with small loads, unplugged once",
            days=7,
            soc0_pct=60.0,
            seed=13,
            shore=Shore(current_a=30.0, unplugged=((3, 9.0, 9.0),)),
            charger=ChargerSpec(rebulk_after_s=60.0, reabsorb_after_s=7 * 86400.0),
            loads=Loads(
                evening_a=2.0,
                morning_a=40.0,
                bursts_per_day=0.3,
            ),
            temperature=Temperature(mean_c=22.0, swing_c=2.0),
        ),
        Scenario(
            name="temp-swing",
            title="10 spring days, battery temperature swinging 5-35 degC",
            days=10,
            soc0_pct=75.0,
            seed=14,
            solar=Solar(
                peak_a=20.0,
                sunrise_h=6.5,
                sunset_h=19.5,
                cloud=(1.0, 0.8, 0.35, 1.0, 0.9, 1.0, 0.45, 0.95, 1.0, 0.6),
            ),
            temperature=Temperature(
                mean_c=19.0, swing_c=13.0, per_day_c=(0, 0, -2, 0, 3, 4, -1, 0, 2, 0)
            ),
        ),
        Scenario(
            name="small-2day",
            title="2 days at 60 s rows: discharge, rest, partial charge, full charge",
            days=2,
            soc0_pct=65.0,
            seed=15,
            sample_s=60.0,
            solar=Solar(peak_a=25.0, sunrise_h=6.0, sunset_h=20.0, cloud=(0.3, 1.0)),
            loads=Loads(off=((0, 1.0, 5.0), (1, 0.5, 4.0))),
            temperature=Temperature(mean_c=22.0, swing_c=3.0),
        ),
    )
}

BENCHMARK = ("solar-summer", "winter", "shore-week", "temp-swing")
