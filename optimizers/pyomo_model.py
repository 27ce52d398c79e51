"""The co-optimization as a Pyomo model, written from docs/formulation.md item by item.

Why a second formulation: the fast builder (``optimizers.model``) assembles sparse matrices, which is
what makes 1,000-unit plans take seconds, but nobody can read or extend a matrix. This model names
every component after the formulation (``m.charge_kw[u, t]``, ``m.soc_balance[u, t]``, ...), so it is
the reference the fast builder is tested against (same optimum on random fleets), what
``vpp optimize --backend pyomo`` solves, and what ``--export`` writes (LP, MPS or NL).

Sign convention: + discharge / export. Time index ``t`` is the interval's position; the SoC variable
holds the SoC at the *end* of each interval (the start of interval 0 is the initial SoC).
The fleet bid rule "0, or at least the minimum, in whole increments" is a block count with an on/off
binary here (the fast builder uses HiGHS' semi-integer column; the feasible sets are the same).
Exclusivity is a binary on every (unit, interval) unless ``exclusivity`` says ``hull`` or ``relaxed``
(the fast builder's lazy mode adds the same binaries only where needed, with the same optimum).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyomo.environ as pyo

from optimizers.problem import Problem
from optimizers.revenue import objective_offset, schedule_of
from vpp.schedule import Schedule, SolverOptions, SolverStats

Exclusivity = Literal["binary", "hull", "relaxed"]


def build_pyomo(p: Problem, exclusivity: Exclusivity = "binary") -> pyo.ConcreteModel:
    """The model of docs/formulation.md for ``p``, one function per family below."""
    m = pyo.ConcreteModel(name="vpp co-optimization")
    U, T = p.shape
    m.U = pyo.Set(initialize=list(p.unit_ids), ordered=True)
    m.S = pyo.Set(initialize=list(p.site_ids), ordered=True)
    m.T = pyo.RangeSet(0, T - 1)
    m.K = pyo.Set(initialize=[k.id for k in p.products], ordered=True)
    m.terms = []  # objective terms, each family adds its own (currency over the horizon)
    m._p = p
    m._u = {uid: i for i, uid in enumerate(p.unit_ids)}
    m._s = {sid: i for i, sid in enumerate(p.site_ids)}
    _allocations(m, p)
    _units(m, p)
    _reserves(m, p)
    _sites(m, p)
    _bids(m, p)
    _demand_response(m, p)
    _overrides(m, p)
    _exclusivity(m, p, exclusivity)
    m.revenue = pyo.Objective(expr=sum(m.terms) - objective_offset(p), sense=pyo.maximize)
    del m.terms
    return m


def _units(m: pyo.ConcreteModel, p: Problem) -> None:
    """Items 1, 3-6: power bounds, energy balance, SoC window, terminal, cycles; energy and degradation."""
    iu, dt = m._u, p.dt_h
    way = p.direction if p.direction is not None else np.zeros(p.shape)
    m.charge_kw = pyo.Var(m.U, m.T, bounds=lambda m, u, t: (0.0, 0.0 if way[iu[u], t] > 0 else float(p.p_ch_max[iu[u], t])))
    m.discharge_kw = pyo.Var(m.U, m.T, bounds=lambda m, u, t: (0.0, 0.0 if way[iu[u], t] < 0 else float(p.p_dis_max[iu[u], t])))
    m.soc_kwh = pyo.Var(m.U, m.T)  # at the end of interval t

    def soc_start(m, u, t):
        return float(p.soc0_kwh[iu[u]]) if t == 0 else m.soc_kwh[u, t - 1]

    m.soc_start = soc_start
    m.soc_min = pyo.Constraint(m.U, m.T, rule=lambda m, u, t: m.soc_kwh[u, t] - _reserve_energy(m, u, t, up=True) >= float(p.soc_min_kwh[iu[u], t]))
    m.soc_max = pyo.Constraint(m.U, m.T, rule=lambda m, u, t: m.soc_kwh[u, t] + _reserve_energy(m, u, t, up=False) <= float(p.soc_max_kwh[iu[u], t]))

    def balance(m, u, t):
        i = iu[u]
        keep = 1.0 - float(p.sigma_per_h[i]) * dt
        flow = (float(p.eta_ch[i]) * m.charge_kw[u, t] - m.discharge_kw[u, t] / float(p.eta_dis[i])) * dt
        return m.soc_kwh[u, t] == keep * soc_start(m, u, t) + flow + _deployment_energy(m, u, t)

    m.soc_balance = pyo.Constraint(m.U, m.T, rule=balance)
    floor = [u for u in m.U if np.isfinite(p.terminal_kwh[iu[u]])]
    last = len(p.index) - 1
    m.terminal_soc = pyo.Constraint(floor, rule=lambda m, u: m.soc_kwh[u, last] >= float(p.terminal_kwh[iu[u]]))
    limited = [u for u in m.U if np.isfinite(p.cycles_per_day[iu[u]])]
    days = len(p.index) * dt / 24.0
    m.cycle_limit = pyo.Constraint(limited, rule=lambda m, u: sum(m.discharge_kw[u, t] for t in m.T) * dt <= float(p.cycles_per_day[iu[u]] * days * p.e_max[iu[u]]))
    price = p.energy_price_per_mwh * dt / 1000.0
    for u in m.U:
        i = iu[u]
        deg = float(p.deg_cost_per_mwh[i]) / 1000.0 * dt
        for t in m.T:
            m.terms.append(-deg * m.discharge_kw[u, t])
            if p.wholesale_unit[i]:
                m.terms.append(float(price[t]) * (m.discharge_kw[u, t] - m.charge_kw[u, t]))
        if p.terminal_value_per_mwh:
            m.terms.append(p.terminal_value_per_mwh / 1000.0 * float(p.eta_dis[i]) * m.soc_kwh[u, last])


def _cells(m, k: int, u: str, t: int):
    """Energy one hour of allocation ``k`` moves in the cells: ηc·rc + rd/ηd."""
    i = m._u[u]
    return float(m._p.eta_ch[i]) * m.reserve_from_charge_kw[k, u, t] + m.reserve_from_discharge_kw[k, u, t] / float(m._p.eta_dis[i])


def _reserve_energy(m, u: str, t: int, up: bool):
    """Σ D·(ηc·rc + rd/ηd) over the up (or down) products: what sustaining them would move."""
    return sum(prod.sustain_h * _cells(m, k, u, t) for k, prod in enumerate(m._p.products) if prod.is_up == up)


def _deployment_energy(m, u: str, t: int):
    """Expected deployed energy in interval t: up drains, down fills (item 3)."""
    return sum((-1.0 if prod.is_up else 1.0) * prod.deployment_fraction * m._p.dt_h * _cells(m, k, u, t) for k, prod in enumerate(m._p.products) if prod.deployment_fraction)


def _allocations(m: pyo.ConcreteModel, p: Problem) -> None:
    """The reserve allocations in split form (item 2's variables; the unit rows already speak of them)."""
    iu = m._u
    m.Kpos = pyo.Set(initialize=list(range(len(p.products))), ordered=True)

    def cap(side):
        def bounds(m, k, u, t):
            prod = p.products[k]
            usable = bool(prod.eligible[iu[u]]) and not bool(prod.blocked[t])
            return (0.0, float(side[iu[u], t]) if usable else 0.0)

        return bounds

    m.reserve_from_charge_kw = pyo.Var(m.Kpos, m.U, m.T, bounds=cap(p.p_ch_max))
    m.reserve_from_discharge_kw = pyo.Var(m.Kpos, m.U, m.T, bounds=cap(p.p_dis_max))
    m.reserve_kw = pyo.Expression(m.Kpos, m.U, m.T, rule=lambda m, k, u, t: m.reserve_from_charge_kw[k, u, t] + m.reserve_from_discharge_kw[k, u, t])


def _reserves(m: pyo.ConcreteModel, p: Problem) -> None:
    """Items 2 and 4 (start of interval): headroom for the allocations, and the energy to sustain them."""
    iu, dt = m._u, p.dt_h
    ks = range(len(p.products))
    up = [k for k in ks if p.products[k].is_up]
    down = [k for k in ks if not p.products[k].is_up]
    if up:
        m.headroom_up_from_charge = pyo.Constraint(m.U, m.T, rule=lambda m, u, t: sum(m.reserve_from_charge_kw[k, u, t] for k in up) <= m.charge_kw[u, t])
        m.headroom_up_from_discharge = pyo.Constraint(m.U, m.T, rule=lambda m, u, t: m.discharge_kw[u, t] + sum(m.reserve_from_discharge_kw[k, u, t] for k in up) <= float(p.p_dis_max[iu[u], t]))
        m.soc_min_with_reserve_start = pyo.Constraint(m.U, m.T, rule=lambda m, u, t: m.soc_start(m, u, t) - _reserve_energy(m, u, t, up=True) >= float(p.soc_min_kwh[iu[u], t]))
    if down:
        m.headroom_down_from_discharge = pyo.Constraint(m.U, m.T, rule=lambda m, u, t: sum(m.reserve_from_discharge_kw[k, u, t] for k in down) <= m.discharge_kw[u, t])
        m.headroom_down_from_charge = pyo.Constraint(m.U, m.T, rule=lambda m, u, t: m.charge_kw[u, t] + sum(m.reserve_from_charge_kw[k, u, t] for k in down) <= float(p.p_ch_max[iu[u], t]))
        m.soc_max_with_reserve_start = pyo.Constraint(m.U, m.T, rule=lambda m, u, t: m.soc_start(m, u, t) + _reserve_energy(m, u, t, up=False) <= float(p.soc_max_kwh[iu[u], t]))
    for k, prod in enumerate(p.products):
        # degradation on the expected deployment of the discharge side: up pays, down saves
        if prod.deployment_fraction:
            sign = -1.0 if prod.is_up else 1.0
            for u in m.U:
                deg = float(p.deg_cost_per_mwh[iu[u]]) / 1000.0 * dt
                if deg:
                    m.terms.extend(sign * prod.deployment_fraction * deg * m.reserve_from_discharge_kw[k, u, t] for t in m.T)


def _members(m, s: str) -> list[str]:
    return [u for u in m.U if m._p.unit_site[m._u[u]] == m._s[s]]


def _sites(m: pyo.ConcreteModel, p: Problem) -> None:
    """Item 7 and the tariff terms: balance, limits, deployment room, retail bill, demand charge."""
    js, dt = m._s, p.dt_h
    m.import_kw = pyo.Var(m.S, m.T, bounds=(0.0, None))
    m.export_kw = pyo.Var(m.S, m.T, bounds=(0.0, None))
    battery = lambda m, s, t: sum(m.discharge_kw[u, t] - m.charge_kw[u, t] for u in _members(m, s))  # noqa: E731
    m.site_balance = pyo.Constraint(m.S, m.T, rule=lambda m, s, t: m.import_kw[s, t] - m.export_kw[s, t] + battery(m, s, t) == float(p.site_net_load_kw[js[s], t]))
    imp_lim = [s for s in m.S if np.isfinite(p.import_limit_kw[js[s]])]
    exp_lim = [s for s in m.S if np.isfinite(p.export_limit_kw[js[s]])]
    m.site_import_limit = pyo.Constraint(imp_lim, m.T, rule=lambda m, s, t: m.import_kw[s, t] <= float(p.import_limit_kw[js[s]]))
    m.site_export_limit = pyo.Constraint(exp_lim, m.T, rule=lambda m, s, t: m.export_kw[s, t] <= float(p.export_limit_kw[js[s]]))
    up = [k for k, prod in enumerate(p.products) if prod.is_up]
    down = [k for k, prod in enumerate(p.products) if not prod.is_up]
    held = lambda m, s, t, ks: sum(m.reserve_kw[k, u, t] for k in ks for u in _members(m, s))  # noqa: E731
    if p.products:
        m.site_export_room_for_reserves = pyo.Constraint(exp_lim, m.T, rule=lambda m, s, t: battery(m, s, t) + held(m, s, t, up) <= float(p.export_limit_kw[js[s]] + p.site_net_load_kw[js[s], t]))
        m.site_import_room_for_reserves = pyo.Constraint(imp_lim, m.T, rule=lambda m, s, t: -battery(m, s, t) + held(m, s, t, down) <= float(p.import_limit_kw[js[s]] - p.site_net_load_kw[js[s], t]))
    for s in m.S:
        j = js[s]
        for t in m.T:
            if p.retail_site[j]:
                m.terms.append(-float(p.tou_price_per_mwh[j, t]) * dt / 1000.0 * m.import_kw[s, t] + float(p.feed_in_per_mwh[j, t]) * dt / 1000.0 * m.export_kw[s, t])
            if p.grid_value_per_kw is not None:
                m.terms.append(float(p.grid_value_per_kw[j, t]) * (m.export_kw[s, t] - m.import_kw[s, t]))
    charged = [s for s in m.S if p.demand_charge_per_kw[js[s]] > 0]
    m.peak_import_kw = pyo.Var(charged, bounds=lambda m, s: (float(p.peak_so_far_kw[js[s]]), None))
    m.peak_import_def = pyo.Constraint(charged, m.T, rule=lambda m, s, t: m.import_kw[s, t] <= m.peak_import_kw[s])
    m.terms.extend(-float(p.demand_charge_per_kw[js[s]]) * m.peak_import_kw[s] for s in charged)


def _blocks(m, name: str, index: list, increment: float, minimum: float, maximum: dict, fixed: dict, mandatory: bool = False):
    """A quantity offered in blocks (item 8's rule, shared by bids and DR commitments): ``q = inc·n``,
    n integer, 0 or at least ⌈min/inc⌉ (an on/off binary), ``fixed`` pinning q where it is decided."""
    unit = increment if increment > 0 else 1.0
    top = {i: (np.floor(maximum[i] / unit + 1e-9) if increment > 0 else maximum[i]) for i in index}
    low = float(np.ceil(minimum / unit - 1e-9)) if increment > 0 else minimum
    domain = pyo.NonNegativeIntegers if increment > 0 else pyo.NonNegativeReals
    n = pyo.Var(index, domain=domain, bounds=lambda m, i: (0.0, float(top[i])))
    setattr(m, f"{name}_blocks", n)
    pinned = [i for i in index if i in fixed and np.isfinite(fixed[i])]
    setattr(m, f"{name}_fixed", pyo.Constraint(pinned, rule=lambda m, i: n[i] == float(fixed[i]) / unit))
    if mandatory:
        setattr(m, f"{name}_minimum", pyo.Constraint(index, rule=lambda m, i: n[i] >= low))
    elif minimum > 0:
        on = pyo.Var(index, domain=pyo.Binary)
        setattr(m, f"{name}_on", on)
        setattr(m, f"{name}_at_least_minimum", pyo.Constraint(index, rule=lambda m, i: n[i] >= low * on[i]))
        setattr(m, f"{name}_only_when_on", pyo.Constraint(index, rule=lambda m, i: n[i] <= (top[i] if top[i] >= low else 0.0) * on[i]))
    return {i: unit * n[i] for i in index}


def _bids(m: pyo.ConcreteModel, p: Problem) -> None:
    """Item 8 and the reserve terms: fleet bid per product and interval = Σ allocations, in blocks."""
    dt = p.dt_h
    m.bid_kw = pyo.Expression(m.Kpos, m.T, rule=lambda m, k, t: sum(m.reserve_kw[k, u, t] for u in m.U))
    ts = list(range(len(p.index)))
    for k, prod in enumerate(p.products):
        value = prod.value_per_mw_h * dt / 1000.0 - (-1.0 if prod.is_up else 1.0) * prod.deployment_fraction * p.energy_price_per_mwh * dt / 1000.0
        m.terms.extend(float(value[t]) * m.bid_kw[k, t] for t in ts)
        free = prod.min_kw <= 0 and prod.increment_kw <= 0 and not np.isfinite(prod.fixed_kw).any()
        if free:
            continue
        usable = prod.eligible[:, None] & ~prod.blocked[None, :]
        most = np.where(prod.blocked, 0.0, (np.where(usable, p.p_ch_max, 0.0) + np.where(usable, p.p_dis_max, 0.0)).sum(axis=0))
        q = _blocks(m, f"bid_{prod.id}", ts, prod.increment_kw, prod.min_kw, dict(enumerate(most)), dict(enumerate(prod.fixed_kw)))
        setattr(m, f"bid_equals_allocations_{prod.id}", pyo.Constraint(ts, rule=lambda m, t, k=k, q=q: m.bid_kw[k, t] == q[t]))


def _demand_response(m: pyo.ConcreteModel, p: Problem) -> None:
    """Item 9: a committed reduction of the member sites' net import below their baseline."""
    m.E = pyo.Set(initialize=[e.id for e in p.events], ordered=True)
    m.dr_commit_kw = pyo.Var(m.E, bounds=(0.0, 0.0))  # replaced by a block quantity where the event is live
    m.dr_delivery = pyo.ConstraintList()
    m._commitments = {}
    for e in p.events:
        t = np.flatnonzero(e.active)
        if t.size == 0 or not e.sites.any():
            continue
        units = e.sites[p.unit_site]
        most = float((p.p_dis_max[units][:, t].min(axis=1) + p.p_ch_max[units][:, t].min(axis=1)).sum()) if units.any() else 0.0
        c = _blocks(m, f"dr_{e.id}", [0], e.increment_kw, e.min_kw, {0: min(most, e.max_kw)}, {}, mandatory=e.mandatory)[0]
        m.dr_commit_kw[e.id].setub(None)
        m.dr_delivery.add(m.dr_commit_kw[e.id] == c)
        sites = [sid for j, sid in enumerate(p.site_ids) if e.sites[j]]
        for i in t:
            m.dr_delivery.add(sum(m.export_kw[s, int(i)] - m.import_kw[s, int(i)] for s in sites) - m.dr_commit_kw[e.id] >= -float(e.baseline_kw[i]))
        m.terms.append(e.value_per_kw * m.dr_commit_kw[e.id])


def _overrides(m: pyo.ConcreteModel, p: Problem) -> None:
    """Item 10: forced unit or site power, fleet export/import caps."""
    u, t = np.nonzero(np.isfinite(p.forced_unit_kw))
    pairs = [(p.unit_ids[i], int(j)) for i, j in zip(u, t)]
    m.override_unit_power = pyo.Constraint(pairs, rule=lambda m, uid, j: m.discharge_kw[uid, j] - m.charge_kw[uid, j] == float(p.forced_unit_kw[m._u[uid], j]))
    s, t = np.nonzero(np.isfinite(p.forced_site_kw))
    pairs = [(p.site_ids[i], int(j)) for i, j in zip(s, t)]
    m.override_site_power = pyo.Constraint(pairs, rule=lambda m, sid, j: sum(m.discharge_kw[x, j] - m.charge_kw[x, j] for x in _members(m, sid)) == float(p.forced_site_kw[m._s[sid], j]))
    for name, var, cap in (("override_fleet_export_cap", m.export_kw, p.fleet_export_cap_kw), ("override_fleet_import_cap", m.import_kw, p.fleet_import_cap_kw)):
        ts = [int(j) for j in np.flatnonzero(np.isfinite(cap))]
        setattr(m, name, pyo.Constraint(ts, rule=lambda m, j, var=var, cap=cap: sum(var[x, j] for x in m.S) <= float(cap[j])))


def _exclusivity(m: pyo.ConcreteModel, p: Problem, mode: Exclusivity) -> None:
    """Item 1: a unit never charges and discharges in the same interval."""
    iu = m._u
    if mode == "relaxed":
        return
    if mode == "hull":
        ok = lambda m, u, t: p.p_ch_max[iu[u], t] > 0 and p.p_dis_max[iu[u], t] > 0  # noqa: E731
        m.exclusivity_hull = pyo.Constraint(m.U, m.T, rule=lambda m, u, t: m.charge_kw[u, t] / float(p.p_ch_max[iu[u], t]) + m.discharge_kw[u, t] / float(p.p_dis_max[iu[u], t]) <= 1.0 if ok(m, u, t) else pyo.Constraint.Skip)
        return
    m.charging_mode = pyo.Var(m.U, m.T, domain=pyo.Binary)
    m.charge_if_mode = pyo.Constraint(m.U, m.T, rule=lambda m, u, t: m.charge_kw[u, t] <= float(p.p_ch_max[iu[u], t]) * m.charging_mode[u, t])
    m.discharge_if_not_mode = pyo.Constraint(m.U, m.T, rule=lambda m, u, t: m.discharge_kw[u, t] <= float(p.p_dis_max[iu[u], t]) * (1 - m.charging_mode[u, t]))


def solve_pyomo(p: Problem, options: SolverOptions = SolverOptions()) -> Schedule:
    """Build and solve with Pyomo's HiGHS interface; the schedule's revenue is computed from the plan,
    as every solve path does (``schedule_of``)."""
    import time

    t0 = time.perf_counter()
    exclusivity: Exclusivity = options.exclusivity if options.exclusivity in ("hull", "relaxed") else "binary"  # type: ignore[assignment]
    m = build_pyomo(p, exclusivity)
    built = time.perf_counter()
    from pyomo.contrib.appsi.solvers import Highs

    solver = Highs()
    solver.config.time_limit = options.time_limit_s
    solver.config.mip_gap = options.mip_gap
    solver.config.stream_solver = False
    solver.config.load_solution = False
    res = solver.solve(m)
    if res.best_feasible_objective is None:
        from vpp.errors import SolverError

        raise SolverError(f"pyomo/HiGHS found no solution ({res.termination_condition})")
    res.solution_loader.load_vars()
    solved = time.perf_counter()
    return _schedule(m, p, SolverStats(
        status="optimal" if str(res.termination_condition).endswith("optimal") else "feasible",
        objective=float(res.best_feasible_objective),
        mip_gap=_gap(res),
        build_time_s=built - t0,
        solve_time_s=solved - built,
        n_variables=m.nvariables(),
        n_constraints=m.nconstraints(),
        n_integer=sum(1 for v in m.component_data_objects(pyo.Var) if v.is_integer() or v.is_binary()),
        bound=float(res.best_objective_bound) if res.best_objective_bound is not None else float("nan"),
    ))


def _gap(res) -> float:
    best, bound = res.best_feasible_objective, res.best_objective_bound
    if best is None or bound is None or not np.isfinite(bound):
        return float("nan")
    return max((bound - best) / max(abs(bound), 1.0), 0.0)


def _schedule(m: pyo.ConcreteModel, p: Problem, stats: SolverStats) -> Schedule:
    U, T = p.shape
    val = lambda v: 0.0 if v.value is None else float(v.value)  # noqa: E731
    grid = lambda var: np.array([[val(var[u, t]) for t in range(T)] for u in p.unit_ids])  # noqa: E731
    ch, dis, soc_end = grid(m.charge_kw), grid(m.discharge_kw), grid(m.soc_kwh)
    soc = np.concatenate([p.soc0_kwh[:, None], soc_end], axis=1)
    r_ch = {prod.id: np.array([[val(m.reserve_from_charge_kw[k, u, t]) for t in range(T)] for u in p.unit_ids]) for k, prod in enumerate(p.products)}
    r_dis = {prod.id: np.array([[val(m.reserve_from_discharge_kw[k, u, t]) for t in range(T)] for u in p.unit_ids]) for k, prod in enumerate(p.products)}
    reserve = {pid: r_ch[pid] + r_dis[pid] for pid in r_ch}
    site = lambda var: np.array([[val(var[s, t]) for t in range(T)] for s in p.site_ids])  # noqa: E731
    commitments = {e.id: val(m.dr_commit_kw[e.id]) for e in p.events}
    return schedule_of(
        p, ch, dis, soc, reserve, commitments,
        reserve_from_charge_kw=r_ch,
        bids_kw={pid: r.sum(axis=0) for pid, r in reserve.items()},
        site_net_kw=site(m.export_kw) - site(m.import_kw),
        stats=stats,
    )
