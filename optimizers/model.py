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

Anytime: a solve returns the best schedule found when its time limit ends, never an
error while one exists. Below the decomposition's size a fleet with block rules is first
solved decomposed (about a second, a feasible plan by construction); the whole model then
starts from those integers and branch-and-bound only ever improves on them, so a longer
limit never returns less. Where nothing was found at all the fleet holds still (``idle``).

Infeasible problems are re-solved with penalized slacks on every row, and the
rows that had to give are reported by family, unit/site and interval.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from optimizers.context import Built
from optimizers.demand_response import add_demand_response
from optimizers.lp import ABS_GAP, LinearModel, Session, Solution, Warm
from optimizers.overrides import add_overrides
from optimizers.problem import Problem
from optimizers.quantity import Quantity
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
    if p.extension_rows:
        from optimizers.extensions import add_rows, rows_for

        add_rows(b, rows_for(p, p.extension_rows))
    return b


def optimize(p: Problem, options: SolverOptions = SolverOptions(), warm: Warm | None = None) -> Schedule:
    """The schedule for ``p``: identical units aggregated (``optimizers.aggregate``), then solved
    whole or decomposed as ``options.decomposition`` says (``optimizers.decompose``). ``warm``
    reuses a HiGHS instance and bases across calls (decomposition pieces)."""
    if warm is not None:
        return _monolithic(p, options, warm)
    from optimizers.aggregate import aggregate, disaggregate, identical_groups

    if options.extensions and not p.extension_rows:
        from optimizers.extensions import compile_rows

        p = replace(p, extension_rows=compile_rows(p, options.extensions))
    groups = identical_groups(p)
    if p.extension_rows:  # a unit a rule names is never merged into another (the rule speaks of it alone)
        from optimizers.extensions import named_units

        named = {i for i, u in enumerate(p.unit_ids) if u in named_units(p.extension_rows)}
        groups = [part for g in groups for part in ([np.array([i]) for i in g if i in named] + ([g[~np.isin(g, list(named))]] if (~np.isin(g, list(named))).any() else []))]
    if len(groups) < len(p.unit_ids):
        return disaggregate(p, groups, optimize(aggregate(p, groups), options))
    if options.decomposition != "off":
        from optimizers.decompose import decomposed, should_decompose, supported

        if should_decompose(p, options):
            return decomposed(p, options)
        if options.decomposition == "auto" and len(p.unit_ids) >= SEED_MIN_UNITS and _has_blocks(p) and supported(p):
            return _seeded(p, options)
    return _monolithic(p, options, None)


SEED_MIN_UNITS = 2  # one unit: the whole model is as fast as one decomposition piece
SEED_MIN_LEFT_S = 0.2  # less than this left after the decomposed plan: it stands


def _has_blocks(p: Problem) -> bool:
    """Bid or commitment rules that make the model a MIP (its relaxation rounded may lose to them)."""
    return any(x.min_kw > 0 or x.increment_kw > 0 for x in (*p.products, *p.events))


def _seeded(p: Problem, options: SolverOptions) -> Schedule:
    """The decomposed plan first, then the whole model from its integers for the time that is left.

    Why both: decomposed, a 2-39-unit fleet gets a feasible plan in about a second but loses 1-2 %
    to rounding each piece's bids; whole, its relaxation alone can outlast a short limit, and its
    branch-and-bound closes that loss only with time. Started from the decomposed integers the
    whole model can only improve on them, and returns them if it cannot.
    """
    from optimizers.decompose import decomposed

    t0 = time.perf_counter()
    try:
        seed = decomposed(p, replace(options, decomposition="on"))
    except SolverError:
        seed = None
    if seed is not None and (seed.stats.pieces == 0 or seed.stats.status == "optimal"):
        return seed  # solved whole already (the decomposition fell back to it), or proven good enough
    return _monolithic(p, replace(options, time_limit_s=options.time_limit_s - (time.perf_counter() - t0)), None, seed)


