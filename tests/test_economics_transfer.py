"""The transfer-factor method on a small case whose numbers are worked by hand.

Station: 1,000 kW / 2,000 kWh, c_P 100, c_E 200 → C_inv = 500,000; O&M 10/kW → 10,000/yr.
Finance: i = 10 %, n = 2, k = 0 → C_annual = 500,000 · 1.21·0.1 / 0.21 = 288,095.238.
Spot: 100 cycles × 2,000 kWh × (0.7 − 0.2) × η 0.8 = 80,000 → C_market = 70,000.
Target IRR 20 %: C_required = 500,000 / (1/1.2 + 1/1.44) = 500,000 · 1.44 / 2.2 = 327,272.727.
Wind plants (2 × 1,000 kW, 10 %, 2 h → 200 kW / 400 kWh): own capex 20,000 + 80,000 = 100,000,
annualized 57,619.048, O&M 2,000, generation revenue 2 · 1,000 · 2,000 h · 0.5 = 2,000,000,
avoided curtailment 1 % = 20,000, avoided penalties 0.5 % = 10,000 → ceiling 29,619.048.
Grid: 5,000,000/MW · 1 MW · 5 % · 0.9 = 225,000 deferred + 1,000 kW · 20 · 0.5 · 1.5 = 15,000 → 240,000.
"""

import copy
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpp.economics.case import SimulationSummary, parse_case
from vpp.economics.finance import npv, project_cash_flows
from vpp.economics.market import ScaleBy, case_market_revenue, simulated_market_revenue
from vpp.economics.transfer import (
    LinearCondition,
    PayerCeiling,
    analyse_transfer_factor,
    feasible_interval,
    grid_ceiling,
    renewable_ceiling,
    split_payments,
)

C_ANNUAL = 500_000 * 0.121 / 0.21
C_REQUIRED_20 = 500_000 * 1.44 / 2.2
RENEWABLE_CEILING = 100_000 * 0.121 / 0.21 + 2_000 - 20_000 - 10_000
GRID_CEILING = 240_000.0

SMALL_CASE = {
    "currency": "EUR",
    "station": {
        "power_kw": 1000,
        "energy_kwh": 2000,
        "cost_per_kw": 100,
        "cost_per_kwh": 200,
        "om_cost_per_kw_year": 10,
        "round_trip_efficiency": 0.8,
        "charging_efficiency": 0.9,
    },
    "finance": {"discount_rate": 0.10, "life_years": 2, "residual_rate": 0.0, "target_irr": 0.20},
    "market": {"source": "spot", "cycles_per_year": 100, "charge_price_per_kwh": 0.2, "discharge_price_per_kwh": 0.7},
    "renewables": [
        {
            "name": "wind",
            "count": 2,
            "capacity_kw": 1000,
            "storage_power_ratio": 0.1,
            "storage_duration_h": 2,
            "cost_per_kw": 100,
            "cost_per_kwh": 200,
            "om_cost_per_kw_year": 10,
            "full_load_hours": 2000,
            "tariff_per_kwh": 0.5,
            "curtailment_avoided_share": 0.01,
            "penalty_avoided_share": 0.005,
        }
    ],
    "grid": [
        {
            "name": "grid",
            "network_cost_per_mw": 5_000_000,
            "depreciation_rate": 0.05,
            "demand_response_price_per_kw_year": 20,
            "duration_coefficient": 0.5,
            "response_speed_coefficient": 1.5,
        }
    ],
    "transfer_factor": {"min": 0, "max": 1, "step": 0.25},
}


def small_case(**changes):
    """The small case with ``section__field`` values replaced (in the first entry of a list section)."""
    data = copy.deepcopy(SMALL_CASE)
    for path, value in changes.items():
        section, field = path.split("__")
        target = data[section][0] if isinstance(data[section], list) else data[section]
        target[field] = value
    return parse_case(data, "small case")


def test_renewable_ceiling_is_own_storage_cost_less_what_it_avoids():
    case = small_case()
    ceiling = renewable_ceiling(case.renewables[0], case.finance)
    assert ceiling.ceiling == pytest.approx(29_619.047619, rel=1e-9)
    assert dict(ceiling.components)["avoided curtailment"] == pytest.approx(-20_000)


def test_grid_ceiling_is_deferred_network_plus_replaced_demand_response():
    case = small_case()
    assert grid_ceiling(case.grid[0], case.station).ceiling == pytest.approx(225_000 + 15_000)


def test_spot_revenue_is_cycles_energy_spread_efficiency_less_om():
    case = small_case()
    revenue = case_market_revenue(case.station, case.market)
    assert (revenue.streams_annual, revenue.om_annual, revenue.net_annual) == pytest.approx((80_000, 10_000, 70_000))


