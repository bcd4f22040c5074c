import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lrplan.cli import cli
from lrplan.data import load_runs
from lrplan.evaluate import backtest
from lrplan.evaluate.simulate import simulate_curves
from lrplan.examples import example_path


def _sweep():
    rows = []
    for n in (1e8, 3e8, 1e9):
        for d in (1e9, 1e10):
            star = 0.01 * (n / 1e8) ** -0.5 * (d / 1e9) ** -0.3
            for lr in star * 2.0 ** np.arange(-3, 4):
                loss = 3.0 + 0.04 * np.log(lr / star) ** 2
                rows.append({"params": n, "tokens": d, "tokens_per_step": 1e6, "lr": lr, "loss": loss,
                             "diverged": False})
            rows.append({"params": n, "tokens": d, "tokens_per_step": 1e6, "lr": star * 16,
                         "loss": np.nan, "diverged": True})
    return pd.DataFrame(rows)


def test_backtest_sweep_scores_baselines_and_a_recommender():
    truth = lambda n, d: 0.01 * (n / 1e8) ** -0.5 * (d / 1e9) ** -0.3  # noqa: E731

    def recommend(train, cells):
        assert train["params"].max() <= 3e8 and cells["params"].min() > 3e8
        lr = truth(cells["params"], cells["tokens"])
        return pd.DataFrame({"lr": lr, "lr_lo": lr / 1.5, "lr_hi": lr * 1.5})

    res = backtest.backtest_sweep(_sweep(), "size:3e8", recommend=recommend)
    s = res.summary.set_index("method")
    assert list(s.index) == ["step_law", "bjorck", "nearest", "lrplan"]
    assert (s["cells"] == 2).all()
    # the data follow an exact power law: the fitted rules and the oracle recover the optimum
    for m in ("step_law", "bjorck", "lrplan"):
        assert s.loc[m, "mean_abs_log_ratio"] < 1e-6, m
        assert abs(s.loc[m, "mean_rel_excess"]) < 1e-6
    assert s.loc["lrplan", "opt_in_interval"] == 1.0 and np.isnan(s.loc["step_law", "opt_in_interval"])
    # the nearest cell (N=3e8) recommends too high an LR for N=1e9: ln(sqrt(1e9/3e8))
    assert s.loc["nearest", "median_log_ratio"] == pytest.approx(0.5 * np.log(1e9 / 3e8), rel=1e-6)
    assert s.loc["nearest", "mean_rel_excess"] > 1e-4
    assert json.dumps(backtest.to_json(res), allow_nan=False)


def _curve_runs(tmp_path):
    truth = {"L0": 2.6, "A": 0.8, "alpha": 0.45, "C": 0.3}
    runs, meta = simulate_curves("annealing", truth,
                                 {"cosine": "cosine:final=0.1", "constant": "constant",
                                  "wsd": "wsd:decay=0.2"},
                                 steps=4000, peak_lr=1e-3, warmup_steps=200, every=100, noise=0.0)
    runs.to_csv(tmp_path / "r.csv", index=False)
    meta.to_csv(tmp_path / "m.csv", index=False)
    return load_runs(tmp_path / "r.csv", meta=tmp_path / "m.csv")


def test_backtest_curves_baselines_on_noiseless_curves(tmp_path):
    res = backtest.backtest_curves(_curve_runs(tmp_path), "schedule:wsd", law="annealing",
                                   methods=("huber", "nearest"), n_boot=5)
    pr = res.per_run.set_index("method")
    assert list(pr["run"]) == ["wsd", "wsd"]
    assert pr.loc["huber", "mean_rel_err"] < 1e-4  # the law is exact: the point fit transfers
    assert pr.loc["nearest", "mean_rel_err"] > 10 * pr.loc["huber", "mean_rel_err"]
    assert np.isnan(pr.loc["nearest", "cover95"])
    assert np.isnan(pr.loc["nearest", "final_in95"])
    assert {pr.loc["huber", f"final_in{lv}"] for lv in (50, 80, 95)} <= {0.0, 1.0}
    assert set(res.timings) == {"huber", "nearest"}
    md = backtest.to_markdown(res)
    assert "| huber |" in md and "schedule:wsd" in md


def test_write_report_is_atomic_and_complete(tmp_path):
    path = tmp_path / "r.md"
    backtest.write_report(path, "# x\n")
    assert path.read_text() == "# x\n" and len(list(tmp_path.iterdir())) == 1


