"""``vpp simulate`` end to end: the output folder, the summary.json contract economics reads, bad input,
and sweeps giving identical tables on 1 and 2 Dask workers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from simulators.sweep import load_sweep, run_sweep
from tests.simulate_rig import price_csv, write_config
from vpp.compute import dask_client
from vpp.economics.case import read_simulation_summary


def vpp(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vpp", *args], capture_output=True, text=True, timeout=300, cwd=cwd, check=False)


def test_simulate_writes_tables_summary_and_plots_and_json_prints_the_summary_only(tmp_path):
    cfg = write_config(tmp_path)
    out = tmp_path / "sim"
    res = vpp("simulate", "--config", str(cfg), "--from", "2020-07-03", "--to", "2020-07-05", "--forecast", "persistence", "--out", str(out), "--json", "--seed", "2", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)  # the whole of stdout is one JSON object
    on_disk = json.loads((out / "summary.json").read_text())
    assert summary == on_disk
    assert summary["net_revenue"] == pytest.approx(sum(summary["revenue_by_stream"].values()), abs=1e-9)
    assert summary["from"].endswith("+00:00") and summary["to"].startswith("2020-07-05")
    assert summary["fleet"] == {"units": 3, "power_kw": 1250.0, "energy_kwh": 3000.0}
    # every breakdown adds up to the same net revenue
    for key in ("by_unit", "by_site"):
        assert sum(sum(v.values()) for v in summary[key].values()) == pytest.approx(summary["net_revenue"], abs=1e-6)
    bound = summary["perfect_foresight"]["net_revenue"]
    assert summary["capture_ratio"] == pytest.approx(summary["net_revenue"] / bound)
    settlement = pd.read_parquet(out / "settlement.parquet")
    assert settlement["amount"].sum() == pytest.approx(summary["net_revenue"], abs=1e-6)
    intervals = pd.read_csv(out / "intervals.csv")
    assert len(intervals) == 3 * 48 and intervals["revenue"].sum() == pytest.approx(summary["net_revenue"], abs=1e-6)
    for png in ("week.png", "monthly_revenue.png", "capture_by_month.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the economics module reads it as it is
    read = read_simulation_summary(out, "USD")
    assert read.net_revenue == pytest.approx(summary["net_revenue"])


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--from", "2020-07-03", "--to", "2020-07-20"), "coverage of"),
        (("--from", "2020-07-01", "--to", "2020-07-03", "--forecast", "last_week"), "history for forecast 'last_week'"),
        (("--from", "2020-07-03", "--to", "2020-07-04", "--forecast", "crystal_ball"), "forecast"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, args, fragment):
    cfg = write_config(tmp_path)
    res = vpp("simulate", "--config", str(cfg), "--out", str(tmp_path / "o"), *args, cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and res.stderr.startswith("error: ") and fragment in res.stderr
    assert not (tmp_path / "o").exists()  # refused before any work


def test_a_price_file_with_a_gap_is_refused(tmp_path):
    cfg = write_config(tmp_path)
    price_csv(tmp_path / "prices.csv", drop_row=30)
    res = vpp("simulate", "--config", str(cfg), "--from", "2020-07-03", "--to", "2020-07-04", cwd=tmp_path)
    assert res.returncode == 2 and "gap" in res.stderr and "Traceback" not in res.stderr


def sweep_file(tmp_path: Path) -> Path:
    write_config(tmp_path)
    other = price_csv(tmp_path / "other.csv", seed=9)
    sweep = {
        "config": "tiny.yaml",
        "from": "2020-07-03",
        "to": "2020-07-04",
        "seed": 11,
        "grid": {"forecast": ["persistence"], "power_scale": [1.0, 2.0], "data_files": [{}, {"m": other.name}]},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_sweep_tables_are_identical_on_one_and_two_dask_workers(tmp_path):
    _, scenarios = load_sweep(sweep_file(tmp_path))
    scenarios = scenarios[1:3]  # two cheap scenarios: the other price file; the doubled fleet
    assert [s["seed"] for s in scenarios] == [12, 13]
    with dask_client(workers=1) as client:
        one = run_sweep(scenarios, client)
    with dask_client(workers=2) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        two = run_sweep(scenarios, client)
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    assert one["net_revenue"].nunique() == 2  # the scenarios differ, so equality is not trivial


def test_sweep_cli_writes_one_comparison_table(tmp_path):
    path = sweep_file(tmp_path)
    res = vpp("simulate", "--sweep", str(path), "--out", str(tmp_path / "sw"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    table = pd.read_csv(tmp_path / "sw" / "comparison.csv")
    assert len(table) == 4 and list(table["scenario"]) == [0, 1, 2, 3]
    # grid order: power_scale outer, data_files inner
    assert (table["power_kw"].iloc[[2, 3]].to_numpy() == 2 * table["power_kw"].iloc[[0, 1]].to_numpy()).all()
    assert list(table["data_files"]) == ["-", "m=other.csv", "-", "m=other.csv"]
    assert "comparison table written" in res.stdout


def test_revenue_by_contract_comes_from_the_ledger_split_and_adds_up(tmp_path):
    cfg_path = write_config(tmp_path)
    raw = yaml.safe_load(cfg_path.read_text())
    raw["contracts"] = [{"id": "coop", "model": "co_investment", "units": ["a1", "a2"], "stakes_pct": {"investor": 60, "platform": 40}}]
    cfg_path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "sim"
    res = vpp("simulate", "--config", str(cfg_path), "--from", "2020-07-03", "--to", "2020-07-04", "--forecast", "perfect", "--out", str(out), "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    coop = s["by_contract"]["coop"]
    # the ledger splits the settled minor units (cents, rounded per settlement row) exactly
    cents = pd.read_parquet(out / "settlement.parquet").groupby("unit_id")["amount_minor"].sum()
    assert round(sum(coop.values()) * 100) == cents["a1"] + cents["a2"]
    assert round(sum(s["by_contract"]["uncontracted"].values()) * 100) == cents["b1"]
    assert coop["investor"] == pytest.approx(0.6 * (cents["a1"] + cents["a2"]) / 100, abs=0.01)
    assert sum(coop.values()) == pytest.approx(sum(s["by_site"]["a"].values()), abs=0.01 * len(s["by_site"]["a"]) * 24)


def test_an_existing_cluster_by_address_gives_the_same_row_as_in_process(tmp_path):
    from distributed import LocalCluster

    from vpp.errors import InputError

    _, scenarios = load_sweep(sweep_file(tmp_path))
    here = run_sweep(scenarios[:1])
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, dask_client(scheduler=cluster.scheduler_address) as client:
        there = run_sweep(scenarios[:1], client)
    pd.testing.assert_frame_equal(here, there, check_exact=True)
    with pytest.raises(InputError, match="not both"), dask_client(workers=1, scheduler=cluster.scheduler_address):
        pass
