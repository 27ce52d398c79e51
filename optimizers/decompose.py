"""Decomposed co-optimization: small independent pieces, priced and repaired by a master.

Why: the monolithic LP is degenerate and its simplex time grows faster than the
fleet (100 units × 96 intervals: 5.5-12 s relaxation, 1,000 units 613 s; a 4-unit
piece 10-15 ms). The units are coupled only by

* the **fleet bids** — bid = Σ allocations, in blocks with a minimum;
* **DR commitments** — Σ member sites' reduction ≥ commitment in every event interval;
* **sites** — import/export limits, retail tariffs and demand charges (net import is priced);
* fleet export/import caps (overrides).

With continuous bids the first is a mere sum, so the LP relaxation separates. The
method (docs/architecture.md, decision 8, has the measurements):

1. **Price** — a small stand-in fleet (alike units merged) is solved as one LP; its DR
   delivery duals are the Lagrange multipliers λ_t ≥ 0 (Σ_t λ_t ≥ the event's value per kW).
2. **Stage 1 and bound, one pass** — every piece solves its own LP twice: with bids
   continuous at the product prices and its *own* DR commitment (the primal: the pieces'
   commitments add up to a feasible fleet commitment), and with its net export paid λ
   instead (weak duality makes Σ those optima + Σ_t λ_t·(constant part) an upper bound
   on the monolithic MILP — the bound every answer's gap is measured against).
3. **Master** — bids are rounded down to whole increments (0 below the minimum, gate-
   closed bids as submitted); the remainders are taken from as few pieces as possible.
4. **Repair** — those pieces re-solve with their part of each rounded bid pinned; the
   fleet's DR commitment is Σ the pieces' commitments rounded down: exact feasibility of
   the whole, by construction.

Pieces: a site whose limits can bind, or whose net import is priced (retail), is one
piece with all its units. Units at other sites never meet their site's limits, so they
are **detached** and grouped ``piece_size`` at a time, sorted by duration and SoC so
that consecutive pieces are alike and each warm-starts from the last one's basis.

Couplings not handled here (fleet caps, mandatory DR events) fall back to the monolith.
"""

from __future__ import annotations

import pickle
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from optimizers.context import Built
from optimizers.lp import ABS_GAP, Warm
from optimizers.problem import Problem
from optimizers.revenue import schedule_of
from optimizers.sites import pay_net_export
from optimizers.subproblem import detach, restrict
from vpp.errors import SolverError
from vpp.schedule import Schedule, SolverOptions, SolverStats

AUTO_MIN_UNITS = 40  # below this the monolith (with its branch-and-bound) is as fast and tighter
LARGE_FLEET_UNITS = 1000  # from here detached units go 4 to a piece, below 8 (``piece_size``)


@dataclass(frozen=True)
class Piece:
    units: np.ndarray  # positions in the full problem
    site: int | None  # the site the piece is (None: detached units)
    member_of: np.ndarray  # (E,) bool: DR events the piece's site(s) belong to


@dataclass
class _Solved:
    schedule: Schedule | None  # the piece's plan; None for a bound LP (its value is all it reports) or no answer
    net_export_kw: np.ndarray  # (T,) the piece's export − import (detached: its units' net power)
    objective: float  # the solver's objective (NaN: HiGHS returned no usable answer; a repair may retry, other stages fail)
    gap: float = 0.0  # its proven relative MIP gap

    @property
    def bound(self) -> float:
        """An upper bound on the piece's optimum."""
        return self.objective + self.gap * max(abs(self.objective), 1.0)

    @property
    def answered(self) -> bool:
        return not np.isnan(self.objective)


@dataclass(frozen=True)
class _Priced:
    """A piece's bound LP: its stage-1 ``problem`` with the DR delivery rows released, the commitment
    unpaid and its net export paid the multipliers ``lam`` instead (``_priced_solve``)."""

    problem: Problem
    lam: dict[str, np.ndarray]


def should_decompose(p: Problem, options: SolverOptions) -> bool:
    if options.decomposition == "off" or not supported(p):
        return False
    return options.decomposition == "on" or (len(p.unit_ids) >= AUTO_MIN_UNITS and len(pieces_of(p, piece_size(p, options))) > 1)


def piece_size(p: Problem, options: SolverOptions) -> int:
    """Detached units per piece: ``options.piece_units`` if set, else 4 from ``LARGE_FLEET_UNITS``
    units and 8 below. A bigger piece loses less to covering its own DR share in every event
    interval (100-unit bench: 0.088 % below the one model with 8, 0.125 % with 4), but its simplex
    time grows faster than its size (1,000 units: 4.2 s with 8, 2.9 s with 4; docs/architecture.md).
    """
    if options.piece_units is not None:
        return options.piece_units
    return 4 if len(p.unit_ids) >= LARGE_FLEET_UNITS else 8


def supported(p: Problem) -> bool:
    caps = np.isfinite(p.fleet_export_cap_kw).any() or np.isfinite(p.fleet_import_cap_kw).any()
    return not caps and not any(e.mandatory for e in p.events)


