"""Cycle counting (simulators.cycles): the ASTM E1049 rainflow example and equivalent full cycles by hand."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from simulators.cycles import (
    depth_histogram,
    equivalent_full_cycles,
    rainflow,
    turning_points,
)


def test_astm_e1049_example():
    # ASTM E1049-85 fig. 6 load history; expected counts from the standard's worked table
    cycles = rainflow(np.array([-2, 1, -3, 5, -1, 3, -4, 4, -2], float))
    counted: dict[float, float] = {}
    for depth, count in cycles:
        counted[depth] = counted.get(depth, 0.0) + count
    assert counted == {3.0: 0.5, 4.0: 1.5, 6.0: 0.5, 8.0: 1.0, 9.0: 0.5}


def test_one_full_charge_and_discharge_is_two_half_cycles_of_the_full_depth():
    soc = np.array([0.1, 0.5, 0.9, 0.9, 0.5, 0.1])
    assert turning_points(soc).tolist() == [0.1, 0.9, 0.1]
    hist = depth_histogram(soc)
    assert hist.sum() == 1.0 and hist[-1] == 1.0  # depth 0.8 lands in the 80-100 % bin


def test_equivalent_full_cycles_are_discharged_energy_over_rating():
    assert equivalent_full_cycles(np.array([2000.0, 500.0]), np.array([1000.0, 1000.0])).tolist() == [2.0, 0.5]


@given(st.lists(st.floats(min_value=0.0, max_value=1.0, allow_nan=False), min_size=2, max_size=60))
def test_rainflow_counts_every_reversal_once(trace):
    points = turning_points(np.array(trace))
    cycles = rainflow(np.array(trace))
    # each full cycle closes two ranges, each half cycle one: together they use every range between turning points
    assert sum(2 * c if c == 1.0 else 1 for _, c in cycles) == max(len(points) - 1, 0)
    assert all(0.0 <= d <= 1.0 for d, _ in cycles)
