"""The curve law chosen by the data: stacking weights, held-out scores, mixtures, misfit checks."""

import json

import numpy as np
import pandas as pd
import pytest

from lrplan.curve.calibrate import heldout_scores, misfit_checks
from lrplan.curve.fit import CurveMixture, fit_curves
from lrplan.curve.io import load_fit, save_fit
from lrplan.curve.lawchoice import stacking_weights
from lrplan.curve.predict import predict_curve
from lrplan.data import load_runs
from lrplan.evaluate.simulate import simulate_curves
from lrplan.schedules import lr_schedule


def _mixture_score(lpd, w):
    return np.sum(np.log(np.exp(lpd).T @ w))


@pytest.mark.parametrize("seed", range(4))
def test_stacking_weights_maximise_the_mixtures_held_out_score(seed):
    # Against a brute-force search of the simplex: the optimiser's weights score at least as
    # well as every grid point, within the grid's resolution.
    rng = np.random.default_rng(seed)
    lpd = rng.normal(0.0, 2.0, size=(3, 12)) + rng.normal(0.0, 1.0, size=(3, 1))
    w = stacking_weights(lpd)
    assert w.shape == (3,) and np.all(w >= 0) and np.isclose(w.sum(), 1.0)
    grid = np.linspace(0, 1, 41)
    best = max(_mixture_score(lpd, np.array([a, b, 1 - a - b]))
               for a in grid for b in grid if a + b <= 1 + 1e-12)
    assert _mixture_score(lpd, w) >= best - 1e-6


def test_a_law_better_on_every_curve_takes_the_weight_and_complementary_laws_share_it():
    curves = 10
    better = np.stack([np.full(curves, 5.0), np.zeros(curves)])
    assert stacking_weights(better)[0] > 0.99
    # each law predicts half of the curves far better than the other: the mixture needs both
    half = np.stack([np.r_[np.full(5, 30.0), np.zeros(5)], np.r_[np.zeros(5), np.full(5, 30.0)]])
    np.testing.assert_allclose(stacking_weights(half), [0.5, 0.5], atol=1e-3)
    # the score's offsets do not matter, only differences between laws on the same curve
    np.testing.assert_allclose(stacking_weights(better + 1000.0), stacking_weights(better), atol=1e-9)


def test_held_out_score_is_the_curves_log_density_averaged_over_the_rates():
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(0)
    curves = [(rng.normal(0, 0.003, 6), np.linspace(0, 0.04, 6), np.linspace(0, 0.5, 6))
              for _ in range(3)]
    rates = np.abs(rng.normal(0, [0.003, 0.2, 0.01], size=(5, 3)))
    noise2 = 4e-7
    got = heldout_scores(curves, noise2=noise2, rates=rates)
    for c, (e, d, u) in enumerate(curves):
        x = np.stack([np.ones_like(e), d, u], 1)
        ll = [multivariate_normal(np.zeros(e.size), noise2 * np.eye(e.size) + x @ np.diag(r**2) @ x.T
                                  ).logpdf(e) for r in rates]
        np.testing.assert_allclose(got[c], logsumexp(ll) - np.log(len(rates)), rtol=1e-9)


def test_misfit_checks_flag_a_missed_run_end_and_a_floor_that_dwarfs_the_noise():
    n = 40
    run_of = np.repeat([0, 1], n)
    truth = np.linspace(3.5, 3.0, 2 * n)
    log_loss = np.log(truth) + np.random.default_rng(1).normal(0, 0.001, 2 * n)
    assert misfit_checks(truth, log_loss, run_of, ["a", "b"], noise=0.001, floor=0.002) == ()
    off = truth.copy()
    off[n:][-5:] *= 1.02  # the law misses run b's end by 2%
    (msg,) = misfit_checks(off, log_loss, run_of, ["a", "b"], noise=0.001, floor=0.002)
    assert "run b" in msg and "-2.0" in msg
    (msg,) = misfit_checks(truth, log_loss, run_of, ["a", "b"], noise=0.001, floor=0.03)
    assert "did not fit by 3.00%" in msg


# The case of issue 21: a constant run and a cosine decaying to zero, peak 1e-3, 124M-like
# losses. Simulated from the annealing law, the multi-power law's fit used to fail here: the
# fold that fits the constant run alone (where the law's L0 and B are one sum) forecast the
# cosine with a loss reduction 10x the loss, which inflated the likelihood's scale until the
# posterior was the prior, and its median missed the fitted cosine's end by 1.5-3%.
ANNEALING = {"L0": 3.016, "A": 0.932, "alpha": 0.591, "C": 0.217}
MULTIPOWER = {"L0": 2.95, "A": 0.9, "alpha": 0.5, "B": 0.4, "C": 2.0, "beta": 0.6, "gamma": 0.65}
SCHEDULES = (("constant", "constant", 50000), ("cosine", "cosine:final=0", 25000))


