"""Decomposed co-optimization: small independent pieces, priced and repaired by a master.

Why: the monolithic LP is degenerate and its simplex time grows faster than the
fleet (100 units × 96 intervals: 5.5 s relaxation; a 10-unit site 0.2 s; one
unit 18 ms cold, 9 ms warm). The units are coupled only by

* the **fleet bids** — bid = Σ allocations, in blocks with a minimum;
* **DR commitments** — Σ member sites' reduction ≥ commitment in every event interval;
* **sites** — import/export limits, retail tariffs and demand charges (net import is priced);
* fleet export/import caps (overrides).

With continuous bids the first is a mere sum, so the LP relaxation separates. The
method, in three stages (docs/architecture.md, decision 8, has the measurements):

1. **Price** — every piece solves its own LP: bids continuous at the product
   price; each DR event priced by Lagrange multipliers λ_t ≥ 0 with Σ_t λ_t = the
   event's value per kW, added to the member sites' net export (weak duality makes
   Σ piece optima + Σ_t λ_t·(constant part) an upper bound on the monolithic MILP —
   the bound every answer's gap is measured against).
2. **Master** — bids are rounded down to whole increments (0 below the minimum, gate-
   closed bids as submitted) and DR commitments to the largest block every event
   interval's summed reduction covers.
3. **Repair** — every piece re-solves with its share of each rounded bid fixed
   (its allocation × rounded / unrounded) and, for DR, a reduction target per interval
   that adds up to the commitment: exact feasibility of the whole, by construction.

Pieces: a site whose limits can bind, or whose net import is priced (retail), is one
piece with all its units. Units at other sites never meet their site's limits, so they
are **detached** and grouped ``piece_units`` at a time, sorted by duration and SoC so
that consecutive pieces are alike and each warm-starts from the last one's basis.

Couplings not handled here (fleet caps, mandatory DR events) fall back to the monolith.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np

from optimizers.lp import ABS_GAP, Warm
from optimizers.problem import Problem
from optimizers.revenue import schedule_of
from optimizers.subproblem import detach, restrict
from vpp.schedule import Schedule, SolverOptions, SolverStats

AUTO_MIN_UNITS = 40  # below this the monolith (with its branch-and-bound) is as fast and tighter


@dataclass(frozen=True)
class Piece:
    units: np.ndarray  # positions in the full problem
    site: int | None  # the site the piece is (None: detached units)
    member_of: np.ndarray  # (E,) bool: DR events the piece's site(s) belong to


@dataclass
class _Solved:
    schedule: Schedule
    net_export_kw: np.ndarray  # (T,) the piece's export − import (detached: its units' net power)


def should_decompose(p: Problem, options: SolverOptions) -> bool:
    if options.decomposition == "off" or not _supported(p):
        return False
    return options.decomposition == "on" or (len(p.unit_ids) >= AUTO_MIN_UNITS and len(pieces_of(p, options.piece_units)) > 1)


def _supported(p: Problem) -> bool:
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
    pieces = pieces_of(p, options.piece_units)
    with _runner(options) as run:
        return _decomposed(p, pieces, options, run, t0)


def _decomposed(p: Problem, pieces: list[Piece], options: SolverOptions, run: Callable[..., list[_Solved]], t0: float) -> Schedule:
    shares = _baseline_shares(p, pieces)
    stage1 = [_own_dr_problem(p, pc, shares, k) for k, pc in enumerate(pieces)]
    solved = run(stage1)

    bids = {prod.id: _round_bid(prod, _alloc_sum(solved, prod.id, len(p.index))) for prod in p.products}
    commitments, scale = _round_commitments(p, solved)
    unplaced = any(((b > 0) & (f == 0)).any() for b, f in bids.values())  # a submitted bid nobody priced in
    fractions = {pid: f for pid, (_, f) in bids.items()}
    repaired = [] if unplaced else run([_repair_problem(q, s, fractions, scale) for q, s in zip(stage1, solved)])
    if unplaced or any(s.schedule.violations for s in repaired):
        # the shares could not be met piece by piece: solve the whole
        from optimizers.model import _monolithic

        return _monolithic(p, replace(options, decomposition="off"), None)
    schedule = _merge(p, pieces, repaired, bids, commitments)
    # a fixed number of rounds (not a time budget), so the same input always reports the same bound
    bound, rounds = _bound(p, pieces, stage1, solved, schedule.total_revenue, options, run, deadline=t0 + options.time_limit_s)
    return _with_stats(schedule, repaired, bound, rounds, options, time.perf_counter() - t0)


def _bound(p: Problem, pieces: list[Piece], stage1: list[Problem], solved: list[_Solved], primal: float, options: SolverOptions, run: Callable[..., list[_Solved]], deadline: float) -> tuple[float, int]:
    """An upper bound on the monolithic optimum, and the pricing rounds it took.

    Without DR events the pieces' stage-1 optima add up to the fleet's LP relaxation (bids are a
    mere sum there): exact. With events, the Lagrangian dual L(λ) = Σ_k max(f_k + λ·X_k) + λ·(baseline
    the pieces do not see) bounds it for every λ ≥ 0 with Σ_t λ_t ≥ value per kW. λ comes from
    column generation (Dantzig-Wolfe): a small master LP over convex combinations of the plans the
    pieces proposed so far prices the delivery rows; the pieces answer those prices with new plans
    (and a value of L); repeat while the gap to the repaired schedule exceeds the MIP gap. When the
    master's prices do not improve the bound, the next round takes a projected subgradient (Polyak)
    step from the best multipliers instead: column generation is tight on small fleets, subgradient
    steps on large ones (measured, docs/architecture.md).
    """
    members = [k for k, pc in enumerate(pieces) if pc.member_of.any()]
    if not members or not any(e.active.any() for e in p.events):
        return sum(_piece_bound(s.schedule) for s in solved), 0
    others = sum(_piece_bound(s.schedule) for k, s in enumerate(solved) if k not in set(members))
    columns = _Columns(p, pieces, members)
    columns.add(solved, {}, own_dr=True)
    center, best, rounds = _own_prices(p, solved), np.inf, 0
    lam = center
    while rounds < options.bound_rounds and time.perf_counter() < deadline:
        priced = run([_priced_problem(stage1[k], lam) for k in members], members)
        rounds += 1
        value = others + sum(_piece_bound(s.schedule) for s in priced) + _lagrange_constant(p, pieces, lam)
        improved = value < best
        if improved:
            best, center = value, lam
        if (best - primal) <= options.mip_gap * max(abs(best), 1.0):
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
            s = sch.schedule
            paid = sum(e.value_per_kw * s.dr_commitment_kw.get(e.id, 0.0) for e in self.p.events) if own_dr else 0.0
            priced = 0.0 if own_dr else sum(float((lam[e.id] * sch.net_export_kw).sum()) for j, e in enumerate(self.p.events) if self.pieces[k].member_of[j])
            self.value.append(s.stats.objective - paid - priced)
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
            if price.sum() < e.value_per_kw:  # λ must price a kW at least at the event's value (else C is unbounded)
                price[t] += (e.value_per_kw - price.sum()) / max(t.size, 1)
            lam[e.id] = price
        return lam


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


def _priced_problem(q: Problem, lam: dict[str, np.ndarray]) -> Problem:
    """The bound: the piece's DR rows released and its net export paid the multipliers instead."""
    value = np.zeros((len(q.site_ids), len(q.index)))
    events = []
    for e in q.events:
        value += np.where(e.sites[:, None], lam[e.id][None, :], 0.0)
        events.append(replace(e, baseline_kw=np.full(len(q.index), np.inf), value_per_kw=0.0))
    return replace(q, events=tuple(events), grid_value_per_kw=value)


