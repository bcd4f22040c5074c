import json
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lrplan import budget as bu
from lrplan.cli import cli
from lrplan.errors import DataError
from lrplan.evaluate.baselines import chinchilla_fit
from lrplan.evaluate.simulate import CHINCHILLA_TRUTH, simulate_isoflop, true_params_optimum

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BUDGETS = 1e17 * 2.0 ** np.arange(5)


def _points(seed=0, budgets=BUDGETS, noise=0.01):
    df = simulate_isoflop(CHINCHILLA_TRUTH, budgets, noise=noise, seed=seed)
    return bu.points_from_frame(df.rename(columns={"tokens_per_step": "tokens"}))[0]


@pytest.mark.parametrize("text, per, fixed", [("6N", 6, 0), ("7.2N", 7.2, 0), ("6N+2.4e9", 6, 2.4e9),
                                              (" 6 * N + 1e9 ", 6, 1e9)])
def test_parse_flops_per_token(text, per, fixed):
    fpt = bu.parse_flops_per_token(text)
    assert (fpt.per_param, fpt.fixed) == (per, fixed)
    assert fpt.tokens(1e20, 1e9) == pytest.approx(1e20 / (per * 1e9 + fixed))


@pytest.mark.parametrize("text", ["6", "6x", "-6N", "N+-3", ""])
def test_parse_flops_per_token_rejects(text):
    with pytest.raises(DataError, match="flops-per-token"):
        bu.parse_flops_per_token(text)


def test_true_optimum_is_the_laws_argmin():
    grid = np.exp(np.linspace(np.log(1e7), np.log(1e11), 20001))
    for c in (1e18, 1e21):
        loss = CHINCHILLA_TRUTH["E"] + CHINCHILLA_TRUTH["A"] * grid ** -CHINCHILLA_TRUTH["a"] \
            + CHINCHILLA_TRUTH["B"] * (c / (6 * grid)) ** -CHINCHILLA_TRUTH["b"]
        assert true_params_optimum(CHINCHILLA_TRUTH, c) == pytest.approx(grid[np.argmin(loss)], rel=1e-3)


def test_isoflop_vertex_of_a_parabola_and_none_without_one():
    n = np.exp(np.linspace(17, 21, 7))
    y = 3.0 + 0.05 * (np.log(n) - 19.3) ** 2
    v = bu.isoflop_vertex(n, y)
    assert v[0] == pytest.approx(19.3) and np.exp(v[2]) == pytest.approx(3.0)
    assert bu.isoflop_vertex(n, 3.0 - 0.05 * (np.log(n) - 19.3) ** 2) is None   # opens downward
    assert bu.isoflop_vertex(n, 3.0 + 0.05 * (np.log(n) - 25) ** 2) is None     # beyond the sizes


def test_budget_groups_split_at_gaps():
    assert bu.budget_groups(np.array([1e18, 2e18, 1.01e18, 4e18, 1.99e18])).tolist() == [0, 1, 0, 2, 1]


def test_chinchilla_fit_recovers_a_noiseless_law():
    pts = _points(noise=0.0)
    fit = chinchilla_fit(pts["params"], pts["tokens"], pts["loss"], n_boot=3)
    pred = fit.loss(pts["params"], pts["tokens"])
    assert np.max(np.abs(pred / pts["loss"] - 1)) < 1e-3
    assert len(fit.boot) == 3


@pytest.fixture(scope="module")
def fitted():
    pts = _points(seed=3)
    law = bu.fit_budget(pts, chains=1, num_warmup=300, num_samples=400, seed=0)
    drift = bu.calibrate_drift(pts, seed=0)
    return pts, law, drift


def test_budget_recovers_the_true_optimum_within_its_interval(fitted):
    pts, law, drift = fitted
    target = 8 * BUDGETS[-1]
    res = bu.decide_budget(law, target, drift=drift, compare=(1e8,), seed=0)
    truth = true_params_optimum(CHINCHILLA_TRUTH, target)
    lo, hi = np.quantile(res.params_star, [0.025, 0.975])
    assert lo <= truth <= hi
    assert abs(np.log(res.recommended / truth)) < np.log(1.5)
    # the tokens are the budget's at each size, and a size far from the optimum costs loss
    assert res.tokens(res.recommended) * 6 * res.recommended == pytest.approx(target)
    assert np.mean(res.compare[1e8]) > 0
    # the leave-budget-out folds forecast the later budgets of the fitted grid
    assert drift.source == "calibrated" and len(drift.folds) >= 2
    assert (drift.folds["reach"] > 0).all()


