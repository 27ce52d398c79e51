"""Scenario sweeps: many backtests that differ in fleet size, duration, forecast, price file or products.

A sweep file names a base config and a period, and a ``grid`` whose
cartesian product gives the scenarios (every key optional):

    config: caiso_backtest.yaml          # relative to the sweep file
    from: "2020-08-01"
    to: "2020-08-08"
    seed: 7
    grid:
      forecast: [perfect, persistence]
      power_scale: [1.0, 2.0]            # unit power and energy, and site limits, × this
      duration_h: [null, 2.0]            # energy = discharge power × hours (null: as configured)
      products: [[reg_up, reg_down, spin], []]
      data_files: [{}, {caiso: other_prices.csv}]   # replace a data source's file

Each scenario is one task (``run_scenario``, a plain function of plain data) so
it runs the same in-process, on a ``LocalCluster`` or on a remote cluster. Its
seed is the sweep's seed + its position in the grid, never anything about the
worker, so 1 and N workers give identical tables.
"""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vpp.config import load_config, parse_duration, read_yaml, to_utc
from vpp.errors import InputError, from_validation_error
from vpp.forecasts import METHODS
from vpp.validate import expect_kind


class GridModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    forecast: list[str] = ["perfect"]
    power_scale: list[float] = [1.0]
    duration_h: list[float | None] = [None]
    products: list[list[str] | None] = [None]
    data_files: list[dict[str, str]] = [{}]


class SweepModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    config: str
    start: str = Field(alias="from")
    end: str = Field(alias="to")
    seed: int = 0
    every: str = "24h"
    substeps: int = Field(4, ge=1)
    grid: GridModel = GridModel()


def load_sweep(path: Path) -> tuple[SweepModel, list[dict[str, Any]]]:
    """The sweep and its scenarios (plain dicts, ready to ship to workers); all inputs checked here."""
    try:
        raw = read_yaml(path)
        expect_kind(raw, "sweep", str(path))
        sweep = SweepModel.model_validate(raw)
    except ValidationError as exc:
        raise from_validation_error(exc, str(path), data=raw) from None
    base = path.parent
    config_path = (base / sweep.config).resolve()
    cfg = load_config(config_path)
    for m in sweep.grid.forecast:
        if m not in METHODS:
            raise InputError(str(path), "grid.forecast", m, f"one of {', '.join(METHODS)}")
    known = {p.id for p in cfg.market.products}
    for chosen in sweep.grid.products:
        for pid in chosen or []:
            if pid not in known:
                raise InputError(str(path), "grid.products", pid, f"one of the config's products {sorted(known)}")
    for files in sweep.grid.data_files:
        for src, f in files.items():
            if not (base / f).is_file():
                raise InputError(str(path), f"grid.data_files.{src}", f, "an existing CSV file (relative to the sweep file)")
    parse_duration(sweep.every, "every", cfg.interval, where=str(path))
    scenarios = []
    g = sweep.grid
    for i, (fc, scale, dur, prods, files) in enumerate(itertools.product(g.forecast, g.power_scale, g.duration_h, g.products, g.data_files)):
        scenarios.append(
            {
                "scenario": i,
                "config": str(config_path),
                "from": sweep.start,
                "to": sweep.end,
                "every": sweep.every,
                "substeps": sweep.substeps,
                "seed": sweep.seed + i,
                "forecast": fc,
                "power_scale": scale,
                "duration_h": dur,
                "products": None if prods is None else list(prods),
                "data_files": {k: str((base / v).resolve()) for k, v in files.items()},
            }
        )
    return sweep, scenarios


