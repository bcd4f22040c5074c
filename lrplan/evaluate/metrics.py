"""Scores of predictions against held-out observations: pure NumPy, no fitting.

Curve metrics take a point prediction ``pred`` (shape ``(P,)``) or predictive draws ``draws``
(shape ``(S, P)``, one row per draw, as `lrplan.curve.predict.CurvePrediction.draws`) and the
observed losses ``y`` (shape ``(P,)``). LR metrics compare a recommended peak LR with a cell's
empirical optimum.

References
----------
Luo et al. 2025, "A Multi-Power Law for Loss Curve Prediction Across Learning Rate Schedules",
ICLR 2025, arXiv:2503.12811 (mean / worst relative error of a curve).
Gneiting & Raftery 2007, "Strictly Proper Scoring Rules, Prediction, and Estimation", JASA 102
(CRPS and its energy form).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "LEVELS",
    "relative_errors",
    "curve_errors",
    "final_relative_error",
    "central_interval",
    "coverage",
    "binomial_interval",
    "relative_width",
    "crps_draws",
    "log_predictive_density",
    "lr_log_ratio",
    "interpolate_cell_loss",
    "excess_loss",
    "in_interval",
]

#: Central interval levels scored by default.
LEVELS: tuple[float, ...] = (0.5, 0.8, 0.95)


def _draws(draws: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    draws = np.asarray(draws, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if draws.ndim == 1:
        draws = draws[:, None] if y.ndim == 0 or y.size == 1 else draws[None, :]
    y = np.atleast_1d(y)
    if draws.ndim != 2 or draws.shape[1] != y.shape[0]:
        raise ValueError(f"draws of shape {draws.shape} do not match {y.shape[0]} observations; "
                         "give draws as (n_draws, n_points)")
    return draws, y


def relative_errors(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pointwise relative error ``|pred - y| / y``."""
    pred = np.asarray(pred, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return np.abs(pred - y) / np.abs(y)


def curve_errors(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean and worst (maximum) relative error of one predicted curve (Luo et al. 2025).

    Returns
    -------
    tuple of float
        ``(mean_i |pred_i - y_i| / y_i, max_i |pred_i - y_i| / y_i)``.
    """
    err = relative_errors(pred, y)
    return float(err.mean()), float(err.max())


def final_relative_error(pred: np.ndarray, y: np.ndarray) -> float:
    """Absolute relative error of the last point of a curve (the final loss)."""
    return float(relative_errors(np.atleast_1d(pred)[-1], np.atleast_1d(y)[-1]))


def central_interval(draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of the central ``level`` interval of draws ``(S, P)``, per point."""
    draws = np.asarray(draws, dtype=np.float64)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level {level} is not in (0, 1)")
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return lo, hi


def coverage(draws: np.ndarray, y: np.ndarray, level: float) -> float:
    """Fraction of observations inside the central ``level`` interval of the draws.

    NaN when there is only one draw per point (a point prediction has no interval).
    """
    draws, y = _draws(draws, y)
    if draws.shape[0] < 2:
        return float("nan")
    lo, hi = central_interval(draws, level)
    return float(np.mean((y >= lo) & (y <= hi)))


def binomial_interval(k: int, n: int, level: float = 0.9) -> tuple[float, float]:
    """Exact (Clopper-Pearson) ``level`` interval of a proportion from k successes in n trials.

    For the coverage of held-out runs' final losses: with a handful of runs, k of n inside an
    80% interval is consistent with a wide range of true coverages, and this says which.
    """
    from scipy.stats import beta

    if not 0 <= k <= n or n < 1:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    a = (1.0 - level) / 2.0
    lo = float(beta.ppf(a, k, n - k + 1)) if k > 0 else 0.0
    hi = float(beta.ppf(1.0 - a, k + 1, n - k)) if k < n else 1.0
    return lo, hi


def relative_width(draws: np.ndarray, y: np.ndarray, level: float) -> float:
    """Median over points of the central ``level`` interval's width divided by the observation."""
    draws, y = _draws(draws, y)
    if draws.shape[0] < 2:
        return float("nan")
    lo, hi = central_interval(draws, level)
    return float(np.median((hi - lo) / np.abs(y)))


def crps_draws(draws: np.ndarray, y: np.ndarray) -> np.ndarray:
    r"""Continuous ranked probability score of the empirical distribution of draws, per point.

    Energy form :math:`\mathrm{CRPS}(F, y) = E|X - y| - \tfrac12 E|X - X'|` with X, X' drawn
    independently from the S draws (the empirical distribution, so the second expectation
    includes X = X'). With sorted draws :math:`x_{(1)} \le \dots \le x_{(S)}`,
    :math:`E|X - X'| = \frac{2}{S^2} \sum_i (2i - S - 1) x_{(i)}`, so the cost is
    O(S log S) per point. Lower is better; with one draw it is the absolute error.

    Parameters
    ----------
    draws : numpy.ndarray
        Predictive draws, shape ``(S, P)``.
    y : numpy.ndarray
        Observations, shape ``(P,)``.

    Returns
    -------
    numpy.ndarray
        CRPS at each point, in the units of ``y``.
    """
    draws, y = _draws(draws, y)
    s = draws.shape[0]
    first = np.mean(np.abs(draws - y[None, :]), axis=0)
    x = np.sort(draws, axis=0)
    w = 2.0 * np.arange(1, s + 1) - s - 1.0
    spread = 2.0 / s**2 * np.sum(w[:, None] * x, axis=0)
    return first - 0.5 * spread


def log_predictive_density(draws: np.ndarray, y: np.ndarray) -> np.ndarray:
    r"""Log predictive density of each observation under a Gaussian KDE of the draws.

    Per point, the S draws are smoothed with a Gaussian kernel of Silverman's bandwidth
    :math:`h = 0.9 \min(\hat\sigma, \mathrm{IQR}/1.34) S^{-1/5}` and the density is evaluated at
    the observation: :math:`\log \frac1S \sum_s \mathcal N(y; x_s, h^2)`. The bandwidth is
    floored at ``1e-12`` times the scale of y so that a degenerate set of draws gives a very
    low (finite) density rather than NaN. Needs at least two draws (NaN otherwise).

    Returns
    -------
    numpy.ndarray
        Log density at each point (nats; higher is better; depends on the units of ``y``).
    """
    draws, y = _draws(draws, y)
    s = draws.shape[0]
    if s < 2:
        return np.full(y.shape, np.nan)
    sd = draws.std(axis=0, ddof=1)
    q75, q25 = np.quantile(draws, [0.75, 0.25], axis=0)
    spread = np.minimum(sd, (q75 - q25) / 1.34)
    spread = np.where(spread > 0, spread, sd)
    h = np.maximum(0.9 * spread * s ** -0.2, 1e-12 * np.maximum(np.abs(y), 1.0))
    z = (y[None, :] - draws) / h[None, :]
    logk = -0.5 * z**2 - np.log(h)[None, :] - 0.5 * np.log(2 * np.pi)
    m = logk.max(axis=0)
    return m + np.log(np.mean(np.exp(logk - m[None, :]), axis=0))


# ------------------------------------------------------------------------------ LR


def lr_log_ratio(lr: np.ndarray | float, lr_opt: np.ndarray | float) -> np.ndarray:
    """Natural log of a recommended LR over the empirical optimum (0 is perfect; ln 2 = 0.69)."""
    return np.log(np.asarray(lr, dtype=np.float64) / np.asarray(lr_opt, dtype=np.float64))


def interpolate_cell_loss(lr: float, cell_lr: np.ndarray, cell_loss: np.ndarray) -> float:
    """Final loss at ``lr`` by linear interpolation in log LR between a cell's observed runs.

    Runs at the same LR are averaged first. Outside the swept range the loss is unknown: NaN.
    """
    cell_lr = np.asarray(cell_lr, dtype=np.float64)
    cell_loss = np.asarray(cell_loss, dtype=np.float64)
    ok = np.isfinite(cell_loss) & (cell_lr > 0)
    if not ok.any() or not lr > 0:
        return float("nan")
    x, inv = np.unique(np.log(cell_lr[ok]), return_inverse=True)
    ys = np.bincount(inv, weights=cell_loss[ok]) / np.bincount(inv)
    u = np.log(lr)
    tol = 1e-9
    if u < x[0] - tol or u > x[-1] + tol:
        return float("nan")
    return float(np.interp(u, x, ys))


def excess_loss(lr: float, cell_lr: np.ndarray, cell_loss: np.ndarray, best_loss: float) -> float:
    """Loss at ``lr`` (interpolated in the cell, see `interpolate_cell_loss`) minus the best loss.

    Can be slightly negative when the interpolated loss sits below the best observed run
    (never, with linear interpolation, unless ``best_loss`` comes from elsewhere). NaN when
    ``lr`` lies outside the cell's swept range.
    """
    return interpolate_cell_loss(lr, cell_lr, cell_loss) - float(best_loss)


def in_interval(value: np.ndarray | float, lo: np.ndarray | float,
                hi: np.ndarray | float) -> np.ndarray:
    """Whether ``lo <= value <= hi`` (elementwise); False where a bound is NaN."""
    value, lo, hi = (np.asarray(v, dtype=np.float64) for v in (value, lo, hi))
    return (value >= lo) & (value <= hi)
