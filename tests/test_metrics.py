import numpy as np
import pytest
from scipy import stats

from lrplan.evaluate import metrics


def test_relative_errors_by_hand():
    pred = np.array([2.0, 3.3, 3.9])
    y = np.array([2.0, 3.0, 4.0])
    mean, worst = metrics.curve_errors(pred, y)
    assert worst == pytest.approx(0.1)
    assert mean == pytest.approx((0 + 0.1 + 0.025) / 3)
    assert metrics.final_relative_error(pred, y) == pytest.approx(0.025)


def _normal_draws(mu, sd, n):
    # deterministic "draws": the normal's quantiles at the midpoints of n equal bins
    return stats.norm.ppf((np.arange(n) + 0.5) / n, loc=mu, scale=sd)


def test_crps_of_normal_draws_matches_closed_form():
    mu, sd = 3.0, 0.02
    y = np.array([3.0, 3.01, 2.95, 3.1])
    draws = _normal_draws(mu, sd, 20000)[:, None] * np.ones((1, y.size))
    z = (y - mu) / sd
    exact = sd * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))
    np.testing.assert_allclose(metrics.crps_draws(draws, y), exact, rtol=2e-3)


def test_crps_sorted_form_equals_brute_force():
    rng = np.random.default_rng(1)
    draws = rng.normal(size=(37, 3))
    y = np.array([0.1, -1.0, 2.5])
    brute = (np.mean(np.abs(draws - y), axis=0)
             - 0.5 * np.mean(np.abs(draws[:, None, :] - draws[None, :, :]), axis=(0, 1)))
    np.testing.assert_allclose(metrics.crps_draws(draws, y), brute, rtol=1e-12)


def test_crps_of_one_draw_is_absolute_error():
    np.testing.assert_allclose(metrics.crps_draws(np.array([[1.0, 2.0]]), np.array([1.5, 1.0])),
                               [0.5, 1.0])


def test_coverage_and_width_by_hand():
    draws = np.linspace(0.0, 1.0, 100001)[:, None] * np.ones((1, 4))
    y = np.array([0.5, 0.2, 0.05, 0.97])
    # central 80% = [0.1, 0.9]: covers 0.5 and 0.2 only
    assert metrics.coverage(draws, y, 0.8) == pytest.approx(0.5)
    # central 95% = [0.025, 0.975]: covers all four
    assert metrics.coverage(draws, y, 0.95) == pytest.approx(1.0)
    # width 0.5 over y -> median of 0.5 / y
    assert metrics.relative_width(draws, y, 0.5) == pytest.approx(np.median(0.5 / y), rel=1e-4)


def test_point_prediction_has_no_interval():
    point = np.array([[1.0, 2.0]])
    assert np.isnan(metrics.coverage(point, np.array([1.0, 2.0]), 0.95))
    assert np.isnan(metrics.relative_width(point, np.array([1.0, 2.0]), 0.95))
    assert np.isnan(metrics.log_predictive_density(point, np.array([1.0, 2.0]))).all()


def test_log_density_of_normal_draws_near_exact():
    rng = np.random.default_rng(0)
    mu, sd = 3.0, 0.02
    draws = rng.normal(mu, sd, size=(4000, 1)) * np.ones((1, 3))
    y = np.array([3.0, 3.02, 2.97])
    np.testing.assert_allclose(metrics.log_predictive_density(draws, y),
                               stats.norm.logpdf(y, mu, sd), atol=0.08)


def test_draws_must_match_observations():
    with pytest.raises(ValueError, match="do not match"):
        metrics.crps_draws(np.ones((5, 3)), np.ones(4))


def test_lr_metrics_by_hand():
    assert metrics.lr_log_ratio(2e-3, 1e-3) == pytest.approx(np.log(2))
    lrs = np.array([1e-3, 2e-3, 4e-3, 4e-3])
    losses = np.array([3.2, 3.0, 3.3, 3.5])  # the two runs at 4e-3 average to 3.4
    # halfway in log LR between 2e-3 and 4e-3
    mid = np.sqrt(2e-3 * 4e-3)
    assert metrics.interpolate_cell_loss(mid, lrs, losses) == pytest.approx(3.2)
    assert metrics.excess_loss(mid, lrs, losses, 3.0) == pytest.approx(0.2)
    assert np.isnan(metrics.interpolate_cell_loss(8e-3, lrs, losses))
    assert metrics.in_interval(1.0, 0.5, 2.0) and not metrics.in_interval(3.0, 0.5, 2.0)
    assert not metrics.in_interval(1.0, np.nan, 2.0)


def test_binomial_interval_closed_forms_and_coverage():
    # all n inside: the lower bound solves p^n = (1 - level) / 2; none inside mirrors it
    assert metrics.binomial_interval(6, 6, 0.9) == pytest.approx((0.05 ** (1 / 6), 1.0))
    assert metrics.binomial_interval(0, 6, 0.9) == pytest.approx((0.0, 1 - 0.05 ** (1 / 6)))
    # exact intervals cover at least their level whatever the true proportion
    for n in (3, 6, 20):
        for p in (0.5, 0.8, 0.95):
            hit = sum(stats.binom.pmf(k, n, p) for k in range(n + 1)
                      if metrics.binomial_interval(k, n, 0.9)[0] <= p <= metrics.binomial_interval(k, n, 0.9)[1])
            assert 0.9 <= hit <= 1.0 + 1e-12
    lo, hi = metrics.binomial_interval(3, 10, 0.9)
    assert lo < 0.3 < hi and hi - lo < 0.6
    with pytest.raises(ValueError):
        metrics.binomial_interval(7, 6)
