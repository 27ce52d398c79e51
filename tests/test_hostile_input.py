"""Issue 14 on the real components where a unit test is exact: bounded parsers (and a fuzz of each under a
time budget), overrides that cannot be NaN or empty, a PUT that keeps the file, MQTT messages contained per
message, settlement of the energy that flowed (to 1 Wh against the devices' own integral), the market clock
across restarts, the stall counter, the SunSpec 704 without a revert timer, and the write order."""

from __future__ import annotations

import asyncio
import json
import math
import random
import stat
import struct
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.base import DeviceAdapter
from adapters.batching import RegisterWindow
from adapters.health import Backoff
from adapters.modbus_link import ModbusLink
from adapters.mqtt import MqttGateway, MqttUnit, parse_state
from adapters.sunspec import SunSpecAdapter, SunSpecLayout, decode_telemetry, poll_blocks
from adapters.sunspec_models import encode, model_def, to_raw
from simulators.modbus_server import ModbusDeviceServer
from simulators.sunspec_server import SunSpecImage
from tests.conftest import Mosquitto, sim_unit
from tests.daemon_rig import write_config
from vpp import safe_yaml
from vpp.config import load_config
from vpp.daemon.clock import Clock, market_clock
from vpp.daemon.control import ControlLoop, ScheduleInForce
from vpp.daemon.metrics import Metrics
from vpp.daemon.settle import Settler
from vpp.daemon.store import Store, commands
from vpp.daemon.watch import OverridesRejected, OverridesWatcher
from vpp.db import open_database
from vpp.dispatch import DispatchFleet, DispatchSettings
from vpp.errors import AdapterError, InputError
from vpp.fleet_state import FleetState
from vpp.overrides import Override, OverrideKind
from vpp.telemetry import Setpoint, Telemetry, UnitState

BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "\n".join(f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)) + "\n"
BUDGET_S = 0.5  # what one parse of hostile input may take, at most (a tick is 2 s by default)

# ------------------------------------------------------------------ bounded YAML


def test_an_alias_bomb_is_refused_in_milliseconds_by_every_loader(tmp_path: Path) -> None:
    assert len(BOMB) < 400  # 9^9 = 387 million strings once expanded
    for budget, message in ((safe_yaml.OVERRIDES, "aliases"), (safe_yaml.CONFIG, "once aliases are expanded")):
        started = time.perf_counter()
        with pytest.raises(InputError, match=message):
            safe_yaml.load(BOMB, "bomb.yaml", budget)
        assert time.perf_counter() - started < BUDGET_S
    path = tmp_path / "site.yaml"
    path.write_text(BOMB)
    with pytest.raises(InputError, match="once aliases are expanded"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 10_000 + "]" * 10_000, "nesting deeper than 64"),
        ("a: &a [*a]", "contains itself"),
        ("n: 1" + "0" * 5000, "4300 digits"),
        ("!!python/object:os.system {}", "valid YAML"),
        ("start: 2020-02-30", "day is out of range"),  # plain safe_load raised ValueError here
        ("{a: 1, a: 2}", None),
    ],
)
def test_hostile_yaml_is_one_input_error(text: str, message: str | None) -> None:
    if message is None:
        assert safe_yaml.load(text, "x") == {"a": 2}  # PyYAML's duplicate-key rule, unchanged
        return
    with pytest.raises(InputError, match=message):
        safe_yaml.load(text, "x")


def test_a_file_larger_than_the_cap_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# " + b"x" * (safe_yaml.OVERRIDES.max_bytes + 10))
    with pytest.raises(InputError, match="at most 1000000 bytes"):
        safe_yaml.read(path, safe_yaml.OVERRIDES)


def test_merge_keys_and_anchors_still_work_in_configs() -> None:
    assert safe_yaml.load("base: &b {x: 1}\nc:\n  <<: *b\n  y: 2\n", "x") == {"base": {"x": 1}, "c": {"x": 1, "y": 2}}


# ------------------------------------------------------------------ overrides: finite, never empty, file kept


def _watcher(tmp_path: Path) -> tuple[OverridesWatcher, list[dict]]:
    cfg = load_config(write_config(tmp_path, 1883))
    rows: list[dict] = []
    now = pd.Timestamp("2020-08-18T08:00Z")
    return OverridesWatcher(cfg.overrides_path, cfg.fleet, cfg.market, cfg.timezone, cfg.overrides, rows.extend, lambda: (now, now)), rows


