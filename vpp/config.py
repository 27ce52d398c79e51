"""Loading and validating a VPP configuration (YAML + the CSV files it names).

pydantic checks the structure; ``_build`` checks what pydantic cannot see
(references between sections, SoC windows, units of referenced series, tariff
coverage) and turns the file into domain objects. Every problem becomes an
``InputError`` naming the file, the field path and the value; ``vpp validate``
collects them all instead of stopping at the first.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vpp import safe_yaml
from vpp.daemon.config import DaemonModel
from vpp.device_config import DeviceConfig, MqttBrokerConfig
from vpp.errors import InputError, InputErrors, from_validation_error
from vpp.fleet import BatteryUnit, Derate, Fleet, Site, Tariff, TouPeriod
from vpp.ledger.config import ContractModel, build_contracts
from vpp.ledger.contracts import Contract
from vpp.meter_config import MeterModel
from vpp.markets import AncillaryProduct, DemandResponseEvent, GateClosure, Market, ProductKind
from vpp.overrides import Override, OverrideKind
from vpp.schedule import SolverOptions, TerminalPolicy
from vpp.timeseries import Column, LoadedSeries, Profile, magnitude_warnings, read_csv_series, scaled

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- file schema


class _Strict(BaseModel):
    # allow_inf_nan=False: NaN and infinity are refused at the boundary; a NaN limit would pass every check
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ColumnModel(_Strict):
    column: str = Field(description="the column's header in the CSV file, exactly as written")
    unit: Literal["per_mwh", "per_kwh", "per_mw_h", "per_kw_h", "kw", "mw", "kw_per_kw"] = Field(description="what the column holds and in which unit: per_mwh / per_kwh (energy prices), per_mw_h / per_kw_h (capacity prices per MW or kW per hour), kw / mw (power), kw_per_kw (a profile normalized to 1 kW of rating)")
    scale: float = Field(1.0, gt=0, description="factor applied after the unit conversion (e.g. 0.5 for half of a published load)")


class SourceModel(_Strict):
    file: str = Field(description="path of the CSV file, relative to this config")
    time_column: str = Field(description="the column holding each interval's start time")
    timezone: str | None = Field(None, description="zone of the file's naive timestamps (default: the config's timezone); timestamps with an offset keep it")
    delimiter: str = Field(",", min_length=1, max_length=1, description="the character between fields; ';' in many European exports")
    decimal: Literal[".", ","] = Field(".", description="the decimal mark of the numbers; ',' needs another delimiter")
    columns: dict[str, ColumnModel] = Field(description="series name → column: the series is referenced elsewhere as '<source>.<name>'")

    @model_validator(mode="after")
    def _marks(self) -> SourceModel:
        if self.delimiter == self.decimal:
            raise ValueError(f"delimiter and decimal are both {self.delimiter!r}; a decimal comma needs delimiter ';'")
        return self


class ScaledRef(_Strict):
    series: str = Field(description="a loaded series, '<source>.<name>'")
    scale: float = Field(1.0, gt=0, description="factor applied to the series (e.g. a site's load as 0.8 × a reference building)")


SeriesRef = float | str | ScaledRef


class DerateModel(_Strict):
    start: datetime = Field(description="start of the derate (config timezone unless it carries an offset)")
    end: datetime = Field(description="end of the derate, exclusive")
    factor: float = Field(ge=0, le=1, description="fraction of the unit's power limits available (0: out of service)")
    reason: str = Field("", description="why, for the plan's records")


class UnitModel(_Strict):
    id: str = Field(min_length=1, description="the unit's id, unique in the fleet (with count: the ids are <id>-1 .. <id>-N)")
    count: int = Field(1, ge=1, description="replicate into id-1..id-N identical units")
    power_kw: float | None = Field(None, gt=0, description="shorthand for equal charge and discharge limits, kW at the AC terminals")
    max_charge_kw: float | None = Field(None, gt=0, description="charging limit, kW at the AC terminals")
    max_discharge_kw: float | None = Field(None, gt=0, description="discharging limit, kW at the AC terminals")
    energy_kwh: float = Field(gt=0, description="usable energy capacity, kWh (SoC 0..1 spans it)")
    soc_min: float = Field(0.0, ge=0, le=1, description="lowest state of charge the plan and the dispatcher may reach, fraction 0..1")
    soc_max: float = Field(1.0, ge=0, le=1, description="highest state of charge, fraction 0..1 (above soc_min)")
    eta_charge: float = Field(0.95, gt=0, le=1, description="charging efficiency, AC to stored energy, fraction")
    eta_discharge: float = Field(0.95, gt=0, le=1, description="discharging efficiency, stored energy to AC, fraction")
    self_discharge_per_h: float = Field(0.0, ge=0, lt=1, description="fraction of the stored energy lost per hour")
    degradation_cost_per_mwh: float = Field(0.0, ge=0, description="wear cost per MWh discharged (AC), in the config's currency")
    max_cycles_per_day: float | None = Field(None, gt=0, description="full equivalent cycles allowed per day of horizon (discharged energy / energy_kwh); none: no limit")
    initial_soc: float = Field(0.5, ge=0, le=1, description="state of charge at the first interval when no telemetry says otherwise, fraction")
    derates: list[DerateModel] = Field([], description="periods of reduced power (maintenance, thermal limits)")
    device: DeviceConfig | None = Field(None, description="how the gateway reaches the unit (protocol sunspec, modbus_map or mqtt); none: planned only")

    @model_validator(mode="after")
    def _limits(self) -> UnitModel:
        if self.soc_min >= self.soc_max:
            raise ValueError(f"SoC window inverted or empty: soc_min {self.soc_min} >= soc_max {self.soc_max}")
        if self.power_kw is None and (self.max_charge_kw is None or self.max_discharge_kw is None):
            raise ValueError("give power_kw, or both max_charge_kw and max_discharge_kw")
        return self


_HOURS = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


class TouPeriodModel(_Strict):
    name: str = Field(description="the period's name on the bill (e.g. peak, flat, valley)")
    price_per_kwh: float = Field(description="energy price in this period, currency per kWh imported")
    hours: list[str] = Field(min_length=1, description='local clock ranges like "10:00-12:00"; "00:00-24:00" for all day')
    months: list[int] = Field(list(range(1, 13)), description="months (1..12) the period applies in")

    @field_validator("hours")
    @classmethod
    def _ranges(cls, v: list[str]) -> list[str]:
        for r in v:
            m = _HOURS.match(r)
            if not m or not (0 <= _h(m, 1) < _h(m, 3) <= 24):
                raise ValueError(f'{r!r} is not a range "HH:MM-HH:MM" with start < end <= 24:00')
        return v

    @field_validator("months")
    @classmethod
    def _months(cls, v: list[int]) -> list[int]:
        if not v or any(m < 1 or m > 12 for m in v):
            raise ValueError(f"{v} must be month numbers 1..12")
        return v


def _h(m: re.Match[str], g: int) -> float:
    return int(m.group(g)) + int(m.group(g + 1)) / 60.0


class TariffModel(_Strict):
    periods: list[TouPeriodModel] = Field(min_length=1, description="time-of-use periods; together they must price every hour of every month")
    demand_charge_per_kw_month: float = Field(0.0, ge=0, description="charge per kW of the month's highest import, currency per kW-month")
    feed_in_price_per_kwh: float = Field(0.0, description="what exported energy earns, currency per kWh")


class SiteModel(_Strict):
    id: str = Field(min_length=1, description="the site's id, unique in the fleet")
    market: Literal["wholesale", "retail"] = Field("retail", description="wholesale: the site trades at the spot price; retail: behind the meter, billed by its tariff")
    import_limit_kw: float | None = Field(None, gt=0, description="most the site may draw from the grid at its connection, kW; none: no limit")
    export_limit_kw: float | None = Field(None, ge=0, description="most the site may feed into the grid, kW; none: no limit")
    export_allowed: bool = Field(True, description="false: the connection forbids export (anti-backflow); the export limit is then 0 kW")
    tariff: str | None = Field(None, description="id of the site's retail tariff (required for retail sites)")
    load_kw: SeriesRef | None = Field(None, description="the site's own consumption, kW: a number, a loaded series '<source>.<name>', or {series, scale}")
    pv_kw: SeriesRef | None = Field(None, description="the site's PV generation, kW (same forms as load_kw)")
    demand_peak_so_far_kw: float = Field(0.0, ge=0, description="the month's highest import so far, kW: only a peak above it costs demand charge")
    units: list[UnitModel] = Field(min_length=1, description="the batteries at this site")
    meter: MeterModel | None = Field(None, description="the grid-connection meter the gateway's site control loop closes on; none: site limits are held against load_kw/pv_kw only, which does not protect against export")


class GateClosureModel(_Strict):
    day_ahead_at: time | None = Field(None, description="local time of the day-ahead gate closure (e.g. 10:00)")
    days_before: int = Field(1, ge=0, description="days before the delivery day the day-ahead gate closes")
    lead_min: float | None = Field(None, ge=0, description="or: minutes before each delivery interval the gate closes (intraday products)")

    @model_validator(mode="after")
    def _one(self) -> GateClosureModel:
        if (self.day_ahead_at is None) == (self.lead_min is None):
            raise ValueError("give exactly one of day_ahead_at or lead_min")
        return self


class ProductModel(_Strict):
    id: str = Field(min_length=1, description="the product's id, unique in the market")
    kind: Literal["regulation_up", "regulation_down", "spinning_reserve"] = Field(description="regulation_up, regulation_down or spinning_reserve")
    price: SeriesRef = Field(description="capacity price per MW per hour")
    min_bid_kw: float = Field(0.0, ge=0, description="smallest bid the market accepts, kW (0 or at least this)")
    increment_kw: float = Field(0.0, ge=0, description="bids above the minimum come in whole multiples of this, kW (0: any size)")
    sustain_h: float = Field(1.0, gt=0, description="hours a unit must be able to sustain what it offers (energy reserved for it)")
    deployment_fraction: float = Field(0.0, ge=0, le=1, description="expected share of the offered capacity actually deployed, fraction (moves energy and pays the energy price)")
    mileage_price: SeriesRef | None = Field(None, description="price per MW of mileage (a number or a loaded capacity-price series)")
    mileage_per_mw_h: float = Field(0.0, ge=0, description="expected mileage per MW offered per hour")
    performance_score: float = Field(1.0, gt=0, le=1, description="the operator's performance score that scales capacity and mileage payments, fraction")
    gate_closure: GateClosureModel | None = Field(None, description="when bids for each interval are fixed; none: they can change until delivery")
    sites: list[str] | None = Field(None, description="ids of the sites allowed to provide the product; none: every site")


class DrEventModel(_Strict):
    id: str = Field(min_length=1, description="the event's id")
    start: datetime = Field(description="start of the event window (config timezone unless it carries an offset)")
    end: datetime = Field(description="end of the event window, exclusive")
    sites: list[str] | Literal["all"] = Field("all", description="ids of the sites taking part, or all")
    capacity_price_per_kw: float = Field(ge=0, description="payment per kW committed for the event, in the config's currency")
    energy_price_per_mwh: float = Field(0.0, description="payment per MWh delivered during the event")
    min_kw: float = Field(0.0, ge=0, description="smallest commitment the programme accepts, kW (0 or at least this)")
    increment_kw: float = Field(0.0, ge=0, description="commitments above the minimum in whole multiples of this, kW (0: any size)")
    baseline: Literal["no_battery", "fixed"] = Field("no_battery", description="what delivery is measured against: no_battery (the sites' net load without the batteries) or fixed (baseline_kw)")
    baseline_kw: float | None = Field(None, description="the fixed baseline, kW of net export (baseline: fixed)")
    shortfall_penalty_per_mwh: float = Field(0.0, ge=0, description="penalty per MWh of committed reduction not delivered")
    mandatory: bool = Field(False, description="true: the fleet must commit (at least min_kw); false: committing is a choice")

    @model_validator(mode="after")
    def _window(self) -> DrEventModel:
        if self.end <= self.start:
            raise ValueError(f"event ends ({self.end}) before it starts ({self.start})")
        if self.baseline == "fixed" and self.baseline_kw is None:
            raise ValueError("baseline 'fixed' needs baseline_kw")
        return self


class MarketModel(_Strict):
    energy_price: SeriesRef | None = Field(None, description="spot price per MWh for wholesale sites")
    products: list[ProductModel] = Field([], description="ancillary-service products the fleet may bid into")
    demand_response: list[DrEventModel] = Field([], description="demand-response events the fleet may commit to")


class SolverModel(_Strict):
    time_limit_s: float = Field(60.0, gt=0, description="wall seconds per solve; when it ends the best schedule found so far is returned with its gap")
    mip_gap: float = Field(1e-3, ge=0, lt=1, description="relative gap to the bound at which a solve stops, fraction (0.001 = 0.1 %)")
    exclusivity: Literal["lazy", "binary", "hull", "relaxed"] = Field("lazy", description="how charging and discharging at once is prevented: lazy (binaries only where needed; exact), binary, hull (time-sharing), relaxed")
    infeasibility_penalty_per_kwh: float = Field(1.0e4, gt=0, description="cost per kWh of violating a limit in the elastic re-solve that names what is infeasible")
    threads: int = Field(1, ge=1, description="HiGHS threads for one model")
    decomposition: Literal["auto", "on", "off"] = Field("auto", description="auto: solve large fleets as pieces coordinated by a master; on / off: always / never")
    piece_units: int | None = Field(None, ge=1, description="units per decomposition piece; default 4 from 1,000 units, 8 below")
    bound_rounds: int = Field(1, ge=1, description="pricing rounds for the decomposition's bound when DR events couple the pieces")
    piece_threads: int = Field(2, ge=1, description="threads solving pieces in this process (HiGHS releases the GIL)")
    workers: int = Field(1, ge=1, description="processes solving pieces (a local Dask cluster when more than 1)")
    scheduler: str | None = Field(None, description="Dask scheduler address, e.g. tcp://host:8786")
    extensions: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="user rules added to every solve: 'file.py:function' (relative to this config) or 'package.module:function'; each receives the Pyomo model's variables and the problem and adds linear constraints (docs/formulation.md)",
        examples=[["extensions.py:never_charge_together"]],
    )


class TerminalModel(_Strict):
    mode: Literal["initial", "soc", "value"] = Field("initial", description="how the end of the horizon is valued: initial (end at least at the starting SoC), soc (at least soc), value (stored energy worth price_per_mwh)")
    soc: float | None = Field(None, ge=0, le=1, description="the end-of-horizon SoC floor for mode soc, fraction")
    price_per_mwh: float | None = Field(None, description="value of energy left at the end for mode value, currency per MWh")

    @model_validator(mode="after")
    def _needs(self) -> TerminalModel:
        if self.mode == "soc" and self.soc is None:
            raise ValueError("mode 'soc' needs soc")
        if self.mode == "value" and self.price_per_mwh is None:
            raise ValueError("mode 'value' needs price_per_mwh")
        return self


class ConfigModel(_Strict):
    name: str = Field(description="the plant's name, in reports and output folder names")
    currency: str = Field(min_length=3, max_length=3, description="ISO 4217 code of every price and amount in this file (CNY, USD, EUR)")
    timezone: str = Field("UTC", description="zone for naive times in this file and for tariffs")
    interval_min: Literal[5, 15, 30, 60] = Field(60, description="length of one market / optimization interval, minutes")
    horizon_h: float = Field(24.0, gt=0, description="optimization horizon, hours (a whole number of intervals)")
    start: datetime | None = Field(None, description="default first interval start for vpp optimize (config timezone unless it carries an offset)")
    data: dict[str, SourceModel] = Field({}, description="CSV sources: each names a file, its time column and the columns it provides, with their units")
    tariffs: dict[str, TariffModel] = Field({}, description="retail tariffs by id, referenced by sites")
    sites: list[SiteModel] = Field(min_length=1, description="the sites of the plant and the batteries at each")
    market: MarketModel = Field(MarketModel(), description="the wholesale price, ancillary products and DR events")
    solver: SolverModel = Field(SolverModel(), description="optimizer settings")
    terminal: TerminalModel = Field(TerminalModel(), description="how energy left at the end of the horizon is valued")
    overrides: str | None = Field(None, description="path of the overrides YAML, relative to this file")
    mqtt: MqttBrokerConfig | None = Field(None, description="the broker MQTT units talk through")
    contracts: list[ContractModel] = Field([], description="customer contracts: how settled revenue is split (vpp.ledger)")
    daemon: DaemonModel | None = Field(None, description="settings of `vpp run` (defaults when absent)")


OVERRIDE_YEARS = (2000, 2200)  # an override outside these years is a typo (and beyond pandas' range at 2262)


class OverrideModel(_Strict):
    kind: Literal["force_power", "unit_out", "soc_floor", "soc_ceiling", "block_product", "fleet_export_cap", "fleet_import_cap"] = Field(description="force_power (unit or site, value kW, + discharge), unit_out, soc_floor / soc_ceiling (unit, value 0..1), block_product (product), fleet_export_cap / fleet_import_cap (value kW)")
    start: datetime = Field(description="when the override takes effect (config timezone unless it carries an offset)")
    end: datetime = Field(description="when it ends, exclusive")
    author: str = Field(min_length=1, description="who set it, for the audit log")
    reason: str = Field(min_length=1, description="why, for the audit log")
    unit: str | None = Field(None, description="the unit it applies to")
    site: str | None = Field(None, description="the site it applies to (force_power on a whole site)")
    product: str | None = Field(None, description="the product it blocks (block_product)")
    value: float | None = Field(None, description="kW for force_power and fleet caps; SoC fraction for soc_floor / soc_ceiling")

    @model_validator(mode="after")
    def _shape(self) -> OverrideModel:
        for name in ("start", "end"):
            if not OVERRIDE_YEARS[0] <= getattr(self, name).year <= OVERRIDE_YEARS[1]:
                raise ValueError(f"{name} {getattr(self, name)} is outside the years {OVERRIDE_YEARS[0]}-{OVERRIDE_YEARS[1]}")
        if self.end <= self.start:
            raise ValueError(f"override ends ({self.end}) before it starts ({self.start})")
        needs_value = self.kind in ("force_power", "soc_floor", "soc_ceiling", "fleet_export_cap", "fleet_import_cap")
        if needs_value and self.value is None:
            raise ValueError(f"{self.kind} needs value")
        if self.kind == "force_power" and (self.unit is None) == (self.site is None):
            raise ValueError("force_power needs exactly one of unit or site")
        if self.kind in ("unit_out", "soc_floor", "soc_ceiling") and self.unit is None:
            raise ValueError(f"{self.kind} needs unit")
        if self.kind == "block_product" and self.product is None:
            raise ValueError("block_product needs product")
        if self.kind in ("soc_floor", "soc_ceiling") and not 0 <= (self.value or 0) <= 1:
            raise ValueError(f"{self.kind} value {self.value} must be a SoC fraction 0..1")
        if self.kind.startswith("fleet_") and (self.value or 0) < 0:
            raise ValueError(f"{self.kind} value {self.value} must be >= 0 kW")
        return self


class OverridesFileModel(_Strict):
    overrides: list[OverrideModel] = Field([], description="operator overrides; an invalid file is rejected whole and the previous overrides stay in force")


# ---------------------------------------------------------------- domain result


@dataclass(frozen=True)
class VppConfig:
    path: Path
    name: str
    currency: str
    timezone: str
    interval: pd.Timedelta
    horizon: pd.Timedelta
    start: pd.Timestamp | None
    fleet: Fleet
    market: Market
    overrides: tuple[Override, ...]
    solver: SolverOptions
    terminal: TerminalPolicy
    overrides_path: Path | None = None
    mqtt: MqttBrokerConfig | None = None
    contracts: tuple[Contract, ...] = ()
    daemon: DaemonModel | None = None
    meters: Mapping[str, MeterModel] = field(default_factory=dict)  # site id -> its grid meter (sites[].meter)
    warnings: tuple[str, ...] = ()  # plausible-looking but suspicious input (a price 1,000x off its unit); the CLI prints them

    @property
    def units(self) -> tuple[BatteryUnit, ...]:
        return self.fleet.units

    def horizon_index(self, start: pd.Timestamp | None = None, horizon: pd.Timedelta | None = None) -> pd.DatetimeIndex:
        """Interval starts from ``start`` (default: the config's) over ``horizon``, in UTC."""
        begin = start if start is not None else self.start
        if begin is None:
            raise InputError(str(self.path), "start", None, "a start time (in the config or --start)")
        begin = to_utc(begin, self.timezone)
        span = horizon if horizon is not None else self.horizon
        n = int(span / self.interval)
        if n < 1 or span % self.interval != pd.Timedelta(0):
            minutes = self.interval.total_seconds() / 60
            raise InputError(str(self.path), "horizon", str(span), f"a whole number (at least one) of {minutes:g}-minute intervals")
        return pd.date_range(begin, periods=n, freq=self.interval)


_BARE_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)\s*$")


