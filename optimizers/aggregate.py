"""Exact aggregation: units that are identical in every parameter and state solve as one scaled unit.

Aggregators roll out the same product by the hundred: same rating, same
site type, often the same SoC after a night of idling. Such units are
interchangeable, and the model is linear in a unit's power and energy, so n
of them behave exactly as one unit with n × the power and energy; the plan is
split back evenly. The one non-linear part, charge/discharge exclusivity, is
applied to the aggregate as a whole (all n in the same mode) — no loss, since
an identical unit never gains by charging while its twin discharges unless
burning energy pays, and then the binaries keep each unit to one mode anyway.
Units must also share their site, because site limits see their sum.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from optimizers.problem import Problem
from optimizers.revenue import schedule_of
from optimizers.subproblem import BY_UNIT
from vpp.schedule import Schedule

_EXTENSIVE = ("p_ch_max", "p_dis_max", "e_max", "soc_min_kwh", "soc_max_kwh", "soc0_kwh", "terminal_kwh", "forced_unit_kw")


def identical_groups(p: Problem) -> list[np.ndarray]:
    """Unit positions grouped by identical site, parameters, state and product eligibility."""
    columns = [p.unit_site[:, None].astype(float)]
    for name in BY_UNIT:
        value = getattr(p, name)
        if value is not None:
            columns.append(np.asarray(value, dtype=float).reshape(len(p.unit_ids), -1))
    columns += [prod.eligible[:, None].astype(float) for prod in p.products]
    table = np.nan_to_num(np.hstack(columns), nan=-1e300)
    _, first, inverse = np.unique(table, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # groups in the order their first unit appears
    return [np.flatnonzero(inverse.ravel() == g) for g in order]


def aggregate(p: Problem, groups: list[np.ndarray]) -> Problem:
    """One unit per group: its extensive quantities (power, energy, SoC) summed over the members, its
    intensive ones (efficiencies, costs) their energy-weighted means, flags the first member's.

    For groups of identical units (``identical_groups``) that is exactly n × one unit. The
    decomposition also merges *unlike* units this way, into a small stand-in fleet whose prices it
    only uses as a starting point (``decompose._surrogate_prices``): one function for both, so the
    stand-in is the same model.
    """
    order = np.concatenate(groups)
    starts = np.cumsum([0] + [len(g) for g in groups[:-1]])
    lead = order[starts]
    weight = p.e_max[order]
    total_weight = np.add.reduceat(weight, starts)
    changes: dict = {}
    for name in BY_UNIT:
        value = getattr(p, name)
        if value is None:
            continue
        if name in _EXTENSIVE:
            changes[name] = np.add.reduceat(value[order], starts, axis=0)
        elif value.dtype.kind in "bi":
            changes[name] = value[lead]
        else:
            w = weight if value.ndim == 1 else weight[:, None]
            tw = total_weight if value.ndim == 1 else total_weight[:, None]
            mean = np.add.reduceat(value[order] * w, starts, axis=0) / np.where(tw > 0, tw, 1.0)
            same = np.minimum.reduceat(value[order], starts, axis=0) == np.maximum.reduceat(value[order], starts, axis=0)
            changes[name] = np.where(same, value[lead], mean)  # identical members keep their value to the bit
    changes["unit_ids"] = tuple(p.unit_ids[i] for i in lead)
    changes["unit_site"] = p.unit_site[lead]
    changes["products"] = tuple(replace(prod, eligible=prod.eligible[lead]) for prod in p.products)
    return replace(p, **changes)


def disaggregate(p: Problem, groups: list[np.ndarray], s: Schedule) -> Schedule:
    """The aggregate's plan split evenly over its members, on the full problem's unit order."""
    n_units = len(p.unit_ids)
    member_of = np.empty(n_units, dtype=int)
    size = np.empty(n_units)
    for g, members in enumerate(groups):
        member_of[members] = g
        size[members] = len(members)

    def split(a: np.ndarray) -> np.ndarray:
        return a[member_of] / size[:, None]

    reserve = {k: split(v) for k, v in s.reserve_kw.items()}
    return schedule_of(
        p,
        split(s.charge_kw),
        split(s.discharge_kw),
        split(s.soc_kwh),
        reserve,
        s.dr_commitment_kw,
        reserve_from_charge_kw={k: split(v) for k, v in s.reserve_from_charge_kw.items()},
        bids_kw=s.bids_kw,
        site_net_kw=s.site_net_kw,
        stats=s.stats,
        violations=s.violations,
        dr_price_per_kw=s.dr_price_per_kw,
    )
