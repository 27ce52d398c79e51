"""Market net revenue per year, ``C_market``: from the cycle formula or from a simulation.

``C_market`` is what the transfer factor λ moves between the station and the
capacity payers, so each source states how it was made up (and, for a
simulation, how it was annualized and scaled) for the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from vpp.economics.case import PeakShavingMarket, SimulationSummary, SpotMarket, Station

class ScaleBy(StrEnum):
    """How simulated revenue is carried from the simulated fleet to the station's size."""

    ENERGY = "energy"  # arbitrage revenue grows with the kWh that can be shifted
    POWER = "power"  # regulation and capacity revenue grow with the kW offered
    NONE = "none"


@dataclass(frozen=True, slots=True)
class MarketRevenue:
    """One year of market results in the case currency; ``net_annual`` is ``C_market``."""

    source: Literal["spot", "peak_shaving", "simulation"]
    streams_annual: float  # energy (or all simulated streams) before O&M
    regulation_annual: float  # frequency regulation from the case (inside streams_annual for a simulation)
    om_annual: float  # station O&M, subtracted once, here
    net_annual: float
    notes: tuple[str, ...] = ()


def _revenue(source: str, streams: float, regulation: float, station: Station, notes: tuple[str, ...]) -> MarketRevenue:
    om = station.annual_om
    return MarketRevenue(source, streams, regulation, om, streams + regulation - om, notes)


def cycle_revenue(
    station: Station, market: SpotMarket | PeakShavingMarket, cycles_per_year: float, spread_per_kwh: float
) -> MarketRevenue:
    """``N·E·spread·η − C_om`` plus regulation, for any N and spread (the sensitivity varies both)."""
    streams = cycles_per_year * station.energy_kwh * spread_per_kwh * station.round_trip_efficiency
    regulation = sum((product.annual_revenue for product in market.regulation), 0.0)
    return _revenue(market.source, streams, regulation, station, ())


def case_market_revenue(station: Station, market: SpotMarket | PeakShavingMarket) -> MarketRevenue:
    """``C_spot`` or ``C_shave`` (plus regulation) at the case's own cycle count and spread."""
    return cycle_revenue(station, market, market.cycles_per_year, market.spread_per_kwh)


def simulated_market_revenue(station: Station, summary: SimulationSummary, scale_by: ScaleBy) -> MarketRevenue:
    """Annualize the simulated net revenue (× 365 / period days), scale it to the station, subtract O&M.

    The simulator's ``net_revenue`` already holds every stream it simulated
    (regulation included) net of degradation but not of O&M, so the case's
    regulation products are not added and O&M is subtracted exactly once.
    """
    annualization = 365 / summary.period_days
    fleet = summary.fleet
    scale = {
        ScaleBy.ENERGY: station.energy_kwh / fleet.energy_kwh,
        ScaleBy.POWER: station.power_kw / fleet.power_kw,
        ScaleBy.NONE: 1.0,
    }[scale_by]
    notes = [
        f"market revenue from {summary.source}: net {summary.net_revenue:,.0f} {summary.currency} over "
        f"{summary.period_days:g} days ({summary.start.isoformat()} to {summary.end.isoformat()}), "
        f"annualized × {annualization:.4g} (365 / {summary.period_days:g} days)",
    ]
    if (fleet.power_kw, fleet.energy_kwh) != (station.power_kw, station.energy_kwh):
        how = "not scaled (scale by: none)" if scale_by == ScaleBy.NONE else f"scaled × {scale:.4g} by {scale_by}"
        notes.append(
            f"simulated fleet {fleet.power_kw:,.0f} kW / {fleet.energy_kwh:,.0f} kWh differs from the station "
            f"{station.power_kw:,.0f} kW / {station.energy_kwh:,.0f} kWh: {how}"
        )
    notes.append("the simulation's net revenue excludes O&M; station O&M is subtracted once, here")
    return _revenue("simulation", summary.net_revenue * annualization * scale, 0.0, station, tuple(notes))
