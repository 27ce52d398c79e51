"""Operator overrides: time-windowed instructions that bind both the optimizer and the dispatcher.

Every override carries an author and a reason because operators must be able
to answer "who did this and why" after the fact (the daemon audits them).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd


class OverrideKind(enum.Enum):
    FORCE_POWER = "force_power"  # unit or site battery power fixed to value_kw (+ discharge)
    UNIT_OUT = "unit_out"  # maintenance: no power, no reserves
    SOC_FLOOR = "soc_floor"  # value = SoC fraction
    SOC_CEILING = "soc_ceiling"
    BLOCK_PRODUCT = "block_product"  # target = product id: no bids
    FLEET_EXPORT_CAP = "fleet_export_cap"  # value_kw caps the fleet's summed grid export
    FLEET_IMPORT_CAP = "fleet_import_cap"


@dataclass(frozen=True, slots=True)
class Override:
    kind: OverrideKind
    start: datetime
    end: datetime
    author: str
    reason: str
    unit_id: str | None = None
    site_id: str | None = None
    product_id: str | None = None
    value: float | None = None  # kW for powers and caps, fraction for SoC floor/ceiling

    def active_mask(self, index: pd.DatetimeIndex) -> np.ndarray:
        """Intervals overlapping [start, end)."""
        step = index[1] - index[0] if len(index) > 1 else pd.Timedelta(hours=1)
        return np.asarray((index < pd.Timestamp(self.end)) & (index + step > pd.Timestamp(self.start)))
