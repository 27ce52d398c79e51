"""A small vectorized builder for linear (mixed-integer) models, solved by HiGHS.

Why not build the model in Pyomo directly: measured on this 2-core machine, a
partial 1,000-unit × 96-interval model (5 variables, 3 constraints per unit and
interval) took 8.1 s to build in Pyomo and 7.5 s more to compile to standard
form, against 0.1 s to build here and 0.3 s to hand to HiGHS (see
docs/architecture.md). Families add whole blocks of variables and rows at once
(numpy index arrays), rows carry a family name and axis labels so an
infeasibility report can say "soc_min, unit b3, 2020-07-01T14:00". The
readable formulation, for other solvers, LP/MPS/NL files and extending, is the
named Pyomo model (``optimizers.pyomo_model``), tested to reach the same optimum.
"""

from __future__ import annotations

import bisect
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import highspy
import numpy as np
import scipy.sparse as sp

INF = np.inf
CONTINUOUS, INTEGER, SEMI_CONTINUOUS, SEMI_INTEGER = 0, 1, 2, 3
ABS_GAP = 1e-6  # currency: objective differences below this are noise (HiGHS' default mip_abs_gap)
FEASIBILITY_TOL = 1e-7  # HiGHS' default primal_feasibility_tolerance
DUAL_SIMPLEX, PRIMAL_SIMPLEX = 1, 4  # HiGHS' simplex_strategy values
DANTZIG_PRICING = 0  # HiGHS' simplex_dual_edge_weight_strategy value


