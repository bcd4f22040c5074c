import json

import pandas as pd
import pytest
from click.testing import CliRunner

from lrplan.cli import cli
from lrplan.evaluate.simulate import simulate_curves

TRUTH = dict(L0=2.9, A=0.9, alpha=0.5, C=0.25)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    runs, meta = simulate_curves("annealing", TRUTH, {"cos": "cosine:final=0.1", "const": "constant"},
                                 steps=4000, peak_lr=1e-3, warmup_steps=100, every=100, seed=0,
                                 params=1e8, tokens_per_step=5e5)
    runs.to_csv(d / "runs.csv", index=False)
    meta.to_csv(d / "meta.csv", index=False)
    return d


@pytest.fixture(scope="module")
def fit_file(files):
    out = files / "fit.nc"
    res = CliRunner().invoke(cli, ["fit", str(files / "runs.csv"), "--meta", str(files / "meta.csv"),
                                   "--law", "annealing", "--warmup", "100", "--samples", "150",
                                   "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["runs"] == 2 and set(doc["diagnostics"]) == {"status", "r_hat_max", "ess_bulk_min", "ess_tail_min", "divergences", "misfit"}
    return out


def test_predict_json_contract(fit_file, files):
    args = ["predict", str(fit_file), "--schedule", "wsd:decay=0.2", "--steps", "6000",
            "--peak-lr", "1e-3", "--warmup-steps", "100", "--at-steps", "1000,3000,6000", "--json"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert set(doc) >= {"target", "curve", "final_loss", "diagnostics"}
    assert doc["curve"]["step"] == [1000, 3000, 6000]
    qs = doc["curve"]["quantiles"]
    assert set(qs) == {"0.025", "0.1", "0.5", "0.9", "0.975"}
    assert all(qs["0.025"][i] < doc["curve"]["mean"][i] < qs["0.975"][i] for i in range(3))
    assert doc["curve"]["mean"][0] > doc["curve"]["mean"][2]
    assert doc["final_loss"]["mean"] == pytest.approx(doc["curve"]["mean"][-1])
    # same seed, same answer, byte for byte
    assert CliRunner().invoke(cli, args).stdout == res.stdout


def test_predict_from_lr_file_matches_spec(fit_file, files):
    lr_path = files / "lr.csv"
    res = CliRunner().invoke(cli, ["schedule", "cosine:final=0.1", "--steps", "5000", "--peak-lr", "1e-3",
                                   "--warmup-steps", "100", "-o", str(lr_path)])
    assert res.exit_code == 0 and pd.read_csv(lr_path).shape == (5000, 2)
    a = CliRunner().invoke(cli, ["predict", str(fit_file), "--lr-file", str(lr_path), "--at-steps", "5000", "--json"])
    b = CliRunner().invoke(cli, ["predict", str(fit_file), "--schedule", "cosine:final=0.1", "--steps", "5000",
                                 "--peak-lr", "1e-3", "--warmup-steps", "100", "--at-steps", "5000", "--json"])
    da, db = json.loads(a.stdout), json.loads(b.stdout)
    assert da["target"]["warmup_steps"] == 100
    assert da["final_loss"]["mean"] == pytest.approx(db["final_loss"]["mean"], rel=1e-9)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["fit", "{d}/nope.csv", "-o", "{d}/x.nc"], "nope.csv: no such file"),
        (["predict", "{d}/runs.csv", "--schedule", "constant", "--steps", "10", "--peak-lr", "1e-3"], "not an lrplan fit file"),
        (["schedule", "cosine:bogus=1", "--steps", "10", "--peak-lr", "1e-3", "-o", "{d}/s.csv"], "bogus"),
        (["predict", "{d}/fit.nc", "--schedule", "constant", "--steps", "10", "--peak-lr", "1e-3",
          "--at-steps", "20"], "step 20 is outside"),
        (["fit"], "Missing argument 'RUNS'"),
    ],
)
def test_errors_are_one_line_exit_2(files, fit_file, args, match):
    res = CliRunner().invoke(cli, [a.format(d=files) for a in args])
    assert res.exit_code == 2
    assert match in res.stderr and "Traceback" not in res.output
    assert len(res.stderr.strip().splitlines()) == 1


def test_bad_runs_file_exit_2(files):
    bad = files / "bad.csv"
    bad.write_text("run,step,loss\na,1,3.0\na,two,2.9\n")
    res = CliRunner().invoke(cli, ["fit", str(bad), "-o", str(files / "y.nc")])
    assert res.exit_code == 2
    assert "bad.csv: column 'step', run 'a', row 2" in res.stderr


def test_no_usable_run_says_why(files):
    bad = files / "diverged.csv"
    bad.write_text("run,step,loss,lr\na,1,3.0,1e-3\na,2,,1e-3\na,3,2.8,1e-3\n")
    res = CliRunner().invoke(cli, ["fit", str(bad), "-o", str(files / "y.nc")])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "run a: diverged at step 2" in res.stderr


@pytest.mark.parametrize("diag, says", [
    ((1.005, 800, 0), ["(ok)"]),
    ((1.05, 60, 0), ["not mixed", "--warmup"]),
    ((1.005, 800, 3), ["divergent"]),
])
def test_diagnostics_line_says_what_to_do(diag, says):
    from lrplan.bayes import Diagnostics
    from lrplan.cli.render import diag_line

    line = diag_line(Diagnostics(*diag))
    assert all(s in line for s in says), line
    assert ("WARNING" in line) == (diag != (1.005, 800, 0))


def test_wsd_cooldowns_logged_as_segments_fit_and_predict_a_later_cooldown(tmp_path):
    # The README's WSD workflow: a constant run, and cooldowns logged from their branch point
    # on with a parent; predict a cooldown at a later step and check it against the truth.
    spec = "wsd:decay=0.2"
    runs, meta = [], []
    for name, sched, steps, seed in (("const", "constant", 6000, 1), ("c2k", spec, 2000, 2),
                                     ("c4k", spec, 4000, 3), ("c6k", spec, 6000, 4)):
        r, m = simulate_curves("annealing", TRUTH, {name: sched}, steps=steps, peak_lr=1e-3,
                               warmup_steps=100, every=100, noise=0.001, seed=seed, params=1e8,
                               tokens_per_step=5e5)
        if name != "const":
            r = r[r.step > 0.8 * steps]  # only the cooldown is logged
            m = m[["run"]].assign(parent="const")
        runs.append(r)
        meta.append(m)
    truth = runs.pop()
    meta.pop()
    pd.concat(runs).to_csv(tmp_path / "runs.csv", index=False)
    pd.concat(meta).to_csv(tmp_path / "meta.csv", index=False)
    res = CliRunner().invoke(cli, ["fit", str(tmp_path / "runs.csv"), "--meta", str(tmp_path / "meta.csv"),
                                   "--law", "annealing", "--warmup", "150", "--samples", "200",
                                   "-o", str(tmp_path / "wsd.nc"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["runs"] == 3 and doc["groups"] == 1
    assert "run c2k: 16 row(s) of parent const before step 1700 taken as its own" in doc["notes"]
    res = CliRunner().invoke(cli, ["predict", str(tmp_path / "wsd.nc"), "--schedule", spec, "--steps", "6000",
                                   "--peak-lr", "1e-3", "--warmup-steps", "100", "--params", "1e8",
                                   "--json"])
    assert res.exit_code == 0, res.output
    final = json.loads(res.stdout)["final_loss"]
    y = float(truth.loss.iloc[-1])
    assert final["quantiles"]["0.025"] < y < final["quantiles"]["0.975"]
    assert abs(final["mean"] / y - 1) < 0.005
