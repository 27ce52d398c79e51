"""The one place that decides whether a number from a device may be passed on.

A value that is not finite, outside its physical range or beyond the unit's
rating becomes ``None`` ("missing"): the dispatcher takes a unit with missing
SoC or power out of dispatch instead of acting on a made-up number.
"""

from __future__ import annotations

import math

RATING_TOLERANCE = 1.1  # measured power may exceed the nameplate this much before it is implausible


def soc_or_none(soc: float | None) -> float | None:
    """SoC as a fraction; anything outside 0..1 is missing."""
    if soc is None or not math.isfinite(soc) or not 0.0 <= soc <= 1.0:
        return None
    return soc


def power_or_none(power_kw: float | None, rating_kw: float | None) -> float | None:
    """Signed AC power; beyond the rating (when known) it is missing."""
    if power_kw is None or not math.isfinite(power_kw):
        return None
    if rating_kw is not None and abs(power_kw) > rating_kw * RATING_TOLERANCE:
        return None
    return power_kw


def limit_or_none(limit_kw: float | None, rating_kw: float | None) -> float | None:
    """An allowed charge/discharge power: a non-negative number within the rating."""
    if limit_kw is None or limit_kw < 0:
        return None
    return power_or_none(limit_kw, rating_kw)
