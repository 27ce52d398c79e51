"""The sensitivity plot: λ needed for the target IRR against the spread, one curve per cycle count.

Drawn on a bare ``Figure`` with the Agg canvas, so it neither needs a display
nor changes pyplot's global backend for the rest of the process.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vpp.economics.transfer import Sensitivity


def plot_sensitivity(sensitivity: Sensitivity, currency: str, path: str | Path) -> None:
    """Write the PNG; the band 0 ≤ λ ≤ 1 marks the values a capacity sale can actually use."""
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.axhspan(0, 1, color="0.92", label="0 ≤ λ ≤ 1")
    for cycles, row in zip(sensitivity.cycles_per_year, sensitivity.transfer_factor_needed):
        needed = [float("nan") if value is None else value for value in row]
        axes.plot(sensitivity.spreads_per_kwh, needed, marker="o", label=f"{cycles:g} cycles/yr")
    axes.set_xlabel(f"spread (or shaving price), {currency}/kWh")
    axes.set_ylabel(f"λ at which IRR = {sensitivity.target_irr:.1%}")
    axes.set_title("Transfer factor at which the station just meets its target IRR")
    axes.grid(True, alpha=0.4)
    axes.legend()
    figure.savefig(path, dpi=120)
