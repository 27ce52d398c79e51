"""Fuzzed register values and payloads never crash a decoder and never produce an implausible number."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.batching import MAX_READ_REGISTERS, RegisterWindow, Span, plan_reads
from adapters.modbus_map import decode_telemetry as decode_map
from adapters.modbus_map import load_register_map, read_blocks
from adapters.mqtt import MqttUnit, parse_state
from adapters.plausibility import RATING_TOLERANCE
from adapters.sunspec import SunSpecLayout, decode_telemetry, poll_blocks
from adapters.sunspec_models import model_def
from simulators.sunspec_server import STORAGE_MODELS, SunSpecImage
from tests.conftest import sim_unit
from vpp.errors import AdapterError
from vpp.telemetry import Telemetry

RATING_KW = 100.0
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
DEVICES = Path(__file__).resolve().parents[1] / "config" / "devices"
MAPS = [load_register_map(DEVICES / name) for name in ("acme_pcs250.yaml", "generic_bms_w.yaml")]
UNIT = MqttUnit("u1", "s1", "vpp", rating_kw=RATING_KW)


def assert_plausible(telemetry: Telemetry) -> None:
    """Every number that comes out is inside its physical range; everything else is None."""
    limit = RATING_KW * RATING_TOLERANCE
    assert telemetry.soc is None or 0.0 <= telemetry.soc <= 1.0
    assert telemetry.power_kw is None or (math.isfinite(telemetry.power_kw) and abs(telemetry.power_kw) <= limit)
    for allowed in (telemetry.max_charge_kw, telemetry.max_discharge_kw):
        assert allowed is None or 0.0 <= allowed <= limit
    assert all(isinstance(f, str) for f in telemetry.faults)


def sunspec_layout(models: tuple[int, ...]) -> SunSpecLayout:
    image = SunSpecImage(sim_unit(), models=models)
    return SunSpecLayout(image.base, {m: (image.address(m, "ID"), model_def(m).length) for m in models})


def _register(word: int) -> int:
    """A quarter of the words become small signed numbers, so scale factors are often valid and values reach the checks."""
    return word if word & 0xC000 else ((word & 0x7) - 4) & 0xFFFF


def registers_from(size: int) -> st.SearchStrategy[list[int]]:
    return st.binary(min_size=2 * size, max_size=2 * size).map(lambda b: [_register(int.from_bytes(b[i : i + 2])) for i in range(0, len(b), 2)])


def window_from(layout: SunSpecLayout, registers_in: list[int], keep_headers: bool) -> RegisterWindow:
    window = RegisterWindow()
    for block in poll_blocks(layout):
        registers, registers_in = registers_in[: block.count], registers_in[block.count :]
        if keep_headers:
            for model_id, (address, length) in layout.models.items():
                if block.address <= address < block.end - 1:
                    registers[address - block.address : address - block.address + 2] = [model_id, length]
        window.add(block, registers)
    return window


@pytest.mark.parametrize("models", [(1, 701, 702, 704, 713, 802), STORAGE_MODELS], ids=["default", "124"])
@settings(max_examples=300, deadline=None)
@given(registers=registers_from(240), keep_headers=st.booleans())
def test_sunspec_registers_full_of_garbage_decode_to_missing_values_or_are_rejected(
    models: tuple[int, ...], registers: list[int], keep_headers: bool
) -> None:
    layout = sunspec_layout(models)
    try:
        telemetry = decode_telemetry("u1", NOW, layout, window_from(layout, registers, keep_headers), RATING_KW)
    except AdapterError:
        assert not keep_headers  # with intact model headers a poll is never rejected as a whole
        return
    assert_plausible(telemetry)


@pytest.mark.parametrize("register_map", MAPS, ids=["acme", "generic"])
@settings(max_examples=300, deadline=None)
@given(registers=registers_from(16))
def test_mapped_registers_full_of_garbage_decode_to_missing_values(register_map, registers: list[int]) -> None:
    window = RegisterWindow()
    for block in read_blocks(register_map):
        window.add(block, registers[: block.count])
        registers = registers[block.count :]
    assert_plausible(decode_map("u1", NOW, register_map, window, RATING_KW))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
STATE_KEYS = ["timestamp", "soc", "power_kw", "max_charge_kw", "max_discharge_kw", "state", "faults"]


@settings(max_examples=500, deadline=None)
@given(
    payload=st.one_of(
        st.binary(max_size=200),
        st.dictionaries(st.sampled_from(STATE_KEYS), JSON_VALUES | st.datetimes(timezones=st.just(UTC)).map(str)).map(
            lambda d: json.dumps(d, default=str).encode()
        ),
    )
)
def test_mqtt_payloads_of_any_shape_are_malformed_or_plausible(payload: bytes) -> None:
    try:
        telemetry = parse_state(UNIT, payload, NOW)
    except ValueError:
        return
    assert_plausible(telemetry)
    assert telemetry.timestamp.tzinfo is not None


@given(
    spans=st.lists(st.builds(Span, st.sampled_from([3, 4]), st.integers(0, 2000), st.integers(1, 4)), min_size=1, max_size=40),
    max_gap=st.integers(0, 20),
)
def test_batched_reads_cover_every_span_within_the_modbus_limit(spans: list[Span], max_gap: int) -> None:
    blocks = plan_reads(spans, max_gap)
    for span in spans:
        assert any(b.function == span.function and b.address <= span.address and span.end <= b.end for b in blocks)
    assert all(b.count <= MAX_READ_REGISTERS for b in blocks)
    needed = {(s.function, a) for s in spans for a in range(s.address, s.end)}
    for block in blocks:  # a block never reads a run of more than max_gap unneeded registers
        run = 0
        for address in range(block.address, block.end):
            run = 0 if (block.function, address) in needed else run + 1
            assert run <= max_gap
