"""Predictions draw through the curve model's own pieces: its group hierarchy and its noise.

The fits here are built by hand (fixed shared values, known tau and noise), so no test runs
MCMC; the expected distributions are simulated independently in the test.
"""

import numpy as np
import pytest
from numpyro import handlers
from scipy import stats

from lrplan.bayes import STUDENT_DF, Diagnostics
from lrplan.curve.calibrate import RATE_SITES
from lrplan.curve.fit import CurveFit, FitConfig
from lrplan.curve.model import (
    L0_OFFSET_SCALE,
    GroupKey,
    curve_data,
    curve_model,
    group_law,
    size_law_level,
)
from lrplan.curve.predict import predict_curve, replicate_runs
from lrplan.data import Run, RunSet
from lrplan.priors import load_priors
from lrplan.schedules import lr_schedule

SHARED = dict(A=0.9, alpha=0.5, C=0.25)
SIZE = dict(E=2.0, A_N=0.8, a_N=0.35)
TAU = 0.2
DRAWS = 4000


def _data(groups=3, size_law=True):
    curves = [(lr_schedule("cosine:final=0.1", steps=2000, peak_lr=1e-3 * (g + 1), warmup_steps=100),
               np.arange(200, 2001, 200), np.linspace(3.5, 3.0, 10), 100, g) for g in range(groups)]
    return curve_data("annealing", curves, lr_ref=1e-3, group_log_n=np.log([0.5, 1.0, 2.0][:groups]),
                      size_law=size_law)


def test_the_model_draws_its_groups_through_group_law():
    d = _data()
    tr = handlers.trace(handlers.seed(curve_model, 0)).get_trace(d, priors=load_priors("annealing"),
                                                                 obs=d.log_loss)
    v = {k: np.asarray(s["value"]) for k, s in tr.items()}
    level = size_law_level(v["E"], v["A_N"], v["a_N"], d.group_log_n)
    want = group_law({n: v[n] for n in SHARED}, level, v["tau"],
                     {n: v[f"z_{n}"] for n in (*SHARED, "L0")})
    for n, x in want.items():
        np.testing.assert_allclose(v[f"{n}_group"], x, rtol=1e-12)
    # the centred form draws the same hierarchy: L0's offset has sd L0_OFFSET_SCALE * tau
    tr = handlers.trace(handlers.seed(curve_model, 0)).get_trace(d, priors=load_priors("annealing"),
                                                                 obs=d.log_loss, centred=True)
    tau = float(tr["tau"]["value"])
    scale = lambda site: getattr(tr[site]["fn"], "base_dist", tr[site]["fn"]).scale  # noqa: E731
    np.testing.assert_allclose(scale("L0_offset"), L0_OFFSET_SCALE * tau, rtol=1e-12)
    np.testing.assert_allclose(scale("log_alpha"), tau, rtol=1e-12)


def _fit(*, size_law: bool, noise: float = 1e-9, groups=2) -> CurveFit:
    """A two-group annealing fit whose every draw has the shared values above."""
    full = lambda v: np.full((1, DRAWS), v)  # noqa: E731
    samples = {k: full(v) for k, v in SHARED.items()}
    samples["tau"] = full(TAU)
    if size_law:
        sizes, n_ref = (1e8, 4e8), 2e8
        samples.update({k: full(v) for k, v in SIZE.items()})
        level = [size_law_level(SIZE["E"], SIZE["A_N"], SIZE["a_N"], np.log(n / n_ref)) for n in sizes]
        keys = tuple(GroupKey(n, 5e5, 1e-3) for n in sizes)
    else:
        n_ref, level = 1e8, [2.9] * groups
        samples["L0"] = full(2.9)
        keys = tuple(GroupKey(1e8, 5e5, 1e-3 * (1 + 0.5 * g)) for g in range(groups))
    for k, v in {**SHARED, "L0": None}.items():
        samples[f"{k}_group"] = np.stack([full(level[g] if k == "L0" else v * (1 + 0.1 * g))
                                          for g in range(groups)], axis=-1)
    if groups == 1:
        samples = {k: v for k, v in samples.items() if k != "tau" and (k == "L0_group" or "_group" not in k)}
    samples.update({k: full(0.0) for k in RATE_SITES})
    config = FitConfig(law="annealing", lr_ref=1e-3, n_ref=n_ref, size_law=size_law, groups=keys[:groups],
                       noise=noise, discrepancy=0.0, discrepancy_anneal=0.0, discrepancy_growth=0.0,
                       area_ref=100.0, seed=0, chains=1, num_warmup=100, num_samples=DRAWS)
    return CurveFit(config=config, priors=load_priors("annealing"), samples=samples,
                    diagnostics=Diagnostics(r_hat_max=1.0, ess_bulk_min=1000.0, divergences=0))


