"""Market-data intake benchmark: what one delivery costs the daemon (parse, check, merge, store on SQLite).

A config with one 15-minute price source covering two days; deliveries of a day (96 rows) and a week
(672 rows) of tomorrow's prices through ``MarketDataIntake.accept`` (the path every inlet takes), each
again as a duplicate, and the plan's 24-hour view with the fallback forecast. Median of 5 runs, warm.

    python bench/market_data.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_market_data import NOW, prices_csv, write_site  # noqa: E402 - the tests' site is the bench's
from vpp.config import load_config  # noqa: E402
from vpp.daemon.clock import Clock  # noqa: E402
from vpp.daemon.market_data import MarketDataIntake  # noqa: E402
from vpp.daemon.store import Store  # noqa: E402
from vpp.db import open_database  # noqa: E402


def median_ms(fn, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    directory = Path(tempfile.mkdtemp(prefix="vpp-bench-market-data-"))
    cfg = load_config(write_site(directory))
    rng = np.random.default_rng(1)
    for rows, label in ((96, "a day"), (672, "a week")):
        store = Store(open_database(str(directory / f"{rows}.db")))
        intake = MarketDataIntake(cfg, cfg.daemon.market_data, store, Clock(1e-9, NOW, pd.Timestamp.now(tz="UTC")), CollectorRegistry())
        bodies = [prices_csv("2020-08-19 00:00", list(np.round(40 + 20 * rng.random(rows), 4))).encode() for _ in range(6)]
        intake.accept(bodies[0], "prices", "api", "warm-up")
        fresh = iter(bodies[1:])
        new = median_ms(lambda: intake.accept(next(fresh), "prices", "api", "bench"))  # every value replaced
        duplicate = median_ms(lambda: intake.accept(bodies[-1], "prices", "api", "bench"))
        print(f"{label} of 15-minute prices ({rows} rows, {len(bodies[0]):,} bytes): accepted {new:.1f} ms, duplicate {duplicate:.1f} ms")
        store.close()
    store = Store(open_database(str(directory / "view.db")))
    intake = MarketDataIntake(cfg, cfg.daemon.market_data, store, Clock(1e-9, NOW, pd.Timestamp.now(tz="UTC")), CollectorRegistry())
    start = pd.Timestamp("2020-08-19T06:00Z")

    def view() -> None:
        intake._view_key = None  # build it every time
        intake.plan_config(cfg, start, start + pd.Timedelta(hours=24), NOW)

    print(f"the plan's 24-hour view, 96 intervals by the persistence fallback: {median_ms(view):.1f} ms")
    store.close()


if __name__ == "__main__":
    main()
