"""A customer's monthly statement for one contract, computed from ledger rows (pure: no I/O).

The split is ``contracts.split_revenue`` on the same per unit × stream totals `vpp ledger report` sums,
so every statement figure is the report's to the minor unit (a test compares them through the CLI).
Around the split, a statement shows what a customer asks of it:

- revenue by stream, grouped: bill savings (TOU energy, demand charge), wholesale energy, DR payments
  (and shortfall penalties), ancillary services (reserve capacity and deployment energy), degradation;
- the bill without the battery against the bill with it, where the contract's sites buy on a retail
  tariff: the no-battery bill is priced on the site's load (the meter or the config's series, passed
  in), the bill with the battery is that minus the settled savings, so the difference *is* the
  ledger's savings, traceable to its settled intervals;
- the fees the platform took and what each party receives;
- energy charged and discharged per TOU period, and equivalent full cycles.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from vpp.ledger.contracts import DEGRADATION, PLATFORM, Contract, split_revenue

SAVINGS = ("tou_savings", "demand_charge_savings")
FEES = ("service_fee", "operating_fee")


def stream_group(stream: str) -> str:
    """savings | energy | demand_response | ancillary | degradation."""
    if stream in SAVINGS:
        return "savings"
    if stream == DEGRADATION:
        return DEGRADATION
    if stream == "energy":
        return "energy"
    if stream.startswith("demand_response"):
        return "demand_response"
    return "ancillary"  # reserve products and their deployment energy


@dataclass(frozen=True, slots=True)
class Bill:
    """The retail bill of the contract's sites over the settled intervals, in minor units."""

    without_battery_minor: int
    tou_savings_minor: int
    demand_charge_savings_minor: int

    @property
    def with_battery_minor(self) -> int:
        return self.without_battery_minor - self.tou_savings_minor - self.demand_charge_savings_minor


@dataclass(frozen=True, slots=True)
class PeriodEnergy:
    period: str  # TOU period name, or "all" on a wholesale site
    charged_kwh: float
    discharged_kwh: float


@dataclass(frozen=True, slots=True)
class Statement:
    contract_id: str
    model: str  # energy_as_a_service | co_investment | agency_operation
    month: str
    currency: str
    streams: tuple[tuple[str, int], ...]  # (stream, amount_minor), the contract's units
    split: tuple[tuple[str, str, int], ...]  # (party, item, amount_minor), as `vpp ledger report`
    intervals: int  # distinct settled intervals
    bill: Bill | None
    energy: tuple[PeriodEnergy, ...]
    capacity_kwh: float

    @property
    def total_minor(self) -> int:
        """Σ of the split == Σ of the streams (the contracts' invariant)."""
        return sum(a for _, _, a in self.split)

    def group_minor(self, group: str) -> int:
        return sum(a for s, a in self.streams if stream_group(s) == group)

    @property
    def fees_minor(self) -> int:
        return sum(a for p, i, a in self.split if p == PLATFORM and i in FEES)

    def received_minor(self, party: str) -> int:
        return sum(a for p, _, a in self.split if p == party)

    @property
    def parties(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p for p, _, _ in self.split))

    @property
    def cycles(self) -> float:
        """Equivalent full cycles: discharged energy over the contract's energy capacity."""
        return sum(e.discharged_kwh for e in self.energy) / self.capacity_kwh if self.capacity_kwh > 0 else 0.0


def model_name(contract: Contract) -> str:
    return {"EnergyAsAService": "energy_as_a_service", "CoInvestment": "co_investment", "AgencyOperation": "agency_operation"}[type(contract).__name__]


def build_statement(
    contract: Contract,
    month: str,
    currency: str,
    totals: pd.DataFrame,
    *,
    dispatched_kwh: Mapping[str, float] | pd.Series,
    intervals: int,
    energy: pd.DataFrame,
    capacity_kwh: float,
    bill_without_battery_minor: int | None,
) -> Statement:
    """``totals``: the month's ``settled_totals`` (unit_id, stream, amount_minor), any units;
    ``dispatched_kwh``: per unit, for operating fees (as ``report.month_split`` passes it);
    ``energy``: (period, charged_kwh, discharged_kwh) rows of the contract's units;
    ``bill_without_battery_minor``: the retail sites' bill on their load alone, None without one."""
    mine = totals[totals["unit_id"].isin(list(contract.units))]
    split = split_revenue(mine, [contract], dispatched_kwh=dispatched_kwh, months=1)
    streams = mine.groupby("stream", sort=True)["amount_minor"].sum()
    by_stream = {str(s): int(a) for s, a in streams.items()}
    bill = None
    if bill_without_battery_minor is not None:
        bill = Bill(int(bill_without_battery_minor), by_stream.get("tou_savings", 0), by_stream.get("demand_charge_savings", 0))
    per_period = energy.groupby("period", sort=False)[["charged_kwh", "discharged_kwh"]].sum() if len(energy) else pd.DataFrame(columns=["charged_kwh", "discharged_kwh"])
    return Statement(
        contract_id=contract.id,
        model=model_name(contract),
        month=month,
        currency=currency,
        streams=tuple(by_stream.items()),
        split=tuple((str(p), str(i), int(a)) for p, i, a in split[["party", "item", "amount_minor"]].itertuples(index=False)),
        intervals=int(intervals),
        bill=bill,
        energy=tuple(PeriodEnergy(str(k), float(r.charged_kwh), float(r.discharged_kwh)) for k, r in per_period.iterrows()),
        capacity_kwh=float(capacity_kwh),
    )
