"""What a grid meter says, and whether to believe it: readings, plausibility, demand windows. No I/O.

A reading the site control loop acts on must be fresh, finite, within what the
connection can physically carry, not frozen (a meter's comms module that hangs
keeps answering its last value), and its energy counters must not run
backwards. ``MeterCheck`` holds the little history those checks need and gives
a verdict per reading; ``DemandWindow`` integrates import over the tariff's
demand window (market time) so the loop can keep the window's average under
its target by discharging *before* the window closes.
Sign: power + = export at the connection point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

RATING_TOLERANCE = 1.5  # a meter may read this far past the connection's rating (short overloads) before it is implausible


@dataclass(frozen=True, slots=True)
class MeterReading:
    site_id: str
    timestamp: datetime  # tz-aware wall time the registers were read (or the MQTT message's own stamp)
    power_kw: float | None  # + export / − import, after CT/PT ratio and invert
    import_kwh: float | None = None  # total counters, after the ratios
    export_kwh: float | None = None


def sub_meter_key(site_id: str, sub_id: str) -> str:
    """A sub-meter's readings carry this as their site id (and are stored under it): <site>/<sub-meter>."""
    return f"{site_id}/{sub_id}"


def connection_rating_kw(configured_kw: float | None, import_limit_kw: float, export_limit_kw: float, battery_rating_kw: float) -> float:
    """What the connection can carry, for the "beyond the rating" check: the configured rating, else the
    larger finite site limit, else (no limits at all) ten times the batteries' rating."""
    if configured_kw is not None:
        return configured_kw
    finite = [v for v in (import_limit_kw, export_limit_kw) if math.isfinite(v) and v > 0]
    return max(finite) if finite else 10.0 * battery_rating_kw


@dataclass(frozen=True, slots=True)
class MeterVerdict:
    ok: bool
    reason: str = ""  # why not ("stale 1.3 s", "frozen 10 s", "beyond rating", "import counter went backwards", ...)


class MeterCheck:
    """Plausibility of one meter's readings over time (one instance per meter)."""

    def __init__(self, rating_kw: float, frozen_after_s: float) -> None:
        self.rating_kw = rating_kw
        self.frozen_after_s = frozen_after_s
        self._value: float | None = None
        self._value_since: datetime | None = None
        self._counters: tuple[float | None, float | None] = (None, None)
        self._import: float | None = None
        self._export: float | None = None
        self._backwards: str | None = None

    def accept(self, reading: MeterReading) -> MeterVerdict:
        """Judge a new reading; remembers what the frozen and counter checks need."""
        p = reading.power_kw
        if p is None or not math.isfinite(p):
            return MeterVerdict(False, "power missing or not finite")
        if abs(p) > self.rating_kw * RATING_TOLERANCE:
            return MeterVerdict(False, f"power {p:.1f} kW beyond {RATING_TOLERANCE:g}x the connection rating {self.rating_kw:g} kW")
        counters = (reading.import_kwh, reading.export_kwh)
        if p != self._value or counters != self._counters:  # a coarse register may hold its power; counters still move
            self._value, self._counters, self._value_since = p, counters, reading.timestamp
        for name, value, last in (("import", reading.import_kwh, self._import), ("export", reading.export_kwh, self._export)):
            if value is not None and last is not None and value < last:
                self._backwards = f"{name} counter went backwards ({last:.3f} -> {value:.3f} kWh)"
        if reading.import_kwh is not None:
            self._import = reading.import_kwh
        if reading.export_kwh is not None:
            self._export = reading.export_kwh
        if self._backwards is not None:  # a meter whose counters ran back is replaced or reset: an operator clears it (restart)
            return MeterVerdict(False, self._backwards)
        return self.verdict(reading.timestamp)

    def verdict(self, now: datetime) -> MeterVerdict:
        """Frozen is a matter of time: the same value may turn frozen without a new reading."""
        if self._value_since is not None and (held := (now - self._value_since).total_seconds()) >= self.frozen_after_s:
            return MeterVerdict(False, f"frozen at {self._value:.3f} kW (counters too) for {held:.0f} s")
        return MeterVerdict(True)


