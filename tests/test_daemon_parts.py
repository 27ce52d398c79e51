"""The daemon's parts on their own: the tick writes exactly what ``dispatch`` decides, the clock, the
``daemon:`` block, the overrides watcher and its audit, gate closure, the solver worker's time limit,
sd_notify, and the settlement of recorded telemetry."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from datetime import time as clock_time
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
import pytest
import yaml
from hypothesis import given, settings

from adapters.base import DeviceAdapter
from adapters.health import Backoff
from tests.builders import START, hours, market, product
from tests.daemon_rig import hang, write_config
from tests.databases import empty_database
from tests.test_dispatch import NOW, cases, plan
from vpp.config import load_config
from vpp.daemon.clock import Clock
from vpp.daemon.control import ControlLoop, ScheduleInForce
from vpp.daemon.metrics import Metrics
from vpp.daemon.notify import Watchdog, notify
from vpp.daemon.reoptimize import Reoptimizer, committed_bids, next_gate_closure
from vpp.daemon.store import Store
from vpp.daemon.watch import OverrideActivity, OverridesRejected, OverridesWatcher
from vpp.db import open_database
from vpp.dispatch import DispatchFleet, DispatchSettings, dispatch
from vpp.errors import AdapterError, InputError, InputErrors
from vpp.fleet_state import FleetState
from vpp.markets import GateClosure, ProductKind
from vpp.overrides import Override, OverrideKind
from vpp.telemetry import Setpoint

# ------------------------------------------------------------------ the tick writes what dispatch decides


class FrozenClock(Clock):
    def wall(self) -> pd.Timestamp:  # type: ignore[override]
        return self.wall_start


class RecordingAdapter(DeviceAdapter):
    def __init__(self, unit_id: str, written: list[Setpoint]) -> None:
        super().__init__(unit_id, Backoff())
        self.written = written

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def _read(self, now):
        raise AdapterError("not polled in this test")

    async def _write(self, setpoint: Setpoint) -> None:
        self.written.append(setpoint)


@pytest.fixture(scope="module")
def tick_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store(open_database(tmp_path_factory.mktemp("tick") / "tick.db"))
    yield store
    store.close()


@settings(max_examples=60)
@given(case=cases())
def test_the_tick_writes_exactly_the_setpoints_dispatch_returns(tick_store: Store, case) -> None:
    fleet, schedule, telemetry, overrides, base, step_s = case
    dfleet = DispatchFleet.of(fleet)
    state = FleetState(dfleet.unit_ids)
    for t in telemetry.values():
        if t is not None:
            state.apply(t)
    written: list[Setpoint] = []
    adapters = {uid: RecordingAdapter(uid, written) for uid in dfleet.unit_ids}
    clock = FrozenClock(1.0, pd.Timestamp(NOW), pd.Timestamp(NOW))
    watcher = OverridesWatcher(None, fleet, market(0.0, hours(1)), "UTC", overrides, lambda rows: None, lambda: (clock.wall(), clock.wall()))
    settings_ = DispatchSettings(stale_after_s=10)
    loop = ControlLoop(
        dfleet=dfleet, state=state, adapters=adapters, schedule=ScheduleInForce(schedule), watcher=watcher, clock=clock, store=tick_store,
        metrics=Metrics(), settings=settings_, tick_s=1.0, setpoint_valid_s=step_s, interval=pd.Timedelta(hours=1),
        downsample=pd.Timedelta(minutes=1), site_base=lambda now: base,
    )
    record = asyncio.run(loop.tick())
    expected = dispatch(dfleet, NOW, schedule, telemetry, overrides, site_base_kw=base, step_s=step_s, settings=settings_)
    want = {uid: p for uid, p in zip(expected.unit_ids, expected.power_kw) if not np.isnan(p)}
    assert {sp.unit_id: sp.power_kw for sp in written} == want
    assert all(sp.valid_s == step_s and pd.Timestamp(sp.issued_at) == NOW for sp in written)
    np.testing.assert_array_equal(record.result.power_kw, expected.power_kw)


# ------------------------------------------------------------------ clock and config


def test_market_time_is_an_affine_function_of_wall_time_so_a_restart_resumes_it() -> None:
    wall0 = pd.Timestamp("2026-01-01T00:00Z")
    a = Clock.create(60.0, "2020-08-18T00:00Z", wall0)
    b = Clock.create(60.0, "2020-08-18T00:00Z", wall0)  # the same config read by a restarted process
    later = wall0 + pd.Timedelta(seconds=90)
    assert a.to_sim(later) == b.to_sim(later) == pd.Timestamp("2020-08-18T01:30Z")  # 90 s × 60
    assert a.to_wall(pd.Timestamp("2020-08-18T01:30Z")) == later
    assert a.wall_seconds(300) == 5.0


def test_daemon_block_errors_name_the_field(tmp_path: Path) -> None:
    path = write_config(tmp_path, 1883, daemon={"setpoint_valid_s": 0.2})
    with pytest.raises((InputError, InputErrors), match=r"daemon.setpoint_valid_s: got 0.2; expected more than tick_s \(0.25 s\)"):
        load_config(path)
    secret = "s3cret-token-s3cret-token"
    path = write_config(tmp_path, 1883, daemon={"api": {"token": secret, "token_env": "VPP_TOKEN"}})
    with pytest.raises((InputError, InputErrors), match=r"daemon.api.token_env: got 'VPP_TOKEN'; expected give at most one of .* \(also given: token\)") as err:
        load_config(path)
    assert secret not in str(err.value)  # the error names the conflict, never the token
    path = write_config(tmp_path, 1883, daemon={"tick_s": 0, "api": {"port": 8080, "token_file": "missing.token"}})
    with pytest.raises((InputError, InputErrors), match=r"daemon.tick_s"):
        load_config(path)


def test_token_sources_and_downsample_are_checked_before_anything_starts(tmp_path: Path) -> None:
    from vpp.daemon.app import Daemon

    cfg = load_config(write_config(tmp_path, 1883, daemon={"api": {"token_file": "api.token"}}))
    with pytest.raises(InputError, match=r"daemon.api.token_file: got '.*api.token'; expected a readable file"):
        Daemon(cfg)
    (tmp_path / "api.token").write_text("short\n")
    with pytest.raises(InputError, match="at least 16 characters"):
        Daemon(cfg)
    cfg = load_config(write_config(tmp_path, 1883, daemon={"telemetry_downsample_s": 7}))
    with pytest.raises(InputError, match="telemetry_downsample_s: got 7.0; expected a divisor of the market interval"):
        Daemon(cfg)
    assert not (tmp_path / "site.db").exists()


async def test_an_api_port_in_use_is_a_config_error_before_any_device_is_touched(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from vpp.daemon.app import Daemon

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = load_config(write_config(tmp_path, 1883, daemon={"api": {"port": port}}))
        daemon = Daemon(cfg)
        with pytest.raises(InputError, match=rf"daemon.api: got '127.0.0.1:{port}'; expected an address the API can listen on \(Address already in use\)"):
            await daemon.run(install_signals=False)
    assert daemon.control.ticks == 0
    assert not any("0 W" in r.getMessage() for r in caplog.records)  # nothing was commanded, not even 0 W


# ------------------------------------------------------------------ overrides watcher and audit


def _watcher(tmp_path: Path) -> tuple[OverridesWatcher, list[dict]]:
    cfg = load_config(write_config(tmp_path, 1883))
    rows: list[dict] = []
    now = pd.Timestamp("2020-08-18T08:00Z")
    return OverridesWatcher(cfg.overrides_path, cfg.fleet, cfg.market, cfg.timezone, cfg.overrides, rows.extend, lambda: (now, now)), rows


def _entry(**kw) -> dict:
    return {"kind": "unit_out", "unit": "ss-1", "start": "2020-08-18T00:00:00Z", "end": "2020-08-19T00:00:00Z", "author": "ops", "reason": "maintenance", **kw}


def _write(path: Path, body: object) -> None:
    path.write_text(body if isinstance(body, str) else yaml.safe_dump(body))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1))  # a new mtime even within the clock's resolution


def test_watcher_applies_a_valid_edit_and_keeps_the_previous_overrides_on_a_bad_one(tmp_path: Path) -> None:
    watcher, audit = _watcher(tmp_path)
    path = watcher.path
    assert watcher.poll() is False and watcher.current == ()
    _write(path, {"overrides": [_entry()]})
    assert watcher.poll() is True
    assert [(o.kind, o.unit_id, o.author) for o in watcher.current] == [(OverrideKind.UNIT_OUT, "ss-1", "ops")]
    good = watcher.current
    for bad, message in (
        ("overrides: [unclosed", "valid YAML"),
        ({"overrides": [_entry(unit="ghost")]}, "overrides[0].unit: got 'ghost'; expected one of"),
        ({"overrides": [_entry(author="")]}, "overrides[0].author"),
        ({"overrides": [_entry(kind="force_power")]}, "force_power needs value"),
    ):
        _write(path, bad)
        assert watcher.poll() is False
        assert watcher.current == good
        assert message in watcher.last_error and str(path) in watcher.last_error
    path.unlink()
    assert watcher.poll() is False and watcher.current == good
    assert [r["event"] for r in audit] == ["rejected"] * 5
    assert "ghost" in audit[1]["detail"]


def test_put_validates_then_replaces_the_file_atomically(tmp_path: Path) -> None:
    watcher, audit = _watcher(tmp_path)
    with pytest.raises(OverridesRejected) as err:
        watcher.replace('{"overrides": [{"kind": "soc_floor", "unit": "ss-1", "value": 1.5}]}')
    assert any("start" in e for e in err.value.errors) and "(PUT /overrides)" in err.value.errors[0]
    assert yaml.safe_load(watcher.path.read_text()) == {"overrides": []}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".overrides")) == []  # no temp file left
    replaced = watcher.replace(yaml.safe_dump({"overrides": [_entry(kind="soc_floor", value=0.3)]}))
    assert replaced == watcher.current and replaced[0].value == 0.3
    assert watcher.poll() is False  # the watcher knows its own write
    assert audit[0]["event"] == "rejected" and audit[0]["source"] == "api"


def test_activity_reports_each_override_once_when_it_applies_expires_or_is_withdrawn() -> None:
    t0 = pd.Timestamp("2020-01-01T00:00Z")
    a = Override(OverrideKind.UNIT_OUT, t0, t0 + pd.Timedelta(hours=1), "ops", "x", unit_id="u1")
    b = Override(OverrideKind.FLEET_EXPORT_CAP, t0 + pd.Timedelta(minutes=30), t0 + pd.Timedelta(hours=2), "ops", "y", value=10.0)
    activity = OverrideActivity()
    assert activity.update(t0 - pd.Timedelta(minutes=1), [a, b]) == []
    assert activity.update(t0, [a, b]) == [("applied", a)]
    assert activity.update(t0 + pd.Timedelta(minutes=10), [a, b]) == []
    assert sorted(activity.update(t0 + pd.Timedelta(minutes=40), [a, b])) == [("applied", b)]
    assert activity.update(t0 + pd.Timedelta(hours=1), [a, b]) == [("expired", a)]
    assert activity.update(t0 + pd.Timedelta(hours=1, minutes=5), [a]) == [("withdrawn", b)]


# ------------------------------------------------------------------ gate closure


def test_bids_past_their_gate_closure_are_fixed_to_what_was_bid() -> None:
    index = hours(4)
    reg = product("reg", ProductKind.REGULATION_UP, 10.0, index, gate_closure=GateClosure(lead_min=60))
    mkt = market(np.full(4, 30.0), index, (reg,))
    previous = plan(index[:2], ["u1"], [[0.0, 0.0]], [[0.0, 0.0, 0.0]])
    previous.bids_kw["reg"] = np.array([40.0, 60.0])
    now = START + pd.Timedelta(minutes=30)  # gates of 00:00 and 01:00 are closed (they closed at 23:00 and 00:00)
    fixed = committed_bids(mkt, "UTC", index, now, previous)
    np.testing.assert_array_equal(fixed["reg"][:2], [40.0, 60.0])
    assert np.isnan(fixed["reg"][2:]).all()
    later = committed_bids(mkt, "UTC", index, START + pd.Timedelta(hours=2), previous)
    np.testing.assert_array_equal(later["reg"][:3], [40.0, 60.0, 0.0])  # 02:00 closed while nothing was bid for it
    assert committed_bids(mkt, "UTC", index, START - pd.Timedelta(hours=2), previous) is None


def test_next_day_ahead_gate_closure_is_in_local_time() -> None:
    index = hours(48)
    da = product("da", ProductKind.SPINNING_RESERVE, 5.0, index, gate_closure=GateClosure(days_before=1, time=clock_time(10, 0)))
    mkt = market(np.full(48, 30.0), index, (da,))
    # local zone UTC-8: 10:00 local = 18:00 UTC
    assert next_gate_closure(mkt, "Etc/GMT+8", pd.Timestamp("2020-07-01T12:00Z"), pd.Timedelta(hours=24)) == pd.Timestamp("2020-07-01T18:00Z")
    assert next_gate_closure(mkt, "Etc/GMT+8", pd.Timestamp("2020-07-01T19:00Z"), pd.Timedelta(hours=24)) == pd.Timestamp("2020-07-02T18:00Z")


# ------------------------------------------------------------------ the solver worker


async def test_a_hung_solve_is_abandoned_at_the_time_limit_and_the_next_worker_solves(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, 1883))
    reopt = Reoptimizer(cfg, time_limit_s=1.0, solve_fn=hang)
    reopt.start()
    try:
        start = pd.Timestamp("2020-08-18T08:00Z")
        beats = 0

        async def heartbeat() -> None:
            nonlocal beats
            while True:
                await asyncio.sleep(0.05)
                beats += 1

        task = asyncio.create_task(heartbeat())
        began = time.monotonic()
        outcome = await reopt.solve(start, pd.Timedelta(hours=2), {}, (), None)
        elapsed = time.monotonic() - began
        task.cancel()
        assert outcome.outcome == "timeout" and outcome.schedule is None
        assert 1.0 <= elapsed < 2.0
        assert beats >= 15  # the event loop ran on while the worker hung
        assert reopt.recycles == 1
        reopt.solve_fn, reopt.time_limit_s = __import__("vpp.daemon.reoptimize", fromlist=["solve"]).solve, 30.0
        ok = await reopt.solve(start, pd.Timedelta(hours=2), {"ss-1": 0.8}, (), None)
        assert ok.outcome == "ok", ok.error
        assert ok.schedule.soc_kwh[ok.schedule.unit_ids.index("ss-1"), 0] == pytest.approx(0.8 * 500)
        bad = await reopt.solve(pd.Timestamp("2031-01-01T00:00Z"), pd.Timedelta(hours=2), {}, (), None)  # no prices then
        assert bad.outcome == "failed" and "energy_price" in bad.error
    finally:
        reopt.close()


# ------------------------------------------------------------------ sd_notify


def test_notify_sends_datagrams_to_the_socket_systemd_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False  # not under systemd: a no-op
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(tmp_path / "notify"))
        server.settimeout(1)
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        assert notify("READY=1") is True
        assert server.recv(100) == b"READY=1"
        watchdog = Watchdog(min_interval_s=10)
        for _ in range(5):
            watchdog.feed()
        assert server.recv(100) == b"WATCHDOG=1"
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.recv(100)  # fed once, however many ticks
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        name = f"vpp-test-{os.getpid()}"
        server.bind("\0" + name)
        server.settimeout(1)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("STOPPING=1") and server.recv(100) == b"STOPPING=1"


# ------------------------------------------------------------------ settlement of recorded telemetry


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: an SQLite file, or a fresh PostgreSQL database at 127.0.0.1:5432 (skipped, with the
    reason, when no server answers)."""
    with empty_database(request.param, tmp_path, "daemon") as url:
        yield url


