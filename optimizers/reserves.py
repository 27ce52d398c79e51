"""Ancillary products: per-unit allocations, headroom in power and energy, deployment, fleet bids.

Formulation items 2, 4 (reserve-energy part, split form), 3 (expected
deployment), 7 (deployment must fit the site connection) and 8 (bids in blocks
with a minimum). Each allocation is split into the part delivered by changing
charging (``r_ch``) and the part delivered by changing discharging (``r_dis``):
up-reserve from reduced charging costs only the energy not stored (η_ch·r·D),
from added discharge the energy released (r·D/η_dis); symmetrically for down.
The reserve must be sustainable from the SoC at both ends of the interval.
"""

from __future__ import annotations

import numpy as np

from optimizers.context import Built
from optimizers.problem import ProductData
from optimizers.quantity import Quantity, Total, add_quantity


def add_reserves(b: Built) -> None:
    if not b.p.products:
        return
    _shared_rows(b)
    for prod in b.p.products:
        _add_product(b, prod)
    _throughput_rows(b)


def _throughput_rows(b: Built) -> None:
    """Valid rows: a fleet too small to reach a product's minimum from idle must move power to offer it.

    Up-reserve comes from reduced charging or added discharge, so up-bids q_k need Σ ch ≥ Σ_k q_k − Σ P_dis;
    with each q_k ∈ {0} ∪ [min_k, max] that gives Σ_u ch_u ≥ Σ_k (1 − Σ P_dis / min_k) · q_k (any bid that
    is on has q_k / min_k ≥ 1; products whose minimum an idle fleet reaches are left out). The
    relaxation otherwise offers part of a minimum bid from an idle battery, free of throughput: on the
    2-unit bench fleet it offered 640 kW of reg-down and 750 kW of spin at once, at 0 kW, where a 1 MW
    bid needs the whole fleet charging (up) or discharging (down). Symmetric for down-reserve with
    discharge and Σ P_ch. Intervals with a submitted bid are left out (it may be below the minimum).
    Measured in docs/architecture.md (decision 24).
    """
    p, lm = b.p, b.lm
    for up in (True, False):
        room = (p.p_dis_max if up else p.p_ch_max).sum(axis=0)  # (T,)
        terms = []
        for prod in p.products:
            q = b.bids[prod.id]
            if prod.is_up != up or not isinstance(q, Quantity) or prod.min_kw <= 0:
                continue
            share = np.where(np.isfinite(prod.fixed_kw), 0.0, np.maximum(1.0 - room / prod.min_kw, 0.0))
            if (share > 0).any():
                terms.append((share * q.scale, q.cols))
        if terms:
            rows = lm.rows(f"throughput_for_{'up' if up else 'down'}_bids", (len(p.index),), ub=0.0, labels=(p.index,))
            for coef, cols in terms:
                lm.add_terms(rows, coef, cols)
            lm.add_terms(rows[None, :], -1.0, b.ch if up else b.dis)


def _shared_rows(b: Built) -> None:
    """Rows every product adds to: unit headroom, start-of-interval reserve energy, site deployment room."""
    p, lm = b.p, b.lm
    U, T = p.shape
    lab = b.labels_ut
    r = b.rows
    if any(x.is_up for x in p.products):
        r["up_from_charge"] = lm.constrain("headroom_up_from_charge", [(-1.0, b.ch)], ub=0.0, labels=lab)
        r["up_from_discharge"] = lm.constrain("headroom_up_from_discharge", [(1.0, b.dis)], ub=p.p_dis_max, labels=lab)
        start_rhs = np.zeros((U, T))
        start_rhs[:, 0] = -p.soc0_kwh
        r["soc_min_start"] = lm.constrain("soc_min_with_reserve_start", [(1.0, b.soc_start())], lb=p.soc_min_kwh + start_rhs, labels=lab)
    if any(not x.is_up for x in p.products):
        r["down_from_discharge"] = lm.constrain("headroom_down_from_discharge", [(-1.0, b.dis)], ub=0.0, labels=lab)
        r["down_from_charge"] = lm.constrain("headroom_down_from_charge", [(1.0, b.ch)], ub=p.p_ch_max, labels=lab)
        start_rhs = np.zeros((U, T))
        start_rhs[:, 0] = -p.soc0_kwh
        r["soc_max_start"] = lm.constrain("soc_max_with_reserve_start", [(1.0, b.soc_start())], ub=p.soc_max_kwh + start_rhs, labels=lab)
    # deployment must fit the connection: Σ(dis - ch + up) <= X + load - pv ; Σ(ch - dis + down) <= I - load + pv
    site_lab = b.labels_st
    for key, limit, sign in (("site_up_room", p.export_limit_kw, 1.0), ("site_down_room", p.import_limit_kw, -1.0)):
        finite = np.isfinite(limit)
        if not finite.any():
            continue
        room = np.where(finite[:, None], limit[:, None] + sign * p.site_net_load_kw, np.inf)
        rows = lm.rows(f"site_{'export' if sign > 0 else 'import'}_room_for_reserves", room.shape, ub=room, labels=site_lab)
        unit_rows = rows[p.unit_site]
        lm.add_terms(unit_rows, sign, b.dis)
        lm.add_terms(unit_rows, -sign, b.ch)
        r[key] = rows


