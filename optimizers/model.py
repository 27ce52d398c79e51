"""Assemble the families, solve, and turn the solution into a ``Schedule``.

Charge/discharge exclusivity (mode 'lazy'): solve without binaries; wherever a
unit came out charging and discharging in the same interval, add a binary for
exactly that (unit, interval) and solve again. When a relaxation's optimum has
no simultaneous operation it is feasible for the full binary model, and being a
relaxation its objective is at least the full model's optimum: so it is optimal
(within the MIP gap). Most price series never need a binary at all.

Integer parts (bid blocks, DR commitments, charge-mode binaries) are settled
from the LP relaxation: rounded, then the LP re-solved around them warm, and
branch-and-bound only when that point is not within the MIP gap of the
relaxation's bound (see ``lp.Session``).

Infeasible problems are re-solved with penalized slacks on every row, and the
rows that had to give are reported by family, unit/site and interval.
"""

from __future__ import annotations

import time

import numpy as np

from optimizers.context import Built
from optimizers.demand_response import add_demand_response
from optimizers.lp import LinearModel, Session, Solution, Warm
from optimizers.overrides import add_overrides
from optimizers.problem import Problem
from optimizers.reserves import add_reserves
from optimizers.revenue import objective_offset, schedule_of
from optimizers.sites import add_sites
from optimizers.units import add_exclusivity, add_units
from vpp.errors import SolverError
from vpp.schedule import Schedule, SolverOptions, SolverStats, Violation

SIMULTANEOUS_KW = 1e-6


def build_model(p: Problem, options: SolverOptions, binaries: np.ndarray | None = None) -> Built:
    """The model of FORMULATION.md for ``p``; ``binaries`` (U, T) says where exclusivity binaries go."""
    lm = LinearModel()
    lm.offset = -objective_offset(p)  # the solver's objective is then the schedule's revenue (gaps are of revenue)
    b = add_units(lm, p)
    add_sites(b)
    add_reserves(b)
    add_demand_response(b)
    add_overrides(b)
    mode = options.exclusivity
    mask = np.ones(p.shape, bool) if mode == "binary" else (binaries if binaries is not None else np.zeros(p.shape, bool))
    add_exclusivity(b, mode, mask)
    return b


def optimize(p: Problem, options: SolverOptions = SolverOptions(), warm: Warm | None = None) -> Schedule:
    """The schedule for ``p``: identical units aggregated (``optimizers.aggregate``), then solved
    whole or decomposed as ``options.decomposition`` says (``optimizers.decompose``). ``warm``
    reuses a HiGHS instance and bases across calls (decomposition pieces)."""
    if warm is not None:
        return _monolithic(p, options, warm)
    from optimizers.aggregate import aggregate, disaggregate, identical_groups

    groups = identical_groups(p)
    if len(groups) < len(p.unit_ids):
        return disaggregate(p, groups, optimize(aggregate(p, groups), options))
    if options.decomposition != "off":
        from optimizers.decompose import decomposed, should_decompose

        if should_decompose(p, options):
            return decomposed(p, options)
    return _monolithic(p, options, None)


