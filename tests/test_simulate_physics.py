"""Fleet battery physics (simulators.physics): hand-worked steps, the window clamp, the BMS taper, outages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simulators.physics import FleetPhysics, outage_mask, random_outages, step


def one(**kw) -> FleetPhysics:
    base = dict(energy_kwh=100.0, max_charge_kw=50.0, max_discharge_kw=50.0, soc_min=0.1, soc_max=0.9, eta_charge=0.9, eta_discharge=0.8, self_discharge_per_h=0.01)
    base.update(kw)
    taper = base.pop("taper_band", 0.0)
    return FleetPhysics(**{k: np.array([v]) for k, v in base.items()}, taper_band=taper)


def test_a_step_charges_and_discharges_by_the_energy_balance():
    r = step(one(), np.array([0.5]), np.array([20.0]), np.array([10.0]), 0.5)
    # 50 kWh, lose 1 %/h for 0.5 h (0.25 kWh), + 0.9·20·0.5 − 10·0.5/0.8
    assert r.self_discharge_kwh[0] == pytest.approx(0.25)
    assert r.soc[0] * 100 == pytest.approx(50 - 0.25 + 9.0 - 6.25)


def test_the_window_clamp_cuts_charging_at_full_and_discharging_at_empty():
    full = step(one(self_discharge_per_h=0.0), np.array([0.88]), np.array([50.0]), np.array([0.0]), 1.0)
    assert full.soc[0] == pytest.approx(0.9) and full.charge_kw[0] == pytest.approx(2.0 / 0.9)
    empty = step(one(self_discharge_per_h=0.0), np.array([0.12]), np.array([0.0]), np.array([50.0]), 1.0)
    assert empty.soc[0] == pytest.approx(0.1) and empty.discharge_kw[0] == pytest.approx(2.0 * 0.8)


def test_the_bms_tapers_power_near_the_edges_and_a_zero_factor_stops_the_unit():
    phys = one(taper_band=0.1)
    ch, dis = phys.bms_limits(np.array([0.85]))  # halfway into the top band: 0.2 + 0.8·0.5 of the rating
    assert ch[0] == pytest.approx(50 * 0.6) and dis[0] == pytest.approx(50.0)
    ch, dis = phys.bms_limits(np.array([0.1]))
    assert dis[0] == pytest.approx(50 * 0.2) and ch[0] == pytest.approx(50.0)
    out = step(one(), np.array([0.5]), np.array([20.0]), np.array([0.0]), 1.0, factor=np.array([0.0]))
    assert out.charge_kw[0] == 0.0 and out.soc[0] == pytest.approx(0.5 * 0.99)


def test_random_outages_are_a_function_of_the_seed_and_cover_their_intervals():
    start = pd.Timestamp("2020-01-01", tz="UTC")
    end = start + pd.Timedelta(days=60)
    a = random_outages(("u1", "u2"), start, end, 50.0, 12.0, seed=5)
    assert a == random_outages(("u1", "u2"), start, end, 50.0, 12.0, seed=5)
    assert a != random_outages(("u1", "u2"), start, end, 50.0, 12.0, seed=6)
    index = pd.date_range(start, end, freq="1h", inclusive="left")
    mask = outage_mask(a, ("u1", "u2"), index, pd.Timedelta(hours=1))
    for o in a:
        row = mask[("u1", "u2").index(o.unit_id)]
        inside = (index + pd.Timedelta(hours=1) > o.start) & (index < o.end)
        assert row[inside].all()
