"""The gateway's link to its plant's central (``daemon.central``): report up, follow plans down, fall back.

Up: a telemetry sample every ``telemetry_every_s`` and one record per settled interval go through the
outbox (``vpp.daemon.outbox``): stored first, published QoS 1 oldest first, deleted after the PUBACK,
replayed after a reconnect (after a random wait of up to ``replay_jitter_s``). A heartbeat each way says
the other end is alive.

Down: the retained plan of this site. A plan is checked whole (``vpp.plant.messages.parse``, then
``vpp.plant.plans.refusal``); a refused one is logged in one line and the plan in force stays. The
newest good plan becomes the schedule in force, saved like a solved one (so settlement reads its
reserves) and dispatched through the same clamps; its envelope becomes fleet caps. The last accepted
plan is also kept as it arrived (``plant_plan``) and offered again at start-up, so a gateway restarted
while the broker is away follows it until it expires instead of falling back at once.

Mode (``/status`` ``central.mode``, metric ``vpp_central_mode``): ``central`` (a valid plan, the central
heard from), ``cached`` (a valid plan, the central silent: it is followed until ``valid_until``),
then the fallback: ``local`` (the gateway's own optimizer, as standalone) or ``idle`` (0 W). A new
valid plan brings it back to ``central``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import aiomqtt
import numpy as np
import pandas as pd
from prometheus_client import Counter, Gauge

from adapters.mqtt_session import MqttSession
from vpp.daemon import outbox
from vpp.daemon.config import CentralLinkModel
from vpp.errors import AdapterError
from vpp.overrides import Override
from vpp.plant.messages import Heartbeat, MeterTelemetry, Rejected, SitePlan, Telemetry, UnitTelemetry, central_topic, encode, parse, site_topic
from vpp.plant.plans import envelope_overrides, refusal, schedule_of

if TYPE_CHECKING:
    from vpp.daemon.app import Daemon

log = logging.getLogger(__name__)

MODES = ("central", "cached", "local", "idle")
BATCH = 200  # outbox rows published per round (concurrently, acknowledged one by one)
CENTRAL_LOST_BEATS = 3


class PlantLink:
    def __init__(self, daemon: Daemon, link: CentralLinkModel) -> None:
        self.d, self.link = daemon, link
        self.site = link.site
        self.unit_ids = tuple(u.id for u in daemon.cfg.units)
        self.session = MqttSession(link.broker, link.broker.client_id, [site_topic(self.site, "plan"), central_topic("heartbeat")], self._on_message, status_topic=site_topic(self.site, "status"), on_link=self._on_link)
        self.mode = link.fallback
        self.plan: SitePlan | None = None
        self.plan_id: int | None = None
        self._plan_digest: bytes | None = None
        self._overrides: tuple[Override, ...] = ()
        self._central_heard: float | None = None  # monotonic
        self._reconnected = asyncio.Event()
        self._new = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.published = 0
        self.rejections = 0
        self.last_rejection: str | None = None
        self.outbox_rows = 0
        r = daemon.metrics.registry
        self._mode_gauge = Gauge("vpp_central_mode", "1 for the mode the gateway is in (central, cached, local, idle)", ["mode"], registry=r)
        self._rejected = Counter("vpp_plan_rejections_total", "Central plans refused (malformed, oversized, stale, replayed, wrong site)", registry=r)
        self._sent = Counter("vpp_uplink_published_total", "Outbox messages acknowledged by the plant broker", registry=r)
        Gauge("vpp_outbox_rows", "Messages waiting in the outbox for the plant broker", registry=r).set_function(lambda: self.outbox_rows)
        self._show_mode()

    # ------------------------------------------------------------ life cycle

    async def start(self) -> None:
        stored = await self._db(outbox.get_state, "plan_id")
        # A plan older than the last one accepted is a replay, across restarts too; the last one itself is
        # accepted once more (it is what the broker hands back retained, and may still be valid).
        self.plan_id = int(stored) - 1 if stored is not None else None
        self.outbox_rows = await self._db(outbox.pending)
        if self.mode == "idle":  # no plan yet: nothing restored from a standalone run may drive the units
            held = self.d.schedule
            held.schedule, held.id, held.trigger, held.source = None, None, "waiting for a central plan", "idle"
        # the plan in force before a restart is followed again while it is valid (checked like any arrival),
        # so a gateway restarted while the broker is away keeps its cached plan instead of falling back
        restored = await self._db(outbox.last_plan, self.site)
        if restored is not None:
            self._on_plan(restored, "restored")
        self.session.start()
        for name, job in (("plant-telemetry", self._telemetry_loop), ("plant-drain", self._drain_loop), ("plant-beat", self._beat_loop), ("plant-mode", self._mode_loop)):
            self._tasks.append(asyncio.create_task(job(), name=name))
        log.info("central link site=%s broker=%s:%d fallback=%s last_plan_id=%s outbox=%d", self.site, self.link.broker.host, self.link.broker.port, self.link.fallback, self.plan_id, self.outbox_rows)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.session.stop()

    # ------------------------------------------------------------ what the daemon asks

    def planning_locally(self) -> bool:
        """May the gateway's own optimizer set the schedule in force?"""
        return self.mode == "local"

    def overrides(self) -> tuple[Override, ...]:
        return self._overrides if self.mode in ("central", "cached") else ()

    def status(self) -> dict[str, Any]:
        heard = None if self._central_heard is None else time.monotonic() - self._central_heard
        return {
            "site": self.site,
            "mode": self.mode,
            "fallback": self.link.fallback,
            "plan_id": self.plan.plan_id if self.plan is not None else None,
            "plan_valid_until": pd.Timestamp(self.plan.valid_until).isoformat() if self.plan is not None else None,
            "central_heard_s_ago": heard,
            "broker_connected": self.session.connected.is_set(),
            "outbox_rows": self.outbox_rows,
            "published": self.published,
            "plan_rejections": self.rejections,
            "last_rejection": self.last_rejection,
        }

    # ------------------------------------------------------------ down: plans and the central's heartbeat

    def _on_message(self, message: aiomqtt.Message) -> None:
        payload = bytes(message.payload) if isinstance(message.payload, bytes | bytearray) else str(message.payload).encode()
        if message.topic.matches(central_topic("heartbeat")):
            try:
                beat = parse(payload, Heartbeat)
            except Rejected as err:
                log.warning("central heartbeat rejected reason=%s", err)
                return
            if beat.site == "central":
                self._central_heard = time.monotonic()
                self._update_mode()
            return
        if not message.retain:  # a plan published just now (not the broker's retained copy): the central is alive
            self._central_heard = time.monotonic()
        self._on_plan(payload, "retained" if message.retain else "published")

    def _on_plan(self, payload: bytes, origin: str) -> None:
        digest = hashlib.sha256(payload).digest()
        if digest == self._plan_digest:  # the retained plan again, after a reconnect: nothing new
            return
        wall = self.d.clock.wall()
        try:
            plan = parse(payload, SitePlan)
            reason = refusal(plan, self.site, self.unit_ids, self.plan_id, self.d.clock.to_sim(wall), wall, self.link.max_plan_age_s, self.d.interval)
        except Rejected as err:
            plan, reason = None, str(err)
        if reason is not None:
            self.rejections += 1
            self._rejected.inc()
            self.last_rejection = reason
            kept = f"plan {self.plan.plan_id} stays in force" if self.plan is not None else f"mode {self.mode} stays"
            log.warning("central plan rejected site=%s plan_id=%s origin=%s reason=%s; %s", self.site, getattr(plan, "plan_id", "?"), origin, reason, kept)
            return
        assert plan is not None
        self.plan_id, self._plan_digest = plan.plan_id, digest
        asyncio.get_running_loop().create_task(self._install(plan, payload, origin))

    async def _install(self, plan: SitePlan, payload: bytes, origin: str) -> None:
        schedule = schedule_of(plan, self.site)
        wall = self.d.clock.wall()
        store = self.d.store
        schedule_id = await asyncio.wrap_future(store.submit(partial(store.save_schedule, schedule, created_at=wall, market_at=self.d.clock.to_sim(wall), trigger=f"central plan {plan.plan_id}", points_until=schedule.index[0] + self.d.reopt_every)))
        await self._db(outbox.set_state, "plan_id", str(plan.plan_id))
        await self._db(outbox.save_plan, self.site, payload)
        if self.plan is not None and plan.plan_id < self.plan.plan_id:
            return
        held = self.d.schedule
        held.schedule, held.id, held.created_at, held.trigger, held.source = schedule, schedule_id, wall, f"central plan {plan.plan_id}", "central"
        self.plan, self._overrides = plan, envelope_overrides(plan)
        log.info("central plan in force site=%s plan_id=%d origin=%s schedule id=%d valid_until=%s", self.site, plan.plan_id, origin, schedule_id, pd.Timestamp(plan.valid_until).isoformat())
        self._update_mode()

    def _update_mode(self) -> None:
        now = self.d.clock.now()
        following = self.plan is not None and pd.Timestamp(self.plan.valid_until) > now and self.d.schedule.source == "central"
        heard = self._central_heard is not None and time.monotonic() - self._central_heard <= CENTRAL_LOST_BEATS * self.link.heartbeat_s
        mode = ("central" if heard else "cached") if following else self.link.fallback
        if mode == self.mode:
            return
        before, self.mode = self.mode, mode
        self._show_mode()
        if mode == "cached":
            log.warning("central silent for more than %g s: following the cached plan %d until %s", CENTRAL_LOST_BEATS * self.link.heartbeat_s, self.plan.plan_id, pd.Timestamp(self.plan.valid_until).isoformat())
        elif mode in ("local", "idle"):
            log.warning("central plan mode=%s -> fallback %s (plan %s expired or none)", before, mode, self.plan.plan_id if self.plan else "-")
            if mode == "idle":
                held = self.d.schedule
                held.schedule, held.id, held.trigger, held.source = None, None, "central plan expired", "idle"
            elif self.d._planning:
                self.d.request_reoptimization("central plan expired: local fallback")
        else:
            log.info("central plan mode=%s -> central (plan %d)", before, self.plan.plan_id)

    def _show_mode(self) -> None:
        for m in MODES:
            self._mode_gauge.labels(m).set(1.0 if m == self.mode else 0.0)

    async def _mode_loop(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.link.heartbeat_s / 2))
            self._update_mode()

    # ------------------------------------------------------------ up: telemetry, interval records, heartbeat

    def _on_link(self, up: bool) -> None:
        if up:
            self._reconnected.set()

    async def _telemetry_loop(self) -> None:
        cfg = self.d.cfg
        while True:
            await asyncio.sleep(self.link.telemetry_every_s)
            wall = self.d.clock.wall()
            await self._db(outbox.enqueue, "telemetry", site_topic(self.site, "telemetry"), encode(self._sample(wall)), wall)
            await self._db(outbox.enqueue_intervals, self.site, cfg.currency, cfg.interval, self.unit_ids, wall)
            self.outbox_rows = await self._db(outbox.pending)
            if self.outbox_rows > self.link.outbox_max_rows:
                await self._db(outbox.trim, self.link.outbox_max_rows)
            self._new.set()

    def _sample(self, wall: pd.Timestamp) -> Telemetry:
        last = self.d.control.last
        result = last.result if last is not None else None
        dispatched = result.dispatched() if result is not None else None
        units = []
        for i, uid in enumerate(self.unit_ids):
            t = self.d.state.telemetry(uid)
            commanded = float(result.power_kw[i]) if result is not None and not np.isnan(result.power_kw[i]) else None
            units.append(
                UnitTelemetry(
                    id=uid,
                    soc=t.soc if t is not None else None,
                    power_kw=t.power_kw if t is not None else None,
                    commanded_kw=commanded,
                    max_charge_kw=t.max_charge_kw if t is not None else None,
                    max_discharge_kw=t.max_discharge_kw if t is not None else None,
                    in_dispatch=bool(dispatched is not None and dispatched[i]),
                    reason=(result.reasons[i] if result is not None else "no tick yet")[:256],
                )
            )
        return Telemetry(site=self.site, sampled_at=wall.to_pydatetime(), market_at=self.d.clock.to_sim(wall).to_pydatetime(), mode=self.mode, units=tuple(units), meter=self._meter(wall))

    def _meter(self, wall: pd.Timestamp) -> MeterTelemetry | None:
        loop = self.d.site_loop
        seen = loop.status(wall.to_pydatetime()).get(self.site) if loop is not None else None
        if seen is None:
            return None
        finite = lambda x: x if x is not None and np.isfinite(x) else None  # noqa: E731
        return MeterTelemetry(ok=bool(seen["ok"]), alarm=(seen["alarm"] or "")[:256], power_kw=finite(seen["power_kw"]), import_kwh=finite(seen["import_kwh"]), export_kwh=finite(seen["export_kwh"]))

    async def _drain_loop(self) -> None:
        """Publish the outbox oldest first; a row leaves it only when the broker acknowledged it."""
        while True:
            await self.session.connected.wait()
            if self._reconnected.is_set():
                self._reconnected.clear()
                await asyncio.sleep(random.uniform(0.0, self.link.replay_jitter_s))
            rows = await self._db(outbox.oldest, BATCH)
            if not rows:
                self._new.clear()
                try:
                    await asyncio.wait_for(self._new.wait(), 1.0)
                except TimeoutError:
                    pass
                continue
            results = await asyncio.gather(*(self.session.publish(topic, payload, qos=1) for _, topic, payload in rows), return_exceptions=True)
            done = [row[0] for row, r in zip(rows, results) if r is None]
            await self._db(outbox.delete, done)
            self.published += len(done)
            self._sent.inc(len(done))
            self.outbox_rows = max(self.outbox_rows - len(done), 0)
            if len(done) < len(rows):
                failed = next(r for r in results if r is not None)
                log.warning("uplink publish failed after %d of %d: %s; the rest stay in the outbox", len(done), len(rows), failed)
                await asyncio.sleep(self.link.broker.reconnect_min_s)

    async def _beat_loop(self) -> None:
        while True:
            beat = Heartbeat(site=self.site, sent_at=self.d.clock.wall().to_pydatetime(), plan_id=self.plan.plan_id if self.plan else None, mode=self.mode)
            try:
                await self.session.publish(site_topic(self.site, "heartbeat"), encode(beat), qos=0)
            except AdapterError:
                pass  # not connected: the central sees the silence (and our last will)
            await asyncio.sleep(self.link.heartbeat_s)

    def _db(self, fn, *args):
        return asyncio.wrap_future(self.d.store.submit(fn, self.d.store, *args))
