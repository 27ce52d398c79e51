"""The ``contracts:`` block of the main config: pydantic models, then checks against the fleet.

Money in the file is in major units of the config's currency (``service_fee_per_kw_month: 8.5`` is
8.50 CNY) and shares are percentages; ``build_contracts`` turns them into the exact minor-unit
fractions of ``vpp.ledger.contracts``. Problems a model cannot see alone (unknown unit ids, a unit in
two contracts, duplicate contract ids) become one ``InputError`` each.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from vpp.errors import InputError
from vpp.fleet import Fleet
from vpp.ledger.contracts import (
    PLATFORM,
    UNCONTRACTED,
    AgencyOperation,
    CoInvestment,
    Contract,
    EnergyAsAService,
)
from vpp.ledger.money import to_minor

Percent = Annotated[Decimal, Field(ge=0, le=100)]
Money = Annotated[Decimal, Field(ge=0)]


class _ContractBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, description="the contract's id, unique")
    units: list[str] = Field(min_length=1, description="unit ids as the fleet names them (dg-1-2 for count-replicated units)")


class EnergyAsAServiceModel(_ContractBase):
    model: Literal["energy_as_a_service"] = Field(description="energy_as_a_service: the platform owns and operates the batteries, the customer pays a service fee and shares the savings")
    customer: str = Field("customer", min_length=1, description="the customer's name on statements")
    service_fee_per_kw_month: Money | None = Field(None, description="fee per kW of the contract's discharge rating per month, currency (major units)")
    service_fee_per_kwh_month: Money | None = Field(None, description="or: fee per kWh of the contract's energy capacity per month")
    operating_fee_per_kwh: Money = Field(Decimal(0), description="fee per kWh discharged, currency (major units)")
    customer_share_pct: Percent = Field(description="the customer's share of the net revenue, percent")


class CoInvestmentModel(_ContractBase):
    model: Literal["co_investment"] = Field(description="co_investment: parties share the net revenue by their stakes")
    stakes_pct: dict[str, Percent] = Field(min_length=1, description="party → stake in percent, summing to 100")


class AgencyOperationModel(_ContractBase):
    model: Literal["agency_operation"] = Field(description="agency_operation: the platform operates the customer's batteries, guaranteeing a monthly minimum")
    customer: str = Field("customer", min_length=1, description="the customer's name on statements")
    guaranteed_minimum_per_month: Money = Field(description="what the customer receives at least each month, currency (major units)")
    customer_excess_share_pct: Percent = Field(description="the customer's share of revenue above the guaranteed minimum, percent")


ContractModel = Annotated[EnergyAsAServiceModel | CoInvestmentModel | AgencyOperationModel, Field(discriminator="model")]


def build_contracts(models: list[ContractModel], fleet: Fleet, currency: str, where: str, errors: list[InputError]) -> tuple[Contract, ...]:
    """Contracts with units checked against the fleet and money in minor units; problems go to ``errors``."""
    units = {u.id: u for u in fleet.units}
    owner: dict[str, str] = {}
    seen: set[str] = set()
    out: list[Contract] = []
    for i, m in enumerate(models):
        loc = f"contracts[{m.id}]"
        if m.id in seen or m.id == UNCONTRACTED:  # by position: the id names two contracts
            errors.append(InputError(where, f"contracts[{i}].id", m.id, f"a unique contract id other than {UNCONTRACTED!r}"))
        seen.add(m.id)
        for uid in m.units:
            if uid not in units:
                errors.append(InputError(where, f"{loc}.units", uid, f"a unit id of the fleet, one of {sorted(units)[:12]}"))
            elif uid in owner:
                errors.append(InputError(where, f"{loc}.units", uid, f"a unit in one contract only (it is already in {owner[uid]})"))
            else:
                owner[uid] = m.id
        if not isinstance(m, CoInvestmentModel) and m.customer == PLATFORM:
            errors.append(InputError(where, f"{loc}.customer", m.customer, f"a customer name other than {PLATFORM!r}"))
        if isinstance(m, EnergyAsAServiceModel) and m.service_fee_per_kw_month is not None and m.service_fee_per_kwh_month is not None:
            errors.append(InputError(where, f"{loc}.service_fee_per_kwh_month", float(m.service_fee_per_kwh_month), "no fee per kWh when service_fee_per_kw_month is given (one basis)"))
        if isinstance(m, CoInvestmentModel) and (total := sum(m.stakes_pct.values(), Decimal(0))) != 100:
            shown = ", ".join(f"{k} {v}" for k, v in m.stakes_pct.items())
            errors.append(InputError(where, f"{loc}.stakes_pct", f"sum {total}: {shown}", "stakes summing to 100 %"))
        members = tuple(dict.fromkeys(m.units))
        if isinstance(m, EnergyAsAServiceModel):
            known = [units[u] for u in members if u in units]
            out.append(
                EnergyAsAService(
                    id=m.id,
                    units=members,
                    customer=m.customer,
                    customer_share=_fraction(m.customer_share_pct),
                    capacity_kw=sum((Fraction(str(u.max_discharge_kw)) for u in known), Fraction(0)),
                    capacity_kwh=sum((Fraction(str(u.energy_kwh)) for u in known), Fraction(0)),
                    service_fee_minor_per_kw_month=to_minor(m.service_fee_per_kw_month or 0, currency),
                    service_fee_minor_per_kwh_month=to_minor(m.service_fee_per_kwh_month or 0, currency),
                    operating_fee_minor_per_kwh=to_minor(m.operating_fee_per_kwh, currency),
                )
            )
        elif isinstance(m, CoInvestmentModel):
            out.append(CoInvestment(id=m.id, units=members, stakes=tuple((p, _fraction(s)) for p, s in m.stakes_pct.items())))
        else:
            out.append(
                AgencyOperation(
                    id=m.id,
                    units=members,
                    customer=m.customer,
                    guaranteed_minimum_minor_per_month=to_minor(m.guaranteed_minimum_per_month, currency),
                    customer_excess_share=_fraction(m.customer_excess_share_pct),
                )
            )
    return tuple(out)


def _fraction(percent: Decimal) -> Fraction:
    return Fraction(percent) / 100
