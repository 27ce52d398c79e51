"""Settlement: what each unit earned in each interval, from metered operation and actual prices.

The amounts come from the same formulas as the optimizer's expected revenue
(``optimizers.revenue.revenue_by_interval``), applied to a ``Problem`` built on
the *actual* prices, load and PV of the settled intervals and to what the
meters saw. So a perfect-foresight backtest settles to exactly its plan, and
any gap between plan and settlement is forecast error or dispatch deviation —
never two formulas disagreeing.

What only exists after the fact is added here: the shortfall of a DR event
(the committed reduction against the baseline that was not delivered), paid
at the event's shortfall penalty.

Rows are per unit × interval × stream, in currency (``amount``) and in integer
minor units (``amount_minor``, rounded half-even per row) for the ledger.
Streams that are zero in an interval are left out. Capacity revenue is paid on
what each unit actually held (its allocation), so a unit that drops out earns
nothing for the intervals it could not deliver.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from optimizers.problem import Problem
from optimizers.revenue import revenue_by_interval

ZERO = 1e-9  # currency: float dust (e.g. a shortfall of 1e-13 kW) is not a settled amount
COLUMNS = ["interval_start", "unit_id", "site_id", "stream", "amount", "amount_minor"]


def settle(
    problem: Problem,
    power_kw: np.ndarray,
    soc_kwh: np.ndarray,
    reserve_kw: dict[str, np.ndarray],
    dr_commitment_kw: dict[str, float],
    *,
    reserve_from_charge_kw: dict[str, np.ndarray] | None = None,
    currency_exponent: int = 2,
) -> pd.DataFrame:
    """Long frame (see ``COLUMNS``) for the intervals of ``problem``.

    ``power_kw`` (U, T): metered mean AC power per interval, + discharge, without reserve deployment
    (deployed energy is settled by the ``<product>.deployment_energy`` streams);
    ``soc_kwh`` (U, T + 1); ``reserve_kw`` {product: (U, T)} allocations held;
    ``dr_commitment_kw`` {event: committed kW}; ``reserve_from_charge_kw`` the part of each allocation
    held on the charge side: with it, the expected deployment of the rest pays degradation as the plan
    did (the deployed energy is not in ``power_kw``).
    """
    power = np.asarray(power_kw, dtype=float)
    if power.shape != problem.shape:
        raise ValueError(f"settle: power_kw has shape {power.shape}, the problem {problem.shape}")
    ch, dis = np.maximum(-power, 0.0), np.maximum(power, 0.0)
    reserve = {prod.id: np.asarray(reserve_kw.get(prod.id, np.zeros(problem.shape)), dtype=float) for prod in problem.products}
    from_charge = None if reserve_from_charge_kw is None else {pid: np.asarray(reserve_from_charge_kw.get(pid, np.zeros(problem.shape)), dtype=float) for pid in reserve}
    streams = revenue_by_interval(problem, ch, dis, np.asarray(soc_kwh, dtype=float), reserve, dr_commitment_kw, from_charge)
    streams.pop("terminal_value", None)  # a planning device, not money
    shortfall = dr_shortfall(problem, power, dr_commitment_kw)
    if shortfall is not None:
        streams["demand_response.shortfall"] = shortfall
    return _long(problem, streams, currency_exponent)


def dr_shortfall(problem: Problem, power_kw: np.ndarray, dr_commitment_kw: dict[str, float]) -> np.ndarray | None:
    """(U, T) penalty (negative) for committed DR reduction not delivered against the baseline.

    Delivered reduction in an event interval = baseline − the member sites' actual net import
    (load − PV − battery). The penalty is split over the member units by energy capacity.
    """
    events = [e for e in problem.events if e.id in dr_commitment_kw and e.shortfall_penalty_per_mwh > 0]
    if not events:
        return None
    n_sites = len(problem.site_ids)
    battery = np.zeros((n_sites, problem.shape[1]))
    np.add.at(battery, problem.unit_site, power_kw)
    net_import = problem.site_net_load_kw - battery
    out = np.zeros(problem.shape)
    for e in events:
        delivered = e.baseline_kw - net_import[e.sites].sum(axis=0)
        missing_kw = np.where(e.active, np.maximum(dr_commitment_kw[e.id] - delivered, 0.0), 0.0)
        penalty = e.shortfall_penalty_per_mwh * missing_kw * problem.dt_h / 1000.0  # (T,)
        members = e.sites[problem.unit_site]
        weight = np.where(members, problem.e_max, 0.0)
        if weight.sum() > 0:
            out -= (weight / weight.sum())[:, None] * penalty[None, :]
    return out


def _long(problem: Problem, streams: dict[str, np.ndarray], currency_exponent: int) -> pd.DataFrame:
    if not streams:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(COLUMNS, ["datetime64[ns, UTC]", str, str, str, float, "int64"])})
    names = list(streams)
    amounts = np.stack([streams[k] for k in names])  # (K, U, T)
    k, u, t = np.nonzero(np.abs(amounts) > ZERO)
    values = amounts[k, u, t]
    frame = pd.DataFrame(
        {
            "interval_start": problem.index[t],
            "unit_id": np.asarray(problem.unit_ids, dtype=object)[u],
            "site_id": np.asarray(problem.site_ids, dtype=object)[problem.unit_site[u]],
            "stream": np.asarray(names, dtype=object)[k],
            "amount": values,
            "amount_minor": np.round(values * 10.0**currency_exponent).astype(np.int64),  # numpy rounds half to even
        }
    )
    return frame.sort_values(["interval_start", "unit_id", "stream"], kind="stable").reset_index(drop=True)
