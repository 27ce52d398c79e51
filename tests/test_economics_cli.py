"""`vpp economics transfer-factor` end to end, in process: tables, JSON, plot, simulation folder, errors."""

import json
import sys
from pathlib import Path

import pytest

from tests.test_economics_case import write_summary
from vpp.cli import main
from vpp.economics.case import load_case
from vpp.economics.transfer import analyse_transfer_factor

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "examples" / "economics_100mw_200mwh.yaml"


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["vpp", "economics", "transfer-factor", *args])
    monkeypatch.setenv("COLUMNS", "160")
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_tables_state_the_interval_and_the_irr_at_lambda_zero(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "--case", str(EXAMPLE))
    expected = analyse_transfer_factor(load_case(EXAMPLE))
    assert code == 0
    low, high = expected.interval.lower.transfer_factor, expected.interval.upper.transfer_factor
    assert f"feasible λ interval: {low:.4f} ≤ λ ≤ {high:.4f}" in out
    assert f"IRR at λ = 0: {expected.points[0].irr:.2%}" in out
    assert "λ grid" in out and "λ at which IRR = 8.00%" in out


def test_json_is_one_object_with_the_interval(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "--case", str(EXAMPLE), "--json")
    data = json.loads(out)
    assert code == 0
    assert data["currency"] == "CNY"
    assert data["interval"]["lower"]["transfer_factor"] < data["interval"]["upper"]["transfer_factor"]
    assert data["points"][0]["labels"] == ["λ = 0"]
    assert len(data["sensitivity"]["transfer_factor_needed"]) == 3


def test_plot_is_written_as_png(monkeypatch, capsys, tmp_path):
    target = tmp_path / "sensitivity.png"
    code, _, _ = run(monkeypatch, capsys, "--case", str(EXAMPLE), "--plot", str(target))
    assert code == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_market_revenue_comes_from_a_simulation_folder(monkeypatch, capsys, tmp_path):
    # 31 days, a 50 MW / 100 MWh fleet (see test_economics_case.SUMMARY)
    streams = {"energy": 900_000.0, "reg_up": 150_000.0, "degradation": -50_000.0}
    write_summary(tmp_path, revenue_by_stream=streams, net_revenue=1_000_000.0)
    code, out, _ = run(monkeypatch, capsys, "--case", str(EXAMPLE), "--from-simulation", str(tmp_path), "--json")
    data = json.loads(out)
    assert code == 0
    # 1,000,000 · 365/31 · (200,000 kWh / 100,000 kWh) − 30 · 100,000 O&M
    assert data["market"]["net_annual"] == pytest.approx(1_000_000 * 365 / 31 * 2 - 3_000_000)
    assert data["sensitivity"] is None
    assert any("scaled × 2 by energy" in note for note in data["notes"])


def test_bad_case_exits_2_with_one_line_naming_the_field(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "case.yaml"
    bad.write_text(EXAMPLE.read_text(encoding="utf-8").replace("cost_per_kw: 400 ", "cost_per_kw: -400 "), "utf-8")
    code, out, err = run(monkeypatch, capsys, "--case", str(bad))
    assert code == 2
    assert out == ""
    assert err == f"error: {bad}: station.cost_per_kw: got -400; expected greater than or equal to 0\n"


def test_plot_with_simulated_revenue_is_refused(monkeypatch, capsys, tmp_path):
    write_summary(tmp_path)
    args = ("--case", str(EXAMPLE), "--from-simulation", str(tmp_path), "--plot", str(tmp_path / "p.png"))
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert "--plot" in err
    assert not (tmp_path / "p.png").exists()