class _QuietHighs(highspy.Highs):
    """A HiGHS instance that never prints its banner on stdout.

    HiGHS logs "Running HiGHS ... Copyright ..." on an instance's first call
    unless ``output_flag`` is already off, and highspy 1.16 makes that first call
    (registering its callbacks) inside the constructor, before a caller can set
    any option. Output on stdout would break ``--json`` and fill daemon logs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.setOptionValue("output_flag", False)  # highspy versions whose constructor makes no call

    def enableCallbacks(self) -> None:  # noqa: N802 (highspy's name)
        self.setOptionValue("output_flag", False)
        super().enableCallbacks()


def new_highs() -> highspy.Highs:
    """The one way this project creates a HiGHS instance: silent until a caller turns logging on."""
    return _QuietHighs()


_HIGHS_TYPES = {
    CONTINUOUS: highspy.HighsVarType.kContinuous,
    INTEGER: highspy.HighsVarType.kInteger,
    SEMI_CONTINUOUS: highspy.HighsVarType.kSemiContinuous,
    SEMI_INTEGER: highspy.HighsVarType.kSemiInteger,
}


@dataclass(frozen=True, slots=True)
class Block:
    """A named block of columns or rows with a shape and one label sequence per axis."""

    name: str
    start: int
    shape: tuple[int, ...]
    labels: tuple[Sequence[Any], ...] = ()

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    def locate(self, offset: int) -> tuple[Any, ...]:
        pos = np.unravel_index(offset, self.shape) if self.shape else ()
        return tuple(self.labels[a][int(i)] if a < len(self.labels) else int(i) for a, i in enumerate(pos))


@dataclass
class Solution:
    status: str  # optimal | feasible (gap not proven) | time_limit | infeasible | unbounded | error
    x: np.ndarray
    objective: float
    mip_gap: float
    solve_time_s: float
    row_dual: np.ndarray = field(default_factory=lambda: np.zeros(0))  # LP solves only: the rows' shadow prices

    @property
    def has_solution(self) -> bool:
        return self.status in ("optimal", "time_limit", "feasible") and self.x.size > 0


class LinearModel:
    """Columns, rows (lb <= A x <= ub) and a linear objective to **maximize**."""

    def __init__(self) -> None:
        self.n_cols = 0
        self.n_rows = 0
        self._col_lb: list[np.ndarray] = []
        self._col_ub: list[np.ndarray] = []
        self._col_int: list[np.ndarray] = []
        self._row_lb: list[np.ndarray] = []
        self._row_ub: list[np.ndarray] = []
        self._ri: list[np.ndarray] = []
        self._ci: list[np.ndarray] = []
        self._vals: list[np.ndarray] = []
        self._cost_ci: list[np.ndarray] = []
        self._cost_vals: list[np.ndarray] = []
        self.col_blocks: list[Block] = []
        self.row_blocks: list[Block] = []
        self.offset = 0.0  # constant added to the objective (so relative MIP gaps are gaps of what is optimized)
        self._released: list[np.ndarray] = []  # rows whose bounds were dropped after building
        self._matrix: sp.csc_matrix | None = None  # assembled once: re-pricing a model keeps its matrix

    # ---- building

    def var(self, name: str, shape: tuple[int, ...], lb: Any = 0.0, ub: Any = INF, kind: int = CONTINUOUS, labels: tuple = ()) -> np.ndarray:
        """A block of columns. ``kind`` SEMI_* means x = 0 or lb <= x <= ub (a market's minimum size)."""
        n = int(np.prod(shape))
        idx = np.arange(self.n_cols, self.n_cols + n).reshape(shape)
        self._col_lb.append(np.broadcast_to(np.asarray(lb, float), shape).ravel())
        self._col_ub.append(np.broadcast_to(np.asarray(ub, float), shape).ravel())
        self._col_int.append(np.full(n, kind, dtype=np.int8))
        self.col_blocks.append(Block(name, self.n_cols, shape, labels))
        self.n_cols += n
        return idx

    def rows(self, name: str, shape: tuple[int, ...], lb: Any = -INF, ub: Any = INF, labels: tuple = ()) -> np.ndarray:
        n = int(np.prod(shape))
        idx = np.arange(self.n_rows, self.n_rows + n).reshape(shape)
        self._row_lb.append(np.broadcast_to(np.asarray(lb, float), shape).ravel().copy())
        self._row_ub.append(np.broadcast_to(np.asarray(ub, float), shape).ravel().copy())
        self.row_blocks.append(Block(name, self.n_rows, shape, labels))
        self.n_rows += n
        return idx

    def add_terms(self, rows: np.ndarray, coef: Any, cols: np.ndarray) -> None:
        """Add ``coef * x[cols]`` to ``rows`` (broadcast together); negative column ids mean "no term"."""
        r, c, v = np.broadcast_arrays(rows, np.asarray(cols), np.asarray(coef, float))
        keep = (c >= 0) & (v != 0)
        self._matrix = None
        self._ri.append(r[keep].ravel())
        self._ci.append(c[keep].ravel())
        self._vals.append(v[keep].ravel())

    def constrain(self, name: str, terms: list[tuple[Any, np.ndarray]], lb: Any = -INF, ub: Any = INF, shape: tuple[int, ...] | None = None, labels: tuple = ()) -> np.ndarray:
        if shape is None:
            shape = np.broadcast_shapes(*(np.shape(c) for _, c in terms))
        rows = self.rows(name, shape, lb, ub, labels)
        for coef, cols in terms:
            self.add_terms(rows, coef, cols)
        return rows

    def release(self, rows: np.ndarray) -> None:
        """Drop ``rows``' bounds. They stay in the matrix, so a basis of the model stays one of it (a
        priced coupling row, as in a Lagrangian bound)."""
        self._released.append(np.asarray(rows).ravel())

    def maximize(self, coef: Any, cols: np.ndarray) -> None:
        c, v = np.broadcast_arrays(np.asarray(cols), np.asarray(coef, float))
        keep = (c >= 0) & (v != 0)
        self._cost_ci.append(c[keep].ravel())
        self._cost_vals.append(v[keep].ravel())

    # ---- assembled arrays

    def cost(self) -> np.ndarray:
        out = np.zeros(self.n_cols)
        if self._cost_ci:
            np.add.at(out, np.concatenate(self._cost_ci), np.concatenate(self._cost_vals))
        return out

    def matrix(self) -> sp.csc_matrix:
        if self._matrix is None or self._matrix.shape != (self.n_rows, self.n_cols):
            if not self._ri:
                self._matrix = sp.csc_matrix((self.n_rows, self.n_cols))
            else:
                self._matrix = sp.csc_matrix((np.concatenate(self._vals), (np.concatenate(self._ri), np.concatenate(self._ci))), shape=(self.n_rows, self.n_cols))
        return self._matrix

    def bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
        row_lb, row_ub = cat(self._row_lb), cat(self._row_ub)
        for rows in self._released:
            row_lb[rows], row_ub[rows] = -INF, INF
        return cat(self._col_lb), cat(self._col_ub), cat(self._col_int).astype(np.int8), row_lb, row_ub

    def locate_row(self, row: int) -> tuple[str, tuple[Any, ...]]:
        starts = [b.start for b in self.row_blocks]
        blk = self.row_blocks[bisect.bisect_right(starts, row) - 1]
        return blk.name, blk.locate(row - blk.start)

    @property
    def n_integer(self) -> int:
        return int(sum((a != CONTINUOUS).sum() for a in self._col_int))

    # ---- solving

    def solve(self, time_limit_s: float = 60.0, mip_gap: float = 1e-4, threads: int = 1, elastic_penalty: float | None = None) -> Solution:
        """Solve with HiGHS (maximizing ``cost·x + offset``): relax, round-and-fix, then branch if the
        rounded point is not within ``mip_gap`` of the relaxation's bound.

        With ``elastic_penalty`` every row gets a pair of penalized slacks (x has
        n_cols + 2 n_rows entries then), so the model is always feasible and the
        slacks say which rows had to give.
        """
        session = self.session(time_limit_s, mip_gap, threads, elastic_penalty)
        relaxed = session.relax()
        if not session.has_integers or not relaxed.has_solution:
            return relaxed
        fixed = session.fix(session.rounded(relaxed.x))
        if session.proven(fixed):
            return fixed
        return session.branch(fixed if fixed.has_solution else None)

    def session(self, time_limit_s: float, mip_gap: float, threads: int = 1, elastic_penalty: float | None = None, warm: Warm | None = None) -> Session:
        col_lb, col_ub, kinds, row_lb, row_ub = self.bounds()
        a = self.matrix()
        cost = self.cost()
        if elastic_penalty is not None:
            eye = sp.identity(self.n_rows, format="csc")
            a = sp.hstack([a, eye, -eye], format="csc")
            cost = np.concatenate([cost, np.full(2 * self.n_rows, -elastic_penalty)])
            col_lb = np.concatenate([col_lb, np.zeros(2 * self.n_rows)])
            col_ub = np.concatenate([col_ub, np.full(2 * self.n_rows, INF)])
            kinds = np.concatenate([kinds, np.zeros(2 * self.n_rows, np.int8)])
        layout = (tuple((b.name, b.shape) for b in self.col_blocks), tuple((b.name, b.shape) for b in self.row_blocks))
        return Session(a, cost, self.offset, col_lb, col_ub, kinds, row_lb, row_ub, time_limit_s, mip_gap, threads, warm, layout)

    # ---- export


class Warm:
    """One HiGHS instance reused across many small models, the last optimal basis under each name
    the caller gives (a piece in a stage, a stage), and the model loaded now.

    A decomposition solves hundreds of same-shaped pieces in a row: creating a
    HiGHS instance costs ~5 ms, more than a warm piece's solve, and the optimal
    basis of a similar piece cuts simplex iterations about sixfold (measured,
    docs/architecture.md). A model whose matrix is the loaded one's (the same piece
    with other prices or bounds) is not passed again: only its costs and bounds change,
    and HiGHS goes on from its current basis and factorization (a hot start). Use one
    ``Warm`` per thread, one session at a time.
    """

    def __init__(self) -> None:
        self.highs = new_highs()
        self.bases: dict[Any, tuple[highspy.HighsBasis, Layout]] = {}  # name → an optimal basis and its model's layout
        self.key: Any = None  # the caller's name for the next model (its own earlier basis is the best start)
        self.fallback: Any = None  # a name whose basis is the next best start (the same piece in another stage)
        self.family: Any = None  # a name shared by alike models (a stage): the last one's basis is the third best
        self.loaded: _Loaded | None = None  # what ``highs`` holds now, if a later model may start hot from it
        self.built: Any = None  # the last model built for this instance (a caller may re-price and re-solve it)

    def start(self, names: tuple[Any, ...], layout: Layout, col_lb: np.ndarray, col_ub: np.ndarray) -> highspy.HighsBasis | None:
        """A start for a model laid out as ``layout``: the basis of the first of ``names`` that has
        one, carried over (``carried``) if that model was laid out otherwise."""
        for name in names:
            if name in self.bases:
                basis, old = self.bases[name]
                return basis if old == layout else carried(basis, old, layout, col_lb, col_ub)
        return None


Layout = tuple[tuple[tuple[str, tuple[int, ...]], ...], tuple[tuple[str, tuple[int, ...]], ...]]  # (column blocks, row blocks): (name, shape)
_STATUS_OF = list(highspy.HighsBasisStatus.__members__.values())  # by value: kLower, kBasic, kUpper, kZero, kNonbasic
_LOWER, _BASIC, _UPPER, _ZERO = 0, 1, 2, 3


def carried(basis: highspy.HighsBasis, old: Layout, new: Layout, col_lb: np.ndarray, col_ub: np.ndarray) -> highspy.HighsBasis:
    """``basis``, of a model laid out as ``old``, for a model laid out as ``new``.

    Blocks both models have (same name and shape, matched in order of appearance) keep their
    statuses; a row the old model lacked is basic (its activity free), a column at a finite bound.
    A model that adds rows and columns to another (a bid pinned by a row) thus starts from the
    other's optimal basis, still dual feasible where costs did not change. HiGHS completes the
    basis (``alien``) if the count of basics came out wrong (a block dropped).
    """

    def statuses(old_blocks, values, new_blocks, default: np.ndarray) -> list:
        spans: dict[tuple, list[tuple[int, int]]] = {}
        pos = 0
        for name, shape in old_blocks:
            size = int(np.prod(shape))
            spans.setdefault((name, shape), []).append((pos, size))
            pos += size
        out, pos = default, 0
        for name, shape in new_blocks:
            size = int(np.prod(shape))
            same = spans.get((name, shape))
            if same:
                start, _ = same.pop(0)
                out[pos : pos + size] = values[start : start + size]
            pos += size
        return [_STATUS_OF[v] for v in out.tolist()]

    # each read of a HighsBasis' status vector converts the whole vector to a list: read each once
    col_values = np.array(list(map(int, basis.col_status)), np.int8)
    row_values = np.array(list(map(int, basis.row_status)), np.int8)
    n_rows = sum(int(np.prod(shape)) for _, shape in new[1])
    at_bound = np.where(np.isfinite(col_lb), _LOWER, np.where(np.isfinite(col_ub), _UPPER, _ZERO)).astype(np.int8)
    out = highspy.HighsBasis()
    out.col_status = statuses(old[0], col_values, new[0], at_bound)
    out.row_status = statuses(old[1], row_values, new[1], np.full(n_rows, _BASIC, np.int8))
    out.valid, out.alien = True, True
    return out


@dataclass(frozen=True)
class _Loaded:
    """A model as passed to HiGHS: a next model with the same matrix only changes the rest."""

    a: sp.csc_matrix
    cost: np.ndarray
    col_lb: np.ndarray
    col_ub: np.ndarray
    row_lb: np.ndarray
    row_ub: np.ndarray

    def same_matrix(self, a: sp.csc_matrix) -> bool:
        b = self.a
        return a is b or a.shape == b.shape and a.nnz == b.nnz and np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices) and np.array_equal(a.data, b.data)


