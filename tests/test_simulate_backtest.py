"""The rolling-horizon backtest (simulators.backtest): plan = settlement under perfect foresight, physics
invariants checked from the recorded traces, determinism, outages, and bad input before any solve."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import simulators.backtest as bt
from optimizers.model import optimize
from optimizers.problem import build_problem
from simulators.backtest import SimulationSettings, run_backtest
from simulators.physics import Outage
from tests.simulate_rig import tiny_config
from vpp.errors import InputError
from vpp.forecasts import ForecastSpec

START = pd.Timestamp("2020-07-03", tz="UTC")


def test_perfect_foresight_over_one_horizon_settles_to_the_single_optimization(tmp_path):
    # no expected deployment: the dispatcher's SoC clamp then lets the plan through unchanged (docs/simulator.md)
    cfg = tiny_config(tmp_path, deployment=0.0)
    end = START + pd.Timedelta(days=3)
    index = pd.date_range(START, end, freq="1h", inclusive="left")
    single = optimize(build_problem(cfg.fleet, cfg.market, index), bt.backtest_solver(cfg))
    plans = []
    real = bt.optimize

    def record(problem, options, **kw):
        plans.append(real(problem, options, **kw))
        return plans[-1]

    period = end - START
    bt.optimize = record
    try:
        r = run_backtest(cfg, START, end, SimulationSettings(every=period, horizon=period, substeps=1))
    finally:
        bt.optimize = real
    assert len(plans) == 1
    assert single.revenue["reg_up"] > 0 and single.revenue["energy"] != 0  # the plan trades both, so the check has teeth
    assert r.net_revenue == pytest.approx(single.total_revenue, rel=1e-6)
    # the backtest's own plan (an equally good one may differ in its powers) is executed and settled exactly
    settled = r.settlement.groupby("stream")["amount"].sum()
    for stream, value in plans[0].revenue.items():
        assert settled.get(stream, 0.0) == pytest.approx(value, rel=1e-9, abs=1e-6), stream
    np.testing.assert_allclose(r.soc_kwh, plans[0].soc_kwh, atol=1e-6)
    np.testing.assert_allclose(r.power_kw, plans[0].power_kw, atol=1e-6)


def test_daily_perfect_foresight_plans_each_day_and_bids_are_fixed_once_committed(tmp_path):
    cfg = tiny_config(tmp_path)
    end = START + pd.Timedelta(days=2)
    seen = []
    real = bt.optimize

    def record(problem, options, **kw):
        seen.append(problem)
        return real(problem, options, **kw)

    bt.optimize = record
    try:
        r = run_backtest(cfg, START, end, SimulationSettings(every=pd.Timedelta(hours=12), horizon=pd.Timedelta(hours=24)))
    finally:
        bt.optimize = real
    assert [p.index[0] for p in seen] == list(pd.date_range(START, end, freq="12h", inclusive="left"))
    # the noon decision re-plans the afternoon with the bids committed at midnight (gate 10:00 the day before) held
    noon = seen[1]
    fixed = noon.products[0].fixed_kw
    assert np.isfinite(fixed[:12]).all()
    np.testing.assert_allclose(fixed[:12], r.bids_kw["reg_up"][12:24], atol=1e-6)


def settings_with_everything(seed: int = 3) -> SimulationSettings:
    return SimulationSettings(
        forecast=ForecastSpec("persistence"),
        seed=seed,
        soc_noise=0.02,
        deployment_noise=0.5,
        taper_band=0.1,
        outage_rate_per_year=200.0,
        outage_mean_h=6.0,
    )


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("noisy"), self_discharge=0.002, deployment=0.3)
    result = run_backtest(cfg, START, START + pd.Timedelta(days=4), settings_with_everything())
    return cfg, result


def test_simulated_soc_never_leaves_its_window(noisy):
    cfg, r = noisy
    assert r.outages and r.reserve_kw["reg_up"].sum() > 0  # outages, noise and deployment all happened
    lo = np.array([u.soc_min * u.energy_kwh for u in cfg.fleet.units])[:, None]
    hi = np.array([u.soc_max * u.energy_kwh for u in cfg.fleet.units])[:, None]
    soc = r.soc_kwh
    # self-discharge alone may take an idle unit below its floor; it never goes above, nor below by more than that loss
    assert (soc <= hi + 1e-9).all()
    lost_since = np.cumsum(r.self_discharge_kwh, axis=1)
    assert (soc[:, 1:] >= lo - lost_since - 1e-9).all()


def test_energy_is_conserved(noisy):
    cfg, r = noisy
    eta_ch = np.array([u.eta_charge for u in cfg.fleet.units])[:, None]
    eta_dis = np.array([u.eta_discharge for u in cfg.fleet.units])[:, None]
    stored = (r.charge_kw * eta_ch - r.discharge_kw / eta_dis) * 1.0  # 1 h intervals
    change = r.soc_kwh[:, 1:] - r.soc_kwh[:, :-1]
    assert r.self_discharge_kwh.sum() > 0
    np.testing.assert_allclose(stored - r.self_discharge_kwh, change, atol=1e-6)
    np.testing.assert_allclose(stored.sum(axis=1) - r.self_discharge_kwh.sum(axis=1), r.soc_kwh[:, -1] - r.soc_kwh[:, 0], atol=1e-6)


def test_same_seed_gives_bit_identical_results_and_another_seed_does_not(noisy, tmp_path):
    cfg, first = noisy
    again = run_backtest(cfg, START, START + pd.Timedelta(days=4), settings_with_everything())
    for name in ("power_kw", "charge_kw", "discharge_kw", "soc_kwh", "commanded_kw"):
        assert np.array_equal(getattr(first, name), getattr(again, name), equal_nan=True), name
    pd.testing.assert_frame_equal(first.settlement, again.settlement, check_exact=True)
    other = run_backtest(cfg, START, START + pd.Timedelta(days=4), settings_with_everything(seed=4))
    assert not np.array_equal(first.soc_kwh, other.soc_kwh)


def test_a_unit_outage_removes_its_revenue_and_no_setpoint_is_sent(tmp_path):
    cfg = tiny_config(tmp_path)
    end = START + pd.Timedelta(days=2)
    normal = run_backtest(cfg, START, end)
    earned = normal.settlement[normal.settlement.unit_id == "a2"]["amount"].abs().sum()
    assert earned > 0
    out_from, out_to = START + pd.Timedelta(hours=5), START + pd.Timedelta(hours=40)
    r = run_backtest(cfg, START, end, SimulationSettings(outages=(Outage("a2", out_from, out_to),)))
    u = r.unit_ids.index("a2")
    during = (r.index >= out_from) & (r.index < out_to)
    assert np.isnan(r.commanded_kw[u, during]).all()
    assert not np.isnan(r.commanded_kw[u, ~during]).any()
    assert (r.charge_kw[u, during] == 0).all() and (r.discharge_kw[u, during] == 0).all()
    s = r.settlement
    settled_out = s[(s.unit_id == "a2") & s.interval_start.between(out_from, out_to, inclusive="left")]
    assert settled_out["amount"].abs().sum() == 0.0
    assert all(h[u, during].sum() == 0 for h in r.reserve_kw.values())


def test_a_price_file_that_does_not_cover_the_period_fails_before_any_solve(tmp_path):
    cfg = tiny_config(tmp_path, days=5)
    calls = []
    real = bt.optimize
    bt.optimize = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        with pytest.raises(InputError, match="coverage of"):
            run_backtest(cfg, START, START + pd.Timedelta(days=5))
    finally:
        bt.optimize = real
    assert calls == []


def test_a_forecast_without_history_fails_before_any_solve_naming_what_is_missing(tmp_path):
    cfg = tiny_config(tmp_path, days=10)
    start = pd.Timestamp("2020-07-04", tz="UTC")  # 3 days of data before it
    with pytest.raises(InputError, match="history for forecast 'last_week'"):
        run_backtest(cfg, start, start + pd.Timedelta(days=2), SimulationSettings(forecast=ForecastSpec("last_week")))
    run_backtest(cfg, start, start + pd.Timedelta(days=1), SimulationSettings(forecast=ForecastSpec("persistence")))  # 1-2 days suffice


def test_a_period_that_is_not_whole_intervals_is_refused(tmp_path):
    cfg = tiny_config(tmp_path)
    with pytest.raises(InputError, match="whole number"):
        run_backtest(cfg, START, START + pd.Timedelta(minutes=90))
