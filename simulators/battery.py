"""Battery physics for simulated devices: the energy balance of docs/formulation.md, one step at a time.

``soc' = soc·(1 − σ·Δt) + (η_ch·ch − dis/η_dis)·Δt / E`` with one-way
efficiencies and self-discharge; the power a step can apply is clamped to the
rating and to what keeps SoC inside its window at the end of the step, so a
device simulator never needs its own notion of "full" or "empty".
Sign: power is positive when discharging, negative when charging.
"""

from __future__ import annotations

from dataclasses import dataclass

from vpp.physics import soc_power_limits


@dataclass(frozen=True, slots=True)
class BatteryParams:
    energy_kwh: float
    max_charge_kw: float  # AC side, positive number
    max_discharge_kw: float
    soc_min: float = 0.0  # fraction of energy_kwh
    soc_max: float = 1.0
    eta_charge: float = 0.95  # stored = eta_charge × drawn
    eta_discharge: float = 0.95  # delivered = eta_discharge × released
    self_discharge_per_h: float = 0.0  # fraction of stored energy lost per hour


@dataclass(frozen=True, slots=True)
class BatteryStep:
    soc: float  # at the end of the step
    power_kw: float  # applied during the step, after clamping


def power_limits(params: BatteryParams, soc: float, dt_h: float) -> tuple[float, float]:
    """(max_charge_kw, max_discharge_kw) that keep SoC inside its window at the end of a ``dt_h`` step."""
    max_charge, max_discharge = soc_power_limits(
        soc,
        energy_kwh=params.energy_kwh,
        soc_min=params.soc_min,
        soc_max=params.soc_max,
        eta_charge=params.eta_charge,
        eta_discharge=params.eta_discharge,
        self_discharge_per_h=params.self_discharge_per_h,
        dt_h=dt_h,
    )
    return min(float(max_charge), params.max_charge_kw), min(float(max_discharge), params.max_discharge_kw)


def step(params: BatteryParams, soc: float, power_kw: float, dt_h: float) -> BatteryStep:
    """Apply ``power_kw`` (clamped to what the battery can do) for ``dt_h`` hours."""
    max_charge, max_discharge = power_limits(params, soc, dt_h)
    applied = _clamp(power_kw, -max_charge, max_discharge)
    retained = soc * (1.0 - params.self_discharge_per_h * dt_h)
    if applied >= 0:
        delta_kwh = -applied * dt_h / params.eta_discharge
    else:
        delta_kwh = -applied * dt_h * params.eta_charge
    return BatteryStep(soc=retained + delta_kwh / params.energy_kwh, power_kw=applied)


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)
