"""`vpp ledger report|close` end to end on the bundled Guangdong example (its contracts block), on SQLite
and PostgreSQL, and one-line errors (exit 2, no traceback) for malformed contracts and bad arguments."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.test_ledger_store import ledger_url  # noqa: F401 - the SQLite/PostgreSQL fixture
from vpp.cli import main
from vpp.db import open_database
from vpp.ledger.store import metered_energy, record_settlements, settlements, statements

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "examples" / "guangdong_ci.yaml"


def example_config(tmp_path: Path, change=None) -> Path:
    cfg = yaml.safe_load(EXAMPLE.read_text())
    cfg["data"]["buildings"]["file"] = str(EXAMPLE.parent / cfg["data"]["buildings"]["file"])
    if change is not None:
        change(cfg)
    path = tmp_path / "gd.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def vpp(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the real CLI entry point in-process (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["vpp", *map(str, args)])
    with pytest.raises(SystemExit) as done:
        main()
        sys.exit(0)
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for f in fragments:
        assert f in lines[0], lines[0]


# Shanghai November 2026 = [2026-10-31T16:00Z, 2026-11-30T16:00Z)
ROWS = [
    ("2026-10-31T16:00Z", "fs-1-1", "foshan_ceramics", "tou_savings", 100_000),  # first interval of the month
    ("2026-11-30T15:45Z", "fs-1-1", "foshan_ceramics", "tou_savings", 100),  # last interval of the month
    ("2026-11-10T02:00Z", "fs-1-2", "foshan_ceramics", "degradation", -700),
    ("2026-11-10T02:00Z", "dg-big", "dongguan_electronics", "tou_savings", 5_000_000),
    ("2026-11-10T02:00Z", "sz-3", "shenzhen_office_park", "demand_response", 900_000),
    ("2026-10-31T15:45Z", "dg-big", "dongguan_electronics", "tou_savings", 123),  # 23:45 on 31 Oct local: October
    ("2026-11-30T16:00Z", "sz-3", "shenzhen_office_park", "tou_savings", 456),  # 00:00 on 1 Dec local: December
]


def record_example(url: str) -> None:
    engine = open_database(url)
    with engine.begin() as conn:
        for table in (settlements, metered_energy, statements):
            conn.execute(table.delete())
    frame = pd.DataFrame(ROWS, columns=["interval_start", "unit_id", "site_id", "stream", "amount_minor"])
    frame["interval_start"] = pd.to_datetime(frame["interval_start"], utc=True)
    energy = pd.DataFrame({"interval_start": [pd.Timestamp("2026-11-10T02:00Z")], "unit_id": ["dg-big"], "discharged_kwh": [1000.0], "charged_kwh": [0.0]})
    record_settlements(engine, frame, energy)
    engine.dispose()


def test_report_by_contract_matches_the_hand_computed_split(ledger_url, tmp_path, monkeypatch, capsys):  # noqa: F811
    config = example_config(tmp_path)
    record_example(ledger_url)
    code, out, err = vpp(monkeypatch, capsys, "ledger", "report", "-c", config, "--month", "2026-11", "--csv", "--db", ledger_url)
    assert code == 0, err
    got = pd.read_csv(io.StringIO(out), dtype={"amount": str})
    amounts = {(c, p, i): a for c, p, i, a in zip(got["contract_id"], got["party"], got["item"], got["amount"])}
    assert len(amounts) == len(got)
    assert amounts == {
        # 32 rows: 5 per EaaS or agency contract, 6 per co-investment (3 parties × 2 items)
        # dongguan EaaS: service fee 12.00 × 2500 kW = 30000.00; operating fee 0.02 × 1000 kWh = 20.00;
        # remainder 50000.00 - 30000.00 - 20.00 = 19980.00 → 70 % 13986.00, 30 % 5994.00
        ("dongguan-eaas", "platform", "service_fee"): "30000.00",
        ("dongguan-eaas", "platform", "operating_fee"): "20.00",
        ("dongguan-eaas", "dongguan_electronics", "revenue_share"): "13986.00",
        ("dongguan-eaas", "platform", "revenue_share"): "5994.00",
        ("dongguan-eaas", "platform", "degradation"): "0.00",
        # guangzhou EaaS: 6.00 × 400 kWh = 2400.00 owed with no revenue → remainder -2400.00, 80/20
        ("guangzhou-eaas", "platform", "service_fee"): "2400.00",
        ("guangzhou-eaas", "platform", "operating_fee"): "0.00",
        ("guangzhou-eaas", "guangzhou_mall", "revenue_share"): "-1920.00",
        ("guangzhou-eaas", "platform", "revenue_share"): "-480.00",
        ("guangzhou-eaas", "platform", "degradation"): "0.00",
        # foshan co-investment 60/25/15 of 1001.00 and of -7.00
        ("foshan-coinvest", "equipment_investor", "revenue_share"): "600.60",
        ("foshan-coinvest", "platform", "revenue_share"): "250.25",
        ("foshan-coinvest", "foshan_ceramics", "revenue_share"): "150.15",
        ("foshan-coinvest", "equipment_investor", "degradation"): "-4.20",
        ("foshan-coinvest", "platform", "degradation"): "-1.75",
        ("foshan-coinvest", "foshan_ceramics", "degradation"): "-1.05",
        # huizhou co-investment: nothing settled
        ("huizhou-coinvest", "equipment_investor", "revenue_share"): "0.00",
        ("huizhou-coinvest", "platform", "revenue_share"): "0.00",
        ("huizhou-coinvest", "huizhou_hotel", "revenue_share"): "0.00",
        ("huizhou-coinvest", "equipment_investor", "degradation"): "0.00",
        ("huizhou-coinvest", "platform", "degradation"): "0.00",
        ("huizhou-coinvest", "huizhou_hotel", "degradation"): "0.00",
        # shenzhen agency: 9000.00 against a 8000.00 minimum → excess 1000.00, 60/40
        ("shenzhen-agency", "shenzhen_office_park", "guaranteed_minimum"): "8000.00",
        ("shenzhen-agency", "shenzhen_office_park", "excess_share"): "600.00",
        ("shenzhen-agency", "platform", "excess_share"): "400.00",
        ("shenzhen-agency", "platform", "guarantee_shortfall"): "0.00",
        ("shenzhen-agency", "shenzhen_office_park", "degradation"): "0.00",
        # zhuhai agency: nothing settled, the platform makes up the 5000.00 minimum
        ("zhuhai-agency", "zhuhai_school", "guaranteed_minimum"): "5000.00",
        ("zhuhai-agency", "zhuhai_school", "excess_share"): "0.00",
        ("zhuhai-agency", "platform", "excess_share"): "0.00",
        ("zhuhai-agency", "platform", "guarantee_shortfall"): "-5000.00",
        ("zhuhai-agency", "zhuhai_school", "degradation"): "0.00",
    }
    assert got["amount_minor"].sum() == 100_000 + 100 - 700 + 5_000_000 + 900_000  # the month's settled rows only


def test_report_by_unit_and_by_stream_sum_the_month(ledger_url, tmp_path, monkeypatch, capsys):  # noqa: F811
    config = example_config(tmp_path)
    record_example(ledger_url)
    code, out, err = vpp(monkeypatch, capsys, "ledger", "report", "-c", config, "--month", "2026-11", "--by", "unit", "--csv", "--db", ledger_url)
    assert code == 0, err
    by_unit = pd.read_csv(io.StringIO(out)).set_index("unit_id")
    assert by_unit["amount_minor"].to_dict() == {"dg-big": 5_000_000, "fs-1-1": 100_100, "fs-1-2": -700, "sz-3": 900_000}
    assert by_unit["contract_id"].to_dict() == {"dg-big": "dongguan-eaas", "fs-1-1": "foshan-coinvest", "fs-1-2": "foshan-coinvest", "sz-3": "shenzhen-agency"}
    assert by_unit.loc["fs-1-1", "intervals"] == 2
    code, out, err = vpp(monkeypatch, capsys, "ledger", "report", "-c", config, "--month", "2026-11", "--by", "stream", "--db", ledger_url)
    assert code == 0, err
    rows = {cells[0]: cells[1] for cells in (line.strip("│ ").split("│") for line in out.splitlines() if line.startswith("│")) if len(cells) == 2}
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    # tou_savings 1000.00 + 1.00 + 50000.00; demand_response 9000.00; degradation -7.00
    assert rows == {"degradation": "-7.00", "demand_response": "9000.00", "tou_savings": "51001.00", "total": "59994.00"}


def test_closing_a_month_twice_is_a_no_op_and_after_a_late_settlement_an_error(ledger_url, tmp_path, monkeypatch, capsys):  # noqa: F811
    config = example_config(tmp_path)
    record_example(ledger_url)
    code, out, err = vpp(monkeypatch, capsys, "ledger", "close", "-c", config, "--month", "2026-10", "--db", ledger_url)
    assert code == 0 and "32 new rows of 32" in out, out + err
    code, out, err = vpp(monkeypatch, capsys, "ledger", "close", "-c", config, "--month", "2026-10", "--db", ledger_url)
    assert code == 0 and "0 new rows of 32" in out, out + err
    late = pd.DataFrame({"interval_start": [pd.Timestamp("2026-10-20T00:00Z")], "unit_id": ["hz-1-1"], "site_id": ["huizhou_hotel"], "stream": ["tou_savings"], "amount_minor": [1000]})
    record_settlements(open_database(ledger_url), late)
    code, out, err = vpp(monkeypatch, capsys, "ledger", "close", "-c", config, "--month", "2026-10", "--db", ledger_url)
    one_line_error(code, err, "statement", "already recorded")
    code, out, err = vpp(monkeypatch, capsys, "ledger", "close", "-c", config, "--month", "2999-01", "--db", ledger_url)
    one_line_error(code, err, "--month", "a month that has ended")


def bad_stakes(cfg: dict) -> None:
    cfg["contracts"][2]["stakes_pct"]["platform"] = 20


@pytest.mark.parametrize(
    "change, fragments",
    [
        (lambda c: c["contracts"][0]["units"].append("dg-9"), ["contracts[dongguan-eaas].units", "'dg-9'", "a unit id of the fleet"]),
        (lambda c: c["contracts"][1]["units"].append("dg-big"), ["contracts[guangzhou-eaas].units", "'dg-big'", "already in dongguan-eaas"]),
        (bad_stakes, ["contracts[foshan-coinvest].stakes_pct", "sum 95", "summing to 100 %"]),
        (lambda c: c["contracts"][0].update(service_fee_per_kwh_month=3), ["contracts[dongguan-eaas].service_fee_per_kwh_month", "one basis"]),
        (lambda c: c["contracts"][4].update(customer_excess_share_pct=101), ["contracts[shenzhen-agency].agency_operation.customer_excess_share_pct", "101"]),
        (lambda c: c["contracts"][3].update(model="leasing"), ["contracts[huizhou-coinvest]", "leasing", "energy_as_a_service"]),
        (lambda c: c["contracts"][5].update(id="dongguan-eaas"), ["contracts[5].id", "unique contract id"]),
        (lambda c: c["contracts"][0].update(customer="platform"), ["contracts[dongguan-eaas].customer", "other than 'platform'"]),
    ],
    ids=["unknown-unit", "unit-in-two-contracts", "stakes-not-100", "two-fee-bases", "share-over-100", "unknown-model", "duplicate-id", "customer-named-platform"],
)
def test_malformed_contracts_get_one_line_and_exit_2(tmp_path, monkeypatch, capsys, change, fragments):
    config = example_config(tmp_path, change)
    code, _, err = vpp(monkeypatch, capsys, "ledger", "report", "-c", config, "--month", "2026-11", "--db", tmp_path / "x.db")
    one_line_error(code, err, str(config), *fragments)


def test_stakes_in_decimal_percent_summing_to_100_are_accepted(tmp_path, monkeypatch, capsys):
    def thirds(cfg: dict) -> None:
        cfg["contracts"][2]["stakes_pct"] = {"a": 33.3, "b": 33.3, "c": 33.4}

    code, _, err = vpp(monkeypatch, capsys, "validate", example_config(tmp_path, thirds))
    assert code == 0, err


def test_bad_month_and_missing_default_database_are_one_line_errors(tmp_path, monkeypatch, capsys):
    config = example_config(tmp_path)
    code, _, err = vpp(monkeypatch, capsys, "ledger", "report", "-c", config, "--month", "2026-13", "--db", tmp_path / "x.db")
    one_line_error(code, err, "--month", "'2026-13'", "a month like 2026-11")
    code, _, err = vpp(monkeypatch, capsys, "ledger", "report", "-c", config, "--month", "2026-11")
    one_line_error(code, err, "--db", "gd.db", "run `vpp run` first")


def test_the_installed_command_reports_a_malformed_contract_without_a_traceback(tmp_path):
    config = example_config(tmp_path, bad_stakes)
    res = subprocess.run([sys.executable, "-m", "vpp", "ledger", "report", "-c", str(config), "--month", "2026-11"], check=False, capture_output=True, text=True, timeout=60, cwd=ROOT)
    one_line_error(res.returncode, res.stderr, "contracts[foshan-coinvest].stakes_pct")


def test_without_db_the_report_reads_the_daemons_database(tmp_path, monkeypatch, capsys):
    beside = example_config(tmp_path)
    record_example(str(tmp_path / "gd.db"))  # vpp.db.default_database: the .db file named after the config
    code, out, err = vpp(monkeypatch, capsys, "ledger", "report", "-c", beside, "--month", "2026-11", "--by", "unit", "--csv")
    assert code == 0 and "sz-3" in out, err
    configured = example_config(tmp_path, lambda c: c.update(daemon={"database": "elsewhere/ledger.sqlite"}))
    (tmp_path / "elsewhere").mkdir()
    code, _, err = vpp(monkeypatch, capsys, "ledger", "report", "-c", configured, "--month", "2026-11")
    one_line_error(code, err, "--db", "elsewhere/ledger.s", "an existing ledger database")  # the value is cut at 80 characters
    record_example(str(tmp_path / "elsewhere" / "ledger.sqlite"))
    code, out, err = vpp(monkeypatch, capsys, "ledger", "report", "-c", configured, "--month", "2026-11", "--by", "stream", "--csv")
    assert code == 0 and "demand_response,900000,9000.00" in out, out + err
