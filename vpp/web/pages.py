"""The console and portal routes, mounted on the daemon's FastAPI app (``mount``) under ``/ui``.

Every route resolves the session first: no session → the login page (HTML) or 401 (JSON); an operator
page asked for by a customer → 403; a contract the customer is not party to → 404, the same answer as
for a contract that does not exist. POSTs are read with the API's bounded body reader, parsed as a
form of at most ``MAX_FIELDS`` fields, and refused with 403 unless their CSRF token matches the
browser's nonce cookie. Overrides created or expired here go through the same path as
``PUT /overrides`` (``OverridesWatcher.replace``: validated, written to the file, audited), with the
logged-in user as their author.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

import numpy as np
import pandas as pd
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.engine import Engine

import logging

from vpp.config import VppConfig
from vpp.errors import InputError
from vpp.log_limit import LogLimiter, held_note
from vpp.ledger.report import month_bounds
from vpp.ledger.statement import stream_group
from vpp.ledger.store import read_settlements
from vpp.web import access, auth, charts, console_data
from vpp.web.config import WebModel
from vpp.web.i18n import LANGUAGES, Translator
from vpp.web.statement_data import load_statement, statement_profile
from vpp.web.statement_files import statement_csv, statement_pdf
from vpp.web.users import load_users, session_secret

if TYPE_CHECKING:
    from vpp.daemon.app import Daemon

log = logging.getLogger(__name__)
_refusals = LogLimiter()
HERE = Path(__file__).parent
SESSION, NONCE, LANG = "vpp_session", "vpp_nonce", "vpp_lang"
MAX_FORM_BYTES = 16_384
MAX_FIELDS = 32
MAX_FIELD = 512
OVERRIDE_KINDS = ("force_power", "unit_out", "soc_floor", "soc_ceiling", "block_product", "fleet_export_cap", "fleet_import_cap")


@dataclass
class Web:
    cfg: Callable[[], VppConfig]
    engine: Engine
    daemon: Daemon | None
    settings: WebModel
    config_path: Path
    secret: bytes
    env: Environment
    throttle: auth.LoginThrottle


def mount(app: FastAPI, *, cfg: Callable[[], VppConfig], engine: Engine, daemon: Daemon | None = None) -> None:
    """Add ``/ui/...`` pages, ``/ui/static`` and a redirect from ``/`` to ``app``."""
    first = cfg()
    settings = first.daemon.web if first.daemon is not None else WebModel()
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["group"] = stream_group
    web = Web(cfg, engine, daemon, settings, first.path, session_secret(settings, first.path), env, auth.LoginThrottle())
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")
    _routes(app, web)


# ---------------------------------------------------------------- plumbing


def _lang(request: Request, web: Web) -> str:
    asked = request.query_params.get("lang") or request.cookies.get(LANG)
    return asked if asked in LANGUAGES else web.settings.language


def _session(request: Request, web: Web) -> auth.Session | None:
    return auth.read_session(request.cookies.get(SESSION), web.secret, time.time())


def _page(request: Request, web: Web, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    cfg = web.cfg()
    lang = _lang(request, web)
    nonce = request.cookies.get(NONCE) or auth.new_nonce()
    t = Translator(lang, cfg.currency, cfg.timezone)
    body = web.env.get_template(template).render(
        t=t, lang=lang, session=_session(request, web), csrf=auth.csrf_token(nonce, web.secret), cfg=cfg, path=request.url.path, query=str(request.url.query), daemon=web.daemon is not None, **context
    )
    response = HTMLResponse(body, status_code=status)
    if request.cookies.get(NONCE) != nonce:
        response.set_cookie(NONCE, nonce, httponly=True, samesite="lax", path="/ui")
    if request.query_params.get("lang") in LANGUAGES:
        response.set_cookie(LANG, lang, samesite="lax", path="/ui", max_age=365 * 86400)
    return response


def _denied(request: Request, web: Web, status: int, why: str | None = None) -> HTMLResponse:
    """The error page; refusals of outside input (why given) are logged, one rate-limited line each."""
    if why is not None and (held := _refusals.allow()) is not None:
        session = _session(request, web)
        log.warning("web refused status=%d path=%s user=%s client=%s: %s%s", status, request.url.path[:200], session.user if session else "-", request.client.host if request.client else "-", why, held_note(held))
    return _page(request, web, "error.html", status=status, code=status)


def _guard(request: Request, web: Web, *, operator: bool = False) -> auth.Session | Response:
    session = _session(request, web)
    if session is None:
        if request.url.path.startswith("/ui/api/") or request.url.path.endswith((".csv", ".pdf", ".json")):
            return JSONResponse({"detail": "log in first"}, status_code=401)
        return RedirectResponse(f"/ui/login?next={quote(request.url.path)}", status_code=303)
    if operator and session.role != auth.OPERATOR:
        return _denied(request, web, 403, "operator page asked for by a customer")
    return session


async def _form(request: Request, web: Web) -> dict[str, str] | Response:
    """The posted form, or a refusal: too large (413), malformed (400), bad CSRF token (403)."""
    from vpp.daemon.api import _body

    raw = await _body(request, MAX_FORM_BYTES)
    if raw is None:
        return _denied(request, web, 413, f"form larger than {MAX_FORM_BYTES} bytes")
    try:
        fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return _denied(request, web, 400, "form is not UTF-8 or has too many fields")
    form = {k: v[0][:MAX_FIELD] for k, v in fields.items() if v}
    if not auth.csrf_ok(request.cookies.get(NONCE), form.get("csrf"), web.secret):
        return _denied(request, web, 403, "missing or wrong CSRF token")
    return form


def _month(value: str | None, cfg: VppConfig, now: pd.Timestamp) -> str:
    if value:
        month_bounds(value, cfg.timezone)  # InputError for a malformed month
        return value
    return now.tz_convert(cfg.timezone).strftime("%Y-%m")


def _now(web: Web) -> pd.Timestamp:
    return web.daemon.clock.now() if web.daemon is not None else pd.Timestamp.now(tz="UTC")


# ---------------------------------------------------------------- routes


def _routes(app: FastAPI, web: Web) -> None:  # noqa: C901 - one place lists every page
    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=303)

    @app.get("/ui/", response_class=HTMLResponse)
    def home(request: Request) -> Response:
        session = _guard(request, web)
        if isinstance(session, Response):
            return session
        return RedirectResponse("/ui/fleet" if session.role == auth.OPERATOR else "/ui/statements", status_code=303)

    @app.get("/ui/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/ui/") -> HTMLResponse:
        return _page(request, web, "login.html", next=next if next.startswith("/ui/") else "/ui/", failed=False)

    @app.post("/ui/login")
    async def login(request: Request) -> Response:
        form = await _form(request, web)
        if isinstance(form, Response):
            return form
        name, password = form.get("user", ""), form.get("password", "")
        target = form.get("next", "/ui/")
        target = target if target.startswith("/ui/") and "//" not in target else "/ui/"
        if web.throttle.blocked(name[:64], time.time()):
            if (held := _refusals.allow()) is not None:
                log.warning("web login refused user=%r: %d failures within %g s%s", name[:64], web.throttle.attempts, web.throttle.window_s, held_note(held))
            return _page(request, web, "login.html", status=429, next=target, failed=True)
        users = await asyncio.to_thread(load_users, web.settings, web.config_path)
        user = users.get(name)
        ok = await asyncio.to_thread(auth.verify_password, password, user.password if user else auth.hash_password("x", salt=b"0" * 16))
        if user is None or not ok:
            web.throttle.failed(name[:64], time.time())
            if (held := _refusals.allow()) is not None:
                log.warning("web login failed user=%r client=%s%s", name[:64], request.client.host if request.client else "-", held_note(held))
            return _page(request, web, "login.html", status=401, next=target, failed=True)
        web.throttle.succeeded(name)
        session = auth.Session(user=user.name, role=user.role, customer=user.customer, expires=time.time() + web.settings.session_ttl_min * 60, sid=auth.new_nonce())
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(SESSION, auth.sign_session(session, web.secret), httponly=True, samesite="lax", path="/", max_age=int(web.settings.session_ttl_min * 60))
        return response

    @app.post("/ui/logout")
    async def logout(request: Request) -> Response:
        form = await _form(request, web)
        if isinstance(form, Response):
            return form
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(SESSION, path="/")
        return response

    # ------------------------------------------------------------ operator console

    @app.get("/ui/fleet", response_class=HTMLResponse)
    def fleet(request: Request) -> Response:
        session = _guard(request, web, operator=True)
        if isinstance(session, Response):
            return session
        return _page(request, web, "fleet.html", status_json=_status(web), stale_after_s=_stale_after(web))

    @app.get("/ui/api/status")
    def status_json(request: Request) -> Response:
        session = _guard(request, web, operator=True)
        if isinstance(session, Response):
            return session
        return JSONResponse(_status(web) or {"units": {}})

    @app.get("/ui/plan", response_class=HTMLResponse)
    async def plan(request: Request, unit: str | None = None, site: str | None = None, hours: float = 6.0) -> Response:
        """One unit, or (``site=``) the sum over a site's units."""
        session = _guard(request, web, operator=True)
        if isinstance(session, Response):
            return session
        cfg = web.cfg()
        units = [u.id for u in cfg.units]
        sites = [s.id for s in cfg.fleet.sites]
        site = site if site in sites else None
        unit = None if site is not None else (unit if unit in units else (units[0] if units else None))
        members = {u.id: u.energy_kwh for u in cfg.units if (u.site_id == site if site is not None else u.id == unit)}
        hours = float(np.clip(hours, 0.5, console_data.MAX_WINDOW.total_seconds() / 3600)) if np.isfinite(hours) else 6.0
        now = _now(web)
        start, end = now - pd.Timedelta(hours=hours), now + pd.Timedelta(hours=hours)
        t = Translator(_lang(request, web), cfg.currency, cfg.timezone)
        chart_power = chart_soc = chart_price = None
        if members:
            bucket = web.daemon.downsample if web.daemon is not None else pd.Timedelta(minutes=1)
            data = await asyncio.to_thread(console_data.plan_vs_actual, web.engine, members, start, end, bucket)
            p, c, m = data["planned"], data["commanded"], data["measured"]
            p = _with_plan_in_force(web, p, members, end)
            chart_power = charts.line_chart(
                [
                    charts.Series(t("plan.planned"), pd.DatetimeIndex(p["t"]), p["power_kw"].to_numpy(dtype=float), step=True),
                    charts.Series(t("plan.commanded"), pd.DatetimeIndex(c["t"]), c["power_kw"].to_numpy(dtype=float), step=True),
                    charts.Series(t("plan.measured"), pd.DatetimeIndex(m["t"]), m["power_kw"].to_numpy(dtype=float), step=True),
                ],
                title=t("plan.power"), unit="kW", timezone=cfg.timezone, span=(start, end),
            )
            chart_soc = charts.line_chart([charts.Series(t("plan.measured_soc"), pd.DatetimeIndex(m["t"]), 100 * m["soc"].to_numpy(dtype=float))], title=t("plan.soc"), unit="%", timezone=cfg.timezone, span=(start, end))
            chart_price = _price_chart(cfg, start, end, t)
        return _page(request, web, "plan.html", units=units, unit=unit, sites=sites, site=site, hours=hours, chart_power=chart_power, chart_soc=chart_soc, chart_price=chart_price, schedule=_schedule_summary(web))

    @app.get("/ui/overrides", response_class=HTMLResponse)
    async def overrides_page(request: Request, error: str | None = None) -> Response:
        session = _guard(request, web, operator=True)
        if isinstance(session, Response):
            return session
        return await _overrides(request, web, error)

    @app.post("/ui/overrides")
    async def create_override(request: Request) -> Response:
        session = _guard(request, web, operator=True)
        if isinstance(session, Response):
            return session
        form = await _form(request, web)
        if isinstance(form, Response):
            return form
        if web.daemon is None:
            return _denied(request, web, 409)
        cfg = web.cfg()
        now = _now(web)
        try:
            entry = _override_entry(form, session.user, now, cfg.timezone)
        except ValueError as err:
            return await _overrides(request, web, str(err), status=422)
        entries = [_override_dict(o) for o in web.daemon.watcher.current] + [entry]
        return await _replace(request, web, entries)

    @app.post("/ui/overrides/expire")
    async def expire_override(request: Request) -> Response:
        session = _guard(request, web, operator=True)
        if isinstance(session, Response):
            return session
        form = await _form(request, web)
        if isinstance(form, Response):
            return form
        if web.daemon is None:
            return _denied(request, web, 409)
        current = list(web.daemon.watcher.current)
        key = form.get("key", "")
        now = _now(web)
        entries = []
        found = False
        for o in current:
            d = _override_dict(o)
            if _key(o) == key and pd.Timestamp(o.end) > now:
                found = True
                d["end"] = max(now, pd.Timestamp(o.start)).isoformat()
                d["reason"] = f"{o.reason} (expired by {session.user}: {form.get('reason', '').strip() or '-'})"[:500]
            entries.append(d)
        if not found:
            return await _overrides(request, web, "not found", status=404)
        return await _replace(request, web, entries)

    @app.get("/ui/solves", response_class=HTMLResponse)
    async def solves(request: Request) -> Response:
        session = _guard(request, web, operator=True)
        if isinstance(session, Response):
            return session
        rows = await asyncio.to_thread(console_data.recent_solves, web.engine)
        current = web.daemon.solve_status() if web.daemon is not None else None
        return _page(request, web, "solves.html", rows=rows, current=current)

    @app.get("/ui/revenue", response_class=HTMLResponse)
    async def revenue(request: Request, month: str | None = None, by: str = "stream", per: str = "day") -> Response:
        session = _guard(request, web, operator=True)
        if isinstance(session, Response):
            return session
        cfg = web.cfg()
        by = by if by in ("stream", "unit", "site", "contract") else "stream"
        per = per if per in ("day", "month") else "day"
        try:
            month = _month(month, cfg, _now(web))
        except InputError:
            return _denied(request, web, 400)
        start, end = month_bounds(month, cfg.timezone)
        if per == "month":  # the year to date, month by month
            start = month_bounds(f"{month[:4]}-01", cfg.timezone)[0]
        table = await asyncio.to_thread(console_data.revenue, web.engine, cfg.contracts, start, end, by, per, cfg.timezone)
        pivot = table.pivot_table(index="period", columns="key", values="amount_minor", aggfunc="sum", fill_value=0) if len(table) else pd.DataFrame()
        return _page(request, web, "revenue.html", month=month, by=by, per=per, pivot=pivot, total=int(table["amount_minor"].sum()) if len(table) else 0)

    # ------------------------------------------------------------ statements (operator and customer)

    @app.get("/ui/statements", response_class=HTMLResponse)
    def statements(request: Request, month: str | None = None) -> Response:
        session = _guard(request, web)
        if isinstance(session, Response):
            return session
        cfg = web.cfg()
        try:
            month = _month(month, cfg, _now(web))
        except InputError:
            return _denied(request, web, 400)
        return _page(request, web, "statements.html", contracts=access.visible_contracts(session, cfg.contracts), month=month, parties=access.parties)

    @app.get("/ui/statements/{contract_id}/{month}/intervals.csv")
    async def statement_intervals(request: Request, contract_id: str, month: str) -> Response:
        """Every settled row behind the statement (interval × unit × stream): what its figures add up from."""
        found = await _statement(request, web, contract_id, month)
        if isinstance(found, Response):
            return found
        session, _ = found
        cfg = web.cfg()
        contract = access.contract_for(session, cfg.contracts, contract_id)
        start, end = month_bounds(month, cfg.timezone)
        rows = await asyncio.to_thread(read_settlements, web.engine, start, end, contract.units)
        rows.insert(1, "interval_start_local", rows["interval_start"].dt.tz_convert(cfg.timezone).map(lambda t: t.isoformat()))
        rows["interval_start"] = rows["interval_start"].map(lambda t: t.isoformat())
        return Response(rows.to_csv(index=False), media_type="text/csv; charset=utf-8", headers={"Content-Disposition": f'attachment; filename="settlements-{contract_id}-{month}.csv"'})

    @app.get("/ui/statements/{contract_id}/{month}.csv")
    async def statement_csv_file(request: Request, contract_id: str, month: str) -> Response:
        found = await _statement(request, web, contract_id, month)
        if isinstance(found, Response):
            return found
        _, st = found
        t = Translator(_lang(request, web), web.cfg().currency, web.cfg().timezone)
        return Response(statement_csv(st, t), media_type="text/csv; charset=utf-8", headers={"Content-Disposition": f'attachment; filename="statement-{contract_id}-{month}.csv"'})

    @app.get("/ui/statements/{contract_id}/{month}.pdf")
    async def statement_pdf_file(request: Request, contract_id: str, month: str) -> Response:
        found = await _statement(request, web, contract_id, month)
        if isinstance(found, Response):
            return found
        session, st = found
        cfg = web.cfg()
        t = Translator(_lang(request, web), cfg.currency, cfg.timezone)
        pdf = await asyncio.to_thread(statement_pdf, st, t, cfg.name, session.customer, web.settings.pdf_font)
        return Response(pdf, media_type="application/pdf", headers={"Content-Disposition": f'attachment; filename="statement-{contract_id}-{month}.pdf"'})

    @app.get("/ui/statements/{contract_id}/{month}", response_class=HTMLResponse)
    async def statement(request: Request, contract_id: str, month: str) -> Response:
        found = await _statement(request, web, contract_id, month)
        if isinstance(found, Response):
            return found
        session, st = found
        cfg = web.cfg()
        t = Translator(_lang(request, web), cfg.currency, cfg.timezone)
        contract = access.contract_for(session, cfg.contracts, contract_id)
        power, soc = await asyncio.to_thread(statement_profile, cfg, web.engine, contract, month)
        chart_power = charts.line_chart([charts.Series(t("st.net_power"), pd.DatetimeIndex(power["interval_start"]), power["kw"].to_numpy(dtype=float), step=True)], title=t("plan.power"), unit="kW", timezone=cfg.timezone)
        chart_soc = charts.line_chart([charts.Series(t("plan.measured_soc"), pd.DatetimeIndex(soc["t"]), 100 * soc["soc"].to_numpy(dtype=float))], title=t("plan.soc"), unit="%", timezone=cfg.timezone)
        return _page(request, web, "statement.html", st=st, viewer=session.customer, chart_power=chart_power, chart_soc=chart_soc)

    @app.get("/ui/api/statements/{contract_id}/{month}")
    async def statement_json(request: Request, contract_id: str, month: str) -> Response:
        found = await _statement(request, web, contract_id, month)
        if isinstance(found, Response):
            return found
        _, st = found
        return JSONResponse(
            {
                "contract_id": st.contract_id, "model": st.model, "month": st.month, "currency": st.currency, "intervals": st.intervals,
                "streams": dict(st.streams), "split": [{"party": p, "item": i, "amount_minor": a} for p, i, a in st.split], "total_minor": st.total_minor,
                "bill": None if st.bill is None else {"without_battery_minor": st.bill.without_battery_minor, "with_battery_minor": st.bill.with_battery_minor},
                "energy": [{"period": e.period, "charged_kwh": e.charged_kwh, "discharged_kwh": e.discharged_kwh} for e in st.energy], "cycles": st.cycles,
            }
        )


