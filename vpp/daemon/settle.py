"""Settling closed market intervals from what the daemon recorded, once each, across crashes.

After an interval closes, each unit's mean power is the energy that flowed in it
(``daemon_energy``: measured power integrated over the time the daemon saw, 0
where the unit was out and silent or the daemon was down; ``vpp.daemon.energy``)
over the interval's length, its SoC at the ends comes from the downsampled
telemetry, the reserve it held from the schedule in force × the share of the
interval it was in dispatch, and the prices from the config. An interval the
daemon saw only in part is settled on what is known and flagged
(``daemon_settled_intervals.coverage`` < 1, and a warning). ``vpp.settlement``
turns that into amounts and ``vpp.ledger.store.record_settlements`` stores them
in one transaction, keyed by unit × interval × stream. A retail site with a
grid meter is billed on the meter's counters, one without on the configured
load/PV, both as bills whose month-to-date demand charge is booked as it
changes (``vpp.daemon.retail_sites``). Each interval is settled
on its own (so per-horizon streams never depend on how intervals were
batched), and the same inputs are read back after a restart: a re-settlement
is identical and the ledger keeps the first. ``daemon_settled_intervals`` only
saves the work; the ledger's key is what makes it exactly-once.
Runs on the database thread.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable

import numpy as np
import pandas as pd
import sqlalchemy as sa

from optimizers.problem import build_problem
from vpp.config import VppConfig
from vpp.daemon.clock import Clock
from vpp.daemon.config import DaemonModel
from vpp.daemon.retail_sites import RetailSites
from vpp.daemon.store import Store, schedules
from vpp.ledger.money import currency_exponent
from vpp.ledger.store import record_settlements
from vpp.schedule import Schedule
from vpp.settlement import settle

log = logging.getLogger(__name__)

COMPLETE = 1.0 - 1e-6  # coverage below this: the interval is flagged as settled on what is known


class Settler:
    def __init__(self, cfg: VppConfig, store: Store, clock: Clock, on_settled: Callable[[], None] = lambda: None) -> None:
        self.cfg, self.store, self.clock, self.on_settled = cfg, store, clock, on_settled
        self.unit_ids = tuple(u.id for u in cfg.units)
        self.energy_kwh = np.array([u.energy_kwh for u in cfg.units])
        self._schedules: dict[int, Schedule] = {}
        self.retail_sites = RetailSites(cfg, pd.Timedelta(seconds=(cfg.daemon or DaemonModel()).telemetry_downsample_s), clock.speed)

    def catch_up(self, now: pd.Timestamp) -> int:
        """Settle every closed interval since the first recorded telemetry that the ledger lacks (start-up)."""
        first = self.store.first_telemetry()
        if first is None:
            return 0
        starts = pd.date_range(first.floor(self.cfg.interval), now.floor(self.cfg.interval), freq=self.cfg.interval, inclusive="left")
        done = self.store.settled(starts[0]) if len(starts) else set()
        todo = [s for s in starts if s not in done]
        for start in todo:
            self.settle_interval(start)
        if todo:
            log.info("settlement catch-up intervals=%d from=%s", len(todo), todo[0].isoformat())
        return len(todo)

    def settle_interval(self, start: pd.Timestamp) -> int:
        """Settle the interval starting at ``start``; returns the ledger rows that were new."""
        if start in self.store.settled(start):
            return 0
        end = start + self.cfg.interval
        index = pd.date_range(start, periods=1, freq=self.cfg.interval)
        power, soc, held, coverage = self._metered(start, end)
        schedule = self._schedule_for(start, end)
        reserve, from_charge, dr = self._held(schedule, start, held)
        problem = build_problem(self.cfg.fleet, self.cfg.market, index, terminal=self.cfg.terminal, where=f"{self.cfg.path}: settlement {start.isoformat()}")
        exponent = currency_exponent(self.cfg.currency)
        frame = settle(problem, power[:, None], soc, reserve, dr, reserve_from_charge_kw=from_charge, currency_exponent=exponent)
        dt_h = self.cfg.interval.total_seconds() / 3600.0
        energy = pd.DataFrame({"interval_start": index[0], "unit_id": self.unit_ids, "discharged_kwh": np.maximum(power, 0.0) * dt_h, "charged_kwh": np.maximum(-power, 0.0) * dt_h})
        frame, sites = self.retail_sites.settle(self.store.engine, start, end, power * dt_h, problem.site_net_load_kw[:, 0], frame, exponent)
        new = record_settlements(self.store.engine, frame, energy, sites)
        self.store.mark_settled(start, self.clock.wall(), len(frame), coverage)
        self.on_settled()
        total = int(frame["amount_minor"].sum()) if len(frame) else 0
        if coverage < COMPLETE:
            log.warning("settled interval=%s on what is known: the daemon saw %.1f %% of it (0 kW assumed for the rest) rows=%d new=%d total_minor=%d", start.isoformat(), 100 * coverage, len(frame), new, total)
        else:
            log.info("settled interval=%s rows=%d new=%d total_minor=%d", start.isoformat(), len(frame), new, total)
        return new

    def _metered(self, start: pd.Timestamp, end: pd.Timestamp) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(U,) mean power = energy that flowed / interval length, (U, 2) SoC kWh at the interval's ends,
        (U,) share of the interval the unit was in dispatch, and the share the daemon saw."""
        length_s = (end - start).total_seconds()
        pos = {u: i for i, u in enumerate(self.unit_ids)}
        n = len(self.unit_ids)
        energy_kwh, dispatch_s, covered_s = np.zeros(n), np.zeros(n), 0.0
        rows = self.store.energy(start, end)
        for uid, group in rows.groupby("unit_id", sort=False):
            if uid in pos:
                i = pos[uid]
                energy_kwh[i] = group["energy_kwh"].sum()
                dispatch_s[i] = group["dispatch_s"].sum()
                covered_s = max(covered_s, float(group["covered_s"].sum()))
        soc = np.full((n, 2), np.nan)
        buckets = self.store.metered(start, end).sort_values(["bucket_start"], kind="stable")
        for uid, group in buckets.groupby("unit_id", sort=False):
            if uid in pos:
                soc[pos[uid]] = (group["soc_first"].iloc[0], group["soc_last"].iloc[-1])
        soc_kwh = np.nan_to_num(soc) * self.energy_kwh[:, None]
        power = energy_kwh / (length_s / 3600.0)
        return power, soc_kwh, np.clip(dispatch_s / length_s, 0.0, 1.0), min(covered_s / length_s, 1.0)

    def _schedule_for(self, start: pd.Timestamp, end: pd.Timestamp) -> Schedule | None:
        """The last schedule computed before the interval ended that covers it."""
        c = schedules.c
        query = (
            sa.select(c.id)
            .where(c.start <= start.to_pydatetime(), c.end > start.to_pydatetime(), c.created_at <= self.clock.to_wall(end).to_pydatetime())
            .order_by(c.id.desc())
            .limit(1)
        )
        with self.store.engine.connect() as conn:
            schedule_id = conn.execute(query).scalar()
            if schedule_id is None:
                return None
            if schedule_id not in self._schedules:
                payload = conn.execute(sa.select(c.payload).where(c.id == schedule_id)).scalar_one()
                if payload is None:  # cannot happen by drop_payloads_before's rule; settle without reserves
                    log.warning("schedule id=%d for interval %s has no stored plan", schedule_id, start.isoformat())
                    return None
                self._schedules = {schedule_id: pickle.loads(payload)}  # keep one: intervals settle in order
        self.store.drop_payloads_before(schedule_id)
        return self._schedules[schedule_id]

    def _held(self, schedule: Schedule | None, start: pd.Timestamp, held: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float]]:
        """Reserve allocations of the schedule in force (and their charge-side parts), paid only for the
        share of the interval each unit was in dispatch; its DR commitments."""
        if schedule is None:
            return {}, {}, {}
        t = schedule.index.get_loc(start)
        row = {uid: k for k, uid in enumerate(schedule.unit_ids)}
        take = np.array([row.get(uid, -1) for uid in self.unit_ids])
        share = lambda alloc: np.where(take >= 0, alloc[np.maximum(take, 0), t], 0.0)[:, None] * held[:, None]  # noqa: E731
        return {pid: share(a) for pid, a in schedule.reserve_kw.items()}, {pid: share(a) for pid, a in schedule.reserve_from_charge_kw.items()}, dict(schedule.dr_commitment_kw)
