"""Versioned MQTT messages between site gateways (`vpp run` with ``daemon.central``) and `vpp central`.

Every payload is one JSON object with ``v`` (the schema version; a receiver refuses any other) and
``site``. Parsing is the boundary's: at most ``MAX_BYTES`` (a plan of a 48-hour horizon for a large
site fits), nesting no deeper than ``MAX_DEPTH``, finite numbers only, extra keys refused, bounded
list lengths and string sizes, tz-aware timestamps within ``PLAUSIBLE`` years. A message that fails
any of these is malformed as a whole; the caller logs one line with ``reject_reason`` and drops it.

Topic tree (docs/plant.md): ``vpp/plant/v1/site/<site>/{telemetry,interval,heartbeat,status}`` up,
``vpp/plant/v1/site/<site>/plan`` (retained) down, ``vpp/plant/v1/central/{heartbeat,status}``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

VERSION = 1
ROOT = f"vpp/plant/v{VERSION}"
MAX_BYTES = 2_000_000
MAX_DEPTH = 8
MAX_UNITS = 1_000  # per site
MAX_INTERVALS = 2 * 24 * 12  # two days of 5-minute intervals
MAX_ROWS = 50_000  # settlement rows in one interval record (units × streams)
PLAUSIBLE = (2000, 2200)  # years; beyond is a corrupted clock or a hostile sender
MAX_KW = 1.0e7

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
Kw = Annotated[float, Field(ge=-MAX_KW, le=MAX_KW)]
KwPos = Annotated[float, Field(ge=0, le=MAX_KW)]
Kwh = Annotated[float, Field(ge=0, le=1e12)]  # an energy counter


def site_topic(site: str, leaf: str) -> str:
    return f"{ROOT}/site/{site}/{leaf}"


def central_topic(leaf: str) -> str:
    return f"{ROOT}/central/{leaf}"


def _plausible(value: datetime) -> datetime:
    if not PLAUSIBLE[0] <= value.year <= PLAUSIBLE[1]:
        raise ValueError(f"timestamp {value.isoformat()} outside the years {PLAUSIBLE[0]}-{PLAUSIBLE[1]}")
    return value


# A validator on the time fields only: one on every field ("*") ran 89 times per telemetry message.
When = Annotated[AwareDatetime, AfterValidator(_plausible)]


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    v: Literal[1] = VERSION


class UnitTelemetry(_Msg):
    v: Literal[1] = Field(VERSION, exclude=True)
    id: Id
    soc: float | None = Field(None, ge=0, le=1)
    power_kw: Kw | None = None  # measured, + discharge
    commanded_kw: Kw | None = None
    max_charge_kw: KwPos | None = None
    max_discharge_kw: KwPos | None = None
    in_dispatch: bool = False
    reason: str = Field("", max_length=256)


class MeterTelemetry(_Msg):
    """The site's grid meter as the gateway's site loop last judged it (sites with ``sites[].meter``)."""

    v: Literal[1] = Field(VERSION, exclude=True)
    ok: bool  # fresh and plausible: the site loop trusts it
    alarm: str = Field("", max_length=256)
    power_kw: Kw | None = None  # + export at the connection
    import_kwh: Kwh | None = None  # the meter's counters: what the customer is billed on
    export_kwh: Kwh | None = None


class Telemetry(_Msg):
    """One sample of a site: what the central plans from. A replayed sample is recognised by
    (site, sampled_at): the gateway stamps each sample once, when it is taken."""

    kind: Literal["telemetry"] = "telemetry"
    site: Id
    sampled_at: When  # wall
    market_at: When
    mode: str = Field(max_length=32)
    units: tuple[UnitTelemetry, ...] = Field(max_length=MAX_UNITS)
    meter: MeterTelemetry | None = None


class SettledRow(_Msg):
    v: Literal[1] = Field(VERSION, exclude=True)
    unit_id: Id
    stream: Id
    amount_minor: int = Field(ge=-(2**62), le=2**62)


class MeteredRow(_Msg):
    v: Literal[1] = Field(VERSION, exclude=True)
    unit_id: Id
    discharged_wh: int = Field(ge=0, le=2**62)
    charged_wh: int = Field(ge=0, le=2**62)


class IntervalRecord(_Msg):
    """A market interval as the gateway settled it: amounts (minor units) and metered energy per unit.
    The central's ledger is keyed like the gateway's (unit × interval × stream): a replay is a no-op."""

    kind: Literal["interval"] = "interval"
    site: Id
    interval_start: When
    currency: str = Field(min_length=3, max_length=3)
    rows: tuple[SettledRow, ...] = Field(max_length=MAX_ROWS)
    energy: tuple[MeteredRow, ...] = Field(max_length=MAX_UNITS)


class UnitPlan(_Msg):
    v: Literal[1] = Field(VERSION, exclude=True)
    id: Id
    power_kw: tuple[Kw, ...] = Field(max_length=MAX_INTERVALS)  # per interval, + discharge
    soc_kwh: tuple[KwPos, ...] = Field(max_length=MAX_INTERVALS + 1)  # planned, at each interval's start and the last end
    reserve_kw: dict[Id, tuple[KwPos, ...]] = Field({}, max_length=32)  # product -> per interval


class SitePlan(_Msg):
    """What the central asks of one site: per-unit power and reserve per interval, the site's grid
    envelope, a plan id (increasing per site: lower or equal is a replay) and a validity window."""

    kind: Literal["plan"] = "plan"
    site: Id
    plan_id: int = Field(ge=1)
    issued_at: When  # wall
    valid_from: When  # market time
    valid_until: When  # market time; after it the gateway falls back
    interval_s: int = Field(gt=0, le=86_400)
    intervals: tuple[When, ...] = Field(min_length=1, max_length=MAX_INTERVALS)
    units: tuple[UnitPlan, ...] = Field(max_length=MAX_UNITS)
    import_max_kw: tuple[KwPos, ...] = Field(max_length=MAX_INTERVALS)
    export_max_kw: tuple[KwPos, ...] = Field(max_length=MAX_INTERVALS)

    @model_validator(mode="after")
    def _shape(self) -> SitePlan:
        t = len(self.intervals)
        if self.valid_until <= self.valid_from:
            raise ValueError("valid_until is not after valid_from")
        if any(b - a != timedelta(seconds=self.interval_s) for a, b in zip(self.intervals, self.intervals[1:])):
            raise ValueError(f"intervals are not consecutive {self.interval_s} s steps")
        if len(self.import_max_kw) != t or len(self.export_max_kw) != t:
            raise ValueError(f"the site envelope has not {t} intervals")
        for u in self.units:
            if len(u.power_kw) != t or len(u.soc_kwh) != t + 1 or any(len(r) != t for r in u.reserve_kw.values()):
                raise ValueError(f"unit {u.id}: not {t} intervals of power and reserve, {t + 1} SoC points")
        if len({u.id for u in self.units}) != len(self.units):
            raise ValueError("a unit is planned twice")
        return self


class Heartbeat(_Msg):
    kind: Literal["heartbeat"] = "heartbeat"
    site: Id  # "central" for the central's
    sent_at: When
    plan_id: int | None = Field(None, ge=0)  # the plan the gateway follows (None: none)
    mode: str = Field("", max_length=32)


class Rejected(ValueError):
    """A message refused at the boundary; ``str`` is the one-line reason to log."""


def parse(payload: bytes, expect: type[_Msg]) -> _Msg:
    """The message in ``payload`` as ``expect``, or ``Rejected`` with one reason.

    One parse on the way in (the schema bounds every list, string and number, and its shape bounds the
    depth); a payload that fails is parsed again only to say why in the terms that matter most (not
    JSON, too deep, another schema version) — that halved the central's cost per message."""
    if len(payload) > MAX_BYTES:
        raise Rejected(f"oversized: {len(payload)} bytes, more than {MAX_BYTES}")
    try:
        return expect.model_validate_json(payload)
    except ValidationError as err:
        first = err.errors()[0]
        detail = f"{'.'.join(map(str, first['loc'])) or 'payload'}: {first['msg']}"[:200]
    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise Rejected(f"not JSON: {str(err)[:120]}") from None
    if _depth(raw) > MAX_DEPTH:
        raise Rejected(f"nesting deeper than {MAX_DEPTH}")
    if isinstance(raw, dict) and raw.get("v") != VERSION:
        raise Rejected(f"schema version {str(raw.get('v'))[:20]!r}, this end speaks {VERSION}")
    raise Rejected(detail)


def encode(message: _Msg) -> bytes:
    return message.model_dump_json().encode()


def _depth(value: object, level: int = 1) -> int:
    """Nesting depth of parsed JSON (iterative would be faster; the payload is already bounded)."""
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level

