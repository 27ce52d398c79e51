"""User extensions hold on every solve path: the whole model, decomposition pieces, aggregation, a
backtest through the console script; a conflicting rule is named in the infeasibility report."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from optimizers.api import optimize_config
from optimizers.model import optimize
from tests.builders import hours, market, problem, unit, wholesale_site
from tests.cli import ROOT, vpp
from tests.invariants import assert_schedule_feasible
from vpp.config import load_config
from vpp.errors import SolverError
from vpp.schedule import SolverOptions

sys.path.insert(0, str(ROOT / "bench"))
RULES = "tests.extension_rules"


def _both_charge(s, a: int, b: int) -> int:
    return int(((s.charge_kw[a] > 1e-6) & (s.charge_kw[b] > 1e-6)).sum())


def test_the_example_rules_change_the_plan_as_intended():
    cfg = load_config(ROOT / "config" / "examples" / "caiso_fleet_rules.yaml")
    plain = replace(cfg, solver=replace(cfg.solver, extensions=(), time_limit_s=20.0, mip_gap=0.01))
    ruled = replace(cfg, solver=replace(cfg.solver, time_limit_s=20.0, mip_gap=0.01))
    p0, before = optimize_config(plain)
    p1, after = optimize_config(ruled)
    assert_schedule_feasible(p1, after)
    ids = list(after.unit_ids)
    a, b = ids.index("np-a-1"), ids.index("np-a-2")
    sdge = [i for i, u in enumerate(ids) if u.startswith("sd-a")]
    energy = p1.e_max[sdge].sum()
    assert _both_charge(before, a, b) > 0 and _both_charge(after, a, b) == 0  # the pair never charges together
    assert before.soc_kwh[sdge, -1].sum() < 0.8 * energy - 1.0  # without the rule the site ends lower
    assert after.soc_kwh[sdge, -1].sum() >= 0.8 * energy - 1e-6  # with it, 80 % between them
    assert after.total_revenue <= before.total_revenue + 0.01 * abs(before.total_revenue)  # a rule costs, never pays


def test_a_rule_holds_in_every_decomposition_piece_of_a_100_unit_fleet():
    """The rule ties u0 and u1, which the decomposition would put in different pieces: they share one."""
    from optimizer import fleet_problem

    p = fleet_problem(100)
    options = SolverOptions(time_limit_s=60.0, mip_gap=1e-3, decomposition="on", extensions=(f"{RULES}:u0_and_u1_charge_at_most_100_kw",))
    plain = optimize(p, replace(options, extensions=()))
    ruled = optimize(p, options)
    assert ruled.stats.pieces > 1
    feeder = lambda s: s.charge_kw[0] + s.charge_kw[1]  # noqa: E731
    assert feeder(plain).max() > 100.0 + 1.0 and feeder(ruled).max() <= 100.0 + 1e-6
    assert_schedule_feasible(p, ruled)


def test_a_rule_the_pieces_would_split_is_refused_by_the_decomposition_and_held_by_the_whole_model():
    idx = hours(6)
    limited = dict(import_limit_kw=60.0, export_limit_kw=60.0)  # below the units' 100 kW: each site its own piece
    units = [unit("u0", site="s0"), unit("u1", site="s1")]
    p = problem(units, [wholesale_site("s0", **limited), wholesale_site("s1", **limited)], market([10.0, 90.0, 5.0, 120.0, 20.0, 150.0], idx), idx)
    options = SolverOptions(mip_gap=1e-6, extensions=(f"{RULES}:u0_and_u1_never_export_together",))
    with pytest.raises(SolverError, match="extension tests.extension_rules:u0_and_u1_never_export_together.two_sites.*separate pieces"):
        optimize(p, replace(options, decomposition="on"))
    s = optimize(p, options)  # auto: solved whole
    assert (s.discharge_kw[0] + s.discharge_kw[1] <= 80.0 + 1e-6).all()
    assert (s.discharge_kw[0] + s.discharge_kw[1]).max() == pytest.approx(80.0, abs=1e-3)  # it binds


def test_a_rule_that_conflicts_with_a_limit_is_named_in_the_infeasibility_report():
    idx = hours(4)
    p = problem([unit("u0"), unit("u1")], [wholesale_site()], market([10.0, 50.0, 20.0, 80.0], idx), idx)
    s = optimize(p, SolverOptions(extensions=(f"{RULES}:u1_above_its_window",)))
    assert s.stats.status == "infeasible_relaxed"
    assert any(v.family == f"extension {RULES}:u1_above_its_window.u1_too_full" for v in s.violations), s.violations


def _backtest_week(tmp_path: Path, rules: str | None) -> pd.DataFrame:
    text = (ROOT / "config" / "examples" / "caiso_backtest.yaml").read_text().replace("../data/", f"{ROOT}/config/data/")
    if rules:
        text = re.sub(r"^solver:\n", f"solver:\n  extensions: ['{rules}']\n", text, flags=re.M)
    config = tmp_path / f"backtest-{bool(rules)}.yaml"
    config.write_text(text)
    out = tmp_path / f"out-{bool(rules)}"
    res = vpp("simulate", "-c", str(config), "--from", "2020-08-01", "--to", "2020-08-08", "--forecast", "persistence", "--out", str(out), "--json", timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)
    intervals = pd.read_csv(out / "intervals.csv")
    # the plan in force in each interval (charging < 0): rules bind the plans; the dispatcher's SoC
    # tracking on top of them (a few hundred kW here) does not know them
    wide = intervals.pivot_table(index="interval_start", columns="unit_id", values="planned_kw")
    assert len(wide) == 7 * 24
    return wide


def test_a_week_of_backtest_follows_a_rule(tmp_path: Path):
    together = lambda w: int(((w["np-a-1"] < -1e-3) & (w["np-a-2"] < -1e-3)).sum())  # noqa: E731
    plain = _backtest_week(tmp_path, None)
    ruled = _backtest_week(tmp_path, f"{ROOT / 'config' / 'examples' / 'extensions.py'}:never_charge_together")
    assert together(plain) > 0 and together(ruled) == 0
    assert ((ruled["np-a-1"] < -1e-3) | (ruled["np-a-2"] < -1e-3)).any()  # the pair still charges, in turn


def test_a_bad_extension_is_one_line_naming_it(tmp_path: Path):
    config = tmp_path / "c.yaml"
    text = (ROOT / "config" / "examples" / "caiso_fleet_rules.yaml").read_text().replace("../data/", f"{ROOT}/config/data/")
    config.write_text(text.replace("extensions.py:never_charge_together", "nowhere.py:rule"))
    res = vpp("optimize", "-c", str(config))
    assert res.returncode == 2 and "solver.extensions" in res.stderr and "Traceback" not in res.stderr, res.stderr[-1500:]
