"""A ``Problem`` restricted to some sites and their units: the piece a decomposition worker solves.

Every array of ``Problem`` is indexed by unit, by site or by nothing; this is
the one place that knows which, so restricting is a pure slice and the model
families need no notion of "partial fleet".
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from optimizers.problem import Problem

BY_UNIT = (
    "p_ch_max", "p_dis_max", "e_max", "soc_min_kwh", "soc_max_kwh", "eta_ch", "eta_dis", "sigma_per_h",
    "deg_cost_per_mwh", "cycles_per_day", "soc0_kwh", "terminal_kwh", "wholesale_unit", "forced_unit_kw", "direction",
)  # fmt: skip
BY_SITE = (
    "site_net_load_kw", "import_limit_kw", "export_limit_kw", "retail_site", "tou_price_per_mwh", "feed_in_per_mwh",
    "demand_charge_per_kw", "peak_so_far_kw", "forced_site_kw", "grid_value_per_kw",
)  # fmt: skip


def restrict(p: Problem, sites: np.ndarray) -> Problem:
    """The sites at positions ``sites`` (sorted) with their units, every other parameter unchanged.

    DR events keep their member sites inside the piece; the caller decides what an
    event means for a piece (the decomposition prices it instead, see ``decompose.py``).
    """
    sites = np.asarray(sites, dtype=int)
    units = np.flatnonzero(np.isin(p.unit_site, sites))
    new_site = np.full(len(p.site_ids), -1)
    new_site[sites] = np.arange(len(sites))
    changes: dict = {name: getattr(p, name)[units] for name in BY_UNIT if getattr(p, name) is not None}
    changes.update({name: getattr(p, name)[sites] for name in BY_SITE if getattr(p, name) is not None})
    changes["unit_ids"] = tuple(np.asarray(p.unit_ids, dtype=object)[units])
    changes["site_ids"] = tuple(np.asarray(p.site_ids, dtype=object)[sites])
    changes["unit_site"] = new_site[p.unit_site[units]]
    changes["products"] = tuple(replace(prod, eligible=prod.eligible[units]) for prod in p.products)
    changes["events"] = tuple(replace(e, sites=e.sites[sites]) for e in p.events)
    return replace(p, **changes)


def detach(p: Problem, units: np.ndarray, member_of: np.ndarray) -> Problem:
    """``units`` on one unconstrained wholesale connection of their own, no load.

    Valid when their sites can never bind them (``decompose.free_sites``): the
    units then only meet through fleet-level couplings, which the caller prices.
    ``member_of`` (E,) says which DR events the piece belongs to.
    """
    units = np.asarray(units, dtype=int)
    n_t = len(p.index)
    changes: dict = {name: getattr(p, name)[units] for name in BY_UNIT if getattr(p, name) is not None}
    changes.update(
        unit_ids=tuple(np.asarray(p.unit_ids, dtype=object)[units]),
        unit_site=np.zeros(len(units), dtype=int),
        site_ids=("detached",),
        site_net_load_kw=np.zeros((1, n_t)),
        import_limit_kw=np.array([np.inf]),
        export_limit_kw=np.array([np.inf]),
        retail_site=np.array([False]),
        tou_price_per_mwh=np.zeros((1, n_t)),
        feed_in_per_mwh=np.zeros((1, n_t)),
        demand_charge_per_kw=np.zeros(1),
        peak_so_far_kw=np.zeros(1),
        forced_site_kw=np.full((1, n_t), np.nan),
        grid_value_per_kw=None,
        products=tuple(replace(prod, eligible=prod.eligible[units]) for prod in p.products),
        events=tuple(replace(e, sites=np.array([bool(m)])) for e, m in zip(p.events, member_of)),
    )
    return replace(p, **changes)
