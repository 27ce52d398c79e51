"""Day-ahead forecasts by regression on lagged days and exogenous day-ahead forecasts (LEAR).

German day-ahead prices follow wind, solar and load, which the TSOs forecast a day ahead; a
model that sees those forecasts beats any persistence rule (Lago et al., Applied Energy
293:116983, 2021, "LEAR"; Uniejewski, Nowotarski & Weron 2016). The recipe, as in epftoolbox:

- the day is the unit: the S values of day d (S = intervals per day) are predicted together;
- inputs for day d: all S values of days d-1, d-2, d-3 and d-7 of the series itself; for each
  exogenous day-ahead forecast the S values of days d, d-1 and d-7; seven weekday dummies;
- every input column and every target column is median/MAD-standardised and then passed
  through ``arcsinh`` (the variance-stabilising "invariant" transform: price spikes and
  negative prices stop dominating a least-squares fit);
- one LASSO per interval of the day (S models), its penalty chosen by AIC along the LARS path
  (``LassoLarsIC``, as epftoolbox does), recalibrated on a rolling window of past days.

Two days ahead or more (a 48 h horizon), the forecast is recursive: a forecast day stands in
for the lags not yet observed, and an exogenous forecast not yet published repeats the last
published day. Nothing here does I/O; ``vpp.forecasts`` decides which days are observed.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

PRICE_LAGS = (1, 2, 3, 7)  # days back of the series itself
EXOG_LAGS = (0, 1, 7)  # days back of each exogenous forecast (0: the target day's own forecast)
# calibration windows whose forecasts are averaged, days: epftoolbox averages 56/84/1092/1456; with 364 and
# 728 as well, EPEX-DE 2017 capture was 80.1 % against 79.0 % for 364/728/1092/1456 (decision 16)
WINDOWS = (56, 84, 364, 728, 1092, 1456)
MAD_TO_SIGMA = 1.4826  # MAD of a normal variable x this = its standard deviation (statsmodels' mad)
ALPHA_FLOOR = 1e-3  # weakest penalty on the path, relative to the one that zeroes every input
PATH_TOL = 1e-3  # coordinate-descent tolerance; with 25 penalties down to 1e-4 and tol 1e-4 a fit took 5x longer (decision 16)


@dataclasses.dataclass(frozen=True, slots=True)
class DayAheadModel:
    """A fitted LEAR: S linear models over transformed inputs, and the transforms to undo."""

    x_center: np.ndarray  # (F,) medians of the non-dummy inputs (dummies: 0)
    x_scale: np.ndarray  # (F,) MAD-sigmas (dummies: 1)
    y_center: np.ndarray  # (S,)
    y_scale: np.ndarray  # (S,)
    coef: np.ndarray  # (S, F)
    intercept: np.ndarray  # (S,)
    transformed: np.ndarray  # (F,) bool: which inputs get arcsinh (all but the weekday dummies)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Forecast days (n, S) from their input rows (n, F)."""
        z = _transform(x, self.x_center, self.x_scale, self.transformed)
        return np.sinh(z @ self.coef.T + self.intercept) * self.y_scale + self.y_center


