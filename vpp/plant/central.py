"""`vpp central`: the plant's aggregator — ingest what the gateways report, plan the plant, send each site its plan.

One asyncio loop: an MQTT session on the plant broker (``vpp/plant/v1/site/+/...``), a database
thread (``vpp.daemon.store.Store``) for idempotent ingest (``vpp.plant.ingest``), the daemon's solver
worker (``vpp.daemon.reoptimize.Reoptimizer``: the existing optimizer with its decomposition and Dask
paths, time-limited, never blocking the loop), a heartbeat, and an HTTP API.

Re-plans: every ``replan_every_min`` of market time and on events (a site going offline or coming
back). A site is offline when its last will says so or its heartbeat is older than ``site_offline_s``;
its units are planned out (``unit_out``) so the rest of the plant does not count on them. Each site's
cut of the plant schedule is published retained, QoS 1, with a plan id that increases across
restarts and a validity window (``plan_valid_min``), and recorded in ``plant_plans``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiomqtt
import pandas as pd
from fastapi import FastAPI, HTTPException
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from adapters.mqtt_session import MqttSession
from vpp.config import to_utc
from vpp.daemon import api, orphans
from vpp.daemon.clock import market_clock
from vpp.daemon.reoptimize import Reoptimizer, initial_soc, outage_overrides
from vpp.daemon.service import run_service
from vpp.daemon.store import Store
from vpp.db import open_database
from vpp.errors import AdapterError
from vpp.ledger.store import settled_totals
from vpp.log_limit import LogLimiter, held_note
from vpp.plant import ingest
from vpp.plant.config import Plant
from vpp.plant.messages import ROOT, Heartbeat, IntervalRecord, Rejected, Telemetry, central_topic, encode, parse, site_topic
from vpp.plant.plans import site_plan

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600  # the broker queues what the gateways send while the central is down, this long
PUBLISH_BATCH = 200  # plans in flight at once
BATCH_S = 0.1  # telemetry is stored in batches this far apart (one transaction each)
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)


class SiteView:
    """What the central knows of one site now."""

    def __init__(self, site_id: str, unit_ids: tuple[str, ...]) -> None:
        self.id, self.unit_ids = site_id, unit_ids
        self.heard: float | None = None  # monotonic, last heartbeat or message
        self.will_offline = False
        self.online = False
        self.mode: str | None = None
        self.plan_followed: int | None = None
        self.soc: dict[str, float | None] = {}
        self.last_sample: pd.Timestamp | None = None
        self.plan_id: int | None = None
        self.plan_delivered_at: float | None = None
        self.meter: dict[str, Any] | None = None  # the site's grid meter in its newest sample

    def json(self, now: float) -> dict[str, Any]:
        return {
            "online": self.online,
            "heard_s_ago": None if self.heard is None else now - self.heard,
            "mode": self.mode,
            "plan_sent": self.plan_id,
            "plan_followed": self.plan_followed,
            "last_sample": self.last_sample.isoformat() if self.last_sample is not None else None,
            "units": self.unit_ids,
            "soc": self.soc,
            "meter": self.meter,
        }


class Central:
    def __init__(self, plant: Plant) -> None:
        self.plant, c = plant, plant.central
        self.cfg = plant.cfg
        orphans.sweep(plant.path)  # the solver worker of a central killed before it could arm itself
        orphans.mark_children(plant.path)
        self.store = Store(open_database(plant.database_target()))
        # the daemon's market clock: anchored once, resumed across restarts (vpp.daemon.clock.market_clock)
        self.clock = market_clock(c.clock.speed, to_utc(c.clock.sim_start, self.cfg.timezone) if c.clock.sim_start else None, c.clock.wall_start, self.store)
        self.horizon = self.cfg.horizon
        self.sites = {s.id: SiteView(s.id, s.unit_ids) for s in plant.sites}
        self.site_of = {uid: s.id for s in plant.sites for uid in s.unit_ids}
        self.reoptimizer = Reoptimizer(self.cfg, c.solve_time_limit_s)
        leaves = ("telemetry", "interval", "heartbeat", "status")
        self.session = MqttSession(c.broker, c.broker.client_id, [f"{ROOT}/site/+/{leaf}" for leaf in leaves], self._on_message, status_topic=central_topic("status"), session_expiry_s=SESSION_EXPIRY_S)
        self.stop_event = asyncio.Event()
        self.plan_id = 0
        self.last_replan: dict[str, Any] = {"outcome": None}
        self._replan_task: asyncio.Task | None = None
        self._pending: list[str] = []
        self._batch: list[Telemetry] = []
        self.schedule = None  # the plant schedule the plans in force were cut from
        self._limiter = LogLimiter()
        self._tasks: list[asyncio.Task] = []
        self._api: api.Server | None = None
        r = self.registry = CollectorRegistry()
        self.received = Counter("vpp_central_messages_total", "Gateway messages by kind and outcome (new, replay, rejected; telemetry counted in unit rows)", ["kind", "outcome"], registry=r)
        self.latency = Histogram("vpp_central_ingest_latency_seconds", "Telemetry: sample time at the gateway to stored at the central (wall)", buckets=LATENCY_BUCKETS, registry=r)
        self.replans = Counter("vpp_central_replans_total", "Plant re-plans by outcome", ["outcome"], registry=r)
        Gauge("vpp_central_sites_online", "Sites online", registry=r).set_function(lambda: sum(s.online for s in self.sites.values()))

    # ------------------------------------------------------------ life cycle

    async def run(self, *, install_signals: bool = True) -> None:
        await run_service(self, install_signals=install_signals)

    async def start(self) -> None:
        c = self.plant.central
        sock = api.listen(c.api.host, c.api.port, str(self.plant.path))
        self.plan_id = await self._db(ingest.last_plan_id)
        await asyncio.to_thread(self.reoptimizer.start)
        self.session.start()
        self._api = api.server(self._app(), c.api.host, c.api.port)
        self._tasks += [
            asyncio.create_task(self._api.serve(sockets=[sock]), name="api"),
            asyncio.create_task(self._beat_loop(), name="central-beat"),
            asyncio.create_task(self._watch_loop(), name="central-watch"),
            asyncio.create_task(self._replan_loop(), name="central-replan"),
        ]
        log.info("central started plant=%s sites=%d units=%d broker=%s:%d api=%s:%d last_plan_id=%d", self.cfg.name, len(self.sites), len(self.cfg.units), c.broker.host, c.broker.port, c.api.host, c.api.port, self.plan_id)

    async def shutdown(self) -> None:
        log.info("central stopping")
        if self._api is not None:
            self._api.should_exit = True
        for task in self._tasks:
            if task.get_name() != "api":
                task.cancel()
        if self._replan_task is not None:
            self._replan_task.cancel()
        await asyncio.gather(*self._tasks, *([self._replan_task] if self._replan_task else []), return_exceptions=True)
        await self.session.stop()
        self._flush()  # what arrived before the session closed
        self.reoptimizer.close()
        await asyncio.to_thread(self.store.close)
        log.info("central stopped")

    # ------------------------------------------------------------ up: ingest

    def _on_message(self, message: aiomqtt.Message) -> None:
        parts = message.topic.value.split("/")
        payload = bytes(message.payload) if isinstance(message.payload, bytes | bytearray) else str(message.payload).encode()
        if len(parts) != 6 or parts[3] != "site" or parts[4] not in self.sites:
            self._reject("unknown", f"topic={message.topic.value[:200]} reason=no such site")
            return
        site, leaf = self.sites[parts[4]], parts[5]
        if leaf == "status":
            self._on_status(site, payload)
            return
        expect = {"telemetry": Telemetry, "interval": IntervalRecord, "heartbeat": Heartbeat}[leaf]
        try:
            msg = parse(payload, expect)
            if msg.site != site.id:
                raise Rejected(f"payload names site {msg.site}, published under site {site.id}")
        except Rejected as err:
            self._reject(leaf, f"site={site.id} kind={leaf} reason={err}")
            return
        self._heard(site)
        if isinstance(msg, Heartbeat):
            site.mode, site.plan_followed = msg.mode, msg.plan_id
            if site.plan_id is not None and msg.plan_id == site.plan_id and site.plan_delivered_at is None:
                site.plan_delivered_at = time.monotonic()
        elif isinstance(msg, Telemetry):
            if site.last_sample is None or pd.Timestamp(msg.sampled_at) >= site.last_sample:
                site.last_sample, site.mode = pd.Timestamp(msg.sampled_at), msg.mode
                site.soc = {u.id: u.soc for u in msg.units}
                site.meter = msg.meter.model_dump() if msg.meter is not None else None
            self._batch.append(msg)
            if len(self._batch) == 1:  # the first of a batch: store it all soon, in one transaction
                asyncio.get_running_loop().call_later(BATCH_S, self._flush)
        else:
            self.store.submit(self._store_interval, site, msg)

    def _reject(self, kind: str, what: str) -> None:
        """Count every refused message; log at most a burst a minute (a flooding gateway cannot flood the log)."""
        self.received.labels(kind, "rejected").inc()
        held = self._limiter.allow()
        if held is not None:
            log.warning("message rejected %s%s", what, held_note(held))

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            self.store.submit(self._store_telemetry, batch)

    def _store_telemetry(self, batch: list[Telemetry]) -> None:
        """Database thread: one transaction for the batch; the latency is sample to stored."""
        wall = self.clock.wall()
        new = ingest.ingest_telemetry(self.store.engine, batch, wall)
        rows = sum(len(m.units) for m in batch)
        self.received.labels("telemetry", "new").inc(new)
        self.received.labels("telemetry", "replay").inc(rows - new)
        for m in batch:
            self.latency.observe((wall - pd.Timestamp(m.sampled_at)).total_seconds())

    def _store_interval(self, site: SiteView, record: IntervalRecord) -> None:
        try:
            new = ingest.ingest_interval(self.store.engine, record, site.unit_ids, self.clock.wall())
        except ValueError as err:  # SettlementConflict is one: a record that changed after it was stored
            self.received.labels("interval", "rejected").inc()
            log.error("interval record rejected site=%s interval=%s reason=%s", site.id, record.interval_start.isoformat(), err)
            return
        self.received.labels("interval", "new" if new else "replay").inc()
        if new:
            log.info("interval record site=%s interval=%s rows=%d", site.id, pd.Timestamp(record.interval_start).isoformat(), len(record.rows))

    def _on_status(self, site: SiteView, payload: bytes) -> None:
        site.will_offline = payload == b"offline"
        if site.will_offline:
            self._set_online(site, False, "its last will: offline")
        else:
            self._heard(site)

    def _heard(self, site: SiteView) -> None:
        site.heard = time.monotonic()
        site.will_offline = False
        if not site.online:
            self._set_online(site, True, "heard from")

    def _set_online(self, site: SiteView, online: bool, why: str) -> None:
        if site.online == online:
            return
        site.online = online
        (log.info if online else log.warning)("site %s %s (%s)", site.id, "online" if online else "offline", why)
        self.request_replan(f"site {site.id} {'back' if online else 'offline'}")

    async def _watch_loop(self) -> None:
        limit = self.plant.central.site_offline_s
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            now = time.monotonic()
            for site in self.sites.values():
                if site.online and (site.heard is None or now - site.heard > limit):
                    self._set_online(site, False, f"silent for more than {limit:g} s")

    # ------------------------------------------------------------ down: plans

    async def _replan_loop(self) -> None:
        """The first plan once the sites had a moment to report, then every ``replan_every_min``."""
        await asyncio.sleep(min(2.0, self.plant.central.heartbeat_s * 2))
        every = self.clock.wall_seconds(self.plant.central.replan_every_min * 60.0)
        while True:
            self.request_replan("periodic")
            await asyncio.sleep(every)

    def request_replan(self, trigger: str) -> None:
        """Re-plan soon; requests during a re-plan collapse into one more after it (a thousand sites
        coming online are one re-plan, named by the first few)."""
        if self._replan_task is not None and not self._replan_task.done():
            if trigger not in self._pending:
                self._pending.append(trigger)
            return
        self._replan_task = asyncio.get_running_loop().create_task(self._replan_until_settled(trigger))

    async def _replan_until_settled(self, trigger: str | None) -> None:
        while trigger is not None:
            try:
                await self.replan(trigger)
            except Exception:
                log.exception("plant re-plan failed; the plans sent stay in force at the gateways")
            pending, self._pending = self._pending, []
            trigger = ("; ".join(pending[:3]) + (f"; and {len(pending) - 3} more" if len(pending) > 3 else "")) if pending else None

    async def replan(self, trigger: str) -> None:
        started, started_wall = time.monotonic(), self.clock.wall()
        now = self.clock.to_sim(started_wall)
        start = now.floor(self.cfg.interval)
        index = self.cfg.horizon_index(start, self.horizon)
        soc = {uid: s for site in self.sites.values() for uid, s in site.soc.items()}
        offline = {uid: f"site {site.id} offline" for site in self.sites.values() if not site.online for uid in site.unit_ids}
        outcome = await self.reoptimizer.solve(start, self.horizon, initial_soc(tuple(u.id for u in self.cfg.units), soc), outage_overrides(offline, index, offline), None)
        self.replans.labels(outcome.outcome).inc()
        if outcome.schedule is None:
            log.warning("plant re-plan %s trigger=%s: %s; the plans sent stay", outcome.outcome, trigger, outcome.error)
            self.last_replan = {"outcome": outcome.outcome, "trigger": trigger, "error": outcome.error}
            return
        wall = self.clock.wall()
        valid_until = start + pd.Timedelta(minutes=self.plant.central.plan_valid_min)
        self.plan_id += 1
        plan_id = self.plan_id
        self.schedule = outcome.schedule
        sites = {x.id: x for x in self.cfg.fleet.sites}
        rows_of = {uid: i for i, uid in enumerate(outcome.schedule.unit_ids)}
        power = outcome.schedule.power_kw
        plans = [site_plan(outcome.schedule, sites[s.id], s.unit_ids, plan_id, wall, valid_until, rows_of=rows_of, power_kw=power) for s in self.plant.sites]
        payloads = [encode(p) for p in plans]
        await self._db(ingest.save_plans, [(p.site, plan_id, wall, pd.Timestamp(p.valid_from), pd.Timestamp(p.valid_until), trigger, b) for p, b in zip(plans, payloads)])
        for p in plans:
            self.sites[p.site].plan_id, self.sites[p.site].plan_delivered_at = plan_id, None
        published = 0
        for k in range(0, len(plans), PUBLISH_BATCH):  # concurrently, each acknowledged
            chunk = list(zip(plans[k : k + PUBLISH_BATCH], payloads[k : k + PUBLISH_BATCH]))
            results = await asyncio.gather(*(self.session.publish(site_topic(p.site, "plan"), b, qos=1, retain=True) for p, b in chunk), return_exceptions=True)
            published += sum(r is None for r in results)
            for (p, _), r in zip(chunk, results):
                if r is not None:
                    log.warning("plan %d for site %s not published: %s (the next re-plan sends a newer one)", plan_id, p.site, r)
        self.last_replan = {"outcome": "ok", "trigger": trigger, "plan_id": plan_id, "solve_s": outcome.duration_s, "published": published, "total_s": time.monotonic() - started, "started_at": started_wall.isoformat(), "at": wall.isoformat()}
        log.info("plant plan %d trigger=%s start=%s valid_until=%s sites=%d/%d solve_s=%.2f", plan_id, trigger, start.isoformat(), valid_until.isoformat(), published, len(self.sites), outcome.duration_s)

    async def _beat_loop(self) -> None:
        while True:
            try:
                await self.session.publish(central_topic("heartbeat"), encode(Heartbeat(site="central", sent_at=self.clock.wall().to_pydatetime(), plan_id=self.plan_id or None, mode="central")), qos=0)
            except AdapterError:
                pass
            await asyncio.sleep(self.plant.central.heartbeat_s)

    # ------------------------------------------------------------ HTTP API

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "name": self.cfg.name,
            "wall_time": self.clock.wall().isoformat(),
            "market_time": self.clock.now().isoformat(),
            "broker_connected": self.session.connected.is_set(),
            "plan_id": self.plan_id,
            "replan": {"running": self._replan_task is not None and not self._replan_task.done(), **self.last_replan},
            "sites": {sid: s.json(now) for sid, s in self.sites.items()},
        }

    def _app(self) -> FastAPI:
        app = FastAPI(title="vpp central", docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/status")
        def status() -> dict[str, Any]:
            return self.status()

        @app.get("/schedule")
        def schedule() -> dict[str, Any]:
            s = self.schedule
            if s is None:
                raise HTTPException(404, "no plant plan yet")
            body = s.summary(self.cfg.currency)
            del body["unit_revenue"]  # per unit: the sites' own /schedule has it
            site_net = {sid: [round(float(v), 4) for v in s.site_net_kw[k]] for k, sid in enumerate(s.site_ids)}
            return {**body, "plan_id": self.plan_id, "intervals": [t.isoformat() for t in s.index], "site_net_kw": site_net}

        @app.get("/sites/{site_id}")
        def site(site_id: str) -> dict[str, Any]:
            if site_id not in self.sites:
                raise HTTPException(404, f"no site {site_id}")
            return self.sites[site_id].json(time.monotonic())

        @app.get("/ingest")
        async def counts() -> dict[str, Any]:
            return await self._db(ingest.counts)

        @app.get("/ledger")
        async def ledger() -> list[dict[str, Any]]:
            frame = await self._db(settled_totals, pd.Timestamp("2000-01-01", tz="UTC"), pd.Timestamp("2200-01-01", tz="UTC"))
            return [{"unit_id": r.unit_id, "site_id": r.site_id, "stream": r.stream, "amount_minor": int(r.amount_minor), "intervals": int(r.intervals)} for r in frame.itertuples()]

        @app.get("/metrics")
        def metrics() -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        @app.get("/healthz")
        def healthz() -> dict[str, Any]:
            return {"ok": self.session.connected.is_set()}

        return app

    def _db(self, fn, *args):
        return asyncio.wrap_future(self.store.submit(fn, self.store.engine, *args))