def _entry(**kw) -> dict:
    return {"kind": "soc_floor", "unit": "ss-1", "value": 0.3, "start": "2020-08-18T00:00:00Z", "end": "2020-08-19T00:00:00Z", "author": "ops", "reason": "safety floor", **kw}


@pytest.mark.parametrize(
    "body",
    [
        '{"overrides": [{"kind": "force_power", "unit": "ss-1", "value": NaN, "start": "2020-08-18T00:00:00Z", "end": "2020-08-19T00:00:00Z", "author": "a", "reason": "r"}]}',
        'overrides: [{kind: force_power, unit: ss-1, value: "nan", start: "2020-08-18T00:00:00Z", end: "2020-08-19T00:00:00Z", author: a, reason: r}]',
        "overrides: [{kind: force_power, unit: ss-1, value: .nan, start: '2020-08-18T00:00:00Z', end: '2020-08-19T00:00:00Z', author: a, reason: r}]",
        "overrides: [{kind: force_power, unit: ss-1, value: .inf, start: '2020-08-18T00:00:00Z', end: '2020-08-19T00:00:00Z', author: a, reason: r}]",
        "overrides: [{kind: fleet_export_cap, value: .nan, start: '2020-08-18T00:00:00Z', end: '2020-08-19T00:00:00Z', author: a, reason: r}]",
        "overrides: [{kind: force_power, unit: ss-1, value: 1e999, start: '2020-08-18T00:00:00Z', end: '2020-08-19T00:00:00Z', author: a, reason: r}]",
        "overrides: [{kind: unit_out, unit: ss-1, start: '2020-08-18T00:00:00Z', end: '9999-12-31T23:59:59-01:00', author: a, reason: r}]",
        "",
        "   \n# only a comment\n",
        "{}",
        "[]",
        BOMB,
    ],
    ids=["json NaN", "string nan", ".nan", ".inf", "cap .nan", "1e999", "year 9999", "empty", "comment only", "no overrides key", "a list", "alias bomb"],
)
def test_non_finite_implausible_or_empty_overrides_are_rejected_and_change_nothing(tmp_path: Path, body: str) -> None:
    watcher, audit = _watcher(tmp_path)
    floor = watcher.replace(yaml.safe_dump({"overrides": [_entry()]}))
    before = watcher.path.read_bytes()
    started = time.perf_counter()
    with pytest.raises(OverridesRejected) as err:
        watcher.replace(body)
    assert time.perf_counter() - started < BUDGET_S
    assert watcher.current == floor and watcher.path.read_bytes() == before  # the safety floor stays
    assert audit[-1]["event"] == "rejected" and audit[-1]["source"] == "api" and len(audit[-1]["detail"]) < 40_000
    assert all(len(line) <= 600 for line in err.value.errors)
    assert all(math.isfinite(o.value) for o in watcher.current if o.value is not None)


def test_an_empty_overrides_file_is_rejected_and_overrides_stay(tmp_path: Path) -> None:
    watcher, audit = _watcher(tmp_path)
    floor = watcher.replace(yaml.safe_dump({"overrides": [_entry()]}))
    watcher.path.write_text("")
    assert watcher.poll() is False and watcher.current == floor
    assert audit[-1]["event"] == "rejected" and "overrides: []" in audit[-1]["detail"]
    watcher.path.write_text("overrides: []\n")  # withdrawing every override is said explicitly
    assert watcher.poll() is True and watcher.current == ()


COMMENTED = """# Site overrides: edit here or PUT /overrides (comments and layout are kept).
overrides:
  # battery room 2 under service until Friday
  - {kind: soc_floor, unit: ss-1, value: 0.3, start: "2020-08-18T00:00:00Z", end: "2020-08-19T00:00:00Z", author: ops, reason: "safety floor"}   # do not remove
  - {kind: unit_out, unit: pcs-1, start: "2020-08-18T00:00:00Z", end: "2020-08-19T00:00:00Z", author: ops, reason: "inverter service"}
"""


