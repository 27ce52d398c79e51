"""Market data into the running daemon: a drop folder, ``PUT /market-data``, an MQTT topic and public feeds,
all through one path (``MarketDataIntake.accept``).

Every inlet hands over bytes, the data source they are laid out as, and where they came from. ``accept``
(on a worker thread: parsing never runs on the event loop) bounds the size, parses the table with the
config's CSV reader, checks and merges it (``vpp.market_data``: the rules live there), stores the changed
points with the delivery's provenance in one transaction, and only then shows them to the plan. A
refused delivery is one audited line (``daemon_market_deliveries``, and a rate-limited log line) and
changes nothing. A delivery that changed intervals of the horizon re-plans (``on_change``).

The MQTT inlet is a session of its own on the config's broker (client id ``<client_id>-market-data``):
a day of prices is kilobytes, and it must never queue behind, or delay, the devices' state messages.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge

from vpp.config import ConfigModel, SourceModel, VppConfig, read_yaml
from vpp.daemon.clock import Clock
from vpp.daemon.config import MarketDataModel
from vpp.daemon.market_data_store import last_arrivals, load_points, save_delivery
from vpp.daemon.store import Store
from vpp.errors import InputError, VppError
from vpp.forecasts import ForecastSpec
from vpp.log_limit import LogLimiter, held_note
from vpp.market_data import Book, Coverage, Grid, Limits, Merge, check_delivery, coverage, delivered, grid_of, merge, planned
from vpp.timeseries import Column, read_csv_series

log = logging.getLogger(__name__)

MQTT_INFLIGHT = 4  # MQTT deliveries being parsed at once; more are refused (a flood must not queue up threads)
DELIVER_TIMEOUT_S = 30.0


class DeliveryRejected(Exception):
    """A delivery refused, with the one line that says why (also the HTTP body, the .reason file)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Outcome:
    outcome: str  # accepted | duplicate
    source: str
    via: str
    added: int
    replaced: int
    unchanged: int
    span: tuple[pd.Timestamp, pd.Timestamp] | None  # first and last interval changed

    def json(self) -> dict[str, Any]:
        span = [t.isoformat() for t in self.span] if self.span else None
        return {"outcome": self.outcome, "source": self.source, "added": self.added, "replaced": self.replaced, "unchanged": self.unchanged, "changed": span}


@dataclass(frozen=True, slots=True)
class Layout:
    """A ``data:`` source as a delivery must be written: its CSV conventions and columns."""

    source: SourceModel
    zone: str
    columns: dict[str, Column]


