"""A whole fleet of simulated batteries, one vectorized step at a time, for the backtest.

``simulators.battery.step`` integrates one battery at a net power; a backtest
steps hundreds of units through a year, and a unit that holds regulation both
charges and discharges within an interval (time-sharing: deployment moves it
around its base point). So the step here takes the interval's mean charge and
discharge power separately and integrates the same energy balance
(docs/formulation.md):

    soc_kwh' = soc_kwh·(1 − σ·Δt) + (η_ch·ch − dis/η_dis)·Δt

The window clamp comes from ``vpp.physics.soc_power_limits`` (the dispatcher's
formula); what does not fit is cut from charging (too full) or discharging
(too empty). On top of the rating the battery management system tapers power
near full and empty (``taper_band``), which the unit reports in its telemetry
as its allowed power, the way a real BMS does.

Also here: what a backtest can do to a unit besides dispatch it — measurement
noise on the SoC it reports, and forced outages drawn with a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from vpp.fleet import Fleet
from vpp.physics import soc_power_limits


@dataclass(frozen=True)
class FleetPhysics:
    energy_kwh: np.ndarray  # (U,)
    max_charge_kw: np.ndarray
    max_discharge_kw: np.ndarray
    soc_min: np.ndarray  # fractions
    soc_max: np.ndarray
    eta_charge: np.ndarray
    eta_discharge: np.ndarray
    self_discharge_per_h: np.ndarray
    taper_band: float = 0.0  # SoC distance from the window edge over which power tapers (0 = no taper)
    taper_floor: float = 0.2  # share of rated power left at the edge itself

    @classmethod
    def of(cls, fleet: Fleet, taper_band: float = 0.0, taper_floor: float = 0.2) -> FleetPhysics:
        col = lambda name: np.array([float(getattr(u, name)) for u in fleet.units])
        return cls(
            col("energy_kwh"), col("max_charge_kw"), col("max_discharge_kw"), col("soc_min"), col("soc_max"),
            col("eta_charge"), col("eta_discharge"), col("self_discharge_per_h"), taper_band, taper_floor,
        )

    def bms_limits(self, soc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(charge_kw, discharge_kw) the BMS allows at ``soc``: the rating, tapered linearly inside
        ``taper_band`` of the window edge down to ``taper_floor`` × rating at the edge."""
        if self.taper_band <= 0:
            return self.max_charge_kw.copy(), self.max_discharge_kw.copy()
        to_full = np.clip((self.soc_max - soc) / self.taper_band, 0.0, 1.0)
        to_empty = np.clip((soc - self.soc_min) / self.taper_band, 0.0, 1.0)
        floor = self.taper_floor
        return self.max_charge_kw * (floor + (1 - floor) * to_full), self.max_discharge_kw * (floor + (1 - floor) * to_empty)


@dataclass(frozen=True)
class StepResult:
    soc: np.ndarray  # (U,) fraction at the end of the step
    charge_kw: np.ndarray  # (U,) applied mean charge power (AC, ≥ 0)
    discharge_kw: np.ndarray  # (U,) applied mean discharge power (AC, ≥ 0)
    self_discharge_kwh: np.ndarray  # (U,) energy lost to self-discharge during the step


def step(phys: FleetPhysics, soc: np.ndarray, charge_kw: np.ndarray, discharge_kw: np.ndarray, dt_h: float, factor: np.ndarray | None = None) -> StepResult:
    """Apply mean ``charge_kw`` and ``discharge_kw`` for ``dt_h`` hours, within the BMS limits × ``factor``
    (derates, outages) and the SoC window."""
    bms_ch, bms_dis = phys.bms_limits(soc)
    if factor is not None:
        bms_ch, bms_dis = bms_ch * factor, bms_dis * factor
    ch = np.clip(charge_kw, 0.0, bms_ch)
    dis = np.clip(discharge_kw, 0.0, bms_dis)
    room_ch, room_dis = soc_power_limits(
        soc,
        energy_kwh=phys.energy_kwh,
        soc_min=phys.soc_min,
        soc_max=phys.soc_max,
        eta_charge=phys.eta_charge,
        eta_discharge=phys.eta_discharge,
        self_discharge_per_h=phys.self_discharge_per_h,
        dt_h=dt_h,
    )
    # net energy into the cells, against the room the window leaves (in the same cell-side kWh)
    net_kwh = (phys.eta_charge * ch - dis / phys.eta_discharge) * dt_h
    over = np.maximum(net_kwh - room_ch * phys.eta_charge * dt_h, 0.0)
    under = np.maximum(-net_kwh - room_dis / phys.eta_discharge * dt_h, 0.0)
    ch = np.maximum(ch - over / (phys.eta_charge * dt_h), 0.0)
    dis = np.maximum(dis - under * phys.eta_discharge / dt_h, 0.0)
    stored = soc * phys.energy_kwh
    lost = stored * phys.self_discharge_per_h * dt_h
    end_kwh = stored - lost + (phys.eta_charge * ch - dis / phys.eta_discharge) * dt_h
    return StepResult(end_kwh / phys.energy_kwh, ch, dis, lost)


def measured_soc(soc: np.ndarray, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    """The SoC a unit reports: true SoC plus Gaussian noise (std as a SoC fraction), kept in [0, 1]."""
    if noise_std <= 0:
        return soc
    return np.clip(soc + rng.normal(0.0, noise_std, soc.shape), 0.0, 1.0)


@dataclass(frozen=True, slots=True)
class Outage:
    """A forced outage: the unit answers nothing and delivers nothing in [start, end)."""

    unit_id: str
    start: pd.Timestamp
    end: pd.Timestamp


def random_outages(unit_ids: tuple[str, ...], start: pd.Timestamp, end: pd.Timestamp, rate_per_year: float, mean_hours: float, seed: int) -> tuple[Outage, ...]:
    """Outages as a Poisson process per unit (``rate_per_year``) with exponential durations (``mean_hours``).

    Drawn once per run from ``seed`` in unit order, so the same seed gives the same outages
    whatever the worker or machine.
    """
    if rate_per_year <= 0:
        return ()
    rng = np.random.default_rng(seed)
    span_h = (end - start).total_seconds() / 3600.0
    out = []
    for uid in unit_ids:
        t_h = 0.0
        while True:
            t_h += rng.exponential(8760.0 / rate_per_year)
            if t_h >= span_h:
                break
            length_h = rng.exponential(mean_hours)
            out.append(Outage(uid, start + pd.Timedelta(hours=t_h), start + pd.Timedelta(hours=t_h + length_h)))
            t_h += length_h
    return tuple(out)


def outage_mask(outages: tuple[Outage, ...], unit_ids: tuple[str, ...], index: pd.DatetimeIndex, step: pd.Timedelta) -> np.ndarray:
    """(U, T) True where a unit is out at any time during the interval."""
    mask = np.zeros((len(unit_ids), len(index)), bool)
    pos = {u: i for i, u in enumerate(unit_ids)}
    for o in outages:
        mask[pos[o.unit_id]] |= np.asarray((index < o.end) & (index + step > o.start))
    return mask
