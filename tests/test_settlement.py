"""Settlement (vpp.settlement): hand-worked amounts, and the optimizer's plan settles to its own revenue."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from optimizers.model import optimize
from tests.builders import (
    dr_event,
    flat_tariff,
    hours,
    market,
    problem,
    product,
    unit,
    wholesale_site,
)
from vpp.fleet import Site
from vpp.markets import ProductKind
from vpp.schedule import SolverOptions
from vpp.settlement import settle


def _by_stream(frame: pd.DataFrame) -> dict[str, float]:
    return frame.groupby("stream")["amount"].sum().to_dict()


def test_wholesale_energy_and_degradation_by_hand():
    idx = hours(2)
    p = problem([unit(degradation_cost_per_mwh=20.0)], [wholesale_site()], market([10.0, 50.0], idx), idx)
    f = settle(p, np.array([[-100.0, 80.0]]), np.array([[100.0, 195.0, 110.0]]), {}, {})
    # charge 100 kWh at 10/MWh (pay 1.0), sell 80 kWh at 50/MWh (earn 4.0); wear 80 kWh × 20/MWh
    assert _by_stream(f) == pytest.approx({"energy": 3.0, "degradation": -1.6})
    energy = f[f.stream == "energy"].set_index("interval_start")["amount_minor"]
    assert energy.to_dict() == {idx[0]: -100, idx[1]: 400}


def test_retail_tou_savings_against_the_no_battery_bill_by_hand():
    idx = hours(2)
    tariff = flat_tariff(0.5, peak_per_kwh=1.0, peak_hours=(1.0, 2.0))
    site = Site("s1", "retail", tariff=tariff, load_kw=100.0)
    p = problem([unit()], [site], market([0.0, 0.0], idx), idx)
    f = settle(p, np.array([[-50.0, 50.0]]), np.array([[100.0, 147.5, 94.87]]), {}, {})
    # without battery: 100×0.5 + 100×1.0 = 150; with: 150×0.5 + 50×1.0 = 125
    assert _by_stream(f) == pytest.approx({"tou_savings": 25.0})


def test_capacity_is_paid_on_what_each_unit_held():
    idx = hours(1)
    reg = product("reg_up", ProductKind.REGULATION_UP, [10.0], idx)
    p = problem([unit("a"), unit("b")], [wholesale_site()], market([0.0], idx, [reg]), idx)
    f = settle(p, np.zeros((2, 1)), np.full((2, 2), 100.0), {"reg_up": np.array([[50.0], [0.0]])}, {})
    # 50 kW = 0.05 MW for 1 h at 10 per MW-h; b held nothing (e.g. an outage) and earns nothing
    assert f[["unit_id", "stream", "amount"]].values.tolist() == [["a", "reg_up", pytest.approx(0.5)]]


def test_dr_shortfall_is_penalised_against_the_baseline():
    idx = hours(2)
    site = Site("s1", "retail", tariff=flat_tariff(0.0), load_kw=200.0)
    event = dr_event("e1", idx[1], idx[1] + pd.Timedelta(hours=1), ["s1"], capacity_price_per_kw=2.0, shortfall_penalty_per_mwh=500.0)
    p = problem([unit()], [site], market([0.0, 0.0], idx, events=[event]), idx)
    f = settle(p, np.array([[0.0, 60.0]]), np.array([[100.0, 100.0, 36.8]]), {}, {"e1": 100.0})
    streams = _by_stream(f)
    assert streams["demand_response"] == pytest.approx(200.0)  # 100 kW committed × 2 per kW
    assert streams["demand_response.shortfall"] == pytest.approx(-20.0)  # 40 kW short for 1 h × 500/MWh


def test_minor_units_round_half_to_even_and_zero_rows_are_dropped():
    idx = hours(3)
    p = problem([unit()], [wholesale_site()], market([1.0, 1.0, 1.0], idx), idx)
    f = settle(p, np.array([[5.0, 15.0, 0.0]]), np.full((1, 4), 100.0), {}, {})  # 0.005 and 0.015 currency
    assert f["amount_minor"].tolist() == [0, 2] and len(f) == 2


def test_a_perfect_plan_settles_to_its_own_expected_revenue():
    idx = hours(6)
    prices = [20.0, -5.0, 30.0, 80.0, 10.0, 60.0]
    reg = product("reg_up", ProductKind.REGULATION_UP, [5.0, 2.0, 8.0, 1.0, 6.0, 3.0], idx, deployment_fraction=0.1)
    reg_dn = product("reg_down", ProductKind.REGULATION_DOWN, [4.0, 9.0, 1.0, 2.0, 3.0, 7.0], idx, deployment_fraction=0.1)
    units = [unit("a", degradation_cost_per_mwh=3.0), unit("b", max_discharge_kw=50.0, energy_kwh=400.0)]
    p = problem(units, [wholesale_site()], market(prices, idx, [reg, reg_dn]), idx)
    s = optimize(p, SolverOptions(mip_gap=1e-7))
    f = settle(p, s.power_kw, s.soc_kwh, s.reserve_kw, s.dr_commitment_kw, reserve_from_charge_kw=s.reserve_from_charge_kw)
    planned = {k: v for k, v in s.revenue.items() if v != 0.0 and k != "terminal_value"}
    assert _by_stream(f) == pytest.approx(planned, rel=1e-9, abs=1e-9)
    per_unit = f.groupby("unit_id")["amount"].sum()
    assert per_unit.to_dict() == pytest.approx({u: sum(v[i] for v in s.unit_revenue.values()) for i, u in enumerate(s.unit_ids)})
    assert abs(f["amount_minor"].sum() - 100 * f["amount"].sum()) <= len(f) / 2