async def _statement(request: Request, web: Web, contract_id: str, month: str) -> tuple[auth.Session, Any] | Response:
    session = _guard(request, web)
    if isinstance(session, Response):
        return session
    cfg = web.cfg()
    contract = access.contract_for(session, cfg.contracts, contract_id)
    if contract is None:
        return _denied(request, web, 404, f"contract {contract_id[:128]!r} is not one this user may see")
    try:
        month_bounds(month, cfg.timezone)
    except InputError:
        return _denied(request, web, 404, f"month {month[:16]!r} is not YYYY-MM")
    return session, await asyncio.to_thread(load_statement, cfg, web.engine, contract, month)


# ---------------------------------------------------------------- helpers


def _stale_after(web: Web) -> float:
    return web.daemon.settings.stale_after_s if web.daemon is not None else 10.0


def _status(web: Web) -> dict[str, Any] | None:
    if web.daemon is None:
        return None
    from vpp.daemon.api import daemon_status

    body = daemon_status(web.daemon)
    body["alarms"] = body.get("alarms") or _alarms(body, _stale_after(web), web.daemon.settings.tick_s)
    return body


def _alarms(status: dict[str, Any], stale_after_s: float, tick_s: float) -> list[dict[str, str]]:
    """What an operator must look at: units out of dispatch, stale telemetry, failing devices, a late
    tick, a failed solve, a rejected overrides file (the daemon's own /status alarms when it has them)."""
    out = []
    for uid, u in status["units"].items():
        age = u["telemetry_age_s"]
        if age is None or age > stale_after_s:
            out.append({"kind": "stale", "what": uid, "detail": f"{age:.1f} s" if age is not None else "–"})
        if u["health"]["consecutive_failures"]:
            out.append({"kind": "link", "what": uid, "detail": str(u["health"]["last_error"] or "")[:200]})
        if not u["in_dispatch"]:
            out.append({"kind": "out", "what": uid, "detail": str(u["reason"])[:200]})
    tick = status["tick"]
    if tick["duration_s"] is not None and tick["duration_s"] > tick_s:
        out.append({"kind": "overrun", "what": "daemon", "detail": f"last tick took {tick['duration_s']:.3f} s of a {tick_s:g} s period"})
    if status["health"]["status"] == "unhealthy":
        out.append({"kind": "tick", "what": "daemon", "detail": "; ".join(status["health"]["reasons"])[:300]})
    solve = status["solve"]
    if solve.get("outcome") not in (None, "ok", "solved"):
        out.append({"kind": "solver", "what": str(solve.get("trigger")), "detail": f"{solve.get('outcome')}: {solve.get('error') or ''}"[:300]})
    if status["overrides"]["last_error"]:
        out.append({"kind": "overrides", "what": str(status["overrides"]["source"]), "detail": str(status["overrides"]["last_error"])[:300]})
    return out