def free_sites(p: Problem) -> np.ndarray:
    """(S,) sites whose limits cannot bind whatever their units do, and whose exchange is not priced.

    Battery export plus held up-reserve never exceeds Σ P_dis (and import plus down-reserve
    Σ P_ch), so a wholesale site whose limits leave that much room is no constraint at all.
    """
    n_sites = len(p.site_ids)
    p_dis = np.bincount(p.unit_site, p.p_dis_max.max(axis=1), n_sites)
    p_ch = np.bincount(p.unit_site, p.p_ch_max.max(axis=1), n_sites)
    export_room = p.export_limit_kw + p.site_net_load_kw.min(axis=1)
    import_room = p.import_limit_kw - p.site_net_load_kw.max(axis=1)
    unforced = ~np.isfinite(p.forced_site_kw).any(axis=1)
    return ~p.retail_site & (p_dis <= export_room) & (p_ch <= import_room) & unforced


def pieces_of(p: Problem, piece_units: int) -> list[Piece]:
    membership = np.array([e.sites for e in p.events], dtype=bool).reshape(len(p.events), len(p.site_ids)).T  # (S, E)
    free = free_sites(p)
    pieces = [Piece(np.flatnonzero(p.unit_site == s), int(s), membership[s]) for s in np.flatnonzero(~free) if (p.unit_site == s).any()]
    loose = np.flatnonzero(free[p.unit_site])
    if loose.size:
        keys = membership[p.unit_site[loose]]
        for key in np.unique(keys, axis=0):
            group = loose[(keys == key).all(axis=1)]
            dur = p.e_max[group] / np.maximum(p.p_dis_max[group].max(axis=1), 1e-9)
            group = group[np.lexsort((p.soc0_kwh[group] / p.e_max[group], dur))]
            pieces += [Piece(group[i : i + piece_units], None, key) for i in range(0, group.size, piece_units)]
    return pieces


def decomposed(p: Problem, options: SolverOptions) -> Schedule:
    t0 = time.perf_counter()
    pieces = pieces_of(p, piece_size(p, options))
    with _runner(options) as run:
        return _decomposed(p, pieces, options, run, t0)


def _decomposed(p: Problem, pieces: list[Piece], options: SolverOptions, run: Callable[..., list[_Solved]], t0: float) -> Schedule:
    shares = _baseline_shares(p, pieces)
    stage1 = [_own_dr_problem(p, pc, shares, k) for k, pc in enumerate(pieces)]
    # Each piece's bound LP follows its stage-1 LP on the same lane: the same matrix with DR rows
    # released and prices changed, so HiGHS goes on hot from the stage-1 point (23 primal simplex
    # iterations, against 99 from a passed model and basis). The bound needs the stand-in's prices:
    # this thread solves the stand-in while the lanes start on stage 1, and a lane that reaches a
    # bound LP first waits for it (a Dask lane gets them before its pieces are shipped).
    prices = _Once(lambda: _surrogate_prices(p, pieces, options)) if _dr_members(p, pieces) else None
    problems: list[Problem | _Priced | Callable[[], _Priced | None]] = []
    for k, q in enumerate(stage1):
        problems.append(q)
        if prices is not None:
            problems.append(lambda q=q: None if prices() is None else _Priced(q, prices()))
    per_piece = 2 if prices is not None else 1
    numbers = [k for k in range(len(pieces)) for _ in range(per_piece)]
    answers = run(problems, numbers, ["", "bound"] * len(pieces) if prices is not None else "", wait=False)
    lam = prices() if prices is not None else None
    both = answers()
    solved, relaxed = both[::per_piece], (both[1::per_piece] if lam is not None else None)
    if not all(s.answered for s in solved + (relaxed or [])):
        raise SolverError("decomposition: HiGHS gave no answer for a piece's LP")

    held = {prod.id: np.array([s.schedule.reserve_kw[prod.id].sum(axis=0) for s in solved]) for prod in p.products}  # (K, T)
    bids = {prod.id: _round_bid(prod, held[prod.id].sum(axis=0)) for prod in p.products}
    unplaced = any(((bids[pid] > 1e-9) & (h.sum(axis=0) <= 1e-9)).any() for pid, h in held.items())  # a submitted bid nobody priced in
    targets = _shares(held, bids)
    touched = [k for k in range(len(pieces)) if any(not np.array_equal(held[pid][k], t[k]) for pid, t in targets.items())]
    repaired = list(solved)
    if not unplaced and touched:
        repair = {k: _repair_problem(stage1[k], solved[k], {pid: t[k] for pid, t in targets.items()}) for k in touched}
        again = run([repair[k] for k in touched], touched, "repair")
        # a piece the direction pins leave without an answer tries once more with directions free
        # (exclusivity binaries where it needs them)
        retry = [k for k, s in zip(touched, again) if not _usable(s)]
        again += run([replace(repair[k], direction=None) for k in retry], retry, "repair") if retry else []
        for k, s in zip(touched + retry, again):
            repaired[k] = s
    if unplaced or not all(_usable(repaired[k]) for k in touched):
        # the shares could not be met piece by piece: solve the whole
        from optimizers.model import _monolithic

        return _monolithic(p, replace(options, decomposition="off"), None)
    commitments = _round_commitments(p, repaired)
    schedule = _merge(p, pieces, repaired, bids, commitments)
    first = (lam, relaxed) if lam is not None and relaxed is not None else None
    bound, rounds = _bound(p, pieces, stage1, solved, first, schedule.total_revenue, options, run, deadline=t0 + options.time_limit_s)
    return _with_stats(schedule, repaired, bound, rounds, options, time.perf_counter() - t0)


