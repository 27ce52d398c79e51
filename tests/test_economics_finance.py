"""Annuities, NPV and IRR against hand-worked numbers and an independent polynomial-root IRR."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpp.economics.finance import (
    annualized_cost,
    annuity_factor,
    irr,
    npv,
    project_cash_flows,
    required_annual_income,
)


def test_annuity_factor_is_the_sum_of_discount_factors():
    # 1/1.1 + 1/1.21
    assert annuity_factor(0.10, 2) == pytest.approx(0.9090909090909091 + 0.8264462809917355)


def test_annuity_factor_at_zero_rate_counts_the_years():
    assert annuity_factor(0.0, 15) == 15


def test_annuity_factor_at_a_vanishing_rate_tends_to_the_year_count():
    assert annuity_factor(1e-300, 2) == pytest.approx(2)


def test_annualized_cost_follows_the_capital_recovery_formula():
    # 1000 · 0.1 · 1.1² / (1.1² − 1) = 121 / 0.21
    assert annualized_cost(1000, 0.0, 0.10, 2) == pytest.approx(576.1904761904762)


def test_annualized_cost_recovers_only_the_non_residual_part():
    # 1000 · (1 − 0.05) · 121 / 210
    assert annualized_cost(1000, 0.05, 0.10, 2) == pytest.approx(547.3809523809524)


def test_annualized_cost_over_one_year_is_the_investment_plus_interest():
    assert annualized_cost(1000, 0.0, 0.08, 1) == pytest.approx(1080)


def test_annualized_cost_at_zero_rate_is_straight_line():
    # 1000 · (1 − 0.2) / 4
    assert annualized_cost(1000, 0.2, 0.0, 4) == pytest.approx(200)


def test_cash_flows_return_the_residual_in_the_final_year():
    assert project_cash_flows(100, 30, 3, 5).tolist() == [-100, 30, 30, 35]


def test_npv_discounts_year_t_by_one_plus_rate_to_the_t():
    # −100 + 60/1.1 + 60/1.21
    assert npv(0.10, [-100, 60, 60]) == pytest.approx(-100 + 54.54545454545455 + 49.586776859504134)


def test_irr_of_a_one_year_project_is_its_return():
    assert irr([-100, 110]) == pytest.approx(0.10, abs=1e-12)


def test_irr_of_a_two_year_project_solves_the_quadratic():
    # 100 = 60v + 60v²  ⇒  v = (−60 + √(60² + 4·60·100)) / 120, IRR = 1/v − 1
    v = (-60 + math.sqrt(60**2 + 4 * 60 * 100)) / 120
    assert irr([-100, 60, 60]) == pytest.approx(1 / v - 1, abs=1e-10)


def test_irr_is_none_when_the_project_never_pays_back_anything():
    assert irr([-100, -10, -10]) is None


def test_irr_is_none_when_there_is_no_outflow():
    assert irr([100, 10, 10]) is None


def _irr_by_polynomial_roots(flows: list[float]) -> float:
    """numpy-financial's way: the roots of Σ c_t·x^t with x = 1/(1+r); a project has exactly one positive real root."""
    roots = np.roots(flows[::-1])
    real = [r.real for r in roots if abs(r.imag) < 1e-9 and r.real > 0]
    assert len(real) == 1
    return 1 / real[0] - 1


@settings(max_examples=60, deadline=None)
@given(
    investment=st.floats(1e3, 1e9),
    income_share=st.floats(0.02, 0.6),
    years=st.integers(1, 25),
    residual_share=st.floats(0, 0.2),
)
def test_irr_matches_the_polynomial_root_for_conventional_projects(investment, income_share, years, residual_share):
    flows = project_cash_flows(investment, investment * income_share, years, investment * residual_share).tolist()
    expected = _irr_by_polynomial_roots(flows)
    assert irr(flows) == pytest.approx(expected, abs=1e-8)


def test_required_income_makes_npv_zero_at_the_rate():
    # 100 / (1/1.1 + 1/1.21) = 100 · 1.21 / 2.1
    assert required_annual_income(100, 0.10, 2, 0.0) == pytest.approx(57.61904761904762)


def test_required_income_is_lowered_by_the_discounted_residual():
    # (100 − 12.1/1.21) · 1.21 / 2.1 = 90 · 1.21 / 2.1
    assert required_annual_income(100, 0.10, 2, 12.1) == pytest.approx(51.857142857142854)