def test_a_stored_schedule_comes_back_as_it_was(tmp_path: Path, database: str) -> None:
    store = Store(open_database(database))
    try:
        index = pd.date_range("2020-08-18T08:00Z", periods=3, freq="5min")
        schedule = plan(index, ["u1", "u2"], [[10.0, -5.0, 0.0], [1.5, 2.5, -3.5]], [[100.0, 99.0, 99.4, 99.4], [50.0, 49.8, 49.6, 49.9]])
        first = store.save_schedule(schedule, created_at=pd.Timestamp("2026-01-01T00:00Z"), market_at=index[0], trigger="start")
        second = store.save_schedule(schedule, created_at=pd.Timestamp("2026-01-01T00:01Z"), market_at=index[1], trigger="periodic")
        restored = store.latest_schedule()
        assert (first, restored.id, restored.trigger) == (second - 1, second, "periodic")
        assert restored.created_at == pd.Timestamp("2026-01-01T00:01Z")
        np.testing.assert_array_equal(restored.schedule.power_kw, schedule.power_kw)
        assert list(restored.schedule.index) == list(index)
    finally:
        store.close()


def test_settlement_bills_the_energy_that_flowed_adds_split_buckets_flags_a_partial_interval_and_is_identical_when_repeated(tmp_path: Path, database: str) -> None:
    from vpp.daemon.settle import Settler
    from vpp.daemon.store import energy, settled_intervals
    from vpp.ledger.store import read_settlements

    cfg = load_config(write_config(tmp_path, 1883))
    store = Store(open_database(database))
    clock = Clock.create(100.0, "2020-08-18T08:00Z", "2026-01-01T00:00Z")
    start = pd.Timestamp("2020-08-18T08:05Z")

    def row(minute: int, kwh: float, covered_s: float, dispatch_s: float) -> dict:
        return {"bucket_start": (start + pd.Timedelta(minutes=minute)).to_pydatetime(), "unit_id": "ss-1", "energy_kwh": kwh, "covered_s": covered_s, "dispatch_s": dispatch_s}

    # ss-1: one bucket stored by two processes around a restart (40 s + 20 s of it), one more minute; the
    # daemon saw 2 of the 5 minutes. The 08:10 bucket is the next interval's.
    store.insert(energy, [row(0, 5.0, 40, 40), row(0, 1.0, 20, 20), row(1, 4.0, 60, 30), row(5, 999.0, 60, 60)])
    settler = Settler(cfg, store, clock)
    assert settler.settle_interval(start) > 0
    assert settler.settle_interval(start) == 0  # already settled: nothing new
    ledger = read_settlements(store.engine)
    mean_kw = (5.0 + 1.0 + 4.0) / (5 / 60)  # 120 kW: 10 kWh over the interval, not 10 kWh over the 2 minutes seen
    prices = pd.read_csv(Path(__file__).resolve().parents[1] / "config/data/caiso_2020_hourly_energy_as.csv")
    price = float(prices.loc[prices.timestamp_start == "2020-08-18 00:00", "da_lmp_usd_per_mwh"].iloc[0])
    ss1 = ledger[(ledger.unit_id == "ss-1") & (ledger.stream == "energy")]
    assert len(ss1) == 1 and ss1.amount_minor.iloc[0] == round(price * mean_kw * (5 / 60) / 1000 * 100)
    assert set(ledger.unit_id) == {"ss-1"}  # units never seen metered 0 kW: no amounts
    with store.engine.connect() as conn:
        coverage = conn.execute(sa.select(settled_intervals.c.coverage)).scalar_one()
    assert coverage == pytest.approx(120 / 300)  # flagged: settled on what is known
    store.close()
