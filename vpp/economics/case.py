"""The economics case file and the simulation summary: parsing and validation at the edge.

The case models are frozen pydantic models so that a case built in Python is
checked exactly like one read from YAML; everything after parsing is pure
(``market``, ``transfer``). Loading errors become ``InputError``s naming the
file and the dotted field path, which the CLI prints as one line each.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from vpp.errors import InputError, from_validation_error

Fraction = Annotated[float, Field(ge=0, le=1)]
NonNegative = Annotated[float, Field(ge=0)]
Efficiency = Annotated[float, Field(gt=0, le=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _not_below(other: str, shown: str | None = None) -> Any:
    """A validator for a field that must not be below the (earlier, already validated) field ``other``."""

    def check(cls: type, value: float, info: ValidationInfo) -> float:
        bound = info.data.get(other)
        if bound is not None and value < bound:
            raise ValueError(f"≥ {shown or other} ({bound})")
        return value

    return classmethod(check)


class Station(_Strict):
    """The independent storage station being priced."""

    power_kw: float = Field(gt=0)
    energy_kwh: float = Field(gt=0)
    cost_per_kw: NonNegative = Field(description="c_P: power-side capex (PCS, grid connection)")
    cost_per_kwh: NonNegative = Field(description="c_E: energy-side capex, balance of plant folded in")
    om_cost_per_kw_year: NonNegative = Field(description="c_om: fixed O&M per kW per year")
    round_trip_efficiency: Efficiency = Field(description="η applied to the spread / shaving price")
    charging_efficiency: Efficiency = Field(description="weights the network investment the station defers")

    @property
    def investment(self) -> float:
        """``C_inv = c_P·P + c_E·E``."""
        return self.cost_per_kw * self.power_kw + self.cost_per_kwh * self.energy_kwh

    @property
    def annual_om(self) -> float:
        """``C_om = c_om·P``."""
        return self.om_cost_per_kw_year * self.power_kw


class Finance(_Strict):
    """Discounting terms; the renewable plants' self-built storage is annualized with the same rate and life."""

    discount_rate: NonNegative = Field(description="i, per year")
    life_years: int = Field(gt=0, description="n")
    residual_rate: float = Field(ge=0, lt=1, description="k: residual value as a share of C_inv")
    target_irr: float = Field(gt=-1, description="the station's required IRR")
    residual_in_final_year: bool = Field(True, description="return k·C_inv as cash in year n of the IRR cash flows")


class RegulationProduct(_Strict):
    """Frequency regulation: a capacity payment and a mileage payment, each per award or action."""

    name: str
    capacity_mw: NonNegative = 0.0
    capacity_price_per_mw: NonNegative = 0.0
    availability: Fraction = 1.0
    awards_per_year: NonNegative = 0.0
    mileage_mw: NonNegative = 0.0
    mileage_price_per_mw: NonNegative = 0.0
    performance: NonNegative = Field(1.0, description="performance score (may exceed 1 where the rules allow)")
    actions_per_year: NonNegative = 0.0

    @property
    def annual_revenue(self) -> float:
        """``capacity·price·availability·awards + mileage·price·performance·actions``."""
        capacity = self.capacity_mw * self.capacity_price_per_mw * self.availability * self.awards_per_year
        mileage = self.mileage_mw * self.mileage_price_per_mw * self.performance * self.actions_per_year
        return capacity + mileage


class _CycleMarket(_Strict):
    cycles_per_year: NonNegative = Field(description="N: equivalent full cycles per year")
    regulation: tuple[RegulationProduct, ...] = ()


class SpotMarket(_CycleMarket):
    """Energy arbitrage on the spot market: ``N·E·(p_dis − p_ch)·η``."""

    source: Literal["spot"]
    charge_price_per_kwh: float
    discharge_price_per_kwh: float

    _spread_not_negative = field_validator("discharge_price_per_kwh")(_not_below("charge_price_per_kwh"))

    @property
    def spread_per_kwh(self) -> float:
        return self.discharge_price_per_kwh - self.charge_price_per_kwh


class PeakShavingMarket(_CycleMarket):
    """A peak-shaving service paid per kWh shaved: ``N·E·p_shave·η``."""

    source: Literal["peak_shaving"]
    shave_price_per_kwh: NonNegative

    @property
    def spread_per_kwh(self) -> float:
        """The shaving price plays the role of the spread, so one sensitivity serves both markets."""
        return self.shave_price_per_kwh


CycleMarket = Annotated[SpotMarket | PeakShavingMarket, Field(discriminator="source")]
# pydantic puts the tag of a discriminated union into the error location; the YAML path has no such level.
_MARKET_TAGS = frozenset({"spot", "peak_shaving"})