def _schedule_study(tmp_path, law, truth, seed=1):
    parts = [simulate_curves(law, truth, {name: spec}, steps=steps, peak_lr=1e-3, warmup_steps=300,
                             every=200, noise=0.001, params=8.5e7, tokens_per_step=102400, seed=seed)
             for name, spec, steps in SCHEDULES]
    pd.concat([p[0] for p in parts]).to_csv(tmp_path / "runs.csv", index=False)
    pd.concat([p[1] for p in parts]).to_csv(tmp_path / "meta.csv", index=False)
    return load_runs(tmp_path / "runs.csv", meta=tmp_path / "meta.csv")


def _cosine_tail_error(fit, runs):
    cos = next(r for r in runs if r.name == "cosine")
    keep = cos.steps >= cos.warmup_steps
    lr = lr_schedule("cosine:final=0", steps=25000, peak_lr=1e-3, warmup_steps=300)
    p = predict_curve(fit, lr, cos.steps[keep], warmup_steps=300, params=8.5e7,
                      tokens_per_step=102400)
    rel = np.median(p.law, axis=0) / cos.loss[keep] - 1
    return float(np.mean(rel[-max(3, rel.size // 10):]))


@pytest.fixture(scope="module")
def annealing_study(tmp_path_factory):
    runs = _schedule_study(tmp_path_factory.mktemp("schedules"), "annealing", ANNEALING)
    return runs, fit_curves(runs, seed=0, num_warmup=150, num_samples=200)


def test_the_data_choose_the_law_that_generated_them_and_its_fit_holds(annealing_study):
    runs, fit = annealing_study
    assert isinstance(fit, CurveMixture)
    weights = {s.law: s.weight for s in fit.scores}
    assert weights["annealing"] > 0.9, weights
    assert abs(_cosine_tail_error(fit, runs)) < 0.002
    assert fit.diagnostics.misfit == ()


def test_a_mixture_round_trips_through_its_file(annealing_study, tmp_path):
    runs, fit = annealing_study
    save_fit(fit, tmp_path / "fit.nc")
    back = load_fit(tmp_path / "fit.nc")
    assert isinstance(back, CurveMixture)
    assert [s.to_json() for s in back.scores] == [s.to_json() for s in fit.scores]
    assert back.weights == fit.weights and back.law == "auto"
    lr = lr_schedule("wsd:decay=0.2", steps=30000, peak_lr=1e-3, warmup_steps=300)
    at = np.arange(1000, 30001, 1000)
    a = predict_curve(fit, lr, at, warmup_steps=300, params=8.5e7, tokens_per_step=102400, seed=3)
    b = predict_curve(back, lr, at, warmup_steps=300, params=8.5e7, tokens_per_step=102400, seed=3)
    np.testing.assert_array_equal(a.draws, b.draws)


def test_fit_json_names_the_weights_and_each_laws_score(annealing_study, tmp_path):
    from click.testing import CliRunner

    from lrplan.cli import cli

    runs, _ = annealing_study
    src = runs.source
    meta = str(src).replace("runs.csv", "meta.csv")
    res = CliRunner().invoke(cli, ["fit", str(src), "--meta", meta, "-o", str(tmp_path / "f.nc"),
                                   "--warmup", "100", "--samples", "100", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["law"] == "auto"
    assert {s["law"] for s in doc["laws"]} == {"multipower", "annealing"}
    assert all(np.isfinite(s["elpd"]) for s in doc["laws"])
    assert np.isclose(sum(doc["weights"].values()), 1.0)
    assert doc["diagnostics"]["status"] in ("ok", "warning")


@pytest.mark.slow
def test_the_multipower_twin_chooses_the_multipower_law_and_the_forced_laws_fit(tmp_path):
    runs = _schedule_study(tmp_path, "multipower", MULTIPOWER)
    fit = fit_curves(runs, seed=0, num_warmup=200, num_samples=300)
    weights = {s.law: s.weight for s in fit.scores}
    assert weights["multipower"] > 0.5, weights
    assert abs(_cosine_tail_error(fit, runs)) < 0.002
    # the multi-power law forced onto the annealing law's data: it fits its own runs now
    other = _schedule_study(tmp_path, "annealing", ANNEALING)
    forced = fit_curves(other, law="multipower", seed=0, num_warmup=200, num_samples=300)
    assert abs(_cosine_tail_error(forced, other)) < 0.002
    assert forced.diagnostics.misfit == ()
