"""Cycle counting for degradation reporting: equivalent full cycles and a rainflow depth histogram.

Equivalent full cycles follow the fleet model's definition (``BatteryUnit.max_cycles_per_day``):
energy discharged (AC) / usable energy. Degradation models weigh deep cycles far
more than shallow ones, so the report also counts cycles by depth with the
rainflow method (ASTM E1049-85, four-point variant; the residue counts as half
cycles) on each unit's SoC trace.
"""

from __future__ import annotations

import itertools

import numpy as np

DEPTH_BINS = (0.0, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)  # cycle depth as a share of the energy rating


def equivalent_full_cycles(discharge_kwh: np.ndarray, energy_kwh: np.ndarray) -> np.ndarray:
    """(U,) discharged energy over the energy rating."""
    return np.asarray(discharge_kwh, float) / np.asarray(energy_kwh, float)


def turning_points(trace: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """The reversals of ``trace`` (its first and last points included); flat runs and steps below ``tol`` merge."""
    x = np.asarray(trace, float)
    if len(x) < 3:
        return x
    d = np.diff(x)
    keep = np.abs(d) > tol
    x = np.concatenate([x[:1], x[1:][keep]])
    d = np.diff(x)
    if len(d) < 2:
        return x
    reversal = np.sign(d[1:]) != np.sign(d[:-1])
    return np.concatenate([x[:1], x[1:-1][reversal], x[-1:]])


def rainflow(trace: np.ndarray) -> list[tuple[float, float]]:
    """(depth, count) pairs: count 1 for a full cycle, 0.5 for a half cycle of the residue."""
    stack: list[float] = []
    cycles: list[tuple[float, float]] = []
    for point in turning_points(trace):
        stack.append(float(point))
        while len(stack) >= 3:
            x = abs(stack[-1] - stack[-2])
            y = abs(stack[-2] - stack[-3])
            if x < y:
                break
            if len(stack) == 3:
                cycles.append((y, 0.5))
                stack.pop(0)
            else:
                cycles.append((y, 1.0))
                last = stack.pop()
                stack.pop()
                stack.pop()
                stack.append(last)
    cycles.extend((abs(b - a), 0.5) for a, b in itertools.pairwise(stack))
    return cycles


def depth_histogram(soc_fraction: np.ndarray, bins: tuple[float, ...] = DEPTH_BINS) -> np.ndarray:
    """Cycle counts per depth bin (depth in SoC fraction) for one unit's SoC trace."""
    cycles = rainflow(soc_fraction)
    if not cycles:
        return np.zeros(len(bins) - 1)
    depth = np.array([c[0] for c in cycles])
    count = np.array([c[1] for c in cycles])
    hist, _ = np.histogram(np.clip(depth, bins[0], bins[-1]), bins=np.asarray(bins), weights=count)
    return hist


def bin_labels(bins: tuple[float, ...] = DEPTH_BINS) -> list[str]:
    return [f"{a:.0%}-{b:.0%}" for a, b in itertools.pairwise(bins)]
