"""The dispatcher core (vpp.dispatch): the safety invariant on random inputs, and the plain cases by hand.

The invariant is checked against limits computed here independently of the
dispatcher: the SoC after the step from the energy balance itself, site and
fleet flows from the commanded powers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from tests.builders import START, hours, product, unit, wholesale_site
from vpp.dispatch import DispatchFleet, DispatchSettings, dispatch
from vpp.fleet import Derate, Fleet
from vpp.markets import Market, ProductKind
from vpp.overrides import Override, OverrideKind
from vpp.schedule import Schedule, SolverStats
from vpp.telemetry import Telemetry, UnitState

TOL = 1e-6
STEP_S = 4.0


def plan(index, unit_ids, power_kw, soc_kwh, reserve_kw=None) -> Schedule:
    power_kw = np.asarray(power_kw, float)
    n_u, n_t = power_kw.shape
    stats = SolverStats("optimal", 0.0, 0.0, 0.0, 0.0, 0, 0, 0)
    return Schedule(
        index, tuple(unit_ids), ("s1",), np.maximum(-power_kw, 0), np.maximum(power_kw, 0), np.asarray(soc_kwh, float),
        reserve_kw or {}, {k: np.zeros_like(v) for k, v in (reserve_kw or {}).items()}, {}, {}, np.zeros((1, n_t)), {}, {}, stats,
    )


def seen(soc: float, uid: str = "u1", age_s: float = 1.0, state: UnitState = UnitState.OK, **kw) -> Telemetry:
    return Telemetry(uid, START + pd.Timedelta(minutes=30) - pd.Timedelta(seconds=age_s), soc=soc, state=state, **kw)


NOW = START + pd.Timedelta(minutes=30)


def one_unit(**kw):
    return DispatchFleet.of(Fleet((wholesale_site(),), (unit(**kw),)))


def test_on_plan_the_schedule_passes_unchanged():
    fl = one_unit()
    # 200 kWh unit planned to discharge 60 kW over hour 0: SoC 100 -> 100 - 60/0.95 kWh
    end = 100 - 60 / 0.95
    sched = plan(hours(1), ["u1"], [[60.0]], [[100.0, end]])
    r = dispatch(fl, NOW, sched, {"u1": seen((100 + end) / 2 / 200)}, step_s=STEP_S)
    assert r.interval == START
    assert r.power_kw[0] == 60.0 and r.reasons == ("",)


def test_soc_feedback_discharges_more_when_above_plan():
    fl = one_unit()
    sched = plan(hours(1), ["u1"], [[60.0]], [[100.0, 100.0]])
    r = dispatch(fl, NOW, sched, {"u1": seen(0.6)}, step_s=STEP_S, settings=DispatchSettings(soc_feedback_gain=0.5))
    # 20 kWh above plan, half of it corrected over the 1 h interval
    assert abs(r.power_kw[0] - 70.0) < 1e-9


def test_feedback_keeps_the_scheduled_reserve_headroom():
    idx = hours(1)
    mkt = Market("USD", None, (product("reg_up", ProductKind.REGULATION_UP, [10.0], idx),))
    fl = DispatchFleet.of(Fleet((wholesale_site(),), (unit(),)), mkt)
    sched = plan(idx, ["u1"], [[60.0]], [[100.0, 100.0]], {"reg_up": np.array([[30.0]])})
    r = dispatch(fl, NOW, sched, {"u1": seen(0.85)}, step_s=STEP_S)
    assert abs(r.power_kw[0] - 70.0) < 1e-9  # 100 kW rating - 30 kW held for reg up


def test_no_schedule_covering_now_idles_at_zero():
    fl = one_unit()
    sched = plan(hours(1), ["u1"], [[60.0]], [[100.0, 40.0]])
    later = START + pd.Timedelta(hours=2)
    r = dispatch(fl, later, sched, {"u1": Telemetry("u1", later, soc=0.5, state=UnitState.OK)}, step_s=STEP_S)
    assert r.interval is None and r.power_kw[0] == 0.0


def test_stale_missing_faulted_units_get_no_command():
    units = [unit("a"), unit("b"), unit("c"), unit("d")]
    fl = DispatchFleet.of(Fleet((wholesale_site(),), tuple(units)))
    sched = plan(hours(1), ["a", "b", "c", "d"], [[50.0]] * 4, [[100.0, 100.0]] * 4)
    tel = {"a": seen(0.5, "a", age_s=60), "b": None, "c": seen(0.5, "c", state=UnitState.FAULT), "d": seen(0.5, "d")}
    r = dispatch(fl, NOW, sched, tel, step_s=STEP_S, settings=DispatchSettings(stale_after_s=10, soc_feedback_gain=0))
    assert np.isnan(r.power_kw[:3]).all() and r.power_kw[3] == 50.0
    assert [s.unit_id for s in r.setpoints(valid_s=10)] == ["d"]
    assert "stale" in r.reasons[0] and "no telemetry" in r.reasons[1] and "fault" in r.reasons[2]


def test_unit_out_override_commands_zero_and_outage_derate_takes_unit_out():
    out = Override(OverrideKind.UNIT_OUT, START, START + pd.Timedelta(hours=1), "ops", "maintenance", unit_id="a")
    units = [unit("a"), unit("b", derates=(Derate(START, START + pd.Timedelta(hours=1), 0.0),))]
    fl = DispatchFleet.of(Fleet((wholesale_site(),), tuple(units)))
    sched = plan(hours(1), ["a", "b"], [[50.0], [50.0]], [[100.0, 100.0]] * 2)
    r = dispatch(fl, NOW, sched, {"a": seen(0.5, "a"), "b": seen(0.5, "b")}, [out], step_s=STEP_S)
    assert r.power_kw[0] == 0.0 and np.isnan(r.power_kw[1])


def test_site_force_power_is_shared_by_rating_and_site_limit_wins():
    units = [unit("a", max_discharge_kw=100.0), unit("b", max_discharge_kw=300.0, energy_kwh=1000.0)]
    force = Override(OverrideKind.FORCE_POWER, START, START + pd.Timedelta(hours=1), "ops", "test", site_id="s1", value=200.0)
    fl = DispatchFleet.of(Fleet((wholesale_site(),), tuple(units)))
    r = dispatch(fl, NOW, None, {"a": seen(0.5, "a"), "b": seen(0.5, "b")}, [force], step_s=STEP_S)
    assert np.allclose(r.power_kw, [50.0, 150.0])
    fl_lim = DispatchFleet.of(Fleet((wholesale_site(export_limit_kw=80.0),), tuple(units)))
    r = dispatch(fl_lim, NOW, None, {"a": seen(0.5, "a"), "b": seen(0.5, "b")}, [force], step_s=STEP_S)
    # the limit less half the default 0.1 kW setpoint resolution per unit: rounded setpoints still fit
    assert abs(r.power_kw.sum() - (80.0 - 2 * 0.05)) < 1e-9 and "site limit" in r.reasons[0]


def test_an_empty_unit_is_not_discharged():
    fl = one_unit()
    sched = plan(hours(1), ["u1"], [[100.0]], [[20.0, 20.0]])
    r = dispatch(fl, NOW, sched, {"u1": seen(0.1)}, step_s=STEP_S)  # at soc_min
    assert r.power_kw[0] == 0.0 and "unit limit" in r.reasons[0]


# --- the safety invariant on random inputs ------------------------------------------------------

KINDS = [OverrideKind.FORCE_POWER, OverrideKind.UNIT_OUT, OverrideKind.SOC_FLOOR, OverrideKind.SOC_CEILING, OverrideKind.FLEET_EXPORT_CAP, OverrideKind.FLEET_IMPORT_CAP]


@st.composite
def cases(draw):
    n_sites = draw(st.integers(1, 3))
    n_units = draw(st.integers(1, 6))
    num = lambda lo, hi: draw(st.floats(lo, hi, allow_nan=False).map(lambda x: round(x, 3)))  # noqa: E731
    sites = [
        wholesale_site(f"s{k}", import_limit_kw=num(0, 400), export_limit_kw=num(0, 400)) for k in range(n_sites)
    ]
    units, tel = [], {}
    for i in range(n_units):
        soc_min = num(0, 0.4)
        units.append(
            unit(
                f"u{i}", f"s{draw(st.integers(0, n_sites - 1))}", max_charge_kw=num(1, 200), max_discharge_kw=num(1, 200),
                energy_kwh=num(1, 500), soc_min=soc_min, soc_max=num(soc_min + 0.1, 1.0), self_discharge_per_h=num(0, 0.01),
                eta_charge=num(0.8, 1.0), eta_discharge=num(0.8, 1.0),
                derates=((Derate(START, START + pd.Timedelta(hours=1), num(0, 1)),) if draw(st.booleans()) else ()),
            )
        )
        tel[f"u{i}"] = draw(
            st.one_of(
                st.none(),
                st.builds(
                    lambda soc, age, state, rch, rdis: Telemetry(f"u{i}", NOW - pd.Timedelta(seconds=age), soc=soc, state=state, max_charge_kw=rch, max_discharge_kw=rdis),
                    st.floats(0, 1), st.sampled_from([0.0, 1.0, 30.0]), st.sampled_from([UnitState.OK, UnitState.OK, UnitState.FAULT]),
                    st.one_of(st.none(), st.floats(0, 200)), st.one_of(st.none(), st.floats(0, 200)),
                ),
            )
        )
    window = (START, START + pd.Timedelta(hours=1))
    overrides = []
    for kind in draw(st.lists(st.sampled_from(KINDS), max_size=4)):
        target = f"u{draw(st.integers(0, n_units - 1))}"
        value = num(-300, 300) if kind is OverrideKind.FORCE_POWER else num(0, 1) if kind in (OverrideKind.SOC_FLOOR, OverrideKind.SOC_CEILING) else num(0, 500)
        overrides.append(Override(kind, *window, "prop", "test", unit_id=target if kind.value.startswith(("force", "unit", "soc")) else None, value=value))
    power = np.array([[num(-300, 300)] for _ in range(n_units)])
    soc = np.array([[num(0, 500), num(0, 500)] for _ in range(n_units)])
    sched = plan(hours(1), [u.id for u in units], power, soc) if draw(st.booleans()) else None
    base = np.array([num(-300, 300) for _ in range(n_sites)])
    step_s = draw(st.sampled_from([2.0, 60.0, 900.0]))
    return Fleet(tuple(sites), tuple(units)), sched, tel, overrides, base, step_s


@given(cases())
def test_no_command_leaves_unit_soc_site_fleet_or_override_limits(case):
    fleet, sched, tel, overrides, base, step_s = case
    fl = DispatchFleet.of(fleet)
    r = dispatch(fl, NOW, sched, tel, overrides, site_base_kw=base, step_s=step_s, settings=DispatchSettings(stale_after_s=10))
    dt_h = step_s / 3600
    p = r.power_kw
    lo_all = np.zeros(len(p))
    hi_all = np.zeros(len(p))
    for i, u in enumerate(fleet.units):
        t = tel[u.id]
        trusted = t is not None and t.state is UnitState.OK and (NOW - t.timestamp).total_seconds() <= 10
        if not trusted or u.availability(pd.DatetimeIndex([NOW]))[0] == 0:
            assert np.isnan(p[i]), f"{u.id} commanded without trusted telemetry"
            continue
        mine = [o for o in overrides if o.unit_id == u.id]
        if any(o.kind is OverrideKind.UNIT_OUT for o in mine):
            assert p[i] == 0.0
            continue
        factor = u.availability(pd.DatetimeIndex([NOW]))[0]
        hi = min(u.max_discharge_kw * factor, t.max_discharge_kw if t.max_discharge_kw is not None else np.inf)
        lo = -min(u.max_charge_kw * factor, t.max_charge_kw if t.max_charge_kw is not None else np.inf)
        assert lo - TOL <= p[i] <= hi + TOL
        floor = max([u.soc_min] + [o.value for o in mine if o.kind is OverrideKind.SOC_FLOOR])
        ceiling = min([u.soc_max] + [o.value for o in mine if o.kind is OverrideKind.SOC_CEILING])
        kept = t.soc * (1 - u.self_discharge_per_h * dt_h)
        end = kept + (u.eta_charge * max(-p[i], 0) - max(p[i], 0) / u.eta_discharge) * dt_h / u.energy_kwh
        if p[i] > TOL:
            assert end >= floor - TOL, f"{u.id} discharged below its SoC floor"
        if p[i] < -TOL:
            assert end <= ceiling + TOL, f"{u.id} charged above its SoC ceiling"
        # the bounds the dispatcher may push to: the SoC is known only to its resolution, and the dispatcher
        # keeps that margin (architecture decision 14)
        res = max(DispatchSettings().soc_resolution, t.soc_resolution or 0.0)
        hi = min(hi, max(kept - res - floor, 0) * u.energy_kwh * u.eta_discharge / dt_h)
        lo = max(lo, -max(ceiling - kept - res, 0) * u.energy_kwh / (u.eta_charge * dt_h))
        lo_all[i], hi_all[i] = lo, hi
    commanded = np.nan_to_num(p)
    site_of = np.array([int(u.site_id[1:]) for u in fleet.units])
    for k, s in enumerate(fleet.sites):
        net = commanded[site_of == k].sum() - base[k]
        mine = site_of == k
        # the limit holds unless every unit at the site is already pushed to its bound in the right direction
        if net > s.export_limit_kw + TOL:
            assert np.allclose(commanded[mine], lo_all[mine], atol=TOL)
        if net < -s.import_limit_kw - TOL:
            assert np.allclose(commanded[mine], hi_all[mine], atol=TOL)
    nets = np.array([commanded[site_of == k].sum() - base[k] for k in range(len(fleet.sites))])
    for kind, flow, bound in ((OverrideKind.FLEET_EXPORT_CAP, np.maximum(nets, 0), lo_all), (OverrideKind.FLEET_IMPORT_CAP, np.maximum(-nets, 0), hi_all)):
        caps = [o.value for o in overrides if o.kind is kind]
        if caps and flow.sum() > min(caps) + TOL:
            flowing = flow > TOL
            units_there = np.isin(site_of, np.flatnonzero(flowing)) & ~np.isnan(p)
            assert np.allclose(commanded[units_there], bound[units_there], atol=TOL), f"{kind.value} exceeded with room left"
    for o in overrides:
        if o.kind is OverrideKind.FORCE_POWER and o.unit_id is not None:
            i = [u.id for u in fleet.units].index(o.unit_id)
            if not np.isnan(p[i]) and not any(x.kind is OverrideKind.UNIT_OUT and x.unit_id == o.unit_id for x in overrides):
                moved = any(w in r.reasons[i] for w in ("unit limit", "site limit", "fleet cap"))
                last = [x for x in overrides if x.kind is OverrideKind.FORCE_POWER and x.unit_id == o.unit_id][-1]
                assert moved or abs(p[i] - last.value) <= TOL, "force override not honoured and no limit says why"


@given(
    st.lists(st.tuples(st.floats(0.12, 0.88), st.floats(50.0, 400.0)), min_size=1, max_size=6),
    st.floats(-1.0, 1.0),
    st.floats(20.0, 900.0),
)
def test_setpoints_rounded_by_the_device_keep_the_site_limit_and_soc_read_to_its_resolution_keeps_the_floor(units_soc_kw, base_sign, export_limit_kw):
    """The margins of issue 14 item 9: each setpoint as a device with 0.1 kW steps rounds it, and the true SoC
    anywhere within the register's 0.1 % of the reported one, still keep the site and SoC limits."""
    units = [unit(f"u{i}", max_discharge_kw=kw, max_charge_kw=kw, energy_kwh=500.0, soc_min=0.1, soc_max=0.9) for i, (_, kw) in enumerate(units_soc_kw)]
    fl = DispatchFleet.of(Fleet((wholesale_site(export_limit_kw=export_limit_kw, import_limit_kw=export_limit_kw),), tuple(units)))
    sign = 1.0 if base_sign >= 0 else -1.0
    force = Override(OverrideKind.FORCE_POWER, START, START + pd.Timedelta(hours=1), "ops", "test", site_id="s1", value=sign * 5000.0)
    reported = {u.id: seen(round(soc, 3), u.id) for u, (soc, _) in zip(units, units_soc_kw)}
    step_s = 10.0
    r = dispatch(fl, NOW, None, reported, [force], step_s=step_s)
    rounded = np.round(r.power_kw * 10.0) / 10.0  # the device's register: 0.1 kW steps
    assert -export_limit_kw - 1e-9 <= rounded.sum() <= export_limit_kw + 1e-9
    for u, p, (soc, _) in zip(units, r.power_kw, units_soc_kw):
        for true_soc in (round(soc, 3) - 0.001, round(soc, 3) + 0.001):  # anywhere the register's step allows
            end = true_soc * (1 - u.self_discharge_per_h * step_s / 3600) + (u.eta_charge * max(-p, 0) - max(p, 0) / u.eta_discharge) * step_s / 3600 / u.energy_kwh
            assert u.soc_min - 1e-9 <= end or p <= 0
            assert end <= u.soc_max + 1e-9 or p >= 0
