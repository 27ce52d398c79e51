"""Typed errors whose message is the one line a user sees.

Every user-facing problem names *where* (file, field path, time), the offending
*value* and what was *expected*, so an operator can fix it without reading a
traceback. The CLI prints ``str(error)`` and exits non-zero.
"""

from __future__ import annotations

from typing import Any


class VppError(Exception):
    """Base class: ``str(err)`` is a complete one-line user message."""


class InputError(VppError):
    """Bad user input: a config field, a data file cell, an override, a telemetry value."""

    def __init__(self, where: str, field: str, value: Any, expected: str) -> None:
        self.where = where
        self.field = field
        self.value = value
        self.expected = expected
        shown = repr(value) if not isinstance(value, str) else repr(value[:80])
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
