"""The config reference (docs/config.md) and JSON Schema, generated from the pydantic models.

The models are the one description of what a config may contain: `vpp config schema` prints their JSON
Schema for editors, `vpp config reference` renders docs/config.md from the same fields, with each
field's type, allowed values, default, description and an example taken from the bundled example
configs. A test keeps docs/config.md equal to the rendering, and fails when a field has no description.
"""

from __future__ import annotations

import datetime as dt
import enum
import inspect
import json
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import annotated_types as at
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

EXAMPLES = Path(__file__).resolve().parents[1] / "config" / "examples"


@dataclass(frozen=True, slots=True)
class Section:
    """One model as it appears in a file: its YAML path (``sites[].units[]``) and the model."""

    path: str
    model: type[BaseModel]


def file_models() -> dict[str, type[BaseModel]]:
    """The models of each kind of file a user writes, by the name ``vpp config schema --kind`` takes."""
    from vpp.config import ConfigModel, OverridesFileModel

    return {"config": ConfigModel, "overrides": OverridesFileModel}


def schema(kind: str = "config") -> dict[str, Any]:
    """JSON Schema of a file kind (editors validate YAML with it: ``# yaml-language-server: $schema=...``)."""
    return file_models()[kind].model_json_schema()


def sections(model: type[BaseModel], path: str = "") -> Iterator[Section]:
    """Every model reachable from ``model``, depth first, each once, with the path it first appears at."""
    seen: set[type[BaseModel]] = set()

    def walk(m: type[BaseModel], at_path: str) -> Iterator[Section]:
        if m in seen:
            return
        seen.add(m)
        yield Section(at_path, m)
        for name, info in m.model_fields.items():
            for sub, suffix in _submodels(info.annotation):
                yield from walk(sub, f"{at_path}.{name}{suffix}".lstrip("."))

    yield from walk(model, path)


def undescribed(model: type[BaseModel]) -> list[str]:
    """``path.field`` of every field without a description (the reference would leave a user guessing)."""
    return [f"{s.path or '(top)'}.{name}" for s in sections(model) for name, info in s.model.model_fields.items() if not (info.description or "").strip()]


def reference() -> str:
    """docs/config.md, whole."""
    examples = _examples()
    out = [_INTRO]
    for kind, model in file_models().items():
        out.append(f"\n## {'The config file' if kind == 'config' else 'The overrides file'}\n")
        for s in sections(model):
            title = s.path or "(top level)"
            doc = inspect.cleandoc(s.model.__doc__ or "") if s.model.__doc__ and s.model.__doc__ != BaseModel.__doc__ else ""
            out.append(f"\n### `{title}`{f' — {s.model.__name__}' if s.path else ''}\n")
            if doc and "A base class" not in doc:
                out.append(f"\n{doc.splitlines()[0]}\n")
            out.append("\n| field | type | default | description | example |\n|---|---|---|---|---|\n")
            for name, info in s.model.model_fields.items():
                key = info.alias or name
                example = examples.get(f"{kind}:{s.path}.{key}".replace(":.", ":"))
                out.append(f"| `{key}` | {_type(info.annotation, info)} | {_default(info)} | {_cell(info.description or '')} | {example or ''} |\n")
    return "".join(out)


