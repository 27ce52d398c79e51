"""What the families share while the model is assembled: the model, the problem, and named handles."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from optimizers.lp import LinearModel
from optimizers.problem import Problem
from optimizers.quantity import Quantity, Total


@dataclass
class Built:
    lm: LinearModel
    p: Problem
    ch: np.ndarray  # (U, T) column ids
    dis: np.ndarray
    soc: np.ndarray  # (U, T) SoC at the END of each interval
    rows: dict[str, np.ndarray] = field(default_factory=dict)  # shared row blocks families add terms to
    imp: np.ndarray | None = None  # (S, T)
    exp: np.ndarray | None = None
    peak: np.ndarray | None = None  # (S,) -1 where no demand charge
    reserve: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # pid -> (from charge side, from discharge side)
    bids: dict[str, Quantity | Total] = field(default_factory=dict)
    commitments: dict[str, Quantity] = field(default_factory=dict)

    @property
    def labels_ut(self) -> tuple:
        return (self.p.unit_ids, self.p.index)

    @property
    def labels_st(self) -> tuple:
        return (self.p.site_ids, self.p.index)

    def soc_start(self) -> np.ndarray:
        """(U, T) column of the SoC at the start of each interval; -1 at t = 0 (the constant initial SoC)."""
        return np.concatenate([np.full((self.soc.shape[0], 1), -1), self.soc[:, :-1]], axis=1)


def pair_labels(ids: tuple[str, ...], index, i: np.ndarray, t: np.ndarray) -> tuple[list, ...]:
    """Row labels for a block over scattered (element, interval) pairs: one (id, interval start) per row."""
    return (list(zip(np.array(ids)[i], index[t])),)

