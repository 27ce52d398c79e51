"""The transfer-factor method: who may pay what, and for which λ everyone is satisfied.

Notation follows ``docs/economics.md``. Every requirement is linear in λ —
station income ``C_income = C_annual + (1 − λ)·C_market`` and capacity income
``C″ = C_annual − λ·C_market`` — so each becomes one ``constant + slope·λ ≥ 0``
condition and the feasible interval is found exactly, with the condition that
sets each end named as its reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from vpp.economics.case import EconomicsCase, Finance, GridPayer, RenewablePlant, SimulationSummary, Station
from vpp.economics.finance import annualized_cost, irr, project_cash_flows, required_annual_income
from vpp.economics.market import MarketRevenue, ScaleBy, case_market_revenue, cycle_revenue, simulated_market_revenue

# Without a sensitivity grid in the case, the λ needed is tabulated around the case's own spread and cycle count.
_DEFAULT_SPREAD_FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5)
_DEFAULT_CYCLE_FACTORS = (0.8, 0.9, 1.0, 1.1)
# Grid points closer than this to an interval end or to λ = 0 are the same row.
_SAME_LAMBDA = 1e-9


@dataclass(frozen=True, slots=True)
class PayerCeiling:
    """The most one payer (a renewable plant entry or a grid operator) pays per year, and how that is made up."""

    name: str
    group: Literal["renewable", "grid"]
    ceiling: float
    components: tuple[tuple[str, float], ...]  # signed amounts that add up to the ceiling


@dataclass(frozen=True, slots=True)
class LinearCondition:
    """One requirement, ``constant + slope·λ ≥ 0``, and the party it protects (``reason``)."""

    reason: str
    constant: float
    slope: float

    @property
    def boundary(self) -> float | None:
        """The λ at which the requirement holds with equality; ``None`` when λ does not affect it."""
        return -self.constant / self.slope if self.slope else None


@dataclass(frozen=True, slots=True)
class LambdaBound:
    transfer_factor: float
    reason: str  # the requirement that sets this end


@dataclass(frozen=True, slots=True)
class LambdaInterval:
    lower: LambdaBound
    upper: LambdaBound


@dataclass(frozen=True, slots=True)
class LambdaPoint:
    """Everyone's position at one λ."""

    transfer_factor: float
    labels: tuple[str, ...]  # "λ = 0", "lower end", "upper end" where this row is one of them
    capacity_income: float  # C″ = C_annual − λ·C_market, paid by the renewables and the grid together
    station_income: float  # C_income = C″ + C_market
    irr: float | None  # None when the cash flows have no IRR (the station never pays back)
    renewable_payment: float
    grid_payment: float
    payments: tuple[tuple[str, float], ...]  # per payer, in the order of ``TransferResult.ceilings``
    feasible: bool


@dataclass(frozen=True, slots=True)
class Sensitivity:
    """The λ at which the station's IRR is exactly the target, per cycle count (rows) and spread (columns)."""

    target_irr: float
    spreads_per_kwh: tuple[float, ...]
    cycles_per_year: tuple[float, ...]
    transfer_factor_needed: tuple[tuple[float | None, ...], ...]  # None where C_market = 0 (λ has no effect)


@dataclass(frozen=True, slots=True)
class TransferResult:
    name: str
    currency: str
    investment: float  # C_inv
    annual_capacity_cost: float  # C_annual
    market: MarketRevenue  # C_market = market.net_annual
    target_irr: float
    required_income: float  # the station income at which its IRR is exactly the target
    residual_in_final_year: bool
    ceilings: tuple[PayerCeiling, ...]
    renewable_ceiling: float
    grid_ceiling: float
    conditions: tuple[LinearCondition, ...]
    interval: LambdaInterval | None
    infeasible_reason: str | None  # why no λ works, when ``interval`` is None
    points: tuple[LambdaPoint, ...]
    sensitivity: Sensitivity | None
    notes: tuple[str, ...]


def _ceiling(name: str, group: Literal["renewable", "grid"], components: tuple[tuple[str, float], ...]) -> PayerCeiling:
    return PayerCeiling(name, group, sum(amount for _, amount in components), components)


def renewable_ceiling(plant: RenewablePlant, finance: Finance) -> PayerCeiling:
    """What self-built storage would cost the plant(s) per year, net of the curtailment and penalties it avoids."""
    own_investment = plant.cost_per_kw * plant.storage_power_kw + plant.cost_per_kwh * plant.storage_energy_kwh
    own_annual = annualized_cost(own_investment, plant.residual_rate, finance.discount_rate, finance.life_years)
    return _ceiling(plant.name, "renewable", (
        ("own storage (annualized)", own_annual),
        ("own O&M", plant.om_cost_per_kw_year * plant.storage_power_kw),
        ("avoided curtailment", -plant.curtailment_avoided_share * plant.generation_revenue),
        ("avoided penalties", -plant.penalty_avoided_share * plant.generation_revenue),
    ))  # fmt: skip


def grid_ceiling(payer: GridPayer, station: Station) -> PayerCeiling:
    """The network investment the station defers (per year) plus the demand-response capacity it replaces."""
    station_mw = station.power_kw / 1000
    deferred = payer.network_cost_per_mw * station_mw * payer.depreciation_rate * station.charging_efficiency
    response = (
        station.power_kw
        * payer.demand_response_price_per_kw_year
        * payer.duration_coefficient
        * payer.response_speed_coefficient
    )
    return _ceiling(payer.name, "grid", (("deferred network", deferred), ("replaced demand response", response)))


def split_payments(capacity_income: float, ceilings: tuple[PayerCeiling, ...]) -> tuple[float, ...]:
    """Share ``C″`` in proportion to the ceilings; a payer whose ceiling is ≤ 0 would not lease and pays nothing.

    With proportional shares every payer reaches its ceiling at the same λ, so
    the ceilings together are one condition: ``C″ ≤ Σ max(ceiling, 0)``.
    """
    weights = [max(c.ceiling, 0.0) for c in ceilings]
    total = sum(weights)
    return tuple(capacity_income * w / total if total > 0 else 0.0 for w in weights)


def irr_condition(
    annual_capacity_cost: float, market_net: float, required_income: float, target_irr: float
) -> LinearCondition:
    """``C_annual + (1 − λ)·C_market ≥ C_required``: the station earns at least its target IRR."""
    constant = annual_capacity_cost + market_net - required_income
    return LinearCondition(f"a station IRR ≥ {target_irr:.1%}", constant, -market_net)


def feasible_interval(conditions: tuple[LinearCondition, ...]) -> tuple[LambdaInterval | None, str | None]:
    """Intersect the conditions; an empty intersection is a result (with the binding pair), not an error."""
    lower, upper = LambdaBound(-math.inf, ""), LambdaBound(math.inf, "")
    for condition in conditions:
        boundary = condition.boundary
        if boundary is None:
            if condition.constant < 0:
                return None, f"{condition.reason} fails at every λ (C_market = 0, so λ changes nothing)"
        elif condition.slope > 0 and boundary > lower.transfer_factor:
            lower = LambdaBound(boundary, condition.reason)
        elif condition.slope < 0 and boundary < upper.transfer_factor:
            upper = LambdaBound(boundary, condition.reason)
    if lower.transfer_factor > upper.transfer_factor:
        return None, (
            f"{lower.reason} needs λ ≥ {lower.transfer_factor:.4f}, "
            f"but {upper.reason} needs λ ≤ {upper.transfer_factor:.4f}"
        )
    return LambdaInterval(lower, upper), None


