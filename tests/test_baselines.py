import numpy as np
import pytest

from lrplan.data import load_runs
from lrplan.errors import FitError
from lrplan.evaluate import baselines
from lrplan.evaluate.simulate import simulate_curves

ANNEAL = {"L0": 2.6, "A": 0.8, "alpha": 0.45, "C": 0.3}
SCHEDULES = {"cosine": "cosine:final=0.1", "constant": "constant", "wsd": "wsd:decay=0.2"}


def _runs(tmp_path, law, truth, schedules, noise=0.0, params=None, name="runs"):
    runs, meta = simulate_curves(law, truth, schedules, steps=6000, peak_lr=1e-3, warmup_steps=300,
                                 every=100, noise=noise, params=params, tokens_per_step=1e6)
    runs.to_csv(tmp_path / f"{name}.csv", index=False)
    meta.to_csv(tmp_path / f"{name}_meta.csv", index=False)
    return load_runs(tmp_path / f"{name}.csv", meta=tmp_path / f"{name}_meta.csv")


def test_huber_fit_recovers_annealing_law_from_noiseless_curves(tmp_path):
    runs = _runs(tmp_path, "annealing", ANNEAL, SCHEDULES)
    fit = baselines.huber_fit(list(runs), law="annealing")
    assert not fit.size_law and fit.starts == 8
    for k, v in ANNEAL.items():
        assert fit.values[k] == pytest.approx(v, rel=2e-3), k
    r = runs["wsd"]
    steps = r.steps[r.steps >= r.warmup_steps]
    pred = baselines.predict_law(fit, r.lr, steps, warmup_steps=r.warmup_steps)
    np.testing.assert_allclose(pred, r.loss[r.steps >= r.warmup_steps], rtol=1e-4)


@pytest.mark.slow
def test_huber_fit_recovers_multipower_law_from_noiseless_curves(tmp_path):
    truth = {"L0": 2.6, "A": 0.8, "alpha": 0.45, "B": 0.4, "C": 2.0, "beta": 0.6, "gamma": 0.6}
    schedules = {**SCHEDULES, "step": "multistep:milestones=0.5|0.8"}
    runs = _runs(tmp_path, "multipower", truth, schedules)
    fit = baselines.huber_fit(list(runs), law="multipower")
    for r in runs:
        keep = r.steps >= r.warmup_steps
        pred = baselines.predict_law(fit, r.lr, r.steps[keep], warmup_steps=r.warmup_steps)
        np.testing.assert_allclose(pred, r.loss[keep], rtol=2e-4)
    for k in ("L0", "A", "alpha"):
        assert fit.values[k] == pytest.approx(truth[k], rel=0.05), k


def test_single_size_fit_refuses_another_size(tmp_path):
    runs = _runs(tmp_path, "annealing", ANNEAL, {"cosine": "cosine:final=0.1"}, params=1e8)
    fit = baselines.huber_fit(list(runs), law="annealing")
    r = runs[0]
    with pytest.raises(FitError, match="one size"):
        baselines.predict_law(fit, r.lr, r.steps[-3:], warmup_steps=r.warmup_steps, params=1e9)


def test_bootstrap_draws_are_shaped_like_predictions(tmp_path):
    runs = _runs(tmp_path, "annealing", ANNEAL, SCHEDULES, noise=0.003)
    train = [runs["cosine"], runs["constant"]]
    r = runs["wsd"]
    steps = r.steps[r.steps >= r.warmup_steps]
    boot = baselines.bootstrap_curves(train, [("wsd", r.lr, steps, r.warmup_steps, None)],
                                      law="annealing", n_boot=12, seed=1)
    assert boot.draws["wsd"].shape == (12, steps.size) and boot.failed == 0
    assert boot.point["wsd"].shape == (steps.size,)
    spread = boot.draws["wsd"].std(axis=0)
    assert np.all(spread > 0) and np.all(spread < 0.05)  # refits differ, but not wildly


def test_block_weights_keep_every_run():
    run_of = np.repeat([0, 1, 2], 40)
    w = baselines.block_weights(run_of, 8, np.random.default_rng(0))
    for i in range(3):
        assert w[run_of == i].sum() == 40  # as many points drawn as the run has


def test_nearest_curve_prefers_same_schedule_nearest_size(tmp_path):
    small = _runs(tmp_path, "annealing", ANNEAL, SCHEDULES, params=1e8, name="small")
    big_truth = {**ANNEAL, "L0": 2.3}
    big = _runs(tmp_path, "annealing", big_truth, {"cosine": "cosine:final=0.1"}, params=4e8, name="big")
    target = big["cosine"]
    pred, src = baselines.nearest_curve(list(small), target, target.steps)
    assert src == "cosine"
    np.testing.assert_allclose(pred, small["cosine"].loss)  # same steps, same schedule