def test_put_keeps_the_files_comments_layout_and_mode(tmp_path: Path) -> None:
    watcher, _ = _watcher(tmp_path)
    watcher.path.write_text(COMMENTED)
    watcher.path.chmod(0o664)
    assert watcher.poll() is True
    keep, _ = json.loads(json.dumps(yaml.safe_load(COMMENTED)["overrides"])), None
    new = {"kind": "unit_out", "unit": "ss-2", "start": "2020-08-18T00:00:00Z", "end": "2020-08-19T00:00:00Z", "author": "ana", "reason": "test"}
    overrides = watcher.replace(json.dumps({"overrides": [keep[0], new]}))  # pcs-1 withdrawn, ss-2 added, as one-line JSON
    text = watcher.path.read_text()
    assert "# Site overrides: edit here" in text and "# battery room 2 under service" in text and "# do not remove" in text
    assert "pcs-1" not in text and "ss-2" in text
    assert len(text.splitlines()) == 5  # header, key, comment, the kept line, the new one
    assert stat.S_IMODE(watcher.path.stat().st_mode) == 0o664
    assert [o.unit_id for o in overrides] == ["ss-1", "ss-2"]
    assert [o.unit_id for o in watcher.current] == ["ss-1", "ss-2"]
    assert watcher.poll() is False  # its own write
    watcher.path.write_text(text)  # what it wrote loads back the same
    assert watcher._parse(watcher.path)[0] == overrides


# ------------------------------------------------------------------ MQTT: contained per message


UNIT = MqttUnit("mq-1", "depot", "vpp", rating_kw=100.0)


async def test_a_state_message_whose_utc_time_does_not_exist_is_malformed_once_never_a_reconnect_loop(mosquitto: Mosquitto) -> None:
    from vpp.fleet_state import FleetState

    now = datetime.now(UTC)
    assert pytest.raises(ValueError, parse_state, UNIT, b'{"timestamp": "9999-12-31T23:59:59-01:00", "soc": 0.5}', now)
    gw = MqttGateway(mosquitto.broker(client_id="gw-overflow"), [UNIT], FleetState(["mq-1"]))
    await gw.start()
    try:
        await asyncio.wait_for(gw.session.connected.wait(), 10)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as device:
            for payload in (b'{"timestamp": "9999-12-31T23:59:59-01:00", "soc": 0.5}', b'{"timestamp": "0001-01-01T00:00:00+01:00", "soc": 0.5}', b"{" * 100_000, b'{"timestamp": "' + b"9" * 20_000 + b'"}'):
                await device.publish(UNIT.state_topic, payload, qos=1, retain=True)
            good = json.dumps({"timestamp": datetime.now(UTC).isoformat(), "soc": 0.42, "power_kw": 10.0, "state": "ok"}).encode()
            await device.publish(UNIT.state_topic, good, qos=1)
            deadline = time.monotonic() + 5
            while gw.stats.applied < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
    finally:
        await gw.stop()
    assert gw.stats.malformed == 4 and gw.stats.applied == 1
    assert gw.session.stats.connects == 1 and gw.session.stats.disconnects == 0  # never a reconnect
    assert gw.state.telemetry("mq-1").soc == pytest.approx(0.42)


async def test_a_handler_that_raises_is_contained_by_the_session(mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    from adapters.mqtt_session import MqttSession

    seen: list[bytes] = []

    def handler(message: aiomqtt.Message) -> None:
        seen.append(message.payload)
        raise OverflowError("date value out of range")

    session = MqttSession(mosquitto.broker(), "catch-all", ["t/#"], handler)
    session.start()
    try:
        await asyncio.wait_for(session.connected.wait(), 10)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            for i in range(50):
                await client.publish("t/x", f"bad {i}".encode(), qos=1)
        deadline = time.monotonic() + 5
        while len(seen) < 50 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await session.stop()
    assert len(seen) == 50  # each message handled exactly once
    assert session.stats.connects == 1 and session.stats.disconnects == 0
    dropped = [r for r in caplog.records if "mqtt message dropped" in r.getMessage()]
    assert 1 <= len(dropped) <= 5 and "payload_head=b'bad 0'" in dropped[0].getMessage()  # rate-limited


# ------------------------------------------------------------------ fuzz: every parser, under a time budget

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
json_values = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.text(max_size=20), lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=10), c, max_size=5), max_leaves=30)
yaml_texts = st.one_of(
    st.text(max_size=300),
    json_values.map(lambda v: yaml.safe_dump(v)),
    st.lists(st.sampled_from(["&a ", "*a", "[", "]", "{", "}", ":", "- ", "\n", "  ", ".nan", ".inf", "!!binary ", "<<: ", "x", "1e999", "9999-12-31"]), max_size=60).map("".join),
)


def _finite(value: object) -> bool:
    return value is None or not isinstance(value, float) or math.isfinite(value)