def _with_plan_in_force(web: Web, stored: pd.DataFrame, members: dict[str, float], end: pd.Timestamp) -> pd.DataFrame:
    """Stored plan points (the past) followed by the schedule in force for the intervals after them."""
    held = web.daemon.schedule.schedule if web.daemon is not None else None
    if held is None:
        return stored
    rows = [i for i, uid in enumerate(held.unit_ids) if uid in members]
    after = held.index > (stored["t"].max() if len(stored) else held.index[0] - pd.Timedelta(seconds=1))
    after &= held.index < end
    future = pd.DataFrame({"t": held.index[after], "power_kw": held.power_kw[rows][:, after].sum(axis=0)})
    return pd.concat([stored, future], ignore_index=True) if len(stored) else future


def _schedule_summary(web: Web) -> dict[str, Any] | None:
    if web.daemon is None or web.daemon.schedule.schedule is None:
        return None
    held = web.daemon.schedule
    s = held.schedule
    return {"id": held.id, "status": s.stats.status, "bids": {k: float(np.abs(v).max()) for k, v in s.bids_kw.items()}, "dr": dict(s.dr_commitment_kw), "revenue": s.total_revenue}


def _price_chart(cfg: VppConfig, start: pd.Timestamp, end: pd.Timestamp, t: Translator):
    from vpp.timeseries import profile_on

    index = pd.date_range(start.floor(cfg.interval), end, freq=cfg.interval, inclusive="left")
    try:
        price = profile_on(cfg.market.energy_price_per_mwh, index, "price")
    except InputError:
        price = np.full(len(index), np.nan)
    return charts.line_chart([charts.Series(t("plan.price"), index, price, step=True)], title=t("plan.price"), unit=f"{cfg.currency}/MWh", timezone=cfg.timezone, span=(start, end))


