"""Annuities, NPV and IRR: the finance the transfer-factor method rests on.

Written out here (not taken from numpy-financial) so the conventions are in
one place a reviewer can read: payments at the *end* of each year, year 0 is
the investment, the discount factor is ``(1 + rate) ** -year``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import brentq

# IRRs are searched in this bracket: from a near-total loss to 10,000 % a year,
# wide enough for any storage project, narrow enough to keep NPV finite.
_IRR_LOWEST = -0.99
_IRR_HIGHEST = 100.0


def annuity_factor(rate: float, years: int) -> float:
    """Present value of 1 paid at the end of each of ``years`` years.

    The capital recovery factor ``i(1+i)^n / ((1+i)^n - 1)`` is its inverse;
    at a zero rate it degenerates to ``n``, which the closed form cannot express.
    """
    if rate == 0:
        return float(years)
    # (1 − (1+r)^−n) / r, written with expm1/log1p so that tiny rates keep their precision
    return -math.expm1(-years * math.log1p(rate)) / rate


def annualized_cost(investment: float, residual_rate: float, discount_rate: float, life_years: int) -> float:
    """``C_annual = C_inv·(1 − k)·i(1+i)^n / ((1+i)^n − 1)``: the level yearly charge that repays the investment.

    The residual value ``k·C_inv`` is taken off the amount to recover, as the method states.
    """
    return investment * (1 - residual_rate) / annuity_factor(discount_rate, life_years)


def project_cash_flows(investment: float, annual_income: float, life_years: int, residual_value: float) -> np.ndarray:
    """Year 0 pays ``investment``; years 1..n earn ``annual_income``; year n also returns ``residual_value``."""
    flows = np.full(life_years + 1, annual_income, dtype=float)
    flows[0] = -investment
    flows[-1] += residual_value
    return flows


def npv(rate: float, cash_flows: Sequence[float] | np.ndarray) -> float:
    """Net present value with ``cash_flows[t]`` at the end of year ``t`` (year 0 undiscounted)."""
    flows = np.asarray(cash_flows, dtype=float)
    return float(np.sum(flows * (1 + rate) ** -np.arange(flows.size)))


def irr(cash_flows: Sequence[float] | np.ndarray) -> float | None:
    """The rate at which NPV is zero, or ``None`` when there is none in the search bracket.

    A root-finder on the NPV rather than polynomial roots: for a project (one
    outflow, then inflows) NPV falls monotonically with the rate, so a sign
    change in the bracket means exactly one IRR. ``None`` means the project
    never pays back (or the flows have no sign change), which callers show as "n/a".
    """
    if npv(_IRR_LOWEST, cash_flows) * npv(_IRR_HIGHEST, cash_flows) > 0:
        return None
    return float(brentq(npv, _IRR_LOWEST, _IRR_HIGHEST, args=(cash_flows,), xtol=1e-12, rtol=1e-12, maxiter=500))


def required_annual_income(investment: float, rate: float, years: int, residual_value: float) -> float:
    """The level yearly income at which NPV at ``rate`` is exactly zero, i.e. the IRR is exactly ``rate``.

    NPV is linear in the income, so the station meets a target IRR exactly when
    its income is at least this; this is what makes the λ interval analytic.
    """
    return (investment - residual_value * (1 + rate) ** -years) / annuity_factor(rate, years)