@FUZZ
@given(text=yaml_texts)
def test_fuzz_yaml_overrides_loader_rejects_or_returns_finite_overrides_in_time(tmp_path: Path, text: str) -> None:
    watcher, _ = _watcher(tmp_path)
    started = time.perf_counter()
    try:
        overrides = watcher.replace(text)
    except OverridesRejected:
        overrides = watcher.current
    assert time.perf_counter() - started < BUDGET_S
    assert all(_finite(o.value) for o in overrides)


@FUZZ
@given(text=yaml_texts)
def test_fuzz_yaml_config_loader_raises_only_input_errors_in_time(text: str) -> None:
    started = time.perf_counter()
    try:
        safe_yaml.load(text, "fuzz.yaml")
    except InputError:
        pass
    assert time.perf_counter() - started < BUDGET_S


state_payloads = st.one_of(
    st.binary(max_size=300),
    st.fixed_dictionaries(
        {"timestamp": st.one_of(st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()), st.text(max_size=30), st.integers()), "soc": json_values, "power_kw": json_values, "max_charge_kw": json_values, "state": st.sampled_from(["ok", "fault", "x", 3])},
        optional={"faults": json_values},
    ).map(lambda d: json.dumps(d, allow_nan=True).encode()),
)


@FUZZ
@given(payload=state_payloads)
def test_fuzz_mqtt_state_parser_raises_only_value_errors_and_passes_only_finite_numbers(payload: bytes) -> None:
    now = datetime.now(UTC)
    started = time.perf_counter()
    try:
        t = parse_state(UNIT, payload, now)
    except ValueError:
        return
    finally:
        assert time.perf_counter() - started < BUDGET_S
    assert all(_finite(v) for v in (t.soc, t.power_kw, t.max_charge_kw, t.max_discharge_kw))
    assert now - timedelta(days=1) <= t.timestamp <= now + timedelta(seconds=30)


