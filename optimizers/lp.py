"""A small vectorized builder for linear (mixed-integer) models, solved by HiGHS.

Why not build the model in Pyomo directly: measured on this 2-core machine, a
partial 1,000-unit × 96-interval model (5 variables, 3 constraints per unit and
interval) took 8.1 s to build in Pyomo and 7.5 s more to compile to standard
form, against 0.1 s to build here and 0.3 s to hand to HiGHS (see
docs/architecture.md). Families add whole blocks of variables and rows at once
(numpy index arrays), rows carry a family name and axis labels so an
infeasibility report can say "soc_min, unit b3, 2020-07-01T14:00", and
``to_pyomo`` exports the very same model when another solver or an LP file is
wanted.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import highspy
import numpy as np
import scipy.sparse as sp

INF = np.inf
CONTINUOUS, INTEGER, SEMI_CONTINUOUS, SEMI_INTEGER = 0, 1, 2, 3
ABS_GAP = 1e-6  # currency: objective differences below this are noise (HiGHS' default mip_abs_gap)
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
        if not self._ri:
            return sp.csc_matrix((self.n_rows, self.n_cols))
        return sp.csc_matrix((np.concatenate(self._vals), (np.concatenate(self._ri), np.concatenate(self._ci))), shape=(self.n_rows, self.n_cols))

    def bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
        return cat(self._col_lb), cat(self._col_ub), cat(self._col_int).astype(np.int8), cat(self._row_lb), cat(self._row_ub)

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
        return Session(a, cost, self.offset, col_lb, col_ub, kinds, row_lb, row_ub, time_limit_s, mip_gap, threads, warm)

    # ---- export

    def to_pyomo(self) -> Any:
        """The same model as a Pyomo ``ConcreteModel`` (for other solvers, LP/MPS files, inspection)."""
        import pyomo.environ as pyo

        col_lb, col_ub, integ, row_lb, row_ub = self.bounds()
        a = self.matrix().tocsr()
        cost = self.cost()
        m = pyo.ConcreteModel()
        m.I = pyo.RangeSet(0, self.n_cols - 1)
        semi = np.flatnonzero(integ >= SEMI_CONTINUOUS)
        low = np.where(integ >= SEMI_CONTINUOUS, 0.0, col_lb)  # semi columns: 0 or [lb, ub], via a binary below
        m.x = pyo.Var(m.I, domain=lambda _m, i: pyo.Integers if integ[i] in (INTEGER, SEMI_INTEGER) else pyo.Reals, bounds=lambda _m, i: (None if np.isinf(low[i]) else low[i], None if np.isinf(col_ub[i]) else col_ub[i]))
        m.on = pyo.Var(range(len(semi)), domain=pyo.Binary)
        m.semi_lb = pyo.Constraint(range(len(semi)), rule=lambda _m, k: m.x[int(semi[k])] >= float(col_lb[semi[k]]) * m.on[k])
        m.semi_ub = pyo.Constraint(range(len(semi)), rule=lambda _m, k: m.x[int(semi[k])] <= float(col_ub[semi[k]]) * m.on[k])

        def row(_m: Any, r: int) -> Any:
            lo, hi = a.indptr[r], a.indptr[r + 1]
            body = sum(float(v) * m.x[int(c)] for c, v in zip(a.indices[lo:hi], a.data[lo:hi]))
            if lo == hi:
                return pyo.Constraint.Skip
            return (None if np.isinf(row_lb[r]) else row_lb[r], body, None if np.isinf(row_ub[r]) else row_ub[r])

        m.R = pyo.RangeSet(0, self.n_rows - 1)
        m.c = pyo.Constraint(m.R, rule=row)
        nz = np.flatnonzero(cost)
        m.obj = pyo.Objective(expr=sum(float(cost[i]) * m.x[int(i)] for i in nz) + self.offset, sense=pyo.maximize)
        return m


class Warm:
    """One HiGHS instance reused across many small models, and the last optimal basis per model shape.

    A decomposition solves hundreds of same-shaped pieces in a row: creating a
    HiGHS instance costs ~5 ms, more than a warm piece's solve, and the optimal
    basis of a similar piece cuts simplex iterations about threefold (measured,
    docs/architecture.md). Use one ``Warm`` per process, one session at a time.
    """

    def __init__(self) -> None:
        self.highs = highspy.Highs()
        self.bases: dict[Any, highspy.HighsBasis] = {}
        self.key: Any = None  # the caller's name for the next model (its own earlier basis is the best start)
        self.fallback: Any = None  # a name whose basis is the next best start (the same piece in another stage)


class Session:
    """One model in one HiGHS instance, solved in stages that warm-start from each other.

    ``relax`` solves the LP relaxation (its objective bounds every integer
    solution); ``fix`` re-solves with the integer columns fixed, warm from the
    relaxation's basis; ``branch`` runs branch-and-bound seeded with that point
    and polishes its answer to exact integers.
    """

    def __init__(self, a, cost, offset, col_lb, col_ub, kinds, row_lb, row_ub, time_limit_s, mip_gap, threads, warm: Warm | None = None) -> None:
        self.started = time.perf_counter()
        self.col_lb, self.col_ub, self.kinds = col_lb, col_ub, kinds
        self.time_limit_s, self.mip_gap = time_limit_s, mip_gap
        self.ints = np.flatnonzero(kinds != CONTINUOUS).astype(np.int32)
        self.warm, self.shape = warm, a.shape
        h = warm.highs if warm is not None else highspy.Highs()
        self.h = _highs(h, a, cost, offset, np.where(kinds >= SEMI_CONTINUOUS, 0.0, col_lb), col_ub, row_lb, row_ub, time_limit_s, mip_gap, threads)
        self.bound = np.inf

    @property
    def has_integers(self) -> bool:
        return self.ints.size > 0

    def remaining_s(self) -> float:
        return max(self.time_limit_s - (time.perf_counter() - self.started), 1.0)

    def gap(self, objective: float) -> float:
        return max((self.bound - objective) / max(abs(self.bound), 1.0), 0.0)  # HiGHS' convention

    def proven(self, sol: Solution) -> bool:
        """Within the relative MIP gap of the bound, or within ``ABS_GAP`` of it."""
        return sol.has_solution and (sol.mip_gap <= self.mip_gap or self.bound - sol.objective <= ABS_GAP)

    def relax(self) -> Solution:
        warm = self.warm
        basis = None if warm is None else warm.bases.get((warm.key, self.shape), warm.bases.get((warm.fallback, self.shape), warm.bases.get(self.shape)))
        if basis is not None:
            self.h.setBasis(basis)
        sol = _run(self.h, mip=False)
        if basis is not None and not sol.has_solution:  # a borrowed basis HiGHS could not use: start cold
            self.h.clearSolver()
            sol = _run(self.h, mip=False)
        if sol.has_solution:
            self.bound = sol.objective
            if warm is not None:
                warm.bases[self.shape] = warm.bases[(warm.key, self.shape)] = self.h.getBasis()
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

    def fix(self, values: np.ndarray) -> Solution:
        """LP with the integer columns at ``values``, warm from the current basis.

        Offering less is feasible unless a site limit binds (a unit can make up
        the smaller expected deployment with the headroom the allocation freed),
        so this is the repair; on a large fleet it is the only stage that can
        finish (branch-and-bound could not), so it gets the remaining time.
        """
        cols = self.ints
        self.h.changeColsBounds(cols.size, cols, values, values)
        self.h.setOptionValue("time_limit", _deadline(self.h, self.remaining_s()))
        sol = _run(self.h, mip=False)
        relaxed_lb = np.where(self.kinds >= SEMI_CONTINUOUS, 0.0, self.col_lb)
        self.h.changeColsBounds(cols.size, cols, relaxed_lb[cols], self.col_ub[cols])
        if sol.status != "optimal":
            return self._timed(Solution(sol.status, np.zeros(0), float("nan"), 0.0, sol.solve_time_s))
        sol.mip_gap = self.gap(sol.objective)
        return self._timed(sol)

    def branch(self, seed: Solution | None) -> Solution:
        h, ints = self.h, self.ints
        h.changeColsBounds(ints.size, ints, self.col_lb[ints], self.col_ub[ints])  # semi minimums back in force
        h.changeColsIntegrality(ints.size, ints, np.array([_HIGHS_TYPES[int(k)] for k in self.kinds[ints]], dtype=np.uint8))
        h.setOptionValue("time_limit", _deadline(self.h, self.remaining_s()))
        if seed is not None and seed.x.size == self.col_lb.size:
            start = highspy.HighsSolution()
            start.col_value = seed.x
            start.value_valid = True
            h.setSolution(start)
        sol = _run(h, mip=True)
        if sol.status == "error":
            # HiGHS' own advice when its answer leaves a semi-integer column slightly out of its domain
            h.setOptionValue("mip_feasibility_tolerance", 1e-9)
            h.setOptionValue("time_limit", _deadline(self.h, self.remaining_s()))
            sol = _run(h, mip=True)
        if not sol.has_solution:
            if seed is None:
                return self._timed(sol)
            # out of time (or a solver error): the seed stands, with its proven gap
            status = "optimal" if self.proven(seed) else "feasible"
            return self._timed(Solution(status, seed.x, seed.objective, seed.mip_gap, 0.0))
        # Integers come back within HiGHS' integrality tolerance (a binary at 0.9999999 lets 1e-5 kW
        # through): polish to exact integers with the LP re-solved around them.
        h.changeColsIntegrality(ints.size, ints, np.full(ints.size, _HIGHS_TYPES[CONTINUOUS], dtype=np.uint8))
        polished = self.fix(self.rounded(sol.x))
        if polished.has_solution and polished.objective >= sol.objective - max(self.mip_gap * max(1.0, abs(sol.objective)), ABS_GAP):
            polished.status, polished.mip_gap = sol.status, sol.mip_gap
            return self._timed(polished)
        return self._timed(sol)

    def _timed(self, sol: Solution) -> Solution:
        sol.solve_time_s = time.perf_counter() - self.started
        return sol


def _highs(h: highspy.Highs, a: sp.csc_matrix, cost: np.ndarray, offset: float, col_lb: np.ndarray, col_ub: np.ndarray, row_lb: np.ndarray, row_ub: np.ndarray, time_limit_s: float, mip_gap: float, threads: int) -> highspy.Highs:
    """``h`` loaded with the model (all columns continuous) and the solve options set."""
    h.resetOptions()  # a reused instance must not keep a previous model's retry tolerances
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", _deadline(h, time_limit_s))
    h.setOptionValue("mip_rel_gap", float(mip_gap))
    h.setOptionValue("threads", int(threads))
    # the array form of passModel: filling a HighsLp field by field costs ~7x more (3.5 ms a piece)
    status = h.passModel(
        int(a.shape[1]), int(a.shape[0]), int(a.nnz), int(highspy.MatrixFormat.kColwise), int(highspy.ObjSense.kMaximize), float(offset),
        np.asarray(cost, float), np.asarray(col_lb, float), np.asarray(col_ub, float), np.asarray(row_lb, float), np.asarray(row_ub, float),
        a.indptr.astype(np.int32), a.indices.astype(np.int32), np.asarray(a.data, float), np.zeros(a.shape[1], np.int32),
    )  # fmt: skip
    if status == highspy.HighsStatus.kError:
        raise ValueError("HiGHS rejected the model (see its log)")
    return h


def _deadline(h: highspy.Highs, seconds: float) -> float:
    """HiGHS' time limit counts over the instance's whole life, and a ``Warm`` instance lives long."""
    return float(h.getRunTime() + seconds)


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
