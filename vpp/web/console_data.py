"""Reads behind the operator console: plan vs actual, the override audit log, recent solves, revenue.

All are bounded reads of the daemon's and the ledger's tables (a window, a limit), run on a thread by
the routes; nothing here writes.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from vpp.daemon.store import commands, override_audit, schedule_points, schedules, telemetry
from vpp.ledger.contracts import UNCONTRACTED, Contract
from vpp.ledger.store import read_settlements

MAX_WINDOW = pd.Timedelta(days=7)
AUDIT_LIMIT = 200
SOLVES_LIMIT = 20
COMMAND_ROWS = 20_000


def _t(ts: pd.Timestamp) -> object:
    return pd.Timestamp(ts).tz_convert("UTC").to_pydatetime()


def _utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True) if len(values) else pd.Series(pd.DatetimeIndex([], tz="UTC"))


def plan_vs_actual(engine: Engine, units: dict[str, float], start: pd.Timestamp, end: pd.Timestamp, bucket: pd.Timedelta) -> dict[str, pd.DataFrame]:
    """Market times in [start, end), for one unit or the sum over a site's ``units`` (id → energy kWh):
    planned (the latest schedule's power per interval), commanded (setpoints written, averaged per
    ``bucket``), measured (the telemetry buckets' mean power) and SoC (energy-weighted over the units)."""
    ids = list(units)
    sp, c, m = schedule_points.c, commands.c, telemetry.c
    with engine.connect() as conn:
        planned = pd.DataFrame(
            conn.execute(sa.select(sp.interval_start, sp.unit_id, sp.power_kw, sp.schedule_id).where(sp.unit_id.in_(ids), sp.interval_start >= _t(start), sp.interval_start < _t(end))).all(),
            columns=["t", "unit_id", "power_kw", "schedule_id"],
        )
        commanded = pd.DataFrame(
            conn.execute(sa.select(c.market_at, c.unit_id, c.power_kw).where(c.unit_id.in_(ids), c.market_at >= _t(start), c.market_at < _t(end)).order_by(c.market_at.desc()).limit(COMMAND_ROWS)).all(),
            columns=["t", "unit_id", "power_kw"],
        )
        measured = pd.DataFrame(
            conn.execute(sa.select(m.bucket_start, m.unit_id, m.power_kw_mean, m.soc_last, m.samples).where(m.unit_id.in_(ids), m.bucket_start >= _t(start), m.bucket_start < _t(end))).all(),
            columns=["t", "unit_id", "power_kw", "soc", "samples"],
        )
    for frame in (planned, commanded, measured):
        frame["t"] = _utc(frame["t"])
    latest = planned.sort_values("schedule_id", kind="stable").drop_duplicates(["t", "unit_id"], keep="last")  # the latest schedule per interval
    planned = latest.groupby("t", as_index=False)["power_kw"].sum()
    commanded["power_kw"] = commanded["power_kw"].astype("float64")
    commanded = commanded.assign(t=commanded["t"].dt.floor(bucket)).groupby(["t", "unit_id"], as_index=False)["power_kw"].mean().groupby("t", as_index=False)["power_kw"].sum(min_count=1)
    # a bucket may be stored more than once (a flush, a restart): merge a unit's rows by their samples first
    weight = measured["samples"].clip(lower=1).astype("float64")
    measured = measured.assign(pw=measured["power_kw"] * weight, sw=measured["soc"] * weight, w=weight).groupby(["t", "unit_id"], as_index=False)[["pw", "sw", "w"]].sum()
    measured = measured.assign(power_kw=measured["pw"] / measured["w"], soc=measured["sw"] / measured["w"])
    measured["kwh"] = measured["unit_id"].map(units) * measured["soc"]
    measured["cap"] = measured["unit_id"].map(units)
    measured = measured.groupby("t", as_index=False)[["power_kw", "kwh", "cap"]].sum()
    measured["soc"] = measured["kwh"] / measured["cap"]
    return {"planned": planned, "commanded": commanded, "measured": measured[["t", "power_kw", "soc"]]}


def audit_log(engine: Engine, limit: int = AUDIT_LIMIT) -> list[dict]:
    a = override_audit.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(override_audit).order_by(a.id.desc()).limit(limit)).mappings().all()
    return [dict(r) for r in rows]


def recent_solves(engine: Engine, limit: int = SOLVES_LIMIT) -> list[dict]:
    """The last schedules with status, objective, solve time; gap and violations where the plan is still stored."""
    s = schedules.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(s.id, s.created_at, s.market_at, s.trigger, s.status, s.objective, s.solve_time_s, s.payload).order_by(s.id.desc()).limit(limit)).mappings().all()
    out = []
    for r in rows:
        row = {k: r[k] for k in ("id", "created_at", "market_at", "trigger", "status", "objective", "solve_time_s")}
        schedule = pickle.loads(r["payload"]) if r["payload"] is not None else None  # our own rows, written by the daemon
        row["mip_gap"] = float(schedule.stats.mip_gap) if schedule is not None else None
        row["violations"] = list(schedule.violations) if schedule is not None else []
        out.append(row)
    return out


def revenue(engine: Engine, contracts: tuple[Contract, ...], start: pd.Timestamp, end: pd.Timestamp, by: str, per: str, timezone: str) -> pd.DataFrame:
    """Settled amount_minor per (period, key): ``by`` stream | unit | site | contract, ``per`` day | month
    (local calendar of the config's time zone)."""
    rows = read_settlements(engine, start, end)
    if rows.empty:
        return pd.DataFrame(columns=["period", "key", "amount_minor"])
    local = rows["interval_start"].dt.tz_convert(timezone)
    period = local.dt.strftime("%Y-%m-%d" if per == "day" else "%Y-%m")
    owner = {u: c.id for c in contracts for u in c.units}
    key = {"stream": rows["stream"], "unit": rows["unit_id"], "site": rows["site_id"], "contract": rows["unit_id"].map(lambda u: owner.get(u, UNCONTRACTED))}[by]
    out = rows.assign(period=period.to_numpy(), key=key.to_numpy()).groupby(["period", "key"], as_index=False, sort=True)["amount_minor"].sum()
    out["amount_minor"] = out["amount_minor"].astype(np.int64)
    return out
