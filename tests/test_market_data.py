"""Market data delivered to a running engine: the merge rule, the checks, the store, the drop folder, the feeds.

The intake is the daemon's own (``vpp.daemon.market_data``) on a real SQLite store; the feeds are the real
``entsoe-py`` and ``gridstatus`` clients talking HTTP to a local server that answers with responses
recorded under tests/data/feeds/ (written by hand in the formats the libraries document and parse).
"""

from __future__ import annotations

import asyncio
import http.server
import io
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import time as day_time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from adapters.feeds import EntsoeFeed, GridStatusFeed, delivery_csv, make_feed
from tests.databases import empty_database
from vpp.config import SourceModel, load_config
from vpp.daemon.clock import Clock
from vpp.daemon.config import FeedModel
from vpp.daemon.market_data import DeliveryRejected, MarketDataIntake
from vpp.daemon.market_data_store import load_points, market_deliveries
from vpp.daemon.store import Store
from vpp.db import open_database
from vpp.errors import InputError
from vpp.fleet import Fleet, Site
from vpp.forecasts import ForecastSpec
from vpp.market_data import Book, Grid, coverage, merge, planned
from vpp.markets import Market
from vpp.timeseries import Column, LoadedSeries

DATA = Path(__file__).parent / "data" / "feeds"
NOW = pd.Timestamp("2020-08-18T20:00:00Z")  # market time of the intake tests: 12:00 local (UTC-8)
STEP = pd.Timedelta(minutes=15)


def prices_csv(start: str, values: list[float], delimiter: str = ",") -> str:
    times = pd.date_range(pd.Timestamp(start), periods=len(values), freq=STEP)
    return "time" + delimiter + "price\n" + "".join(f"{t:%Y-%m-%d %H:%M}{delimiter}{v}\n" for t, v in zip(times, values))


def write_site(directory: Path, market_data: dict | None = None) -> Path:
    """One wholesale battery priced by a 15-minute source 'prices' that covers 2020-08-17 and 18 (local UTC-8),
    at a site whose load is an hourly source 'site' over the same days."""
    hours = np.arange(2 * 96) * 0.25
    (directory / "prices.csv").write_text(prices_csv("2020-08-17 00:00", list(np.round(30 + 10 * np.sin(hours / 24 * 2 * np.pi), 4))))
    (directory / "de.csv").write_text("hour,eur\n" + "".join(f"{t:%Y-%m-%d %H:%M},40\n" for t in pd.date_range("2020-08-17", periods=48, freq="h")))
    (directory / "site.csv").write_text("hour,load_kw\n" + "".join(f"{t:%Y-%m-%d %H:%M},{20 + t.hour}\n" for t in pd.date_range("2020-08-17", periods=48, freq="h")))
    config = {
        "name": "market-data",
        "currency": "USD",
        "timezone": "Etc/GMT+8",
        "interval_min": 15,
        "horizon_h": 24,
        "data": {
            "prices": {"file": "prices.csv", "time_column": "time", "columns": {"da": {"column": "price", "unit": "per_mwh"}}},
            "de": {"file": "de.csv", "time_column": "hour", "columns": {"da": {"column": "eur", "unit": "per_mwh"}}},
            "site": {"file": "site.csv", "time_column": "hour", "columns": {"load": {"column": "load_kw", "unit": "kw"}}},
        },
        "sites": [{"id": "s", "market": "wholesale", "load_kw": "site.load", "units": [{"id": "b", "power_kw": 100, "energy_kwh": 200}]}],
        "market": {"energy_price": {"series": "prices.da", "scale": 0.5}},
        "daemon": {"market_data": market_data or {}},
    }
    path = directory / "site.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextmanager
def site_intake(directory: Path, database: str, **market_data: object) -> Iterator[MarketDataIntake]:
    cfg = load_config(write_site(directory, {"drop_folder": "inbox", "drop_poll_s": 0.1, "published_at": "13:00", **market_data}))
    store = Store(open_database(database))
    clock = Clock(1e-9, NOW, pd.Timestamp.now(tz="UTC"))  # market time stands (nearly) still
    try:
        yield MarketDataIntake(cfg, cfg.daemon.market_data, store, clock, CollectorRegistry())
    finally:
        store.close()


@pytest.fixture
def intake(tmp_path: Path) -> Iterator[MarketDataIntake]:
    with site_intake(tmp_path, str(tmp_path / "site.db")) as it:
        yield it


def audit(intake: MarketDataIntake) -> list[dict]:
    intake.store.submit(lambda: None).result()  # queued audit rows written
    with intake.store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(market_deliveries).order_by(market_deliveries.c.id)).mappings()]


TOMORROW = "2020-08-19 00:00"  # local: the day after the file ends


def test_tomorrows_prices_are_added_and_the_same_delivery_again_changes_nothing(intake: MarketDataIntake):
    body = prices_csv(TOMORROW, [40.0 + i for i in range(96)]).encode()
    first = intake.accept(body, "prices", "api", "test")
    assert (first.outcome, first.added, first.replaced) == ("accepted", 96, 0)
    assert first.span == (pd.Timestamp("2020-08-19T08:00Z"), pd.Timestamp("2020-08-20T07:45Z"))
    version = intake.book.version
    again = intake.accept(body, "prices", "mqtt", "test")
    assert (again.outcome, again.added, again.replaced, again.unchanged, again.span) == ("duplicate", 0, 0, 96, None)
    assert intake.book.version == version
    assert [r["outcome"] for r in audit(intake)] == ["accepted", "duplicate"]


def test_a_correction_of_an_interval_not_started_replaces_it_but_one_of_a_started_interval_is_refused_whole(intake: MarketDataIntake):
    intake.accept(prices_csv(TOMORROW, [40.0] * 8).encode(), "prices", "api", "first")
    corrected = intake.accept(prices_csv(TOMORROW, [40.0] * 4 + [55.0] * 4).encode(), "prices", "api", "correction")
    assert (corrected.added, corrected.replaced, corrected.unchanged) == (0, 4, 4)
    held = intake.book.series["prices.da"].copy()
    # 11:00-12:30 local: the last two intervals have started at NOW (12:00 local); the first change is history
    with pytest.raises(DeliveryRejected, match=r"prices\.da at 2020-08-18T19:00:00\+00:00: got '999 \(held [\d.]+\)'; expected the value held"):
        intake.accept(prices_csv("2020-08-18 11:00", [999.0] * 4 + [60.0] * 2).encode(), "prices", "api", "late rewrite")
    pd.testing.assert_series_equal(intake.book.series["prices.da"], held)
    assert audit(intake)[-1]["outcome"] == "rejected" and "interval has started" in audit(intake)[-1]["detail"]


def test_a_few_near_zero_prices_are_a_correction_not_a_unit_error(intake: MarketDataIntake):
    assert intake.accept(prices_csv("2020-08-19 12:00", [0.04, 0.05]).encode(), "prices", "api", "solar noon").added == 2


def test_an_earlier_day_arriving_after_a_later_one_is_merged_by_timestamp(intake: MarketDataIntake):
    later = prices_csv("2020-08-20 00:00", [70.0] * 96)
    earlier = prices_csv(TOMORROW, [50.0] * 96)
    intake.accept(later.encode(), "prices", "drop", "later")
    intake.accept(earlier.encode(), "prices", "drop", "earlier")
    held = intake.book.on_grid("prices.da")
    assert held["2020-08-19T08:00Z":"2020-08-20T07:45Z"].eq(50.0).all() and held["2020-08-20T08:00Z":].eq(70.0).all()
    assert not held.isna().any()