def _override_dict(o) -> dict[str, Any]:
    d = {"kind": o.kind.value, "start": pd.Timestamp(o.start).isoformat(), "end": pd.Timestamp(o.end).isoformat(), "author": o.author, "reason": o.reason}
    for name, value in (("unit", o.unit_id), ("site", o.site_id), ("product", o.product_id), ("value", o.value)):
        if value is not None:
            d[name] = value
    return d


def _key(o) -> str:
    import hashlib

    return hashlib.sha256(repr(_override_dict(o)).encode()).hexdigest()[:16]


def _override_entry(form: dict[str, str], author: str, now: pd.Timestamp, timezone: str) -> dict[str, Any]:
    kind = form.get("kind", "")
    if kind not in OVERRIDE_KINDS:
        raise ValueError(f"kind: one of {', '.join(OVERRIDE_KINDS)}")
    reason = form.get("reason", "").strip()
    if not reason:
        raise ValueError("reason: say why (it goes into the audit log)")
    entry: dict[str, Any] = {"kind": kind, "author": author, "reason": reason}
    for name in ("unit", "site", "product"):
        if form.get(name, "").strip():
            entry[name] = form[name].strip()
    if form.get("value", "").strip():
        try:
            entry["value"] = float(form["value"])
        except ValueError:
            raise ValueError("value: a number") from None
    minutes = form.get("minutes", "60").strip() or "60"
    try:
        duration = pd.Timedelta(minutes=float(minutes))
    except ValueError:
        raise ValueError("minutes: a number") from None
    if not pd.Timedelta(0) < duration <= pd.Timedelta(days=31):
        raise ValueError("minutes: more than 0 and at most 31 days")
    entry["start"] = now.isoformat()
    entry["end"] = (now + duration).isoformat()
    return entry