def test_cli_backtest_sweep_json(tmp_path):
    df = _sweep().reset_index(drop=True)
    runs = pd.DataFrame({"run": [f"r{i}" for i in range(len(df))], "step": 1000,
                         "loss": df["loss"], "params": df["params"],
                         "tokens_per_step": df["tokens"] / 1000, "peak_lr": df["lr"]})
    runs.to_csv(tmp_path / "sweep.csv", index=False)
    res = CliRunner().invoke(cli, ["backtest", str(tmp_path / "sweep.csv"), "--holdout", "size:3e8",
                                   "--warmup", "100", "--samples", "100", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["kind"] == "sweep" and {r["method"] for r in doc["summary"]} == {
        "step_law", "bjorck", "nearest", "lrplan"}


def test_cli_backtest_bad_holdout_exits_2(tmp_path):
    res = CliRunner().invoke(cli, ["backtest", str(example_path("olmo-ladder", "runs.csv")),
                                   "--meta", str(example_path("olmo-ladder", "meta.csv")),
                                   "--holdout", "size:1e15"])
    assert res.exit_code == 2 and "holds out no" in res.output


def test_cli_backtest_olmo_end_to_end(tmp_path):
    report = tmp_path / "bt.md"
    res = CliRunner().invoke(cli, [
        "backtest", str(example_path("olmo-ladder", "runs.csv")),
        "--meta", str(example_path("olmo-ladder", "meta.csv")),
        "--holdout", "size:4e8;horizon:ratio=15", "--law", "annealing", "--chains", "1",
        "--warmup", "50", "--samples", "50", "--bootstrap", "4", "--report", str(report), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["folds"][0]["fit"] == ["190M-0.5xC", "370M-0.5xC"]
    assert len(doc["folds"][0]["predict"]) == 23
    summary = {r["method"]: r for r in doc["summary"]}
    assert set(summary) == {"lrplan", "huber", "nearest"}
    assert all(summary[m]["runs"] == 23 for m in summary)
    # a size-and-horizon extrapolation: errors are finite and below 50%
    assert all(0 < summary[m]["mean_rel_err"] < 0.5 for m in summary)
    assert 0 <= summary["lrplan"]["cover95"] <= 1
    # the summary's final-loss coverage is the share of held-out runs whose last loss is inside
    inside = [r["final_in95"] for r in doc["runs"] if r["method"] == "lrplan"]
    assert set(inside) <= {0.0, 1.0}
    assert summary["lrplan"]["final_in95"] == pytest.approx(np.mean(inside))
    assert "| lrplan |" in report.read_text()


@pytest.mark.slow  # the CLI's sweep backtest runs the same path by default
def test_sweep_backtest_scores_lrplan_beside_the_baselines():
    from lrplan.evaluate.backtest import backtest_sweep, sweep_frame, transfer_recommender
    from lrplan.examples import sweep_example

    res = backtest_sweep(sweep_frame(sweep_example()), "size:5e7",
                         recommend=transfer_recommender(seed=0, num_warmup=150, num_samples=150))
    per = res.per_run.set_index("method")
    assert set(per.index) == {"step_law", "bjorck", "nearest", "lrplan"}
    lr = per.loc["lrplan"]
    # the bundled sweep is drawn from the transfer law: lrplan lands near each cell's optimum
    assert np.all(np.abs(lr["log_ratio"]) < 0.4) and np.all(lr["rel_excess"] < 0.005)


def _sized_runs(tmp_path, noise=0.002):
    """Two schedules at each of four sizes: `size:rolling` makes two folds."""
    parts = [simulate_curves("annealing", {"L0": 2.2 + 0.4 * (3 - i), "A": 0.8, "alpha": 0.45, "C": 0.3},
                             {f"{n:.0e}-cos": "cosine:final=0.1", f"{n:.0e}-const": "constant"},
                             steps=3000, peak_lr=1e-3, warmup_steps=200, every=100, noise=noise,
                             params=n, tokens_per_step=1e5, seed=i)
             for i, n in enumerate((1e7, 3e7, 1e8, 3e8))]
    pd.concat([p[0] for p in parts]).to_csv(tmp_path / "r.csv", index=False)
    pd.concat([p[1] for p in parts]).to_csv(tmp_path / "m.csv", index=False)
    return load_runs(tmp_path / "r.csv", meta=tmp_path / "m.csv")


def _same_tables(a, b):
    assert len(a.folds) == len(b.folds) >= 2
    pd.testing.assert_frame_equal(a.per_run, b.per_run)
    pd.testing.assert_frame_equal(a.summary, b.summary)
    assert a.notes == b.notes and a.folds == b.folds


def test_backtest_folds_in_two_processes_give_the_serial_tables(tmp_path):
    runs = _sized_runs(tmp_path)
    kw = dict(law="annealing", methods=("huber", "nearest"), n_boot=2, seed=3)
    serial = backtest.backtest_curves(runs, "size:rolling", **kw)
    parallel = backtest.backtest_curves(runs, "size:rolling", jobs=2, **kw)
    _same_tables(serial, parallel)
    assert serial.per_run["mean_rel_err"].notna().all()


def test_backtest_folds_on_a_local_dask_cluster_give_the_serial_tables(tmp_path):
    distributed = pytest.importorskip("distributed")
    runs = _sized_runs(tmp_path)
    kw = dict(law="annealing", methods=("huber", "nearest"), n_boot=2, seed=3)
    serial = backtest.backtest_curves(runs, "size:rolling", **kw)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        remote = backtest.backtest_curves(runs, "size:rolling", executor=client.get_executor(), **kw)
    _same_tables(serial, remote)


@pytest.mark.slow
def test_lrplan_backtest_in_two_processes_gives_the_serial_tables(tmp_path):
    runs = _sized_runs(tmp_path)
    kw = dict(law="annealing", methods=("lrplan",), chains=2, num_warmup=100, num_samples=100, seed=1)
    serial = backtest.backtest_curves(runs, "size:rolling", **kw)
    parallel = backtest.backtest_curves(runs, "size:rolling", jobs=2, **kw)
    _same_tables(serial, parallel)
