"""The plant file of `vpp central`: the central's own settings and the sites, each by its gateway config.

The central plans the whole plant as one fleet: the sites and units of every gateway config,
with the time grid and market (prices, products, DR events) they share — the first site's
config's, and every other must agree on currency, timezone and interval. A gateway config needs
nothing about other sites; its ``daemon.central.site`` must be the id it has here and the id of its
one site. A site entry may list its units with their ratings, which must match the gateway's
(``vpp validate plant.yaml`` checks it all).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vpp.config import VppConfig, load_config, read_yaml
from vpp.daemon.config import ApiModel, ClockModel
from vpp.db import default_database
from vpp.device_config import MqttBrokerConfig
from vpp.errors import InputError, InputErrors, from_validation_error
from vpp.fleet import Fleet


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlantUnitModel(_Strict):
    id: str = Field(min_length=1)
    power_kw: float = Field(gt=0, description="rating, as the gateway config's power_kw")
    energy_kwh: float = Field(gt=0)


class PlantSiteModel(_Strict):
    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$", description="the site id, its gateway's broker user and topic level")
    config: str = Field(description="the site gateway's config, relative to this file")
    units: list[PlantUnitModel] | None = Field(None, description="optional: the units the central expects there (checked against the gateway config)")


class CentralModel(_Strict):
    name: str = Field(min_length=1)
    broker: MqttBrokerConfig = Field(description="the plant broker, as the central's user")
    database: str | None = Field(None, description="SQLAlchemy URL or SQLite path (default: <plant file>.db beside it)")
    api: ApiModel = Field(ApiModel(port=8090), description="the central's HTTP API")
    clock: ClockModel = Field(ClockModel(), description="the market clock; the same as the gateways'")
    replan_every_min: float = Field(5.0, gt=0, description="market minutes between plant re-plans (also on events: a site offline or back)")
    plan_valid_min: float = Field(15.0, gt=0, description="market minutes a plan stays valid at a gateway that hears nothing newer")
    horizon_h: float | None = Field(None, gt=0, description="default: the sites' horizon_h")
    heartbeat_s: float = Field(2.0, gt=0, description="wall seconds between the central's heartbeats")
    site_offline_s: float = Field(10.0, gt=0, description="a site silent this long (no heartbeat) is offline: re-plan without it")
    solve_time_limit_s: float = Field(60.0, gt=0)
    sites: list[PlantSiteModel] = Field(min_length=1)


class PlantFileModel(_Strict):
    plant: CentralModel


@dataclass(frozen=True)
class PlantSite:
    id: str
    gateway: VppConfig
    unit_ids: tuple[str, ...]


@dataclass(frozen=True)
class Plant:
    path: Path
    central: CentralModel
    sites: tuple[PlantSite, ...]
    cfg: VppConfig  # the whole plant as one fleet, for the optimizer and settlement

    def database_target(self) -> str:
        db = self.central.database
        if db is None:
            return str(default_database(self.path))
        return db if "://" in db else str(self.path.parent / db)


def load_plant(path: str | Path) -> Plant:
    """Parse the plant file and every gateway config it names; ``InputErrors`` lists every disagreement."""
    path = Path(path)
    raw = read_yaml(path)
    try:
        model = PlantFileModel.model_validate(raw).plant
    except ValidationError as exc:
        raise from_validation_error(exc, str(path), data=raw) from None
    where = str(path)
    errors: list[InputError] = []
    sites: list[PlantSite] = []
    seen_units: dict[str, str] = {}
    if len({s.id for s in model.sites}) != len(model.sites):
        errors.append(InputError(where, "plant.sites", ",".join(s.id for s in model.sites), "distinct site ids"))
    for k, entry in enumerate(model.sites):
        field = f"plant.sites[{k}]"
        gw = load_config(path.parent / entry.config)
        link = gw.daemon.central if gw.daemon is not None else None
        if link is None or link.site != entry.id:
            errors.append(InputError(str(gw.path), "daemon.central.site", link.site if link else "(no daemon.central)", f"{entry.id}, the id the plant file gives it"))
        if [s.id for s in gw.fleet.sites] != [entry.id]:
            errors.append(InputError(str(gw.path), "sites", ",".join(s.id for s in gw.fleet.sites), f"one site, {entry.id} (a gateway is one site of the plant)"))
        first = sites[0].gateway if sites else gw
        for name in ("currency", "timezone", "interval"):
            if getattr(gw, name) != getattr(first, name):
                errors.append(InputError(str(gw.path), name, str(getattr(gw, name)), f"{getattr(first, name)}, as {first.path} (one plant, one market grid)"))
        for u in gw.units:
            if u.id in seen_units:
                errors.append(InputError(str(gw.path), "sites.units.id", u.id, f"a unit id unique in the plant (also at site {seen_units[u.id]})"))
            seen_units[u.id] = entry.id
        if entry.units is not None:
            theirs = {u.id: u for u in gw.units}
            for u in entry.units:
                g = theirs.get(u.id)
                if g is None:
                    errors.append(InputError(where, f"{field}.units", u.id, f"a unit of {gw.path} ({', '.join(theirs)})"))
                elif abs(g.max_discharge_kw - u.power_kw) > 1e-9 or abs(g.energy_kwh - u.energy_kwh) > 1e-9:
                    errors.append(InputError(where, f"{field}.units.{u.id}", f"{u.power_kw:g} kW / {u.energy_kwh:g} kWh", f"the gateway's rating {g.max_discharge_kw:g} kW / {g.energy_kwh:g} kWh"))
            for uid in sorted(set(theirs) - {u.id for u in entry.units}):
                errors.append(InputError(where, f"{field}.units", "(missing)", f"unit {uid} of {gw.path}"))
        sites.append(PlantSite(entry.id, gw, tuple(u.id for u in gw.units)))
    if errors:
        raise InputErrors(errors)
    base = sites[0].gateway
    fleet = Fleet(sites=tuple(s for p in sites for s in p.gateway.fleet.sites), units=tuple(u for p in sites for u in p.gateway.units))
    cfg = dataclasses.replace(base, path=path, name=model.name, fleet=fleet, overrides=(), overrides_path=None, mqtt=None, contracts=(), daemon=None, meters={}, horizon=base.horizon if model.horizon_h is None else pd.Timedelta(hours=model.horizon_h))
    return Plant(path, model, tuple(sites), cfg)


def is_plant_file(raw: object) -> bool:
    return isinstance(raw, dict) and set(raw) == {"plant"}