async def _replace(request: Request, web: Web, entries: list[dict[str, Any]]) -> Response:
    from vpp.daemon.watch import OverridesRejected

    text = yaml.safe_dump({"overrides": entries}, sort_keys=False, allow_unicode=True)
    try:
        await asyncio.wait_for(asyncio.to_thread(web.daemon.watcher.replace, text), 10.0)
    except OverridesRejected as err:
        return await _overrides(request, web, "; ".join(err.errors)[:1000], status=422)
    except (RuntimeError, TimeoutError) as err:
        return await _overrides(request, web, str(err) or "timeout", status=409)
    web.daemon.overrides_changed()
    return RedirectResponse("/ui/overrides", status_code=303)


async def _overrides(request: Request, web: Web, error: str | None, status: int = 200) -> HTMLResponse:
    rows = await asyncio.to_thread(console_data.audit_log, web.engine)
    current = list(web.daemon.watcher.current) if web.daemon is not None else []
    now = _now(web)
    listed = [{"o": o, "key": _key(o), "active": pd.Timestamp(o.start) <= now < pd.Timestamp(o.end), "ended": pd.Timestamp(o.end) <= now} for o in current]
    cfg = web.cfg()
    return _page(
        request, web, "overrides.html", status=status, error=error, listed=listed, audit=rows, kinds=OVERRIDE_KINDS,
        units=[u.id for u in cfg.units], sites=[s.id for s in cfg.fleet.sites], products=[p.id for p in cfg.market.products],
    )

