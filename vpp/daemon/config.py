"""The ``daemon:`` block of a config: how often to tick, when to re-optimize, where to store, how to serve.

Times named ``_s`` are wall-clock seconds (tick, staleness, device revert
timers) except ``telemetry_downsample_s``, which is market time because it
buckets metered data inside market intervals. ``clock`` runs the market clock
faster than the wall clock, for demos and end-to-end tests.
"""

from __future__ import annotations

import os
from datetime import datetime, time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from vpp.db import default_database
from vpp.device_config import MqttBrokerConfig
from vpp.errors import InputError
from vpp.web.config import WebModel


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiModel(_Strict):
    host: str = Field("127.0.0.1", description="address the HTTP API listens on (127.0.0.1: this machine only)")
    port: int = Field(8080, ge=0, le=65535, description="port of the HTTP API (0: any free port)")
    token: str | None = Field(None, min_length=16, description="bearer token for /overrides; prefer token_file or token_env")
    token_file: str | None = Field(None, description="file holding the token (relative to the config)")
    token_env: str | None = Field(None, description="environment variable holding the token")

    @field_validator("token_file", "token_env")
    @classmethod
    def _one_source(cls, value: str | None, info: ValidationInfo) -> str | None:
        """At most one token source; checked field by field so an error never echoes the token itself."""
        earlier = [name for name in ("token", "token_file") if name != info.field_name and info.data.get(name) is not None]
        if value is not None and earlier:
            raise ValueError(f"give at most one of token, token_file, token_env (also given: {', '.join(earlier)})")
        return value

    def resolve_token(self, config_dir: Path, where: str) -> str | None:
        """The token, read from wherever it is kept; ``None`` means the overrides API is refused."""
        if self.token is not None:
            return self.token
        if self.token_env is not None:
            value = os.environ.get(self.token_env, "").strip()
            if len(value) < 16:
                raise InputError(where, "daemon.api.token_env", self.token_env, "an environment variable holding a token of at least 16 characters")
            return value
        if self.token_file is not None:
            path = config_dir / self.token_file
            try:
                value = path.read_text().strip()
            except OSError as err:
                raise InputError(where, "daemon.api.token_file", str(path), f"a readable file ({err.strerror})") from None
            if len(value) < 16:
                raise InputError(where, "daemon.api.token_file", str(path), "a token of at least 16 characters")
            return value
        return None


class ClockModel(_Strict):
    speed: float = Field(1.0, gt=0, description="market seconds per wall second")
    sim_start: datetime | None = Field(None, description="market time at wall_start (default: wall_start)")
    wall_start: datetime | None = Field(None, description="wall time the mapping is anchored at (default: process start)")


class CentralLinkModel(_Strict):
    """``daemon.central``: this gateway is one site of a plant run by `vpp central` (docs/plant.md).
    Absent: the gateway plans and runs alone, as it always did."""

    site: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$", description="this gateway's site id at the plant; also its broker user name (the ACL grants it vpp/plant/v1/site/<site>/...)")
    broker: MqttBrokerConfig = Field(description="the plant broker (often not the device broker of mqtt:)")
    fallback: Literal["local", "idle"] = Field("local", description="when the cached central plan expires: local = plan with this gateway's own optimizer as standalone; idle = 0 W")
    telemetry_every_s: float = Field(5.0, gt=0, description="wall seconds between telemetry samples sent up")
    heartbeat_s: float = Field(2.0, gt=0, description="wall seconds between heartbeats each way; the central is lost after 3 missed")
    replay_jitter_s: float = Field(1.0, ge=0, description="after reconnecting, wait up to this long (random) before replaying the outbox, so a plant's gateways do not all replay at once")
    max_plan_age_s: float = Field(600.0, gt=0, description="a plan issued (wall time) longer ago than this is stale and refused")
    outbox_max_rows: int = Field(1_000_000, ge=100, description="buffered messages kept while the link is down; past this the oldest telemetry is dropped (interval records never)")


