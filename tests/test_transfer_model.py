"""The transfer model written once: a fit's predictions go through the model's own pieces."""

import jax
import numpy as np
import pandas as pd
import pytest
from numpyro import handlers
from scipy import stats

from lrplan.bayes import STUDENT_DF
from lrplan.evaluate.simulate import simulate_sweep
from lrplan.priors import load_priors
from lrplan.transfer.fit import TransferConfig, TransferFit
from lrplan.transfer.model import loss_noise, loss_noise_logpdf, transfer_model
from lrplan.transfer.points import normalise, points_from_frame, slice_labels, transfer_data

TRUTH = dict(E=1.9, A=0.6, a=0.34, B=0.5, b=0.28, log_lr0=np.log(2e-3), c_n=-0.6, c_d=-0.3,
             c_b=0.4, kappa=0.04, asym=0.0, skew=1.0, k_anneal=0.1, div_offset=1.5, div_width=0.3,
             sigma=0.004)
REFS = (5e7, 1e9, 5e5)


def _points():
    cells = [(n, d, b) for n in (2e7, 1e8) for d in (5e8, 2e9) for b in (2.5e5, 5e5)]
    df = simulate_sweep(TRUTH, cells, np.exp(np.linspace(-1.5, 2.5, 5)), refs=REFS, seed=0)
    return points_from_frame(df)


def _one_draw_fit(points, values, cell_effects):
    n0, d0, b0, lr_ref = normalise(points)
    config = TransferConfig(lr_law="loglinear", bowl="linex", n0=n0, d0=d0, b0=b0, lr_ref=lr_ref,
                            schedule_known=True, seed=0, chains=1, num_warmup=0, num_samples=1,
                            cell_effects=cell_effects,
                            slices=slice_labels(points) if cell_effects else ())
    samples = {k: np.asarray(v, dtype=np.float64)[None, None] for k, v in values.items()}
    return TransferFit(config=config, priors=None, samples=samples, diagnostics=None, points=points,
                       log_lik=np.zeros((1, 1, 0)))


@pytest.mark.parametrize("cell_effects", [False, True])
def test_a_fits_predictions_are_the_models_own_mean_and_divergence_odds(cell_effects):
    # one prior draw of the model, traced; a one-draw fit with those values must give the
    # model's mean loss at every point and its divergence probability at every run
    points = _points()
    n0, d0, b0, lr_ref = normalise(points)
    data, _ = transfer_data(points, n0, d0, b0, lr_ref, cell_effects)
    model = handlers.seed(transfer_model, jax.random.PRNGKey(3))
    tr = handlers.trace(model).get_trace(data, priors=load_priors("transfer"), observe=False)
    values = {k: site["value"] for k, site in tr.items() if site["type"] in ("sample", "deterministic")
              and k not in ("loss", "diverged")}
    fit = _one_draw_fit(points, values, cell_effects)
    ok = points[~points["diverged"]].reset_index(drop=True)
    runs = points.groupby("run", sort=False).last()
    mean = np.empty(len(ok))
    p_div = np.empty(len(runs))
    for i, r in ok.iterrows():
        cell = fit.cell_effects(r["params"], r["tokens"], r["tokens_per_step"], None)
        mean[i] = fit.expected_loss(r["params"], r["tokens"], r["tokens_per_step"], [r["lr"]],
                                    r["unannealed"], lr_shift=cell["lr"], loss_shift=cell["loss"],
                                    log_kappa_shift=cell["log_kappa"])[0, 0]
    for i, (_, r) in enumerate(runs.iterrows()):
        cell = fit.cell_effects(r["params"], r["tokens"], r["tokens_per_step"], None)
        p_div[i] = fit.divergence_probability(r["params"], r["tokens"], r["tokens_per_step"], [r["lr"]],
                                              lr_shift=cell["lr"])[0, 0]
    np.testing.assert_allclose(mean, np.asarray(tr["loss"]["fn"].loc), rtol=1e-10)
    np.testing.assert_allclose(p_div, np.asarray(tr["diverged"]["fn"].probs), rtol=1e-8, atol=1e-12)


def test_predictive_losses_have_the_likelihoods_student_t_tails():
    points = _points()
    n = 200_000
    fit = _one_draw_fit(points, {}, False)
    fit = TransferFit(config=fit.config, priors=None, samples={"sigma": np.full((1, n), 0.01)},
                      diagnostics=None, points=points, log_lik=np.zeros((1, 1, 0)))
    draws = fit.predictive_loss(np.full(n, 3.0), np.random.default_rng(0))
    q = np.quantile((draws - 3.0) / 0.01, [0.005, 0.995])
    # Student-t with 5 df: 4.03 at 99.5%, where a normal gives 2.58
    np.testing.assert_allclose(q, stats.t(STUDENT_DF).ppf([0.005, 0.995]), rtol=0.04)
    curve = fit.predictive_loss(np.full((n, 4), 3.0), np.random.default_rng(0), one_run=True)
    assert np.all(curve == curve[:, :1])  # one run: its points share the draw's noise


def test_loss_noise_logpdf_is_the_density_of_loss_noise():
    rng = np.random.default_rng(1)
    scale = 0.02
    x = loss_noise(rng, scale, 100_000)
    hist, edges = np.histogram(x, bins=41, range=(-0.1, 0.1), density=True)
    mid = (edges[1:] + edges[:-1]) / 2
    np.testing.assert_allclose(hist, np.exp(loss_noise_logpdf(mid, scale)), rtol=0.1, atol=0.3)
    assert pd.Series(loss_noise(np.random.default_rng(0), 1.0, 5, df=np.inf)).equals(
        pd.Series(np.random.default_rng(0).standard_normal(5)))