def test_peak_shaving_revenue_uses_the_shaving_price():
    data = copy.deepcopy(SMALL_CASE)
    data["market"] = {"source": "peak_shaving", "cycles_per_year": 200, "shave_price_per_kwh": 0.3}
    case = parse_case(data)
    # 200 · 2,000 · 0.3 · 0.8 − 10,000
    assert case_market_revenue(case.station, case.market).net_annual == pytest.approx(86_000)


def test_regulation_adds_capacity_and_mileage_payments():
    data = copy.deepcopy(SMALL_CASE)
    data["market"]["regulation"] = [
        {
            "name": "AGC",
            "capacity_mw": 10,
            "capacity_price_per_mw": 5,
            "availability": 0.9,
            "awards_per_year": 1000,
            "mileage_mw": 2,
            "mileage_price_per_mw": 3,
            "performance": 1.2,
            "actions_per_year": 500,
        }
    ]
    revenue = case_market_revenue(parse_case(data).station, parse_case(data).market)
    # 10·5·0.9·1000 + 2·3·1.2·500
    assert revenue.regulation_annual == pytest.approx(45_000 + 3_600)
    assert revenue.net_annual == pytest.approx(70_000 + 48_600)


def test_capacity_income_is_split_in_proportion_to_the_ceilings():
    ceilings = (PayerCeiling("a", "renewable", 30, ()), PayerCeiling("b", "grid", 10, ()))
    assert split_payments(20, ceilings) == pytest.approx((15, 5))


def test_a_payer_with_a_ceiling_at_or_below_zero_pays_nothing():
    ceilings = (
        PayerCeiling("a", "renewable", 30, ()),
        PayerCeiling("b", "renewable", -5, ()),
        PayerCeiling("c", "grid", 10, ()),
    )
    assert split_payments(20, ceilings) == pytest.approx((15, 0, 5))


def test_interval_ends_are_set_by_the_ceilings_and_by_the_target_irr():
    result = analyse_transfer_factor(small_case())
    # ceilings: C_annual − 70,000·λ ≤ 269,619.048  ⇒  λ ≥ 18,476.190 / 70,000
    lower = result.interval.lower.transfer_factor
    assert lower == pytest.approx((C_ANNUAL - RENEWABLE_CEILING - GRID_CEILING) / 70_000)
    assert lower == pytest.approx(0.263945578, abs=1e-9)
    assert "ceilings" in result.interval.lower.reason
    # IRR: C_annual + (1 − λ)·70,000 ≥ 327,272.727  ⇒  λ ≤ 1 − 39,177.489 / 70,000
    assert result.interval.upper.transfer_factor == pytest.approx(0.440321583, abs=1e-9)
    assert "IRR ≥ 20.0%" in result.interval.upper.reason
    assert result.required_income == pytest.approx(C_REQUIRED_20)


def test_at_the_upper_end_the_station_earns_exactly_its_target_irr():
    result = analyse_transfer_factor(small_case())
    upper = next(p for p in result.points if "upper end" in p.labels)
    assert upper.irr == pytest.approx(0.20, abs=1e-9)
    assert upper.station_income == pytest.approx(C_REQUIRED_20)


def test_at_the_lower_end_each_payer_pays_exactly_its_ceiling():
    result = analyse_transfer_factor(small_case())
    lower = next(p for p in result.points if "lower end" in p.labels)
    assert lower.renewable_payment == pytest.approx(RENEWABLE_CEILING)
    assert lower.grid_payment == pytest.approx(GRID_CEILING)
    assert dict(lower.payments) == pytest.approx({"wind": RENEWABLE_CEILING, "grid": GRID_CEILING})


def test_lambda_zero_row_has_the_whole_market_revenue_with_the_station():
    result = analyse_transfer_factor(small_case())
    zero = result.points[0]
    assert (zero.transfer_factor, zero.labels, zero.feasible) == (0.0, ("λ = 0",), False)
    assert zero.station_income == pytest.approx(C_ANNUAL + 70_000)
    assert zero.capacity_income == pytest.approx(C_ANNUAL)
    # two years of 358,095.24 against 500,000: 500,000 = c·v + c·v²
    assert npv(zero.irr, [-500_000, C_ANNUAL + 70_000, C_ANNUAL + 70_000]) == pytest.approx(0, abs=1e-4)


def test_grid_rows_are_the_steps_with_both_ends_merged_in():
    result = analyse_transfer_factor(small_case())
    assert [round(p.transfer_factor, 6) for p in result.points] == [0, 0.25, 0.263946, 0.440322, 0.5, 0.75, 1]
    assert [p.labels for p in result.points][:4] == [("λ = 0",), (), ("lower end",), ("upper end",)]
    assert [p.feasible for p in result.points] == [False, False, True, True, False, False, False]


