"""Warm and hot starts (optimizers.lp.Warm): a re-used HiGHS instance must give the very optimum a
fresh one gives, and must actually save the work it is there to save.

Real decomposition pieces of ``tests.test_decomposition.fleet_case``: each piece's stage-1 LP, its
bound LP (the same model re-priced, solved hot) and its repair LP (bids pinned by added rows,
started from the stage-1 basis carried over).
"""

from __future__ import annotations

from dataclasses import replace

import highspy
import numpy as np
import pytest

from optimizers.decompose import _baseline_shares, _own_dr_problem, _priced_solve, _repair_problem, _Solved, _surrogate_prices, pieces_of
from optimizers.lp import Warm, carried
from optimizers.model import _monolithic, build_model, optimize
from tests.test_decomposition import fleet_case
from vpp.schedule import SolverOptions

OPTS = SolverOptions(mip_gap=1e-6, decomposition="off")
LP = replace(OPTS, exclusivity="relaxed")  # the bound LP relaxes exclusivity binaries, so its cold twin does too


def stage1_pieces(seed: int = 3, n_units: int = 14):
    p = fleet_case(seed=seed, n_units=n_units)
    pieces = pieces_of(p, 3)
    shares = _baseline_shares(p, pieces)
    members = [k for k, pc in enumerate(pieces) if pc.member_of.any()]
    return p, pieces, {k: _own_dr_problem(p, pieces[k], shares, k) for k in members}


def priced_problem(q, lam):
    """The bound LP built from scratch as a problem: DR rows never binding, the commitment unpaid,
    the member sites' net export paid λ — what ``_priced_solve`` does to a built model."""
    value = np.zeros((len(q.site_ids), len(q.index)))
    events = []
    for e in q.events:
        value += np.where(e.sites[:, None], lam[e.id][None, :], 0.0)
        events.append(replace(e, baseline_kw=np.full(len(q.index), np.inf), value_per_kw=0.0))
    return replace(q, events=tuple(events), grid_value_per_kw=value)


def iterations(warm: Warm) -> int:
    return int(warm.highs.getInfo().simplex_iteration_count)


def cold_iterations(q, options: SolverOptions) -> int:
    warm = Warm()  # a fresh instance and no bases: a cold solve, but its iteration count can be read
    optimize(q, options, warm=warm)
    return iterations(warm)


@pytest.mark.parametrize("seed", [3, 11])
def test_a_re_priced_model_solved_hot_has_the_optimum_of_the_same_lp_built_and_solved_cold(seed, monkeypatch):
    p, pieces, stage1 = stage1_pieces(seed=seed)
    lam = _surrogate_prices(p, pieces, OPTS)
    assert lam is not None and any(x.any() for x in lam.values())
    handed = []  # what HiGHS was handed anew (the real calls run): a hot start hands it nothing
    for name in ("passModel", "setBasis"):
        real = getattr(highspy.Highs, name)
        monkeypatch.setattr(highspy.Highs, name, lambda self, *a, _real=real, _name=name: (handed.append(_name), _real(self, *a))[1])
    for k, q in stage1.items():
        warm = Warm()
        warm.key = warm.fallback = warm.family = ("", k)
        optimize(q, OPTS, warm=warm)
        handed.clear()
        hot = _priced_solve(warm.built, lam, OPTS, warm)
        assert handed == []
        assert iterations(warm) < cold_iterations(priced_problem(q, lam), LP)
        cold = _monolithic(priced_problem(q, lam), LP, None)
        assert hot.objective == pytest.approx(cold.stats.objective, rel=1e-8, abs=1e-6)


def test_a_model_with_rows_added_starts_from_the_carried_basis_and_reaches_the_cold_optimum():
    p, pieces, stage1 = stage1_pieces(seed=5, n_units=16)
    checked = 0
    for k, q in stage1.items():
        warm = Warm()
        warm.key = warm.fallback = warm.family = ("", k)
        s1 = optimize(q, OPTS, warm=warm)
        held = {pid: s1.reserve_kw[pid].sum(axis=0) for pid in s1.reserve_kw}
        target = {pid: np.floor(h / 50.0) * 50.0 for pid, h in held.items()}  # whole 50 kW blocks: rows pin them
        repair = _repair_problem(q, _Solved(s1, s1.site_net_kw.sum(axis=0), s1.stats.objective), target)
        warm.key, warm.family = ("repair", k), "repair"
        warm_s = optimize(repair, OPTS, warm=warm)
        warm_iterations = iterations(warm)
        cold = _monolithic(repair, OPTS, None)
        assert warm_s.stats.objective == pytest.approx(cold.stats.objective, rel=1e-7, abs=1e-6)
        for pid, t in target.items():
            assert np.allclose(warm_s.reserve_kw[pid].sum(axis=0), t, atol=1e-6)
        if any(h.sum() > 0 for h in held.values()):
            assert warm_iterations < cold_iterations(repair, OPTS)
            checked += 1
    assert checked > 0


def test_a_carried_basis_keeps_shared_blocks_and_makes_new_rows_basic_and_new_columns_nonbasic():
    _, _, stage1 = stage1_pieces()
    k, q = next(iter(stage1.items()))
    small = build_model(q, OPTS).lm
    pinned = replace(q, products=tuple(replace(prod, fixed_kw=np.zeros(len(q.index))) for prod in q.products))
    big = build_model(pinned, OPTS).lm  # adds a bid column block and a row block per product
    layout = lambda lm: (tuple((b.name, b.shape) for b in lm.col_blocks), tuple((b.name, b.shape) for b in lm.row_blocks))  # noqa: E731
    assert big.n_rows > small.n_rows and big.n_cols > small.n_cols

    warm = Warm()
    small.session(60.0, 1e-6, warm=warm).relax()
    basis = warm.highs.getBasis()
    col_lb, col_ub, _, _, _ = big.bounds()
    out = carried(basis, layout(small), layout(big), col_lb, col_ub)
    status = lambda xs: np.array([int(x) for x in xs])  # noqa: E731
    old_cols, old_rows, new_cols, new_rows = status(basis.col_status), status(basis.row_status), status(out.col_status), status(out.row_status)
    assert len(new_cols) == big.n_cols and len(new_rows) == big.n_rows
    basic = int(highspy.HighsBasisStatus.kBasic)
    assert (new_cols == basic).sum() + (new_rows == basic).sum() == big.n_rows  # only rows added: still a basis
    for blocks, old, new in ((("cols", small.col_blocks, big.col_blocks), old_cols, new_cols), (("rows", small.row_blocks, big.row_blocks), old_rows, new_rows)):
        kind, old_blocks, new_blocks = blocks
        seen: dict = {}
        for nb in new_blocks:
            match = [ob for ob in old_blocks if (ob.name, ob.shape) == (nb.name, nb.shape)]
            n = seen.get((nb.name, nb.shape), 0)
            seen[(nb.name, nb.shape)] = n + 1
            got = new[nb.start : nb.start + nb.size]
            if n < len(match):
                ob = match[n]
                assert np.array_equal(got, old[ob.start : ob.start + ob.size]), (kind, nb.name)
            elif kind == "rows":
                assert (got == basic).all(), nb.name
            else:
                assert (got == int(highspy.HighsBasisStatus.kLower)).all(), nb.name