class Session:
    """One model in one HiGHS instance, solved in stages that warm-start from each other.

    ``relax`` solves the LP relaxation (its objective bounds every integer
    solution); ``fix`` re-solves with the integer columns fixed, warm from the
    relaxation's basis; ``branch`` runs branch-and-bound seeded with that point
    and polishes its answer to exact integers.
    """

    def __init__(self, a, cost, offset, col_lb, col_ub, kinds, row_lb, row_ub, time_limit_s, mip_gap, threads, warm: Warm | None = None, layout: Layout = ((), ())) -> None:
        self.started = time.perf_counter()
        self.col_lb, self.col_ub, self.kinds = col_lb, col_ub, kinds
        self.time_limit_s, self.mip_gap = time_limit_s, mip_gap
        self.ints = np.flatnonzero(kinds != CONTINUOUS).astype(np.int32)
        self.warm, self.layout = warm, layout
        h = warm.highs if warm is not None else new_highs()
        model = _Loaded(a, np.asarray(cost, float), np.where(kinds >= SEMI_CONTINUOUS, 0.0, col_lb), np.asarray(col_ub, float), np.asarray(row_lb, float), np.asarray(row_ub, float))
        loaded = warm.loaded if warm is not None else None
        self.hot = loaded is not None and loaded.same_matrix(a)
        self.hot_primal = False
        if self.hot:
            # the loaded basis stays primal feasible where only costs and bounds that the current
            # point meets changed (a row released, a price changed); primal simplex then goes on from it
            self.hot_primal = _hot_update(h, loaded, model)
            h.changeObjectiveOffset(float(offset))
            self.h = _options(h, time_limit_s, mip_gap, threads, warm=True)
        else:
            self.h = _highs(h, model, offset, time_limit_s, mip_gap, threads, warm is not None)
        if warm is not None:
            warm.loaded = model
        self.bound = np.inf
        # the least time a stage gets even past the limit: a second where the stage's point would be
        # the only plan; next to nothing once the caller holds a plan to fall back on (``model``)
        self.floor_s = 1.0
        self.improving: list[tuple[float, np.ndarray]] = []  # (objective, x) of every incumbent of the last branch, in order found

    @property
    def has_integers(self) -> bool:
        return self.ints.size > 0

    def remaining_s(self) -> float:
        return max(self.left_s(), self.floor_s)

    def left_s(self) -> float:
        """Seconds of the limit left (negative once it is past)."""
        return self.time_limit_s - (time.perf_counter() - self.started)

    def gap(self, objective: float) -> float:
        return max((self.bound - objective) / max(abs(self.bound), 1.0), 0.0)  # HiGHS' convention

    def proven(self, sol: Solution) -> bool:
        """Within the relative MIP gap of the bound, or within ``ABS_GAP`` of it."""
        return sol.has_solution and (sol.mip_gap <= self.mip_gap or self.bound - sol.objective <= ABS_GAP)

    def relax(self) -> Solution:
        warm = self.warm
        basis = None
        if self.hot:
            if self.hot_primal:
                self.h.setOptionValue("simplex_strategy", PRIMAL_SIMPLEX)
        elif warm is not None:
            basis = warm.start((warm.key, warm.fallback, warm.family), self.layout, self.col_lb, self.col_ub)
            if basis is not None:
                self.h.setBasis(basis)
        sol = _run(self.h, mip=False)
        if (self.hot or basis is not None) and not sol.has_solution:  # a start HiGHS could not use: start cold
            self.h.clearSolver()
            self.h.setOptionValue("simplex_strategy", DUAL_SIMPLEX)
            sol = _run(self.h, mip=False)
        if sol.has_solution:
            self.bound = sol.objective
            if warm is not None:
                warm.bases[warm.family] = warm.bases[warm.key] = (self.h.getBasis(), self.layout)
        return self._timed(sol)

    def rounded(self, x: np.ndarray) -> np.ndarray:
        """Integer values near an LP point: binaries to nearest, counts down (offering less is always
        possible), semi columns below their minimum to 0."""
        lb, ub, kinds, ints = self.col_lb, self.col_ub, self.kinds, self.ints
        out = x[ints].copy()
        k, lo, hi = kinds[ints], lb[ints], ub[ints]
        binary = (k == INTEGER) & (lo == 0) & (hi == 1)
        out[binary] = np.round(out[binary])
        out[~binary] = np.floor(out[~binary] + 1e-6)
        semi = k >= SEMI_CONTINUOUS
        out[semi & (out < lo - 1e-9)] = 0.0
        return np.clip(out, np.where(semi, 0.0, lo), hi)

    def switched(self, x: np.ndarray, threshold: float) -> np.ndarray:
        """Integer values from an LP point that first decides which semi columns are on: those the
        relaxation holds at ``threshold`` of their minimum or more are held at least at it (the rest at
        0) and the LP re-solved, then rounded as ``rounded`` does. Rounding the relaxation alone
        drops every bid the LP spread below its minimum; this concentrates them (the 5-unit bench:
        0.8 % below the bound against 1.5 %)."""
        ints, lb, ub = self.ints, self.col_lb, self.col_ub
        semi = self.kinds[ints] >= SEMI_CONTINUOUS
        on = x[ints] >= threshold * lb[ints] - 1e-9
        lo = np.where(semi & on, lb[ints], np.where(semi, 0.0, lb[ints]))
        hi = np.where(semi & ~on, 0.0, ub[ints])
        self._unload()
        self.h.changeColsBounds(ints.size, ints, lo, hi)
        self.h.setOptionValue("time_limit", _deadline(self.h, self.remaining_s()))
        sol = _run(self.h, mip=False)
        relaxed_lb = np.where(self.kinds >= SEMI_CONTINUOUS, 0.0, self.col_lb)
        self.h.changeColsBounds(ints.size, ints, relaxed_lb[ints], ub[ints])
        return self.rounded(sol.x) if sol.has_solution else self.rounded(x)

    def fix(self, values: np.ndarray) -> Solution:
        """LP with the integer columns at ``values``, warm from the current basis.

        Offering less is feasible unless a site limit binds (a unit can make up
        the smaller expected deployment with the headroom the allocation freed),
        so this is the repair; on a large fleet it is the only stage that can
        finish (branch-and-bound could not), so it gets the remaining time.
        """
        cols = self.ints
        self._unload()
        self.h.changeColsBounds(cols.size, cols, values, values)
        self.h.setOptionValue("time_limit", _deadline(self.h, self.remaining_s()))
        sol = _run(self.h, mip=False)
        relaxed_lb = np.where(self.kinds >= SEMI_CONTINUOUS, 0.0, self.col_lb)
        self.h.changeColsBounds(cols.size, cols, relaxed_lb[cols], self.col_ub[cols])
        if sol.status != "optimal":
            return self._timed(Solution(sol.status, np.zeros(0), float("nan"), 0.0, sol.solve_time_s))
        sol.mip_gap = self.gap(sol.objective)
        return self._timed(sol)

    def branch(self, seed: Solution | None, reserve_s: float = 0.0) -> Solution:
        """Branch-and-bound from ``seed``, leaving ``reserve_s`` of the limit for what the caller may
        still need to do with its answer."""
        h, ints = self.h, self.ints
        self._unload()
        h.changeColsBounds(ints.size, ints, self.col_lb[ints], self.col_ub[ints])  # semi minimums back in force
        h.changeColsIntegrality(ints.size, ints, np.array([_HIGHS_TYPES[int(k)] for k in self.kinds[ints]], dtype=np.uint8))
        h.setOptionValue("time_limit", _mip_limit(max(self.remaining_s() - reserve_s, self.floor_s)))
        if seed is not None and seed.x.size == self.col_lb.size:
            start = highspy.HighsSolution()
            start.col_value = seed.x
            start.value_valid = True
            h.setSolution(start)
        h.setOptionValue("mip_improving_solution_save", True)  # every incumbent, not only the last (``improving``)
        sol = _run(h, mip=True)
        self.improving = [(float(s.objective), np.asarray(s.col_value)) for s in h.getSavedMipSolutions()]
        h.setOptionValue("mip_improving_solution_save", False)
        if sol.status == "error":
            # HiGHS' own advice when its answer leaves a semi-integer column slightly out of its domain
            h.setOptionValue("mip_feasibility_tolerance", 1e-9)
            h.setOptionValue("time_limit", _mip_limit(self.remaining_s()))
            sol = _run(h, mip=True)
        if sol.has_solution or sol.status in ("optimal", "time_limit"):
            self.bound = min(self.bound, float(h.getInfo().mip_dual_bound))  # tighter than the root LP's
        if sol.has_solution:
            # Integers come back within HiGHS' integrality tolerance (a binary at 0.9999999 lets 1e-5 kW
            # through): polish to exact integers with the LP re-solved around them.
            h.changeColsIntegrality(ints.size, ints, np.full(ints.size, _HIGHS_TYPES[CONTINUOUS], dtype=np.uint8))
            polished = self.fix(self.rounded(sol.x))
            if polished.has_solution and polished.objective >= sol.objective - max(self.mip_gap * max(1.0, abs(sol.objective)), ABS_GAP):
                polished.status, polished.mip_gap = sol.status, sol.mip_gap
                sol = polished
        if seed is None or (sol.has_solution and sol.objective >= seed.objective - ABS_GAP):
            if sol.status == "time_limit":
                sol.status = "feasible"
            return self._timed(sol)
        # out of time, or an answer worse than the start it was given: the seed stands (anytime), with its
        # gap to the bound branch-and-bound tightened
        seed.mip_gap = self.gap(seed.objective)
        status = "optimal" if self.proven(seed) else "feasible"
        return self._timed(Solution(status, seed.x, seed.objective, seed.mip_gap, 0.0))

    def _unload(self) -> None:
        """Bounds and integrality are about to change in HiGHS: no later model starts hot from it."""
        if self.warm is not None:
            self.warm.loaded = None

    def _timed(self, sol: Solution) -> Solution:
        sol.solve_time_s = time.perf_counter() - self.started
        return sol


