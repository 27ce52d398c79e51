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


def revenue_streams(
    p: Problem,
    ch: np.ndarray,
    dis: np.ndarray,
    soc: np.ndarray,
    reserve: dict[str, np.ndarray],
    bids: dict[str, np.ndarray],
    commitments: dict[str, float],
    imp: np.ndarray,
    exp: np.ndarray,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    U, T = p.shape
    dt = p.dt_h
    net = dis - ch
    streams: dict[str, float] = {}
    per_unit: dict[str, np.ndarray] = {}

    def put(name: str, unit_values: np.ndarray, total: float | None = None) -> None:
        streams[name] = float(unit_values.sum() if total is None else total)
        per_unit[name] = unit_values

    if p.wholesale_unit.any():
        put("energy", np.where(p.wholesale_unit, (net * p.energy_price_per_mwh * dt / 1000.0).sum(axis=1), 0.0))

    retail = p.retail_site
    if retail.any():
        base_imp, base_exp = np.maximum(p.site_net_load_kw, 0.0), np.maximum(-p.site_net_load_kw, 0.0)
        cost = lambda i, e: ((p.tou_price_per_mwh * i - p.feed_in_per_mwh * e) * dt / 1000.0).sum(axis=1)  # noqa: E731
        site_savings = np.where(retail, cost(base_imp, base_exp) - cost(imp, exp), 0.0)
        marginal = (p.tou_price_per_mwh[p.unit_site] * net * dt / 1000.0).sum(axis=1)
        put("tou_savings", _share(site_savings, p.unit_site, marginal, p.e_max), float(site_savings.sum()))
        charged = retail & (p.demand_charge_per_kw > 0)
        if charged.any():
            base_peak = np.maximum(p.peak_so_far_kw, base_imp.max(axis=1))
            peak = np.maximum(p.peak_so_far_kw, imp.max(axis=1))
            dc = np.where(charged, p.demand_charge_per_kw * (base_peak - peak), 0.0)
            put("demand_charge_savings", _share(dc, p.unit_site, np.zeros(U), p.e_max), float(dc.sum()))

    for prod in p.products:
        capacity = prod.value_per_mw_h * dt / 1000.0
        put(prod.id, (reserve[prod.id] * capacity[None, :]).sum(axis=1), float((bids[prod.id] * capacity).sum()))
        if prod.deployment_fraction and p.energy_price_per_mwh.any():
            # expected deployed energy, settled at the spot price: sold for up, bought for down
            energy = (1.0 if prod.is_up else -1.0) * prod.deployment_fraction * p.energy_price_per_mwh * dt / 1000.0
            put(f"{prod.id}.deployment_energy", (reserve[prod.id] * energy[None, :]).sum(axis=1), float((bids[prod.id] * energy).sum()))

    if p.events:
        dr_units = np.zeros(U)
        total = 0.0
        for e in p.events:
            if e.id not in commitments:
                continue
            amount = e.value_per_kw * commitments[e.id]
            total += amount
            members = e.sites[p.unit_site]
            delivered = np.where(members, np.maximum(net[:, e.active], 0.0).sum(axis=1), 0.0)
            weights = delivered if delivered.sum() > 0 else np.where(members, p.e_max, 0.0)
            if weights.sum() > 0:
                dr_units += amount * weights / weights.sum()
        put("demand_response", dr_units, total)

    if (p.deg_cost_per_mwh > 0).any():
        put("degradation", -(p.deg_cost_per_mwh / 1000.0 * dt) * dis.sum(axis=1))
    if p.terminal_value_per_mwh:
        put("terminal_value", p.terminal_value_per_mwh / 1000.0 * p.eta_dis * (soc[:, -1] - soc[:, 0]))
    return streams, per_unit


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
    """Split each site's amount over its units in proportion to ``weights`` (else ``fallback``)."""
    out = np.zeros(len(unit_site))
    for s in np.unique(unit_site):
        members = unit_site == s
        w = np.maximum(weights[members], 0.0)
        if w.sum() <= 0:
            w = fallback[members]
        out[members] = site_amount[s] * w / w.sum()
    return out
