"""``vpp validate FILE``: recognise which of the engine's files FILE is by its shape, and check it whole.

Every YAML the engine reads has its own top-level keys: a config has ``sites``, a sweep ``config`` and
``grid``, an economics case ``station``, an overrides file only ``overrides``, a contracts file only
``contracts``. Validating one kind against another's schema gives messages about fields the author never
meant to write (``sites: missing`` for an overrides file), so the shape picks the schema first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from vpp.errors import InputError, InputErrors, from_validation_error

KINDS = ("config", "sweep", "economics case", "overrides", "contracts", "plant")


def kind_of(raw: Any) -> str | None:
    """Which kind of file ``raw`` (parsed YAML) is, or None when its shape matches none."""
    if not isinstance(raw, dict):
        return None
    keys = set(raw)
    if "sites" in keys:
        return "config"
    if "station" in keys:  # before the sweep: a case has a grid: of its own (the payers of deferral)
        return "economics case"
    if {"config", "grid"} <= keys or {"config", "from"} <= keys:
        return "sweep"
    if keys == {"overrides"}:
        return "overrides"
    if keys == {"contracts"}:
        return "contracts"
    if keys == {"plant"}:
        return "plant"
    return None


def expect_kind(raw: Any, kind: str, where: str) -> None:
    """Refuse, in one line, a file of another recognised kind (a config given where a case is read)."""
    found = kind_of(raw)
    if found is not None and found != kind:
        raise InputError(where, "(top level)", f"the keys of a {found} file", f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} file (vpp validate tells which kind a file is)")


def validate_file(path: Path, config: Path | None = None) -> str:
    """Check ``path`` as the kind its shape says; the one-line summary, or ``InputError(s)``.

    An overrides or contracts file names units and sites of a config: that config is ``config``, or the
    config beside the file whose ``overrides:`` names it.
    """
    from vpp.config import read_yaml

    raw = read_yaml(path)
    kind = kind_of(raw)
    if kind is None:
        keys = ", ".join(sorted(map(str, raw))) if isinstance(raw, dict) else type(raw).__name__
        raise InputError(str(path), "(top level)", keys or "an empty file", f"the keys of one of: {', '.join(KINDS)} (a config has sites:, a sweep grid:, an economics case station:)")
    return _CHECKS[kind](path, raw, config)


def _config(path: Path, raw: Any, config: Path | None) -> str:
    from optimizers.problem import build_problem
    from vpp.config import load_config

    cfg = load_config(path)
    if cfg.start is not None:  # the configured default window must be covered by the data
        build_problem(cfg.fleet, cfg.market, cfg.horizon_index(), overrides=cfg.overrides, terminal=cfg.terminal, where=str(path))
    products = ", ".join(p.id for p in cfg.market.products) or "none"
    return f"ok: {path}: config: {len(cfg.fleet.sites)} sites, {len(cfg.units)} units, products: {products}, DR events: {len(cfg.market.dr_events)}, overrides: {len(cfg.overrides)}"


def _sweep(path: Path, raw: Any, config: Path | None) -> str:
    from simulators.sweep import load_sweep

    sweep, scenarios = load_sweep(path)
    return f"ok: {path}: sweep of {len(scenarios)} scenarios over {sweep.config}, {sweep.start} .. {sweep.end}"


def _economics(path: Path, raw: Any, config: Path | None) -> str:
    from vpp.economics.case import parse_case

    case = parse_case(raw, str(path))
    return f"ok: {path}: economics case {case.name!r}, {case.station.power_kw:,.0f} kW / {case.station.energy_kwh:,.0f} kWh, {case.currency}"


def _overrides(path: Path, raw: Any, config: Path | None) -> str:
    from vpp.config import OverridesFileModel, load_config, load_overrides

    try:
        OverridesFileModel.model_validate(raw)
    except ValidationError as exc:
        raise from_validation_error(exc, str(path), data=raw) from None
    owner = config or _config_naming(path)
    if owner is None:
        return f"ok: {path}: overrides: {len(raw['overrides'] or [])} entries (structure only: pass --config to check their unit, site and product ids)"
    cfg = load_config(owner)
    found = load_overrides(path, cfg.fleet, cfg.market, cfg.timezone)
    return f"ok: {path}: overrides: {len(found)} entries, checked against {owner}"


def _contracts(path: Path, raw: Any, config: Path | None) -> str:
    from vpp.config import load_config
    from vpp.ledger.config import ContractModel, build_contracts

    try:
        models = TypeAdapter(list[ContractModel]).validate_python(raw["contracts"])
    except ValidationError as exc:
        raise from_validation_error(exc, str(path), data=raw["contracts"]) from None
    if config is None:
        return f"ok: {path}: contracts: {len(models)} (structure only: pass --config to check their units)"
    cfg = load_config(config)
    errors: list[InputError] = []
    build_contracts(models, cfg.fleet, cfg.currency, str(path), errors)
    if errors:
        raise InputErrors(errors)
    return f"ok: {path}: contracts: {len(models)}, checked against {config}"


def _plant(path: Path, raw: Any, config: Path | None) -> str:
    from vpp.plant.config import load_plant

    plant = load_plant(path)
    return f"ok: {path}: plant {plant.central.name!r}: {len(plant.sites)} sites, {len(plant.cfg.units)} units; the gateway configs agree (site ids, unit ids, ratings, currency, timezone, interval)"


def _config_naming(path: Path) -> Path | None:
    """The config next to an overrides file whose ``overrides:`` names it."""
    from vpp.config import read_yaml
    from vpp.errors import VppError

    for candidate in sorted(path.parent.glob("*.y*ml")):
        if candidate == path:
            continue
        try:
            data = read_yaml(candidate)
        except VppError:
            continue
        if isinstance(data, dict) and isinstance(data.get("overrides"), str) and (candidate.parent / data["overrides"]).resolve() == path.resolve():
            return candidate
    return None


_CHECKS = {"config": _config, "sweep": _sweep, "economics case": _economics, "overrides": _overrides, "contracts": _contracts, "plant": _plant}
