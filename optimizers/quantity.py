"""A non-negative quantity offered in blocks: ``q = increment · n`` (integer n) with an optional
minimum, ``q ∈ {0} ∪ [min, max]``.

Fleet bids per product and DR commitments follow the same market rule, so both
use this one helper.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizers.lp import CONTINUOUS, INTEGER, SEMI_CONTINUOUS, SEMI_INTEGER, LinearModel


@dataclass(frozen=True)
class Quantity:
    cols: np.ndarray  # the column(s) holding n (or q itself when continuous)
    scale: float  # q = scale · x[cols]

    def terms(self, sign: float = 1.0) -> tuple[float, np.ndarray]:
        return (sign * self.scale, self.cols)

    def value(self, x: np.ndarray) -> np.ndarray:
        return self.scale * x[self.cols]


@dataclass(frozen=True)
class Total:
    """A quantity that is no column of its own: the sum of ``parts`` (column blocks) over their
    first axis, e.g. a bid without a block rule is the sum of the units' allocations."""

    parts: tuple[np.ndarray, ...]

    def value(self, x: np.ndarray) -> np.ndarray:
        return sum(x[cols].sum(axis=0) for cols in self.parts)


def add_quantity(
    lm: LinearModel,
    name: str,
    shape: tuple[int, ...],
    *,
    increment: float,
    minimum: float,
    maximum: np.ndarray,
    mandatory: bool = False,
    fixed: np.ndarray | None = None,
    labels: tuple = (),
) -> Quantity:
    """``maximum`` (broadcast to ``shape``) bounds q; 0 blocks it. A mandatory quantity must meet ``minimum``.

    The rule "0, or at least the minimum, in whole increments" is exactly a HiGHS
    semi-integer column (semi-continuous without increments): no extra binary or rows.
    ``fixed`` (NaN = free) pins q where it is already decided (a submitted bid) through the
    column's bounds, so a model that is re-solved with other pins keeps its structure (and basis).
    """
    maximum = np.broadcast_to(np.asarray(maximum, float), shape)
    unit = increment if increment > 0 else 1.0
    top = np.floor(maximum / unit + 1e-9) if increment > 0 else maximum
    low = np.ceil(minimum / unit - 1e-9) if increment > 0 else minimum
    if mandatory:
        kind = INTEGER if increment > 0 else CONTINUOUS
        lb = low
    elif minimum > 0:
        kind = SEMI_INTEGER if increment > 0 else SEMI_CONTINUOUS
        lb = low
        top = np.where(top >= low, top, 0.0)  # cannot reach the minimum: offer nothing
    else:
        kind = INTEGER if increment > 0 else CONTINUOUS
        lb = 0.0
    if fixed is not None:
        pinned = np.isfinite(fixed)
        lb = np.where(pinned, np.nan_to_num(fixed) / unit, lb)
        top = np.where(pinned, np.nan_to_num(fixed) / unit, top)
    cols = lm.var(f"{name}.blocks" if increment > 0 else name, shape, lb, top, kind=kind, labels=labels)
    return Quantity(cols, unit)
