"""Re-optimization in a worker process with a time limit, so a slow or hung solve never touches the tick.

The solve runs in a one-worker ``ProcessPoolExecutor`` (forkserver: the
daemon has threads, and a fork would copy their locks). The worker gets the
config once, at start-up. The forkserver and the worker die with the daemon
(``vpp.daemon.orphans``). A solve that outlasts ``time_limit_s`` is abandoned:
the worker is killed, the pool is replaced (warmed up in the background), and
the caller keeps the last good schedule. HiGHS is also given a time limit a
little shorter, so it normally stops by itself with its best solution.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from vpp.config import VppConfig
from vpp.daemon.orphans import die_with_parent
from vpp.markets import Market
from vpp.overrides import Override, OverrideKind
from vpp.schedule import Schedule, SolverOptions

log = logging.getLogger(__name__)

_CONFIG: VppConfig | None = None  # the worker's copy, set once by _init_worker


def _init_worker(cfg: VppConfig) -> None:
    global _CONFIG
    die_with_parent()  # the forkserver; it dies with the daemon (vpp.daemon.orphans)
    _CONFIG = cfg


def _ping() -> int:
    return 0


def _adopt(cfg: VppConfig) -> None:
    global _CONFIG
    _CONFIG = cfg


class SolveFailed(Exception):
    """A solve's error, as one line: the engine's own exceptions do not all survive pickling back."""


def _guarded(solve_fn: Callable[..., Schedule], *args: object) -> Schedule:
    try:
        return solve_fn(*args)
    except Exception as err:  # noqa: BLE001 - any failure of a solve is reported the same way
        raise SolveFailed(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None


def solve(start: pd.Timestamp, horizon: pd.Timedelta, initial_soc: dict[str, float], overrides: tuple[Override, ...], fixed_bids_kw: dict[str, np.ndarray] | None, options: SolverOptions) -> Schedule:
    """Runs in the worker: one co-optimization from ``start`` (the daemon's default solve function)."""
    from optimizers.api import optimize_config

    assert _CONFIG is not None, "worker not initialised"
    _, schedule = optimize_config(_CONFIG, start, horizon, initial_soc=initial_soc, overrides=overrides, fixed_bids_kw=fixed_bids_kw, options=options)
    return schedule


@dataclass(frozen=True)
class SolveOutcome:
    outcome: str  # ok | timeout | failed
    schedule: Schedule | None
    duration_s: float
    error: str | None = None


class Reoptimizer:
    def __init__(self, cfg: VppConfig, time_limit_s: float, solve_fn: Callable[..., Schedule] = solve) -> None:
        self.cfg = cfg
        self.time_limit_s = time_limit_s
        self.solve_fn = solve_fn
        self.recycles = 0
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the worker now, so the first solve does not pay for the process start."""
        self._pool_now().submit(_ping)

    def reconfigure(self, cfg: VppConfig) -> None:
        """Solve with ``cfg`` from now on: the worker holds its own copy, so it is replaced."""
        self.cfg = cfg
        if self._pool is not None:
            self._kill(self._pool)
            self._pool = None
        self.start()

    def adopt(self, cfg: VppConfig) -> None:
        """Solve on ``cfg`` (the same config with other series values) from the next solve on: the one worker
        runs it before that solve, and a replaced worker starts with it. No process restart."""
        self.cfg = cfg
        if self._pool is not None:
            try:
                self._pool.submit(_adopt, cfg)
            except BrokenProcessPool:  # the worker died since the last solve: a fresh one starts with ``cfg``
                self._recycle()

    def close(self) -> None:
        if self._pool is not None:
            self._kill(self._pool)
            self._pool = None

    async def solve(self, start: pd.Timestamp, horizon: pd.Timedelta, initial_soc: dict[str, float], overrides: tuple[Override, ...], fixed_bids_kw: dict[str, np.ndarray] | None) -> SolveOutcome:
        options = replace(self.cfg.solver, time_limit_s=min(self.cfg.solver.time_limit_s, max(0.8 * self.time_limit_s, 0.1)))
        started = time.perf_counter()
        future = self._pool_now().submit(_guarded, self.solve_fn, start, horizon, initial_soc, overrides, fixed_bids_kw, options)
        try:
            schedule = await asyncio.wait_for(asyncio.wrap_future(future), self.time_limit_s)
        except TimeoutError:
            self._recycle()
            return SolveOutcome("timeout", None, time.perf_counter() - started, f"no schedule within {self.time_limit_s:g} s")
        except Exception as err:  # noqa: BLE001 - the solver's own error (prices missing, a broken worker)
            if isinstance(err, BrokenProcessPool):
                self._recycle()
            return SolveOutcome("failed", None, time.perf_counter() - started, str(err).splitlines()[0] if str(err) else type(err).__name__)
        return SolveOutcome("ok", schedule, time.perf_counter() - started)

    def _pool_now(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["vpp.daemon.forkserver_init", "optimizers.api", "vpp.daemon.reoptimize"])
            self._pool = ProcessPoolExecutor(1, mp_context=context, initializer=_init_worker, initargs=(self.cfg,))
        return self._pool

    def _recycle(self) -> None:
        """Kill the worker that overran (it may be stuck in the solver) and warm up a fresh one."""
        if self._pool is not None:
            self._kill(self._pool)
            self._pool = None
        self.recycles += 1
        self.start()

    @staticmethod
    def _kill(pool: ProcessPoolExecutor) -> None:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)


def committed_bids(market: Market, timezone: str, index: pd.DatetimeIndex, now: pd.Timestamp, previous: Schedule | None) -> dict[str, np.ndarray] | None:
    """Bids whose gate has closed are no longer ours to change: fix them to what the schedule in force
    bid (0 where it did not cover the interval). NaN = still open. ``None`` when nothing is closed."""
    fixed: dict[str, np.ndarray] = {}
    for product in market.products:
        if product.gate_closure is None:
            continue
        closes = pd.DatetimeIndex([product.gate_closure.closes_at(t, timezone) for t in index])
        closed = np.asarray(closes <= now)
        if not closed.any():
            continue
        bids = np.full(len(index), np.nan)
        bids[closed] = 0.0
        if previous is not None and product.id in previous.bids_kw:
            pos = previous.index.get_indexer(index)
            have = closed & (pos >= 0)
            bids[have] = previous.bids_kw[product.id][pos[have]]
        fixed[product.id] = bids
    return fixed or None


def next_gate_closure(market: Market, timezone: str, now: pd.Timestamp, horizon: pd.Timedelta) -> pd.Timestamp | None:
    """The next day-ahead gate closure after ``now`` among the products (real-time gates close every interval
    and are covered by the periodic re-optimization)."""
    closes = []
    for product in market.products:
        gate = product.gate_closure
        if gate is None or gate.time is None:
            continue
        for day in pd.date_range(now.tz_convert(timezone).normalize(), periods=int(horizon / pd.Timedelta(days=1)) + 3, freq="D"):
            at = gate.closes_at(day.tz_convert("UTC"), timezone)
            if at > now:
                closes.append(at)
                break
    return min(closes) if closes else None


def initial_soc(unit_ids: tuple[str, ...], soc_now: Mapping[str, float | None]) -> dict[str, float]:
    """SoC fractions from fresh telemetry; units without one start where the config says."""
    return {uid: float(s) for uid in unit_ids if (s := soc_now.get(uid)) is not None}


def outage_overrides(unit_ids: Iterable[str], index: pd.DatetimeIndex, reasons: Mapping[str, str]) -> tuple[Override, ...]:
    """Units out of dispatch (stale, faulted) are planned out until they come back (which re-plans)."""
    step = index[1] - index[0] if len(index) > 1 else pd.Timedelta(hours=1)
    return tuple(Override(OverrideKind.UNIT_OUT, index[0], index[-1] + step, "daemon", reasons[uid] or "out of dispatch", unit_id=uid) for uid in unit_ids)
