"""The site control law: from a live grid meter to the batteries' power, one meter cycle. Pure numpy, no I/O.

The plan (the dispatcher's setpoints) stays the target; this law only takes off
what the site's connection requires now, in priority order (OpenEMS-style: a
later step never loosens an earlier one):

1. **base load measured**: ``base = Σ battery power − meter export`` (load − PV behind the meter;
   units we do not command are inside the meter reading and so inside ``base``);
2. **export limit**: ``Σ p ≤ base + export_limit − margin`` — discharge is cut first, then the units
   charge if PV alone exports;
3. **import limit**: ``Σ p ≥ base − import_limit + margin`` — charging is cut first, then discharge added;
4. **demand cap**: ``Σ p ≥ base − allowed_import`` where ``allowed_import`` lands the demand window's
   average on its target (``demand_import_cap_kw``), so a spike is paid for by discharging ahead of the
   window's close;
5. **meter fail-safe**: a stale or implausible meter at a site that must not export stops discharge
   (``p ≤ 0`` per unit); charging may go on as planned.

Unit limits (``lo ≤ p ≤ hi``, the dispatcher's step-4 clamps) hold over all of it: where the site
bounds cannot be met inside them the law does what it can and reports it. Sign: + discharge / export.
"""

from __future__ import annotations

import numpy as np

from vpp.dispatch import shift_toward

NONE, EXPORT, IMPORT, DEMAND, FAILSAFE = 0, 1, 2, 3, 4  # which step bound a site this cycle (``SiteCut.kind``)
CUT_REASONS = {EXPORT: "site export limit (meter)", IMPORT: "site import limit (meter)", DEMAND: "demand cap (meter)", FAILSAFE: "meter fail-safe: no discharge"}
MIN_REMAINING_S = 1.0  # the demand cap is spread over at least this much of the window (it would divide by 0 at the close)


def base_load_kw(meter_export_kw: np.ndarray, battery_kw: np.ndarray, unit_site: np.ndarray, n_sites: int) -> np.ndarray:
    """(S,) load − PV behind each meter. ``battery_kw`` NaN (a unit not commanded, power unknown) counts 0:
    whatever it does is in the meter reading, so it is part of the base the commanded units work against."""
    return np.bincount(unit_site, np.nan_to_num(battery_kw), n_sites) - meter_export_kw


def demand_import_cap_kw(target_kw: np.ndarray, energy_kwh: np.ndarray, elapsed_s: np.ndarray | float, window_s: float) -> np.ndarray:
    """(S,) the import that, held for the rest of the window, makes its average exactly ``target_kw``
    (negative when the window is already past its target: then the batteries must cover all of it and more)."""
    remaining_s = np.maximum(window_s - np.asarray(elapsed_s, dtype=float), MIN_REMAINING_S)
    return (np.asarray(target_kw, dtype=float) * window_s / 3600.0 - energy_kwh) * 3600.0 / remaining_s


def site_sum_bounds(
    base_kw: np.ndarray,
    export_limit_kw: np.ndarray,
    import_limit_kw: np.ndarray,
    export_margin_kw: np.ndarray,
    import_margin_kw: np.ndarray,
    demand_cap_kw: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sum_lo, sum_hi, lo_kind): bounds on each site's total battery power, and which step set the lower one.

    The margins are held even where that asks the batteries to charge (or discharge) a little at a site
    near its limit with the batteries idle: the margin is what covers the meter's noise and the load's
    movement within a cycle, and an idle site near zero net load is exactly where a no-export site
    exports if it is given up. Export comes first: where the import or demand bound would cross it,
    the export bound wins."""
    hi = base_kw + export_limit_kw - export_margin_kw
    lo_import = base_kw - import_limit_kw + import_margin_kw
    lo_demand = base_kw - demand_cap_kw
    kind = np.where(lo_demand > lo_import, DEMAND, IMPORT)
    lo = np.minimum(np.maximum(lo_import, lo_demand), hi)
    return lo, hi, kind


def fit_to_site(
    target_kw: np.ndarray,
    lo_kw: np.ndarray,
    hi_kw: np.ndarray,
    unit_site: np.ndarray,
    sum_lo: np.ndarray,
    sum_hi: np.ndarray,
    lo_kind: np.ndarray,
    stop_discharge: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(power (U,), kind (S,)): the targets moved just enough that each site's sum lies in [sum_lo, sum_hi].

    Going down, discharging units give up discharge (in proportion to it) before any unit is asked to
    charge; going up, charging units stop charging before any is asked to discharge. ``stop_discharge``
    (S,) caps every unit of the site at 0 W (meter fail-safe). Unit limits always hold."""
    n_sites = len(sum_lo)
    none = np.zeros(len(target_kw), dtype=bool)
    hi = np.where(stop_discharge[unit_site], np.minimum(hi_kw, 0.0), hi_kw)
    lo = np.minimum(lo_kw, hi)
    power = np.clip(target_kw, lo, hi)
    kind = np.where(stop_discharge & (np.bincount(unit_site, np.abs(power - np.clip(target_kw, lo_kw, hi_kw)), n_sites) > 0), FAILSAFE, NONE)
    over = np.maximum(np.bincount(unit_site, power, n_sites) - sum_hi, 0.0)
    for bound in (np.where(power > 0, np.maximum(lo, 0.0), power), lo):
        total = np.bincount(unit_site, power, n_sites)
        power = shift_toward(power, bound, unit_site, np.maximum(total - sum_hi, 0.0), none, down=True)
    under = np.maximum(sum_lo - np.bincount(unit_site, power, n_sites), 0.0)
    for bound in (np.where(power < 0, np.minimum(hi, 0.0), power), hi):
        total = np.bincount(unit_site, power, n_sites)
        power = shift_toward(power, bound, unit_site, np.maximum(sum_lo - total, 0.0), none, down=False)
    kind = np.where(over > 0, EXPORT, np.where(under > 0, lo_kind, kind))
    return np.clip(power, lo, hi), kind  # clip: rounding only
