"""What ``vpp optimize`` writes and prints is usable as it is: piped tables keep every digit, long fleets
are summarised, the CSV adds up (units → sites → fleet) at 1 W resolution with local times and prices, the
plot is a PNG, and long jobs show progress on stderr without touching stdout."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.cli import vpp
from tests.simulate_rig import price_csv


def _config(tmp_path, units: list[dict], timezone: str = "Asia/Shanghai") -> str:
    price_csv(tmp_path / "prices.csv", start="2020-07-01", days=3)
    cfg = {
        "name": "out",
        "currency": "USD",
        "timezone": timezone,
        "horizon_h": 24,
        "start": "2020-07-01T08:00",
        "data": {"m": {"file": "prices.csv", "time_column": "time", "timezone": "UTC", "columns": {"da": {"column": "da", "unit": "per_mwh"}, "up": {"column": "regup", "unit": "per_mw_h"}}}},
        "sites": [
            {"id": "north-site-with-a-long-name", "market": "wholesale", "export_limit_kw": 900, "units": units},
            {"id": "south", "market": "wholesale", "units": [{"id": "s1", "power_kw": 333.3333, "energy_kwh": 777.7777, "initial_soc": 0.37}]},
        ],
        "market": {"energy_price": "m.da", "products": [{"id": "reg_up", "kind": "regulation_up", "price": "m.up"}]},
        "solver": {"mip_gap": 0.0001},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_a_piped_table_keeps_every_id_and_digit(tmp_path):
    long_id = "north-unit-with-an-identifier-far-longer-than-any-terminal-column"
    res = vpp("optimize", "-c", _config(tmp_path, [{"id": long_id, "power_kw": 500, "energy_kwh": 1000}]), timeout=120)
    assert res.returncode == 0, res.stderr
    assert long_id in res.stdout and "…" not in res.stdout  # rich cuts cells to 80 columns when piped
    total = re.search(r"total\s*│\s*([-\d,.]+)", res.stdout)
    assert total and "." in total.group(1)


def test_a_long_fleet_prints_its_top_units_and_says_where_the_rest_are(tmp_path):
    units = [{"id": f"u{i:03d}", "power_kw": 50 + i, "energy_kwh": 200} for i in range(60)]
    out = tmp_path / "s.csv"
    res = vpp("optimize", "-c", _config(tmp_path, units), "--out", str(out), timeout=300)
    assert res.returncode == 0, res.stderr
    rows = [line for line in res.stdout.splitlines() if re.match(r"^│ (u\d{3}|s1) ", line)]
    assert len(rows) == 20, res.stdout
    assert f"… and 41 more units (all of them in {out})" in res.stdout
    totals = [sum(float(c.replace(",", "")) for c in row.strip("│ ").split("│")[1:-1]) for row in rows]  # stream columns
    assert all(abs(a) >= abs(b) - 1 for a, b in zip(totals, totals[1:])), totals  # largest first (cells rounded to 1)


def test_the_schedule_csv_adds_up_at_1_watt_with_local_time_and_prices(tmp_path):
    out, plot = tmp_path / "s.csv", tmp_path / "s.png"
    config = _config(tmp_path, [{"id": "n1", "power_kw": 500, "energy_kwh": 1000, "initial_soc": 0.5}, {"id": "n2", "power_kw": 250, "energy_kwh": 500}])
    res = vpp("optimize", "-c", config, "--out", str(out), "--plot", str(plot), timeout=120)
    assert res.returncode == 0, res.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = out.read_text()
    assert "-0.0," not in text and not re.search(r"\de-\d", text)  # no negative zeros, no 1.8e-12 noise
    table = pd.read_csv(io.StringIO(text))
    kw = [c for c in table.columns if c.endswith("_kw")]
    assert (table[kw].fillna(0) * 1000).round(6).apply(lambda c: np.allclose(c, c.round())).all()  # 1 W
    units, sites, fleet = (table[table["level"] == lv] for lv in ("unit", "site", "fleet"))
    assert len(units) == 3 * 24 and len(sites) == 2 * 24 and len(fleet) == 24
    by_site = units.groupby(["site_id", "interval_start_utc"])["power_kw"].sum()
    site_power = sites.set_index(["site_id", "interval_start_utc"])["power_kw"]
    assert np.allclose(by_site.sort_index().to_numpy(), site_power.sort_index().to_numpy(), atol=0.002)
    assert np.allclose(units.groupby("interval_start_utc")["power_kw"].sum().to_numpy(), fleet["power_kw"].to_numpy(), atol=0.003)
    assert np.allclose(units.groupby("interval_start_utc")["reg_up_kw"].sum().to_numpy(), fleet["reg_up_kw"].to_numpy(), atol=0.003)  # bid = Σ allocations
    first = pd.Timestamp(table["interval_start_utc"].iloc[0])
    assert first == pd.Timestamp("2020-07-01T00:00Z")  # 08:00 Shanghai
    assert pd.Timestamp(table["interval_start_local"].iloc[0]) == first.tz_convert("Asia/Shanghai")
    assert str(table["interval_start_local"].iloc[0]).endswith("+08:00")
    prices = pd.read_csv(tmp_path / "prices.csv").set_index("time")["da"]
    assert table["energy_price_per_mwh"].iloc[0] == pytest.approx(prices["2020-07-01 00:00"])
    soc = units["soc_end"]
    assert soc.between(0, 1).all() and (soc.round(6) == soc).all()


def test_progress_is_a_line_on_stderr_for_a_long_job_and_nothing_for_a_short_one(monkeypatch, capsys):
    from vpp import cli_output

    clock = iter([0.0, 0.5, 1.0, 6.0, 7.0, 100.0, 100.0, 100.0])
    monkeypatch.setattr(cli_output.time, "monotonic", lambda: next(clock))
    with cli_output.progress("long job") as advance:  # stderr is captured: not a terminal
        advance(1, 10)  # 0.5 s: quiet
        advance(2, 10)  # 1.0 s: quiet
        advance(6, 10)  # 6.0 s: a line
        advance(7, 10)  # 7.0 s: within 5 s of the last line
        advance(10, 10)  # done: the last line
    err = capsys.readouterr().err.splitlines()
    assert err == ["long job:  60% (6/10) after 6 s", "long job: 100% (10/10) after 100 s"]
    clock2 = iter([0.0, 0.3, 1.9])
    monkeypatch.setattr(cli_output.time, "monotonic", lambda: next(clock2))
    with cli_output.progress("short job") as advance:
        advance(1, 2)
        advance(2, 2)
    assert capsys.readouterr().err == ""
