"""How much power keeps a battery's SoC inside its window over a given time: one formula, shared.

The simulated device (``simulators.battery``) and the dispatcher's SoC clamp
(``vpp.dispatch``) must agree exactly on "full" and "empty", or the simulator
would clip what the dispatcher thought was safe. Both call this function; it
works on floats and on numpy arrays alike.
Energy balance (docs/formulation.md): ``soc' = soc·(1 − σ·Δt) + (η_ch·ch − dis/η_dis)·Δt / E``.
"""

from __future__ import annotations

import numpy as np


def soc_power_limits(
    soc: float | np.ndarray,
    *,
    energy_kwh: float | np.ndarray,
    soc_min: float | np.ndarray,
    soc_max: float | np.ndarray,
    eta_charge: float | np.ndarray,
    eta_discharge: float | np.ndarray,
    self_discharge_per_h: float | np.ndarray,
    dt_h: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(max_charge_kw, max_discharge_kw), both ≥ 0, that end a ``dt_h`` step inside [soc_min, soc_max].

    Not clipped to the power rating: callers take the minimum with whatever
    rating (nameplate, derate, device-reported) applies to them.
    """
    retained = np.asarray(soc) * (1.0 - np.asarray(self_discharge_per_h) * dt_h)
    headroom_kwh = (np.asarray(soc_max) - retained) * energy_kwh
    available_kwh = (retained - np.asarray(soc_min)) * energy_kwh
    max_charge = np.maximum(headroom_kwh / (np.asarray(eta_charge) * dt_h), 0.0)
    max_discharge = np.maximum(available_kwh * np.asarray(eta_discharge) / dt_h, 0.0)
    return max_charge, max_discharge