SOLVER_LOG_ENV = "VPP_SOLVER_LOG"
"""Environment variable naming a file for HiGHS' log (``--solver-log``); an environment variable so that
solver worker processes and Dask workers started from this process see it too."""


def log_solver_to(path: str | os.PathLike[str] | None) -> None:
    """Send HiGHS' log of every later one-model solve, in this process and its children, to ``path``."""
    if path is not None:
        resolved = Path(path).resolve()
        resolved.write_text("")  # there, and empty, even when the plan needed no one-model solve (decomposition pieces are not logged)
        os.environ[SOLVER_LOG_ENV] = os.fspath(resolved)


def _options(h: highspy.Highs, time_limit_s: float, mip_gap: float, threads: int, warm: bool) -> highspy.Highs:
    h.resetOptions()  # a reused instance must not keep a previous model's retry tolerances
    h.setOptionValue("output_flag", False)
    log = os.environ.get(SOLVER_LOG_ENV)
    if log and not warm:  # the one model (not the hundreds of reused piece instances): the log a user reads
        h.setOptionValue("log_to_console", False)
        h.setOptionValue("log_file", log)
        h.setOptionValue("output_flag", True)
    h.setOptionValue("time_limit", _deadline(h, time_limit_s))
    h.setOptionValue("mip_rel_gap", float(mip_gap))
    h.setOptionValue("threads", int(threads))
    if warm:
        # small models restarted from an alike one's basis: Dantzig pricing beat dual steepest edge
        # (10.5 against 13.1 ms a 4-unit piece); on one large model it is slower (docs/architecture.md)
        h.setOptionValue("simplex_dual_edge_weight_strategy", DANTZIG_PRICING)
    return h


