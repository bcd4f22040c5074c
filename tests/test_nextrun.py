"""`lrplan next`: the preposterior estimator, and the ranking of candidate runs on a simulated sweep."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from test_transfer import REFS, TARGET, TRUTH

from lrplan.cli import cli
from lrplan.data import load_runs
from lrplan.evaluate.simulate import simulate_sweep
from lrplan.transfer.decide import plan
from lrplan.transfer.fit import fit_transfer, transfer_points
from lrplan.transfer.nextrun import Candidate, expected_posterior, next_run


@pytest.mark.parametrize("sigma", [0.05, 0.5, 1.0, 2.0])
def test_expected_posterior_matches_the_conjugate_normal(sigma):
    # q ~ N(0, 1) observed with N(0, sigma^2) noise: the posterior variance is sigma^2 / (1 + sigma^2)
    # whatever the outcome, so its expectation is that too (at sigma 0.05 only ~200 of the
    # 4000 draws keep weight: an informative run is still estimated right)
    rng = np.random.default_rng(0)
    q = rng.standard_normal(4000)
    unrelated = rng.standard_normal(4000)
    res = expected_posterior(np.column_stack([q, unrelated]), q, np.full(4000, sigma), df=np.inf,
                             n_outcomes=512, rng=np.random.default_rng(1))
    assert res["variance"][0] == pytest.approx(sigma**2 / (1 + sigma**2), rel=0.08)
    # a quantity independent of the observation keeps its variance
    assert res["variance"][1] == pytest.approx(1.0, rel=0.08)


def test_expected_posterior_pools_several_runs():
    # R runs that each measure q with noise sigma: the posterior variance is 1 / (1 + R / sigma^2)
    rng = np.random.default_rng(2)
    q = rng.standard_normal(4000)
    res = expected_posterior(q, np.column_stack([q, q, q]), np.full(4000, 1.0), df=np.inf,
                             n_outcomes=512, rng=np.random.default_rng(3))
    assert res["variance"][0] == pytest.approx(0.25, rel=0.1)
    assert 0 < res["ess"] < 4000


def test_divergence_outcomes_carry_information():
    # a run that diverges exactly when q > 0 tells the sign of q: the variance falls to 1 - 2/pi (a half-normal's)
    rng = np.random.default_rng(4)
    q = rng.standard_normal(4000)
    p = np.where(q > 0, 1.0, 0.0)
    res = expected_posterior(q, np.zeros(4000), np.full(4000, 1e3), p, rng=np.random.default_rng(5))
    assert res["variance"][0] == pytest.approx(1 - 2 / np.pi, rel=0.1)


@pytest.fixture(scope="module")
def sweep_fit(tmp_path_factory):
    # three sizes at one horizon and one batch: lr*'s horizon exponent rests on its prior alone
    cells = [(n, 2e9, 1e6) for n in (2e7, 5e7, 1.2e8)]
    df = simulate_sweep(TRUTH, cells, np.exp(np.linspace(-1.5, 2.2, 8)), refs=REFS, seed=3)
    path = tmp_path_factory.mktemp("next") / "sweep.csv"
    df.to_csv(path, index=False)
    points, notes = transfer_points(load_runs(path))
    # the sweep is dense (3 cells x 8 LRs): the fit has cell effects, and next scores each
    # candidate through its own cell's effects
    return path, fit_transfer(points, seed=0, num_warmup=300, num_samples=400, notes=tuple(notes))


def test_a_new_horizon_teaches_most_about_a_longer_target(sweep_fit):
    _, fit = sweep_fit

    def sweep(n, d):
        centre = float(np.median(fit.lr_star(n, d, 1e6)))
        return Candidate(n, d, 1e6, (centre / 2, centre, centre * 2))

    cands = [sweep(1.2e8, 2e9), sweep(2.4e8, 2e9), sweep(1.2e8, 8e9)]
    planned = plan(fit, TARGET)
    res = next_run(planned, cands, seed=0)
    after = dict(zip(res.table["tokens"] * res.table["params"], res.table["lr_sd_after"], strict=True))
    repeat, bigger, longer = (after[c.params * c.tokens] for c in cands)
    # the target is 10x the fitted horizon: a sweep at a new horizon measures the exponent that
    # dominates its uncertainty; more of what was fitted hardly helps
    assert longer < 0.8 * res.lr_sd
    assert longer < min(repeat, bigger)
    assert repeat > 0.9 * res.lr_sd
    assert res.table["regret_after"].max() <= res.regret
    assert not any("no candidate removes" in n for n in res.notes)
    # repeating a fitted cell teaches nothing about lr* 10x beyond: the note says where it lies
    again = next_run(planned, cands[:1], seed=0)
    assert any("no candidate removes more than 1% of lr*'s variance" in n
               and "extrapolation to the target" in n for n in again.notes), again.notes
    # --goal loss ranks by the share of the final loss's variance shed per 1e15 FLOPs
    by_loss = next_run(planned, cands, goal="loss", seed=0).table
    shed = 1 - (by_loss["loss_sd_after"] / res.loss_sd) ** 2
    assert np.allclose(by_loss["value_per_pflop"], shed / (by_loss["flops"] / 1e15))
    assert list(by_loss["value_per_pflop"]) == sorted(by_loss["value_per_pflop"], reverse=True)
    assert res.to_json()["candidates"][0]["params"] == res.table["params"].iloc[0]


def test_cli_next_json_is_reproducible(sweep_fit):
    path, _ = sweep_fit
    args = ["next", str(path), "--params", "1.2e9", "--tokens", "2e10", "--warmup", "100",
            "--samples", "100", "--top", "4", "--json"]
    a, b = (CliRunner().invoke(cli, args) for _ in range(2))
    assert a.exit_code == 0, a.output
    doc = json.loads(a.stdout)
    assert doc == json.loads(b.stdout)
    assert len(doc["candidates"]) == 4
    rates = [c["value_per_pflop"] for c in doc["candidates"]]
    assert rates == sorted(rates, reverse=True)
    assert {"lr_optimum", "log_lr_sd", "regret"} <= set(doc["now"])


@pytest.mark.parametrize("bad", ["0", "2e8,x", "-1e8"])
def test_cli_next_bad_candidates_exit_2(bad, tmp_path):
    res = CliRunner().invoke(cli, ["next", str(tmp_path / "none.csv"), "--params", "1e9",
                                   "--tokens", "1e10", "--sizes", bad])
    assert res.exit_code == 2 and "--sizes" in res.output