def _usable(s: _Solved) -> bool:
    return s.answered and s.schedule is not None and not s.schedule.violations


def _dr_members(p: Problem, pieces: list[Piece]) -> list[int]:
    """The pieces that take part in a DR event with an active interval (the only coupling the bound prices)."""
    live = np.array([e.active.any() for e in p.events], dtype=bool)
    return [k for k, pc in enumerate(pieces) if (pc.member_of & live).any()]


def _bound(p: Problem, pieces: list[Piece], stage1: list[Problem], solved: list[_Solved], first: tuple[dict[str, np.ndarray], list[_Solved]] | None, primal: float, options: SolverOptions, run: Callable[..., list[_Solved]], deadline: float) -> tuple[float, int]:
    """An upper bound on the monolithic optimum, and the pricing rounds it took.

    Without DR events the pieces' LP optima with every product interval open add up to the
    fleet's LP relaxation (bids are a mere sum there): exact. With events, the Lagrangian dual
    L(λ) = Σ_k max(f_k + λ·X_k) + λ·(baseline the pieces do not see) bounds it for every λ ≥ 0
    with Σ_t λ_t ≥ value per kW. ``first`` is (λ from the stand-in fleet, every piece's answer to
    it, solved alongside stage 1); that λ is usually within a few ppm of the best. Without a
    stand-in, stage 1 (then unrestricted) gives the no-DR pieces' part and λ starts from the
    pieces' own delivery prices. Further rounds, up to ``bound_rounds`` in all and only while the
    gap exceeds the MIP gap, use column generation (Dantzig-Wolfe): a small master LP over convex
    combinations of the plans the pieces proposed so far prices the delivery rows, and the pieces
    answer with new plans (and a value of L); when the master's prices do not improve the bound,
    a projected subgradient (Polyak) step from the best multipliers instead (measured,
    docs/architecture.md). A fixed count, not a time budget, so the same input always reports
    the same bound.
    """
    members = _dr_members(p, pieces)
    base = first[1] if first is not None else solved
    member_set = set(members)
    others = sum(s.bound for k, s in enumerate(base) if k not in member_set)
    if not members:
        return others, 0
    columns = _Columns(p, pieces, members)
    columns.add(solved, {}, own_dr=True)
    lam, priced = (first[0], [first[1][k] for k in members]) if first is not None else (_own_prices(p, solved), None)
    center, best, rounds = lam, np.inf, 0
    while rounds < options.bound_rounds and time.perf_counter() < deadline:
        if priced is None:
            priced = run([_Priced(stage1[k], lam) for k in members], members, "bound")
        rounds += 1
        value = others + sum(s.bound for s in priced) + _lagrange_constant(p, pieces, lam)
        improved = value < best
        if improved:
            best, center = value, lam
        if (best - primal) <= options.mip_gap * max(abs(best), 1.0) or rounds >= options.bound_rounds:
            break
        columns.add(priced, lam, own_dr=False)
        if improved or rounds == 1:
            # Wentges smoothing: price halfway between the best multipliers so far and the master's,
            # which keeps column generation from oscillating between extreme prices
            master = columns.prices()
            lam = {e: 0.5 * center[e] + 0.5 * master[e] for e in master}
        else:
            # the master's prices did not help: a Polyak subgradient step from where we are instead
            lam = _polyak_step(p, lam, _reduction_slope(p, pieces, members, priced), value - primal)
        priced = None
    return best, rounds


def _reduction_slope(p: Problem, pieces: list[Piece], members: list[int], priced: list[_Solved]) -> dict[str, np.ndarray]:
    """A subgradient of L at the priced point: each event's summed reduction per interval, centred."""
    out = {}
    for j, e in enumerate(p.events):
        reduction = e.baseline_kw - _detached_load(p, pieces, j)
        for k, s in zip(members, priced):
            if pieces[k].member_of[j]:
                reduction = reduction + s.net_export_kw
        mean = reduction[e.active].mean() if e.active.any() else 0.0
        out[e.id] = np.where(e.active, reduction - mean, 0.0)
    return out


def _polyak_step(p: Problem, lam: dict[str, np.ndarray], slope: dict[str, np.ndarray], excess: float) -> dict[str, np.ndarray]:
    """λ moves toward intervals whose reduction fell short (step = excess / |slope|²), back onto Σ_t λ_t = value."""
    norm = sum(float((g**2).sum()) for g in slope.values())
    step = max(excess, 0.0) / norm if norm > 0 else 0.0
    return {e.id: _onto_simplex(lam[e.id] - step * slope[e.id], e.active, e.value_per_kw) for e in p.events}


def _onto_simplex(x: np.ndarray, active: np.ndarray, total: float) -> np.ndarray:
    """Euclidean projection of x[active] onto {y ≥ 0, Σ y = total}; 0 elsewhere."""
    out = np.zeros_like(x)
    if not active.any():
        return out
    a = x[active]
    u = np.sort(a)[::-1]
    cum = np.cumsum(u) - total
    rho = np.flatnonzero(u - cum / np.arange(1, a.size + 1) > 0)[-1]
    out[active] = np.maximum(a - cum[rho] / (rho + 1), 0.0)
    return out


def _own_prices(p: Problem, solved: list[_Solved]) -> dict[str, np.ndarray]:
    """First multipliers: the pieces' own delivery shadow prices, weighted by their commitments
    (uniform over the event if nobody committed), scaled to the event's value per kW."""
    lam = {}
    for e in p.events:
        weight = np.array([s.schedule.dr_commitment_kw.get(e.id, 0.0) for s in solved])
        prices = np.array([s.schedule.dr_price_per_kw.get(e.id, np.zeros(len(p.index))) for s in solved])
        mix = (weight[:, None] * prices).sum(axis=0) / weight.sum() if weight.sum() > 0 else np.zeros(len(p.index))
        mix = np.where(e.active, mix, 0.0)
        if mix.sum() <= 0:
            mix = np.where(e.active, 1.0, 0.0)
        lam[e.id] = mix * e.value_per_kw / max(mix.sum(), 1e-12)
    return lam


SURROGATE_UNITS = 6  # merged units standing in for the detached units of one DR membership
SURROGATE_MAX_UNITS = 64  # a larger stand-in (many site pieces) costs more than it saves: own prices then


def _surrogate_prices(p: Problem, pieces: list[Piece], options: SolverOptions) -> dict[str, np.ndarray] | None:
    """First DR multipliers: the delivery rows' LP duals in a small stand-in fleet.

    The multipliers say when a kW of reduction is worth delivering. That depends on the market and
    on the fleet's mix of durations, efficiencies and states, not on which unit is which, so a
    stand-in that merges each site piece into one unit and the detached
    units into ``SURROGATE_UNITS`` units of alike duration and SoC (``aggregate``) has nearly the
    fleet's multipliers: on the 100-unit bench the Lagrangian at its multipliers is within 4 ppm
    of the fleet's LP relaxation, and it solves in 0.2 s (docs/architecture.md). The bound uses
    only its prices and L(λ) bounds the optimum for any λ, so a poor stand-in costs tightness,
    never validity. None when the stand-in would be large or does not solve.
    """
    from optimizers.aggregate import aggregate
    from optimizers.model import _monolithic

    groups = [pc.units for pc in pieces if pc.site is not None]
    loose: dict[bytes, list[np.ndarray]] = {}
    for pc in pieces:
        if pc.site is None:  # pieces_of keeps each membership's units sorted by duration and SoC
            loose.setdefault(pc.member_of.tobytes(), []).append(pc.units)
    for runs in loose.values():
        units = np.concatenate(runs)
        groups += np.array_split(units, min(SURROGATE_UNITS, units.size))
    if len(groups) > SURROGATE_MAX_UNITS:
        return None
    free = free_sites(p)
    q = aggregate(p, groups)
    q = replace(
        q,
        import_limit_kw=np.where(free, np.inf, q.import_limit_kw),  # merged units may share a site: a free one stays free
        export_limit_kw=np.where(free, np.inf, q.export_limit_kw),
        products=tuple(replace(prod, min_kw=0.0, increment_kw=0.0, fixed_kw=np.full(len(q.index), np.nan)) for prod in q.products),
        events=tuple(replace(e, min_kw=0.0, increment_kw=0.0, mandatory=False) for e in q.events),
    )
    try:
        s = _monolithic(q, replace(options, exclusivity="hull", decomposition="off"), None)
    except SolverError:
        return None
    if s.violations:
        return None
    return {e.id: _at_value(np.where(e.active, s.dr_price_per_kw.get(e.id, np.zeros(len(p.index))), 0.0), e) for e in p.events}