def parse_duration(text: str, field: str, interval: pd.Timedelta | None = None, where: str | None = None) -> pd.Timedelta:
    """A duration a user typed (``24h``, ``2d``, ``90min``, ``1h30min``); a bare number is refused, as its
    unit would be a guess (pandas reads ``24`` as 24 nanoseconds). With ``interval``, the duration must
    be a whole number of intervals: 90 minutes of hourly intervals is not silently one interval."""
    text = str(text)
    if _BARE_NUMBER.match(text):
        raise InputError(where or field, field.lstrip("-"), text, f"a duration with a unit, such as {text.strip()}h or {text.strip()}min")
    try:
        span = pd.Timedelta(text)
    except ValueError:
        raise InputError(where or field, field.lstrip("-"), text, "a duration like 24h, 2d or 90min") from None
    if span <= pd.Timedelta(0):
        raise InputError(where or field, field.lstrip("-"), text, "a positive duration")
    if interval is not None and span % interval != pd.Timedelta(0):
        minutes = interval.total_seconds() / 60
        raise InputError(where or field, field.lstrip("-"), text, f"a whole number of the config's {minutes:g}-minute intervals")
    return span


def parse_time(text: str, timezone: str, field: str) -> pd.Timestamp:
    """A time a user typed, in ``timezone`` unless it carries an offset, as UTC."""
    try:
        return to_utc(text, timezone)
    except (ValueError, TypeError, OverflowError):
        raise InputError(field, field.lstrip("-"), text, "a date or time like 2020-08-01 or 2020-08-01T10:00") from None


def to_utc(value: datetime | pd.Timestamp | str, timezone: str) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize(timezone)
    return ts.tz_convert("UTC")


# ---------------------------------------------------------------- loading


def load_config(path: str | Path) -> VppConfig:
    """Parse, check and load a config and every file it references. Raises ``InputErrors`` listing all problems."""
    from vpp.validate import expect_kind

    path = Path(path)
    raw = read_yaml(path)
    expect_kind(raw, "config", str(path))
    try:
        model = ConfigModel.model_validate(raw)
    except ValidationError as exc:
        raise from_validation_error(exc, str(path), data=raw) from None
    errors: list[InputError] = []
    config = _build(model, path, errors)
    if errors or config is None:
        raise InputErrors(errors)
    for warning in config.warnings:
        log.warning("%s", warning)
    return config


def load_overrides(path: Path, fleet: Fleet, market: Market, timezone: str) -> tuple[Override, ...]:
    """Parse an overrides file against the fleet and market it applies to (unknown ids are errors)."""
    raw = read_yaml(path, safe_yaml.OVERRIDES) or {}
    try:
        model = OverridesFileModel.model_validate(raw)
    except ValidationError as exc:
        raise from_validation_error(exc, str(path), data=raw) from None
    errors: list[InputError] = []
    units = {u.id for u in fleet.units}
    sites = {s.id for s in fleet.sites}
    products = {p.id for p in market.products}
    out = []
    for i, o in enumerate(model.overrides):
        where = f"overrides[{i}]"
        for field_name, value, known in (("unit", o.unit, units), ("site", o.site, sites), ("product", o.product, products)):
            if value is not None and value not in known:
                errors.append(InputError(str(path), f"{where}.{field_name}", value, f"one of {sorted(known)}"))
        out.append(
            Override(
                kind=OverrideKind(o.kind),
                start=to_utc(o.start, timezone),
                end=to_utc(o.end, timezone),
                author=o.author,
                reason=o.reason,
                unit_id=o.unit,
                site_id=o.site,
                product_id=o.product,
                value=o.value,
            )
        )
    if errors:
        raise InputErrors(errors)
    return tuple(out)


