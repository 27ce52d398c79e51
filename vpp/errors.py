"""Typed errors whose message is the one line a user sees.

Every user-facing problem names *where* (file, field path, time), the offending
*value* and what was *expected*, so an operator can fix it without reading a
traceback. The CLI prints ``str(error)`` and exits non-zero.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


class VppError(Exception):
    """Base class: ``str(err)`` is a complete one-line user message."""


class InputError(VppError):
    """Bad user input: a config field, a data file cell, an override, a telemetry value."""

    def __init__(self, where: str, field: str, value: Any, expected: str) -> None:
        self.where = where
        self.field = field
        self.value = value
        self.expected = expected
        # long strings are cut in the middle: the end of a path (the file name) is what identifies it
        shown = repr(value if not isinstance(value, str) or len(value) <= 160 else f"{value[:40]}…{value[-110:]}")
        super().__init__(f"{where}: {field}: got {shown}; expected {expected}")


class InputErrors(VppError):
    """Several input problems found in one pass (``vpp validate`` reports them all)."""

    def __init__(self, errors: list[InputError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class SolverError(VppError):
    """The solver failed for a reason other than infeasibility (time limit without a solution, numerical trouble)."""


class AdapterError(VppError):
    """A device could not be reached or answered something unusable."""


def from_validation_error(err: ValidationError, where: str, skip: frozenset[str] = frozenset()) -> InputError | InputErrors:
    """One ``InputError`` per pydantic error, the field as a path like ``sites[0].units[2].energy_kwh``.

    ``skip`` drops location parts that are only discriminated-union tags, which a
    user never wrote in the file.
    """
    errors = []
    for detail in err.errors(include_url=False):
        loc = [part for part in detail["loc"] if part not in skip]
        field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".") or "(top level)"
        value = detail.get("input")
        expected = detail["msg"].removeprefix("Value error, ").removeprefix("Input should be ")
        if detail["type"] == "missing":
            value, expected = None, "a value (the field is required)"
        elif detail["type"] == "extra_forbidden":
            expected = "no such field (check the spelling)"
        elif detail["type"] == "timezone_aware":
            expected = "a timestamp with a UTC offset"
        errors.append(InputError(where, field, value, expected))
    return errors[0] if len(errors) == 1 else InputErrors(errors)