class _Columns:
    """The Dantzig-Wolfe master: the member pieces' plans so far, and the delivery prices they imply."""

    def __init__(self, p: Problem, pieces: list[Piece], members: list[int]) -> None:
        self.p, self.pieces, self.members = p, pieces, members
        self.value: list[float] = []  # plan value without any DR payment
        self.export: list[np.ndarray] = []  # (T,) the plan's net export
        self.owner: list[int] = []  # position in members

    def add(self, solved: list[_Solved], lam: dict[str, np.ndarray], own_dr: bool) -> None:
        for m, k in enumerate(self.members):
            sch = solved[k] if own_dr else solved[m]
            paid = sum(e.value_per_kw * sch.schedule.dr_commitment_kw.get(e.id, 0.0) for e in self.p.events) if own_dr else 0.0
            priced = 0.0 if own_dr else sum(float((lam[e.id] * sch.net_export_kw).sum()) for j, e in enumerate(self.p.events) if self.pieces[k].member_of[j])
            self.value.append(sch.objective - paid - priced)
            self.export.append(sch.net_export_kw)
            self.owner.append(m)

    def prices(self) -> dict[str, np.ndarray]:
        """λ per event and interval: the master LP's shadow prices of the delivery rows."""
        from optimizers.lp import LinearModel

        p = self.p
        lm = LinearModel()
        w = lm.var("weight", (len(self.value),), 0.0, 1.0)
        lm.maximize(np.array(self.value), w)
        owner = np.array(self.owner)
        convex = lm.rows("convexity", (len(self.members),), lb=1.0, ub=1.0)
        lm.add_terms(convex[owner], 1.0, w)
        export = np.array(self.export)  # (columns, T)
        rows_of = {}
        for j, e in enumerate(p.events):
            t = np.flatnonzero(e.active)
            c = lm.var(f"commitment.{e.id}", (1,), 0.0)
            lm.maximize(e.value_per_kw, c)
            const = (e.baseline_kw - _detached_load(p, self.pieces, j))[t]
            rows = lm.rows(f"delivery.{e.id}", (t.size,), ub=const)
            lm.add_terms(rows, 1.0, np.broadcast_to(c, rows.shape))
            member_cols = np.flatnonzero([self.pieces[self.members[o]].member_of[j] for o in self.owner])
            lm.add_terms(rows[:, None], -export[member_cols][:, t].T, w[member_cols][None, :])
            rows_of[e.id] = (t, rows)
        sol = lm.session(60.0, 1e-9).relax()
        lam = {}
        for e in p.events:
            t, rows = rows_of[e.id]
            price = np.zeros(len(p.index))
            if sol.row_dual.size:
                price[t] = np.abs(sol.row_dual[rows])
            lam[e.id] = _at_value(price, e)
        return lam


def _at_value(price: np.ndarray, e) -> np.ndarray:
    """λ must price a kW at least at the event's value (else C is unbounded): top up evenly if short."""
    short = e.value_per_kw - price[e.active].sum()
    return price + np.where(e.active, short / max(int(e.active.sum()), 1), 0.0) if short > 0 else price


# ---------------------------------------------------------------- stage problems


def _piece_problem(p: Problem, pc: Piece) -> Problem:
    return restrict(p, np.array([pc.site])) if pc.site is not None else detach(p, pc.units, pc.member_of)


def _baseline_shares(p: Problem, pieces: list[Piece]) -> list[np.ndarray]:
    """(K, T) per event: the part of the event's baseline each piece is measured against.

    A site piece sees its own net load, so its share is that load; a baseline above the member
    sites' summed load (a fixed baseline) is free reduction, shared by the pieces' power.
    """
    out = []
    for j, e in enumerate(p.events):
        share = np.zeros((len(pieces), len(p.index)))
        members = np.array([pc.member_of[j] for pc in pieces], dtype=bool)
        extra = e.baseline_kw - p.site_net_load_kw[e.sites].sum(axis=0)
        power = np.array([p.p_dis_max[pc.units].max(axis=1).sum() + p.p_ch_max[pc.units].max(axis=1).sum() for pc in pieces]) * members
        if power.sum() > 0:
            share += (power / power.sum())[:, None] * extra[None, :]
        for k, pc in enumerate(pieces):
            if members[k] and pc.site is not None:
                share[k] += p.site_net_load_kw[pc.site]
        out.append(share)
    return out


def _own_dr_problem(p: Problem, pc: Piece, shares: list[np.ndarray], k: int) -> Problem:
    """Stage 1: bids free and continuous; each DR event the piece is in, committed by the piece alone.

    The piece's commitment is paid the event's value, so Σ commitments is a feasible fleet
    commitment (every piece covers its own in every interval). The rows that later stages pin or
    price are all here already, so those stages change bounds and costs only and restart from this
    stage's basis.
    """
    q = _piece_problem(p, pc)
    events = tuple(
        replace(e_q, baseline_kw=shares[j][k], min_kw=0.0, increment_kw=0.0, mandatory=False)
        for j, e_q in enumerate(q.events)
        if pc.member_of[j] and e_q.active.any()
    )
    products = tuple(replace(prod, min_kw=0.0, increment_kw=0.0, fixed_kw=np.full(len(q.index), np.nan)) for prod in q.products)
    return replace(q, products=products, events=events)


