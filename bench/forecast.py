"""Day-ahead price forecast accuracy on the epftoolbox EPEX-DE benchmark (test period 2016-01-04..2017-12-31).

    python bench/forecast.py [--windows 56 84 364 728 1092 1456] [--every 7] [--days N] [--json]

Scores, on the same data set and the same 728 test days as Lago et al. (2021), the forecasters
of ``vpp.day_ahead`` (LEAR, one per calibration window, and their average as epftoolbox does),
the naive benchmark of the paper (D-7 for Mondays, Saturdays and Sundays, D-1 otherwise) and the
persistence forecaster of ``vpp.forecasts`` (D-1). Each test day is forecast from data up to its
previous day only. (A LightGBM alternative on the same inputs was scored and not kept: docs/architecture.md, decision 16.)

``--every N`` recalibrates every N days (the models are refit on the rolling window; between
refits the last model forecasts with the newest lags). epftoolbox recalibrates daily (``--every 1``); weekly is the default here and in
``vpp simulate --forecast lear``: it costs a seventh of the fits and measured the same (decision 16).

MAE is in EUR/MWh; sMAPE = mean(|p - f| / ((|p| + |f|) / 2)), as epftoolbox.evaluation.sMAPE.
The reference rows are epftoolbox's own published forecasts for DE
(jeslago/epftoolbox @a93dee7, forecasts/Forecasts_DE_DNN_LEAR_ensembles.csv, the forecasts that
accompany the paper), scored by this script's metric functions on this data set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vpp.day_ahead import WINDOWS  # noqa: E402

DATA = ROOT / "config" / "data" / "epex_de_2012_2017_hourly_da_epftoolbox.csv"
TEST_FIRST, TEST_LAST = pd.Timestamp("2016-01-04"), pd.Timestamp("2017-12-31")

# epftoolbox's published DE forecasts (see the docstring), scored here: (MAE EUR/MWh, sMAPE %)
PUBLISHED = {
    "epftoolbox DNN Ensemble": (3.413, 14.08),
    "epftoolbox DNN 4 (best single)": (3.592, 14.68),
    "epftoolbox LEAR Ensemble (56/84/1092/1456)": (3.609, 14.74),
    "epftoolbox LEAR 1092": (3.930, 16.79),
    "epftoolbox LEAR 1456": (3.988, 17.15),
}


def mae(real: np.ndarray, fc: np.ndarray) -> float:
    return float(np.mean(np.abs(real - fc)))


def smape(real: np.ndarray, fc: np.ndarray) -> float:
    return float(100 * np.mean(np.abs(real - fc) / ((np.abs(real) + np.abs(fc)) / 2)))


def load(path: Path):
    df = pd.read_csv(path, index_col=0, parse_dates=True)
    steps = 24
    days = len(df) // steps
    price = df.iloc[: days * steps, 0].to_numpy(float).reshape(days, steps)
    exog = [df.iloc[: days * steps, i].to_numpy(float).reshape(days, steps) for i in range(1, df.shape[1])]
    dates = pd.DatetimeIndex(df.index[: days * steps : steps])
    return price, exog, dates


def lear_forecasts(price, exog, weekdays, first: int, last: int, window: int, every: int) -> np.ndarray:
    from vpp.day_ahead import calibrate, forecast_days

    out = np.zeros((last - first + 1, price.shape[1]))
    model = None
    for k, day in enumerate(range(first, last + 1)):
        if k % every == 0:
            model = calibrate(price, exog, weekdays, day, window)
        out[k] = forecast_days(price, exog, weekdays, day, day + 1, day, model)[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--windows", type=int, nargs="+", default=list(WINDOWS), help="LEAR calibration windows")
    ap.add_argument("--every", type=int, default=7, help="recalibrate every N days (epftoolbox: 1)")
    ap.add_argument("--days", type=int, default=None, help="only the first N test days")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    price, exog, dates = load(args.data)
    weekdays = dates.day_of_week.to_numpy()
    first = int(dates.get_loc(TEST_FIRST))
    last = int(dates.get_loc(TEST_LAST)) if args.days is None else first + args.days - 1
    real = price[first : last + 1]
    rows: dict[str, dict] = {}

    def score(name: str, fc: np.ndarray, seconds: float | None = None) -> None:
        rows[name] = dict(mae=round(mae(real, fc), 3), smape=round(smape(real, fc), 2), seconds=None if seconds is None else round(seconds, 1))

    day_idx = np.arange(first, last + 1)
    naive = np.where(np.isin(weekdays[day_idx], [0, 5, 6])[:, None], price[day_idx - 7], price[day_idx - 1])
    score("naive (D-7 Mon/Sat/Sun, else D-1)", naive)
    score("persistence (D-1)", price[day_idx - 1])
    lear = []
    for w in args.windows:
        t0 = time.perf_counter()
        fc = lear_forecasts(price, exog, weekdays, first, last, w, args.every)
        score(f"LEAR {w} days", fc, time.perf_counter() - t0)
        lear.append(fc)
    if len(lear) > 1:
        score(f"LEAR ensemble ({'/'.join(map(str, args.windows))})", np.mean(lear, axis=0))
    result = dict(
        data=str(args.data.relative_to(ROOT) if args.data.is_relative_to(ROOT) else args.data),
        test=[str(dates[first].date()), str(dates[last].date())],
        days=last - first + 1,
        recalibrate_every_days=args.every,
        ours=rows,
        published=None if args.days is not None else {k: dict(mae=v[0], smape=v[1]) for k, v in PUBLISHED.items()},
    )
    if args.json:
        print(json.dumps(result))
        return
    print(f"EPEX-DE day-ahead, test {result['test'][0]}..{result['test'][1]} ({result['days']} days), recalibrated every {args.every} day(s)")
    print(f"{'forecaster':48s} {'MAE':>7s} {'sMAPE %':>8s} {'time s':>7s}")
    for k, v in rows.items():
        print(f"{k:48s} {v['mae']:7.3f} {v['smape']:8.2f} {'' if v['seconds'] is None else v['seconds']:>7}")
    if result["published"]:
        for k, v in result["published"].items():
            print(f"{k:48s} {v['mae']:7.3f} {v['smape']:8.2f}")


if __name__ == "__main__":
    main()
