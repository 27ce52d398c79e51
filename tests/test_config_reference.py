"""The config reference stays true: every field is described, docs/config.md is what the models render,
and the JSON Schema that editors use accepts every bundled example config and refuses a typo."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from tests.cli import ROOT, vpp
from vpp.config import ConfigModel, OverridesFileModel
from vpp.config_reference import reference, undescribed


def test_every_config_field_has_a_description():
    assert undescribed(ConfigModel) + undescribed(OverridesFileModel) == []


def test_docs_config_md_is_the_rendered_reference():
    assert (ROOT / "docs" / "config.md").read_text() == reference(), "run: vpp config reference > docs/config.md"


def test_the_reference_shows_units_defaults_allowed_values_and_examples():
    text = reference()
    assert "| `energy_kwh` | number (> 0) | required | usable energy capacity, kWh" in text
    assert "| `interval_min` | one of `5`, `15`, `30`, `60` | `60` |" in text
    assert "(guangdong_ci.yaml)" in text and "### `sites[].units[]` — UnitModel" in text


def test_the_json_schema_accepts_the_examples_and_refuses_a_misspelt_field():
    res = vpp("config", "schema", timeout=60)
    assert res.returncode == 0, res.stderr
    schema = json.loads(res.stdout)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted(Path(ROOT, "config", "examples").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if "sites" in raw:
            errors = [e.message for e in validator.iter_errors(json.loads(json.dumps(raw, default=str)))]
            assert errors == [], (path.name, errors)
    raw = yaml.safe_load((ROOT / "config/examples/guangdong_ci.yaml").read_text())
    raw["sites"][0]["units"][0]["energy_kwhh"] = 1
    assert list(validator.iter_errors(json.loads(json.dumps(raw, default=str))))
