"""Operator overrides that are constraints (formulation item 10).

Unit outages, SoC floors/ceilings and blocked products were already folded into
the problem's limits by ``build_problem``; what is left needs rows: forced unit
or site power and fleet-wide caps on grid export/import.
"""

from __future__ import annotations

import numpy as np

from optimizers.context import Built, pair_labels


def add_overrides(b: Built) -> None:
    p, lm = b.p, b.lm
    assert b.imp is not None and b.exp is not None
    u, t = np.nonzero(np.isfinite(p.forced_unit_kw))
    if u.size:
        lm.constrain("override_unit_power", [(1.0, b.dis[u, t]), (-1.0, b.ch[u, t])], lb=p.forced_unit_kw[u, t], ub=p.forced_unit_kw[u, t], labels=pair_labels(p.unit_ids, p.index, u, t))
    s, t = np.nonzero(np.isfinite(p.forced_site_kw))
    if s.size:
        rows = lm.rows("override_site_power", (s.size,), lb=p.forced_site_kw[s, t], ub=p.forced_site_kw[s, t], labels=pair_labels(p.site_ids, p.index, s, t))
        for k in range(s.size):
            members = np.flatnonzero(p.unit_site == s[k])
            lm.add_terms(rows[k], 1.0, b.dis[members, t[k]])
            lm.add_terms(rows[k], -1.0, b.ch[members, t[k]])
    for name, cols, cap in (("override_fleet_export_cap", b.exp, p.fleet_export_cap_kw), ("override_fleet_import_cap", b.imp, p.fleet_import_cap_kw)):
        t = np.flatnonzero(np.isfinite(cap))
        if t.size:
            rows = lm.rows(name, (t.size,), ub=cap[t], labels=(p.index[t],))
            lm.add_terms(rows[None, :], 1.0, cols[:, t])
