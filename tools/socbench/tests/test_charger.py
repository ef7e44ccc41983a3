"""The charger's stage machine."""

from socbench.plant import Charger, ChargerSpec


def test_bulk_to_absorption_when_the_voltage_limit_is_reached():
    c = Charger(ChargerSpec())
    c.update(60.0, 20.0, 20.0, at_limit=False)
    assert c.stage == Charger.BULK
    assert c.limit_v() == ChargerSpec().absorption_v
    c.update(60.0, 20.0, 18.0, at_limit=True)
    assert c.stage == Charger.ABSORPTION


def test_absorption_ends_after_a_minute_below_the_tail_current():
    c = Charger(ChargerSpec(tail_a=2.0))
    c.update(1.0, 20.0, 20.0, at_limit=True)
    c.update(30.0, 20.0, 1.5, at_limit=True)
    c.update(20.0, 20.0, 2.5, at_limit=True)  # above tail again: the minute restarts
    c.update(40.0, 20.0, 1.5, at_limit=True)
    assert c.stage == Charger.ABSORPTION
    c.update(20.0, 20.0, 1.5, at_limit=True)
    assert c.stage == Charger.FLOAT
    assert c.limit_v() == ChargerSpec().float_v


def test_absorption_ends_after_its_maximum_time():
    c = Charger(ChargerSpec(absorption_max_s=3600.0))
    c.update(1.0, 20.0, 20.0, at_limit=True)
    for _ in range(59):
        c.update(60.0, 20.0, 10.0, at_limit=True)
    assert c.stage == Charger.ABSORPTION
    c.update(60.0, 20.0, 10.0, at_limit=True)
    assert c.stage == Charger.FLOAT


def test_a_dark_hour_restarts_at_bulk_and_light_does_not():
    c = Charger(ChargerSpec(rebulk_after_s=3600.0, absorption_max_s=3600.0))
    c.update(1.0, 20.0, 20.0, at_limit=True)
    c.update(3600.0, 20.0, 10.0, at_limit=True)
    assert c.stage == Charger.FLOAT
    c.update(3000.0, 0.0, 0.0, at_limit=False)
    c.update(60.0, 5.0, 5.0, at_limit=False)
    c.update(3000.0, 0.0, 0.0, at_limit=False)
    assert c.stage == Charger.FLOAT
    c.update(600.0, 0.0, 0.0, at_limit=False)
    assert c.stage == Charger.BULK


def test_repeated_absorption_after_the_float_interval():
    c = Charger(ChargerSpec(reabsorb_after_s=86400.0))
    c.update(1.0, 30.0, 30.0, at_limit=True)
    c.update(7200.0, 30.0, 5.0, at_limit=True)
    assert c.stage == Charger.FLOAT
    c.update(86399.0, 30.0, 0.5, at_limit=True)
    assert c.stage == Charger.FLOAT
    c.update(1.0, 30.0, 0.5, at_limit=True)
    assert c.stage == Charger.BULK