@FUZZ
@given(registers=st.lists(st.integers(0, 0xFFFF), min_size=600, max_size=600))
def test_fuzz_sunspec_registers_decode_to_finite_plausible_telemetry_or_an_adapter_error(registers: list[int]) -> None:
    order = (1, 701, 702, 704, 713, 802)
    models, address = {}, 40002
    for m in order:
        models[m] = (address, model_def(m).length)
        address += 2 + model_def(m).length
    layout = SunSpecLayout(40000, models)
    image = (registers * (1 + (address - 40000) // len(registers)))[: address - 40000]
    for model_id, (at, length) in models.items():  # keep the headers, as a device that answers garbage values would
        image[at - 40000 : at - 40000 + 2] = [model_id, length]
    window = RegisterWindow()
    for span in poll_blocks(layout):
        window.add(span, image[span.address - 40000 : span.address - 40000 + span.count])
    started = time.perf_counter()
    try:
        t = decode_telemetry("u", datetime.now(UTC), layout, window, 250.0)
    except AdapterError:
        return
    assert time.perf_counter() - started < BUDGET_S
    assert t.soc is None or 0.0 <= t.soc <= 1.0
    assert all(_finite(v) for v in (t.soc, t.power_kw, t.max_charge_kw, t.max_discharge_kw))
    assert t.power_kw is None or abs(t.power_kw) <= 250.0 * 1.1


# ------------------------------------------------------------------ settlement: the energy that flowed, to 1 Wh


@dataclass(frozen=True)
class SteppedClock(Clock):
    at: list = field(default_factory=list)

    def wall(self) -> pd.Timestamp:  # type: ignore[override]
        return self.at[0]


class ExactDevice(DeviceAdapter):
    """A battery whose power is its last setpoint from the moment it is written until it is replaced or reverts,
    integrated exactly on its own (the independent integration)."""

    def __init__(self, unit_id: str, clock: SteppedClock) -> None:
        super().__init__(unit_id, Backoff(base_s=0.0))
        self.clock = clock
        self.power_kw, self.since, self.until = 0.0, clock.wall(), None
        self.wh_by_interval: dict[pd.Timestamp, float] = {}

    def advance(self, to: pd.Timestamp) -> None:
        while self.since < to:
            end = min(to, self.since.floor("5min") + pd.Timedelta(minutes=5))
            if self.until is not None and self.until <= end:
                end = max(self.until, self.since)
            key = self.since.floor("5min")
            self.wh_by_interval[key] = self.wh_by_interval.get(key, 0.0) + self.power_kw * (end - self.since).total_seconds() / 3.6
            self.since = end
            if self.until is not None and self.since >= self.until:
                self.power_kw, self.until = 0.0, None  # reverted by its own timer

    def telemetry(self) -> Telemetry:
        self.advance(self.clock.wall())
        return Telemetry(self.unit_id, self.clock.wall().to_pydatetime(warn=False), soc=0.5, power_kw=self.power_kw, state=UnitState.OK)

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def _read(self, now):
        return self.telemetry()

    async def _write(self, setpoint: Setpoint) -> None:
        self.advance(self.clock.wall())
        self.power_kw, self.until = setpoint.power_kw, self.clock.wall() + pd.Timedelta(seconds=setpoint.valid_s)


async def test_settlement_bills_exactly_the_energy_the_devices_delivered_with_a_unit_out_and_the_daemon_down(tmp_path: Path) -> None:
    """Interval 1: ss-2 under unit_out for 2 of its 5 minutes. Interval 2: the daemon stops (0 W to every unit)
    after 1.5 minutes and a new process starts 2 minutes later. Ticks jitter around 2 s."""
    cfg = load_config(write_config(tmp_path, 1883))
    t0 = pd.Timestamp("2020-08-18T08:00Z")
    clock = SteppedClock(1.0, t0, t0, [t0])
    store = Store(open_database(tmp_path / "exact.db"))
    devices = {u.id: ExactDevice(u.id, clock) for u in cfg.units}
    m = pd.Timedelta(minutes=1)
    overrides = (
        Override(OverrideKind.FORCE_POWER, t0, t0 + 3 * m, "t", "r", unit_id="ss-1", value=120.0),
        Override(OverrideKind.FORCE_POWER, t0 + 3 * m, t0 + 15 * m, "t", "r", unit_id="ss-1", value=-80.0),
        Override(OverrideKind.FORCE_POWER, t0, t0 + 15 * m, "t", "r", unit_id="ss-2", value=150.0),
        Override(OverrideKind.UNIT_OUT, t0 + 1 * m, t0 + 3 * m, "t", "r", unit_id="ss-2"),
        Override(OverrideKind.FORCE_POWER, t0, t0 + 15 * m, "t", "r", unit_id="pcs-1", value=-33.3),
        Override(OverrideKind.FORCE_POWER, t0, t0 + 15 * m, "t", "r", unit_id="mq-1", value=47.0),
    )

    def control_loop() -> ControlLoop:
        state = FleetState(tuple(devices))
        watcher = OverridesWatcher(None, cfg.fleet, cfg.market, cfg.timezone, overrides, lambda rows: None, lambda: (clock.wall(), clock.wall()))
        return ControlLoop(
            dfleet=DispatchFleet.of(cfg.fleet, cfg.market), state=state, adapters=devices, schedule=ScheduleInForce(), watcher=watcher, clock=clock,
            store=store, metrics=Metrics(), settings=DispatchSettings(stale_after_s=10), tick_s=2.0, setpoint_valid_s=10.0,
            interval=pd.Timedelta(minutes=5), downsample=pd.Timedelta(minutes=1),
        )

    rng = random.Random(14)

    async def run(loop: ControlLoop, until: pd.Timestamp) -> None:
        while clock.wall() < until:
            for uid, device in devices.items():  # the poll, just before the tick, as the daemon's poller runs
                loop.state.apply(device.telemetry())
            await loop.tick()
            clock.at[0] = min(until, clock.wall() + pd.Timedelta(milliseconds=rng.randint(1700, 2300)))

    first = control_loop()
    await run(first, t0 + 6.5 * m)
    await first.zero_all()  # SIGTERM
    first.flush()
    clock.at[0] = t0 + 8.5 * m  # down for 2 minutes
    second = control_loop()
    await run(second, t0 + 15 * m + pd.Timedelta(seconds=5))  # a tick after 08:15 credits the span across it
    second.flush()
    for device in devices.values():
        device.advance(t0 + 15 * m)
    store.submit(lambda: None).result()
    settler = Settler(cfg, store, clock)
    for k in range(3):
        settler.settle_interval(t0 + 5 * k * m)
    with store.engine.connect() as conn:
        ledger = pd.DataFrame(conn.execute(sa.text("SELECT unit_id, interval_start, discharged_wh, charged_wh FROM metered_energy")).mappings().all())
        coverage = dict(conn.execute(sa.text("SELECT interval_start, coverage FROM daemon_settled_intervals")).all())
    store.close()
    ledger["interval_start"] = pd.to_datetime(ledger.interval_start, utc=True)
    checked = 0
    for row in ledger.itertuples():
        truth = devices[row.unit_id].wh_by_interval.get(row.interval_start, 0.0)
        assert row.discharged_wh - row.charged_wh == pytest.approx(truth, abs=1.0), (row.unit_id, row.interval_start)
        checked += 1
    assert checked == 12
    ss2 = devices["ss-2"].wh_by_interval[t0]
    # about 3 of 5 minutes at 150 kW (the override takes effect at the tick after it starts), not 5 of 5
    # as the mean of the in-dispatch samples over the interval would have it
    assert ss2 == pytest.approx(150.0 * 3 / 60 * 1000, abs=2 * 150.0 * 2.3 / 3.6)
    assert sorted(round(v, 3) for v in coverage.values()) == [0.6, 1.0, 1.0]  # interval 2 flagged: 3 of 5 minutes seen


# ------------------------------------------------------------------ the market clock across restarts


def test_the_market_clock_resumes_and_never_runs_back_onto_what_was_recorded(tmp_path: Path) -> None:
    store = Store(open_database(tmp_path / "clock.db"))
    try:
        first = market_clock(60.0, pd.Timestamp("2020-08-18T00:00Z"), None, store)
        assert first.now() - pd.Timestamp("2020-08-18T00:00Z") < pd.Timedelta(minutes=1)
        # a run records two hours of commands, then the process is killed and started again
        recorded = pd.Timestamp("2020-08-18T01:59Z")
        store.insert(commands, [{"market_at": recorded.to_pydatetime(), "wall_at": datetime.now(UTC), "unit_id": "u", "power_kw": 0.0, "scheduled_kw": 0.0, "reason": ""}])
        again = market_clock(60.0, pd.Timestamp("2020-08-18T00:00Z"), None, store)
        assert again.now() >= recorded  # not 00:00 again
        assert again == store.clock_anchor()[0]
        # the same anchor comes back while it is ahead of the records
        assert market_clock(60.0, pd.Timestamp("2020-08-18T00:00Z"), None, store) == again
        # the wall clock itself is never moved
        wall = market_clock(1.0, None, None, store)
        assert abs((wall.now() - pd.Timestamp.now(tz="UTC")).total_seconds()) < 1
    finally:
        store.close()


# ------------------------------------------------------------------ SunSpec 704 without a revert timer


async def test_the_simulator_accepts_wset_before_its_revert_time_and_keeps_answering() -> None:
    unit = sim_unit()
    image = SunSpecImage(unit)
    async with ModbusDeviceServer({1: image}, tick_s=0.05) as server:
        link = ModbusLink("127.0.0.1", server.port, 1.0)
        points = model_def(704).points
        # WSetEna, WSetMod, WSet in one write, and no WSetRvrtTms ever written
        await link.write(1, image.address(704, "WSetEna"), [1, 1, *encode(points["WSet"], to_raw(40_000.0, image.w_sf))])
        await asyncio.sleep(0.1)
        registers = await link.read(1, 3, image.address(704, "ID"), 2 + model_def(704).length)
        link.close()
    assert unit.setpoint_kw == pytest.approx(40.0)
    offset = points["WSetRvrtRem"].offset
    assert struct.unpack(">I", struct.pack(">2H", *registers[offset : offset + 2]))[0] == 0  # no timer running


@pytest.mark.parametrize(("models", "commanded"), [((1, 701, 702, 704, 713, 802), True), ((1, 701, 702, 704, 713), False)], ids=["heartbeat", "no heartbeat"])
async def test_a_device_without_a_revert_timer_is_commanded_only_when_its_heartbeat_can_revert_it(models: tuple[int, ...], commanded: bool) -> None:
    unit = sim_unit()
    async with ModbusDeviceServer({1: SunSpecImage(unit, models=models, revert_timer=False)}, tick_s=0.05) as server:
        adapter = SunSpecAdapter("u1", ModbusLink("127.0.0.1", server.port, 1.0), 1, heartbeat_s=0.2)
        await adapter.read()
        if commanded:
            await adapter.write(Setpoint("u1", 30.0, datetime.now(UTC), 5.0))
            await adapter.write(Setpoint("u1", 31.0, datetime.now(UTC), 5.0))
        else:
            with pytest.raises(AdapterError, match="no revert timer"):
                await adapter.write(Setpoint("u1", 30.0, datetime.now(UTC), 5.0))
        await asyncio.sleep(0.1)
        adapter.link.close()
    assert unit.setpoint_kw == (pytest.approx(31.0) if commanded else None)