def _priced_solve(b: Built, lam: dict[str, np.ndarray], options: SolverOptions, warm: Warm) -> _Solved:
    """The bound LP of a piece, from its stage-1 model ``b``: the DR rows released, the commitment
    unpaid, the net export paid λ instead. Costs and bounds change only, so when ``b`` is the model
    HiGHS holds (it was just solved) HiGHS goes on from there hot. Exclusivity binaries, if any,
    are relaxed: a relaxation bounds as well.
    """
    lm, q = b.lm, b.p
    for e in q.events:
        lm.release(b.rows[f"dr_delivery.{e.id}"][e.active])
        c = b.commitments[e.id]
        lm.maximize(-e.value_per_kw * c.scale, c.cols)
        pay_net_export(b, np.where(e.sites[:, None], lam[e.id][None, :], 0.0))
    sol = lm.session(options.time_limit_s, options.mip_gap, options.threads, warm=warm).relax()
    warm.built = None  # priced now: not a stage-1 model any more
    if not sol.has_solution:
        return _Solved(None, np.zeros(len(q.index)), float("nan"))
    return _Solved(None, (sol.x[b.exp] - sol.x[b.imp]).sum(axis=0), sol.objective)


def _repair_problem(q: Problem, solved: _Solved, target_kw: dict[str, np.ndarray]) -> Problem:
    """Stage 3, for a piece whose part of the rounded bids differs from what it held: its part of
    every bid pinned (``target_kw``, per product and interval), each unit kept to its stage-1
    direction (so no exclusivity binaries are ever needed), and each DR commitment capped at its
    stage-1 one but still paid — the fleet's commitment is rounded from these afterwards, so a
    piece that can no longer cover all of its own gives up a few kW instead of failing the repair.
    """
    sch = solved.schedule
    products = tuple(replace(prod, fixed_kw=target_kw[prod.id]) for prod in q.products)
    events = tuple(replace(e, max_kw=sch.dr_commitment_kw.get(e.id, 0.0)) for e in q.events)
    direction = np.where(sch.discharge_kw > 1e-9, 1, np.where(sch.charge_kw > 1e-9, -1, 0)).astype(np.int8)
    return replace(q, products=products, events=events, direction=direction)


# ---------------------------------------------------------------- master


def _whole_blocks(kw, increment_kw: float, min_kw: float):
    """``kw`` down to whole increments, and 0 where that is below the minimum: the market's block rule."""
    blocks = np.floor(np.asarray(kw, float) / increment_kw + 1e-9) * increment_kw if increment_kw > 0 else np.asarray(kw, float)
    return np.where(blocks + 1e-9 < min_kw, 0.0, blocks)


def _round_bid(prod, free_kw: np.ndarray) -> np.ndarray:
    """The fleet bid per interval: whole blocks, gate-closed intervals as submitted."""
    bid = _whole_blocks(free_kw, prod.increment_kw, prod.min_kw)
    fixed = np.isfinite(prod.fixed_kw)
    bid[fixed] = prod.fixed_kw[fixed]
    return bid