@pytest.mark.parametrize("size_law", [False, True])
def test_a_new_group_is_drawn_from_the_fitted_population(size_law):
    # A constant LR from step 1 (no decay, so S2 = 0): L = L0_g + A_g S1^-alpha_g, the new
    # group's A and alpha log-normal around the shared values with sd tau, its L0 normal
    # around the level (the size law's at its size) with sd L0_OFFSET_SCALE * tau.
    fit = _fit(size_law=size_law)
    steps = np.array([500, 2000, 8000])
    lr = np.full(8000, 2e-3)
    params = 8e8 if size_law else 1e8
    pred = predict_curve(fit, lr, steps, params=params, tokens_per_step=5e5, seed=3)
    assert pred.group is None
    level = SIZE["E"] + SIZE["A_N"] * (params / 2e8) ** -SIZE["a_N"] if size_law else 2.9
    rng = np.random.default_rng(99)
    z = rng.standard_normal((3, DRAWS, 1))
    s1 = steps * 2.0 / 1000  # kilo-steps at the reference LR
    want = (level + L0_OFFSET_SCALE * TAU * z[2] + SHARED["A"] * np.exp(TAU * z[0])
            * s1 ** -(SHARED["alpha"] * np.exp(TAU * z[1])))
    for j in range(steps.size):
        assert stats.ks_2samp(pred.law[:, j], want[:, j]).pvalue > 1e-3, j
    # a fitted group's law is its own draws: no spread
    fitted = predict_curve(fit, lr[:4000] / 2, steps[:2], params=1e8, tokens_per_step=5e5)
    assert fitted.group == 0 and np.ptp(fitted.law, axis=0).max() < 1e-12


def test_predictions_and_replicates_add_the_models_student_t_noise():
    fit = _fit(size_law=False, noise=0.01, groups=1)
    steps = np.arange(100, 2001, 100)
    lr = lr_schedule("cosine:final=0.1", steps=2000, peak_lr=1e-3, warmup_steps=100)
    t = stats.t(df=STUDENT_DF, scale=0.01)
    pred = predict_curve(fit, lr, steps, warmup_steps=100, seed=0)
    assert stats.kstest(np.log(pred.draws / pred.law)[:, 5], t.cdf).pvalue > 1e-3
    run = Run(name="r", steps=steps, loss=np.ones(steps.size), lr=lr, params=1e8,
              tokens_per_step=5e5, peak_lr=1e-3, warmup_steps=100, total_steps=2000,
              schedule=None, diverged=False, diverged_step=None, final_only=False)
    law = pred.law[7]
    errors = np.concatenate([np.log(replicate_runs(fit, RunSet(runs=(run,), source="x"), draw=7,
                                                   seed=s).runs[0].loss / law) for s in range(100)])
    assert stats.kstest(errors, t.cdf).pvalue > 1e-3


def test_the_predictive_discrepancy_has_the_covariance_the_calibration_scores():
    # curve_loglik scores a held-out curve's errors as N(0, noise2 I + X diag(rates^2) X'),
    # X = [1, d, u]; the predictions' discrepancy draws must have that covariance.
    from lrplan.curve.calibrate import discrepancy_draws

    rates = np.array([0.004, 0.3, 0.016])
    d = np.linspace(0.0, 0.05, 6)
    u = np.linspace(0.0, 1.2, 6)
    e = discrepancy_draws(np.random.default_rng(0), np.tile(rates, (40000, 1)),
                          np.tile(d, (40000, 1)), u)
    x = np.stack([np.ones_like(d), d, u], axis=1)
    want = x @ np.diag(rates**2) @ x.T
    np.testing.assert_allclose(np.cov(e, rowvar=False), want, rtol=0.05, atol=1e-3 * want.max())
