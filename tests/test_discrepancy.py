"""The transfer law's calibrated miss: cell effects, leave-out refits, the target's interval."""

import numpy as np
import pandas as pd
import pytest

from lrplan.evaluate.simulate import simulate_sweep, true_lr_star
from lrplan.priors import load_priors
from lrplan.transfer.calibrate import (
    calibrate_transfer,
    drift_features,
    extrapolation,
    grid_posterior,
    miss_loglik,
    point_fit,
    reach,
)
from lrplan.transfer.decide import Target, plan, target_unannealed
from lrplan.transfer.fit import fit_transfer, points_from_frame
from lrplan.transfer.model import SLICE_KINDS, new_cell_effects

TRUTH = dict(E=1.9, A=0.6, a=0.34, B=0.5, b=0.28, log_lr0=np.log(2e-3), c_n=-0.6, c_d=-0.3,
             c_b=0.4, kappa=0.04, asym=0.0, skew=1.0, k_anneal=0.1, div_offset=1.5, div_width=0.3,
             sigma=0.004)
REFS = (5e7, 1e9, 5e5)


def test_grid_posterior_recovers_how_the_miss_grows_with_distance():
    rng = np.random.default_rng(0)
    d = rng.uniform(0.0, 2.0, 300)
    err = rng.normal(0.0, np.sqrt(0.05**2 + (0.3 * d) ** 2))
    s, k, m = grid_posterior(err, d, (0.2, 0.2, 0.2), np.random.default_rng(1))
    assert 0.25 < np.median(k) < 0.36 and 0.0 < np.median(s) < 0.1 and m.shape == (4000, 0)
    # no miss beyond the range: k shrinks to the prior's low end
    s0, k0, _ = grid_posterior(rng.normal(0.0, 0.05, 300), d, (0.2, 0.2, 0.2), np.random.default_rng(1))
    assert np.quantile(k0, 0.9) < 0.05


def test_signed_drift_is_learned_per_direction_and_not_taken_for_spread():
    """A law that bends misses every cell beyond the largest size the same way (+0.3 per e-fold).

    The drift's posterior recovers it within its interval and k stays small; the zero-mean
    model reads the same misses as spread (large k) centred on no shift. Against a closed-form
    check: with s, k fixed the drift's posterior is Bayesian linear regression.
    """
    rng = np.random.default_rng(0)
    up = rng.uniform(0.2, 1.0, 40)   # e-folds beyond the largest size
    down = -rng.uniform(0.2, 1.0, 40)  # below the smallest: no drift that way
    inside = np.zeros(40)
    v = np.concatenate([up, down, inside])
    x = drift_features(np.column_stack([v, np.zeros((120, 2))]))[:, [0, 3]]
    err = 0.3 * np.maximum(v, 0.0) + rng.normal(0.0, 0.05, 120)
    s, k, m = grid_posterior(err, np.abs(v), (0.2, 0.2, 0.2), np.random.default_rng(1), features=x)
    lo, hi = np.quantile(m[:, 0], [0.025, 0.975])
    assert lo < 0.3 < hi and hi - lo < 0.15
    assert abs(np.median(m[:, 1])) < 0.05 and np.quantile(k, 0.9) < 0.08
    _, k0, _ = grid_posterior(err, np.abs(v), (0.2, 0.2, 0.2), np.random.default_rng(1))
    assert np.median(k0) > 0.15
    # the conditional mean of m at the posterior's (s, k) is ridge regression's
    s_, k_ = np.median(s), np.median(k)
    w = 1.0 / (s_**2 + (k_ * v) ** 2)
    a = np.eye(2) / 0.2**2 + (x * w[:, None]).T @ x
    ridge = np.linalg.solve(a, (x * w[:, None]).T @ err)
    np.testing.assert_allclose(np.median(m, axis=0), ridge, atol=0.02)


@pytest.mark.parametrize("with_folds", [False, True])
def test_miss_loglik_is_the_multivariate_normal_density(with_folds):
    """Woodbury forms against the dense covariance s^2 I + k^2 V V' + tau^2 X X'."""
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(5)
    n = 12
    err, d = rng.normal(0.0, 0.3, n), rng.uniform(0.0, 1.5, n)
    folds = rng.integers(0, 4, n) if with_folds else None
    x = drift_features(np.column_stack([d * rng.choice([-1, 1], n), np.zeros((n, 2))]))[:, [0, 3]]
    s2, k2, tau = np.array([0.01, 0.04]), np.array([0.09, 0.0]), 0.2
    lp, _, _ = miss_loglik(err, d, s2, k2, x, folds, tau)
    for g in range(2):
        if with_folds:
            v = np.zeros((n, 4))
            v[np.arange(n), folds] = d
            cov = s2[g] * np.eye(n) + k2[g] * v @ v.T
        else:
            cov = np.diag(s2[g] + k2[g] * d**2)
        cov = cov + tau**2 * x @ x.T
        want = multivariate_normal(np.zeros(n), cov).logpdf(err) + 0.5 * n * np.log(2 * np.pi)
        assert lp[g] == pytest.approx(want, rel=1e-9)