def _add_product(b: Built, prod: ProductData) -> None:
    p, lm = b.p, b.lm
    U, T = p.shape
    lab = b.labels_ut
    usable = prod.eligible[:, None] & ~prod.blocked[None, :]
    cap_ch = np.where(usable, p.p_ch_max, 0.0)
    cap_dis = np.where(usable, p.p_dis_max, 0.0)
    r_ch = lm.var(f"{prod.id}.from_charge", (U, T), 0.0, cap_ch, labels=lab)
    r_dis = lm.var(f"{prod.id}.from_discharge", (U, T), 0.0, cap_dis, labels=lab)
    b.reserve[prod.id] = (r_ch, r_dis)
    eta_ch, eta_dis = p.eta_ch[:, None], p.eta_dis[:, None]
    dt, D, alpha = p.dt_h, prod.sustain_h, prod.deployment_fraction
    # energy one kW of allocation moves per hour, seen from the cells: η_ch for the charge side, 1/η_dis for the discharge side
    per_ch, per_dis = eta_ch * np.ones((1, T)), (1.0 / eta_dis) * np.ones((1, T))
    r = b.rows
    if prod.is_up:
        lm.add_terms(r["up_from_charge"], 1.0, r_ch)
        lm.add_terms(r["up_from_discharge"], 1.0, r_dis)
        for key in ("soc_min", "soc_min_start"):
            lm.add_terms(r[key], -D * per_ch, r_ch)
            lm.add_terms(r[key], -D * per_dis, r_dis)
    else:
        lm.add_terms(r["down_from_charge"], 1.0, r_ch)
        lm.add_terms(r["down_from_discharge"], 1.0, r_dis)
        for key in ("soc_max", "soc_max_start"):
            lm.add_terms(r[key], D * per_ch, r_ch)
            lm.add_terms(r[key], D * per_dis, r_dis)
    sign = prod.deployment_sign  # up: more discharge, which drains the cells
    if alpha:
        lm.add_terms(r["energy_balance"], sign * alpha * dt * per_ch, r_ch)
        lm.add_terms(r["energy_balance"], sign * alpha * dt * per_dis, r_dis)
    if alpha and (p.deg_cost_per_mwh > 0).any():
        # the expected deployment moves discharge too (up: more, down: less): it pays or saves the
        # degradation cost of the energy that leaves the cells, as scheduled discharge does
        lm.maximize(-sign * alpha * (p.deg_cost_per_mwh / 1000.0 * dt)[:, None] * np.ones((1, T)), r_dis)
    room = r.get("site_up_room" if prod.is_up else "site_down_room")
    if room is not None:
        lm.add_terms(room[p.unit_site], 1.0, r_ch)
        lm.add_terms(room[p.unit_site], 1.0, r_dis)

    # capacity (+ mileage) value, and the expected deployed energy settled at the spot price
    value = prod.value_per_mw_h * dt / 1000.0 + sign * alpha * p.energy_price_per_mwh * dt / 1000.0
    free = prod.min_kw <= 0 and prod.increment_kw <= 0 and not np.isfinite(prod.fixed_kw).any()
    pinned = bool(np.isfinite(prod.fixed_kw).all())
    if free or pinned:
        # paid on the allocations: a pinned model (a decomposition repair) then has the reduced costs of
        # the free one it adds the bid's column and row to, so that one's basis stays dual feasible
        # (``lp.carried``). Where the bid's blocks are still to be chosen the value stays on the bid
        # column: branch-and-bound needs it on the integers (with it on the allocations, a 24-unit
        # random fleet found no solution in 39 s that it otherwise found in 31 s).
        lm.maximize(value[None, :], r_ch)
        lm.maximize(value[None, :], r_dis)
    if free:
        # no block rule and nothing pinned: the bid is the mere sum of the allocations, so it gets no
        # column and no row of its own (those rows tie every unit together: a 4-unit decomposition
        # piece solved in 10.4 ms without them against 14.2 ms with them, docs/architecture.md)
        b.bids[prod.id] = Total((r_ch, r_dis))
        return
    max_bid = np.where(prod.blocked, 0.0, (cap_ch + cap_dis).sum(axis=0))
    bid = add_quantity(lm, f"bid.{prod.id}", (T,), increment=prod.increment_kw, minimum=prod.min_kw, maximum=max_bid, fixed=prod.fixed_kw, labels=(p.index,))
    b.bids[prod.id] = bid
    agg = lm.constrain("bid_equals_allocations", [bid.terms(-1.0)], lb=0.0, ub=0.0, labels=(p.index,))
    lm.add_terms(agg[None, :], 1.0, r_ch)
    lm.add_terms(agg[None, :], 1.0, r_dis)
    if not pinned:
        lm.maximize(value * bid.scale, bid.cols)