def _examples() -> dict[str, str]:
    """``kind:path.field`` → the first value the bundled example files give it, as ``value`` (file)."""
    from vpp.validate import kind_of

    keyed_by_name = {"data": "<source>", "tariffs": "<tariff>"}  # mappings whose keys are the user's names
    found: dict[str, str] = {}

    def visit(node: Any, path: str, prefix: str, file: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                name = keyed_by_name.get(path) or ("<name>" if path.endswith(".columns") else k)
                here = f"{path}.{name}".lstrip(".")
                scalar = not isinstance(v, (dict, list)) or (isinstance(v, list) and v and all(not isinstance(x, (dict, list)) for x in v))
                if f"{prefix}:{here}" not in found and scalar:
                    found[f"{prefix}:{here}"] = f"`{_cell(json.dumps(v, ensure_ascii=False, default=str))}` ({file})"
                visit(v, here, prefix, file)
        elif isinstance(node, list):
            for item in node:
                visit(item, f"{path}[]", prefix, file)

    for path in sorted(EXAMPLES.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        kind = kind_of(raw)
        if kind in file_models():
            visit(raw, "", kind, path.name)
    return found


def _submodels(annotation: Any) -> list[tuple[type[BaseModel], str]]:
    """Models inside an annotation, with the path suffix their fields sit under ([] for list items,
    .<name> for mapping values)."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [(annotation, "")]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _submodels(args[0])
    if origin in (list, tuple):
        return [(m, f"[]{s}") for a in args if a is not Ellipsis for m, s in _submodels(a)]
    if origin is dict:
        key = "<source>" if any(getattr(a, "__name__", "") == "SourceModel" for a in args) else "<tariff>" if any(getattr(a, "__name__", "") == "TariffModel" for a in args) else "<name>"
        return [(m, f".{key}{s}") for m, s in _submodels(args[1])]
    return [x for a in args for x in _submodels(a)]


def _type(annotation: Any, info: FieldInfo | None = None) -> str:
    text = _type_name(annotation)
    bounds = []
    for meta in info.metadata if info is not None else ():
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            if isinstance(meta, getattr(at, attr.capitalize())):
                bounds.append(f"{sign} {getattr(meta, attr)}")
        if isinstance(meta, at.MinLen) and meta.min_length:
            bounds.append(f"at least {meta.min_length}")
        if isinstance(meta, at.MaxLen):
            bounds.append(f"at most {meta.max_length}")
    return _cell(text + (f" ({', '.join(bounds)})" if bounds else ""))


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "none"
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_type_name(a) for a in args))
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of names to {_type_name(args[1])}"
    if inspect.isclass(annotation):
        if issubclass(annotation, BaseModel):
            return f"block ({annotation.__name__})"
        if issubclass(annotation, enum.Enum):
            return "one of " + ", ".join(f"`{m.value}`" for m in annotation)
        if issubclass(annotation, bool):
            return "true/false"
        if issubclass(annotation, (int, float)) or annotation.__name__ == "Decimal":
            return "number" if annotation is not int else "integer"
        if issubclass(annotation, dt.datetime):
            return "time (ISO 8601)"
        if issubclass(annotation, dt.time):
            return "clock time (HH:MM)"
        if issubclass(annotation, str):
            return "text"
    return str(annotation)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.default if info.default is not PydanticUndefined else info.default_factory() if info.default_factory else None  # type: ignore[call-arg]
    if isinstance(value, BaseModel):
        return "(block defaults)"
    if value is None:
        return "none"
    if isinstance(value, enum.Enum):
        value = value.value
    return f"`{_cell(json.dumps(value, default=str, ensure_ascii=False))}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_INTRO = """# Config reference

Generated from the config's pydantic models by `vpp config reference > docs/config.md`; do not edit by hand
(a test fails when this file and the models disagree, or when a field has no description). `vpp config
schema` prints the same models as JSON Schema: editors that understand
`# yaml-language-server: $schema=vpp-config.schema.json` then check a config as it is typed.

Examples in the last column are the first value the bundled files in `config/examples/` give a field.

## Conventions

- **Units are in the names**: `_kw`, `_kwh`, `_per_mwh` (currency per MWh), `_per_kwh`, `_per_mw_h` (capacity
  price: currency per MW per hour), `_h`, `_min`, `_s`, `_pct` (percent); `soc` values are fractions 0..1.
- **Sign**: power is positive when a unit discharges or a site exports, negative when charging or importing.
- **Money** is in major units of the config's `currency` (8.5 is 8.50 CNY); the ledger keeps integer minor units.
- **Time**: intervals are labelled by their start. A time without a UTC offset is in the config's
  `timezone`; `2020-08-18T00:00+08:00` keeps its offset. Durations typed on the command line need a unit
  (`24h`, `90min`, `2d`) and must be a whole number of the config's intervals.

## Data blocks: where series come from

Prices, loads and PV come from CSV files named under `data:`. Each block names one file, the column that
holds each interval's **start** time (`time_column`), and the columns it provides, each with its unit:

```yaml
data:
  caiso:                                   # the source's name
    file: ../data/caiso_2020_hourly_energy_as.csv
    time_column: timestamp_start           # interval starts
    timezone: Etc/GMT+8                    # naive timestamps in the file are in this zone
    columns:
      da: {column: da_lmp_usd_per_mwh, unit: per_mwh}
      load: {column: site_load_kw, unit: kw, scale: 0.5}
```

A series is then referenced as `<source>.<name>` (`caiso.da`), or `{series: caiso.load, scale: 0.8}`.

- **Timezones**: naive timestamps in a file are read in the block's `timezone`, or, when the block has
  none, in the config's `timezone` (never silently as UTC). Timestamps that carry an offset keep it. Local
  times that do not exist or repeat at a daylight-saving change are refused: export such data in UTC or a
  fixed-offset zone such as `Etc/GMT-1` (which is UTC+1).
- **Column units** convert once, on loading, to the engine's units: energy prices `per_mwh` or `per_kwh`
  (× 1,000), capacity prices `per_mw_h` or `per_kw_h`, powers `kw` or `mw` (× 1,000), and `kw_per_kw`, a
  profile per kW of rating that `scale` turns into kW. A price whose typical magnitude is about 1,000 times
  off its declared unit is reported as a named `WARNING` (per-kWh prices labelled `per_mwh`).
- **Checks**: every named column must exist; timestamps must parse, be unique, strictly increasing and on
  a regular step; every cell must be a finite number; a file needs at least 2 data rows. `delimiter` and
  `decimal` read European exports (`delimiter: ";"`, `decimal: ","`); a decimal comma in a file read with a
  decimal point is an error, never a truncated number.
- Data at another resolution than `interval_min` is step-held (coarser) or averaged (finer) onto the
  intervals; data must cover the whole horizon (a price is never extrapolated).
"""
