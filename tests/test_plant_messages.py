"""The plant's messages and plans at the boundary: what a gateway accepts, and a plan's round trip.

A plan cut from a plant schedule and turned back into a gateway's schedule gives the dispatcher the
same power, SoC and reserves for that site's units; a plan or a report outside any bound (size, depth,
non-finite numbers, implausible times, wrong shape, version) is refused whole with one reason; the
plant file is checked against its gateway configs by the real `vpp validate`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tests.cli import vpp
from tests.plant_rig import write_plant
from vpp.fleet import Site
from vpp.overrides import OverrideKind
from vpp.plant.messages import MAX_BYTES, Rejected, SitePlan, Telemetry, encode, parse
from vpp.plant.plans import PLAN_STATS, envelope_overrides, refusal, schedule_of, site_plan
from vpp.schedule import Schedule

T0 = pd.Timestamp("2020-08-18T08:00:00Z")
STEP = pd.Timedelta(minutes=5)


def plant_schedule(power: np.ndarray) -> Schedule:
    units, t = power.shape
    index = pd.date_range(T0, periods=t, freq=STEP)
    soc = np.cumsum(np.hstack([np.full((units, 1), 100.0), -power * STEP.total_seconds() / 3600]), axis=1)
    return Schedule(index, tuple(f"u{i}" for i in range(units)), ("a", "b"), np.maximum(-power, 0), np.maximum(power, 0), soc, {"reg_up": np.abs(power) / 10}, {"reg_up": np.zeros_like(power)}, {}, {}, np.zeros((2, t)), {}, {}, PLAN_STATS)


@given(st.lists(st.lists(st.floats(-500, 500, allow_nan=False), min_size=3, max_size=3), min_size=3, max_size=3))
def test_a_site_plan_gives_the_gateway_the_plant_schedule_of_its_own_units(power: list[list[float]]) -> None:
    s = plant_schedule(np.array(power))
    site = Site("b", "wholesale", import_limit_kw=400, export_limit_kw=math.inf)
    plan = parse(encode(site_plan(s, site, ["u2", "u0"], 7, pd.Timestamp.now(tz="UTC"), T0 + 2 * STEP)), SitePlan)
    back = schedule_of(plan, "b")
    assert back.unit_ids == ("u2", "u0")
    np.testing.assert_allclose(back.power_kw, s.power_kw[[2, 0]], atol=1e-5)
    np.testing.assert_allclose(back.soc_kwh, np.maximum(s.soc_kwh[[2, 0]], 0), atol=1e-5)
    np.testing.assert_allclose(back.reserve_kw["reg_up"], s.reserve_kw["reg_up"][[2, 0]], atol=1e-5)
    assert pd.Timestamp(plan.valid_until) == T0 + 2 * STEP
    caps = envelope_overrides(plan)  # import capped per interval, the unlimited export not at all
    assert {o.kind for o in caps} == {OverrideKind.FLEET_IMPORT_CAP} and len(caps) == 3 and all(o.value == 400 for o in caps)


def good_plan(**changes: object) -> SitePlan:
    s = plant_schedule(np.array([[10.0, -20.0, 0.0]]))
    plan = site_plan(s, Site("a", "wholesale"), ["u0"], 5, pd.Timestamp.now(tz="UTC"), T0 + 3 * STEP)
    return plan.model_copy(update=changes)


@pytest.mark.parametrize(
    ("changes", "current", "reason"),
    [
        ({"site": "b"}, None, "for site b"),
        ({}, 5, "replayed"),
        ({}, 9, "replayed"),
        ({"issued_at": pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=1)}, None, "stale"),
        ({"issued_at": pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=1)}, None, "future"),
        ({"valid_until": T0 + STEP / 2}, None, "expired"),
        ({"interval_s": 900}, None, "interval 900 s"),
    ],
)
def test_a_plan_is_refused_with_one_reason(changes: dict, current: int | None, reason: str) -> None:
    got = refusal(good_plan(**changes), "a", ["u0"], current, T0 + STEP, pd.Timestamp.now(tz="UTC"), 600, STEP)
    assert got is not None and reason in got


def test_a_plan_for_other_units_is_refused_and_a_good_one_is_not() -> None:
    assert refusal(good_plan(), "a", ["u0"], 4, T0 + STEP, pd.Timestamp.now(tz="UTC"), 600, STEP) is None
    assert "missing u1" in refusal(good_plan(), "a", ["u0", "u1"], None, T0 + STEP, pd.Timestamp.now(tz="UTC"), 600, STEP)


def hostile_payloads() -> dict[str, bytes]:
    ok = encode(good_plan()).decode()
    return {
        "oversized": b" " * (MAX_BYTES + 1),
        "not JSON": b"\xff\xfe{",
        "nesting deeper": ("[" * 50 + "]" * 50).encode(),
        "schema version": ok.replace('"v":1', '"v":2').encode(),
        "finite": ok.replace('"power_kw":[10.0', '"power_kw":[NaN', 1).encode(),
        "outside the years": ok.replace("2020-08-18T08:00:00Z", "1970-01-01T00:00:00Z", 1).encode(),
        "Extra inputs": ok.replace('"kind":"plan"', '"kind":"plan","admin":true').encode(),
        "intervals": ok.replace('"power_kw":[10.0,', '"power_kw":[', 1).encode(),
    }


@pytest.mark.parametrize("expected", list(hostile_payloads()))
def test_a_hostile_payload_is_refused_whole_naming_why(expected: str) -> None:
    with pytest.raises(Rejected) as err:
        parse(hostile_payloads()[expected], SitePlan)
    assert expected.lower() in str(err.value).lower() or expected in str(err.value), str(err.value)


def test_telemetry_round_trips_and_a_huge_number_is_refused() -> None:
    msg = Telemetry(site="a", sampled_at=pd.Timestamp.now(tz="UTC").to_pydatetime(), market_at=T0.to_pydatetime(), mode="central", units=())
    assert parse(encode(msg), Telemetry) == msg
    bad = encode(msg).decode().replace('"units":[]', '"units":[{"id":"u","power_kw":1e300}]').encode()
    with pytest.raises(Rejected, match="units.0.power_kw"):
        parse(bad, Telemetry)


def test_vpp_validate_checks_the_plant_file_against_its_gateway_configs(tmp_path: Path) -> None:
    plant, gateways = write_plant(tmp_path, 1883, ["north", "south"])
    ok = vpp("validate", str(plant))
    assert ok.returncode == 0 and "2 sites, 2 units" in ok.stdout, ok.stderr
    raw = yaml.safe_load(plant.read_text())
    raw["plant"]["sites"][1]["units"] = [{"id": "south-b1", "power_kw": 999, "energy_kwh": 200}]
    plant.write_text(yaml.safe_dump(raw))
    cfg = yaml.safe_load(gateways["north"].read_text())
    cfg["daemon"]["central"]["site"] = "elsewhere"
    gateways["north"].write_text(yaml.safe_dump(cfg))
    bad = vpp("validate", str(plant))
    assert bad.returncode == 2
    assert "daemon.central.site" in bad.stderr and "elsewhere" in bad.stderr
    assert "999 kW" in bad.stderr and "150 kW" in bad.stderr


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_central_ingests_a_replay_once_on_either_database(tmp_path: Path, kind: str) -> None:
    from tests.databases import empty_database
    from vpp.db import open_database
    from vpp.ledger.store import settled_totals
    from vpp.plant import ingest
    from vpp.plant.messages import IntervalRecord, MeteredRow, MeterTelemetry, SettledRow, UnitTelemetry

    record = IntervalRecord(site="a", interval_start=T0.to_pydatetime(), currency="USD", rows=(SettledRow(unit_id="u0", stream="energy", amount_minor=1234), SettledRow(unit_id="u1", stream="energy", amount_minor=-5)), energy=(MeteredRow(unit_id="u0", discharged_wh=1500, charged_wh=0),))
    meter = MeterTelemetry(ok=True, power_kw=-312.5, import_kwh=10452.125, export_kwh=0.0)
    sample = Telemetry(site="a", sampled_at=pd.Timestamp.now(tz="UTC").to_pydatetime(), market_at=T0.to_pydatetime(), mode="central", units=(UnitTelemetry(id="u0", soc=0.5), UnitTelemetry(id="u1", soc=0.4)), meter=meter)
    assert parse(encode(sample), Telemetry) == sample  # the site meter travels with the units
    with empty_database(kind, tmp_path, "plant") as url:
        engine = open_database(url)
        try:
            now = pd.Timestamp.now(tz="UTC")
            assert ingest.ingest_interval(engine, record, ["u0", "u1"], now) is True
            assert ingest.ingest_interval(engine, record, ["u0", "u1"], now) is False  # the replay
            assert ingest.ingest_telemetry(engine, [sample, sample], now) == 2  # a batch holding a replay
            assert ingest.ingest_telemetry(engine, [sample], now) == 0
            totals = settled_totals(engine, T0, T0 + STEP)
            assert dict(zip(totals.unit_id, totals.amount_minor)) == {"u0": 1234, "u1": -5}
            with pytest.raises(ValueError, match="no such site"):
                ingest.ingest_interval(engine, record, ["u0"], now)  # a site reporting another's unit
            assert ingest.counts(engine) == {"a": {"telemetry": 1, "intervals": 1}}
            with engine.connect() as conn:  # the meter's reading and counters, stored once
                stored = conn.execute(sa.select(ingest.plant_meter.c.site_id, ingest.plant_meter.c.ok, ingest.plant_meter.c.power_kw, ingest.plant_meter.c.import_kwh)).all()
            assert [tuple(r) for r in stored] == [("a", True, -312.5, 10452.125)]
        finally:
            engine.dispose()


def test_the_example_plant_validates() -> None:
    ok = vpp("validate", "config/examples/plant/plant.yaml")
    assert ok.returncode == 0 and "2 sites, 2 units" in ok.stdout, ok.stderr