def test_new_cell_effects_reuse_known_slices_and_draw_new_ones():
    rng = np.random.default_rng(0)
    n = 20000
    samples = {"cell_lr_sd": np.tile([0.1, 0.2, 0.3], (n, 1)),
               "cell_loss_sd": np.tile([0.01, 0.02, 0.03], (n, 1)),
               "cell_kappa_sd": np.tile([0.1, 0.1, 0.1], (n, 1))}
    for kind in SLICE_KINDS:
        for what in ("lr", "loss", "kappa"):
            samples[f"z_{what}_{kind}"] = rng.standard_normal((n, 4))
    got = new_cell_effects(samples, [2, None, None], np.random.default_rng(1))
    np.testing.assert_allclose(got["lr"] - got["lr_new"], 0.1 * samples["z_lr_along_size"][:, 2])
    assert np.std(got["lr_new"]) == pytest.approx(np.hypot(0.2, 0.3), rel=0.03)
    assert np.std(got["loss"]) == pytest.approx(np.sqrt(0.01**2 + 0.02**2 + 0.03**2), rel=0.03)
    known = new_cell_effects(samples, [2, None, None], None)
    assert np.all(known["lr_new"] == 0) and np.allclose(known["lr"], got["lr"] - got["lr_new"])
    # two cells sharing a new slice (kind 1) share its effect through the memo; the other
    # new slice (kind 2 differs) is drawn afresh
    memo = {}
    a = new_cell_effects(samples, [2, None, None], np.random.default_rng(2), ("k", "n|b", "n|d1"), memo)
    b = new_cell_effects(samples, [0, None, None], np.random.default_rng(3), ("k", "n|b", "n|d2"), memo)
    shared = np.corrcoef(a["lr_new"], b["lr_new"])[0, 1]
    assert shared == pytest.approx(0.2**2 / (0.2**2 + 0.3**2), abs=0.03)


def test_reach_is_the_remainder_of_a_line_through_a_curved_truth():
    """A line through a quadratic's values at the ends of a range misses it c v (|v| + span) beyond."""
    c, a, b = 0.07, -1.0, 1.3
    f = lambda x: 0.2 - 0.5 * x + c * x**2  # noqa: E731
    line = lambda x: f(a) + (f(b) - f(a)) / (b - a) * (x - a)  # noqa: E731
    for v in (0.4, 1.5, -0.8):
        x = b + v if v > 0 else a + v
        # the same side of the line both ways; reach's sign gives the direction
        assert f(x) - line(x) == pytest.approx(c * abs(reach(v, b - a)), rel=1e-12)
    assert reach(-0.8, 2.3) == pytest.approx(-0.8 * 3.1)
    # a refit on two close sizes reaches further per e-fold than the full fit
    assert reach(0.93, 0.21) / 0.93 < reach(0.74, 1.14) / 0.74


def test_extrapolation_is_signed_e_folds_beyond_the_runs():
    finals = pd.DataFrame({"params": [1e7, 1e8], "tokens": [1e9, 1e9], "tokens_per_step": [1e5, 4e5]})
    x = extrapolation(finals, 1e9, 1e9, 1e5)
    np.testing.assert_allclose(x, [np.log(10.0), 0.0, 0.0])
    assert extrapolation(finals, 1e6, 1e9, 2e5)[0] == pytest.approx(-np.log(10.0))


def _sweep(shift_sd, seed):
    """3 sizes x 2 horizons x 8 LRs, each cell's lr* off the law by its own effect."""
    rng = np.random.default_rng(seed)
    frames, shifts = [], {}
    for n in (2e7, 5e7, 1.2e8, 6e8):
        for d in (5e8, 2e9):
            shifts[(n, d)] = shift_sd * rng.standard_normal()
            truth = {**TRUTH, "log_lr0": TRUTH["log_lr0"] + shifts[(n, d)]}
            frames.append(simulate_sweep(truth, [(n, d, 5e5)], np.exp(np.linspace(-1.5, 2.0, 8)),
                                         refs=REFS, seed=int(rng.integers(1 << 30)))
                          .assign(run=lambda f, n=n, d=d: f["run"] + f"_{n:g}_{d:g}"))
    return pd.concat(frames, ignore_index=True), shifts


def test_point_fit_recovers_the_law_of_an_exact_sweep():
    df, _ = _sweep(0.0, seed=3)
    fit = point_fit(points_from_frame(df[df["params"] < 6e8]), lr_law="loglinear", bowl="linex",
                    priors=load_priors("transfer"), cell_effects=False)
    assert fit.flat("c_n")[0] == pytest.approx(TRUTH["c_n"], abs=0.05)
    assert fit.flat("c_d")[0] == pytest.approx(TRUTH["c_d"], abs=0.05)


def test_cells_missing_the_law_widen_the_target_cells_interval_to_hold_its_optimum():
    # a misspecified truth for the default model: every cell's lr* is off the law by 0.15
    # (sd, log), the held-out 5x larger size too; the fit must say so and cover it
    df, shifts = _sweep(0.15, seed=7)
    train = df[df["params"] < 6e8]
    fit = fit_transfer(points_from_frame(train), seed=0, num_warmup=200, num_samples=200)
    assert fit.config.cell_effects
    fit = calibrate_transfer(fit, seed=0)
    assert not fit.discrepancy.errors.empty
    covered, widths = [], []
    for d in (5e8, 2e9):
        steps = int(d / 5e5)
        target = Target(6e8, d, 5e5, "cosine:final=0.1", steps, steps // 100)
        res = plan(fit, target)
        truth = {**TRUTH, "log_lr0": TRUTH["log_lr0"] + shifts[(6e8, d)]}
        true = np.log(true_lr_star(truth, REFS, 6e8, d, 5e5,
                                   unannealed=target_unannealed(fit, target)))
        lo, hi = np.quantile(np.log(res.lr_star), [0.025, 0.975])
        covered.append(lo <= true <= hi)
        widths.append(hi - lo)
        assert res.lr_sources["law"] < 0.9  # the cells' misses are part of the interval
    assert all(covered)
    # the law's parameters alone (no cell effect, no calibrated miss) are far narrower
    assert min(widths) > 2 * 1.96 * 0.1
