"""The plant broker's ACL (deploy/mosquitto/plant.acl), enforced by a real Mosquitto over TLS with passwords:
a gateway publishes only under its own site and reads only its own plan; a gateway cannot forge a plan;
another site's credentials get nothing; an unauthenticated or wrongly authenticated client is refused."""

from __future__ import annotations

import asyncio
import itertools

import aiomqtt
import pytest

from tests.conftest import Mosquitto
from tests.daemon_rig import ROOT
from vpp.plant.messages import site_topic

pytestmark = pytest.mark.asyncio

_ids = itertools.count()
USERS = {"central": "central-secret-0123", "north": "north-secret-0123", "south": "south-secret-0123"}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory):
    """One broker for the module: its certificates take a second to make."""
    b = Mosquitto(tmp_path_factory.mktemp("plant-broker"), users=USERS, tls=True, acl_file=ROOT / "deploy/mosquitto/plant.acl")
    b.start()
    yield b
    b.stop()


def client(broker: Mosquitto, user: str | None, password: str | None = None) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", broker.port, username=user, password=password if password is not None else USERS.get(user or ""), identifier=f"t-{user}-{next(_ids)}", protocol=aiomqtt.ProtocolVersion.V5, tls_params=aiomqtt.TLSParameters(ca_certs=str(broker.ca_file)), timeout=5)


async def received(c: aiomqtt.Client, within_s: float) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []

    async def collect() -> None:
        async for m in c.messages:
            out.append((m.topic.value, bytes(m.payload)))

    try:
        await asyncio.wait_for(collect(), within_s)
    except TimeoutError:
        pass
    return out


async def test_a_gateway_reads_only_its_own_plan_and_cannot_forge_one(broker: Mosquitto) -> None:
    async with client(broker, "central") as central:
        for site in ("north", "south"):
            await central.publish(site_topic(site, "plan"), f"plan for {site}".encode(), qos=1, retain=True)
    async with client(broker, "north") as north:
        await north.subscribe(site_topic("south", "plan"), qos=1)
        await north.subscribe(site_topic("north", "plan"), qos=1)
        got = await received(north, 1.0)
        assert got == [(site_topic("north", "plan"), b"plan for north")]
        await north.publish(site_topic("north", "plan"), b"forged", qos=1, retain=True)  # write to a read-only topic
    async with client(broker, "north") as north:  # the retained plan is still the central's
        await north.subscribe(site_topic("north", "plan"), qos=1)
        assert await received(north, 1.0) == [(site_topic("north", "plan"), b"plan for north")]


async def test_a_gateway_publishes_only_under_its_own_site(broker: Mosquitto) -> None:
    async with client(broker, "central") as central:
        await central.subscribe("vpp/plant/v1/site/+/telemetry", qos=1)
        await central.subscribe("vpp/plant/v1/site/+/interval", qos=1)
        async with client(broker, "north") as north:
            await north.publish(site_topic("south", "telemetry"), b"posing as south", qos=1)
            await north.publish(site_topic("south", "interval"), b"posing as south", qos=1)
            await north.publish(site_topic("north", "telemetry"), b"north itself", qos=1)
        got = await received(central, 1.0)
    assert got == [(site_topic("north", "telemetry"), b"north itself")]


@pytest.mark.parametrize(("user", "password"), [(None, None), ("north", "not-the-password"), ("mallory", "whatever-0123")])
async def test_unauthenticated_or_unknown_clients_are_refused(broker: Mosquitto, user: str | None, password: str | None) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with client(broker, user, password):
            pass
