"""Customer contracts and how a period's settled revenue is split between the parties.

Three business models of C&I aggregation, each a frozen dataclass with every term explicit and already
in integer-friendly units (rates as exact ``Fraction``s of currency minor units, shares as fractions
0..1). The split is a pure function on integer minor units: the parts of every split add up exactly to
the whole (``money.split_minor``), so for each contract

    Σ over parties and items  ==  Σ settled amounts of its units (every stream, degradation included).

Two amounts per contract go into the split:
- ``revenue``: the sum of every settled stream except ``degradation`` (energy, TOU and demand-charge
  savings, reserve capacity and deployment energy, DR payments and penalties). Savings are the
  customer's lower bill; the split says who is *entitled* to them, invoicing is another step.
- ``degradation``: the (negative) wear cost of the batteries, borne by whoever owns the equipment.

Negative amounts follow the same rules as positive ones (losses are shared like gains) except where a
contract guarantees an amount: then the guarantor bears the difference. Fees and guaranteed minimums
are monthly and scale with ``months`` (e.g. 2/30 for a two-day backtest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import pandas as pd

from vpp.ledger.money import round_minor, split_minor

PLATFORM = "platform"
DEGRADATION = "degradation"
UNCONTRACTED = "uncontracted"
SPLIT_COLUMNS = ["contract_id", "party", "item", "amount_minor"]

Row = tuple[str, str, int]  # party, item, amount_minor


@dataclass(frozen=True, slots=True)
class EnergyAsAService:
    """The platform owns and runs the battery at the customer's site; the customer pays nothing upfront.

    Out of the revenue the platform first takes a monthly service fee on the installed capacity
    (per kW of discharge rating and/or per kWh of energy) and an operating fee per kWh dispatched
    (discharged, AC). The remainder, which may be negative, is split ``customer_share`` to the customer
    and the rest to the platform. The platform owns the equipment, so it bears the degradation.
    """

    id: str
    units: tuple[str, ...]
    customer: str
    customer_share: Fraction  # of the remainder after fees, 0..1
    capacity_kw: Fraction  # Σ discharge rating of the units
    capacity_kwh: Fraction  # Σ energy of the units
    service_fee_minor_per_kw_month: Fraction = Fraction(0)
    service_fee_minor_per_kwh_month: Fraction = Fraction(0)
    operating_fee_minor_per_kwh: Fraction = Fraction(0)

    @property
    def needs_dispatched_energy(self) -> bool:
        return self.operating_fee_minor_per_kwh != 0

    def split(self, revenue: int, degradation: int, dispatched_kwh: Fraction, months: Fraction) -> list[Row]:
        service = round_minor(months * (self.service_fee_minor_per_kw_month * self.capacity_kw + self.service_fee_minor_per_kwh_month * self.capacity_kwh))
        operating = round_minor(self.operating_fee_minor_per_kwh * dispatched_kwh)
        customer, platform = split_minor(revenue - service - operating, [self.customer_share, 1 - self.customer_share])
        return [
            (PLATFORM, "service_fee", service),
            (PLATFORM, "operating_fee", operating),
            (self.customer, "revenue_share", customer),
            (PLATFORM, "revenue_share", platform),
            (PLATFORM, DEGRADATION, degradation),
        ]


@dataclass(frozen=True, slots=True)
class CoInvestment:
    """Equipment investor, platform and site owner (any named parties) hold stakes; revenue and
    degradation are both split by stake, so every party gains and loses in proportion."""

    id: str
    units: tuple[str, ...]
    stakes: tuple[tuple[str, Fraction], ...]  # (party, fraction 0..1), in config order, summing to 1

    needs_dispatched_energy = False

    def split(self, revenue: int, degradation: int, dispatched_kwh: Fraction, months: Fraction) -> list[Row]:
        parties = [p for p, _ in self.stakes]
        weights = [w for _, w in self.stakes]
        shares = split_minor(revenue, weights)
        wear = split_minor(degradation, weights)
        return [(p, "revenue_share", s) for p, s in zip(parties, shares)] + [(p, DEGRADATION, d) for p, d in zip(parties, wear)]


@dataclass(frozen=True, slots=True)
class AgencyOperation:
    """The customer owns the battery; the platform operates it and guarantees a monthly minimum.

    The customer receives the guaranteed minimum whatever the revenue; revenue above it (the excess)
    is split ``customer_excess_share`` to the customer and the rest to the platform; revenue below it,
    even negative, is made up by the platform (``guarantee_shortfall``, negative). The customer owns
    the equipment, so it bears the degradation.
    """

    id: str
    units: tuple[str, ...]
    customer: str
    guaranteed_minimum_minor_per_month: Fraction
    customer_excess_share: Fraction  # 0..1

    needs_dispatched_energy = False

    def split(self, revenue: int, degradation: int, dispatched_kwh: Fraction, months: Fraction) -> list[Row]:
        minimum = round_minor(months * self.guaranteed_minimum_minor_per_month)
        excess = revenue - minimum
        customer, platform = split_minor(max(excess, 0), [self.customer_excess_share, 1 - self.customer_excess_share])
        return [
            (self.customer, "guaranteed_minimum", minimum),
            (self.customer, "excess_share", customer),
            (PLATFORM, "excess_share", platform),
            (PLATFORM, "guarantee_shortfall", min(excess, 0)),
            (self.customer, DEGRADATION, degradation),
        ]


Contract = EnergyAsAService | CoInvestment | AgencyOperation


def split_revenue(
    settled: pd.DataFrame,
    contracts: Sequence[Contract],
    *,
    dispatched_kwh: Mapping[str, float] | pd.Series | None = None,
    months: Fraction | float = 1,
) -> pd.DataFrame:
    """Split settled amounts into (contract_id, party, item, amount_minor) rows.

    ``settled`` has at least ``unit_id``, ``stream`` and integer ``amount_minor`` (the settlement frame,
    or per unit × stream totals; rows are summed per unit). ``dispatched_kwh`` is each unit's discharged
    energy over the same period, needed by contracts with an operating fee. Units that no contract
    names (the platform's own) go to the platform under contract ``uncontracted``. Every contract
    gets its rows even with nothing settled, since its fees and minimums are owed anyway.
    """
    months = Fraction(months) if not isinstance(months, float) else Fraction(str(months))
    amounts = settled["amount_minor"].astype("int64")
    wear = settled["stream"].eq(DEGRADATION)
    per_unit = pd.DataFrame({"revenue": amounts.where(~wear, 0), DEGRADATION: amounts.where(wear, 0)}).groupby(settled["unit_id"].to_numpy()).sum()
    dispatched = pd.Series(dispatched_kwh if dispatched_kwh is not None else {}, dtype="float64")

    rows: list[tuple[str, str, str, int]] = []
    contracted: set[str] = set()
    for c in contracts:
        contracted.update(c.units)
        mine = per_unit.reindex(list(c.units), fill_value=0)
        if c.needs_dispatched_energy and dispatched_kwh is None:
            raise ValueError(f"contract {c.id} has an operating fee per kWh dispatched: pass dispatched_kwh")
        energy = Fraction(str(float(dispatched.reindex(list(c.units), fill_value=0.0).sum())))
        for party, item, amount in c.split(int(mine["revenue"].sum()), int(mine[DEGRADATION].sum()), energy, months):
            rows.append((c.id, party, item, int(amount)))
    rest = per_unit.loc[~per_unit.index.isin(list(contracted))]
    if len(rest):
        rows.append((UNCONTRACTED, PLATFORM, "revenue", int(rest["revenue"].sum())))
        rows.append((UNCONTRACTED, PLATFORM, DEGRADATION, int(rest[DEGRADATION].sum())))
    out = pd.DataFrame(rows, columns=SPLIT_COLUMNS)
    out["amount_minor"] = out["amount_minor"].astype("int64")
    return out