def _monolithic(p: Problem, options: SolverOptions, warm: Warm | None, seed: Schedule | None = None) -> Schedule:
    t0 = time.perf_counter()
    binaries = np.zeros(p.shape, bool)
    build_s = 0.0
    rounds = 0
    best = seed  # the best plan found so far that the full model admits: the answer if time runs out
    carried: Schedule | None = None  # branch-and-bound's last answer where it needed more binaries
    bound = np.inf  # every round's relaxation bounds the full model
    while True:
        tb = time.perf_counter()
        b = build_model(p, options, binaries)
        build_s += time.perf_counter() - tb
        if warm is not None:
            warm.built = b
        left = options.time_limit_s - (time.perf_counter() - t0)
        if best is not None and left < SEED_MIN_LEFT_S:
            return _restated(best, bound, options)
        session = b.lm.session(left if best is not None else max(left, 1.0), options.mip_gap, options.threads, warm=warm)
        if best is not None:
            session.floor_s = 0.05
        relax_started = time.perf_counter()
        sol = session.relax()
        relax_s = time.perf_counter() - relax_started
        if _needs_binaries(b, sol, binaries, options):
            bound = min(bound, session.bound)
            rounds += 1
            continue
        if sol.has_solution and session.has_integers:
            seeds = [_seed_integers(b, session, sol, x) for x in (carried, best) if x is not None]
            tried = _integer_points(session, sol, seeds)
            for t in tried:  # a point the full model admits stays a plan whatever the next round does
                if t.has_solution and (best is None or t.objective > best.total_revenue + ABS_GAP) and not _simultaneous(b, t, binaries).any():
                    best = extract(b, t.x[: b.lm.n_cols], _stats(b, t, binaries, options, rounds, build_s, time.perf_counter() - t0 - build_s, session.bound), (), t.row_dual)
            # binaries wherever any of those points charged and discharged at once, before branch-and-bound
            # spends the time: a round after it would start with none left
            if sum(_needs_binaries(b, t, binaries, options) for t in tried):
                bound = min(bound, session.bound)
                rounds += 1
                continue
            sol = _best(tried)
            # branch-and-bound's root (presolve, LP, cuts) is not interrupted by HiGHS' time limit: with less
            # time left than a few relaxations take and a plan in hand, it could only overrun the limit
            # (20 units at 5 s: 4.4 s past it; 10 units: 3.8 s)
            worth = (sol is None and best is None) or session.left_s() > 4.0 * relax_s
            if (sol is None or not session.proven(sol)) and worth:
                # time kept for one more round (a relaxation and a few LPs) in case its answer needs binaries
                reserve = min(0.2 * session.remaining_s(), max(1.0, 6.0 * relax_s)) if options.exclusivity == "lazy" else 0.0
                sol = session.branch(sol, reserve_s=reserve)
            if sol is None:  # no point in time, and the decomposed plan in hand: it stands
                sol = Solution("time_limit_no_solution", np.zeros(0), float("nan"), 0.0, 0.0)
            if sol.has_solution and _simultaneous(b, sol, binaries).any():
                # the last incumbent charges and discharges at once; an earlier one may not: the best of
                # those, polished to exact integers, is a plan (so more time never loses what less found)
                for objective, x in sorted(session.improving, key=lambda o: -o[0]):
                    if best is not None and objective <= best.total_revenue + ABS_GAP:
                        break
                    if not _simultaneous(b, Solution("feasible", x, objective, 0.0, 0.0), binaries).any():
                        fixed = session.fix(session.rounded(x))
                        if fixed.has_solution and not _simultaneous(b, fixed, binaries).any() and (best is None or fixed.objective > best.total_revenue + ABS_GAP):
                            best = extract(b, fixed.x[: b.lm.n_cols], _stats(b, fixed, binaries, options, rounds, build_s, time.perf_counter() - t0 - build_s, session.bound), (), fixed.row_dual)
                        break
            if _needs_binaries(b, sol, binaries, options):  # branch-and-bound re-planned powers
                # its bids start the next round: with binaries where it charged and discharged at once,
                # the LP around them is a plan (often as good: 2 units, 7,305 against 7,126 without)
                carried = extract(b, sol.x[: b.lm.n_cols], _stats(b, sol, binaries, options, rounds, build_s, 0.0, session.bound))
                bound = min(bound, session.bound)
                rounds += 1
                continue
        break
    bound = min(bound, session.bound)
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
        if best is not None:
            return _restated(best, bound, options)
        return idle(p, SolverStats("idle", float("nan"), float("nan"), build_s, solve_s, b.lm.n_cols, b.lm.n_rows, b.lm.n_integer, bound=float(bound)))
    stats = replace(_stats(b, sol, binaries, options, rounds, build_s, solve_s, bound if not violations else float("nan")), status=status)
    schedule = extract(b, sol.x[: b.lm.n_cols], stats, violations, sol.row_dual)
    if violations:
        return schedule
    if best is not None and best.total_revenue > schedule.total_revenue + ABS_GAP:
        schedule = best
    return _restated(schedule, bound, options)


def _stats(b: Built, sol: Solution, binaries: np.ndarray, options: SolverOptions, rounds: int, build_s: float, solve_s: float, bound: float) -> SolverStats:
    mode = options.exclusivity
    return SolverStats(
        status=sol.status,
        objective=sol.objective,
        mip_gap=sol.mip_gap,
        build_time_s=build_s,
        solve_time_s=solve_s,
        n_variables=b.lm.n_cols,
        n_constraints=b.lm.n_rows,
        n_integer=b.lm.n_integer,
        exclusivity_rounds=rounds,
        exclusivity_binaries=int(binaries.sum()) if mode == "lazy" else (int(np.prod(b.p.shape)) if mode == "binary" else 0),
        bound=float(bound),
    )


def _restated(schedule: Schedule, bound: float, options: SolverOptions) -> Schedule:
    """``schedule`` as the answer, its gap and status measured against the tightest bound known."""
    st = schedule.stats
    best = min(float(st.bound), float(bound))
    revenue = schedule.total_revenue
    gap = max((best - revenue) / max(abs(best), 1.0), 0.0) if np.isfinite(best) else float(st.mip_gap)
    proven = gap <= options.mip_gap or best - revenue <= ABS_GAP
    status = st.status if st.status == "infeasible_relaxed" else ("optimal" if proven else "feasible")
    return replace(schedule, stats=replace(st, bound=best, mip_gap=gap, status=status))


def _seed_integers(b: Built, session: Session, relaxed: Solution, seed: Schedule) -> np.ndarray:
    """The seed's bid blocks and DR commitments as values of the session's integer columns (the
    charge-mode binaries as the relaxation rounds them: the LP around them re-plans the powers)."""
    values = session.rounded(relaxed.x)
    chosen = [(q, seed.bids_kw[pid]) for pid, q in b.bids.items() if isinstance(q, Quantity)]
    chosen += [(q, np.array([seed.dr_commitment_kw.get(eid, 0.0)])) for eid, q in b.commitments.items()]
    for q, kw in chosen:
        at = np.searchsorted(session.ints, q.cols)
        ok = (at < session.ints.size) & (session.ints[np.minimum(at, session.ints.size - 1)] == q.cols)
        values[at[ok]] = np.round(np.asarray(kw, float)[ok] / q.scale)
    return values


def idle(p: Problem, stats: SolverStats) -> Schedule:
    """The fleet holding still (no power, no bid, no commitment): the last resort when a solve found
    nothing within its time limit. Every unit then stays at 0 W, which its own limits always allow."""
    U, T = p.shape
    zero = np.zeros((U, T))
    keep = (1.0 - p.sigma_per_h * p.dt_h)[:, None] ** np.arange(T + 1)[None, :]
    soc = p.soc0_kwh[:, None] * keep
    return schedule_of(
        p,
        zero,
        zero.copy(),
        soc,
        {prod.id: zero.copy() for prod in p.products},
        {e.id: 0.0 for e in p.events},
        reserve_from_charge_kw={prod.id: zero.copy() for prod in p.products},
        bids_kw={prod.id: np.zeros(T) for prod in p.products},
        site_net_kw=-p.site_net_load_kw,
        stats=stats,
    )


def _needs_binaries(b: Built, sol: Solution, binaries: np.ndarray, options: SolverOptions) -> bool:
    """Lazy exclusivity: mark (in place) where a unit charges and discharges at once without a binary yet."""
    if options.exclusivity != "lazy" or not sol.has_solution:
        return False
    both = _simultaneous(b, sol, binaries)
    binaries |= both
    return bool(both.any())


def _simultaneous(b: Built, sol: Solution, binaries: np.ndarray) -> np.ndarray:
    """(U, T) where the point charges and discharges at once without a binary to forbid it."""
    return (sol.x[b.ch] > SIMULTANEOUS_KW) & (sol.x[b.dis] > SIMULTANEOUS_KW) & ~binaries


def _integer_points(session: Session, relaxed: Solution, seeds: list[np.ndarray]) -> list[Solution]:
    """The LP re-solved around integer values: the relaxation's rounded (bids down to whole blocks, 0
    below the minimum), the ``seeds``, and, while none is within the MIP gap and time is left, the
    relaxation's with its thin minimum bids switched on or off first. Branch-and-bound starts from the
    best of them (the caller)."""
    tried = [session.fix(x) for x in seeds]  # first: where time is short they are the likeliest good plans
    tried.append(session.fix(session.rounded(relaxed.x)))
    for threshold in SWITCH_THRESHOLDS:
        best = _best(tried)
        if (best is not None and session.proven(best)) or session.left_s() <= session.floor_s:
            break
        tried.append(session.fix(session.switched(relaxed.x, threshold)))
    return tried


SWITCH_THRESHOLDS = (0.65, 0.8, 0.5)  # of a bid's minimum (the 2-10-unit bench: these three did best)


def _best(tried: list[Solution]) -> Solution | None:
    found = [t for t in tried if t.has_solution]
    return max(found, key=lambda t: t.objective) if found else None


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