def test_the_calibrated_miss_widens_with_the_reach(fitted):
    pts, law, drift = fitted
    wide = bu.decide_budget(law, 64 * BUDGETS[-1], drift=drift, seed=0)
    near = bu.decide_budget(law, 2 * BUDGETS[-1], drift=drift, seed=0)
    width = lambda r: np.diff(np.quantile(np.log(r.params_star), [0.1, 0.9]))[0]  # noqa: E731
    assert wide.reach > near.reach
    assert width(wide) > width(near)


def test_a_drift_prior_that_is_not_halfnormal_is_refused():
    from lrplan.errors import PriorError
    from lrplan.priors import Prior, load_priors

    priors = load_priors("budget")
    bad = type(priors)(priors.law, {**priors.params, "drift_n": Prior("normal", {"loc": 0, "scale": 1})})
    with pytest.raises(PriorError, match="drift_n"):
        bu.prior_drift(bad)


def _folds(rate, seed, n=12, sd=0.03):
    """Leave-budget-out forecast errors drawn with a known drift rate and known variance."""
    rng = np.random.default_rng(seed)
    reach = np.tile(np.linspace(0.7, 2.8, n // 2), 2)
    var = np.full(n, sd**2)
    err = rng.normal(0.0, np.sqrt(var + (rate * reach) ** 2))
    return pd.DataFrame({"cut": 0, "budget": 0, "flops": 1.0, "reach": reach, "err_n": err,
                         "var_n": var, "err_l": err / 10, "var_l": var / 100})


def test_the_drift_posterior_settles_at_zero_without_drift_and_recovers_a_real_one():
    # no drift: the spike takes most of the mass in most replicates, and it narrows the plan's
    # drift against the half-normal rate alone
    quiet = [bu.drift_posterior(_folds(0.0, s), seed=s, draws=500) for s in range(6)]
    p_none = np.array([d.none_prob[0] for d in quiet])
    assert np.median(p_none) > 0.6, p_none
    slab = bu.drift_posterior(_folds(0.0, 0), seed=0, draws=500, p_none=0.0)
    assert slab.none_prob == (0.0, 0.0) and np.all(slab.rates[:, 0] > 0)
    assert np.quantile(quiet[0].rates[:, 0], 0.8) < np.quantile(slab.rates[:, 0], 0.8)
    # a drift of 0.1 per e-fold (3x the forecasts' own sd at 1 e-fold): the spike loses, and the
    # rate's 90% interval holds the truth in >= 7 of 10 replicates (binomial: 1.3% to fail)
    loud = [bu.drift_posterior(_folds(0.1, s), seed=s, draws=500) for s in range(10, 20)]
    assert max(d.none_prob[0] for d in loud) < 0.05
    inside = [np.quantile(d.rates[:, 0], 0.05) < 0.1 < np.quantile(d.rates[:, 0], 0.95) for d in loud]
    assert sum(inside) >= 7, inside


def test_the_drift_prior_has_its_spike_at_zero():
    priors = bu.load_priors("budget")
    d = bu.prior_drift(priors, draws=4000, seed=0)
    p0 = priors["drift_none"].args["probs"]
    assert d.none_prob == (p0, p0)
    assert abs(np.mean(d.rates == 0) - p0) < 0.03  # binomial sd at 4000 x 2 draws: ~0.006


@pytest.fixture(scope="module")
def runs_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("budget")
    simulate_isoflop(CHINCHILLA_TRUTH, BUDGETS[:4], seed=1).to_csv(d / "runs.csv", index=False)
    return d / "runs.csv"


def test_budget_cli_json_contract(runs_file, tmp_path):
    args = ["budget", str(runs_file), "--flops", "1e19", "--compare", "2e8", "--chains", "1",
            "--warmup", "100", "--samples", "200", "--no-calibrate", "--json",
            "--report", str(tmp_path / "b.md")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert set(doc) >= {"budget", "recommended", "params_optimum", "tokens_optimum", "final_loss",
                        "lr", "batch", "compare", "isoflop", "drift", "model", "diagnostics", "notes"}
    q = doc["params_optimum"]["quantiles"]
    assert q["0.025"] <= q["0.5"] <= q["0.975"]
    assert set(q) == {"0.025", "0.1", "0.5", "0.9", "0.975"}
    rec = doc["recommended"]
    assert rec["tokens"] * 6 * rec["params"] == pytest.approx(1e19)
    assert doc["lr"]["source"] == "step_law" and doc["batch"]["source"] == "step_law"
    assert doc["compare"][0]["params"] == 2e8
    iso = doc["isoflop"]
    assert len(iso["params"]) == len(iso["mean"]) == len(iso["quantiles"]["0.5"])
    assert doc["drift"]["source"] == "prior"
    p0 = bu.load_priors("budget")["drift_none"].args["probs"]
    assert doc["drift"]["none_probability"] == {"params": p0, "loss": p0}
    assert any("not identified" in n for n in doc["notes"])
    assert (tmp_path / "b.md").exists() and (tmp_path / "b_files" / "isoflop.png").exists()


def test_budget_cli_text_shows_the_isoflop_curve(runs_file):
    res = CliRunner().invoke(cli, ["budget", str(runs_file), "--flops", "1e19", "--chains", "1",
                                   "--warmup", "100", "--samples", "200", "--no-calibrate"])
    assert res.exit_code == 0, res.output
    assert "Isoflop curve at 1e+19" in res.stdout
    assert sum(line.startswith("*") for line in res.stdout.splitlines()) == 1


@pytest.mark.parametrize("extra, match", [
    (["--flops-per-token", "6x"], "flops-per-token"),
    (["--params-range", "5e9,1e8"], "LO < HI"),
    (["--params-range", "1e8"], "LO < HI"),
    (["--flops", "-1"], "must be > 0"),
    (["--compare", "1e3"], "outside the sizes"),
])
def test_budget_bad_input_exit_2(runs_file, extra, match):
    args = ["budget", str(runs_file), "--flops", "1e19", "--chains", "1", "--warmup", "50",
            "--samples", "50", "--no-calibrate", *extra]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2, res.output
    assert len(res.stderr.strip().splitlines()) == 1 and match in res.stderr
    assert "Traceback" not in res.output


def test_budget_runs_without_sizes_exit_2(tmp_path):
    pd.DataFrame({"run": ["a", "b"], "step": [1, 1], "loss": [3.0, 3.1]}).to_csv(tmp_path / "r.csv", index=False)
    res = CliRunner().invoke(cli, ["budget", str(tmp_path / "r.csv"), "--flops", "1e19"])
    assert res.exit_code == 2
    assert "r.csv" in res.stderr and "params" in res.stderr and "run a" in res.stderr


@pytest.mark.slow
@pytest.mark.xfail(reason="measured 48/50 (0.96; the posterior alone 36/50): a 6-budget grid gives "
                          "3 leave-budget-out cuts, and the drift's prior keeps it from zero "
                          "(examples/budget_simulation.md)", strict=False)
def test_budget_simulation_coverage_of_the_true_optimum():
    module = runpy.run_path(str(EXAMPLES / "budget_simulation.py"))
    rows = module["main"](["--replicates", "50"])
    cov80 = np.mean([r["in80"] for r in rows])
    assert 0.7 <= cov80 <= 0.9


def test_a_plans_final_loss_has_the_budget_models_student_t_noise():
    from scipy import stats

    from lrplan.bayes import STUDENT_DF
    from lrplan.budget.model import drift_sd

    n = 200_000
    law = bu.LossLaw(draws={}, noise=np.full(n, 0.01), n0=1.0, d0=1.0, points=pd.DataFrame(),
                     diagnostics=None, source="isoflop", fpt=bu.SIX_N)
    z = (law.predictive_loss(np.full(n, 3.0), np.random.default_rng(0)) - 3.0) / 0.01
    np.testing.assert_allclose(np.quantile(z, [0.005, 0.995]), stats.t(STUDENT_DF).ppf([0.005, 0.995]),
                               rtol=0.04)
    # a plan's drift draws (no known variance) have sd rate x reach, as in the drift model
    rates = np.array([0.0, 0.05, 0.2])
    np.testing.assert_array_equal(np.asarray(drift_sd(rates, 2.5)), rates * 2.5)
    assert float(drift_sd(0.1, 2.0, 0.03**2)) == pytest.approx(np.hypot(0.03, 0.2))


def test_padded_isoflop_data_have_the_models_density():
    from numpyro.infer.util import log_density

    from lrplan.budget.fit import _isoflop_data
    from lrplan.budget.model import IsoflopData, budget_model

    pts = _points()
    seen = (pts["budget"] < pts["budget"].max()).to_numpy()
    data, _, _ = _isoflop_data(pts, seen)
    assert data.loss.shape[0] > len(pts)  # padded to its bucket
    bare = IsoflopData(*(np.asarray(x)[: len(pts)] if np.ndim(x) else x for x in data))
    priors = bu.load_priors("budget")
    params = {"l_ref": 0.1, "A": 0.4, "a": 0.3, "B": 0.5, "b": 0.3, "sigma": 0.01}
    dens = [float(log_density(budget_model, (d,), {"priors": priors}, params)[0]) for d in (data, bare)]
    assert dens[0] == pytest.approx(dens[1], rel=1e-12)