def test_no_feasible_lambda_is_reported_with_the_binding_pair_not_raised():
    # target 30 %: C_required = 500,000 · 1.69 / 2.3 = 367,391.30 ⇒ IRR needs λ ≤ 1 − 79,296.07 / 70,000 = −0.1328
    result = analyse_transfer_factor(small_case(finance__target_irr=0.30))
    assert result.interval is None
    assert "the payers' ceilings" in result.infeasible_reason
    assert "needs λ ≥ 0.2639" in result.infeasible_reason
    assert "IRR ≥ 30.0% needs λ ≤ -0.1328" in result.infeasible_reason
    assert not any(p.feasible for p in result.points)


def test_a_narrow_lambda_range_in_the_case_binds_the_interval():
    narrow = {**SMALL_CASE, "transfer_factor": {"min": 0.3, "max": 0.4, "step": 0.05}}
    result = analyse_transfer_factor(parse_case(narrow))
    assert (result.interval.lower.transfer_factor, result.interval.upper.transfer_factor) == (0.3, 0.4)
    assert result.interval.lower.reason == "transfer_factor.min (0.3)"


def test_with_zero_market_revenue_lambda_changes_nothing_and_a_missed_target_fails_everywhere():
    # spread 0.0625: 100 · 2,000 · 0.0625 · 0.8 = 10,000 = O&M
    result = analyse_transfer_factor(small_case(market__discharge_price_per_kwh=0.2625))
    assert result.market.net_annual == pytest.approx(0, abs=1e-9)
    assert result.interval is None
    assert "fails at every λ" in result.infeasible_reason
    assert len({round(p.irr, 12) for p in result.points}) == 1


def test_with_negative_market_revenue_the_payers_carry_the_loss_and_irr_rises_with_lambda():
    # spread 0: C_market = −10,000; target 9 %: C_required = 500,000 · 1.1881 / 2.09 = 284,234.450
    # IRR: C_annual + (1 − λ)·(−10,000) ≥ C_required  ⇒  λ ≥ 1 − 3,860.788 / 10,000 = 0.613921
    # (the grid defers 10,000,000/MW here, so the ceilings, 494,619, leave room for C″ up to 298,095 at λ = 1)
    result = analyse_transfer_factor(
        small_case(
            market__discharge_price_per_kwh=0.2, finance__target_irr=0.09, grid__network_cost_per_mw=10_000_000
        )
    )
    assert result.market.net_annual == pytest.approx(-10_000)
    assert result.interval.lower.transfer_factor == pytest.approx(1 - (C_ANNUAL - 500_000 * 1.1881 / 2.09) / 10_000)
    assert result.interval.upper.transfer_factor == 1.0
    irrs = [p.irr for p in result.points]
    assert irrs == sorted(irrs)


def test_feasible_interval_intersects_linear_conditions():
    conditions = (
        LinearCondition("a", -0.2, 1.0),  # λ ≥ 0.2
        LinearCondition("b", 0.9, -1.0),  # λ ≤ 0.9
        LinearCondition("c", 3.0, -6.0),  # λ ≤ 0.5
        LinearCondition("d", 1.0, 0.0),  # always true
    )
    interval, reason = feasible_interval(conditions)
    assert reason is None
    assert (interval.lower.transfer_factor, interval.lower.reason) == (0.2, "a")
    assert (interval.upper.transfer_factor, interval.upper.reason) == (0.5, "c")


def test_sensitivity_gives_the_lambda_at_which_irr_equals_the_target():
    data = copy.deepcopy(SMALL_CASE)
    data["sensitivity"] = {"spreads_per_kwh": [0.5, 0.25], "cycles_per_year": [50, 100]}
    result = analyse_transfer_factor(parse_case(data))
    gap = C_REQUIRED_20 - C_ANNUAL  # 39,177.489
    # C_market = N · 2,000 · spread · 0.8 − 10,000; λ = 1 − gap / C_market
    expected = (
        (1 - gap / (50 * 2000 * 0.5 * 0.8 - 10_000), 1 - gap / (50 * 2000 * 0.25 * 0.8 - 10_000)),
        (1 - gap / 70_000, 1 - gap / (100 * 2000 * 0.25 * 0.8 - 10_000)),
    )
    assert result.sensitivity.cycles_per_year == (50, 100)
    for row, expected_row in zip(result.sensitivity.transfer_factor_needed, expected):
        assert row == pytest.approx(expected_row)


def test_sensitivity_defaults_spread_around_the_case_values():
    sensitivity = analyse_transfer_factor(small_case()).sensitivity
    assert sensitivity.spreads_per_kwh == pytest.approx((0.25, 0.375, 0.5, 0.625, 0.75))
    assert sensitivity.cycles_per_year == (80, 90, 100, 110)


