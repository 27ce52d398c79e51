"""Reading the case file and the simulation summary: the example loads, bad input names its field."""

import json
from pathlib import Path

import pytest
import yaml

from vpp.economics.case import load_case, read_simulation_summary
from vpp.economics.transfer import analyse_transfer_factor
from vpp.errors import InputError, InputErrors

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "examples" / "economics_100mw_200mwh.yaml"


def test_example_case_is_a_100_mw_200_mwh_station_for_1000_mw_of_renewables():
    case = load_case(EXAMPLE)
    assert (case.station.power_kw, case.station.energy_kwh) == (100_000, 200_000)
    assert sum(p.count * p.capacity_kw for p in case.renewables) == 1_000_000
    # 10 % for 2 h of 1,000 MW is exactly the station: 100 MW / 200 MWh
    assert sum(p.storage_power_kw for p in case.renewables) == pytest.approx(100_000)
    assert sum(p.storage_energy_kwh for p in case.renewables) == pytest.approx(200_000)


def test_example_case_costs_and_annualization_by_hand():
    result = analyse_transfer_factor(load_case(EXAMPLE))
    # 400 CNY/kW · 100,000 kW + 1,000 CNY/kWh · 200,000 kWh
    assert result.investment == 240_000_000
    growth = 1.07**15
    assert result.annual_capacity_cost == pytest.approx(240e6 * 0.95 * 0.07 * growth / (growth - 1))
    # 320 · 200,000 kWh · (0.70 − 0.30) · 0.86 − 30 · 100,000
    assert result.market.net_annual == pytest.approx(320 * 200_000 * 0.40 * 0.86 - 3_000_000)
    assert result.currency == "CNY"


def test_example_case_has_a_feasible_interval_bounded_by_the_payers_and_the_station():
    result = analyse_transfer_factor(load_case(EXAMPLE))
    assert result.interval is not None
    assert "ceilings" in result.interval.lower.reason
    assert "IRR" in result.interval.upper.reason
    assert 0 < result.interval.lower.transfer_factor < result.interval.upper.transfer_factor < 1


def write_case(tmp_path: Path, change) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    change(data)
    path = tmp_path / "case.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        (lambda d: d["station"].update(cost_per_kw=-400), "station.cost_per_kw", "greater than or equal to 0"),
        (lambda d: d["renewables"][1].update(cost_per_kwh=-1), "renewables[1].cost_per_kwh", "greater than or equal"),
        (lambda d: d["grid"][0].update(network_cost_per_mw=-5), "grid[0].network_cost_per_mw", "greater than or"),
        (lambda d: d["finance"].update(life_years=0), "finance.life_years", "greater than 0"),
        (lambda d: d["finance"].update(life_years=-3), "finance.life_years", "greater than 0"),
        (lambda d: d["station"].update(round_trip_efficiency=1.05), "station.round_trip_efficiency", "less than or"),
        (lambda d: d["station"].update(charging_efficiency=1.2), "station.charging_efficiency", "less than or equal"),
        (lambda d: d["transfer_factor"].update(min=0.8, max=0.2), "transfer_factor.max", "≥ transfer_factor.min (0.8)"),
        (lambda d: d["transfer_factor"].update(max=1.5), "transfer_factor.max", "less than or equal to 1"),
        (lambda d: d["market"].update(discharge_price_per_kwh=0.1), "market.discharge_price_per_kwh", "≥ charge"),
        (lambda d: d["market"].update(cycles_per_year=-1), "market.cycles_per_year", "greater than or equal to 0"),
        (lambda d: d["finance"].update(residual_rate=1.0), "finance.residual_rate", "less than 1"),
        (lambda d: d["station"].update(cost_per_kwhh=1), "station.cost_per_kwhh", "no such field"),
        (lambda d: d["station"].pop("energy_kwh"), "station.energy_kwh", "required"),
    ],
)
def test_bad_input_names_the_file_and_the_field(tmp_path, change, field, expected):
    path = write_case(tmp_path, change)
    with pytest.raises(InputError) as raised:
        load_case(path)
    assert raised.value.field == field
    assert expected in raised.value.expected
    assert str(raised.value).startswith(f"{path}: {field}: ")


def test_several_bad_fields_are_all_reported(tmp_path):
    path = write_case(tmp_path, lambda d: (d["station"].update(power_kw=-1), d["finance"].update(life_years=0)))
    with pytest.raises(InputErrors) as raised:
        load_case(path)
    assert [e.field for e in raised.value.errors] == ["station.power_kw", "finance.life_years"]


def test_a_missing_case_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError) as raised:
        load_case(tmp_path / "nope.yaml")
    assert raised.value.field == "(file)"


def test_malformed_yaml_is_an_input_error(tmp_path):
    path = tmp_path / "case.yaml"
    path.write_text("station: [unclosed\n", encoding="utf-8")
    with pytest.raises(InputError) as raised:
        load_case(path)
    assert raised.value.field == "(syntax)"


SUMMARY = {
    "from": "2020-01-01T00:00:00-08:00",
    "to": "2020-02-01T00:00:00-08:00",
    "currency": "CNY",
    "revenue_by_stream": {"energy": 1234.5, "reg_up": 300.0, "degradation": -12.0},
    "net_revenue": 1522.5,
    "fleet": {"power_kw": 50_000, "energy_kwh": 100_000},
    "intervals": 2976,
}


def write_summary(tmp_path: Path, **changes) -> Path:
    (tmp_path / "summary.json").write_text(json.dumps({**SUMMARY, **changes}), encoding="utf-8")
    return tmp_path


def test_simulation_summary_is_read_with_its_period(tmp_path):
    summary = read_simulation_summary(write_summary(tmp_path), "CNY")
    assert summary.period_days == 31
    assert summary.net_revenue == 1522.5
    assert summary.source == str(tmp_path / "summary.json")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"currency": "USD"}, "currency"),
        ({"to": "2019-12-31T00:00:00-08:00"}, "to"),
        ({"net_revenue": 2000.0}, "net_revenue"),
        ({"from": "2020-01-01T00:00:00"}, "from"),
        ({"fleet": {"power_kw": 0, "energy_kwh": 100}}, "fleet.power_kw"),
    ],
)
def test_a_bad_simulation_summary_names_the_field(tmp_path, changes, field):
    with pytest.raises(InputError) as raised:
        read_simulation_summary(write_summary(tmp_path, **changes), "CNY")
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{tmp_path / 'summary.json'}: {field}:")


def test_a_missing_simulation_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError) as raised:
        read_simulation_summary(tmp_path / "no-such-run", "CNY")
    assert raised.value.field == "(file)"
