"""Demand-response events: a committed reduction of the member sites' net import below their baseline.

Formulation item 9. The commitment is offered in increments with a minimum
(same block rule as bids); a mandatory event must be joined. Reduction is
measured at the grid connection (baseline import − actual net import), so a
battery charging during an event counts against it.
"""

from __future__ import annotations

import numpy as np

from optimizers.context import Built
from optimizers.quantity import add_quantity


def add_demand_response(b: Built) -> None:
    p, lm = b.p, b.lm
    assert b.imp is not None and b.exp is not None
    for e in p.events:
        t = np.flatnonzero(e.active)
        if t.size == 0 or not e.sites.any():
            continue
        units = e.sites[p.unit_site]
        most = float((p.p_dis_max[units][:, t].min(axis=1) + p.p_ch_max[units][:, t].min(axis=1)).sum()) if units.any() else 0.0
        c = add_quantity(lm, f"dr.{e.id}", (1,), increment=e.increment_kw, minimum=e.min_kw, maximum=np.array([min(most, e.max_kw)]), mandatory=e.mandatory)
        b.commitments[e.id] = c
        # Σ_s (export - import) - C >= -baseline   <=>   baseline - net import >= C
        rows = lm.rows(f"dr_delivery.{e.id}", (t.size,), lb=-e.baseline_kw[t], labels=(p.index[t],))
        b.rows[f"dr_delivery.{e.id}"] = np.where(e.active, np.cumsum(e.active) - 1 + rows[0], -1)  # (T,) row or -1
        s = np.flatnonzero(e.sites)
        lm.add_terms(rows[None, :], 1.0, b.exp[s][:, t])
        lm.add_terms(rows[None, :], -1.0, b.imp[s][:, t])
        lm.add_terms(rows, -c.scale, np.broadcast_to(c.cols, rows.shape))
        lm.maximize(e.value_per_kw * c.scale, c.cols)