def _monolithic(p: Problem, options: SolverOptions, warm: Warm | None) -> Schedule:
    t0 = time.perf_counter()
    binaries = np.zeros(p.shape, bool)
    build_s = 0.0
    rounds = 0
    while True:
        tb = time.perf_counter()
        b = build_model(p, options, binaries)
        build_s += time.perf_counter() - tb
        if warm is not None:
            warm.built = b
        session = b.lm.session(max(options.time_limit_s - (time.perf_counter() - t0), 1.0), options.mip_gap, options.threads, warm=warm)
        sol = session.relax()
        if _needs_binaries(b, sol, binaries, options):
            rounds += 1
            continue
        if sol.has_solution and session.has_integers:
            sol = _integer_solution(session, sol)
            if _needs_binaries(b, sol, binaries, options):  # the integer repair re-planned powers
                rounds += 1
                continue
        break
    solve_s = time.perf_counter() - t0 - build_s
    violations: tuple[Violation, ...] = ()
    status = sol.status
    if sol.status == "infeasible":
        tb = time.perf_counter()
        sol = b.lm.solve(max(options.time_limit_s, 10.0), options.mip_gap, options.threads, elastic_penalty=options.infeasibility_penalty_per_kwh)
        solve_s += time.perf_counter() - tb
        if not sol.has_solution:
            raise SolverError(f"the problem is infeasible and the elastic re-solve failed too ({sol.status})")
        violations = _violations(b.lm, sol)
        status = "infeasible_relaxed"
    elif not sol.has_solution:
        raise SolverError(f"no solution: solver status {sol.status} after {solve_s:.1f} s (time limit {options.time_limit_s} s)")
    stats = SolverStats(
        status=status,
        objective=sol.objective,
        mip_gap=sol.mip_gap,
        build_time_s=build_s,
        solve_time_s=solve_s,
        n_variables=b.lm.n_cols,
        n_constraints=b.lm.n_rows,
        n_integer=b.lm.n_integer,
        exclusivity_rounds=rounds,
        exclusivity_binaries=int(binaries.sum()) if options.exclusivity == "lazy" else (int(np.prod(p.shape)) if options.exclusivity == "binary" else 0),
        bound=float(session.bound) if not violations else float("nan"),
    )
    return extract(b, sol.x[: b.lm.n_cols], stats, violations, sol.row_dual)


def _needs_binaries(b: Built, sol: Solution, binaries: np.ndarray, options: SolverOptions) -> bool:
    """Lazy exclusivity: mark (in place) where a unit charges and discharges at once without a binary yet."""
    if options.exclusivity != "lazy" or not sol.has_solution:
        return False
    both = (sol.x[b.ch] > SIMULTANEOUS_KW) & (sol.x[b.dis] > SIMULTANEOUS_KW) & ~binaries
    binaries |= both
    return bool(both.any())


def _integer_solution(session: Session, relaxed: Solution) -> Solution:
    """Round the integers (bids down to whole blocks, 0 below the minimum), re-solve the LP around them
    warm; branch-and-bound, seeded with that point, only if its proven gap is too large."""
    fixed = session.fix(session.rounded(relaxed.x))
    if session.proven(fixed):
        return fixed
    return session.branch(fixed if fixed.has_solution else None)


def _violations(lm: LinearModel, sol: Solution) -> tuple[Violation, ...]:
    n, m = lm.n_cols, lm.n_rows
    slack = sol.x[n : n + m] + sol.x[n + m : n + 2 * m]
    out = []
    for r in np.flatnonzero(slack > 1e-6):
        family, where = lm.locate_row(int(r))
        parts = where[0] if where and isinstance(where[0], tuple) else where  # pair labels carry (id, time)
        stamp = next((w for w in parts if hasattr(w, "isoformat")), None)
        element = ",".join(str(w) for w in parts if not hasattr(w, "isoformat")) or "fleet"
        out.append(Violation(family, element, stamp, float(slack[r])))
    return tuple(out)


def extract(b: Built, x: np.ndarray, stats: SolverStats, violations: tuple[Violation, ...] = (), row_dual: np.ndarray | None = None) -> Schedule:
    p = b.p
    dr_price = {}
    if row_dual is not None and row_dual.size:
        for e in p.events:
            rows = b.rows.get(f"dr_delivery.{e.id}")
            if rows is not None:
                dr_price[e.id] = np.where(rows >= 0, np.abs(row_dual[np.maximum(rows, 0)]), 0.0)
    ch, dis = x[b.ch], x[b.dis]
    soc = np.concatenate([p.soc0_kwh[:, None], x[b.soc]], axis=1)
    reserve = {pid: x[r_ch] + x[r_dis] for pid, (r_ch, r_dis) in b.reserve.items()}
    bids = {pid: q.value(x) for pid, q in b.bids.items()}
    commitments = {eid: float(q.value(x)[0]) for eid, q in b.commitments.items()}
    assert b.imp is not None and b.exp is not None
    return schedule_of(
        p,
        ch,
        dis,
        soc,
        reserve,
        commitments,
        reserve_from_charge_kw={pid: x[r_ch] for pid, (r_ch, _) in b.reserve.items()},
        bids_kw=bids,
        site_net_kw=x[b.exp] - x[b.imp],
        stats=stats,
        violations=violations,
        dr_price_per_kw=dr_price,
    )
