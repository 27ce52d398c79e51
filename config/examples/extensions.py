"""Two example rules for ``solver.extensions`` (see config/examples/caiso_fleet_rules.yaml).

A rule receives ``m``, a Pyomo model holding the formulation's variables under the names of
docs/formulation.md (``m.charge_kw[unit, t]``, ``m.soc_kwh[unit, t]``, ``m.reserve_kw[k, unit, t]``,
``m.import_kw[site, t]``, ...; ``t`` is the interval's position), and ``p``, the problem (ids, limits,
``p.index``). It adds linear constraints, and variables of its own if it needs them; the engine compiles
them into every solve: the whole model, the decomposition's pieces, the daemon and backtests.
"""

from __future__ import annotations

import pyomo.environ as pyo

SITE = "sdge_storage"
PAIR = ("np-a-1", "np-a-2")


def site_ends_full_for_the_evening(m, p) -> None:
    """The units of SITE end the horizon holding at least 80 % of their energy between them (a
    site-level terminal SoC kept for the evening; the fleet's terminal rule is per unit)."""
    units = [u for i, u in enumerate(p.unit_ids) if p.site_ids[p.unit_site[i]] == SITE]
    if not units:
        return
    energy = sum(float(p.e_max[p.unit_ids.index(u)]) for u in units)
    last = len(p.index) - 1
    m.site_terminal_soc = pyo.Constraint(expr=sum(m.soc_kwh[u, last] for u in units) >= 0.8 * energy)


def never_charge_together(m, p) -> None:
    """The two units of PAIR (one shared transformer tap, say) never charge in the same interval: a
    binary of the rule's own says which of them may."""
    a, b = PAIR
    if a not in p.unit_ids or b not in p.unit_ids:
        return
    top = {u: float(p.p_ch_max[p.unit_ids.index(u)].max()) for u in PAIR}
    m.first_may_charge = pyo.Var(m.T, domain=pyo.Binary)
    m.first_charges_only_when_allowed = pyo.Constraint(m.T, rule=lambda m, t: m.charge_kw[a, t] <= top[a] * m.first_may_charge[t])
    m.second_charges_only_when_allowed = pyo.Constraint(m.T, rule=lambda m, t: m.charge_kw[b, t] <= top[b] * (1 - m.first_may_charge[t]))
