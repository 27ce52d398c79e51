"""Bad input gets one clear line per problem (file, field, value, expectation) and exit code 2 — never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CSV = "time,price,reg\n" + "".join(f"2020-01-01 {h:02d}:00,{20 + h},{5 + h % 3}\n" for h in range(24)) + "".join(f"2020-01-02 {h:02d}:00,{30 + h},{6}\n" for h in range(24))


def base_config() -> dict:
    return {
        "name": "t",
        "currency": "USD",
        "timezone": "UTC",
        "start": "2020-01-01T00:00",
        "horizon_h": 24,
        "data": {"m": {"file": "prices.csv", "time_column": "time", "columns": {"da": {"column": "price", "unit": "per_mwh"}, "reg": {"column": "reg", "unit": "per_mw_h"}}}},
        "sites": [{"id": "s", "market": "wholesale", "units": [{"id": "u", "power_kw": 100, "energy_kwh": 200}]}],
        "market": {"energy_price": "m.da", "products": [{"id": "r", "kind": "regulation_up", "price": "m.reg"}]},
    }


def run_validate(tmp_path: Path, cfg: dict, csv: str = CSV) -> subprocess.CompletedProcess:
    (tmp_path / "prices.csv").write_text(csv)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([sys.executable, "-m", "vpp", "validate", str(path)], capture_output=True, text=True, timeout=60)


def assert_clear_error(res: subprocess.CompletedProcess, *fragments: str) -> None:
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("error: ") for line in lines), res.stderr
    joined = "\n".join(lines)
    for f in fragments:
        assert f in joined, f"{f!r} not in:\n{joined}"


def test_a_valid_config_passes(tmp_path):
    res = run_validate(tmp_path, base_config())
    assert res.returncode == 0, res.stderr
    assert "1 units" in res.stdout


def mutate(path: str, value):
    def apply(cfg):
        node = cfg
        keys = path.split("/")
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node[k]
        last = keys[-1]
        if value is KeyError:
            del node[last]
        else:
            node[int(last) if last.isdigit() else last] = value
        return cfg

    return apply


@pytest.mark.parametrize(
    "change, fragments",
    [
        (mutate("data/m/file", "nowhere.csv"), ["nowhere.csv", "file", "an existing CSV file"]),
        (mutate("data/m/columns/da/unit", "usd_per_mwhh"), ["data.m.columns.da.unit", "usd_per_mwhh"]),
        (mutate("market/energy_price", "m.reg"), ["market.energy_price", "capacity_price", "energy price series"]),
        (mutate("sites/0/units/0/energy_kwh", -100), ["sites[0].units[0].energy_kwh", "-100", "greater than 0"]),
        (lambda c: mutate("sites/0/units/0/soc_max", 0.2)(mutate("sites/0/units/0/soc_min", 0.9)(c)), ["sites[0].units[0]", "SoC window inverted", "0.9 >= soc_max 0.2"]),
        (mutate("market/products/0/kind", "regulation_sideways"), ["market.products[0].kind", "regulation_sideways"]),
        (mutate("market/products/0/sites", ["atlantis"]), ["market.products[0].sites", "atlantis"]),
        (mutate("sites/0/tariff", "nope"), ["sites[0].tariff", "nope"]),
        (mutate("timezone", "Mars/Olympus"), ["timezone", "Mars/Olympus"]),
        (mutate("horizon_h", 96), ["m.da", "coverage of"]),
        (mutate("market/energy_price", "m.missing_column"), ["market.energy_price", "m.missing_column"]),
        (mutate("data/m/columns/da/column", "prize"), ["column", "prize"]),
    ],
    ids=["missing_file", "wrong_unit", "unit_mismatch", "negative_capacity", "soc_inverted", "unknown_product", "unknown_site", "unknown_tariff", "bad_zone", "data_too_short", "unknown_series", "missing_column"],
)
def test_config_problem_gets_a_one_line_error(tmp_path, change, fragments):
    assert_clear_error(run_validate(tmp_path, change(base_config())), *fragments)


@pytest.mark.parametrize(
    "csv, fragments",
    [
        (CSV.replace("2020-01-01 05:00,25,7\n", ""), ["2020-01-01 04:00 -> 2020-01-01 06:00", "gap"]),
        (CSV.replace("2020-01-01 05:00,25,7", "2020-01-01 05:00,,7"), ["price", "2020-01-01 05:00", "NaN"]),
        (CSV.replace("2020-01-01 05:00,25,7", "2020-01-01 04:00,25,7"), ["unique timestamps"]),
        (CSV.replace("2020-01-01 05:00,25,7", "2020-01-01 05:00,abc,7"), ["abc", "a number"]),
        (CSV.replace("2020-01-01 05:00,25,7", "yesterday,25,7"), ["yesterday", "a timestamp"]),
    ],
    ids=["gap", "nan", "duplicate", "text", "bad_time"],
)
def test_price_file_problem_gets_a_one_line_error_naming_the_row(tmp_path, csv, fragments):
    assert_clear_error(run_validate(tmp_path, base_config(), csv), "prices.csv", *fragments)


def test_several_problems_are_all_reported_in_one_run(tmp_path):
    cfg = base_config()
    cfg["sites"][0]["units"][0]["energy_kwh"] = -1
    cfg["market"]["products"][0]["kind"] = "magic"
    res = run_validate(tmp_path, cfg)
    assert_clear_error(res, "energy_kwh", "kind")
    assert len(res.stderr.strip().splitlines()) == 2


def test_malformed_yaml_and_missing_config_are_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    res = subprocess.run([sys.executable, "-m", "vpp", "validate", str(bad)], capture_output=True, text=True, timeout=60)
    assert_clear_error(res, "bad.yaml", "valid YAML")
    res = subprocess.run([sys.executable, "-m", "vpp", "optimize", "--config", str(tmp_path / "absent.yaml")], capture_output=True, text=True, timeout=60)
    assert_clear_error(res, "absent.yaml", "an existing YAML file")


def test_bad_cli_arguments_are_clear(tmp_path):
    (tmp_path / "prices.csv").write_text(CSV)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base_config()))
    res = subprocess.run([sys.executable, "-m", "vpp", "optimize", "--config", str(path), "--horizon", "forever"], capture_output=True, text=True, timeout=60)
    assert_clear_error(res, "--horizon", "forever")
    res = subprocess.run([sys.executable, "-m", "vpp", "optimize", "--config", str(path), "--start", "2021-06-01"], capture_output=True, text=True, timeout=60)
    assert_clear_error(res, "coverage of")