class RenewablePlant(_Strict):
    """``count`` identical renewable plants that must hold storage of ``ratio × capacity`` for ``duration_h``."""

    name: str
    count: int = Field(1, ge=1)
    capacity_kw: float = Field(gt=0, description="per plant")
    storage_power_ratio: Fraction
    storage_duration_h: float = Field(gt=0)
    cost_per_kw: NonNegative = Field(description="its own storage capex per kW")
    cost_per_kwh: NonNegative = Field(description="its own storage capex per kWh")
    om_cost_per_kw_year: NonNegative
    residual_rate: float = Field(0.0, ge=0, lt=1)
    full_load_hours: float = Field(ge=0, le=8784)
    tariff_per_kwh: NonNegative
    curtailment_avoided_share: Fraction = Field(description="avoided curtailment, share of generation revenue")
    penalty_avoided_share: Fraction = Field(description="avoided assessment penalties, share of generation revenue")

    @property
    def storage_power_kw(self) -> float:
        return self.count * self.capacity_kw * self.storage_power_ratio

    @property
    def storage_energy_kwh(self) -> float:
        return self.storage_power_kw * self.storage_duration_h

    @property
    def generation_revenue(self) -> float:
        """Capacity × full-load hours × tariff, all ``count`` plants together, per year."""
        return self.count * self.capacity_kw * self.full_load_hours * self.tariff_per_kwh


class GridPayer(_Strict):
    """A grid operator that defers a network upgrade and replaces demand-response capacity."""

    name: str
    network_cost_per_mw: NonNegative
    depreciation_rate: Fraction = Field(description="annual depreciation rate of the deferred network investment")
    demand_response_price_per_kw_year: NonNegative
    duration_coefficient: NonNegative
    response_speed_coefficient: NonNegative


class TransferFactorRange(_Strict):
    """The λ values the case allows and the grid the results are tabulated on."""

    min: Fraction = 0.0
    max: Fraction = 1.0
    step: float = Field(0.1, gt=0, le=1)

    _not_crossed = field_validator("max")(_not_below("min", "transfer_factor.min"))


class SensitivityGrid(_Strict):
    """Where to evaluate the λ needed for the target IRR; omitted lists are spread around the case's own values."""

    spreads_per_kwh: tuple[NonNegative, ...] | None = Field(None, min_length=1)
    cycles_per_year: tuple[NonNegative, ...] | None = Field(None, min_length=1)


class EconomicsCase(_Strict):
    """One station, its finance, its market, and the parties that may buy its capacity."""

    name: str = "storage station"
    currency: str = Field(min_length=1)
    station: Station
    finance: Finance
    market: CycleMarket
    renewables: tuple[RenewablePlant, ...] = ()
    grid: tuple[GridPayer, ...] = ()
    transfer_factor: TransferFactorRange = TransferFactorRange()
    sensitivity: SensitivityGrid = SensitivityGrid()


class SimulatedFleet(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    power_kw: float = Field(gt=0)
    energy_kwh: float = Field(gt=0)


class SimulationSummary(BaseModel):
    """The part of ``vpp simulate``'s ``summary.json`` the economics needs; other keys are ignored."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    start: AwareDatetime = Field(alias="from")
    end: AwareDatetime = Field(alias="to")
    currency: str
    revenue_by_stream: dict[str, float]
    net_revenue: float = Field(description="sum of the streams, net of degradation, before O&M")
    fleet: SimulatedFleet
    source: str = Field("summary.json", description="where it was read from, for messages and notes")

    @field_validator("end")
    @classmethod
    def _after_start(cls, value: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("start")
        if start is not None and value <= start:
            raise ValueError(f"after 'from' ({start.isoformat()})")
        return value

    @field_validator("net_revenue")
    @classmethod
    def _sum_of_streams(cls, value: float, info: ValidationInfo) -> float:
        """Guards the contract that O&M is not inside: the net must be exactly the listed streams."""
        streams = info.data.get("revenue_by_stream")
        if streams is not None and abs(sum(streams.values()) - value) > 1e-6 * max(1.0, abs(value)):
            raise ValueError(f"the sum of revenue_by_stream ({sum(streams.values())})")
        return value

    @property
    def period_days(self) -> float:
        return (self.end - self.start).total_seconds() / 86400


def parse_case(data: Any, where: str = "<case>") -> EconomicsCase:
    """Validate a case given as plain data (what YAML yields); errors name ``where`` and the field."""
    return _validate(EconomicsCase, data, where)


def load_case(path: str | Path) -> EconomicsCase:
    """Read and validate a case YAML file."""
    from vpp.validate import expect_kind

    data = _read(Path(path), yaml.safe_load, yaml.YAMLError)
    expect_kind(data, "economics case", str(path))
    return parse_case(data, str(path))


def read_simulation_summary(directory: str | Path, currency: str) -> SimulationSummary:
    """Read ``DIR/summary.json`` written by ``vpp simulate``; its currency must be the case's."""
    path = Path(directory) / "summary.json"
    data = _read(path, json.loads, json.JSONDecodeError)
    summary = _validate(SimulationSummary, {**data, "source": str(path)} if isinstance(data, dict) else data, str(path))
    if summary.currency != currency:
        raise InputError(str(path), "currency", summary.currency, f"the case currency {currency!r}")
    return summary


def _read(path: Path, parse: Any, parse_error: type[Exception]) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(str(path), "(file)", err.strerror or str(err), "a readable file") from err
    try:
        return parse(text)
    except parse_error as err:
        raise InputError(str(path), "(syntax)", str(err).splitlines()[0], "well-formed content") from err


def _validate(model: type[BaseModel], data: Any, where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise from_validation_error(err, where, skip=_MARKET_TAGS, data=data) from err