def run_scenario(sc: dict[str, Any]) -> dict[str, Any]:
    """One scenario's backtest and (unless the forecast is perfect) its perfect-foresight bound, as a table row."""
    from simulators.backtest import SimulationSettings, run_backtest, scaled_fleet
    from simulators.report import capture, cycles_summary
    from vpp.forecasts import ForecastSpec, file_forecasts

    cfg = _load_with_files(Path(sc["config"]), sc["data_files"])
    fleet = scaled_fleet(cfg.fleet, sc["power_scale"], sc["duration_h"])
    market = cfg.market
    if sc["products"] is not None:
        market = dataclasses.replace(market, products=tuple(p for p in market.products if p.id in set(sc["products"])))
    cfg = dataclasses.replace(cfg, fleet=fleet, market=market)
    start, end = to_utc(sc["from"], cfg.timezone), to_utc(sc["to"], cfg.timezone)
    spec = ForecastSpec(sc["forecast"], file_series=file_forecasts(cfg.path) if sc["forecast"] == "file" else None)
    settings = SimulationSettings(forecast=spec, every=pd.Timedelta(sc["every"]), seed=sc["seed"], substeps=sc["substeps"])
    result = run_backtest(cfg, start, end, settings)
    bound = result if sc["forecast"] == "perfect" else run_backtest(cfg, start, end, dataclasses.replace(settings, forecast=ForecastSpec("perfect")))
    streams = result.settlement.groupby("stream")["amount"].sum()
    return {
        "scenario": sc["scenario"],
        "forecast": sc["forecast"],
        "power_scale": sc["power_scale"],
        "duration_h": sc["duration_h"],
        "products": ("+".join(sc["products"]) or "energy only") if sc["products"] is not None else "all",
        "data_files": ";".join(f"{k}={Path(v).name}" for k, v in sorted(sc["data_files"].items())) or "-",
        "seed": sc["seed"],
        "power_kw": float(sum(u.max_discharge_kw for u in fleet.units)),
        "energy_kwh": float(sum(u.energy_kwh for u in fleet.units)),
        "net_revenue": result.net_revenue,
        "perfect_foresight": bound.net_revenue,
        "capture_ratio": capture(result.net_revenue, bound.net_revenue),
        "fleet_efc": cycles_summary(result)["fleet_equivalent_full_cycles"],
        **{f"stream.{k}": float(v) for k, v in streams.items()},
    }


def run_sweep(scenarios: list[dict[str, Any]], client: Any | None = None, progress: Callable[[float, float], None] | None = None) -> pd.DataFrame:
    """All scenarios, in-process or on a Dask client, as one table in scenario order; ``progress(done,
    total)`` after each finished scenario."""
    advance = progress or (lambda done, total: None)
    rows = []
    if client is None:
        for sc in scenarios:
            rows.append(run_scenario(sc))
            advance(len(rows), len(scenarios))
    else:
        from distributed import as_completed

        for future in as_completed(client.map(run_scenario, scenarios, pure=False)):
            rows.append(future.result())
            advance(len(rows), len(scenarios))
    table = pd.DataFrame(rows).sort_values("scenario").reset_index(drop=True)
    streams = [c for c in table.columns if c.startswith("stream.")]
    table[streams] = table[streams].fillna(0.0)  # a scenario without a product has no such stream
    return table


def _load_with_files(config_path: Path, data_files: dict[str, str]):
    """The config with some data sources read from other files (same columns), via a rewritten copy."""
    if not data_files:
        return load_config(config_path)
    import yaml

    raw = read_yaml(config_path)
    for name, src in raw.get("data", {}).items():
        src["file"] = str(Path(data_files[name]) if name in data_files else (config_path.parent / src["file"]).resolve())
    if raw.get("overrides"):
        raw["overrides"] = str((config_path.parent / raw["overrides"]).resolve())
    unknown = set(data_files) - set(raw.get("data", {}))
    if unknown:
        raise InputError(str(config_path), "data", min(unknown), f"one of the config's data sources {sorted(raw.get('data', {}))}")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / config_path.name
        copy.write_text(yaml.safe_dump(raw))
        cfg = load_config(copy)
    return dataclasses.replace(cfg, path=config_path)
