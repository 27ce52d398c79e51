"""One call from a loaded config to a schedule: what the CLI, the simulator and the daemon share."""

from __future__ import annotations

import numpy as np
import pandas as pd

from optimizers.model import optimize
from optimizers.problem import Problem, build_problem
from vpp.config import VppConfig
from vpp.overrides import Override
from vpp.schedule import Schedule, SolverOptions


def optimize_config(
    cfg: VppConfig,
    start: pd.Timestamp | None = None,
    horizon: pd.Timedelta | None = None,
    *,
    initial_soc: dict[str, float] | None = None,
    overrides: tuple[Override, ...] | None = None,
    fixed_bids_kw: dict[str, np.ndarray] | None = None,
    options: SolverOptions | None = None,
    backend: str = "fast",
) -> tuple[Problem, Schedule]:
    """``backend`` "pyomo" solves the named Pyomo formulation (``optimizers.pyomo_model``) instead of
    the fast builder: the reference, slower, for checking and extending."""
    index = cfg.horizon_index(start, horizon)
    problem = build_problem(
        cfg.fleet,
        cfg.market,
        index,
        initial_soc=initial_soc,
        overrides=cfg.overrides if overrides is None else overrides,
        terminal=cfg.terminal,
        fixed_bids_kw=fixed_bids_kw,
        where=str(cfg.path),
    )
    if backend == "pyomo":
        from optimizers.pyomo_model import solve_pyomo

        return problem, solve_pyomo(problem, options or cfg.solver)
    return problem, optimize(problem, options or cfg.solver)