def _shares(held: dict[str, np.ndarray], bids: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """(K, T) per product: each piece's part of the rounded fleet bid, from what the pieces hold.

    Rounding down leaves a remainder below one block per product and interval (all of the
    holdings where the bid fell below the minimum). Whoever gives it up must re-solve, so it is
    taken from as few pieces as possible: greedily, the piece that can cover most of what is left,
    across all products and intervals at once (a set cover). LP plans are sparse, so taking each
    interval's remainder from its own largest holder touched 191 of the 1,000-unit bench's 250
    pieces; the cover touches far fewer. A bid above the holdings (a gate-closed bid larger than
    planned) is spread over the pieces in proportion.
    """
    pids = list(held)
    if not pids:
        return {}
    stack = np.concatenate([held[pid] for pid in pids], axis=1)  # (K, products × T)
    total = np.concatenate([bids[pid] for pid in pids])
    have = stack.sum(axis=0)
    need = np.maximum(have - total, 0.0)
    give = np.zeros_like(stack)
    while need.max(initial=0.0) > 1e-9:
        cover = np.minimum(stack - give, need[None, :]).sum(axis=1)
        k = int(np.argmax(cover))
        if cover[k] <= 0.0:
            break
        take = np.minimum(stack[k] - give[k], need)
        give[k] += take
        need = np.maximum(need - take, 0.0)
    out = stack - give
    up = total > have + 1e-9
    out[:, up] = stack[:, up] * np.divide(total[up], have[up], out=np.zeros(int(up.sum())), where=have[up] > 1e-9)
    n_t = len(total) // len(pids)
    return {pid: out[:, j * n_t : (j + 1) * n_t] for j, pid in enumerate(pids)}


def _round_commitments(p: Problem, solved: list[_Solved]) -> dict[str, float]:
    """Fleet commitment per event: Σ the pieces' own, down to whole increments, 0 below the minimum.
    Every piece delivers at least its own in every event interval, so the fleet delivers this."""
    total = lambda e: sum(s.schedule.dr_commitment_kw.get(e.id, 0.0) for s in solved)  # noqa: E731
    return {e.id: float(_whole_blocks(total(e), e.increment_kw, e.min_kw)) for e in p.events}


def _detached_load(p: Problem, pieces: list[Piece], j: int) -> np.ndarray:
    """Σ net load of the event's member sites whose units were detached (their piece does not see it)."""
    attached = {pc.site for pc in pieces if pc.site is not None}
    sites = [s for s in np.flatnonzero(p.events[j].sites) if s not in attached]
    return p.site_net_load_kw[sites].sum(axis=0) if sites else np.zeros(len(p.index))


def _lagrange_constant(p: Problem, pieces: list[Piece], lam: dict[str, np.ndarray]) -> float:
    """Σ_t λ_t · (baseline − net load the pieces do not see): the bound's part outside the pieces."""
    return float(sum((lam[e.id] * (e.baseline_kw - _detached_load(p, pieces, j)))[e.active].sum() for j, e in enumerate(p.events)))


# ---------------------------------------------------------------- running pieces


_WARM: dict[tuple[str, int], Warm] = {}  # per process: (run, lane) → the warm HiGHS of a decomposition run here
_WARM_LOCK = threading.Lock()


def _solve_chunk(problems: list[Problem | _Priced | Callable[[], _Priced | None]], options: SolverOptions, keys: list[tuple[str, int]], run_id: str, lane: int = 0, own_process: bool = False) -> list[_Solved]:
    """Solve the pieces (``keys``: stage, piece number) one after another on this lane's warm HiGHS.

    Each LP starts hot from the one before if that was the same piece's (``lp.Warm``), else from
    the basis its piece had in the same stage before, else from its stage-1 basis (stage ""),
    else from the last LP of its stage (an alike piece; ``lp.carried`` maps a basis between
    layouts). A bound LP (``_Priced``) right after its piece's stage-1 LP re-prices that model
    instead of building its own. A problem may be deferred (a function, called here: it may wait
    for prices); one that comes out None gets no answer.

    The instance and its bases belong to one decomposition run (``run_id``) and lane (a thread of
    the run's process): a new run starts cold, so the same input gives the same answer however
    often a worker is reused. A Dask worker (``own_process``) drops earlier runs' state here; in
    the calling process the runner drops its own when the run ends.
    """
    from optimizers.model import build_model, optimize

    with _WARM_LOCK:
        if own_process and not any(r == run_id for r, _ in _WARM):
            _WARM.clear()
        warm = _WARM.setdefault((run_id, lane), Warm())
    out = []
    for (stage, k), q in zip(keys, problems):
        q = q() if callable(q) else q
        if q is None:
            out.append(_Solved(None, np.zeros(0), float("nan")))
            continue
        warm.key, warm.fallback, warm.family = (stage, k), ("", k), stage
        if isinstance(q, _Priced):
            built = warm.built if warm.built is not None and warm.built.p is q.problem else build_model(q.problem, options)
            out.append(_priced_solve(built, q.lam, options, warm))
            continue
        try:
            s = optimize(q, options, warm=warm)
        except SolverError:
            out.append(_Solved(None, np.zeros(len(q.index)), float("nan")))
            continue
        out.append(_Solved(s, s.site_net_kw.sum(axis=0), s.stats.objective, s.stats.mip_gap))
    return out


class _Once:
    """A value computed once, by whichever thread asks first; the others wait for it."""

    def __init__(self, compute: Callable[[], Any]) -> None:
        self._compute, self._lock, self._done, self._value = compute, threading.Lock(), False, None

    def __call__(self) -> Any:
        with self._lock:
            if not self._done:
                self._value, self._done = self._compute(), True
        return self._value


def _solve_pickled(blob: bytes, options: SolverOptions, keys: list[tuple[str, int]], run_id: str) -> bytes:
    """``_solve_chunk`` over the wire as one pickled blob each way: Dask ships the thousands of
    small arrays of a few hundred pieces one frame each, which took 2 s per worker for the
    1,000-unit bench against 0.1 s as one blob."""
    return pickle.dumps(_solve_chunk(pickle.loads(blob), options, keys, run_id, own_process=True), protocol=pickle.HIGHEST_PROTOCOL)


def _keys(pieces: list[int], stage: str | list[str]) -> list[tuple[str, int]]:
    return list(zip([stage] * len(pieces) if isinstance(stage, str) else stage, pieces))


def _lanes_run(lanes: int, solve: Callable[[int, list[Problem], list[tuple[str, int]]], Any], gather: Callable[[list[Any]], list[list[_Solved]]]) -> Callable[..., Any]:
    """``run(problems, pieces, stage="", wait=True)`` over ``lanes`` lanes: piece k goes to lane
    k mod ``lanes`` (always the same one, alike pieces spread evenly), each lane's share is started
    with ``solve(lane, problems, keys)`` (a future) and runs in the order shares were started;
    ``gather`` waits for the futures. ``wait=False`` returns at once with a function that waits for
    the answers, in order."""

    def run(problems: list[Problem], pieces: list[int], stage: str | list[str] = "", wait: bool = True) -> Any:
        keys = _keys(pieces, stage)
        jobs, order = [], []
        for lane in range(lanes):
            mine = [i for i, (_, k) in enumerate(keys) if k % lanes == lane]
            if mine:
                order += mine
                jobs.append(solve(lane, [problems[i] for i in mine], [keys[i] for i in mine]))

        def answers() -> list[_Solved]:
            out: list[_Solved] = [None] * len(problems)  # type: ignore[list-item]
            for i, s in zip(order, [s for chunk in gather(jobs) for s in chunk]):
                out[i] = s
            return out

        return answers() if wait else answers

    return run


@contextmanager
def _runner(options: SolverOptions) -> Iterator[Callable[..., Any]]:
    """``run(problems, pieces, stage="", wait=True)`` for the whole decomposition: on
    ``options.piece_threads`` threads of this process (HiGHS releases the GIL while it solves: 24
    piece LPs took 3.49 s on one thread and 1.77 s on two), or on one Dask cluster
    (``options.workers`` local processes or ``options.scheduler``) kept for every stage. Each lane
    (thread or worker) keeps its HiGHS instance and bases between stages. ``pieces`` number the
    problems' pieces (one list may hold several stages: ``stage`` is then a list too); a piece
    always goes back to the same lane and restarts from its basis. ``wait=False`` returns at once
    with a function that waits for the answers."""
    piece_options = replace(options, decomposition="off")
    run_id = uuid.uuid4().hex  # names this run's warm state on the workers; results never depend on it
    if options.workers <= 1 and options.scheduler is None:
        lanes = max(options.piece_threads, 1)
        pools = [ThreadPoolExecutor(1) for _ in range(lanes)]  # one thread per lane: its HiGHS is never shared
        try:
            yield _lanes_run(
                lanes,
                lambda lane, mine, keys: pools[lane].submit(_solve_chunk, mine, piece_options, keys, run_id, lane),
                lambda jobs: [job.result() for job in jobs],
            )
        finally:
            for pool in pools:
                pool.shutdown(wait=True, cancel_futures=True)
            with _WARM_LOCK:
                for lane in range(lanes):
                    _WARM.pop((run_id, lane), None)
        return
    from vpp.compute import dask_client

    with dask_client(None if options.scheduler else options.workers, options.scheduler) as client:
        workers = sorted(client.scheduler_info()["workers"])

        def submit(lane: int, mine: list[Problem | _Priced | Callable[[], _Priced | None]], keys: list[tuple[str, int]]) -> Any:
            blob = pickle.dumps([q() if callable(q) else q for q in mine], protocol=pickle.HIGHEST_PROTOCOL)
            return client.submit(_solve_pickled, blob, piece_options, keys, run_id, workers=[workers[lane]], allow_other_workers=True, pure=False)

        yield _lanes_run(len(workers), submit, lambda jobs: [pickle.loads(b) for b in client.gather(jobs)])


# ---------------------------------------------------------------- the whole schedule


def _merge(p: Problem, pieces: list[Piece], solved: list[_Solved], bids, commitments) -> Schedule:
    """The fleet schedule from the pieces' (stats filled in by ``_with_stats``)."""
    n_units, n_t = p.shape
    ch, dis = np.zeros((n_units, n_t)), np.zeros((n_units, n_t))
    soc = np.zeros((n_units, n_t + 1))
    reserve = {prod.id: np.zeros((n_units, n_t)) for prod in p.products}
    from_charge = {prod.id: np.zeros((n_units, n_t)) for prod in p.products}
    for pc, s in zip(pieces, solved):
        sch = s.schedule
        order = pc.units  # restrict and detach keep the piece's units in this order
        ch[order], dis[order], soc[order] = sch.charge_kw, sch.discharge_kw, sch.soc_kwh
        for pid, alloc in reserve.items():
            alloc[order] = sch.reserve_kw[pid]
            from_charge[pid][order] = sch.reserve_from_charge_kw[pid]
    site_net = -p.site_net_load_kw.copy()
    np.add.at(site_net, p.unit_site, dis - ch)
    return schedule_of(
        p,
        ch,
        dis,
        soc,
        reserve,
        commitments,
        reserve_from_charge_kw=from_charge,
        bids_kw=bids,
        site_net_kw=site_net,
        stats=SolverStats("feasible", 0.0, 0.0, 0.0, 0.0, 0, 0, 0),
    )


def _with_stats(schedule: Schedule, solved: list[_Solved], bound: float, rounds: int, options: SolverOptions, wall_s: float) -> Schedule:
    total = schedule.total_revenue
    gap = max((bound - total) / max(abs(bound), 1.0), 0.0)
    stats = [s.schedule.stats for s in solved]
    build_s = sum(x.build_time_s for x in stats)
    return replace(
        schedule,
        stats=SolverStats(
            status="optimal" if gap <= options.mip_gap or bound - total <= ABS_GAP else "feasible",
            objective=total,
            mip_gap=gap,
            build_time_s=build_s,
            solve_time_s=max(wall_s - build_s, 0.0),
            n_variables=sum(x.n_variables for x in stats),
            n_constraints=sum(x.n_constraints for x in stats),
            n_integer=sum(x.n_integer for x in stats),
            exclusivity_rounds=max((x.exclusivity_rounds for x in stats), default=0),
            exclusivity_binaries=sum(x.exclusivity_binaries for x in stats),
            pieces=len(solved),
            pricing_rounds=rounds,
            bound=bound,
        ),
    )
