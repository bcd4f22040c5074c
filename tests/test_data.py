import json

import numpy as np
import pandas as pd
import pytest

from lrplan.data import load_runs
from lrplan.errors import DataError


def write(tmp_path, name, df):
    p = tmp_path / name
    if name.endswith(".csv"):
        df.to_csv(p, index=False)
    elif name.endswith(".parquet"):
        df.to_parquet(p, index=False)
    else:
        p.write_text("\n".join(json.dumps(r) for r in df.to_dict("records")))
    return p


def curves():
    rows = []
    for run, final in (("a", 0.1), ("b", 1.0)):
        for s in range(100, 1001, 100):
            rows.append({"run": run, "step": s, "lr": 1e-3 * (1 - (1 - final) * s / 1000), "loss": 4 - s / 1000})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl"])
def test_formats_give_the_same_runs(tmp_path, ext):
    base = load_runs(write(tmp_path, "r.csv", curves()))
    other = load_runs(write(tmp_path, f"r.{ext}", curves()))
    assert [r.name for r in base] == [r.name for r in other] == ["a", "b"]
    for x, y in zip(base, other, strict=True):
        np.testing.assert_array_equal(x.steps, y.steps)
        np.testing.assert_allclose(x.loss, y.loss)
        np.testing.assert_allclose(x.lr, y.lr)
        assert x.total_steps == 1000
    assert base["a"].peak_lr == pytest.approx(1e-3 * 0.91) and base["b"].peak_lr == pytest.approx(1e-3)


def test_meta_schedule_sets_per_step_lr(tmp_path):
    df = curves().drop(columns="lr")
    meta = pd.DataFrame({"run": ["a", "b"], "peak_lr": [1e-3, 2e-3], "warmup_steps": [50, 0],
                         "total_steps": [1000, 1200], "schedule": ["cosine:final=0.1", "constant"],
                         "params": [1e8, 1e8], "tokens_per_step": [5e5, 5e5]})
    rs = load_runs(write(tmp_path, "r.csv", df), meta=write(tmp_path, "m.csv", meta))
    a, b = rs["a"], rs["b"]
    assert a.lr.shape == (1000,) and a.lr[24] == pytest.approx(1e-3 * 25 / 50)
    assert a.lr[-1] == pytest.approx(1e-4)
    assert b.lr.shape == (1200,) and np.all(b.lr == 2e-3)
    assert a.params == 1e8 and b.tokens_per_step == 5e5


def test_interpolated_lr_with_warmup_ramp(tmp_path):
    df = curves()
    df["warmup_steps"] = 50
    a = load_runs(write(tmp_path, "r.csv", df))["a"]
    assert a.lr[0] == pytest.approx(a.peak_lr / 50)
    # between logged steps 100 and 200 the LR is interpolated linearly
    lo, hi = a.lr[99], a.lr[199]
    assert a.lr[149] == pytest.approx((lo + hi) / 2)


def test_final_only_runs(tmp_path):
    df = pd.DataFrame({"run": ["x", "y"], "step": [500, 800], "loss": [3.1, 3.0], "peak_lr": [1e-3, 2e-3]})
    rs = load_runs(write(tmp_path, "r.csv", df))
    assert all(r.final_only for r in rs) and rs["y"].final_loss == 3.0


def test_divergence_is_kept_and_reported(tmp_path):
    df = curves()
    df.loc[(df.run == "b") & (df.step >= 700), "loss"] = np.nan
    df.loc[(df.run == "a") & (df.step == 900), "loss"] = 40.0
    rs = load_runs(write(tmp_path, "r.csv", df))
    assert rs["b"].diverged and rs["b"].diverged_step == 700 and rs["b"].steps.max() == 600
    assert rs["a"].diverged and rs["a"].diverged_step == 900
    assert len(rs) == 2
    assert any("run b: diverged at step 700" in n for n in rs.excluded)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.drop(columns="loss"), r"r\.csv: missing column 'loss'"),
        (lambda d: d.assign(loss=d.loss.astype(object)).pipe(lambda x: x.__setitem__("loss", ["oops"] + list(x.loss[1:])) or x),
         r"r\.csv: column 'loss', run 'a', row 1: 'oops' is not a number"),
        (lambda d: d.assign(step=[0.5] + list(d.step[1:])), r"column 'step', run 'a', row 1"),
        (lambda d: pd.concat([d, d.iloc[[3]]], ignore_index=True), r"column 'step', run 'a', row 21: step 400 logged twice"),
        (lambda d: d.assign(lr=[-1.0] + list(d.lr[1:])), r"column 'lr', run 'a', row 1: negative"),
        (lambda d: d.assign(params=[1e8] * 19 + [2e8]), r"column 'params', run 'b', row 20: value"),
        (lambda d: d.assign(total_steps=500), r"column 'total_steps', run 'a'"),
    ],
)
def test_bad_input_names_file_column_run_row(tmp_path, mutate, match):
    p = write(tmp_path, "r.csv", mutate(curves()))
    with pytest.raises(DataError, match=match):
        load_runs(p)


def test_unknown_extension_and_missing_file(tmp_path):
    p = tmp_path / "r.txt"
    p.write_text("run,step,loss\n")
    with pytest.raises(DataError, match="use .csv, .parquet or .jsonl"):
        load_runs(p)
    with pytest.raises(DataError, match="no such file"):
        load_runs(tmp_path / "nope.csv")


def test_bad_schedule_in_meta(tmp_path):
    meta = pd.DataFrame({"run": ["a", "b"], "schedule": ["cosine:wat=1", "constant"], "peak_lr": [1e-3, 1e-3]})
    with pytest.raises(DataError, match=r"m\.csv|r\.csv"):
        load_runs(write(tmp_path, "r.csv", curves().drop(columns="lr")), meta=write(tmp_path, "m.csv", meta))
