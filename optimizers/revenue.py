"""Expected revenue of a schedule, by stream and by unit, computed from the schedule itself.

Streams are recomputed from the solution (not read off the solver objective)
so they can be checked against it: the model objective minus ``objective_offset``
(which ``build_model`` passes to HiGHS as the objective constant) = Σ streams.
Retail sites report *savings* against the same site without the battery
(tariff energy and demand charge), which is what a C&I customer is sold.
"""

from __future__ import annotations

import numpy as np

from optimizers.problem import Problem
from vpp.schedule import Schedule


def revenue_streams(
    p: Problem,
    ch: np.ndarray,
    dis: np.ndarray,
    soc: np.ndarray,
    reserve: dict[str, np.ndarray],
    commitments: dict[str, float],
    reserve_from_charge: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Totals by stream, and by stream per unit: sums of ``revenue_by_interval``."""
    matrices = revenue_by_interval(p, ch, dis, soc, reserve, commitments, reserve_from_charge)
    return {k: float(m.sum()) for k, m in matrices.items()}, {k: m.sum(axis=1) for k, m in matrices.items()}


def schedule_of(
    p: Problem,
    ch: np.ndarray,
    dis: np.ndarray,
    soc: np.ndarray,
    reserve: dict[str, np.ndarray],
    commitments: dict[str, float],
    **rest,
) -> Schedule:
    """A ``Schedule`` for ``p`` with its revenue computed from the plan itself (never from a solver's
    objective): the one place every way of solving (whole, decomposed, aggregated) assembles one.
    ``rest`` carries the other ``Schedule`` fields (bids, site net, stats, ...)."""
    revenue, unit_revenue = revenue_streams(p, ch, dis, soc, reserve, commitments, rest.get("reserve_from_charge_kw"))
    return Schedule(
        index=p.index,
        unit_ids=p.unit_ids,
        site_ids=p.site_ids,
        charge_kw=ch,
        discharge_kw=dis,
        soc_kwh=soc,
        reserve_kw=reserve,
        dr_commitment_kw=commitments,
        revenue=revenue,
        unit_revenue=unit_revenue,
        **rest,
    )


def revenue_by_interval(
    p: Problem,
    ch: np.ndarray,
    dis: np.ndarray,
    soc: np.ndarray,
    reserve: dict[str, np.ndarray],
    commitments: dict[str, float],
    reserve_from_charge: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Every stream as a (U, T) matrix: what each unit earned in each interval.

    The optimizer's expected revenue and the settlement of metered operation
    (``vpp.settlement``) both come from here, so a backtest with perfect
    foresight settles to exactly what was planned. Site-level amounts (retail
    savings) are split over the site's units by their |power| in the interval;
    per-horizon amounts (DR payment, demand charge) are booked where they were
    earned: the DR payment over the event's intervals by delivered discharge,
    the demand-charge saving at the horizon's last interval.
    """
    U, T = p.shape
    dt = p.dt_h
    net = dis - ch
    out: dict[str, np.ndarray] = {}

    if p.wholesale_unit.any():
        out["energy"] = np.where(p.wholesale_unit[:, None], net * p.energy_price_per_mwh[None, :] * dt / 1000.0, 0.0)

    retail = p.retail_site
    if retail.any():
        site_net = np.zeros((len(p.site_ids), T))
        np.add.at(site_net, p.unit_site, net)
        imp = np.maximum(p.site_net_load_kw - site_net, 0.0)
        exp = np.maximum(site_net - p.site_net_load_kw, 0.0)
        base_imp, base_exp = np.maximum(p.site_net_load_kw, 0.0), np.maximum(-p.site_net_load_kw, 0.0)
        cost = lambda i, e: (p.tou_price_per_mwh * i - p.feed_in_per_mwh * e) * dt / 1000.0  # noqa: E731
        site_savings = np.where(retail[:, None], cost(base_imp, base_exp) - cost(imp, exp), 0.0)
        out["tou_savings"] = _share(site_savings, p.unit_site, np.abs(net), p.e_max)
        charged = retail & (p.demand_charge_per_kw > 0)
        if charged.any() and T:
            base_peak = np.maximum(p.peak_so_far_kw, base_imp.max(axis=1))
            peak = np.maximum(p.peak_so_far_kw, imp.max(axis=1))
            booked = np.zeros((len(p.site_ids), T))
            booked[:, -1] = np.where(charged, p.demand_charge_per_kw * (base_peak - peak), 0.0)
            out["demand_charge_savings"] = _share(booked, p.unit_site, np.zeros((U, T)), p.e_max)

    for prod in p.products:
        capacity = prod.value_per_mw_h * dt / 1000.0
        out[prod.id] = reserve[prod.id] * capacity[None, :]
        if prod.deployment_fraction and p.energy_price_per_mwh.any():
            # expected deployed energy, settled at the spot price: sold for up, bought for down
            energy = (1.0 if prod.is_up else -1.0) * prod.deployment_fraction * p.energy_price_per_mwh * dt / 1000.0
            out[f"{prod.id}.deployment_energy"] = reserve[prod.id] * energy[None, :]

    if p.events:
        dr = np.zeros((U, T))
        for e in p.events:
            if e.id not in commitments:
                continue
            members = e.sites[p.unit_site][:, None] & e.active[None, :]
            delivered = np.where(members, np.maximum(net, 0.0), 0.0)
            weights = delivered if delivered.sum() > 0 else np.where(members, p.e_max[:, None], 0.0)
            if weights.sum() > 0:
                dr += e.value_per_kw * commitments[e.id] * weights / weights.sum()
        out["demand_response"] = dr

    if (p.deg_cost_per_mwh > 0).any():
        # a plan (``reserve_from_charge`` given) also discharges the expected deployment of the part of
        # each allocation held on the discharge side (up: more, down: less); metered discharge already
        # holds what was deployed
        expected = dis.copy()
        for prod in p.products if reserve_from_charge is not None else ():
            if prod.deployment_fraction:
                on_discharge = reserve[prod.id] - reserve_from_charge[prod.id]
                expected += (1.0 if prod.is_up else -1.0) * prod.deployment_fraction * on_discharge
        out["degradation"] = -(p.deg_cost_per_mwh[:, None] / 1000.0 * dt) * expected
    if p.terminal_value_per_mwh and T:
        terminal = np.zeros((U, T))
        terminal[:, -1] = p.terminal_value_per_mwh / 1000.0 * p.eta_dis * (soc[:, -1] - soc[:, 0])
        out["terminal_value"] = terminal
    return out


def objective_offset(p: Problem) -> float:
    """The constant the solver objective carries besides the streams: the no-battery retail bill
    and demand charge enter as negatives, the initial stored energy's terminal value as a positive."""
    dt = p.dt_h
    offset = 0.0
    retail = p.retail_site
    if retail.any():
        base_imp, base_exp = np.maximum(p.site_net_load_kw, 0.0), np.maximum(-p.site_net_load_kw, 0.0)
        offset -= float((((p.tou_price_per_mwh * base_imp - p.feed_in_per_mwh * base_exp) * dt / 1000.0).sum(axis=1))[retail].sum())
        charged = retail & (p.demand_charge_per_kw > 0)
        offset -= float((p.demand_charge_per_kw * np.maximum(p.peak_so_far_kw, base_imp.max(axis=1)))[charged].sum())
    if p.terminal_value_per_mwh:
        offset += float((p.terminal_value_per_mwh / 1000.0 * p.eta_dis * p.soc0_kwh).sum())
    return offset


def _share(site_amount: np.ndarray, unit_site: np.ndarray, weights: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Split each site's (S, T) amount over its units in proportion to ``weights`` (U, T) in each
    interval; where a site's units have no weight, in proportion to ``fallback`` (U,)."""
    w = np.maximum(weights, 0.0)
    site_w = np.zeros_like(site_amount)
    np.add.at(site_w, unit_site, w)
    site_fb = np.bincount(unit_site, fallback, site_amount.shape[0])
    use_w = site_w[unit_site] > 0
    share = np.where(use_w, w / np.where(use_w, site_w[unit_site], 1.0), (fallback / site_fb[unit_site])[:, None])
    return site_amount[unit_site] * share
