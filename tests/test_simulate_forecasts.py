"""Forecasts (vpp.forecasts): hand-worked lags, no look-ahead (property), missing history, the file column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.simulate_rig import write_config
from vpp.config import load_config
from vpp.errors import InputError
from vpp.forecasts import ForecastSpec, file_forecasts, forecast_series, forecast_view
from vpp.timeseries import LoadedSeries, on_index

T0 = pd.Timestamp("2020-03-01", tz="UTC")
HOURS = pd.date_range(T0, periods=24 * 20, freq="1h")
# value = hours since T0: every lag can be read off the forecast directly
RAMP = LoadedSeries("m.x", "energy_price", pd.Series(np.arange(len(HOURS), dtype=float), index=HOURS))


def fc(method: str, start: pd.Timestamp, hours: int, decided_at: pd.Timestamp, **kw) -> np.ndarray:
    index = pd.date_range(start, periods=hours, freq="1h")
    return on_index(forecast_series(RAMP, index[0], index[-1] + pd.Timedelta(hours=1), decided_at, ForecastSpec(method, **kw)), index, "test")


def test_persistence_is_yesterday_at_the_same_hour_or_the_day_before_when_yesterday_is_not_over():
    day10 = T0 + pd.Timedelta(days=10)
    # decided at midnight: all of yesterday is known
    np.testing.assert_array_equal(fc("persistence", day10, 24, day10), np.arange(24) + 9 * 24)
    # decided at 10:00 on day 9 (gate closure): day 9's 00:00-09:00 are over, its 10:00-23:00 come from day 8
    got = fc("persistence", day10, 24, day10 - pd.Timedelta(hours=14))
    expect = np.where(np.arange(24) < 10, np.arange(24) + 9 * 24, np.arange(24) + 8 * 24)
    np.testing.assert_array_equal(got, expect)


def test_last_week_and_rolling_mean_by_hand():
    day10 = T0 + pd.Timedelta(days=10)
    np.testing.assert_array_equal(fc("last_week", day10, 24, day10), np.arange(24) + 3 * 24)
    # mean of days 9, 8, 7 at the same hour = day 8's value
    np.testing.assert_array_equal(fc("rolling_mean", day10, 24, day10, rolling_days=3), np.arange(24) + 8 * 24)


def test_perfect_foresight_is_the_recorded_series():
    day10 = T0 + pd.Timedelta(days=10)
    np.testing.assert_array_equal(fc("perfect", day10, 30, day10), np.arange(30) + 10 * 24)


@given(
    method=st.sampled_from(["persistence", "last_week", "rolling_mean"]),
    decide_h=st.integers(min_value=8 * 24, max_value=17 * 24),
    ahead_h=st.integers(min_value=0, max_value=30),
    hours=st.integers(min_value=1, max_value=40),
    noise_seed=st.integers(min_value=0, max_value=2**16),
)
def test_a_forecast_never_uses_data_recorded_at_or_after_the_decision(method, decide_h, ahead_h, hours, noise_seed):
    decided_at = T0 + pd.Timedelta(hours=decide_h)
    start = decided_at + pd.Timedelta(hours=ahead_h)
    spec = ForecastSpec(method, rolling_days=3)
    end = start + pd.Timedelta(hours=hours)
    if end > HOURS[-1]:
        return
    base = forecast_series(RAMP, start, end, decided_at, spec).values
    future = RAMP.values.index + pd.Timedelta(hours=1) > decided_at  # intervals not over at the decision
    scrambled = RAMP.values.copy()
    scrambled[future] = np.random.default_rng(noise_seed).normal(0, 1e3, future.sum())
    other = forecast_series(LoadedSeries("m.x", "energy_price", scrambled), start, end, decided_at, spec).values
    pd.testing.assert_series_equal(base, other)


def test_missing_history_is_an_input_error_naming_the_series_and_the_span():
    with pytest.raises(InputError, match=r"m\.x.*history for forecast 'last_week'.*2020-02-2"):
        fc("last_week", T0 + pd.Timedelta(days=3), 24, T0 + pd.Timedelta(days=3))


def test_the_file_method_uses_the_recorded_forecast_column(tmp_path):
    path = write_config(tmp_path, with_forecast=True, products=False)
    cfg = load_config(path)
    spec = ForecastSpec("file", file_series=file_forecasts(path))
    start = pd.Timestamp("2020-07-02", tz="UTC")
    index = pd.date_range(start, periods=24, freq="1h")
    _, market = forecast_view(cfg.fleet, cfg.market, index[0], index[-1] + pd.Timedelta(hours=1), start, spec)
    csv = pd.read_csv(tmp_path / "prices.csv")
    expected = csv.set_index(pd.to_datetime(csv["time"]).dt.tz_localize("UTC"))["da_fc"].reindex(index).to_numpy()
    np.testing.assert_allclose(on_index(market.energy_price_per_mwh, index, "t"), expected)
    # products without a forecast column are an error naming the column to add
    with_products = load_config(write_config(tmp_path / "p", with_forecast=True) if (tmp_path / "p").mkdir() is None else None)
    with pytest.raises(InputError, match="regup_forecast"):
        forecast_view(with_products.fleet, with_products.market, index[0], index[-1], start, spec)
