"""Rules for tests/test_extensions.py (a module the engine imports by name, as a user's package would be)."""

from __future__ import annotations

import pyomo.environ as pyo


def never_charge_u0_and_u1(m, p) -> None:
    m.u0_may_charge = pyo.Var(m.T, domain=pyo.Binary)
    m.u0_only_when_allowed = pyo.Constraint(m.T, rule=lambda m, t: m.charge_kw["u0", t] <= float(p.p_ch_max[0].max()) * m.u0_may_charge[t])
    m.u1_only_when_allowed = pyo.Constraint(m.T, rule=lambda m, t: m.charge_kw["u1", t] <= float(p.p_ch_max[1].max()) * (1 - m.u0_may_charge[t]))


def u1_above_its_window(m, p) -> None:
    """Impossible: u1 above its own SoC ceiling at the end (an infeasibility report must name this rule)."""
    m.u1_too_full = pyo.Constraint(expr=m.soc_kwh["u1", len(p.index) - 1] >= 1.2 * float(p.e_max[1]))


def u0_and_u1_never_export_together(m, p) -> None:
    """A rule across two sites whose limits bind (each its own decomposition piece): refused there."""
    m.two_sites = pyo.Constraint(m.T, rule=lambda m, t: m.discharge_kw["u0", t] + m.discharge_kw["u1", t] <= 80.0)


def u0_and_u1_charge_at_most_100_kw(m, p) -> None:
    """A shared feeder: the two units' charging together stays within 100 kW (linear, no binary)."""
    m.shared_feeder = pyo.Constraint(m.T, rule=lambda m, t: m.charge_kw["u0", t] + m.charge_kw["u1", t] <= 100.0)
