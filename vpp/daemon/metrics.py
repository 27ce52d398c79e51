"""Prometheus metrics of one daemon, on a registry of its own (tests run several daemons in one process)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

TICK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
SOLVE_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.tick_duration = Histogram("vpp_tick_duration_seconds", "Control tick: telemetry to setpoints written", buckets=TICK_BUCKETS, registry=r)
        self.tick_overruns = Counter("vpp_tick_overruns_total", "Control ticks that outlasted their period, were skipped, or were missed in a stall", registry=r)
        self.ticks = Counter("vpp_ticks_total", "Control ticks run", registry=r)
        self.tick_stalls = Counter("vpp_tick_stalls_total", "Gaps of more than 1.5 periods between two finished ticks", registry=r)
        self.tick_age = Gauge("vpp_tick_age_seconds", "Wall seconds since the last control tick finished (monotonic clock)", registry=r)
        self.units_in_dispatch = Gauge("vpp_units_in_dispatch", "Units in dispatch at the last tick", registry=r)
        self.solve_duration = Histogram("vpp_solve_duration_seconds", "Re-optimization wall time, worker included", buckets=SOLVE_BUCKETS, registry=r)
        self.solves = Counter("vpp_solves_total", "Re-optimizations by outcome", ["outcome"], registry=r)
        self.unit_available = Gauge("vpp_unit_available", "1 if the unit is in dispatch", ["unit"], registry=r)
        self.setpoint_deviation = Gauge("vpp_setpoint_deviation_kw", "Measured power minus the last setpoint written", ["unit"], registry=r)
        self.setpoints_written = Counter("vpp_setpoints_written_total", "Setpoints written to devices", registry=r)
        self.adapter_errors = Counter("vpp_adapter_errors_total", "Failed device reads and writes", ["unit", "operation"], registry=r)
        self.override_rejections = Counter("vpp_override_rejections_total", "Overrides files or API bodies rejected", registry=r)
        self.schedule_age = Gauge("vpp_schedule_age_seconds", "Wall seconds since the schedule in force was computed", registry=r)
        self.settled_intervals = Counter("vpp_settled_intervals_total", "Market intervals settled into the ledger", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