def _summary(days: float, net: float, power_kw: float, energy_kwh: float) -> SimulationSummary:
    start = datetime(2020, 1, 1, tzinfo=timezone(timedelta(hours=-8)))
    return SimulationSummary.model_validate(
        {
            "from": start.isoformat(),
            "to": (start + timedelta(days=days)).isoformat(),
            "currency": "EUR",
            "revenue_by_stream": {"energy": net + 100, "degradation": -100},
            "net_revenue": net,
            "fleet": {"power_kw": power_kw, "energy_kwh": energy_kwh},
        }
    )


def test_simulated_revenue_is_annualized_scaled_by_energy_and_charged_om_once():
    station = small_case().station
    revenue = simulated_market_revenue(station, _summary(31, 1_000, 500, 1_000), ScaleBy.ENERGY)
    # 1,000 · 365/31 · (2,000 / 1,000) − 10,000
    assert revenue.streams_annual == pytest.approx(1_000 * 365 / 31 * 2)
    assert revenue.net_annual == pytest.approx(1_000 * 365 / 31 * 2 - 10_000)
    assert revenue.regulation_annual == 0
    assert any("365 / 31 days" in note for note in revenue.notes)
    assert any("scaled × 2 by energy" in note for note in revenue.notes)


def test_simulated_revenue_can_scale_by_power_or_not_at_all():
    station = small_case().station
    summary = _summary(73, 1_000, 250, 1_000)
    # 1,000 · 365/73 = 5,000 a year; the station has 4× the power and 2× the energy
    assert simulated_market_revenue(station, summary, ScaleBy.POWER).streams_annual == pytest.approx(20_000)
    unscaled = simulated_market_revenue(station, summary, ScaleBy.NONE)
    assert unscaled.streams_annual == pytest.approx(5_000)
    assert any("not scaled" in note for note in unscaled.notes)


def test_simulated_revenue_of_the_station_size_says_nothing_about_scaling():
    revenue = simulated_market_revenue(small_case().station, _summary(365, 1_000, 1_000, 2_000), ScaleBy.ENERGY)
    assert revenue.streams_annual == pytest.approx(1_000)
    assert not any("scaled" in note for note in revenue.notes)


def test_analysis_from_a_simulation_has_no_cycle_sensitivity():
    result = analyse_transfer_factor(small_case(), _summary(365, 80_000, 1_000, 2_000))
    assert result.market.source == "simulation"
    assert result.market.net_annual == pytest.approx(70_000)
    assert result.interval.upper.transfer_factor == pytest.approx(0.440321583, abs=1e-9)
    assert result.sensitivity is None


def test_residual_in_final_year_false_leaves_the_residual_out_of_the_cash_flows():
    with_residual = analyse_transfer_factor(small_case(finance__residual_rate=0.1))
    without = analyse_transfer_factor(small_case(finance__residual_rate=0.1, finance__residual_in_final_year=False))
    # k = 0.1: residual 50,000 returned at the end of year 2 lowers the income needed by 50,000/1.44 / (2.2/1.44)
    assert with_residual.required_income == pytest.approx((500_000 - 50_000 / 1.44) * 1.44 / 2.2)
    assert without.required_income == pytest.approx(C_REQUIRED_20)
    assert without.points[0].irr < with_residual.points[0].irr


@settings(max_examples=40, deadline=None)
@given(
    spread=st.floats(0.0, 1.0),
    cycles=st.floats(0, 400),
    network_cost_per_mw=st.floats(0, 2e7),
    target_irr=st.floats(0.0, 0.3),
)
def test_inside_the_interval_every_party_is_satisfied_and_outside_someone_is_not(
    spread, cycles, network_cost_per_mw, target_irr
):
    data = copy.deepcopy(SMALL_CASE)
    data["market"].update(cycles_per_year=cycles, discharge_price_per_kwh=0.2 + spread)
    data["grid"][0]["network_cost_per_mw"] = network_cost_per_mw
    data["finance"]["target_irr"] = target_irr
    data["transfer_factor"]["step"] = 0.05
    result = analyse_transfer_factor(parse_case(data))
    for point in result.points:
        flows = project_cash_flows(result.investment, point.station_income, 2, 0.0)
        satisfied = (
            0 <= point.transfer_factor <= 1
            and npv(target_irr, flows) >= -1e-6
            and all(paid <= max(c.ceiling, 0) + 1e-6 for c, (_, paid) in zip(result.ceilings, point.payments))
            and point.capacity_income >= -1e-6
        )
        if point.feasible:
            assert satisfied
        elif satisfied:  # only rounding at an interval end may disagree
            assert result.interval is not None and min(
                abs(point.transfer_factor - result.interval.lower.transfer_factor),
                abs(point.transfer_factor - result.interval.upper.transfer_factor),
            ) < 1e-6
        if point.feasible and point.irr is not None:
            assert point.irr >= target_irr - 1e-9
