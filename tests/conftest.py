"""Protocol fixtures: a real Mosquitto on a free loopback port, and helpers for pymodbus simulator gateways.

Tests talk to real protocol stacks only. Mosquitto runs from its own config in
the test's tmp dir (never the system broker on 1883) and can be stopped and
restarted on the same port to test reconnects.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from simulators.battery import BatteryParams
from simulators.sim_unit import SimulatedUnit
from vpp.device_config import MqttBrokerConfig, MqttTls

# Solver-backed property tests take tens of milliseconds an example on a shared 2-core machine:
# no per-example deadline, and generation that is slow is still fine.
# derandomize: CI runs the same examples every time (a random seed once found a 5-minute MIP instance).
settings.register_profile("vpp", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("vpp")

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Mosquitto:
    """A broker process of our own; ``stop``/``start`` keep the port, as a broker restart does."""

    workdir: Path
    port: int = field(default_factory=free_port)
    users: dict[str, str] = field(default_factory=dict)
    tls: bool = False
    persistence: bool = False  # keep sessions and queued messages across stop/start (a real broker's setting)
    acl_file: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if not Path(MOSQUITTO).exists():
            raise RuntimeError("mosquitto is not installed (.ci/run installs it: apt-get install mosquitto)")
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"user {getpass.getuser()}",  # as root, mosquitto would switch to a user that cannot read tmp_path
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            f"allow_anonymous {'false' if self.users else 'true'}",
        ]
        if self.users:
            passwords = self.workdir / "passwords"
            passwords.touch()
            for user, password in self.users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True, capture_output=True)
            lines.append(f"password_file {passwords}")
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        if self.tls:
            self._make_certificates()
            lines += [f"cafile {self.ca_file}", f"certfile {self.workdir / 'server.crt'}", f"keyfile {self.workdir / 'server.key'}"]
        self.config = self.workdir / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.crt"

    def broker(self, **overrides: object) -> MqttBrokerConfig:
        """The ``mqtt:`` block a gateway would use for this broker, with short reconnect delays for tests."""
        settings: dict[str, object] = {"host": "127.0.0.1", "port": self.port, "keepalive_s": 5, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}
        if self.tls:
            settings["tls"] = MqttTls(ca_file=str(self.ca_file))
        settings.update(overrides)
        return MqttBrokerConfig(**settings)  # type: ignore[arg-type]

    def start(self) -> None:
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.process.stderr.read().decode() if self.process.stderr else ''}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=5)
            self.process = None

    def _make_certificates(self) -> None:
        """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
        d = self.workdir

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=vpp-test-ca", "-keyout", "ca.key", "-out", "ca.crt")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
        (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-extfile", "san.cnf", "-out", "server.crt")


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


def sim_unit(unit_id: str = "u1", soc: float = 0.5, rating_kw: float = 100.0, energy_kwh: float = 200.0, **kw: float) -> SimulatedUnit:
    """A simulated battery with round numbers; ``kw`` goes to ``SimulatedUnit`` (e.g. heartbeat_timeout_s)."""
    params = BatteryParams(energy_kwh=energy_kwh, max_charge_kw=rating_kw, max_discharge_kw=rating_kw, soc_min=0.05, soc_max=0.95)
    return SimulatedUnit(unit_id, params, soc=soc, **kw)  # type: ignore[arg-type]
