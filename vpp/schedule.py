"""What the optimizer is asked (``SolverOptions``, ``TerminalPolicy``) and what it answers (``Schedule``).

The schedule keeps per-unit × interval arrays (axis 0 = unit, axis 1 =
interval) rather than a long DataFrame because the dispatcher, the simulator
and the checks all index it by (unit, interval); ``to_frame`` gives the long
table for CSV output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd


@dataclass(frozen=True, slots=True)
class SolverOptions:
    time_limit_s: float = 60.0
    mip_gap: float = 1e-3
    # How charging and discharging in the same interval is prevented:
    # lazy: LP first, binaries only on (unit, interval) pairs that came out simultaneous, repeat (exact);
    # binary: a binary on every (unit, interval); hull: ch/P_ch + dis/P_dis <= 1 (time-sharing, no binaries);
    # relaxed: plain bounds (exact only when nothing rewards burning energy).
    exclusivity: Literal["lazy", "binary", "hull", "relaxed"] = "lazy"
    infeasibility_penalty_per_kwh: float = 1.0e4  # elastic re-solve: cost of violating a constraint by 1 kW(h) for 1 h
    threads: int = 1
    # Split the fleet into independent pieces priced by a master (optimizers/decompose.py):
    # auto: when the fleet is large enough to gain; on / off: always / never.
    decomposition: Literal["auto", "on", "off"] = "auto"
    piece_units: int | None = None  # units per piece where units are independent (None: 4 from 1,000 units, 8 below; decompose.piece_size)
    bound_rounds: int = 1  # pricing rounds for the bound when DR events couple the pieces (the first is from a stand-in fleet)
    piece_threads: int = 2  # in this process, pieces solve on this many threads (HiGHS releases the GIL)
    workers: int = 1  # pieces solved in this many processes (Dask LocalCluster when > 1)
    scheduler: str | None = None  # or on an existing Dask cluster, e.g. tcp://host:8786
    # user rules in Pyomo ("file.py:function" or "package.module:function"), compiled into the fast
    # model's rows on every solve path (optimizers/extensions.py)
    extensions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TerminalPolicy:
    """How the end of the horizon is valued, so the optimizer does not empty the fleet for free.

    initial: end at least at the initial SoC (clipped to the window); soc: end at least at ``soc``;
    value: no floor, stored energy at the end is worth ``price_per_mwh`` (AC, after discharge losses).
    """

    mode: Literal["initial", "soc", "value"] = "initial"
    soc: float | None = None
    price_per_mwh: float | None = None


@dataclass(frozen=True, slots=True)
class Violation:
    """A constraint the elastic re-solve had to violate: family, unit or site, interval, amount (kW or kWh)."""

    family: str
    element: str
    interval: pd.Timestamp | None
    amount: float

    def __str__(self) -> str:
        when = f" at {self.interval.isoformat()}" if self.interval is not None else ""
        return f"{self.family} {self.element}{when}: violated by {self.amount:.6g}"


@dataclass(frozen=True, slots=True)
class SolverStats:
    status: str  # optimal | feasible (MIP gap not proven within the time) | time_limit | infeasible_relaxed
    objective: float
    mip_gap: float
    build_time_s: float
    solve_time_s: float
    n_variables: int
    n_constraints: int
    n_integer: int
    exclusivity_rounds: int = 0
    exclusivity_binaries: int = 0
    pieces: int = 0  # decomposition pieces (0: solved as one model)
    bound: float = float("nan")  # an upper bound on the optimum (the LP relaxation's, or the decomposition's)
    pricing_rounds: int = 0  # decomposition: rounds spent tightening the bound (DR multipliers)


@dataclass(frozen=True)
class Schedule:
    index: pd.DatetimeIndex  # interval starts, UTC
    unit_ids: tuple[str, ...]
    site_ids: tuple[str, ...]
    charge_kw: np.ndarray  # (U, T) >= 0
    discharge_kw: np.ndarray  # (U, T) >= 0
    soc_kwh: np.ndarray  # (U, T + 1): column 0 = initial, column t + 1 = end of interval t
    reserve_kw: dict[str, np.ndarray]  # product id -> (U, T) allocation
    reserve_from_charge_kw: dict[str, np.ndarray]  # the part delivered by changing charging (rest: discharging)
    bids_kw: dict[str, np.ndarray]  # product id -> (T,) fleet bid
    dr_commitment_kw: dict[str, float]  # event id -> committed reduction
    site_net_kw: np.ndarray  # (S, T) export - import at each site
    revenue: dict[str, float]  # stream -> expected value over the horizon (degradation negative)
    unit_revenue: dict[str, np.ndarray]  # stream -> (U,)
    stats: SolverStats
    violations: tuple[Violation, ...] = field(default=())
    # event id -> (T,) what one more kW of reduction in each interval would earn (the delivery rows'
    # shadow prices; 0 where the event is not active or the delivery is not binding)
    dr_price_per_kw: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def power_kw(self) -> np.ndarray:
        """(U, T) net AC power, + discharge."""
        return self.discharge_kw - self.charge_kw

    @property
    def total_revenue(self) -> float:
        return float(sum(self.revenue.values()))

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per unit × interval with power, SoC and reserve allocations."""
        n_units, n_t = self.charge_kw.shape
        frame = pd.DataFrame(
            {
                "interval_start": np.tile(self.index, n_units),
                "unit_id": np.repeat(self.unit_ids, n_t),
                "power_kw": self.power_kw.ravel(),
                "charge_kw": self.charge_kw.ravel(),
                "discharge_kw": self.discharge_kw.ravel(),
                "soc_start_kwh": self.soc_kwh[:, :-1].ravel(),
                "soc_end_kwh": self.soc_kwh[:, 1:].ravel(),
            }
        )
        for pid, alloc in self.reserve_kw.items():
            frame[f"{pid}_kw"] = alloc.ravel()
        return frame

    def summary(self, currency: str) -> dict:
        """The JSON-ready summary ``vpp optimize --json`` prints: status, revenue, bids per interval, stats."""
        stamp = [t.isoformat() for t in self.index]
        return {
            "status": self.stats.status,
            "objective": self.stats.objective,
            "currency": currency,
            "revenue": self.revenue,
            "total_revenue": self.total_revenue,
            "bids": {pid: dict(zip(stamp, map(float, kw))) for pid, kw in self.bids_kw.items()},
            "dr_commitments_kw": self.dr_commitment_kw,
            "unit_revenue": {uid: {k: float(v[i]) for k, v in self.unit_revenue.items()} for i, uid in enumerate(self.unit_ids)},
            "solve_time_s": self.stats.solve_time_s,
            "build_time_s": self.stats.build_time_s,
            "mip_gap": self.stats.mip_gap,
            "bound": self.stats.bound if np.isfinite(self.stats.bound) else None,
            "pieces": self.stats.pieces,
            "n_units": len(self.unit_ids),
            "n_intervals": len(self.index),
            "n_variables": self.stats.n_variables,
            "n_constraints": self.stats.n_constraints,
            "n_integer": self.stats.n_integer,
            "exclusivity_binaries": self.stats.exclusivity_binaries,
            "start": stamp[0] if stamp else None,
            "violations": [
                {"family": v.family, "element": v.element, "interval": v.interval.isoformat() if v.interval is not None else None, "amount": v.amount}
                for v in self.violations
            ],
        }