def read_yaml(path: Path, budget: safe_yaml.Budget = safe_yaml.CONFIG) -> Any:
    """A YAML file's content, or an ``InputError`` naming the file and line (shared by every YAML the engine
    reads), bounded in size, nodes, depth and alias expansion (``vpp.safe_yaml``)."""
    return safe_yaml.read(path, budget)


def _build(m: ConfigModel, path: Path, errors: list[InputError]) -> VppConfig | None:
    where = str(path)
    base = path.parent
    tz = _check_zone(m.timezone, where, "timezone", errors)

    series: dict[str, LoadedSeries] = {}
    warnings: list[str] = []
    failed_sources: set[str] = set()  # already reported: do not report every reference to them again
    for src_name, src in m.data.items():
        zone = _check_zone(src.timezone or m.timezone, where, f"data.{src_name}.timezone" if src.timezone else "timezone", errors)
        if zone is None:
            failed_sources.add(src_name)
            continue
        columns = {k: Column(c.column, c.unit, c.scale) for k, c in src.columns.items()}
        try:
            for name, s in read_csv_series(base / src.file, src.time_column, zone, columns, src_name, src.delimiter, src.decimal).items():
                series[s.name] = s
                warnings.extend(f"{base / src.file}: {w}" for w in magnitude_warnings(s, columns[name].unit, m.currency))
        except InputError as err:
            errors.append(err)
            failed_sources.add(src_name)

    def ref(value: SeriesRef | None, field: str, quantity: str) -> Profile | None:
        if value is None or isinstance(value, (int, float)):
            return value
        name, factor = (value, 1.0) if isinstance(value, str) else (value.series, value.scale)
        if name not in series:
            if name.split(".", 1)[0] not in failed_sources:
                errors.append(InputError(where, field, name, f"a loaded series 'source.column', one of {sorted(series)[:10]}"))
            return None
        s = series[name]
        if s.quantity != quantity:
            errors.append(InputError(where, field, f"{name} ({s.quantity})", f"a {quantity.replace('_', ' ')} series"))
            return None
        return scaled(s, factor)

    tariffs: dict[str, Tariff] = {}
    for tid, t in m.tariffs.items():
        periods = tuple(
            TouPeriod(p.name, p.price_per_kwh, tuple((_h(mm, 1), _h(mm, 3)) for mm in (_HOURS.match(r) for r in p.hours) if mm), frozenset(p.months))
            for p in t.periods
        )
        tariff = Tariff(tid, tz or "UTC", periods, t.demand_charge_per_kw_month, t.feed_in_price_per_kwh)
        missing = tariff.uncovered_hours()
        if missing:
            month, hour = missing[0]
            errors.append(InputError(where, f"tariffs.{tid}.periods", f"month {month} {int(hour):02d}:{int(hour % 1 * 60):02d}", "every hour of every month priced by some period"))
        tariffs[tid] = tariff

    sites: list[Site] = []
    units: list[BatteryUnit] = []
    seen_units: set[str] = set()
    for i, s in enumerate(m.sites):
        loc = f"sites[{s.id}]"
        if s.id in {x.id for x in sites}:  # by position: the id names two sites
            errors.append(InputError(where, f"sites[{i}].id", s.id, "a unique site id"))
        tariff = None
        if s.tariff is not None:
            tariff = tariffs.get(s.tariff)
            if tariff is None:
                errors.append(InputError(where, f"{loc}.tariff", s.tariff, f"one of the tariffs {sorted(tariffs)}"))
        elif s.market == "retail":
            errors.append(InputError(where, f"{loc}.tariff", None, "a tariff for a retail (behind-the-meter) site"))
        sites.append(
            Site(
                id=s.id,
                market=s.market,
                import_limit_kw=s.import_limit_kw if s.import_limit_kw is not None else float("inf"),
                export_limit_kw=(s.export_limit_kw if s.export_limit_kw is not None else float("inf")) if s.export_allowed else 0.0,
                tariff=tariff,
                load_kw=ref(s.load_kw, f"{loc}.load_kw", "power"),
                pv_kw=ref(s.pv_kw, f"{loc}.pv_kw", "power"),
                demand_peak_so_far_kw=s.demand_peak_so_far_kw,
            )
        )
        for u in s.units:
            ids = [u.id] if u.count == 1 else [f"{u.id}-{k + 1}" for k in range(u.count)]
            for uid in ids:
                if uid in seen_units:
                    errors.append(InputError(where, f"{loc}.units[{u.id}].id", uid, "a unique unit id"))
                seen_units.add(uid)
                units.append(
                    BatteryUnit(
                        id=uid,
                        site_id=s.id,
                        max_charge_kw=u.max_charge_kw or u.power_kw or 0.0,
                        max_discharge_kw=u.max_discharge_kw or u.power_kw or 0.0,
                        energy_kwh=u.energy_kwh,
                        soc_min=u.soc_min,
                        soc_max=u.soc_max,
                        eta_charge=u.eta_charge,
                        eta_discharge=u.eta_discharge,
                        self_discharge_per_h=u.self_discharge_per_h,
                        degradation_cost_per_mwh=u.degradation_cost_per_mwh,
                        max_cycles_per_day=u.max_cycles_per_day,
                        initial_soc=u.initial_soc,
                        derates=tuple(Derate(to_utc(d.start, tz or "UTC"), to_utc(d.end, tz or "UTC"), d.factor, d.reason) for d in u.derates),
                        device=u.device,
                    )
                )
    site_ids = {s.id for s in sites}
    wholesale = any(s.market == "wholesale" for s in sites)

    energy_price = ref(m.market.energy_price, "market.energy_price", "energy_price")
    if wholesale and m.market.energy_price is None:
        errors.append(InputError(where, "market.energy_price", None, "a spot price series for the wholesale sites"))

    products = []
    for i, p in enumerate(m.market.products):
        loc = f"market.products[{p.id}]"
        if p.id in {x.id for x in products}:  # by position: the id names two products
            errors.append(InputError(where, f"market.products[{i}].id", p.id, "a unique product id"))
        for sid in p.sites or []:
            if sid not in site_ids:
                errors.append(InputError(where, f"{loc}.sites", sid, f"one of the sites {sorted(site_ids)}"))
        gate = None
        if p.gate_closure is not None:
            g = p.gate_closure
            gate = GateClosure(days_before=g.days_before if g.day_ahead_at else None, time=g.day_ahead_at, lead_min=g.lead_min)
        products.append(
            AncillaryProduct(
                id=p.id,
                kind=ProductKind(p.kind),
                capacity_price_per_mw_h=ref(p.price, f"{loc}.price", "capacity_price") or 0.0,
                min_bid_kw=p.min_bid_kw,
                increment_kw=p.increment_kw,
                sustain_h=p.sustain_h,
                deployment_fraction=p.deployment_fraction,
                mileage_price_per_mw=ref(p.mileage_price, f"{loc}.mileage_price", "capacity_price"),
                mileage_per_mw_h=p.mileage_per_mw_h,
                performance_score=p.performance_score,
                gate_closure=gate,
                eligible_sites=frozenset(p.sites) if p.sites is not None else None,
            )
        )

    events = []
    for e in m.market.demand_response:
        loc = f"market.demand_response[{e.id}]"
        members = site_ids if e.sites == "all" else set(e.sites)
        for sid in members - site_ids:
            errors.append(InputError(where, f"{loc}.sites", sid, f"one of the sites {sorted(site_ids)}"))
        events.append(
            DemandResponseEvent(
                id=e.id,
                start=to_utc(e.start, tz or "UTC"),
                end=to_utc(e.end, tz or "UTC"),
                site_ids=frozenset(members & site_ids),
                capacity_price_per_kw=e.capacity_price_per_kw,
                energy_price_per_mwh=e.energy_price_per_mwh,
                min_kw=e.min_kw,
                increment_kw=e.increment_kw,
                baseline=e.baseline,
                baseline_kw=e.baseline_kw,
                shortfall_penalty_per_mwh=e.shortfall_penalty_per_mwh,
                mandatory=e.mandatory,
            )
        )

    if errors or tz is None:
        return None
    fleet = Fleet(tuple(sites), tuple(units))
    market = Market(m.currency, energy_price, tuple(products), tuple(events))
    overrides: tuple[Override, ...] = ()
    overrides_path = None
    if m.overrides is not None:
        overrides_path = base / m.overrides
        try:
            overrides = load_overrides(overrides_path, fleet, market, tz)
        except InputErrors as errs:
            errors.extend(errs.errors)
        except InputError as err:
            errors.append(err)
    contracts = build_contracts(m.contracts, fleet, m.currency, where, errors)
    return VppConfig(
        path=path,
        name=m.name,
        currency=m.currency,
        timezone=tz,
        interval=pd.Timedelta(minutes=m.interval_min),
        horizon=pd.Timedelta(hours=m.horizon_h),
        start=to_utc(m.start, tz) if m.start is not None else None,
        fleet=fleet,
        market=market,
        overrides=overrides,
        solver=SolverOptions(**{**m.solver.model_dump(), "extensions": tuple(_extension_spec(x, base) for x in m.solver.extensions)}),
        terminal=TerminalPolicy(m.terminal.mode, m.terminal.soc, m.terminal.price_per_mwh),
        overrides_path=overrides_path,
        mqtt=m.mqtt,
        contracts=contracts,
        daemon=m.daemon,
        meters={s.id: s.meter for s in m.sites if s.meter is not None},
        warnings=tuple(warnings),
    )


def _extension_spec(spec: str, base: Path) -> str:
    """A rule in a file next to the config is named by its resolved path (the solve may run elsewhere)."""
    module, sep, name = spec.partition(":")
    return f"{(base / module).resolve()}{sep}{name}" if module.endswith(".py") else spec


def _check_zone(name: str, where: str, field: str, errors: list[InputError]) -> str | None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        errors.append(InputError(where, field, name, "an IANA time zone such as Asia/Shanghai or Etc/GMT+8"))
        return None
    return name