def design(history: np.ndarray, exog: list[np.ndarray], weekdays: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Input rows (len(days), F) of ``days`` from daily arrays (days, S): the series and each exogenous forecast."""
    parts = [history[days - lag] for lag in PRICE_LAGS]
    for e in exog:
        parts.extend(e[days - lag] for lag in EXOG_LAGS)
    parts.append(np.eye(7)[weekdays[days]])
    return np.concatenate(parts, axis=1)


def fit_lear(x: np.ndarray, y: np.ndarray, n_alphas: int = 16) -> DayAheadModel:
    """Fit one LASSO per interval of the day on transformed inputs (rows: days).

    Each interval's penalty minimises AIC along a regularisation path, as epftoolbox's
    ``LassoLarsIC`` does; the path is solved by coordinate descent on one Gram matrix shared by
    all S intervals (the inputs are the same for every interval), ~10x faster than S LARS paths.
    """
    from sklearn.linear_model import lasso_path

    transformed = np.ones(x.shape[1], bool)
    transformed[-7:] = False
    x_center, x_scale = _robust_center_scale(x, transformed)
    y_center, y_scale = _robust_center_scale(y, np.ones(y.shape[1], bool))
    xz = _transform(x, x_center, x_scale, transformed)
    yz = np.arcsinh((y - y_center) / y_scale)
    xm, ym = xz - xz.mean(axis=0), yz - yz.mean(axis=0)
    n, f = xm.shape
    gram, xy = xm.T @ xm, xm.T @ ym  # (F, F), (F, S)
    noise = _noise_variance(xm, ym)
    coef = np.zeros((y.shape[1], f))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings at the weakest penalties: AIC rarely picks those
        for h in range(y.shape[1]):
            top = float(np.abs(xy[:, h]).max()) / n
            alphas = np.geomspace(top, top * ALPHA_FLOOR, n_alphas) if top > 0 else np.array([1.0])
            _, path, _ = lasso_path(xm, ym[:, h], alphas=alphas, precompute=gram, Xy=xy[:, h], max_iter=2500, tol=PATH_TOL)
            # RSS of every path point from the Gram matrix: y'y - 2 b'X'y + b'X'X b
            rss = ym[:, h] @ ym[:, h] - 2 * xy[:, h] @ path + np.einsum("fa,fg,ga->a", path, gram, path)
            aic = rss / noise[h] + 2 * (path != 0).sum(axis=0)
            coef[h] = path[:, int(np.argmin(aic))]
    intercept = yz.mean(axis=0) - coef @ xz.mean(axis=0)
    return DayAheadModel(x_center, x_scale, y_center, y_scale, coef, intercept, transformed)


def _noise_variance(xm: np.ndarray, ym: np.ndarray) -> np.ndarray:
    """Per-target noise variance for AIC: the OLS residual variance when there are more days than
    inputs (as sklearn's LassoLarsIC), else the target's own variance (all noise: conservative)."""
    n, f = xm.shape
    if n <= f + 1:
        return np.maximum(ym.var(axis=0), 1e-12)
    beta, *_ = np.linalg.lstsq(xm, ym, rcond=None)
    return np.maximum(((ym - xm @ beta) ** 2).sum(axis=0) / (n - f - 1), 1e-12)


def forecast_days(
    history: np.ndarray,
    exog: list[np.ndarray],
    weekdays: np.ndarray,
    observed_days: int,
    exog_days: int,
    last_day: int,
    model: DayAheadModel,
) -> np.ndarray:
    """Days ``observed_days .. last_day`` (inclusive) forecast recursively, (n, S).

    ``history`` rows from ``observed_days`` on are ignored (they are the future); exogenous rows
    from ``exog_days`` on are replaced by the last published one.
    """
    n = last_day - observed_days + 1
    steps = history.shape[1]
    known = np.vstack([history[:observed_days], np.zeros((n, steps))])
    ex = [np.vstack([e[:exog_days], np.repeat(e[exog_days - 1 : exog_days], len(known) - exog_days, axis=0)]) if exog_days < len(known) else e[: len(known)] for e in exog]
    for i in range(n):
        d = observed_days + i
        known[d] = model.predict(design(known, ex, weekdays, np.array([d])))[0]
    return known[observed_days:]


def calibrate(history: np.ndarray, exog: list[np.ndarray], weekdays: np.ndarray, observed_days: int, window_days: int) -> DayAheadModel:
    """Fit on the ``window_days`` most recent observed days that have all their lags (day ≥ 7)."""
    first = max(max(PRICE_LAGS + EXOG_LAGS), observed_days - window_days)
    days = np.arange(first, observed_days)
    return fit_lear(design(history, exog, weekdays, days), history[days])


def _robust_center_scale(a: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    center = np.where(which, np.median(a, axis=0), 0.0)
    scale = np.where(which, np.median(np.abs(a - center), axis=0) * MAD_TO_SIGMA, 1.0)
    # a constant column (a PV profile's night hours) would divide by zero: leave it unscaled
    return center, np.where(scale > 0, scale, 1.0)


def _transform(x: np.ndarray, center: np.ndarray, scale: np.ndarray, which: np.ndarray) -> np.ndarray:
    z = (x - center) / scale
    return np.where(which, np.arcsinh(z), z)