def _highs(h: highspy.Highs, m: _Loaded, offset: float, time_limit_s: float, mip_gap: float, threads: int, warm: bool) -> highspy.Highs:
    """``h`` loaded with the model (all columns continuous) and the solve options set."""
    _options(h, time_limit_s, mip_gap, threads, warm)
    a = m.a
    # the array form of passModel: filling a HighsLp field by field costs ~7x more (3.5 ms a piece)
    status = h.passModel(
        int(a.shape[1]), int(a.shape[0]), int(a.nnz), int(highspy.MatrixFormat.kColwise), int(highspy.ObjSense.kMaximize), float(offset),
        m.cost, m.col_lb, m.col_ub, m.row_lb, m.row_ub,
        a.indptr.astype(np.int32), a.indices.astype(np.int32), np.asarray(a.data, float), np.zeros(a.shape[1], np.int32),
    )  # fmt: skip
    if status == highspy.HighsStatus.kError:
        raise ValueError("HiGHS rejected the model (see its log)")
    return h


def _hot_update(h: highspy.Highs, old: _Loaded, new: _Loaded) -> bool:
    """Change in ``h`` the costs and bounds where ``new`` differs from ``old`` (same matrix); True if
    HiGHS' current point still meets every new bound (primal simplex can go on from it)."""
    changed = lambda x, y: np.flatnonzero(x != y).astype(np.int32)  # noqa: E731
    cols = np.union1d(changed(old.col_lb, new.col_lb), changed(old.col_ub, new.col_ub)).astype(np.int32)
    rows = np.union1d(changed(old.row_lb, new.row_lb), changed(old.row_ub, new.row_ub)).astype(np.int32)
    feasible = h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    if feasible and (cols.size or rows.size):
        sol = h.getSolution()
        x, r = np.asarray(sol.col_value)[cols], np.asarray(sol.row_value)[rows]
        tol = FEASIBILITY_TOL
        feasible = bool(((x >= new.col_lb[cols] - tol) & (x <= new.col_ub[cols] + tol)).all() and ((r >= new.row_lb[rows] - tol) & (r <= new.row_ub[rows] + tol)).all())
    costs = changed(old.cost, new.cost)
    if costs.size:
        h.changeColsCost(costs.size, costs, new.cost[costs])
    if cols.size:
        h.changeColsBounds(cols.size, cols, new.col_lb[cols], new.col_ub[cols])
    if rows.size:
        h.changeRowsBounds(rows.size, rows, new.row_lb[rows], new.row_ub[rows])
    return feasible


