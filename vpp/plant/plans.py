"""A site's share of a plant schedule as a ``SitePlan``, and back into what the gateway's dispatcher runs.

The central cuts its plant ``Schedule`` per site (``site_plan``); the gateway checks a plan against
itself (``refusal``) and turns it into a ``Schedule`` of its own units (``schedule_of``) plus the
site envelope as fleet caps (``envelope_overrides``). Both then go through ``vpp.dispatch`` like a
locally solved schedule, so every unit, SoC, site and override clamp still applies, and a local
override (tighter by construction: caps combine by their minimum) always wins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from vpp.fleet import Site
from vpp.overrides import Override, OverrideKind
from vpp.plant.messages import MAX_KW, SitePlan, UnitPlan
from vpp.schedule import Schedule, SolverStats

PLAN_STATS = SolverStats(status="central", objective=0.0, mip_gap=0.0, build_time_s=0.0, solve_time_s=0.0, n_variables=0, n_constraints=0, n_integer=0)


def _finite(kw: float) -> float:
    return MAX_KW if math.isinf(kw) else float(min(kw, MAX_KW))


def site_plan(schedule: Schedule, site: Site, unit_ids: Sequence[str], plan_id: int, issued_at: pd.Timestamp, valid_until: pd.Timestamp, *, rows_of: dict[str, int] | None = None, power_kw: np.ndarray | None = None) -> SitePlan:
    """The part of ``schedule`` for ``site``'s units, valid from its first interval until ``valid_until``.
    Cutting a whole plant, pass ``rows_of`` (unit id -> schedule row) and ``power_kw`` (the schedule's,
    computed once): per site they made the cut quadratic in the plant's units."""
    rows_of = rows_of if rows_of is not None else {uid: i for i, uid in enumerate(schedule.unit_ids)}
    power = power_kw if power_kw is not None else schedule.power_kw
    rows = [rows_of[uid] for uid in unit_ids]
    t = len(schedule.index)
    units = tuple(
        UnitPlan(
            id=schedule.unit_ids[i],
            power_kw=tuple(np.round(power[i], 6).tolist()),
            soc_kwh=tuple(np.round(np.maximum(schedule.soc_kwh[i], 0.0), 6).tolist()),
            reserve_kw={pid: tuple(np.round(np.maximum(a[i], 0.0), 6).tolist()) for pid, a in schedule.reserve_kw.items()},
        )
        for i in rows
    )
    step = int((schedule.index[1] - schedule.index[0]).total_seconds()) if t > 1 else 3600
    return SitePlan(
        site=site.id,
        plan_id=plan_id,
        issued_at=issued_at.to_pydatetime(),
        valid_from=schedule.index[0].to_pydatetime(),
        valid_until=min(valid_until, schedule.index[-1] + pd.Timedelta(seconds=step)).to_pydatetime(),
        interval_s=step,
        intervals=tuple(ts.to_pydatetime() for ts in schedule.index),
        units=units,
        import_max_kw=(_finite(site.import_limit_kw),) * t,
        export_max_kw=(_finite(site.export_limit_kw),) * t,
    )


def refusal(plan: SitePlan, site: str, unit_ids: Sequence[str], current_plan_id: int | None, market_now: pd.Timestamp, wall_now: pd.Timestamp, max_age_s: float, interval: pd.Timedelta) -> str | None:
    """Why the gateway of ``site`` must not follow ``plan`` (None: it may)."""
    if plan.site != site:
        return f"for site {plan.site}, this gateway is site {site}"
    if current_plan_id is not None and plan.plan_id <= current_plan_id:
        return f"replayed or out of order: plan {plan.plan_id} is not newer than plan {current_plan_id} in force"
    age_s = (wall_now - pd.Timestamp(plan.issued_at)).total_seconds()
    if age_s > max_age_s:
        return f"stale: issued {age_s:.0f} s ago, more than {max_age_s:g} s"
    if age_s < -30.0:
        return f"issued {-age_s:.0f} s in the future (clock skew)"
    if pd.Timestamp(plan.valid_until) <= market_now:
        return f"expired at {pd.Timestamp(plan.valid_until).isoformat()}"
    if plan.interval_s != int(interval.total_seconds()):
        return f"interval {plan.interval_s} s, this site runs {int(interval.total_seconds())} s intervals"
    planned = {u.id for u in plan.units}
    if planned != set(unit_ids):
        missing, extra = sorted(set(unit_ids) - planned), sorted(planned - set(unit_ids))
        return f"units do not match this site: missing {','.join(missing) or '-'} unknown {','.join(extra) or '-'}"
    return None


def schedule_of(plan: SitePlan, site_id: str) -> Schedule:
    """The plan as a ``Schedule`` the dispatcher runs (and the settler reads reserves from)."""
    index = pd.DatetimeIndex([pd.Timestamp(t) for t in plan.intervals]).tz_convert("UTC")
    power = np.array([u.power_kw for u in plan.units], dtype=float).reshape(len(plan.units), len(index))
    products = sorted({pid for u in plan.units for pid in u.reserve_kw})
    reserve = {pid: np.array([u.reserve_kw.get(pid, (0.0,) * len(index)) for u in plan.units], dtype=float) for pid in products}
    zeros = np.zeros_like(power)
    return Schedule(
        index=index,
        unit_ids=tuple(u.id for u in plan.units),
        site_ids=(site_id,),
        charge_kw=np.maximum(-power, 0.0),
        discharge_kw=np.maximum(power, 0.0),
        soc_kwh=np.array([u.soc_kwh for u in plan.units], dtype=float).reshape(len(plan.units), len(index) + 1),
        reserve_kw=reserve,
        reserve_from_charge_kw={pid: zeros.copy() for pid in products},
        bids_kw={},
        dr_commitment_kw={},
        site_net_kw=np.sum(power, axis=0, keepdims=True),
        revenue={},
        unit_revenue={},
        stats=PLAN_STATS,
    )


def envelope_overrides(plan: SitePlan) -> tuple[Override, ...]:
    """The site's import/export envelope per interval as fleet caps (the gateway is one site)."""
    step = pd.Timedelta(seconds=plan.interval_s)
    out = []
    for t, imp, exp in zip(plan.intervals, plan.import_max_kw, plan.export_max_kw):
        start = pd.Timestamp(t).to_pydatetime()
        end = (pd.Timestamp(t) + step).to_pydatetime()
        reason = f"central plan {plan.plan_id} envelope"
        if imp < MAX_KW:
            out.append(Override(OverrideKind.FLEET_IMPORT_CAP, start, end, "central", reason, value=float(imp)))
        if exp < MAX_KW:
            out.append(Override(OverrideKind.FLEET_EXPORT_CAP, start, end, "central", reason, value=float(exp)))
    return tuple(out)
