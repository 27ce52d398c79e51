"""The optimizer's input: every parameter of FORMULATION.md as numpy arrays over one horizon.

``build_problem`` is where domain objects (fleet, market, overrides, telemetry)
meet the horizon: series are put on the intervals, derates and overrides are
folded into per-interval limits, and everything is checked for coverage. The
model families then only do arithmetic on arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from vpp.errors import InputError
from vpp.fleet import Fleet
from vpp.markets import Market
from vpp.overrides import Override, OverrideKind
from vpp.schedule import TerminalPolicy
from vpp.timeseries import profile_on


@dataclass(frozen=True)
class ProductData:
    """An ancillary product over the horizon: regulation up or down, or spinning reserve (``vpp.markets.ProductKind``)."""

    id: str
    is_up: bool
    value_per_mw_h: np.ndarray  # (T,) capacity price + mileage price × mileage × performance
    sustain_h: float
    deployment_fraction: float
    min_kw: float
    increment_kw: float
    eligible: np.ndarray  # (U,) bool
    blocked: np.ndarray  # (T,) bool: override or not offered
    fixed_kw: np.ndarray  # (T,) NaN where the bid is free, else the bid already submitted (gate closed)

    @property
    def deployment_sign(self) -> float:
        """As ``ProductKind.deployment_sign``: +1 up (more discharge), −1 down."""
        return 1.0 if self.is_up else -1.0


@dataclass(frozen=True)
class EventData:
    id: str
    active: np.ndarray  # (T,) bool
    sites: np.ndarray  # (S,) bool
    baseline_kw: np.ndarray  # (T,) summed baseline net import of the member sites
    value_per_kw: float  # capacity price + energy price × duration
    min_kw: float
    increment_kw: float
    mandatory: bool
    shortfall_penalty_per_mwh: float = 0.0
    max_kw: float = np.inf  # a cap on the commitment (a decomposition piece keeps at most what it offered before)


@dataclass(frozen=True)
class Problem:
    index: pd.DatetimeIndex
    dt_h: float
    unit_ids: tuple[str, ...]
    site_ids: tuple[str, ...]
    unit_site: np.ndarray  # (U,) site position
    p_ch_max: np.ndarray  # (U, T) kW after derates and overrides
    p_dis_max: np.ndarray  # (U, T)
    e_max: np.ndarray  # (U,) kWh
    soc_min_kwh: np.ndarray  # (U, T) window at the end of each interval (with overrides)
    soc_max_kwh: np.ndarray  # (U, T)
    eta_ch: np.ndarray
    eta_dis: np.ndarray
    sigma_per_h: np.ndarray
    deg_cost_per_mwh: np.ndarray
    cycles_per_day: np.ndarray  # NaN = no limit
    soc0_kwh: np.ndarray  # (U,)
    terminal_kwh: np.ndarray  # (U,) floor at the end (NaN = none)
    terminal_value_per_mwh: float  # value of energy left at the end (0 unless terminal mode 'value')
    wholesale_unit: np.ndarray  # (U,) bool
    energy_price_per_mwh: np.ndarray  # (T,) zeros if no wholesale market
    site_net_load_kw: np.ndarray  # (S, T) load - pv
    import_limit_kw: np.ndarray  # (S,)
    export_limit_kw: np.ndarray  # (S,)
    retail_site: np.ndarray  # (S,) bool
    tou_price_per_mwh: np.ndarray  # (S, T)
    feed_in_per_mwh: np.ndarray  # (S, T)
    demand_charge_per_kw: np.ndarray  # (S,) charge applied to the horizon's peak above the month's peak so far
    peak_so_far_kw: np.ndarray  # (S,)
    products: tuple[ProductData, ...]
    events: tuple[EventData, ...]
    forced_unit_kw: np.ndarray  # (U, T) NaN = free
    forced_site_kw: np.ndarray  # (S, T) NaN = free
    fleet_export_cap_kw: np.ndarray  # (T,) NaN = none
    fleet_import_cap_kw: np.ndarray  # (T,)
    # (S, T) value per kW of net export (export − import) in an interval, beyond any tariff: the price a
    # decomposition puts on coupling constraints (DR delivery); None everywhere else
    grid_value_per_kw: np.ndarray | None = None
    # (U, T) +1: may only discharge, -1: may only charge, 0: either; None: either everywhere. A repair
    # that keeps each unit's direction from a solution it adjusts never needs exclusivity binaries.
    direction: np.ndarray | None = None
    # user extensions' rows, compiled once for the whole problem (optimizers/extensions.py); a part of the
    # problem (a decomposition piece) holds the rows whose units and sites it holds
    extension_rows: tuple = ()

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.unit_ids), len(self.index)

    def units_of_site(self) -> np.ndarray:
        """(S, U) 0/1 incidence, for site sums."""
        inc = np.zeros((len(self.site_ids), len(self.unit_ids)))
        inc[self.unit_site, np.arange(len(self.unit_ids))] = 1.0
        return inc


def build_problem(
    fleet: Fleet,
    market: Market,
    index: pd.DatetimeIndex,
    *,
    initial_soc: dict[str, float] | None = None,
    overrides: tuple[Override, ...] = (),
    terminal: TerminalPolicy = TerminalPolicy(),
    fixed_bids_kw: dict[str, np.ndarray] | None = None,
    where: str = "config",
) -> Problem:
    """Put the fleet and market on ``index`` (tz-aware, fixed step). ``initial_soc`` (fraction) comes
    from telemetry; missing units start at their configured ``initial_soc``."""
    if index.tz is None:
        raise InputError(where, "horizon", str(index[0]), "timezone-aware interval starts")
    T = len(index)
    dt_h = (index[1] - index[0]).total_seconds() / 3600.0 if T > 1 else pd.Timedelta(index.freq).total_seconds() / 3600.0
    units, sites = fleet.units, fleet.sites
    U, S = len(units), len(sites)
    col = lambda attr: np.array([getattr(u, attr) for u in units], dtype=float)  # noqa: E731
    e_max = col("energy_kwh")
    avail = np.vstack([u.availability(index) for u in units]) if U else np.zeros((0, T))
    p_ch = col("max_charge_kw")[:, None] * avail
    p_dis = col("max_discharge_kw")[:, None] * avail
    soc_min = np.repeat((col("soc_min") * e_max)[:, None], T, axis=1)
    soc_max = np.repeat((col("soc_max") * e_max)[:, None], T, axis=1)
    start_soc = initial_soc or {}
    soc0 = np.array([start_soc.get(u.id, u.initial_soc) for u in units], dtype=float) * e_max
    unit_pos = {u.id: i for i, u in enumerate(units)}
    site_pos = {s.id: i for i, s in enumerate(sites)}
    unit_site = np.array([site_pos[u.site_id] for u in units], dtype=int)

    forced_unit = np.full((U, T), np.nan)
    forced_site = np.full((S, T), np.nan)
    export_cap = np.full(T, np.nan)
    import_cap = np.full(T, np.nan)
    blocked: dict[str, np.ndarray] = {p.id: np.zeros(T, bool) for p in market.products}
    for o in overrides:
        mask = o.active_mask(index)
        if not mask.any():
            continue
        if o.kind is OverrideKind.UNIT_OUT:
            u = unit_pos[o.unit_id]
            p_ch[u, mask] = 0.0
            p_dis[u, mask] = 0.0
        elif o.kind is OverrideKind.FORCE_POWER and o.unit_id is not None:
            forced_unit[unit_pos[o.unit_id], mask] = o.value
        elif o.kind is OverrideKind.FORCE_POWER:
            forced_site[site_pos[o.site_id], mask] = o.value
        elif o.kind is OverrideKind.SOC_FLOOR:
            u = unit_pos[o.unit_id]
            soc_min[u, mask] = np.maximum(soc_min[u, mask], o.value * e_max[u])
        elif o.kind is OverrideKind.SOC_CEILING:
            u = unit_pos[o.unit_id]
            soc_max[u, mask] = np.minimum(soc_max[u, mask], o.value * e_max[u])
        elif o.kind is OverrideKind.BLOCK_PRODUCT:
            blocked[o.product_id] |= mask
        elif o.kind is OverrideKind.FLEET_EXPORT_CAP:
            export_cap[mask] = np.fmin(export_cap[mask], o.value)
        elif o.kind is OverrideKind.FLEET_IMPORT_CAP:
            import_cap[mask] = np.fmin(import_cap[mask], o.value)

    eta_ch, eta_dis, sigma = col("eta_charge"), col("eta_discharge"), col("self_discharge_per_h")
    soc_min, soc_max, reach_max = _reachable_window(soc0, soc_min, soc_max, p_ch, p_dis, eta_ch, eta_dis, 1.0 - sigma * dt_h, dt_h)
    if terminal.mode == "value":
        terminal_kwh = np.full(U, np.nan)
    else:
        target = soc0 if terminal.mode == "initial" else terminal.soc * e_max
        terminal_kwh = np.minimum(np.clip(target, soc_min[:, -1], soc_max[:, -1]), reach_max) if T else target

    site_where = lambda s, what: f"{where}: site {s.id} {what}"  # noqa: E731
    net_load = np.vstack([profile_on(s.load_kw, index, site_where(s, "load_kw")) - profile_on(s.pv_kw, index, site_where(s, "pv_kw")) for s in sites])
    retail = np.array([s.market == "retail" for s in sites])
    tou = np.vstack([s.tariff.energy_price_per_mwh(index) if s.tariff is not None else np.zeros(T) for s in sites])
    feed_in = np.array([(s.tariff.feed_in_price_per_kwh * 1000.0 if s.tariff is not None else 0.0) for s in sites])[:, None] * np.ones(T)
    demand_charge = np.array([s.tariff.demand_charge_per_kw_month if (s.tariff is not None and s.market == "retail") else 0.0 for s in sites])
    wholesale_unit = ~retail[unit_site] if U else np.zeros(0, bool)
    energy_price = profile_on(market.energy_price_per_mwh, index, f"{where}: market.energy_price") if market.energy_price_per_mwh is not None else np.zeros(T)

    fixed = fixed_bids_kw or {}
    products = []
    for p in market.products:
        value = profile_on(p.capacity_price_per_mw_h, index, f"{where}: product {p.id} price")
        if p.mileage_price_per_mw is not None and p.mileage_per_mw_h > 0:
            value = value + profile_on(p.mileage_price_per_mw, index, f"{where}: product {p.id} mileage_price") * p.mileage_per_mw_h
        value = value * p.performance_score
        eligible = np.array([p.eligible_sites is None or u.site_id in p.eligible_sites for u in units], bool)
        products.append(
            ProductData(
                id=p.id,
                is_up=p.kind.is_up,
                value_per_mw_h=value,
                sustain_h=p.sustain_h,
                deployment_fraction=p.deployment_fraction,
                min_kw=p.min_bid_kw,
                increment_kw=p.increment_kw,
                eligible=eligible,
                blocked=blocked[p.id],
                fixed_kw=np.asarray(fixed.get(p.id, np.full(T, np.nan)), float),
            )
        )

    events = []
    for e in market.dr_events:
        active = np.asarray((index < pd.Timestamp(e.end)) & (index + pd.Timedelta(hours=dt_h) > pd.Timestamp(e.start)))
        members = np.array([s.id in e.site_ids for s in sites], bool)
        if e.baseline == "fixed":
            baseline = np.full(T, float(e.baseline_kw))
        else:
            baseline = net_load[members].sum(axis=0)
        events.append(
            EventData(
                e.id, active, members, baseline, e.capacity_price_per_kw + e.energy_price_per_mwh * e.duration_h / 1000.0, e.min_kw, e.increment_kw, e.mandatory, e.shortfall_penalty_per_mwh
            )
        )

    return Problem(
        index=index,
        dt_h=dt_h,
        unit_ids=tuple(u.id for u in units),
        site_ids=tuple(s.id for s in sites),
        unit_site=unit_site,
        p_ch_max=p_ch,
        p_dis_max=p_dis,
        e_max=e_max,
        soc_min_kwh=soc_min,
        soc_max_kwh=soc_max,
        eta_ch=eta_ch,
        eta_dis=eta_dis,
        sigma_per_h=sigma,
        deg_cost_per_mwh=col("degradation_cost_per_mwh"),
        cycles_per_day=np.array([np.nan if u.max_cycles_per_day is None else u.max_cycles_per_day for u in units], float),
        soc0_kwh=soc0,
        terminal_kwh=terminal_kwh,
        terminal_value_per_mwh=float(terminal.price_per_mwh or 0.0) if terminal.mode == "value" else 0.0,
        wholesale_unit=wholesale_unit,
        energy_price_per_mwh=energy_price,
        site_net_load_kw=net_load,
        import_limit_kw=np.array([s.import_limit_kw for s in sites], float),
        export_limit_kw=np.array([s.export_limit_kw for s in sites], float),
        retail_site=retail,
        tou_price_per_mwh=tou,
        feed_in_per_mwh=feed_in,
        demand_charge_per_kw=demand_charge,
        peak_so_far_kw=np.array([s.demand_peak_so_far_kw for s in sites], float),
        products=tuple(products),
        events=tuple(events),
        forced_unit_kw=forced_unit,
        forced_site_kw=forced_site,
        fleet_export_cap_kw=export_cap,
        fleet_import_cap_kw=import_cap,
    )


def _reachable_window(soc0, soc_min, soc_max, p_ch, p_dis, eta_ch, eta_dis, keep, dt_h):
    """The SoC window tightened to what the unit can reach from ``soc0``, and the highest reachable end SoC.

    A unit that starts outside its window (telemetry), or cannot hold its SoC
    against self-discharge while out of service, is not an infeasible plan: it
    returns to its window as fast as its limits allow, which is what the
    dispatcher does too. So the floor never exceeds the highest reachable SoC
    and the ceiling never undercuts the lowest.
    """
    lo_w, hi_w = soc_min.copy(), soc_max.copy()
    hi = soc0.copy()
    lo = soc0.copy()
    for t in range(soc_min.shape[1]):
        hi = np.minimum(keep * hi + eta_ch * p_ch[:, t] * dt_h, np.maximum(soc_max[:, t], keep * hi))
        lo = np.maximum(keep * lo - p_dis[:, t] * dt_h / eta_dis, np.minimum(soc_min[:, t], keep * lo))
        lo_w[:, t] = np.minimum(soc_min[:, t], hi)
        hi_w[:, t] = np.maximum(soc_max[:, t], lo)
    return lo_w, hi_w, hi

