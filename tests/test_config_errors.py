"""Bad input gets one clear line per problem (file, field, value, expectation) and exit code 2 — never a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.cli import vpp

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
    return vpp("validate", str(path), timeout=60)


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
        (mutate("sites/0/units/0/energy_kwh", -100), ["sites[s].units[u].energy_kwh", "-100", "greater than 0"]),
        (lambda c: mutate("sites/0/units/0/soc_max", 0.2)(mutate("sites/0/units/0/soc_min", 0.9)(c)), ["sites[s].units[u]: SoC window inverted", "0.9 >= soc_max 0.2"]),  # only the two fields, not the unit's whole block
        (mutate("market/products/0/kind", "regulation_sideways"), ["market.products[r].kind", "regulation_sideways"]),
        (mutate("market/products/0/sites", ["atlantis"]), ["market.products[r].sites", "atlantis"]),
        (mutate("sites/0/tariff", "nope"), ["sites[s].tariff", "nope"]),
        (mutate("timezone", "Mars/Olympus"), ["timezone", "Mars/Olympus"]),
        (mutate("horizon_h", 96), ["m.da", "coverage of"]),
        (mutate("market/energy_price", "m.missing_column"), ["market.energy_price", "m.missing_column"]),
        (mutate("data/m/columns/da/column", "prize"), ["column", "prize"]),
        (mutate("sites/0/units/0/energy_kwh", float("nan")), ["sites[s].units[u].energy_kwh: got NaN", "a finite number"]),
        (mutate("sites/0/units", []), ["sites[s].units: got []; expected at least one unit"]),
        (mutate("sites", []), ["sites: got []; expected at least one site"]),
        (mutate("data/m/delimiter", ";;"), ["data.m.delimiter"]),
    ],
    ids=["missing_file", "wrong_unit", "unit_mismatch", "negative_capacity", "soc_inverted", "unknown_product", "unknown_site", "unknown_tariff", "bad_zone", "data_too_short", "unknown_series", "missing_column", "nan_capacity", "no_units", "no_sites", "bad_delimiter"],
)
def test_config_problem_gets_a_one_line_error(tmp_path, change, fragments):
    assert_clear_error(run_validate(tmp_path, change(base_config())), *fragments)


@pytest.mark.parametrize(
    "csv, fragments",
    [
        (CSV.replace("2020-01-01 05:00,25,7\n", ""), ["2020-01-01 04:00 -> 2020-01-01 06:00", "gap"]),
        (CSV.replace("2020-01-01 05:00,25,7", "2020-01-01 05:00,,7"), ["price", "2020-01-01 05:00", "NaN"]),
        (CSV.replace("2020-01-01 05:00,25,7", "2020-01-01 04:00,25,7"), ["unique timestamps"]),
        (CSV.replace("2020-01-01 05:00,25,7", "2020-01-01 05:00,abc,7"), ["abc", "a finite number"]),
        (CSV.replace("2020-01-01 05:00,25,7", '2020-01-01 05:00,"25,5",7'), ["'25,5'", "decimal mark '.'", "set decimal on the data source"]),
        (CSV.replace("2020-01-01 05:00,25,7", "2020-01-01 05:00,25,5,7"), ["as many fields in every row as in the header", "decimal comma"]),
        (CSV.splitlines()[0] + "\n", ["rows: got 0", "at least 2 data rows"]),
        (CSV.replace("2020-01-01 05:00,25,7", "2020-01-01 05:00,inf,7"), ["'inf'", "a finite number"]),
        (CSV.replace("2020-01-01 05:00,25,7", "yesterday,25,7"), ["yesterday", "a timestamp"]),
    ],
    ids=["gap", "nan", "duplicate", "text", "quoted_decimal_comma", "unquoted_decimal_comma", "header_only", "infinity", "bad_time"],
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
    res = vpp("validate", str(bad), timeout=60)
    assert_clear_error(res, "bad.yaml", "valid YAML")
    res = vpp("optimize", "--config", str(tmp_path / "absent.yaml"), timeout=60)
    assert_clear_error(res, str((tmp_path / "absent.yaml").resolve()), "an existing YAML file")


def test_bad_cli_arguments_are_clear(tmp_path):
    (tmp_path / "prices.csv").write_text(CSV)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base_config()))
    res = vpp("optimize", "--config", str(path), "--horizon", "forever", timeout=60)
    assert_clear_error(res, "--horizon", "forever")
    res = vpp("optimize", "--config", str(path), "--start", "2021-06-01", timeout=60)
    assert_clear_error(res, "coverage of")


def test_an_inverted_soc_window_names_the_two_fields_not_the_whole_unit(tmp_path):
    cfg = mutate("sites/0/units/0/soc_max", 0.2)(mutate("sites/0/units/0/soc_min", 0.9)(base_config()))
    res = run_validate(tmp_path, cfg)
    assert_clear_error(res, "soc_min 0.9 >= soc_max 0.2")
    assert "energy_kwh" not in res.stderr and "power_kw" not in res.stderr


def test_naive_timestamps_take_the_configs_timezone_unless_the_data_block_names_one(tmp_path):
    from vpp.config import load_config

    cfg = base_config()
    cfg["timezone"] = "Europe/Berlin"
    (tmp_path / "prices.csv").write_text(CSV)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    series = load_config(tmp_path / "c.yaml").market.energy_price_per_mwh.values
    assert series.index[0] == pd.Timestamp("2019-12-31T23:00Z")  # 2020-01-01 00:00 in Berlin (UTC+1)
    cfg["data"]["m"]["timezone"] = "UTC"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert load_config(tmp_path / "c.yaml").market.energy_price_per_mwh.values.index[0] == pd.Timestamp("2020-01-01T00:00Z")


def test_a_decimal_comma_file_is_read_exactly_when_declared(tmp_path):
    from vpp.config import load_config

    cfg = base_config()
    cfg["data"]["m"].update(delimiter=";", decimal=",")
    (tmp_path / "prices.csv").write_text(CSV.replace(",", ";").replace("2020-01-01 05:00;25;7", "2020-01-01 05:00;25,5;7"))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    prices = load_config(tmp_path / "c.yaml").market.energy_price_per_mwh.values
    assert prices.iloc[5] == 25.5 and prices.iloc[4] == 24.0


def test_a_semicolon_file_read_as_commas_says_which_delimiter(tmp_path):
    res = run_validate(tmp_path, base_config(), CSV.replace(",", ";"))
    assert_clear_error(res, "is the delimiter ';'")


@pytest.mark.parametrize(("unit", "factor", "hint"), [("per_mwh", 1 / 1000, "is the column in per_kwh"), ("per_kwh", 1.0, "is the column in per_mwh")])
def test_a_price_a_thousand_times_off_its_unit_is_a_named_warning(tmp_path, unit, factor, hint):
    cfg = base_config()
    cfg["data"]["m"]["columns"]["da"]["unit"] = unit
    csv = "time,price,reg\n" + "".join(f"2020-01-0{1 + h // 24} {h % 24:02d}:00,{(30 + h % 24) * factor:.5f},5\n" for h in range(48))
    res = run_validate(tmp_path, cfg, csv)
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.startswith("WARNING: ")]
    assert len(warnings) == 1 and "m.da" in warnings[0] and hint in warnings[0], res.stderr


def test_plausible_prices_give_no_warning_even_in_a_currency_of_large_numbers(tmp_path):
    cfg = base_config()
    cfg["currency"] = "JPY"
    csv = "time,price,reg\n" + "".join(f"2020-01-0{1 + h // 24} {h % 24:02d}:00,{9000 + 100 * (h % 24)},500\n" for h in range(48))
    res = run_validate(tmp_path, cfg, csv)
    assert res.returncode == 0 and "WARNING" not in res.stderr, res.stderr


@pytest.mark.parametrize(
    ("horizon", "fragment"),
    [("24", "a duration with a unit, such as 24h"), ("90min", "a whole number of the config's 60-minute intervals"), ("-2h", "a positive duration")],
)
def test_a_duration_needs_a_unit_and_whole_intervals(tmp_path, horizon, fragment):
    (tmp_path / "prices.csv").write_text(CSV)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base_config()))
    assert_clear_error(vpp("optimize", "--config", str(path), f"--horizon={horizon}", timeout=60), "--horizon", fragment)


@pytest.mark.parametrize(
    ("name", "kind"),
    [("caiso_sweep.yaml", "sweep of 16 scenarios"), ("economics_100mw_200mwh.yaml", "economics case"), ("site_gateway.overrides.yaml", "overrides: 1 entries, checked against"), ("guangdong_ci.yaml", "config: 6 sites")],
)
def test_validate_recognises_each_kind_of_file_by_its_shape(name, kind):
    res = vpp("validate", f"config/examples/{name}", timeout=120)
    assert res.returncode == 0, res.stderr
    assert kind in res.stdout


def test_an_overrides_file_with_an_unknown_unit_is_checked_against_its_config(tmp_path):
    ov = tmp_path / "o.yaml"
    ov.write_text(yaml.safe_dump({"overrides": [{"kind": "unit_out", "unit": "nope", "start": "2020-08-18T00:00", "end": "2020-08-19T00:00", "author": "a", "reason": "r"}]}))
    assert_clear_error(vpp("validate", str(ov), "--config", "config/examples/site_gateway.yaml", timeout=60), "overrides[0].unit", "'nope'")


def test_a_file_of_no_known_shape_says_what_shapes_there_are(tmp_path):
    odd = tmp_path / "odd.yaml"
    odd.write_text("hello: world\n")
    assert_clear_error(vpp("validate", str(odd), timeout=60), "(top level)", "a config has sites:")
