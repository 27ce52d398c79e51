"""One MQTT broker connection kept alive, for the gateway and for the device simulator alike.

Connect (MQTT v5, TLS and credentials from the ``mqtt:`` config), publish
"online" to a retained status topic whose last will is "offline", subscribe,
hand every message to a callback; when the broker goes away, record the gap,
back off exponentially and do it all again (subscriptions included). The
reconnect logic lives here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.base import utcnow
from adapters.health import Backoff
from vpp.device_config import MqttBrokerConfig
from vpp.errors import AdapterError, InputError
from vpp.log_limit import LogLimiter, held_note

log = logging.getLogger(__name__)

ONLINE, OFFLINE = b"online", b"offline"
PENDING_PUBLISHES_WARN = 10_000


@dataclass(frozen=True, slots=True)
class Gap:
    """A time the session was not connected to the broker: nothing was received or sent."""

    start: datetime
    end: datetime

    @property
    def duration_s(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass
class SessionStats:
    connects: int = 0
    disconnects: int = 0
    gaps: list[Gap] = field(default_factory=list)


class MqttSession:
    def __init__(
        self,
        broker: MqttBrokerConfig,
        client_id: str,
        subscriptions: Sequence[str],
        on_message: Callable[[aiomqtt.Message], None],
        status_topic: str | None = None,
        on_link: Callable[[bool], None] | None = None,
        session_expiry_s: int | None = None,
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self.subscriptions = tuple(subscriptions)
        self.status_topic = status_topic
        # a persistent session (MQTT v5, clean start off): the broker keeps our subscriptions and queues
        # QoS 1 messages for us while we are away, for this long (the plant's central: nothing is lost)
        self.session_expiry_s = session_expiry_s
        self.stats = SessionStats()
        self.connected = asyncio.Event()
        self._on_message = on_message
        self._on_link = on_link or (lambda up: None)
        self._client: aiomqtt.Client | None = None
        self._connection_lost: asyncio.Future[None] | None = None  # per connection: set when it dies
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(base_s=broker.reconnect_min_s, max_s=broker.reconnect_max_s)
        self._down_since: datetime | None = None
        self._password = broker.password
        if broker.password_env is not None:
            self._password = os.environ.get(broker.password_env)
            if self._password is None:
                raise InputError("mqtt", "password_env", broker.password_env, "the name of a set environment variable")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"mqtt {self.client_id}")

    async def stop(self) -> None:
        """Say "offline" and disconnect cleanly (so the broker does not publish the last will)."""
        if self._client is not None and self.status_topic is not None:
            try:
                await self.publish(self.status_topic, OFFLINE, qos=1, retain=True)
            except AdapterError as err:
                log.warning("mqtt client=%s could not publish offline status: %s", self.client_id, err)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, properties: Properties | None = None
    ) -> None:
        """Publish on the current connection; fails at once (``AdapterError``) when it is or gets lost.

        aiomqtt would keep waiting for the acknowledgement of a message sent into a dead
        connection until its timeout; racing it against the loss keeps publishers responsive.
        """
        client, lost = self._client, self._connection_lost
        where = f"mqtt {self.broker.host}:{self.broker.port}: publish {topic}"
        if client is None or lost is None:
            raise AdapterError(f"{where}: not connected")
        sending = asyncio.ensure_future(client.publish(topic, payload, qos=qos, retain=retain, properties=properties, timeout=5.0))
        try:
            done, _ = await asyncio.wait((sending, lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not sending.done():
                sending.cancel()
        if sending not in done:
            raise AdapterError(f"{where}: connection lost")
        if (error := sending.exception()) is not None:
            raise AdapterError(f"{where}: {error}") from None

    def drop(self) -> None:
        """Cut the TCP connection without a DISCONNECT (as a dead link would): the broker sends the last will."""
        if self._client is not None and (sock := self._client._client.socket()) is not None:
            sock.shutdown(socket.SHUT_RDWR)

    async def _run(self) -> None:
        while True:
            try:
                async with self._connect() as client:
                    await self._established(client)
                    async for _ in client.messages:  # never yields (see _dispatching_queue): waits for the disconnect
                        pass
            except aiomqtt.MqttError as err:
                self._lost(str(err))
            await asyncio.sleep(self._backoff.delay_s())

    def _connect(self) -> aiomqtt.Client:
        broker = self.broker
        tls = broker.tls
        will = aiomqtt.Will(self.status_topic, OFFLINE, qos=1, retain=True) if self.status_topic else None
        client = aiomqtt.Client(
            broker.host,
            broker.port,
            identifier=self.client_id,
            username=broker.username,
            password=self._password,
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=broker.keepalive_s,
            will=will,
            tls_params=aiomqtt.TLSParameters(ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file) if tls else None,
            tls_insecure=tls.insecure if tls else None,
            timeout=10.0,
            queue_type=_dispatching_queue(self._on_message),
            clean_start=False if self.session_expiry_s is not None else 3,  # 3: paho's MQTT_CLEAN_START_FIRST_ONLY, aiomqtt's default
            properties=_session_properties(self.session_expiry_s) if self.session_expiry_s is not None else None,
        )
        # A tick publishes one setpoint per unit at once: aiomqtt's default (warn past 10 in flight) logged a
        # line per publish, 40 a second with 40 units. Warn only past what no tick sends.
        client.pending_calls_threshold = PENDING_PUBLISHES_WARN
        return client

    async def _established(self, client: aiomqtt.Client) -> None:
        if self.status_topic is not None:
            await client.publish(self.status_topic, ONLINE, qos=1, retain=True)
        for topic in self.subscriptions:
            await client.subscribe(topic, qos=1)
        self._client = client
        self._connection_lost = asyncio.get_running_loop().create_future()
        self.stats.connects += 1
        self._backoff.success(utcnow())
        if self._down_since is not None:
            gap = Gap(self._down_since, utcnow())
            self.stats.gaps.append(gap)
            log.warning("mqtt client=%s reconnected broker=%s:%d gap_s=%.1f", self.client_id, self.broker.host, self.broker.port, gap.duration_s)
            self._down_since = None
        self.connected.set()
        self._on_link(True)

    def _lost(self, error: str) -> None:
        now = utcnow()
        if self._client is not None:
            self.stats.disconnects += 1
            self._down_since = now
            log.warning("mqtt client=%s lost broker=%s:%d: %s", self.client_id, self.broker.host, self.broker.port, error)
            self._on_link(False)
            if self._connection_lost is not None:
                self._connection_lost.set_result(None)
        self._client = None
        self.connected.clear()
        self._backoff.failure(now, error)


def _session_properties(expiry_s: int) -> Properties:
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = expiry_s
    return properties


def _dispatching_queue(handler: Callable[[aiomqtt.Message], None]) -> type[asyncio.Queue[aiomqtt.Message]]:
    """aiomqtt's ``queue_type`` hook: hand each message to ``handler`` as soon as paho decodes it.

    This is the boundary's catch-all: an exception a handler lets through is logged (rate-limited, with
    the topic and the payload's first bytes) and the message dropped. Raised into paho instead, it would
    drop the connection, and the old socket would hand the same packet over again, forever (one
    timestamp that overflowed on conversion to UTC once did that 12,000 times a second).

    Queueing it for ``client.messages`` instead costs a task and a wait per message:
    measured by bench/adapters.py, 111 instead of 81 us of gateway CPU per message at
    5,000 messages/s, and ingest collapsing to ~2,300/s when offered 10,000/s (this way
    keeps up). Nothing is ever queued.
    """

    limiter = LogLimiter()

    class DispatchQueue(asyncio.Queue):  # type: ignore[type-arg]
        def put_nowait(self, item: aiomqtt.Message) -> None:
            try:
                handler(item)
            except Exception as err:  # noqa: BLE001 - see above: contained per message
                held = limiter.allow()
                if held is not None:
                    payload = item.payload if isinstance(item.payload, bytes | bytearray) else str(item.payload).encode()
                    log.error("mqtt message dropped topic=%s error=%s: %s payload_head=%r%s", str(item.topic)[:200], type(err).__name__, str(err)[:200], bytes(payload[:64]), held_note(held))

    return DispatchQueue
