"""Contract splits, hand-computed to the minor unit, and the invariants every split keeps.

Expected figures below were worked out by hand (shown in the comments), not copied from the code.
"""

from __future__ import annotations

from fractions import Fraction as F

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpp.ledger.contracts import (
    AgencyOperation,
    CoInvestment,
    EnergyAsAService,
    split_revenue,
)
from vpp.ledger.money import format_minor, round_minor, split_minor, to_minor


def settled(*rows: tuple[str, str, int]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["unit_id", "stream", "amount_minor"]).astype({"amount_minor": "int64"})


def as_dict(split: pd.DataFrame, contract: str) -> dict[tuple[str, str], int]:
    mine = split[split["contract_id"] == contract]
    return {(p, i): int(a) for p, i, a in zip(mine["party"], mine["item"], mine["amount_minor"])}


EAAS = EnergyAsAService(
    id="eaas",
    units=("a", "b"),
    customer="factory",
    customer_share=F(70, 100),
    capacity_kw=F(150),  # a 100 kW + b 50 kW
    capacity_kwh=F(300),
    service_fee_minor_per_kw_month=to_minor("10.00", "CNY"),  # 1000 fen per kW-month
    operating_fee_minor_per_kwh=to_minor("0.05", "CNY"),  # 5 fen per kWh
)


def test_energy_as_a_service_takes_fees_first_then_splits_the_remainder_70_30():
    frame = settled(("a", "energy", 300_000), ("a", "tou_savings", 12_345), ("b", "demand_response", 50_001), ("a", "degradation", -4_000), ("b", "degradation", -1_000))
    split = split_revenue(frame, [EAAS], dispatched_kwh={"a": 1000.0, "b": 234.5})
    # revenue R = 300000 + 12345 + 50001 = 362346 fen; degradation D = -5000
    # service fee = 150 kW × 1000 = 150000; operating fee = 1234.5 kWh × 5 = 6172.5 → half-even 6172
    # remainder = 362346 - 150000 - 6172 = 206174 → 70 % = 144321.8, 30 % = 61852.2 → the left-over fen to .8
    assert as_dict(split, "eaas") == {
        ("platform", "service_fee"): 150_000,
        ("platform", "operating_fee"): 6_172,
        ("factory", "revenue_share"): 144_322,
        ("platform", "revenue_share"): 61_852,
        ("platform", "degradation"): -5_000,
    }


def test_energy_as_a_service_per_kwh_fee_is_prorated_for_part_of_a_month():
    contract = EnergyAsAService("m", ("a",), "mall", F(4, 5), F(100), F(300), service_fee_minor_per_kwh_month=to_minor(6, "CNY"))
    split = split_revenue(settled(("a", "tou_savings", 50_000)), [contract], months=F(2, 30))
    # fee = 600 fen × 300 kWh × 2/30 = 12000; remainder 38000 → 80/20 = 30400 / 7600
    assert as_dict(split, "m") == {
        ("platform", "service_fee"): 12_000,
        ("platform", "operating_fee"): 0,
        ("mall", "revenue_share"): 30_400,
        ("platform", "revenue_share"): 7_600,
        ("platform", "degradation"): 0,
    }


def test_energy_as_a_service_month_below_fees_shares_the_shortfall_by_the_same_percentages():
    contract = EnergyAsAService("e", ("a",), "c", F(7, 10), F(10), F(20), service_fee_minor_per_kw_month=F(100))
    split = split_revenue(settled(("a", "energy", -1)), [contract])
    # fee 10 × 100 = 1000; remainder = -1 - 1000 = -1001 → mirror of 1001: 700.7 / 300.3 → 701 / 300
    assert as_dict(split, "e")[("c", "revenue_share")] == -701
    assert as_dict(split, "e")[("platform", "revenue_share")] == -300
    assert as_dict(split, "e")[("platform", "service_fee")] == 1000


def test_co_investment_splits_revenue_and_wear_by_stake_with_largest_remainders():
    contract = CoInvestment("co", ("a",), (("investor", F(60, 100)), ("platform", F(25, 100)), ("site_owner", F(15, 100))))
    split = split_revenue(settled(("a", "energy", 1_001), ("a", "degradation", -7)), [contract])
    # 1001 → 600.6 / 250.25 / 150.15: floors 600+250+150 = 1000, the last fen to .6 (investor)
    # -7 → mirror of 7 → 4.2 / 1.75 / 1.05: floors 4+1+1 = 6, the last to .75 (platform)
    assert as_dict(split, "co") == {
        ("investor", "revenue_share"): 601,
        ("platform", "revenue_share"): 250,
        ("site_owner", "revenue_share"): 150,
        ("investor", "degradation"): -4,
        ("platform", "degradation"): -2,
        ("site_owner", "degradation"): -1,
    }


def test_co_investment_thirds_and_ties_go_to_the_earlier_party():
    contract = CoInvestment("co", ("a",), (("x", F(1, 3)), ("y", F(1, 3)), ("z", F(1, 3))))
    assert [v for (_, item), v in as_dict(split_revenue(settled(("a", "energy", 100)), [contract]), "co").items() if item == "revenue_share"] == [34, 33, 33]
    assert split_minor(1, [1, 1]) == [1, 0]
    assert split_minor(-1, [1, 1]) == [-1, 0]


