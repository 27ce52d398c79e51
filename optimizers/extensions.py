"""User extensions: linear rules written in Pyomo, compiled into rows of the fast model.

Why compile rather than solve the Pyomo model: the fast builder is the production path (daemon,
backtests, decomposition), so a rule that held only under ``--backend pyomo`` would be a rule that
does not hold. An extension is ``def rule(m, p): ...`` (named in the config as ``"pkg.module:rule"``):
it receives a Pyomo model holding the formulation's variables (``optimizers.pyomo_model.variables``:
``m.charge_kw[u, t]``, ``m.discharge_kw``, ``m.soc_kwh``, ``m.reserve_from_charge_kw[k, u, t]`` and
``m.reserve_from_discharge_kw``, the expressions ``m.reserve_kw``/``m.bid_kw``, ``m.import_kw[s, t]``,
``m.export_kw``, ``m.dr_commit_kw[e]``; ``t`` is the interval's position in ``p.index``) and the
``Problem`` ``p``, and adds linear ``Constraint`` components. Each of their rows is compiled once per
problem into ids and coefficients (``Row``) and placed in every model built for the problem or a part of
it that holds all the units and sites the row names (``rows_for``): the whole model, a decomposition
piece, a repair. A rule whose row names units that the decomposition would split is refused there
(``coupled_units``), never silently dropped.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from optimizers.lp import CONTINUOUS, INTEGER
from vpp.errors import InputError

UNIT_VARS = {"charge_kw": "ch", "discharge_kw": "dis", "soc_kwh": "soc"}
RESERVE_VARS = {"reserve_from_charge_kw": 0, "reserve_from_discharge_kw": 1}
SITE_VARS = {"import_kw": "imp", "export_kw": "exp"}


@dataclass(frozen=True)
class Row:
    """One linear row of an extension, in the formulation's names: ``lb <= Σ coef·var <= ub``."""

    family: str  # "extension <spec>.<constraint name>", as infeasibility reports name it
    label: str  # the constraint's index
    lb: float
    ub: float
    terms: tuple[tuple[str, tuple, float], ...]  # (variable name, index with ids, coefficient)

    def units(self) -> frozenset[str]:
        return frozenset(key[1] if name in RESERVE_VARS else key[0] for name, key, _ in self.terms if name in UNIT_VARS or name in RESERVE_VARS)

    def sites(self) -> frozenset[str]:
        return frozenset(key[0] for name, key, _ in self.terms if name in SITE_VARS)


def load(spec: str) -> Callable:
    """``"path/to/file.py:function"`` or ``"package.module:function"``."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise InputError("solver.extensions", "extension", spec, "'file.py:function' or 'package.module:function'")
    try:
        if module.endswith(".py"):
            found = importlib.util.spec_from_file_location(f"vpp_extension_{abs(hash(module))}", module)
            if found is None or found.loader is None:
                raise ImportError(f"no such file {module}")
            loaded = importlib.util.module_from_spec(found)
            found.loader.exec_module(loaded)
        else:
            loaded = importlib.import_module(module)
        fn = getattr(loaded, name)
    except (ImportError, AttributeError, FileNotFoundError) as err:
        raise InputError("solver.extensions", "extension", spec, f"an importable function ({err})") from None
    if not callable(fn):
        raise InputError("solver.extensions", "extension", spec, "a function")
    return fn


def compile_rows(p, specs: tuple[str, ...]) -> tuple[Row, ...]:
    """Run each extension on the formulation's variables for ``p`` and compile what it added."""
    import pyomo.environ as pyo
    from pyomo.repn import generate_standard_repn

    from optimizers.pyomo_model import variables

    out: list[Row] = []
    for spec in specs:
        rule = load(spec)
        m = variables(p)
        before = {c.name for c in m.component_objects(pyo.Constraint)}
        formulation = {v.local_name for v in m.component_objects(pyo.Var)}
        rule(m, p)
        for con in m.component_objects(pyo.Constraint, active=True):
            if con.name in before:
                continue
            for index, data in con.items():
                repn = generate_standard_repn(data.body, compute_values=True)
                if not repn.is_linear():
                    raise InputError("solver.extensions", f"extension {spec}: {con.name}[{index}]", str(data.body)[:80], "a linear constraint")
                const = float(repn.constant or 0.0)
                lb = -np.inf if data.lower is None else float(pyo.value(data.lower)) - const
                ub = np.inf if data.upper is None else float(pyo.value(data.upper)) - const
                terms = tuple(_term(spec, v, float(c), formulation) for v, c in zip(repn.linear_vars, repn.linear_coefs))
                out.append(Row(f"extension {spec}.{con.name}", str(index), lb, ub, terms))
    return tuple(out)


