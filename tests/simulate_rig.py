"""Small backtest configs written to disk (CSV + YAML), as a user would, for the simulator tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from vpp.config import VppConfig, load_config


def price_csv(path: Path, start: str = "2020-07-01", days: int = 10, seed: int = 1, with_forecast: bool = False, drop_row: int | None = None) -> Path:
    """Hourly energy and capacity prices with a daily shape and seeded noise (UTC timestamps)."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=24 * days, freq="1h")
    hour = index.hour.to_numpy()
    energy = 30 + 25 * np.sin((hour - 6) / 24 * 2 * np.pi) ** 2 * (hour >= 12) + rng.normal(0, 6, len(index)) - 10 * ((hour >= 10) & (hour < 15))
    frame = pd.DataFrame(
        {
            "time": index.strftime("%Y-%m-%d %H:%M"),
            "da": energy.round(3),
            "regup": (8 + rng.gamma(2.0, 2.0, len(index))).round(3),
            "regdown": (5 + rng.gamma(2.0, 1.5, len(index))).round(3),
        }
    )
    if with_forecast:
        frame["da_fc"] = (energy + rng.normal(0, 3, len(index))).round(3)
    if drop_row is not None:
        frame = frame.drop(index=drop_row)
    frame.to_csv(path, index=False)
    return path


def config_dict(csv_name: str = "prices.csv", *, deployment: float = 0.1, self_discharge: float = 0.0, products: bool = True, with_forecast: bool = False, gate: bool = True, blocks: bool = False) -> dict:
    """Two sites, three units, energy + regulation up/down (bid blocks only with ``blocks``: they make the MIP slow)."""
    columns = {
        "da": {"column": "da", "unit": "per_mwh"},
        "regup": {"column": "regup", "unit": "per_mw_h"},
        "regdown": {"column": "regdown", "unit": "per_mw_h"},
    }
    if with_forecast:
        columns["da_forecast"] = {"column": "da_fc", "unit": "per_mwh"}
    unit = {"power_kw": 500, "energy_kwh": 1000, "soc_min": 0.1, "soc_max": 0.9, "eta_charge": 0.94, "eta_discharge": 0.93, "degradation_cost_per_mwh": 5, "self_discharge_per_h": self_discharge}
    rule = {"min_bid_kw": 100, "increment_kw": 50} if blocks else {}
    prods = [
        {"id": "reg_up", "kind": "regulation_up", "price": "m.regup", **rule, "deployment_fraction": deployment, **({"gate_closure": {"day_ahead_at": "10:00"}} if gate else {})},
        {"id": "reg_down", "kind": "regulation_down", "price": "m.regdown", **rule, "deployment_fraction": deployment / 2, **({"gate_closure": {"day_ahead_at": "10:00"}} if gate else {})},
    ]
    return {
        "name": "tiny",
        "currency": "USD",
        "timezone": "UTC",
        "interval_min": 60,
        "horizon_h": 24,
        "data": {"m": {"file": csv_name, "time_column": "time", "columns": columns}},
        "sites": [
            {"id": "a", "market": "wholesale", "import_limit_kw": 800, "export_limit_kw": 800, "units": [{"id": "a1", **unit, "initial_soc": 0.5}, {"id": "a2", **unit, "initial_soc": 0.3}]},
            {"id": "b", "market": "wholesale", "units": [{"id": "b1", **unit, "power_kw": 250, "energy_kwh": 1000, "initial_soc": 0.6}]},
        ],
        "market": {"energy_price": "m.da", "products": prods if products else []},
        "solver": {"mip_gap": 0.01, "time_limit_s": 20},
    }


def write_config(tmp_path: Path, days: int = 10, seed: int = 1, **kw) -> Path:
    price_csv(tmp_path / "prices.csv", days=days, seed=seed, with_forecast=kw.get("with_forecast", False))
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config_dict(**kw)))
    return path


def tiny_config(tmp_path: Path, **kw) -> VppConfig:
    return load_config(write_config(tmp_path, **kw))