def staleness(reading: MeterReading | None, now: datetime, stale_after_s: float) -> MeterVerdict:
    if reading is None:
        return MeterVerdict(False, "no reading yet")
    age_s = (now - reading.timestamp).total_seconds()
    if age_s > stale_after_s:
        return MeterVerdict(False, f"stale ({age_s:.1f} s old)")
    return MeterVerdict(True)


@dataclass
class DemandWindow:
    """Import energy in the current demand window of one site (market time, windows aligned to the epoch).

    ``allowed_import_kw`` is the constant import that, held for the rest of the window, lands the
    window's average exactly on the target: the loop caps import there, so a spike early in the window
    is paid for by discharging for the rest of it, not discovered when the window closes.
    """

    window_s: float
    start_s: float | None = None  # market epoch seconds of the window's start
    energy_kwh: float = 0.0
    last_s: float | None = None
    last_import_kw: float = 0.0

    def add(self, t_s: float, meter_export_kw: float) -> tuple[float, float] | None:
        """Credit import up to ``t_s`` (step-hold of the last reading); return (start_s, average kW) of the
        window this reading closed, else None."""
        closed = None
        if self.start_s is None:
            self.start_s, self.last_s = math.floor(t_s / self.window_s) * self.window_s, t_s
        last = self.last_s if self.last_s is not None else t_s
        end = self.start_s + self.window_s
        if t_s >= end:
            self.energy_kwh += self.last_import_kw * max(end - last, 0.0) / 3600.0
            closed = (self.start_s, self.energy_kwh * 3600.0 / self.window_s)
            self.start_s = math.floor(t_s / self.window_s) * self.window_s
            self.energy_kwh, last = 0.0, max(last, self.start_s)
        self.energy_kwh += self.last_import_kw * max(t_s - last, 0.0) / 3600.0
        self.last_s, self.last_import_kw = t_s, max(-meter_export_kw, 0.0)
        return closed

    def elapsed_s(self, t_s: float) -> float:
        return 0.0 if self.start_s is None else min(max(t_s - self.start_s, 0.0), self.window_s)

    def average_kw(self, t_s: float) -> float:
        """The window's average so far as if it closed now (what a breach would bill, for /status)."""
        elapsed = self.elapsed_s(t_s)
        return self.energy_kwh * 3600.0 / elapsed if elapsed > 0 else 0.0


STEP_TOLERANCE = 0.2  # the meter may move this share more or less than the battery (losses, noise, other loads)


@dataclass(frozen=True, slots=True)
class StepVerdict:
    ok: bool
    ratio: float  # meter move / battery move (1: as expected; −1: sign inverted)
    message: str


def judge_step(expected_kw: float, meter_delta_kw: float) -> StepVerdict:
    """The commissioning verdict: did the meter (+ export) move with the battery (+ discharge), by as much?"""
    if abs(expected_kw) < 1e-6:
        return StepVerdict(False, math.nan, "the battery did not move: nothing to compare the meter with")
    ratio = meter_delta_kw / expected_kw
    if abs(ratio - 1.0) <= STEP_TOLERANCE:
        return StepVerdict(True, ratio, f"meter moved {meter_delta_kw:+.1f} kW for a battery move of {expected_kw:+.1f} kW: sign and scale agree")
    if abs(ratio + 1.0) <= STEP_TOLERANCE:
        return StepVerdict(False, ratio, f"meter moved {meter_delta_kw:+.1f} kW for {expected_kw:+.1f} kW: the sign is inverted (set meter.invert: true, or turn the CT round)")
    if abs(ratio) < STEP_TOLERANCE:
        return StepVerdict(False, ratio, f"meter moved {meter_delta_kw:+.1f} kW for {expected_kw:+.1f} kW: it does not see this battery (another site's meter, or a sub-meter?)")
    return StepVerdict(False, ratio, f"meter moved {meter_delta_kw:+.1f} kW for {expected_kw:+.1f} kW ({ratio:+.2f}x): wrong scale (check ct_ratio / pt_ratio{'' if ratio > 0 else ', and the sign'})")
