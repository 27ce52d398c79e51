"""The web layer without a browser: password hashes, sessions, CSRF tokens, the catalogs, `vpp users add`."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.cli import vpp
from tests.test_ledger_cli import example_config
from vpp.web import auth
from vpp.web.i18n import CATALOGS, LANGUAGES, Translator

WEB = Path(__file__).resolve().parents[1] / "vpp" / "web"
SECRET = b"s" * 32


def test_a_password_verifies_only_against_its_own_hash() -> None:
    stored = auth.hash_password("correct horse")
    assert auth.verify_password("correct horse", stored)
    assert not auth.verify_password("correct horsE", stored)
    assert not auth.verify_password("x" * (auth.MAX_PASSWORD + 1), stored)  # no scrypt of a huge input
    assert not auth.verify_password("correct horse", "scrypt$99999999$8$1$AA$AA")  # cost out of bounds
    assert not auth.verify_password("correct horse", "plain-text")
    assert stored != auth.hash_password("correct horse")  # salted


def test_a_session_is_refused_when_forged_expired_or_signed_with_another_secret() -> None:
    now = time.time()
    s = auth.Session("dg", auth.CUSTOMER, "dongguan_electronics", now + 60, "sid")
    cookie = auth.sign_session(s, SECRET)
    assert auth.read_session(cookie, SECRET, now) == s
    assert auth.read_session(cookie, SECRET, now + 61) is None  # expired
    assert auth.read_session(cookie, b"t" * 32, now) is None  # another secret
    payload, signature = cookie.split(".")
    forged = auth.sign_session(auth.Session("dg", auth.OPERATOR, None, now + 60, "sid"), b"t" * 32).split(".")[0]
    assert auth.read_session(f"{forged}.{signature}", SECRET, now) is None  # role changed, signature kept
    assert auth.read_session("x" * 5000, SECRET, now) is None


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_a_csrf_token_matches_only_its_own_nonce(nonce: str, other: str) -> None:
    token = auth.csrf_token(nonce, SECRET)
    assert auth.csrf_ok(nonce, token, SECRET) == (len(nonce) <= 64)
    if other != nonce:
        assert not auth.csrf_ok(other, token, SECRET)
    assert not auth.csrf_ok(nonce, None, SECRET) and not auth.csrf_ok(None, token, SECRET)


def used_keys() -> set[str]:
    """Every literal catalog key in the templates and routes, plus the families built from data."""
    text = "".join(p.read_text(encoding="utf-8") for p in [*WEB.glob("templates/*.html"), *WEB.glob("*.py")])
    keys = set(re.findall(r"""\bt\(\s*["']([a-z_]+\.[a-z_.]*[a-z_])["']""", text))
    families = {
        "kind": ["force_power", "unit_out", "soc_floor", "soc_ceiling", "block_product", "fleet_export_cap", "fleet_import_cap"],
        "event": ["applied", "expired", "withdrawn", "rejected"],
        "model": ["energy_as_a_service", "co_investment", "agency_operation"],
        "group": ["savings", "energy", "demand_response", "ancillary", "degradation"],
        "item": ["service_fee", "operating_fee", "revenue_share", "degradation", "guaranteed_minimum", "excess_share", "guarantee_shortfall", "revenue"],
        "error": ["400", "401", "403", "404", "409", "413", "422"],
        "rev.by": ["stream", "unit", "site", "contract"],
        "rev.per": ["day", "month"],
        "st.section": ["bill", "stream", "split", "total", "energy"],
        "alarm": ["stale", "link", "out", "tick", "overrun", "solver", "overrides"],
    }
    return keys | {f"{f}.{v}" for f, values in families.items() for v in values}


def test_both_catalogs_hold_every_key_the_pages_use_and_nothing_else() -> None:
    keys = used_keys()
    assert len(keys) > 100
    for lang in LANGUAGES:
        catalog = json.loads((CATALOGS / f"{lang}.json").read_text(encoding="utf-8"))
        assert keys - set(catalog) == set(), (lang, sorted(keys - set(catalog)))
        assert all(v.strip() for v in catalog.values()), lang
    en, zh = (set(json.loads((CATALOGS / f"{lang}.json").read_text(encoding="utf-8"))) for lang in LANGUAGES)
    assert en == zh


@pytest.mark.parametrize(("lang", "minor", "currency", "shown"), [("zh-CN", 123456789, "CNY", "¥1,234,567.89"), ("en", -5, "CNY", "-CNY 0.05"), ("en", 1234, "JPY", "JPY 1,234"), ("zh-CN", 10, "KWD", "0.010")])
def test_money_is_formatted_exactly_in_the_currency(lang: str, minor: int, currency: str, shown: str) -> None:
    assert Translator(lang, currency, "UTC").money(minor).endswith(shown)


def test_users_add_through_the_installed_command_hashes_the_password_and_checks_the_customer(tmp_path: Path) -> None:
    config = example_config(tmp_path)
    done = vpp("users", "add", "-c", str(config), "dg", "--role", "customer", "--customer", "dongguan_electronics", "--password-stdin", input_text="a-long-password\n")
    assert done.returncode == 0, done.stderr
    users = yaml.safe_load(config.with_suffix(".users.yaml").read_text())["users"]
    assert users[0]["name"] == "dg" and auth.verify_password("a-long-password", users[0]["password"])
    assert "a-long-password" not in config.with_suffix(".users.yaml").read_text()
    assert oct(config.with_suffix(".users.yaml").stat().st_mode & 0o777) == "0o600"
    bad = vpp("users", "add", "-c", str(config), "x", "--role", "customer", "--customer", "nobody", "--password-stdin", input_text="a-long-password\n")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "nobody" in bad.stderr and "Traceback" not in bad.stderr


def test_chart_points_fall_inside_the_plot_whatever_the_time_resolution() -> None:
    import numpy as np
    import pandas as pd

    from vpp.web.charts import Series, line_chart

    for unit in ("s", "us", "ns"):
        t = pd.date_range("2020-08-18", periods=12, freq="5min", tz="UTC").as_unit(unit)
        svg = str(line_chart([Series("p", t, np.linspace(-250, 250, 12), step=True), Series("m", t[::2], np.ones(6))], title="x", unit="kW", timezone="Asia/Shanghai"))
        points = [tuple(map(float, p.split(","))) for line in re.findall(r'points="([^"]*)"', svg) for p in line.split()]
        assert len(points) == 2 * 12 - 1 + 6
        assert all(56 <= x <= 888 and 24 <= y <= 192 for x, y in points), (unit, points[:3])


def test_the_portal_runs_without_a_daemon_from_the_installed_command(tmp_path: Path) -> None:
    import subprocess

    import httpx

    from tests.cli import VPP
    from tests.conftest import free_port
    from tests.test_ledger_cli import record_example

    config = example_config(tmp_path)
    db = tmp_path / "ledger.db"
    record_example(f"sqlite:///{db}")
    port = free_port()
    process = subprocess.Popen([VPP, "portal", "-c", str(config), "--db", str(db), "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                login = httpx.get(f"http://127.0.0.1:{port}/ui/login", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, process.stdout.read() if process.poll() is not None else "portal did not answer"
                time.sleep(0.2)
        assert login.status_code == 200 and "csrf" in login.text
        assert httpx.get(f"http://127.0.0.1:{port}/ui/statements/dongguan-eaas/2026-11.pdf").status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/", follow_redirects=False).status_code == 303
    finally:
        process.terminate()
        process.wait(10)


UNITS = [("dg-1-1", "dongguan_electronics"), ("dg-big", "dongguan_electronics"), ("gz-1-2", "guangzhou_mall"), ("fs-1-3", "foshan_ceramics"), ("sz-3", "shenzhen_office_park"), ("zh-1-1", "zhuhai_school")]
STREAMS = ["tou_savings", "demand_charge_savings", "demand_response", "degradation", "energy"]


@given(
    st.lists(
        st.tuples(st.integers(-200, 3100), st.sampled_from(UNITS), st.sampled_from(STREAMS), st.integers(-10**9, 10**9)),
        min_size=1, max_size=40, unique_by=lambda r: (r[0], r[1][0], r[2]),
    ),
    st.lists(st.tuples(st.integers(0, 2900), st.sampled_from(UNITS), st.floats(0, 5000), st.floats(0, 5000)), max_size=10, unique_by=lambda r: (r[0], r[1][0])),
)
@settings(max_examples=15)
def test_every_statement_equals_the_ledger_reports_split_to_the_minor_unit(tmp_path_factory, rows, metered) -> None:
    """Random months of settlements (straddling both ends of Shanghai's November) and metered energy:
    each contract's statement split is `ledger_report`'s rows for it, and its total the streams' sum."""
    import pandas as pd

    from vpp.config import load_config
    from vpp.db import open_database
    from vpp.ledger.report import ledger_report
    from vpp.ledger.store import record_settlements
    from vpp.web.statement_data import load_statement

    directory = tmp_path_factory.mktemp("statement")
    cfg = load_config(example_config(directory))
    engine = open_database(f"sqlite:///{directory / 'l.db'}")
    t0 = pd.Timestamp("2026-10-31T16:00Z")
    frame = pd.DataFrame(
        [(t0 + pd.Timedelta(minutes=15 * k), unit, site, stream, amount) for k, (unit, site), stream, amount in rows], columns=["interval_start", "unit_id", "site_id", "stream", "amount_minor"]
    )
    energy = pd.DataFrame([(t0 + pd.Timedelta(minutes=15 * k), unit, d, c) for k, (unit, _), d, c in metered], columns=["interval_start", "unit_id", "discharged_kwh", "charged_kwh"])
    record_settlements(engine, frame, energy if len(energy) else None)
    report = ledger_report(engine, cfg.contracts, "2026-11", cfg.timezone, "contract")
    for contract in cfg.contracts:
        statement = load_statement(cfg, engine, contract, "2026-11")
        expected = report[report["contract_id"] == contract.id]
        assert [a for _, _, a in statement.split] == expected["amount_minor"].tolist()
        assert statement.total_minor == int(expected["amount_minor"].sum()) == sum(a for _, a in statement.streams)
    engine.dispose()


def test_five_failed_logins_lock_the_name_out_for_the_window() -> None:
    throttle = auth.LoginThrottle(attempts=5, window_s=300)
    for k in range(5):
        assert not throttle.blocked("op", 1000.0 + k)
        throttle.failed("op", 1000.0 + k)
    assert throttle.blocked("op", 1010.0) and not throttle.blocked("dg", 1010.0)
    assert not throttle.blocked("op", 1305.0)  # the window passed
    small = auth.LoginThrottle(attempts=1, window_s=300, max_names=3)
    for name in "abcd":
        small.failed(name, 0.0)
    assert not small.blocked("a", 1.0) and small.blocked("d", 1.0)  # memory stays bounded