AGENCY = AgencyOperation("ag", ("a", "b"), "office", to_minor(8000, "CNY"), F(60, 100))


def test_agency_pays_the_minimum_and_splits_the_excess():
    split = split_revenue(settled(("a", "energy", 600_000), ("b", "tou_savings", 400_001), ("a", "degradation", -3_000)), [AGENCY])
    # R = 1000001; minimum 8000.00 CNY = 800000 fen; excess 200001 → 60/40 = 120000.6 / 80000.4 → 120001 / 80000
    assert as_dict(split, "ag") == {
        ("office", "guaranteed_minimum"): 800_000,
        ("office", "excess_share"): 120_001,
        ("platform", "excess_share"): 80_000,
        ("platform", "guarantee_shortfall"): 0,
        ("office", "degradation"): -3_000,
    }


@pytest.mark.parametrize("revenue, shortfall", [(500_000, -300_000), (0, -800_000), (-20_000, -820_000)])
def test_agency_revenue_below_the_minimum_or_negative_is_made_up_by_the_platform(revenue, shortfall):
    split = as_dict(split_revenue(settled(("a", "energy", revenue)), [AGENCY]), "ag")
    assert split[("office", "guaranteed_minimum")] == 800_000
    assert split[("office", "excess_share")] == 0 and split[("platform", "excess_share")] == 0
    assert split[("platform", "guarantee_shortfall")] == shortfall


def test_units_without_a_contract_go_to_the_platform_and_idle_contracts_still_owe_fees():
    split = split_revenue(settled(("z", "energy", 77), ("z", "degradation", -5)), [EAAS, AGENCY], dispatched_kwh={})
    assert as_dict(split, "uncontracted") == {("platform", "revenue"): 77, ("platform", "degradation"): -5}
    assert as_dict(split, "eaas")[("platform", "service_fee")] == 150_000
    assert as_dict(split, "eaas")[("factory", "revenue_share")] == -105_000  # 70 % of -150000
    assert as_dict(split, "ag")[("platform", "guarantee_shortfall")] == -800_000


def test_an_operating_fee_without_dispatched_energy_is_refused():
    with pytest.raises(ValueError, match="dispatched_kwh"):
        split_revenue(settled(("a", "energy", 1)), [EAAS])


def test_money_helpers_round_half_even_and_format_exactly():
    assert [round_minor(F(5, 2)), round_minor(F(7, 2)), round_minor(F(-5, 2))] == [2, 4, -2]
    assert to_minor("0.015", "CNY") == F(3, 2) and to_minor(5, "JPY") == 5 and to_minor("1.5", "KWD") == 1500
    assert [format_minor(123_456, "CNY"), format_minor(-5, "USD"), format_minor(0, "EUR"), format_minor(42, "JPY")] == ["1234.56", "-0.05", "0.00", "42"]


@given(st.integers(-10**15, 10**15), st.lists(st.integers(0, 1000), min_size=1, max_size=6).filter(lambda w: sum(w) > 0))
def test_split_parts_sum_to_the_whole_and_stay_within_one_unit_of_the_exact_quota(amount, weights):
    parts = split_minor(amount, weights)
    assert sum(parts) == amount
    for part, w in zip(parts, weights):
        assert abs(F(part) - F(amount * w, sum(weights))) < 1


units = st.sampled_from(["a", "b", "c", "d", "e"])
streams = st.sampled_from(["energy", "tou_savings", "reg_up", "demand_response", "degradation"])


@given(
    st.lists(st.tuples(units, streams, st.integers(-10**9, 10**9)), max_size=30),
    st.integers(0, 10**6),
    st.integers(0, 100),
    st.integers(0, 10**7),
    st.fractions(F(0), F(3)),
    st.dictionaries(units, st.floats(0, 1e5, allow_nan=False), max_size=5),
)
def test_every_contract_hands_out_exactly_what_its_units_settled(rows, fee, pct, minimum, months, dispatched):
    contracts = [
        EnergyAsAService("e", ("a", "b"), "c1", F(pct, 100), F(250), F(500), F(fee, 100), F(0), F(fee, 1000)),
        CoInvestment("co", ("c",), (("p", F(pct, 100)), ("q", F(100 - pct, 100)))) if 0 < pct < 100 else CoInvestment("co", ("c",), (("p", F(1)),)),
        AgencyOperation("ag", ("d",), "c3", F(minimum), F(pct, 100)),
    ]
    frame = settled(*rows)
    split = split_revenue(frame, contracts, dispatched_kwh=dispatched, months=months)
    members = {"e": {"a", "b"}, "co": {"c"}, "ag": {"d"}, "uncontracted": {"e"}}
    for cid, group in members.items():
        paid = int(split.loc[split["contract_id"] == cid, "amount_minor"].sum())
        assert paid == int(frame.loc[frame["unit_id"].isin(group), "amount_minor"].sum()), cid
    assert split["amount_minor"].dtype == "int64"