def _deadline(h: highspy.Highs, seconds: float) -> float:
    """An LP's time limit: HiGHS counts it over the instance's whole life, and a ``Warm`` instance lives long."""
    return float(h.getRunTime() + seconds)


def _mip_limit(seconds: float) -> float:
    """Branch-and-bound's time limit: HiGHS (1.16) measured it from the start of the MIP solve, not over
    the instance's life as for LPs. Given as a deadline (``_deadline``) it let a 10-unit solve run the
    LPs' time before it past the limit (12 s limit: 13.7 s; docs/architecture.md, decision 24)."""
    return float(seconds)


_STATUS = {
    highspy.HighsModelStatus.kOptimal: "optimal",
    highspy.HighsModelStatus.kTimeLimit: "time_limit",
    highspy.HighsModelStatus.kInfeasible: "infeasible",
    highspy.HighsModelStatus.kUnboundedOrInfeasible: "infeasible",
    highspy.HighsModelStatus.kUnbounded: "unbounded",
}


def _run(h: highspy.Highs, mip: bool) -> Solution:
    t0 = time.perf_counter()
    h.run()
    elapsed = time.perf_counter() - t0
    info = h.getInfo()
    has_x = info.primal_solution_status == 2  # kSolutionStatusFeasible
    name = _STATUS.get(h.getModelStatus(), "error")
    if name == "time_limit" and not has_x:
        name = "time_limit_no_solution"
    sol = h.getSolution()
    x = np.asarray(sol.col_value) if has_x else np.zeros(0)
    gap = float(info.mip_gap) if mip and has_x else 0.0
    duals = np.asarray(sol.row_dual) if not mip and info.dual_solution_status == 2 else np.zeros(0)
    return Solution(name, x, float(info.objective_function_value) if has_x else float("nan"), gap, elapsed, duals)
