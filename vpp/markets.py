"""Market products and their rules.

Spot energy is a price series on the ``Market``; a TOU tariff lives on the
``Site``; reserves (regulation up/down, spinning reserve) are
``AncillaryProduct``s bid by the fleet as a whole; demand-response events are
``DemandResponseEvent``s. Prices are per MWh for energy and per MW **per hour**
for capacity (the optimizer multiplies by the interval length).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, time

import pandas as pd

from vpp.timeseries import Profile


class ProductKind(enum.Enum):
    REGULATION_UP = "regulation_up"
    REGULATION_DOWN = "regulation_down"
    SPINNING_RESERVE = "spinning_reserve"

    @property
    def is_up(self) -> bool:
        """Up products deliver more export (discharge more / charge less) when called."""
        return self is not ProductKind.REGULATION_DOWN

    @property
    def deployment_sign(self) -> float:
        """+1 for up, −1 for down: which way a deployment moves a unit's power in the one sign
        convention (+ discharge / export). Every use of deployment (the model's energy balance and
        value, the revenue streams, the backtest's physics) takes its sign from here."""
        return 1.0 if self.is_up else -1.0


@dataclass(frozen=True, slots=True)
class GateClosure:
    """Bids for delivery day D close at ``time`` local on D - ``days_before`` (day-ahead style),
    or ``lead_min`` minutes before each interval (real-time style)."""

    days_before: int | None = None
    time: time | None = None
    lead_min: float | None = None

    def closes_at(self, interval_start: pd.Timestamp, timezone: str) -> pd.Timestamp:
        if self.lead_min is not None:
            return interval_start - pd.Timedelta(minutes=self.lead_min)
        local = interval_start.tz_convert(timezone).normalize() - pd.Timedelta(days=self.days_before or 0)
        assert self.time is not None
        return local + pd.Timedelta(hours=self.time.hour, minutes=self.time.minute)


@dataclass(frozen=True, slots=True)
class AncillaryProduct:
    id: str
    kind: ProductKind
    capacity_price_per_mw_h: Profile  # per MW of capacity per hour held
    min_bid_kw: float = 0.0
    increment_kw: float = 0.0  # 0 = any quantity
    sustain_h: float = 1.0  # committed capacity must be deliverable this long
    deployment_fraction: float = 0.0  # expected energy delivered per kW-h committed
    mileage_price_per_mw: Profile | None = None
    mileage_per_mw_h: float = 0.0  # expected mileage (MW moved) per MW committed per hour
    performance_score: float = 1.0
    gate_closure: GateClosure | None = None
    eligible_sites: frozenset[str] | None = None  # None = all sites


@dataclass(frozen=True, slots=True)
class DemandResponseEvent:
    """A called event: the sites reduce net import below their baseline by the committed kW over [start, end)."""

    id: str
    start: datetime
    end: datetime
    site_ids: frozenset[str]
    capacity_price_per_kw: float  # per kW committed, per event
    energy_price_per_mwh: float = 0.0  # per MWh of committed reduction delivered
    min_kw: float = 0.0
    increment_kw: float = 0.0
    baseline: str = "no_battery"  # no_battery: forecast load - pv; fixed: baseline_kw
    baseline_kw: float | None = None
    shortfall_penalty_per_mwh: float = 0.0
    mandatory: bool = False

    @property
    def duration_h(self) -> float:
        return (pd.Timestamp(self.end) - pd.Timestamp(self.start)).total_seconds() / 3600.0


@dataclass(frozen=True, slots=True)
class Market:
    currency: str
    energy_price_per_mwh: Profile | None = None  # spot price for wholesale sites (and reserve deployment)
    products: tuple[AncillaryProduct, ...] = ()
    dr_events: tuple[DemandResponseEvent, ...] = ()
