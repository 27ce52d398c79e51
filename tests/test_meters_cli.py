"""Meters through the real console scripts: `vpp devices simulate` serves a DTSU666 register-map meter over
real Modbus beside SunSpec batteries, and `vpp devices check` (commissioning) steps a battery and confirms the
meter moved by as much, with the right sign; an inverted CT is named, with exit 1."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cli import VPP, vpp
from tests.conftest import free_port
from tests.meter_rig import write_meter_config


@pytest.mark.parametrize(("fault", "expect_ok"), [(None, True), ("inverted", False)])
def test_commissioning_check_confirms_a_good_meter_and_names_an_inverted_ct(tmp_path: Path, fault: str | None, expect_ok: bool) -> None:
    config = write_meter_config(tmp_path, free_port(), [{"id": "plant", "meter": "modbus_map", "load_kw": 500.0}], units_per_site=1)
    args = [VPP, "devices", "simulate", "-c", str(config), "--duration", "40", "--meter-noise-kw", "0.5"] + (["--meter-fault", fault] if fault else [])
    sim = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "simulating modbus" in (sim.stdout.readline() if sim.stdout else "")
        result = vpp("devices", "check", "-c", str(config), "--site", "plant", "--step-kw", "-40", "--settle-s", "1", timeout=60)
    finally:
        sim.terminate()
        sim.wait(10)
    out = result.stdout + result.stderr
    assert "unit plant-u1 stepped -40.0 kW (-40.0 kW measured)" in out, out
    if expect_ok:
        assert result.returncode == 0 and "ok: " in out and "sign and scale agree" in out, out
    else:
        assert result.returncode == 1 and "the sign is inverted" in out and "invert: true" in out, out


def test_check_refuses_a_site_without_a_meter(tmp_path: Path) -> None:
    config = write_meter_config(tmp_path, free_port(), [{"id": "plant", "meter": "modbus_map", "load_kw": 500.0}], units_per_site=1)
    result = vpp("devices", "check", "-c", str(config), "--site", "elsewhere")
    assert result.returncode == 2 and "--site" in result.stderr + result.stdout and "metered: plant" in result.stderr + result.stdout


def test_a_bad_meter_block_is_one_line_naming_the_field(tmp_path: Path) -> None:
    config = write_meter_config(tmp_path, free_port(), [{"id": "plant", "meter": "modbus_map", "load_kw": 500.0, "stale_after_s": 0.1}], units_per_site=1)
    result = vpp("validate", str(config))
    out = result.stdout + result.stderr
    assert result.returncode == 2 and "sites[plant].meter" in out and "stale_after_s 0.1 is shorter than poll_s 0.25" in out, out
