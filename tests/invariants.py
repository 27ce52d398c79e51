"""Checks of a returned schedule against FORMULATION.md, written independently of the model code.

Every test that solves something runs ``assert_schedule_feasible`` on the
result, so a family that forgets a term or a sign shows up as a violated
physical rule, not just as a different number.
"""

from __future__ import annotations

import numpy as np

from optimizers.problem import Problem
from vpp.schedule import Schedule

TOL = 1e-6


def assert_schedule_feasible(p: Problem, s: Schedule, exclusive: bool = True, tol: float = TOL) -> None:
    ch, dis, soc = s.charge_kw, s.discharge_kw, s.soc_kwh
    dt = p.dt_h
    U, T = ch.shape
    scale = max(1.0, float(np.max(p.e_max, initial=1.0)))
    atol = tol * scale

    assert (ch >= -atol).all() and (dis >= -atol).all(), "negative power"
    assert (ch <= p.p_ch_max + atol).all(), "charge above limit"
    assert (dis <= p.p_dis_max + atol).all(), "discharge above limit"
    if exclusive:
        assert not ((ch > 1e-5) & (dis > 1e-5)).any(), "charging and discharging in the same interval"

    # energy balance with expected reserve deployment
    up_e = np.zeros((U, T))  # energy that sustaining up-reserve for D hours would take out
    dn_e = np.zeros((U, T))
    drift = np.zeros((U, T))  # expected deployed energy per interval
    eta_c, eta_d = p.eta_ch[:, None], p.eta_dis[:, None]
    up_ch = np.zeros((U, T)); up_dis = np.zeros((U, T)); dn_ch = np.zeros((U, T)); dn_dis = np.zeros((U, T))
    for prod in p.products:
        r_ch = s.reserve_from_charge_kw[prod.id]
        r_dis = s.reserve_kw[prod.id] - r_ch
        assert (r_ch >= -atol).all() and (r_dis >= -atol).all(), f"{prod.id}: negative allocation"
        cells = r_ch * eta_c + r_dis / eta_d
        if prod.is_up:
            up_e += prod.sustain_h * cells
            drift -= prod.deployment_fraction * dt * cells
            up_ch += r_ch
            up_dis += r_dis
        else:
            dn_e += prod.sustain_h * cells
            drift += prod.deployment_fraction * dt * cells
            dn_ch += r_ch
            dn_dis += r_dis
        total = s.reserve_kw[prod.id].sum(axis=0)
        bid = s.bids_kw[prod.id]
        np.testing.assert_allclose(total, bid, atol=atol, err_msg=f"{prod.id}: bid != sum of allocations")
        if prod.increment_kw > 0:
            blocks = bid / prod.increment_kw
            np.testing.assert_allclose(blocks, np.round(blocks), atol=1e-6, err_msg=f"{prod.id}: bid not in increments")
        assert ((bid <= atol) | (bid >= prod.min_kw - atol)).all(), f"{prod.id}: bid below minimum"
        assert (bid[prod.blocked] <= atol).all(), f"{prod.id}: bid while blocked"
        assert (s.reserve_kw[prod.id][~prod.eligible] <= atol).all(), f"{prod.id}: allocation on an ineligible unit"
    keep = 1.0 - p.sigma_per_h[:, None] * dt
    expected = keep * soc[:, :-1] + (eta_c * ch - dis / eta_d) * dt + drift
    np.testing.assert_allclose(soc[:, 1:], expected, atol=atol, err_msg="energy balance")

    # SoC window, with the energy committed reserves could need, at both ends of every interval
    for label, level in (("start", soc[:, :-1]), ("end", soc[:, 1:])):
        assert (level - up_e >= p.soc_min_kwh - atol).all(), f"SoC below window with up-reserve energy at interval {label}"
        assert (level + dn_e <= p.soc_max_kwh + atol).all(), f"SoC above window with down-reserve energy at interval {label}"
    # power headroom for reserves
    assert (up_ch <= ch + atol).all() and (dis + up_dis <= p.p_dis_max + atol).all(), "up-reserve headroom"
    assert (dn_dis <= dis + atol).all() and (ch + dn_ch <= p.p_ch_max + atol).all(), "down-reserve headroom"

    # terminal and cycles
    floor = np.isfinite(p.terminal_kwh)
    assert (soc[floor, -1] >= p.terminal_kwh[floor] - atol).all(), "terminal SoC"
    limited = np.isfinite(p.cycles_per_day)
    days = T * dt / 24.0
    assert (dis[limited].sum(axis=1) * dt <= (p.cycles_per_day * days * p.e_max)[limited] + atol).all(), "cycle limit"

    # sites: balance, limits and room for reserve deployment
    inc = p.units_of_site()
    battery = inc @ (dis - ch)
    np.testing.assert_allclose(s.site_net_kw, battery - p.site_net_load_kw, atol=atol, err_msg="site balance")
    assert (s.site_net_kw <= p.export_limit_kw[:, None] + atol).all(), "site export limit"
    assert (-s.site_net_kw <= p.import_limit_kw[:, None] + atol).all(), "site import limit"
    up_total = sum((s.reserve_kw[x.id] for x in p.products if x.is_up), np.zeros((U, T)))
    dn_total = sum((s.reserve_kw[x.id] for x in p.products if not x.is_up), np.zeros((U, T)))
    if p.products:
        assert (s.site_net_kw + inc @ up_total <= p.export_limit_kw[:, None] + atol).all(), "up-reserve deployment exceeds export limit"
        assert (-s.site_net_kw + inc @ dn_total <= p.import_limit_kw[:, None] + atol).all(), "down-reserve deployment exceeds import limit"

    # demand response: reduction below baseline covers the commitment in every event interval
    for e in p.events:
        c = s.dr_commitment_kw.get(e.id, 0.0)
        if e.increment_kw > 0:
            assert abs(c / e.increment_kw - round(c / e.increment_kw)) < 1e-6, "DR commitment not in increments"
        reduction = e.baseline_kw + s.site_net_kw[e.sites].sum(axis=0)
        assert (reduction[e.active] >= c - atol).all(), f"DR {e.id}: delivery below commitment"

    # overrides
    forced = np.isfinite(p.forced_unit_kw)
    np.testing.assert_allclose((dis - ch)[forced], p.forced_unit_kw[forced], atol=atol, err_msg="forced unit power")
    site_forced = np.isfinite(p.forced_site_kw)
    np.testing.assert_allclose(battery[site_forced], p.forced_site_kw[site_forced], atol=atol, err_msg="forced site power")
    capped = np.isfinite(p.fleet_export_cap_kw)
    assert (np.maximum(s.site_net_kw, 0).sum(axis=0)[capped] <= p.fleet_export_cap_kw[capped] + atol).all(), "fleet export cap"
    capped = np.isfinite(p.fleet_import_cap_kw)
    assert (np.maximum(-s.site_net_kw, 0).sum(axis=0)[capped] <= p.fleet_import_cap_kw[capped] + atol).all(), "fleet import cap"