def analyse_transfer_factor(
    case: EconomicsCase, simulation: SimulationSummary | None = None, scale_by: ScaleBy = ScaleBy.ENERGY
) -> TransferResult:
    """Price the station's capacity: the feasible λ interval, everyone's position on a λ grid, and the sensitivity.

    With ``simulation`` the market revenue is the simulated one (annualized and
    scaled to the station) instead of the case's cycle formula.
    """
    station, finance = case.station, case.finance
    investment = station.investment
    annual_capacity_cost = annualized_cost(investment, finance.residual_rate, finance.discount_rate, finance.life_years)
    residual_value = finance.residual_rate * investment if finance.residual_in_final_year else 0.0
    required = required_annual_income(investment, finance.target_irr, finance.life_years, residual_value)
    if simulation is None:
        market = case_market_revenue(station, case.market)
    else:
        market = simulated_market_revenue(station, simulation, scale_by)
    ceilings = tuple(renewable_ceiling(p, finance) for p in case.renewables) + tuple(
        grid_ceiling(g, station) for g in case.grid
    )
    payable = sum(max(c.ceiling, 0.0) for c in ceilings)
    c_market = market.net_annual
    conditions = (
        LinearCondition(f"transfer_factor.min ({case.transfer_factor.min:g})", -case.transfer_factor.min, 1.0),
        LinearCondition(f"transfer_factor.max ({case.transfer_factor.max:g})", case.transfer_factor.max, -1.0),
        irr_condition(annual_capacity_cost, c_market, required, finance.target_irr),
        LinearCondition(
            f"keeping payments within the payers' ceilings ({payable:,.0f} {case.currency}/yr together)",
            payable - annual_capacity_cost,
            c_market,
        ),
        LinearCondition("a non-negative capacity income", annual_capacity_cost, -c_market),
    )
    interval, reason = feasible_interval(conditions)

    def point(transfer_factor: float, labels: tuple[str, ...]) -> LambdaPoint:
        capacity_income = annual_capacity_cost - transfer_factor * c_market
        station_income = capacity_income + c_market
        payments = split_payments(capacity_income, ceilings)
        flows = project_cash_flows(investment, station_income, finance.life_years, residual_value)
        return LambdaPoint(
            transfer_factor=transfer_factor,
            labels=labels,
            capacity_income=capacity_income,
            station_income=station_income,
            irr=irr(flows),
            renewable_payment=sum(p for p, c in zip(payments, ceilings) if c.group == "renewable"),
            grid_payment=sum(p for p, c in zip(payments, ceilings) if c.group == "grid"),
            payments=tuple((c.name, p) for c, p in zip(ceilings, payments)),
            feasible=interval is not None
            and interval.lower.transfer_factor <= transfer_factor <= interval.upper.transfer_factor,
        )

    points = tuple(point(t, labels) for t, labels in _lambda_rows(case, interval))
    return TransferResult(
        name=case.name,
        currency=case.currency,
        investment=investment,
        annual_capacity_cost=annual_capacity_cost,
        market=market,
        target_irr=finance.target_irr,
        required_income=required,
        residual_in_final_year=finance.residual_in_final_year,
        ceilings=ceilings,
        renewable_ceiling=sum(c.ceiling for c in ceilings if c.group == "renewable"),
        grid_ceiling=sum(c.ceiling for c in ceilings if c.group == "grid"),
        conditions=conditions,
        interval=interval,
        infeasible_reason=reason,
        points=points,
        sensitivity=None if simulation is not None else _sensitivity(case, annual_capacity_cost, required),
        notes=market.notes + _notes(ceilings, c_market, simulation is not None),
    )


def _lambda_rows(case: EconomicsCase, interval: LambdaInterval | None) -> list[tuple[float, tuple[str, ...]]]:
    """The grid min, min+step, …, max, with λ = 0 and the interval's ends merged in and labelled."""
    span = case.transfer_factor
    count = math.floor((span.max - span.min) / span.step + _SAME_LAMBDA)
    rows: dict[float, list[str]] = {round(span.min + k * span.step, 12): [] for k in range(count + 1)}
    rows.setdefault(span.max, [])
    marks = [(0.0, "λ = 0")]
    if interval is not None:
        marks += [(interval.lower.transfer_factor, "lower end"), (interval.upper.transfer_factor, "upper end")]
    for value, label in marks:
        same = next((t for t in rows if abs(t - value) <= _SAME_LAMBDA), value)
        rows.setdefault(same, []).append(label)
    return [(t, tuple(rows[t])) for t in sorted(rows)]


def _sensitivity(case: EconomicsCase, annual_capacity_cost: float, required: float) -> Sensitivity:
    """λ needed for the target IRR over spreads × cycle counts, regulation and costs held at the case's values."""
    market = case.market
    spreads = case.sensitivity.spreads_per_kwh or _around(market.spread_per_kwh, _DEFAULT_SPREAD_FACTORS, 4)
    cycles = case.sensitivity.cycles_per_year or _around(market.cycles_per_year, _DEFAULT_CYCLE_FACTORS, 0)
    target_irr = case.finance.target_irr

    def needed(cycles_per_year: float, spread_per_kwh: float) -> float | None:
        market_net = cycle_revenue(case.station, market, cycles_per_year, spread_per_kwh).net_annual
        return irr_condition(annual_capacity_cost, market_net, required, target_irr).boundary

    table = tuple(tuple(needed(n, s) for s in spreads) for n in cycles)
    return Sensitivity(target_irr, spreads, cycles, table)


def _around(base: float, factors: tuple[float, ...], digits: int) -> tuple[float, ...]:
    return tuple(sorted({round(base * f, digits) for f in factors}))


def _notes(ceilings: tuple[PayerCeiling, ...], c_market: float, simulated: bool) -> tuple[str, ...]:
    notes = [
        f"{c.name}: ceiling {c.ceiling:,.0f} ≤ 0 — self-built storage is cheaper for it, so it pays nothing"
        for c in ceilings
        if c.ceiling <= 0
    ]
    if c_market == 0:
        notes.append("C_market = 0: λ changes nothing")
    elif c_market < 0:
        notes.append("C_market < 0: λ is the share of the market loss the payers carry; the station's IRR rises with λ")
    if simulated:
        notes.append("the case's market section (cycle formula and regulation) is replaced by the simulation")
        notes.append("no spread/cycle sensitivity: the market revenue comes from a simulation, not the cycle formula")
    return tuple(notes)
