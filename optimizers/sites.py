"""Sites: the point-of-connection balance, import/export limits, retail tariff and demand charge.

Formulation item 7 and the tariff terms of the objective. Every site gets
import/export variables (also wholesale ones, whose exchange costs nothing here
because their battery energy is settled at the spot price in ``units.py``), so
DR baselines and fleet caps can speak of grid exchange uniformly.
"""

from __future__ import annotations

import numpy as np

from optimizers.context import Built


def pay_net_export(b: Built, value_per_kw: np.ndarray) -> None:
    """Pay each site ``value_per_kw`` (S, T) per kW of net export (export − import) in the objective:
    a price on grid exchange, as the decomposition's Lagrangian bound puts on DR delivery."""
    b.lm.maximize(value_per_kw, b.exp)
    b.lm.maximize(-value_per_kw, b.imp)


def add_sites(b: Built) -> None:
    p, lm = b.p, b.lm
    S, T = len(p.site_ids), len(p.index)
    labels = b.labels_st
    b.imp = lm.var("import", (S, T), labels=labels)
    b.exp = lm.var("export", (S, T), labels=labels)

    # import - export + Σ_{u at s} (dis - ch) = load - pv
    bal = lm.rows("site_balance", (S, T), lb=p.site_net_load_kw, ub=p.site_net_load_kw, labels=labels)
    lm.add_terms(bal, 1.0, b.imp)
    lm.add_terms(bal, -1.0, b.exp)
    site_rows = bal[p.unit_site]  # (U, T): the balance row of each unit's site
    lm.add_terms(site_rows, 1.0, b.dis)
    lm.add_terms(site_rows, -1.0, b.ch)

    for name, cols, limit in (("site_import_limit", b.imp, p.import_limit_kw), ("site_export_limit", b.exp, p.export_limit_kw)):
        finite = np.isfinite(limit)
        if finite.any():
            lm.constrain(name, [(1.0, cols[finite])], ub=limit[finite][:, None], labels=(np.array(p.site_ids)[finite], p.index))

    dt = p.dt_h
    retail = p.retail_site[:, None]
    lm.maximize(np.where(retail, -p.tou_price_per_mwh * dt / 1000.0, 0.0), b.imp)
    lm.maximize(np.where(retail, p.feed_in_per_mwh * dt / 1000.0, 0.0), b.exp)

    if p.grid_value_per_kw is not None:
        pay_net_export(b, p.grid_value_per_kw)
    charged = p.demand_charge_per_kw > 0
    b.peak = np.full(S, -1)
    if charged.any():
        ids = np.array(p.site_ids)[charged]
        peak = lm.var("peak_import", (int(charged.sum()),), lb=p.peak_so_far_kw[charged], labels=(ids,))
        b.peak[charged] = peak
        lm.constrain("peak_import_def", [(1.0, b.imp[charged]), (-1.0, peak[:, None])], ub=0.0, labels=(ids, p.index))
        lm.maximize(-p.demand_charge_per_kw[charged], peak)