def _term(spec: str, v, coef: float, formulation: set[str]) -> tuple[str, tuple, float]:
    """A variable of the formulation by its name and index; one the extension made itself (a binary,
    say) as ``EXTENSION_VAR`` with what a column needs: owner, name, index, bounds, integrality."""
    name, index = v.parent_component().local_name, v.index() if isinstance(v.index(), tuple) else (v.index(),)
    if name in formulation:
        return name, index, coef
    lb = -np.inf if v.lb is None else float(v.lb)
    ub = np.inf if v.ub is None else float(v.ub)
    return EXTENSION_VAR, (spec, name, index, lb, ub, bool(v.is_integer() or v.is_binary())), coef


EXTENSION_VAR = "extension variable"


def rows_for(p, rows: tuple[Row, ...]) -> list[Row]:
    """The rows whose units and sites all belong to ``p`` (the whole problem, or a piece of it)."""
    units, sites = set(p.unit_ids), set(p.site_ids)
    return [r for r in rows if r.units() <= units and r.sites() <= sites]


def named_units(rows: tuple[Row, ...]) -> frozenset[str]:
    """Every unit some row speaks of (aggregation leaves them unmerged)."""
    return frozenset().union(*(r.units() for r in rows))


def coupled_units(rows: tuple[Row, ...]) -> list[frozenset[str]]:
    """Groups of units the rules tie together (a decomposition must keep each group in one piece): a
    row's units, joined over rows that share a variable of the extension's own."""
    groups: list[tuple[set[str], set]] = []
    for r in rows:
        units, own = set(r.units()), {key[:3] for name, key, _ in r.terms if name == EXTENSION_VAR}
        for g in [g for g in groups if g[1] & own]:
            groups.remove(g)
            units |= g[0]
            own |= g[1]
        groups.append((units, own))
    return [frozenset(u) for u, _ in groups if len(u) > 1]


def add_rows(b, rows: list[Row]) -> None:
    """Place compiled rows in the fast model ``b`` (``optimizers.context.Built``)."""
    p, lm = b.p, b.lm
    iu = {u: i for i, u in enumerate(p.unit_ids)}
    js = {s: j for j, s in enumerate(p.site_ids)}
    own: dict[tuple, int] = {}  # the extensions' own variables: one column each, made on first use
    for row in rows:
        cols, coefs = [], []
        for name, key, coef in row.terms:
            if name == EXTENSION_VAR:
                if key[:3] not in own:
                    spec, var, index, lb, ub, integer = key
                    own[key[:3]] = int(lm.var(f"extension {spec}.{var}", (1,), lb, ub, kind=INTEGER if integer else CONTINUOUS, labels=([str(index)],))[0])
                cols.append(own[key[:3]])
            elif name in UNIT_VARS:
                cols.append(int(getattr(b, UNIT_VARS[name])[iu[key[0]], key[1]]))
            elif name in RESERVE_VARS:
                pid = p.products[key[0]].id
                cols.append(int(b.reserve[pid][RESERVE_VARS[name]][iu[key[1]], key[2]]))
            elif name in SITE_VARS:
                cols.append(int(getattr(b, SITE_VARS[name])[js[key[0]], key[1]]))
            elif name == "dr_commit_kw" and key[0] in b.commitments:
                q = b.commitments[key[0]]
                cols.append(int(q.cols[0]))
                coef *= q.scale
            else:
                raise InputError("solver.extensions", row.family, name, "a variable of the formulation (charge_kw, discharge_kw, soc_kwh, reserve_*, import_kw, export_kw, dr_commit_kw)")
            coefs.append(coef)
        r = lm.rows(row.family, (1,), lb=row.lb, ub=row.ub, labels=([row.label],))
        lm.add_terms(np.full(len(cols), r[0]), np.array(coefs), np.array(cols, dtype=np.int64))