@pytest.mark.parametrize(
    ("body", "source", "expected"),
    [
        (prices_csv(TOMORROW, [40.0, 41.0]).replace("41.0", "abc"), "prices", "a finite number"),
        (prices_csv(TOMORROW, [40.0, 41.0]).replace("41.0", "nan"), "prices", "a finite number"),
        ("time,price\n2020-08-19 00:15,40\n2020-08-19 00:00,41\n", "prices", "strictly increasing timestamps"),
        ("time,price\n2020-08-19 00:00,40\n2020-08-19 00:00,41\n", "prices", "unique timestamps"),
        (prices_csv(TOMORROW, [40.0, 41.0]).replace("00:15", "00:30"), "prices", "the series' 15-minute step"),
        ("time,price\n2020-08-19 00:05,40\n2020-08-19 00:20,41\n", "prices", "an interval start on the series' grid"),
        (prices_csv("2021-08-19 00:00", [40.0, 41.0]), "prices", "intervals within 35 days before and 8 days after now"),
        (prices_csv(TOMORROW, [40.0, 2.5e6]), "prices", "a magnitude of at most"),
        (prices_csv(TOMORROW, [0.04, 0.041] * 48), "prices", "a typical magnitude that fits the declared unit"),
        (prices_csv(TOMORROW, [40.0, 41.0]).replace("price", "prix"), "prices", "at least one of the source's columns"),
        (prices_csv(TOMORROW, [40.0, 41.0]), "nosuch", "one of the config's data sources"),
        (prices_csv(TOMORROW, [40.0, 41.0]), None, "one of the config's data sources"),
    ],
)
def test_a_malformed_delivery_is_refused_in_one_line_and_the_data_held_stays(intake: MarketDataIntake, body: str, source: str | None, expected: str):
    held, version = intake.book.series["prices.da"].copy(), intake.book.version
    with pytest.raises(DeliveryRejected, match=expected.replace("(", r"\(").replace(")", r"\)")) as err:
        intake.accept(body.encode(), source, "api", "test")
    assert "\n" not in str(err.value)
    pd.testing.assert_series_equal(intake.book.series["prices.da"], held)
    assert intake.book.version == version and load_points(intake.store.engine) == {}


