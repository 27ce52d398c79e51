"""The HTTP API, served by uvicorn inside the daemon's event loop (reads are snapshots, no locks needed).

The browser console and portal live under ``/ui`` (``vpp.web``). ``GET /status``, ``/schedule``, ``/metrics`` and ``/healthz`` are open (bind the
API to localhost or put it behind a proxy); ``GET``/``PUT /overrides`` need
``Authorization: Bearer <token>`` from ``daemon.api``, and are refused outright
when no token is configured. ``PUT /overrides`` takes an overrides file (JSON
or YAML, ``{"overrides": [...]}``), validates it with the same loader as the
file, and replaces the file atomically. ``PUT /market-data?source=NAME`` (same token) takes a delivery:
a CSV table in the layout of the config's data source NAME (``vpp.daemon.market_data``).
"""

from __future__ import annotations

import asyncio
import hmac
import math
import socket
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from vpp.daemon.market_data import DeliveryRejected
from vpp.daemon.watch import OverridesRejected
from vpp.errors import InputError
from vpp.overrides import Override

if TYPE_CHECKING:
    from vpp.daemon.app import Daemon

MAX_BODY_BYTES = 1_000_000
PUT_TIMEOUT_S = 10.0


async def _body(request: Request, limit: int) -> bytes | None:
    """The request body, or ``None`` past ``limit`` bytes (read no further: a huge body never sits in memory)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def override_json(o: Override) -> dict[str, Any]:
    return {
        "kind": o.kind.value,
        "start": pd.Timestamp(o.start).isoformat(),
        "end": pd.Timestamp(o.end).isoformat(),
        "author": o.author,
        "reason": o.reason,
        "unit": o.unit_id,
        "site": o.site_id,
        "product": o.product_id,
        "value": o.value,
    }


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def build_app(daemon: Daemon) -> FastAPI:
    app = FastAPI(title="vpp daemon", docs_url=None, redoc_url=None, openapi_url=None)
    bearer = HTTPBearer(auto_error=False)

    def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008 - FastAPI's idiom
        if daemon.token is None:
            raise HTTPException(403, "overrides API disabled: no daemon.api token configured")
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(credentials.credentials.encode(), daemon.token.encode()):
            raise HTTPException(401, "wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.get("/healthz")
    def healthz(strict: bool = False) -> JSONResponse:
        body = health(daemon)
        bad = body["status"] == "unhealthy" or (strict and body["status"] != "ok")
        return JSONResponse(body, status_code=503 if bad else 200)

    @app.get("/status")
    def status() -> dict[str, Any]:
        return daemon_status(daemon)

    @app.get("/schedule")
    def schedule() -> dict[str, Any]:
        held = daemon.schedule
        if held.schedule is None:
            raise HTTPException(404, "no schedule yet: units idle at 0 W")
        s = held.schedule
        body = s.summary(daemon.cfg.currency)
        body.update(
            id=held.id,
            created_at=held.created_at.isoformat() if held.created_at is not None else None,
            trigger=held.trigger,
            source=held.source,
            intervals=[t.isoformat() for t in s.index],
            power_kw={uid: np.round(s.power_kw[i], 4).tolist() for i, uid in enumerate(s.unit_ids)},
            soc_kwh={uid: np.round(s.soc_kwh[i], 4).tolist() for i, uid in enumerate(s.unit_ids)},
        )
        return body

    @app.get("/overrides", dependencies=[Depends(authorized)])
    def get_overrides() -> dict[str, Any]:
        w = daemon.watcher
        return {"path": str(w.path) if w.path else None, "source": w.source, "overrides": [override_json(o) for o in w.current], "last_error": w.last_error}

    @app.put("/overrides", dependencies=[Depends(authorized)])
    async def put_overrides(request: Request) -> JSONResponse:
        watcher = daemon.watcher
        raw = await _body(request, MAX_BODY_BYTES)
        if raw is None:
            message = f"overrides body larger than {MAX_BODY_BYTES} bytes"
            watcher.reject("api", [f"PUT /overrides: {message}"])
            raise HTTPException(413, message)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            watcher.reject("api", ["PUT /overrides: body is not UTF-8 text"])
            raise HTTPException(400, "overrides body is not UTF-8 text") from None
        try:  # a thread (file I/O), bounded in time: the control tick keeps the loop
            overrides = await asyncio.wait_for(asyncio.to_thread(watcher.replace, text), PUT_TIMEOUT_S)
        except OverridesRejected as err:
            return JSONResponse({"errors": err.errors}, status_code=422)
        except RuntimeError as err:
            raise HTTPException(409, str(err)) from None
        except TimeoutError:
            watcher.reject("api", [f"PUT /overrides: not validated within {PUT_TIMEOUT_S:g} s"])
            raise HTTPException(503, "overrides not validated in time; nothing changed") from None
        daemon.overrides_changed()
        return JSONResponse({"overrides": [override_json(o) for o in overrides]})

    @app.put("/market-data", dependencies=[Depends(authorized)])
    async def put_market_data(request: Request, source: str | None = None) -> JSONResponse:
        intake = daemon.market_data
        if intake is None:
            raise HTTPException(404, "market data inlet disabled: no daemon.market_data block in the config")
        origin = f"{request.client.host if request.client else '?'}"
        raw = await _body(request, intake.settings.max_bytes)
        if raw is None:
            message = f"body larger than {intake.settings.max_bytes} bytes"
            intake.reject("api", origin, source, message)
            raise HTTPException(413, message)
        try:
            outcome = await intake.deliver(raw, source, "api", origin)
        except DeliveryRejected as err:
            return JSONResponse({"error": str(err)}, status_code=err.status)
        return JSONResponse(outcome.json())

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(daemon.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    from vpp.web.pages import mount  # the console and portal (vpp/web/), logged in with their own sessions

    mount(app, cfg=lambda: daemon.cfg, engine=daemon.store.engine, daemon=daemon)
    return app


def health(daemon: Daemon) -> dict[str, Any]:
    """``unhealthy`` (503) when ticks stopped; ``degraded`` (200, or 503 with ``?strict=true``) when ticks run but
    fewer units are in dispatch than configured or no schedule covers now; else ``ok``."""
    from vpp.daemon.app import STALL_TICKS

    age = daemon.control.tick_age_s()
    last = daemon.control.last
    limit = STALL_TICKS * daemon.settings.tick_s + 1.0
    reasons: list[str] = []
    in_dispatch = None
    if age is None or last is None:
        reasons.append("no control tick has finished yet")
    elif age > limit:
        reasons.append(f"no control tick for {age:.1f} s (limit {limit:.1f} s)")
    if last is not None:
        dispatched = last.result.dispatched()
        in_dispatch = int(dispatched.sum())
        if in_dispatch < len(dispatched):
            out = [f"{uid} ({last.result.reasons[i] or 'out'})" for i, uid in enumerate(last.result.unit_ids) if not dispatched[i]]
            reasons.append(f"{in_dispatch} of {len(dispatched)} units in dispatch; out: {', '.join(out)}")
        if last.result.interval is None:
            reasons.append("no schedule covers now: units idle at 0 W")
    if daemon.site_loop is not None:  # a meter alarm: the site runs fail-safe
        reasons += [f"meter alarm at site {sid}: {sm.alarm}" for sid, sm in daemon.site_loop.sites.items() if sm.alarm is not None]
    if daemon.market_data is not None and (late := daemon.market_data.late_series()):
        reasons.append(f"market data late for {', '.join(late)}: the plan uses the {daemon.market_data.spec.method} forecast there")
    unhealthy = age is None or last is None or age > limit
    status = "unhealthy" if unhealthy else "degraded" if reasons else "ok"
    return {"status": status, "reasons": reasons, "last_tick_age_s": age, "units": len(daemon.cfg.units), "in_dispatch": in_dispatch}


def daemon_status(daemon: Daemon) -> dict[str, Any]:
    wall = daemon.clock.wall()
    now = daemon.clock.to_sim(wall)
    last = daemon.control.last
    result = last.result if last is not None else None
    units = {}
    dispatched = result.dispatched() if result is not None else None
    for i, unit in enumerate(daemon.cfg.units):
        t = daemon.state.telemetry(unit.id)
        h = daemon.state.health(unit.id)
        written = daemon.control.written_at.get(unit.id)
        units[unit.id] = {
            "site": unit.site_id,
            "in_dispatch": bool(dispatched is not None and dispatched[i]),
            "commanded_kw": _num(float(result.power_kw[i])) if result is not None else None,
            "scheduled_kw": float(result.scheduled_kw[i]) if result is not None else None,
            "reason": result.reasons[i] if result is not None else "no tick yet",
            "soc": t.soc if t is not None else None,
            "power_kw": t.power_kw if t is not None else None,
            "state": t.state.value if t is not None else None,
            "telemetry_age_s": (wall - pd.Timestamp(t.timestamp)).total_seconds() if t is not None else None,
            "last_write": written.isoformat() if written is not None else None,
            "health": {
                "healthy": h.healthy,
                "consecutive_failures": h.consecutive_failures,
                "last_good_read": h.last_good_read.isoformat() if h.last_good_read else None,
                "last_error": h.last_error,
            },
        }
    held = daemon.schedule
    commanded = [u["commanded_kw"] for u in units.values() if u["commanded_kw"] is not None]
    measured = [u["power_kw"] for u in units.values() if u["in_dispatch"] and u["power_kw"] is not None]
    return {
        "name": daemon.cfg.name,
        "wall_time": wall.isoformat(),
        "market_time": now.isoformat(),
        "clock_speed": daemon.clock.speed,
        "interval": result.interval.isoformat() if result is not None and result.interval is not None else None,
        "tick": {"count": daemon.control.ticks, "duration_s": last.duration_s if last else None, "written": last.written if last else 0, "age_s": daemon.control.tick_age_s(), "longest_gap_s": daemon.control.longest_gap_s},
        "health": health(daemon),
        "central": daemon.plant.status() if daemon.plant is not None else None,  # daemon.central: the plant link
        "schedule": {
            "id": held.id,
            "created_at": held.created_at.isoformat() if held.created_at is not None else None,
            "trigger": held.trigger,
            "source": held.source,
            "start": held.schedule.index[0].isoformat() if held.schedule is not None else None,
            "intervals": len(held.schedule.index) if held.schedule is not None else 0,
        },
        "solve": daemon.solve_status(),
        "meters": daemon.site_loop.status(wall.to_pydatetime()) if daemon.site_loop is not None else {},
        "overrides": {
            "active": [override_json(o) for o in daemon.control.activity.active],
            "count": len(daemon.watcher.current),
            "source": daemon.watcher.source,
            "last_error": daemon.watcher.last_error,
        },
        "market_data": daemon.market_data.status() if daemon.market_data is not None else None,
        "fleet": {
            "units": len(units),
            "in_dispatch": sum(u["in_dispatch"] for u in units.values()),
            "commanded_kw": float(sum(commanded)),
            "measured_kw": float(sum(measured)),
        },
        "units": units,
    }


class Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM/SIGINT and stops the server itself."""

    @contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


def server(app: FastAPI, host: str, port: int) -> Server:
    return Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off", access_log=False))


def listen(host: str, port: int, where: str) -> socket.socket:
    """Bind the API's socket before anything else starts, so a taken port is a one-line config error
    (uvicorn would otherwise exit the whole process from inside its task)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise InputError(where, "daemon.api", f"{host}:{port}", f"an address the API can listen on ({err.strerror})") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock
