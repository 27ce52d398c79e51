"""The console script behaves like a real CLI: a usage mistake is a usage line and one sentence with exit 2,
a bad value is one ``error:`` line with exit 2, never a traceback; ``--json`` prints one JSON object and
nothing else on stdout (no solver banner, no progress, no warnings)."""

from __future__ import annotations

import json

import pytest

from tests.cli import vpp

EX = "config/examples/caiso_fleet.yaml"
GW = "config/examples/site_gateway.yaml"
BT = "config/examples/caiso_backtest.yaml"
DAY = ("--from", "2020-08-01", "--to", "2020-08-02")

MISTAKES = [
    ((), "Usage: vpp"),
    (("optimize",), "Missing option '--config'"),
    (("optimize", "-c"), "requires an argument"),
    (("frobnicate",), "No such command 'frobnicate'"),
    (("optimize", "--bogus"), "No such option: --bogus"),
    (("optimize", "-c", EX, "--time-limit", "abc"), "'--time-limit'"),
    (("optimize", "-c", EX, "--time-limit", "-1"), "a positive number of seconds"),
    (("optimize", "-c", EX, "--workers", "0"), "'--workers'"),
    (("optimize", "-c", EX, "--horizon", "24"), "a duration with a unit"),
    (("optimize", "-c", EX, "--start", "someday"), "a date or time"),
    (("optimize", "-c", EX, "--exclusivity", "sometimes"), "one of lazy, binary, hull, relaxed"),
    (("optimize", "-c", EX, "--workers", "2", "--scheduler", "tcp://h:1"), "not both"),
    (("validate",), "Missing argument 'path'"),
    (("validate", "no/such/file.yaml"), "an existing YAML file"),
    (("simulate", "-c", BT), "a config and a period"),
    (("simulate", "-c", BT, *DAY, "--substeps", "0"), "'--substeps'"),
    (("simulate", "-c", BT, *DAY, "--every", "24"), "a duration with a unit"),
    (("simulate", "-c", BT, *DAY, "--forecast", "oracle"), "forecast"),
    (("ledger",), "Usage: vpp ledger"),
    (("ledger", "report", "-c", GW, "--month", "2020-08", "--by", "nothing"), "'--by'"),
    (("ledger", "report", "-c", GW, "--month", "August"), "a month like"),
    (("ledger", "close", "-c", GW), "Missing option '--month'"),
    (("devices", "scan"), "Missing argument 'target'"),
    (("devices", "scan", "127.0.0.1:notaport"), "HOST[:PORT]"),
    (("economics", "transfer-factor"), "Missing option '--case'"),
    (("economics", "transfer-factor", "--case", EX), "got 'the keys of a config file'; expected an economics case file"),
    (("optimize", "-c", "config/examples/caiso_sweep.yaml"), "got 'the keys of a sweep file'; expected a config file"),
    (("run",), "Missing option '--config'"),
    (("run", "-c", GW, "--log-level", "loud"), "'--log-level'"),
    (("config", "schema", "--bogus"), "No such option: --bogus"),
]


@pytest.mark.parametrize(("args", "fragment"), MISTAKES, ids=[" ".join(a) or "(no arguments)" for a, _ in MISTAKES])
def test_a_mistake_is_a_short_message_and_exit_2_never_a_traceback(args, fragment):
    res = vpp(*args, timeout=120)
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout
    assert res.stdout == "", res.stdout  # nothing on stdout: a pipe downstream gets no half-output
    assert fragment.lower() in res.stderr.lower(), res.stderr  # typer spells argument names in either case
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    if args and args[-1] not in ("ledger",):  # help screens aside, the message is short
        assert len(lines) <= 4, res.stderr
        assert any(line.startswith(("Error:", "error:")) for line in lines), res.stderr


def _one_object(stdout: str) -> dict:
    value = json.loads(stdout)  # the whole of stdout, or this raises
    assert isinstance(value, dict), type(value)
    return value


@pytest.mark.parametrize(
    "args",
    [
        ("optimize", "-c", EX, "--json"),
        ("optimize", "-c", "config/examples/station_100mw.yaml", "--json", "--decomposition", "on"),
        ("simulate", "-c", BT, "--from", "2020-08-01", "--to", "2020-08-03", "--json", "--no-bound"),
        ("economics", "transfer-factor", "--case", "config/examples/economics_100mw_200mwh.yaml", "--json"),
        ("config", "schema"),
    ],
    ids=["optimize", "optimize-decomposed", "simulate", "economics", "config-schema"],
)
def test_json_output_is_one_object_and_nothing_else(args, tmp_path):
    res = vpp(*args, "--out", str(tmp_path / "out"), timeout=300) if args[0] == "simulate" else vpp(*args, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "Running HiGHS" not in res.stdout
    _one_object(res.stdout)


def test_the_solver_log_goes_only_where_asked(tmp_path):
    log = tmp_path / "highs.log"
    # the one model's log (a fleet with block rules first solved decomposed may never need it)
    res = vpp("optimize", "-c", EX, "--json", "--decomposition", "off", "--solver-log", str(log), timeout=120)
    assert res.returncode == 0, res.stderr
    _one_object(res.stdout)
    assert "HiGHS" not in res.stdout + res.stderr
    assert "Running HiGHS" in log.read_text()