class FeedModel(_Strict):
    kind: Literal["entsoe", "gridstatus"] = Field(description="entsoe: ENTSO-E day-ahead prices (entsoe-py); gridstatus: a US ISO's prices incl. ancillary services (gridstatus)")
    source: str = Field(min_length=1, description="the data: source whose layout the feed delivers in (its file fixes time grid and units)")
    columns: dict[str, str] = Field(min_length=1, description="the source's series name → the feed's field: entsoe 'price'; gridstatus a column of its table (e.g. LMP, or an ancillary service such as Regulation Up)")
    area: str = Field(min_length=1, description="entsoe: the bidding zone (e.g. DE_LU, FR); gridstatus: the ISO class (CAISO, ERCOT, PJM, NYISO, ISONE, MISO, SPP)")
    location: str | None = Field(None, description="gridstatus: the node, hub or zone the prices are for (e.g. TH_NP15_GEN-APND); ancillary prices by region")
    market: str = Field("DAY_AHEAD_HOURLY", description="gridstatus: the market of the query (DAY_AHEAD_HOURLY, REAL_TIME_15_MIN, ...)")
    query: Literal["lmp", "as_prices"] = Field("lmp", description="gridstatus: get_lmp (energy) or get_as_prices (ancillary services)")
    every_min: float = Field(60.0, ge=1, description="wall minutes between two fetches (each fetches today and tomorrow)")
    api_key_env: str | None = Field(None, description="environment variable holding the feed's API key (entsoe needs one; never in the config)")


class MarketDataModel(_Strict):
    drop_folder: str | None = Field(None, description="folder watched for delivered CSV files named <source>*.csv (relative to the config); each is processed once and moved to done/ or rejected/ (with a .reason file)")
    drop_poll_s: float = Field(2.0, gt=0, description="how often the drop folder is looked at, wall seconds")
    mqtt_topic: str | None = Field(None, description="topic prefix on the config's broker: a CSV payload on <prefix>/<source> is a delivery; none: no MQTT inlet")
    max_bytes: int = Field(1_000_000, gt=0, le=16_000_000, description="largest delivery accepted by any inlet, bytes")
    fallback: Literal["persistence", "last_week", "rolling_mean"] = Field("persistence", description="forecaster the plan uses for the horizon's intervals that no delivery or data file covers")
    published_at: time | None = Field(None, description="local time by which the next day's data is due (e.g. 13:00 for EPEX day-ahead): past it, a horizon not covered up to the end of tomorrow is late (status, metrics); none: never late")
    max_age_days: int = Field(35, ge=1, description="a delivery's intervals may start at most this many days before now")
    max_ahead_days: int = Field(8, ge=1, description="and at most this many days after now")
    feeds: list[FeedModel] = Field([], description="public market-data feeds polled by the daemon (optional extra: pip install 'vpp-engine[feeds]')")


class DaemonModel(_Strict):
    tick_s: float = Field(2.0, gt=0, description="control tick period")
    poll_s: float = Field(1.0, gt=0, description="telemetry poll period of the Modbus adapters")
    stale_after_s: float = Field(10.0, gt=0, description="telemetry older than this takes a unit out of dispatch")
    setpoint_valid_s: float = Field(10.0, gt=0, description="device-side revert timeout written with every setpoint")
    soc_feedback_gain: float = Field(0.5, ge=0, le=1, description="fraction of the gap between measured and planned SoC the dispatcher corrects each interval")
    reoptimize_every_min: float | None = Field(None, gt=0, description="default: the market interval")
    gate_lead_min: float = Field(10.0, ge=0, description="re-optimize this long before each day-ahead gate closure")
    solve_time_limit_s: float = Field(60.0, gt=0, description="a solve taking longer is abandoned; the last schedule stays")
    horizon_h: float | None = Field(None, gt=0, description="default: the config's horizon_h")
    database: str | None = Field(None, description="SQLAlchemy URL or SQLite path (default: <config>.db beside the config)")
    telemetry_downsample_s: float = Field(60.0, gt=0, description="market seconds per stored telemetry bucket")
    api: ApiModel = Field(ApiModel(), description="the HTTP API: status, schedule, overrides, metrics")
    clock: ClockModel = Field(ClockModel(), description="the market clock (faster than the wall clock for demos and tests)")
    web: WebModel = Field(WebModel(), description="the operator console and customer portal: users, sessions, language")
    central: CentralLinkModel | None = Field(None, description="connect this gateway to a plant's central aggregator (`vpp central`); absent: standalone")


    market_data: MarketDataModel | None = Field(None, description="market data pushed into the running daemon (drop folder, PUT /market-data, MQTT, public feeds); none: prices come from the config's files only")

    @field_validator("setpoint_valid_s")
    @classmethod
    def _outlasts_tick(cls, value: float, info: ValidationInfo) -> float:
        tick_s = info.data.get("tick_s")
        if tick_s is not None and value <= tick_s:
            raise ValueError(f"more than tick_s ({tick_s:g} s), or devices revert to 0 W between ticks")
        return value

    def database_target(self, config_path: Path) -> str:
        """URL, or an SQLite path (relative paths are relative to the config file)."""
        if self.database is None:
            return str(default_database(config_path))
        if "://" in self.database:
            return self.database
        return str(config_path.parent / self.database)