CELL = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=12), st.sampled_from(["", "1e309", "-0", "12,5", "0x1F", "2020-02-30 00:00"]))
TIME = st.one_of(st.datetimes(min_value=pd.Timestamp("1999-01-01").to_pydatetime(), max_value=pd.Timestamp("2201-01-01").to_pydatetime()).map(lambda t: f"{t:%Y-%m-%d %H:%M}"), st.text(max_size=20))
TABLE = st.lists(st.tuples(TIME, CELL), max_size=8).map(lambda rows: "time,price\n" + "".join(f"{t},{v}\n" for t, v in rows))
NEAR_VALID = st.lists(st.floats(-1e7, 1e7), min_size=2, max_size=6).flatmap(lambda v: st.integers(-3000, 3000).map(lambda k: prices_csv(str(pd.Timestamp(TOMORROW) + k * STEP), v)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(body=st.one_of(TABLE, NEAR_VALID, st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_any_body_is_accepted_or_refused_in_one_line_quickly_and_a_refusal_changes_nothing(intake: MarketDataIntake, body: str):
    version = intake.book.version
    started = time.perf_counter()
    try:
        outcome = intake.accept(body.encode("utf-8", "surrogatepass"), "prices", "mqtt", "fuzz")
    except DeliveryRejected as err:
        assert "\n" not in str(err) and intake.book.version == version
    else:
        assert outcome.outcome in ("accepted", "duplicate")
        assert np.isfinite(intake.book.series["prices.da"].to_numpy()).all()
    assert time.perf_counter() - started < 0.5


def test_a_body_over_the_size_cap_or_not_utf8_is_refused(intake: MarketDataIntake):
    with pytest.raises(DeliveryRejected, match="at most 1000000 bytes"):
        intake.accept(b"x" * 1_000_001, "prices", "api", "test")
    with pytest.raises(DeliveryRejected, match="UTF-8"):
        intake.accept(b"time,price\n\xff\xfe", "prices", "api", "test")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_deliveries_survive_a_restart_with_their_provenance(tmp_path: Path, kind: str):
    with empty_database(kind, tmp_path, "market_data") as database:
        with site_intake(tmp_path, database) as intake:
            intake.accept(prices_csv(TOMORROW, [44.0] * 96).encode(), "prices", "drop", "prices-0819.csv")
            intake.accept(prices_csv(TOMORROW, [44.0] * 90 + [47.5] * 6).encode(), "prices", "api", "correction")
            held = intake.book.series["prices.da"]
        with site_intake(tmp_path, database) as again:  # a new process on the same database
            pd.testing.assert_series_equal(again.book.series["prices.da"], held, check_names=False)
            assert again.book.arrivals["prices.da"] == intake.book.arrivals["prices.da"]  # when it arrived, not the restart
            rows = audit(again)
    assert [(r["via"], r["origin"], r["data_source"], r["outcome"], r["added"], r["replaced"]) for r in rows] == [
        ("drop", "prices-0819.csv", "prices", "accepted", 96, 0),
        ("api", "correction", "prices", "accepted", 0, 6),
    ]


def test_the_plan_sees_delivered_prices_scaled_by_the_reference_and_the_fallback_only_where_none_arrived(intake: MarketDataIntake):
    cfg = intake.cfg
    start, end = pd.Timestamp("2020-08-19T06:00Z"), pd.Timestamp("2020-08-19T12:00Z")  # 22:00 local .. 04:00 tomorrow
    view = intake.plan_config(cfg, start, end, NOW)
    assert intake.coverage["prices.da"].missing_intervals == 16 and intake.coverage["prices.da"].late is False  # before 13:00
    yesterday = intake.book.series["prices.da"]["2020-08-18T08:00Z":"2020-08-18T11:45Z"].to_numpy()
    price = view.market.energy_price_per_mwh.values
    np.testing.assert_allclose(price["2020-08-19T08:00Z":"2020-08-19T11:45Z"].to_numpy(), 0.5 * yesterday)  # persistence, scaled
    intake.accept(prices_csv(TOMORROW, [80.0] * 8).encode(), "prices", "api", "test")
    view = intake.plan_config(cfg, start, end, NOW)
    price = view.market.energy_price_per_mwh.values
    np.testing.assert_allclose(price["2020-08-19T08:00Z":"2020-08-19T09:45Z"].to_numpy(), 40.0)
    np.testing.assert_allclose(price["2020-08-19T10:00Z":"2020-08-19T11:45Z"].to_numpy(), 0.5 * yesterday[8:])
    assert intake.coverage["prices.da"].missing_intervals == 8
    assert intake.plan_config(cfg, start, end, NOW) is None  # nothing new: the worker keeps its view
    settled = intake.settlement_config(cfg).market.energy_price_per_mwh.values
    assert settled["2020-08-19T10:00Z":].isna().all()  # settlement never bills a forecast


def test_a_load_forecast_at_its_own_hourly_step_reaches_the_site_and_a_finer_one_is_refused(intake: MarketDataIntake):
    hourly = "hour,load_kw\n" + "".join(f"2020-08-19 {h:02d}:00,{75 + h}\n" for h in range(6))
    assert intake.accept(hourly.encode(), "site", "api", "test").added == 6
    start = pd.Timestamp("2020-08-19T08:00Z")
    view = intake.plan_config(intake.cfg, start, start + pd.Timedelta(hours=6), NOW)
    load = view.fleet.sites[0].load_kw.values
    np.testing.assert_allclose(load[start : start + pd.Timedelta(hours=5)].to_numpy(), 75 + np.arange(6))
    with pytest.raises(DeliveryRejected, match="the series' 60-minute step"):
        intake.accept(b"hour,load_kw\n2020-08-19 06:00,80\n2020-08-19 06:15,81\n", "site", "api", "test")


def test_past_the_publication_time_a_missing_tomorrow_is_late():
    series = pd.Series(1.0, index=pd.date_range("2020-08-17T08:00Z", "2020-08-19T07:45Z", freq=STEP))
    book = Book({"p.x": series}, {"p.x": Grid("energy_price", "per_mwh", STEP, series.index[0])})
    noon, afternoon = pd.Timestamp("2020-08-18T20:00Z"), pd.Timestamp("2020-08-18T21:30Z")  # 12:00 and 13:30 local
    assert not coverage(book, "p.x", noon, noon + pd.Timedelta(hours=24), noon, 0, day_time(13), "Etc/GMT+8").late
    assert coverage(book, "p.x", afternoon, afternoon + pd.Timedelta(hours=24), afternoon, 0, day_time(13), "Etc/GMT+8").late
    assert coverage(book, "p.x", afternoon, afternoon + pd.Timedelta(hours=24), afternoon, 0, day_time(13), "Etc/GMT+8").covered_until == pd.Timestamp("2020-08-19T08:00Z")


def test_the_fallback_uses_nothing_observed_after_the_decision():
    """Values delivered for intervals that end after ``now`` (tomorrow's prices) are used as delivered,
    and the gaps after them are forecast from observations only, never from those deliveries."""
    index = pd.date_range("2020-08-17T08:00Z", periods=2 * 96, freq=STEP)
    series = pd.Series(np.arange(len(index), dtype=float), index=index)
    grid = Grid("energy_price", "per_mwh", STEP, index[0])
    book = Book({"p.x": series.copy()}, {"p.x": grid})
    ahead = pd.Series(1000.0, index=pd.date_range("2020-08-19T08:00Z", periods=4, freq=STEP))
    book.apply(merge(book.series, {"p.x": ahead}, NOW, "t"), NOW)
    market = Market("USD", LoadedSeries("p.x", "energy_price", series))
    start, end = pd.Timestamp("2020-08-19T08:00Z"), pd.Timestamp("2020-08-19T10:00Z")
    _, planned_market, filled = planned(Fleet((Site("s", "wholesale"),), ()), market, book, start, end, NOW, ForecastSpec("persistence"))
    seen = planned_market.energy_price_per_mwh.values[start : end - STEP]
    assert filled == {"p.x": 4} and (seen.iloc[:4] == 1000.0).all()
    # persistence: the same time yesterday or, not yet observed at NOW, the day before
    assert (seen.iloc[4:].to_numpy() <= series[series.index + STEP <= NOW].iloc[-1]).all()


async def test_the_drop_folder_moves_each_file_once_to_done_or_to_rejected_with_its_reason(intake: MarketDataIntake, tmp_path: Path):
    inbox = tmp_path / "inbox"
    await intake.start()
    try:
        await asyncio.sleep(0.1)
        (inbox / "prices-0819.csv").write_text(prices_csv(TOMORROW, [45.0] * 96))
        (inbox / "prices-bad.csv").write_text(prices_csv(TOMORROW, [45.0, 46.0]).replace("46.0", "x"))
        (inbox / ".prices-partial.csv").write_text("time,price\n")
        (inbox / "unknown.csv").write_text(prices_csv(TOMORROW, [45.0, 46.0]))
        for _ in range(100):
            if not any(p.name in ("prices-0819.csv", "prices-bad.csv", "unknown.csv") for p in inbox.iterdir()):
                break
            await asyncio.sleep(0.1)
    finally:
        await intake.stop()
    done = [p.name for p in (inbox / "done").iterdir()]
    rejected = sorted(p.name for p in (inbox / "rejected").iterdir())
    assert len(done) == 1 and done[0].endswith("-prices-0819.csv")
    assert len(rejected) == 4 and sum(n.endswith(".reason") for n in rejected) == 2
    reasons = {p.name: p.read_text() for p in (inbox / "rejected").glob("*.reason")}
    assert any("a finite number" in r for n, r in reasons.items() if "prices-bad" in n)
    assert any("one of the config's data sources" in r for n, r in reasons.items() if "unknown" in n)
    assert (inbox / ".prices-partial.csv").exists()
    assert intake.book.on_grid("prices.da")["2020-08-19T08:00Z":].eq(45.0).all()


# ---------------------------------------------------------------- feeds, on recorded responses


class Recorded(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the recorded response for the first key found in the request line."""

    responses: dict[str, tuple[bytes, dict[str, str]]] = {}
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        Recorded.seen.append(self.path)
        for key, (body, headers) in self.responses.items():
            if key in self.path:
                self.send_response(200)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
                return
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorded() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorded)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Recorded.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_entsoe_day_ahead_prices_through_entsoe_py_on_a_recorded_response(recorded: str, monkeypatch: pytest.MonkeyPatch):
    entsoe = pytest.importorskip("entsoe")
    Recorded.responses = {"documentType=A44": ((DATA / "entsoe_a44_de_lu_2020-08-19.xml").read_bytes(), {"Content-Type": "text/xml"})}
    monkeypatch.setattr(entsoe.entsoe, "URL", f"{recorded}/api")
    monkeypatch.setenv("ENTSOE_KEY", "recorded-key")
    feed = make_feed(FeedModel(kind="entsoe", source="prices", columns={"da": "price"}, area="DE_LU", api_key_env="ENTSOE_KEY"))
    assert isinstance(feed, EntsoeFeed)
    start = pd.Timestamp("2020-08-19", tz="Europe/Berlin")
    frame = feed.fetch(start, start + pd.Timedelta(days=1))
    assert len(frame) == 24 and frame.index[0] == start and frame["price"].iloc[0] == 32.11 and frame["price"].iloc[19] == 61.5
    assert "securityToken=recorded-key" in Recorded.seen[0] and "in_Domain=10Y1001A1001A82H" in Recorded.seen[0]
    text = delivery_csv(frame, {"da": "price"}, SourceModel(file="x", time_column="start", delimiter=";", decimal=",", columns={}), {"da": Column("EUR per kWh", "per_kwh")})
    assert text.splitlines()[:2] == ["start;EUR per kWh", "2020-08-19T00:00:00+02:00;0,03211"]


async def test_the_daemon_polls_a_feed_and_its_prices_take_the_path_of_every_delivery(recorded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    entsoe = pytest.importorskip("entsoe")
    Recorded.responses = {"documentType=A44": ((DATA / "entsoe_a44_de_lu_2020-08-19.xml").read_bytes(), {"Content-Type": "text/xml"})}
    monkeypatch.setattr(entsoe.entsoe, "URL", f"{recorded}/api")
    monkeypatch.setenv("ENTSOE_KEY", "recorded-key")
    feed = {"kind": "entsoe", "source": "de", "columns": {"da": "price"}, "area": "DE_LU", "api_key_env": "ENTSOE_KEY"}
    with site_intake(tmp_path, str(tmp_path / "feed.db"), feeds=[feed]) as intake:
        await intake.start()
        try:
            for _ in range(100):
                if intake.recent:
                    break
                await asyncio.sleep(0.05)
        finally:
            await intake.stop()
        assert intake.recent[0]["outcome"] == "accepted" and intake.recent[0]["via"] == "feed" and intake.recent[0]["origin"] == "entsoe:DE_LU"
        held = intake.book.series["de.da"]
    # today and tomorrow were asked for; the recording holds the 19th (CEST): 32.11 EUR/MWh at 22:00 UTC
    assert held["2020-08-18T22:00Z"] == 32.11 and held["2020-08-19T17:00Z"] == 61.5
    assert held["2020-08-18T21:00Z"] == 40.0  # before the recording: the file's value stays


def test_a_feed_for_a_source_or_series_the_config_lacks_is_a_start_up_error(tmp_path: Path):
    feed = {"kind": "entsoe", "source": "de", "columns": {"da": "price"}, "area": "DE_LU", "api_key_env": "ENTSOE_KEY"}
    with pytest.raises(InputError, match=r"daemon\.market_data\.feeds\[0\]\.source: got 'nosuch'"):
        with site_intake(tmp_path, str(tmp_path / "a.db"), feeds=[{**feed, "source": "nosuch"}]):
            pass
    with pytest.raises(InputError, match=r"daemon\.market_data\.feeds\[0\]\.columns: got 'rt'; expected a series of source 'de'"):
        with site_intake(tmp_path, str(tmp_path / "b.db"), feeds=[{**feed, "columns": {"rt": "price"}}]):
            pass


def test_without_its_api_key_the_entsoe_feed_does_not_start(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("ENTSOE_KEY", raising=False)
    with pytest.raises(InputError, match="ENTSO-E API key"):
        make_feed(FeedModel(kind="entsoe", source="prices", columns={"da": "price"}, area="DE_LU", api_key_env="ENTSOE_KEY"))


def oasis_zip(name: str) -> bytes:
    """A recorded OASIS table as OASIS answers: a zip holding the CSV."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr(f"{name}.csv", (DATA / f"{name}.csv").read_text())
    return buffer.getvalue()


def oasis_answer(name: str) -> tuple[bytes, dict[str, str]]:
    return oasis_zip(name), {"Content-Type": "application/x-zip-compressed", "Content-Disposition": f"inline; filename={name}.csv.zip;"}


def test_caiso_ancillary_prices_through_gridstatus_on_a_recorded_oasis_response(recorded: str, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("gridstatus")
    Recorded.responses = {"queryname=PRC_AS": oasis_answer("caiso_prc_as_dam_2020-08-19")}
    monkeypatch.setenv("HTTP_PROXY", recorded)  # gridstatus asks http://oasis.caiso.com: the proxy answers from the recording
    monkeypatch.setenv("NO_PROXY", "")
    feed = GridStatusFeed("CAISO", "as_prices", "DAM", "AS_CAISO_EXP", pause_s=0)  # the library's 4 s courtesy pause off
    start = pd.Timestamp("2020-08-19", tz="US/Pacific")
    frame = feed.fetch(start, start + pd.Timedelta(days=1))
    assert "oasis.caiso.com" in Recorded.seen[0]
    assert len(frame) == 24 and frame.index[0] == start
    assert frame["Regulation Up"].iloc[0] == 8.5 and frame["Regulation Down"].iloc[17] == 6.0 + 0.5 * 17
    text = delivery_csv(frame, {"regup": "Regulation Up"}, SourceModel(file="x", time_column="t", columns={}), {"regup": Column("ru", "per_mw_h")})
    assert text.splitlines()[1] == "2020-08-19T00:00:00-07:00,8.5"


def test_caiso_day_ahead_lmp_through_gridstatus_on_a_recorded_oasis_response(recorded: str, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("gridstatus")
    Recorded.responses = {"queryname=PRC_LMP": oasis_answer("caiso_prc_lmp_dam_2020-08-19")}
    monkeypatch.setenv("HTTP_PROXY", recorded)
    monkeypatch.setenv("NO_PROXY", "")
    feed = GridStatusFeed("CAISO", "lmp", "DAY_AHEAD_HOURLY", "TH_NP15_GEN-APND", pause_s=0)
    start = pd.Timestamp("2020-08-19", tz="US/Pacific")
    frame = feed.fetch(start, start + pd.Timedelta(days=1))
    assert "node=TH_NP15_GEN-APND" in Recorded.seen[0]
    assert len(frame) == 24 and frame["LMP"].iloc[18] == 92.4
    np.testing.assert_allclose(frame["Energy"] + frame["Congestion"] + frame["Loss"], frame["LMP"])  # LMP = energy + congestion + loss