class MarketDataIntake:
    def __init__(self, cfg: VppConfig, settings: MarketDataModel, store: Store, clock: Clock, registry: CollectorRegistry) -> None:
        self.settings, self.store, self.clock = settings, store, clock
        self.limits = Limits(max_age=pd.Timedelta(days=settings.max_age_days), max_ahead=pd.Timedelta(days=settings.max_ahead_days))
        self.spec = ForecastSpec(method=settings.fallback, timezone=cfg.timezone)
        self.on_change: Callable[[Outcome], None] = lambda outcome: None
        self._merging = threading.Lock()  # one delivery at a time, from its check to its apply: inlets run on threads
        self._lock = threading.Lock()  # the book, only while it is read or changed (the loop waits for nothing longer)
        self._limiter = LogLimiter()
        self._inflight = 0
        self._tasks: list[asyncio.Task] = []
        self._mqtt = None
        self.recent: deque[dict[str, Any]] = deque(maxlen=10)
        self.coverage: dict[str, Coverage] = {}
        self._view_key: tuple | None = None
        self.deliveries = Counter("vpp_market_data_deliveries_total", "Market-data deliveries by inlet and outcome", ["via", "outcome"], registry=registry)
        self.missing = Gauge("vpp_market_data_missing_intervals", "Intervals of the last plan's horizon no delivery covered (filled by the fallback forecaster)", ["series"], registry=registry)
        self.late = Gauge("vpp_market_data_late", "1 if the series' data due by the publication time has not arrived", ["series"], registry=registry)
        self.covered_until = Gauge("vpp_market_data_covered_until_timestamp_seconds", "End of the unbroken delivered/configured data from now, Unix time (market clock)", ["series"], registry=registry)
        self.retarget(cfg)
        for i, feed in enumerate(settings.feeds):  # a feed that can never deliver is a start-up error, not a log line a day
            layout = self.layouts.get(feed.source)
            if layout is None:
                raise InputError(str(cfg.path), f"daemon.market_data.feeds[{i}].source", feed.source, f"one of the config's data sources {sorted(self.layouts)}")
            for key in feed.columns:
                if key not in layout.columns:
                    raise InputError(str(cfg.path), f"daemon.market_data.feeds[{i}].columns", key, f"a series of source {feed.source!r}: one of {sorted(layout.columns)}")

    # ------------------------------------------------------------ config

    def retarget(self, cfg: VppConfig) -> None:
        """Read the config's data sources (layouts, grids, the files' values) and lay the stored deliveries
        over them. At start-up and when the config changed (a new source, a re-exported file)."""
        model = ConfigModel.model_validate(read_yaml(cfg.path))
        layouts: dict[str, Layout] = {}
        series: dict[str, pd.Series] = {}
        grids: dict[str, Grid] = {}
        for name, src in model.data.items():
            columns = {k: Column(c.column, c.unit, c.scale) for k, c in src.columns.items()}
            zone = src.timezone or model.timezone
            layouts[name] = Layout(src, zone, columns)
            for key, s in read_csv_series(cfg.path.parent / src.file, src.time_column, zone, columns, name, src.delimiter, src.decimal).items():
                series[s.name], grids[s.name] = s.values, grid_of(s, columns[key].unit)
        book = Book(series, grids)
        arrivals = last_arrivals(self.store.engine)
        for name, points in load_points(self.store.engine).items():
            if name in grids:
                book.apply(Merge({name: points}, len(points), 0, 0), arrivals[name])
            else:
                log.warning("market data for series %s is stored but no data: source of the config has it; not used", name)
        with self._merging, self._lock:
            self.cfg, self.layouts, self.book, self._view_key = cfg, layouts, book, None

    # ------------------------------------------------------------ the one path

    def accept(self, raw: bytes, source: str | None, via: str, origin: str) -> Outcome:
        """Check, merge and store one delivery (a worker thread). ``DeliveryRejected`` when refused."""
        arrived = self.clock.wall()
        now = self.clock.to_sim(arrived)
        origin = printable(origin)
        where = f"market data via {via} from {origin}"
        row = {"arrived_at": arrived.to_pydatetime(), "market_at": now.to_pydatetime(), "via": via, "origin": origin, "data_source": (source or "")[:128] or None}
        try:
            loaded = self._parse(raw, source, where)
            with self._merging:
                with self._lock:
                    m = merge(self.book.series, check_delivery(loaded, self.book.grids, now, self.cfg.currency, where, self.limits), now, where)
                outcome = "accepted" if m.changed else "duplicate"
                span = m.span
                detail = f"{span[0].isoformat()} .. {span[1].isoformat()}" if span else None
                stored = {**row, "outcome": outcome, "added": m.added, "replaced": m.replaced, "unchanged": m.unchanged, "detail": detail}
                try:  # stored before it is used: what the plan saw survives a restart
                    self.store.submit(save_delivery, self.store.engine, stored, m.points).result()
                except Exception as err:  # noqa: BLE001 - the database's own error; nothing was changed
                    raise DeliveryRejected(f"{where}: not stored ({type(err).__name__}); nothing changed", 503) from None
                with self._lock:
                    self.book.apply(m, arrived)
        except InputError as err:
            self._reject(row, str(err))
            raise DeliveryRejected(str(err)) from None
        result = Outcome(outcome, source or "", via, m.added, m.replaced, m.unchanged, span)
        self.deliveries.labels(via, outcome).inc()
        self.recent.appendleft({"at": arrived.isoformat(), "via": via, "origin": origin, **result.json()})
        if m.changed:
            log.info("market data accepted via=%s origin=%s source=%s added=%d replaced=%d unchanged=%d changed=%s", via, origin, source, m.added, m.replaced, m.unchanged, detail)
        else:
            log.info("market data duplicate via=%s origin=%s source=%s: all %d values already held, nothing changed", via, origin, source, m.unchanged)
        return result

    async def deliver(self, raw: bytes, source: str | None, via: str, origin: str) -> Outcome:
        """``accept`` off the event loop, bounded in time; a change is announced on the loop."""
        try:
            result = await asyncio.wait_for(asyncio.to_thread(self.accept, raw, source, via, origin), DELIVER_TIMEOUT_S)
        except TimeoutError:
            raise DeliveryRejected(f"market data via {via} from {origin}: not processed within {DELIVER_TIMEOUT_S:g} s", 503) from None
        if result.span is not None:
            self.on_change(result)
        return result

    def reject(self, via: str, origin: str, source: str | None, message: str) -> None:
        """An inlet's own refusal (too large before reading, too many at once): audited like the others."""
        arrived, origin = self.clock.wall(), printable(origin)
        row = {"arrived_at": arrived.to_pydatetime(), "market_at": self.clock.to_sim(arrived).to_pydatetime(), "via": via, "origin": origin, "data_source": (source or "")[:128] or None}
        self._reject(row, f"market data via {via} from {origin}: {message}")

    def _parse(self, raw: bytes, source: str | None, where: str) -> dict:
        if len(raw) > self.settings.max_bytes:
            raise InputError(where, "size", f"{len(raw)} bytes", f"at most {self.settings.max_bytes} bytes (daemon.market_data.max_bytes)")
        layout = self.layouts.get(source or "")
        if layout is None:
            raise InputError(where, "source", source, f"one of the config's data sources {sorted(self.layouts)}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(where, "encoding", "bytes that are not UTF-8", "UTF-8 text") from None
        src = layout.source
        header = next(csv.reader([text.lstrip("\ufeff").partition("\n")[0].strip("\r")], delimiter=src.delimiter), [])
        present = {k: c for k, c in layout.columns.items() if c.column in header}
        if not present:
            raise InputError(where, "columns", header[:12], f"a header with {src.time_column!r} and at least one of the source's columns {[c.column for c in layout.columns.values()]}")
        loaded = read_csv_series(Path(where), src.time_column, layout.zone, present, source or "", src.delimiter, src.decimal, text=text.lstrip("\ufeff"))
        return {s.name: s for s in loaded.values()}

    def _reject(self, row: dict[str, Any], message: str) -> None:
        self.deliveries.labels(row["via"], "rejected").inc()
        self.recent.appendleft({"at": pd.Timestamp(row["arrived_at"]).isoformat(), "via": row["via"], "origin": row["origin"], "outcome": "rejected", "source": row["data_source"], "error": message})
        self.store.submit(save_delivery, self.store.engine, {**row, "outcome": "rejected", "added": 0, "replaced": 0, "unchanged": 0, "detail": message[:2000]}, {})
        held = self._limiter.allow()
        if held is not None:
            log.warning("market data rejected, the data held stays: %s%s", message[:500], held_note(held))

    # ------------------------------------------------------------ the plan's and settlement's view

    def settlement_config(self, cfg: VppConfig) -> VppConfig:
        """``cfg`` on the configured and delivered values (no forecast: a missing price fails settlement)."""
        with self._lock:
            fleet, market = delivered(cfg.fleet, cfg.market, self.book)
        return dataclasses.replace(cfg, fleet=fleet, market=market)

    def plan_config(self, cfg: VppConfig, start: pd.Timestamp, end: pd.Timestamp, now: pd.Timestamp) -> VppConfig | None:
        """``cfg`` as the plan over [start, end) sees it (fallback forecasts filling what nobody delivered),
        or None when the view last returned still holds (same config, data and window)."""
        with self._lock:
            key = (id(cfg), self.book.version, start, end)
            if key == self._view_key:
                return None
            try:
                fleet, market, filled = planned(cfg.fleet, cfg.market, self.book, start, end, now, self.spec)
            except InputError as err:
                log.warning("market data: the fallback forecast failed, planning on delivered data only: %s", err)
                fleet, market = delivered(cfg.fleet, cfg.market, self.book)
                filled = {}
            self._view_key = key
            self._update_coverage(start, end, now, filled)
        for c in self.coverage.values():
            if c.missing_intervals:
                log.info("market data missing series=%s intervals=%d covered_until=%s late=%s: the plan uses the %s forecast there", c.series, c.missing_intervals, c.covered_until.isoformat(), c.late, self.spec.method)
        return dataclasses.replace(cfg, fleet=fleet, market=market)

    def _update_coverage(self, start: pd.Timestamp, end: pd.Timestamp, now: pd.Timestamp, filled: dict[str, int]) -> None:
        for name, missing in filled.items():
            c = coverage(self.book, name, start, end, now, missing, self.settings.published_at, self.cfg.timezone)
            self.coverage[name] = c
            self.missing.labels(name).set(c.missing_intervals)
            self.late.labels(name).set(int(c.late))
            self.covered_until.labels(name).set(c.covered_until.timestamp())

    def status(self) -> dict[str, Any]:
        return {
            "fallback": self.spec.method,
            "published_at": self.settings.published_at.isoformat() if self.settings.published_at else None,
            "series": {
                c.series: {"covered_until": c.covered_until.isoformat(), "missing_intervals": c.missing_intervals, "late": c.late, "last_arrival": c.last_arrival.isoformat() if c.last_arrival is not None else None}
                for c in self.coverage.values()
            },
            "recent": list(self.recent),
        }

    def late_series(self) -> list[str]:
        return sorted(c.series for c in self.coverage.values() if c.late)

    # ------------------------------------------------------------ inlets

    async def start(self) -> None:
        s = self.settings
        if s.drop_folder is not None:
            self._tasks.append(asyncio.create_task(self._watch_folder(self.cfg.path.parent / s.drop_folder), name="market-data drop folder"))
        if s.mqtt_topic is not None:
            from adapters.mqtt_session import MqttSession

            if self.cfg.mqtt is None:
                raise InputError(str(self.cfg.path), "daemon.market_data.mqtt_topic", s.mqtt_topic, "an mqtt: broker block to subscribe on")
            self._mqtt = MqttSession(self.cfg.mqtt, f"{self.cfg.mqtt.client_id}-market-data", [f"{s.mqtt_topic.rstrip('/')}/+"], self._on_mqtt)
            self._mqtt.start()
        for feed in s.feeds:
            self._tasks.append(asyncio.create_task(self._poll_feed(feed), name=f"market-data feed {feed.kind}"))

    async def stop(self) -> None:
        if self._mqtt is not None:
            await self._mqtt.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _watch_folder(self, folder: Path) -> None:
        """Each ``*.csv`` file put into ``folder`` (write it elsewhere, then move it in) is delivered once and
        moved to ``done/`` or, with a ``.reason`` file beside it, to ``rejected/``."""
        for sub in ("done", "rejected"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        while True:
            try:
                for path in await asyncio.to_thread(_waiting, folder):
                    await self._take(path)
            except Exception:  # noqa: BLE001 - a file system hiccup must not end the inlet
                log.exception("market data drop folder %s: scan failed", folder)
            await asyncio.sleep(self.settings.drop_poll_s)

    async def _take(self, path: Path) -> None:
        source = self._source_of(path.name)
        try:
            raw = await asyncio.to_thread(_read_bounded, path, self.settings.max_bytes)
            await self.deliver(raw, source, "drop", path.name)
            await asyncio.to_thread(_move, path, path.parent / "done", None)
        except DeliveryRejected as err:
            await asyncio.to_thread(_move, path, path.parent / "rejected", str(err))
        except OSError as err:  # gone, unreadable or not movable: left for the operator (taking it again changes nothing)
            held = self._limiter.allow()
            if held is not None:
                log.warning("market data drop folder: %s not taken (%s)%s", printable(path.name), err.strerror or err, held_note(held))

    def _source_of(self, name: str) -> str | None:
        """The data source a file is for: the longest source name the file name starts with, followed by
        '.', '-' or '_' (``prices-2020-08-19.csv`` is for source ``prices``)."""
        fits = [s for s in self.layouts if name == s or (name.startswith(s) and name[len(s)] in ".-_")]
        return max(fits, key=len) if fits else None

    def _on_mqtt(self, message: Any) -> None:
        """On the loop, per message (the session contains what escapes): bounded, then parsed on a thread."""
        topic = str(message.topic)
        source = topic.rsplit("/", 1)[-1]
        payload = message.payload if isinstance(message.payload, bytes | bytearray) else str(message.payload).encode()
        if len(payload) > self.settings.max_bytes:
            self.reject("mqtt", topic, source, f"payload of {len(payload)} bytes, more than {self.settings.max_bytes}")
            return
        if self._inflight >= MQTT_INFLIGHT:
            self.reject("mqtt", topic, source, f"{MQTT_INFLIGHT} deliveries already being processed; send again later")
            return
        self._inflight += 1
        task = asyncio.get_running_loop().create_task(self._deliver_mqtt(bytes(payload), source, topic))
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _deliver_mqtt(self, payload: bytes, source: str, topic: str) -> None:
        try:
            await self.deliver(payload, source, "mqtt", topic)
        except DeliveryRejected:
            pass  # audited and logged by accept
        finally:
            self._inflight -= 1

    async def _poll_feed(self, feed: Any) -> None:
        from adapters.feeds import delivery_csv, make_feed

        try:
            client = make_feed(feed)
        except (ImportError, VppError) as err:
            log.error("market data feed %s %s not started: %s", feed.kind, feed.area, err)
            return
        origin = f"{feed.kind}:{feed.area}" + (f":{feed.location}" if feed.location else "")
        while True:
            local = self.clock.now().tz_convert(self.cfg.timezone).normalize()
            layout = self.layouts[feed.source]
            try:
                frame = await asyncio.to_thread(client.fetch, local.tz_convert("UTC"), (local + pd.Timedelta(days=2)).tz_convert("UTC"))
                text = delivery_csv(frame, feed.columns, layout.source, layout.columns)
                await self.deliver(text.encode(), feed.source, "feed", origin)
            except DeliveryRejected:
                pass
            except Exception as err:  # noqa: BLE001 - a feed's outage or format change: try again next time
                held = self._limiter.allow()
                if held is not None:
                    log.warning("market data feed %s failed: %s: %s%s", origin, type(err).__name__, str(err)[:300], held_note(held))
            await asyncio.sleep(feed.every_min * 60.0)


def printable(text: str, limit: int = 256) -> str:
    """An origin as it may go into a log line and the audit: a file name or topic can hold a newline."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def _waiting(folder: Path) -> list[Path]:
    """CSV files waiting in the folder, oldest first (names starting with '.' are being written)."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".csv" and not p.name.startswith(".")]
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))


def _read_bounded(path: Path, limit: int) -> bytes:
    """At most ``limit + 1`` bytes: one more than allowed is enough to refuse it."""
    with path.open("rb") as f:
        return f.read(limit + 1)


def _move(path: Path, to: Path, reason: str | None) -> None:
    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S%f")
    target = to / f"{stamp}-{path.name}"
    os.replace(path, target)
    if reason is not None:
        target.with_name(target.name + ".reason").write_text(reason + "\n")
