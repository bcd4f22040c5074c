import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from lrplan.budget.decide import step_law_batch
from lrplan.cli import cli
from lrplan.data import load_runs
from lrplan.evaluate.simulate import simulate_sweep
from lrplan.transfer.batch import batch_identified, plan_batch, render_batch_text
from lrplan.transfer.fit import fit_transfer, transfer_points

# the transfer law with a batch term: at a fixed token count the loss is worst far from
# B* = 5e5 (D / 2e9)^0.5 tokens
TRUTH = dict(E=1.9, A=0.6, a=0.34, B=0.5, b=0.28, log_lr0=np.log(2e-3), c_n=-0.6, c_d=-0.3,
             c_b=0.4, kappa=0.04, asym=0.0, skew=1.0, k_anneal=0.1, div_offset=1.5, div_width=0.3,
             sigma=0.005, g_b=0.01, b_opt=0.0, b_d=0.5)
REFS = (1e8, 2e9, 5e5)
CELLS = [(n, d, b) for n in (2e7, 5e7) for d in (5e8, 2e9) for b in (1.25e5, 5e5, 2e6)]


def true_batch(tokens):
    return REFS[2] * np.exp(TRUTH["b_opt"] + TRUTH["b_d"] * np.log(tokens / REFS[1]))


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
    df = simulate_sweep(TRUTH, CELLS, np.exp(np.linspace(-1.5, 1.5, 5)), refs=REFS, seed=2)
    path = tmp_path_factory.mktemp("batch") / "sweep.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def fitted(sweep_file):
    points, notes = transfer_points(load_runs(sweep_file))
    return fit_transfer(points, seed=0, num_warmup=300, num_samples=300, notes=tuple(notes))


def test_batch_recovers_the_true_optimum_and_prices_other_batches(fitted):
    assert batch_identified(fitted)
    tokens = 4e9
    bp = plan_batch(fitted, 1e8, tokens, compare=(3e4, true_batch(tokens)))
    lo, hi = np.quantile(bp.batch_star, [0.025, 0.975])
    assert lo <= true_batch(tokens) <= hi
    assert abs(np.log(bp.recommended / true_batch(tokens))) < np.log(2)
    far, near = bp.compare[3e4], bp.compare[float(true_batch(tokens))]
    assert far.mean() > 0.005 and far.mean() > 5 * abs(near.mean())
    # a larger batch wants a larger LR (c_b > 0)
    assert np.median(bp.compare_lr[float(true_batch(tokens))]) > np.median(bp.compare_lr[3e4])
    doc = bp.to_json()
    assert doc["identified"] and doc["compare"][0]["excess_loss"]["mean"] > 0
    assert "transfer law" in render_batch_text(bp)


def test_one_batch_per_size_falls_back_to_the_step_law_prior(fitted):
    blind = replace(fitted, samples={k: v for k, v in fitted.samples.items()
                                     if k not in ("g_b", "b_opt", "b_d")})
    bp = plan_batch(blind, 1e8, 4e9, compare=(5e5,))
    assert not bp.identified and bp.loss is None
    assert bp.recommended == pytest.approx(step_law_batch(4e9))
    assert 1.5 < np.exp(np.std(np.log(bp.batch_star))) < 2.5  # the prior's spread
    assert bp.compare[5e5] is None and bp.to_json()["compare"][0]["excess_loss"] is None
    assert any("not identified" in n for n in bp.notes)


def test_plan_batch_auto_json(sweep_file, tmp_path):
    args = ["plan", str(sweep_file), "--params", "1e8", "--tokens", "4e9", "--tokens-per-step", "3e4",
            "--batch", "auto", "--warmup", "100", "--samples", "100", "--json",
            "--report", str(tmp_path / "p.md")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["target"]["tokens_per_step"] == pytest.approx(doc["batch"]["recommended"])
    assert doc["batch"]["identified"] is True
    assert doc["batch"]["compare"][0]["tokens_per_step"] == 3e4
    assert set(doc["batch"]["optimum"]["quantiles"]) == {"0.025", "0.1", "0.5", "0.9", "0.975"}
    assert "## Batch" in (tmp_path / "p.md").read_text()


def test_budget_from_a_transfer_fit_uses_its_lr_and_batch_laws(fitted):
    from lrplan import budget as bu
    from lrplan.evaluate.simulate import true_params_optimum

    pts = bu.points_from_frame(fitted.points[fitted.points["final"] & ~fitted.points["diverged"]])[0]
    law = bu.law_from_transfer(fitted, pts)
    flops = 1e18
    res = bu.decide_budget(law, flops, drift=bu.prior_drift(bu.load_priors("budget")), seed=0)
    raw = {"E": TRUTH["E"], "A": TRUTH["A"] * REFS[0] ** TRUTH["a"], "a": TRUTH["a"],
           "B": TRUTH["B"] * REFS[1] ** TRUTH["b"], "b": TRUTH["b"]}
    lo, hi = np.quantile(res.params_star, [0.025, 0.975])
    assert lo <= true_params_optimum(raw, flops) <= hi
    assert res.lr_source == "transfer" and res.batch_source == "transfer"
    tokens = float(res.tokens(res.recommended))
    assert np.median(res.batch_star) == pytest.approx(
        np.median(fitted.config.b0 * np.exp(fitted.flat("b_opt") + fitted.flat("b_d")
                                            * np.log(tokens / fitted.config.d0))))
