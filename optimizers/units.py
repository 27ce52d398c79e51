"""Battery units: power, energy balance, SoC window, terminal SoC, cycles, degradation, spot energy.

Formulation items 1, 3, 4 (end-of-interval part), 5, 6 and the unit terms of the
objective. Reserve terms are added to these rows by ``reserves.py``.
"""

from __future__ import annotations

import numpy as np

from optimizers.context import Built, pair_labels
from optimizers.lp import INF, INTEGER, LinearModel
from optimizers.problem import Problem


def add_units(lm: LinearModel, p: Problem) -> Built:
    U, T = p.shape
    labels = (p.unit_ids, p.index)
    way = p.direction if p.direction is not None else np.zeros((U, T))
    ch = lm.var("ch", (U, T), 0.0, np.where(way > 0, 0.0, p.p_ch_max), labels=labels)
    dis = lm.var("dis", (U, T), 0.0, np.where(way < 0, 0.0, p.p_dis_max), labels=labels)
    soc = lm.var("soc", (U, T), -INF, INF, labels=labels)
    b = Built(lm, p, ch, dis, soc)
    dt = p.dt_h
    keep = (1.0 - p.sigma_per_h * dt)[:, None]  # fraction of stored energy kept over one interval

    # soc[t] - keep·soc[t-1] - η_ch·ch·Δt + dis/η_dis·Δt = keep·soc0 (t = 0) or 0
    rhs = np.zeros((U, T))
    rhs[:, 0] = keep[:, 0] * p.soc0_kwh
    bal = lm.constrain(
        "energy_balance",
        [(1.0, soc), (-keep, b.soc_start()), (-(p.eta_ch * dt)[:, None], ch), ((dt / p.eta_dis)[:, None], dis)],
        lb=rhs,
        ub=rhs,
        labels=labels,
    )
    b.rows["energy_balance"] = bal
    b.rows["soc_min"] = lm.constrain("soc_min", [(1.0, soc)], lb=p.soc_min_kwh, labels=labels)
    b.rows["soc_max"] = lm.constrain("soc_max", [(1.0, soc)], ub=p.soc_max_kwh, labels=labels)

    floor = np.isfinite(p.terminal_kwh)
    if floor.any():
        lm.constrain("terminal_soc", [(1.0, soc[floor, -1])], lb=p.terminal_kwh[floor], labels=(np.array(p.unit_ids)[floor],))
    if p.terminal_value_per_mwh:
        lm.maximize(p.terminal_value_per_mwh / 1000.0 * p.eta_dis, soc[:, -1])

    limited = np.isfinite(p.cycles_per_day)
    if limited.any():
        days = T * dt / 24.0
        rows = lm.rows("cycle_limit", (int(limited.sum()),), ub=(p.cycles_per_day * days * p.e_max)[limited], labels=(np.array(p.unit_ids)[limited],))
        lm.add_terms(rows[:, None], dt, dis[limited])

    lm.maximize(-(p.deg_cost_per_mwh / 1000.0 * dt)[:, None], dis)
    price = p.energy_price_per_mwh * dt / 1000.0
    w = p.wholesale_unit[:, None]
    lm.maximize(np.where(w, price[None, :], 0.0), dis)
    lm.maximize(np.where(w, -price[None, :], 0.0), ch)
    return b


def add_exclusivity(b: Built, mode: str, mask: np.ndarray) -> None:
    """Keep a unit from charging and discharging in the same interval.

    ``mask`` (U, T) selects where binaries go (mode 'binary' or 'lazy'); 'hull' adds
    ch/P_ch + dis/P_dis <= 1 everywhere (realizable by time-sharing within the interval).
    """
    p, lm = b.p, b.lm
    if mode == "hull":
        ok = (p.p_ch_max > 0) & (p.p_dis_max > 0)
        inv_ch = np.where(ok, 1.0 / np.where(ok, p.p_ch_max, 1.0), 0.0)
        inv_dis = np.where(ok, 1.0 / np.where(ok, p.p_dis_max, 1.0), 0.0)
        lm.constrain("exclusivity_hull", [(inv_ch, b.ch), (inv_dis, b.dis)], ub=1.0, labels=b.labels_ut)
        return
    if mode == "relaxed" or not mask.any():
        return
    u, t = np.nonzero(mask)
    m = lm.var("charging_mode", (len(u),), 0.0, 1.0, kind=INTEGER)
    labels = pair_labels(p.unit_ids, p.index, u, t)
    lm.constrain("charge_if_mode", [(1.0, b.ch[u, t]), (-p.p_ch_max[u, t], m)], ub=0.0, labels=labels)
    lm.constrain("discharge_if_not_mode", [(1.0, b.dis[u, t]), (p.p_dis_max[u, t], m)], ub=p.p_dis_max[u, t], labels=labels)
