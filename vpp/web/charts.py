"""Line charts drawn as SVG on the server: no chart library, no JavaScript, nothing to vendor or download.

A chart is a few hundred points (one per interval or telemetry bucket), so the SVG is small, renders
instantly, prints into the page's PDF/screenshot as it is, and is escaped by construction (labels go
through ``markupsafe``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from markupsafe import Markup, escape

COLORS = ("#2563eb", "#f97316", "#16a34a", "#9333ea", "#dc2626")


@dataclass(frozen=True)
class Series:
    label: str
    t: pd.DatetimeIndex
    y: np.ndarray
    step: bool = False  # interval values (held over the interval) rather than samples


def line_chart(series: Sequence[Series], *, title: str, unit: str, timezone: str, span: tuple[pd.Timestamp, pd.Timestamp] | None = None, width: int = 900, height: int = 220) -> Markup:
    """``span``: the time axis (so charts of one window line up); points outside it are dropped."""
    left, right, top, bottom = 56, 12, 24, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    if span is not None:
        series = [Series(s.label, s.t[(s.t >= span[0]) & (s.t <= span[1])], np.asarray(s.y, float)[(s.t >= span[0]) & (s.t <= span[1])], s.step) for s in series]
    shown = [s for s in series if len(s.t)]
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{escape(title)}">', f'<text x="{left}" y="15" class="chart-title">{escape(title)} ({escape(unit)})</text>']
    if not shown:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="chart-empty">–</text></svg>')
        return Markup("".join(parts))
    t0 = pd.Timestamp(span[0]).value if span is not None else min(s.t[0] for s in shown).value
    t1 = pd.Timestamp(span[1]).value if span is not None else max(s.t[-1] for s in shown).value
    t1 = t1 if t1 > t0 else t0 + 1
    ys = np.concatenate([np.asarray(s.y, float)[np.isfinite(np.asarray(s.y, float))] for s in shown] or [np.zeros(1)])
    lo, hi = (float(ys.min()), float(ys.max())) if ys.size else (0.0, 1.0)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    hi = hi if hi > lo else lo + 1.0
    x = lambda v: left + (v - t0) / (t1 - t0) * plot_w  # noqa: E731
    y = lambda v: top + (hi - v) / (hi - lo) * plot_h  # noqa: E731
    parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(0):.1f}" y2="{y(0):.1f}" class="chart-zero"/>')
    for v in (lo, hi):
        parts.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end" class="chart-axis">{v:,.0f}</text>')
    for frac in (0.0, 0.5, 1.0):
        stamp = pd.Timestamp(int(t0 + frac * (t1 - t0)), tz="UTC").tz_convert(timezone).strftime("%m-%d %H:%M")
        parts.append(f'<text x="{left + frac * plot_w:.1f}" y="{height - 8}" text-anchor="{("start", "middle", "end")[int(frac * 2)]}" class="chart-axis">{stamp}</text>')
    for k, s in enumerate(shown):
        tv = s.t.as_unit("ns").asi8  # .value below is ns; pandas may hold another resolution
        yv = np.asarray(s.y, float)
        points: list[str] = []
        for i, (tt, vv) in enumerate(zip(tv, yv)):
            if not np.isfinite(vv):
                continue
            if s.step and i > 0 and points:
                points.append(f"{x(tt):.1f},{float(points[-1].split(',')[1]):.1f}")
            points.append(f"{x(tt):.1f},{y(vv):.1f}")
        color = COLORS[k % len(COLORS)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{" ".join(points)}"/>')
        parts.append(f'<text x="{left + 8 + 150 * k}" y="{top + 12}" fill="{color}" class="chart-legend">■ {escape(s.label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
