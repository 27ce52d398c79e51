"""Typed errors whose message is the one line a user sees.

Every user-facing problem names *where* (file, field path, time), the offending
*value* and what was *expected*, so an operator can fix it without reading a
traceback. The CLI prints ``str(error)`` and exits non-zero.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


class VppError(Exception):
    """Base class: ``str(err)`` is a complete one-line user message."""


class InputError(VppError):
    """Bad user input: a config field, a data file cell, an override, a telemetry value.

    ``value=PROBLEM`` when ``expected`` already says the whole problem (a rule across fields, such as
    an inverted SoC window): the message is then ``where: field: expected``.
    """

    def __init__(self, where: str, field: str, value: Any, expected: str) -> None:
        self.where = where
        self.field = field
        self.value = value
        self.expected = expected
        if value is PROBLEM:
            super().__init__(f"{where}: {field}: {expected}")
        elif value is MISSING:
            super().__init__(f"{where}: {field}: missing; expected {expected}")
        else:
            super().__init__(f"{where}: {field}: got {show(value)}; expected {expected}")


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


PROBLEM = _Marker("PROBLEM")  # the expected text is the whole problem
MISSING = _Marker("MISSING")  # a required field is absent


def show(value: Any) -> str:
    """A value as a person reads it: NaN not ``np.float64(nan)``, numbers without numpy wrappers,
    long strings cut in the middle (the end of a path, the file name, is what identifies it)."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        value = value.item()  # numpy scalar
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 160 else f"{value[:40]}…{value[-110:]}")
    if isinstance(value, (dict, list, tuple)):
        text = repr(value)
        return text if len(text) <= 120 else f"{text[:100]}… ({len(value)} items)"
    return repr(value)


class InputErrors(VppError):
    """Several input problems found in one pass (``vpp validate`` reports them all)."""

    def __init__(self, errors: list[InputError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class SolverError(VppError):
    """The solver failed for a reason other than infeasibility (time limit without a solution, numerical trouble)."""


class AdapterError(VppError):
    """A device could not be reached or answered something unusable."""


def from_validation_error(err: ValidationError, where: str, skip: frozenset[str] = frozenset(), data: Any = None) -> InputError | InputErrors:
    """One ``InputError`` per pydantic error, the field as a path like ``sites[depot].units[ss-2].energy_kwh``.

    ``data`` is what was validated: list items that have an ``id`` are named by it, as the user
    wrote them, instead of by position. ``skip`` drops location parts that are only
    discriminated-union tags, which a user never wrote in the file.
    """
    errors = []
    for detail in err.errors(include_url=False):
        field = field_path(detail["loc"], data, skip)
        value = detail.get("input")
        kind = detail["type"]
        expected = _plain(detail)
        if kind == "missing":
            value, expected = MISSING, "a value (the field is required)"
        elif kind == "extra_forbidden":
            expected = "no such field (check the spelling)"
        elif kind == "timezone_aware":
            expected = "a timestamp with a UTC offset"
        elif isinstance(value, (dict, list)) and kind in ("value_error", "assertion_error"):
            value = PROBLEM  # a rule across fields: the message names them; the whole block is noise
        errors.append(InputError(where, field, value, expected))
    return errors[0] if len(errors) == 1 else InputErrors(errors)


def field_path(loc: tuple[Any, ...], data: Any = None, skip: frozenset[str] = frozenset()) -> str:
    """``("sites", 0, "units", 2, "energy_kwh")`` as ``sites[depot].units[ss-2].energy_kwh`` where the
    items carry ids, else ``sites[0].units[2].energy_kwh``."""
    out = ""
    node = data
    for part in loc:
        if part in skip:
            continue
        if isinstance(part, int):
            item = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            ident = item.get("id") if isinstance(item, dict) else None
            out += f"[{ident}]" if isinstance(ident, (str, int)) and not isinstance(ident, bool) else f"[{part}]"
            node = item
        else:
            out += f".{part}"
            node = node.get(part) if isinstance(node, dict) else None
    return out.lstrip(".") or "(top level)"


def _plain(detail: dict[str, Any]) -> str:
    """pydantic's message in the words of the file's author."""
    kind, msg, ctx = detail["type"], detail["msg"], detail.get("ctx") or {}
    if kind == "too_short" and ctx.get("min_length") == 1:
        name = next((str(p) for p in reversed(detail["loc"]) if isinstance(p, str)), "item")
        noun = name[:-1] if name.endswith("s") else name
        return f"at least one {noun.replace('_', ' ')}"
    if kind in ("float_parsing", "float_type"):
        return "a number"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "a whole number"
    if kind == "finite_number":
        return "a finite number (no NaN or infinity)"
    if kind in ("bool_parsing", "bool_type"):
        return "true or false"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "a mapping of fields (key: value lines)"
    if kind == "list_type":
        return "a list"
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ").removeprefix("Input should be ")