def _repair_problem(q: Problem, solved: _Solved, fractions: dict[str, np.ndarray], dr_scale: dict[str, float]) -> Problem:
    """Stage 3: the stage-1 piece with its share of every rounded bid pinned, its share of every
    rounded DR commitment as a floor, and each unit kept to its stage-1 direction (so no
    exclusivity binaries are ever needed)."""
    sch = solved.schedule
    products = tuple(replace(prod, fixed_kw=sch.reserve_kw[prod.id].sum(axis=0) * fractions[prod.id]) for prod in q.products)
    events = tuple(replace(e, value_per_kw=0.0, min_kw=sch.dr_commitment_kw.get(e.id, 0.0) * dr_scale.get(e.id, 0.0), mandatory=True) for e in q.events)
    direction = np.where(sch.discharge_kw > 1e-9, 1, np.where(sch.charge_kw > 1e-9, -1, 0)).astype(np.int8)
    return replace(q, products=products, events=events, direction=direction)


# ---------------------------------------------------------------- master


def _alloc_sum(solved: list[_Solved], pid: str, n_t: int) -> np.ndarray:
    total = np.zeros(n_t)
    for s in solved:
        total += s.schedule.reserve_kw[pid].sum(axis=0)
    return total


def _round_bid(prod, free_kw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fleet bid, scale factor bid / Σ allocations) per interval: blocks down, 0 below the minimum,
    gate-closed intervals as submitted."""
    bid = np.floor(free_kw / prod.increment_kw + 1e-9) * prod.increment_kw if prod.increment_kw > 0 else free_kw.copy()
    bid = np.where(bid + 1e-9 < prod.min_kw, 0.0, bid)
    fixed = np.isfinite(prod.fixed_kw)
    bid[fixed] = prod.fixed_kw[fixed]
    scale = np.divide(bid, free_kw, out=np.zeros_like(bid), where=free_kw > 1e-9)
    return bid, scale


def _round_commitments(p: Problem, solved: list[_Solved]) -> tuple[dict[str, float], dict[str, float]]:
    """Fleet commitment per event (Σ the pieces', down to whole increments, 0 below the minimum)
    and the factor each piece's own commitment is scaled by to add up to it."""
    commitments, scale = {}, {}
    for e in p.events:
        total = sum(s.schedule.dr_commitment_kw.get(e.id, 0.0) for s in solved)
        c = np.floor(total / e.increment_kw + 1e-9) * e.increment_kw if e.increment_kw > 0 else total
        c = 0.0 if c + 1e-9 < e.min_kw else float(c)
        commitments[e.id] = c
        scale[e.id] = c / total if total > 1e-9 else 0.0
    return commitments, scale


def _detached_load(p: Problem, pieces: list[Piece], j: int) -> np.ndarray:
    """Σ net load of the event's member sites whose units were detached (their piece does not see it)."""
    attached = {pc.site for pc in pieces if pc.site is not None}
    sites = [s for s in np.flatnonzero(p.events[j].sites) if s not in attached]
    return p.site_net_load_kw[sites].sum(axis=0) if sites else np.zeros(len(p.index))


def _lagrange_constant(p: Problem, pieces: list[Piece], lam: dict[str, np.ndarray]) -> float:
    """Σ_t λ_t · (baseline − net load the pieces do not see): the bound's part outside the pieces."""
    return float(sum((lam[e.id] * (e.baseline_kw - _detached_load(p, pieces, j)))[e.active].sum() for j, e in enumerate(p.events)))


def _piece_bound(s: Schedule) -> float:
    return s.stats.objective + s.stats.mip_gap * max(abs(s.stats.objective), 1.0)


# ---------------------------------------------------------------- running pieces


_WARM: dict[str, Warm] = {}  # per process: the warm HiGHS of the decomposition being run here


def _solve_chunk(problems: list[Problem], options: SolverOptions, keys: list[int], run_id: str) -> list[_Solved]:
    """Solve the pieces (numbered ``keys``) one after another on this process's warm HiGHS.

    The instance and its bases belong to one decomposition run (``run_id``): a new run starts
    cold, so the same input gives the same answer however often a worker is reused.
    """
    from optimizers.model import optimize

    if run_id not in _WARM:
        _WARM.clear()
        _WARM[run_id] = Warm()
    warm = _WARM[run_id]
    out = []
    for k, q in zip(keys, problems):
        warm.key = k
        s = optimize(q, options, warm=warm)
        out.append(_Solved(s, s.site_net_kw.sum(axis=0)))
    return out


@contextmanager
def _runner(options: SolverOptions) -> Iterator[Callable[..., list[_Solved]]]:
    """``run(problems, keys=None)`` for the whole decomposition: in this process, or on one Dask
    cluster (``options.workers`` local processes or ``options.scheduler``) kept for every stage,
    so each worker keeps its HiGHS instance and bases between stages. ``keys`` number the pieces
    (default 0, 1, ...); a piece always goes back to the same worker and restarts from its basis."""
    piece_options = replace(options, decomposition="off")
    run_id = uuid.uuid4().hex  # names this run's warm state on the workers; results never depend on it
    if options.workers <= 1 and options.scheduler is None:
        try:
            yield lambda problems, keys=None: _solve_chunk(problems, piece_options, list(range(len(problems))) if keys is None else keys, run_id)
        finally:
            _WARM.pop(run_id, None)
        return
    from vpp.compute import dask_client

    with dask_client(None if options.scheduler else options.workers, options.scheduler) as client:
        workers = sorted(client.scheduler_info()["workers"])

        def run(problems: list[Problem], keys: list[int] | None = None) -> list[_Solved]:
            keys = list(range(len(problems))) if keys is None else keys
            owner = [k * len(workers) // max(len(problems), max(keys) + 1) for k in keys]
            futures, order = [], []
            for w, worker in enumerate(workers):
                mine = [i for i, o in enumerate(owner) if o == w]
                if mine:
                    order += mine
                    futures.append(client.submit(_solve_chunk, [problems[i] for i in mine], piece_options, [keys[i] for i in mine], run_id, workers=[worker], allow_other_workers=True, pure=False))
            flat = [s for chunk in client.gather(futures) for s in chunk]
            out: list[_Solved] = [None] * len(problems)  # type: ignore[list-item]
            for i, s in zip(order, flat):
                out[i] = s
            return out

        yield run


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
        bids_kw={pid: b for pid, (b, _) in bids.items()},
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
