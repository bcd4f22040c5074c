import json
import math

import numpy as np
import pandas as pd
import pytest

from lrplan.data import EXTENSIONS, Run, RunSet, load_runs, read_table
from lrplan.errors import DataError
from lrplan.schedules import lr_schedule


def write(tmp_path, name, df):
    p = tmp_path / name
    if name.endswith(".csv"):
        df.to_csv(p, index=False)
    elif name.endswith((".parquet", ".pq")):
        df.to_parquet(p, index=False)
    else:
        recs = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                for r in df.to_dict("records")]
        p.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return p


def curves():
    """Two runs logged every 100 steps; 'a' decays linearly to 10% of the peak, 'b' is constant."""
    rows = []
    for run, final in (("a", 0.1), ("b", 1.0)):
        for s in range(100, 1001, 100):
            rows.append({"run": run, "step": s, "lr": 1e-3 * (1 - (1 - final) * s / 1000),
                         "loss": 4 - s / 1000, "tokens": s * 4096.0})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ formats


@pytest.mark.parametrize("ext", ["parquet", "pq", "jsonl", "ndjson"])
def test_formats_give_identical_runs(tmp_path, ext):
    df = curves()
    df.loc[(df.run == "b") & (df.step == 1000), "loss"] = np.nan
    df["params"] = np.where(df.run == "a", 1e8, 2e8)
    df["schedule"] = None
    df.loc[df.run == "b", "schedule"] = "constant"
    base = load_runs(write(tmp_path, "r.csv", df))
    other = load_runs(write(tmp_path, f"r.{ext}", df))
    assert base.names == other.names == ("a", "b")
    assert base.runs == other.runs
    assert base.excluded == other.excluded
    assert other.source.endswith(f"r.{ext}")
    a = base["a"]
    assert a.steps.dtype == np.int64 and a.loss.dtype == np.float64
    assert a.total_steps == 1000 and a.warmup_steps == 0 and a.schedule is None
    assert a.peak_lr == pytest.approx(1e-3 * 0.91) and base["b"].peak_lr == pytest.approx(1e-3)
    assert a.tokens_per_step == pytest.approx(4096.0) and a.params == 1e8
    assert base["b"].schedule == "constant" and base[1] is base["b"]


def test_runs_keep_file_order_and_rows_are_sorted(tmp_path):
    df = curves().sample(frac=1.0, random_state=0)
    first = df.run.iloc[0]
    rs = load_runs(write(tmp_path, "r.csv", df))
    assert rs.names[0] == first and len(rs) == 2
    for r in rs:
        assert np.all(np.diff(r.steps) > 0)
    np.testing.assert_allclose(rs["a"].loss, 4 - rs["a"].steps / 1000)


def test_integer_run_ids_read_as_text(tmp_path):
    df = curves().assign(run=lambda d: np.where(d.run == "a", 7, 8))
    for ext in ("csv", "jsonl", "parquet"):
        assert load_runs(write(tmp_path, f"r.{ext}", df)).names == ("7", "8")


def test_to_frame_one_row_per_run(tmp_path):
    df = curves()
    df.loc[df.run == "b", "loss"] = df.loc[df.run == "b", "loss"] * np.r_[[1.0] * 9, 5.0]  # 15: explodes, still physical
    f = load_runs(write(tmp_path, "r.csv", df)).to_frame()
    assert list(f.run) == ["a", "b"]
    assert list(f.n_points) == [10, 10]
    assert f.final_loss.iloc[0] == pytest.approx(3.0)
    assert list(f.diverged) == [False, True] and f.diverged_step.iloc[1] == 1000
    assert pd.isna(f.diverged_step.iloc[0])
    for c in ("params", "tokens_per_step", "peak_lr", "warmup_steps", "total_steps", "schedule",
              "final_only", "has_lr"):
        assert c in f.columns


def test_getitem_unknown_name(tmp_path):
    rs = load_runs(write(tmp_path, "r.csv", curves()))
    with pytest.raises(KeyError, match="runs: a, b"):
        rs["zzz"]


# ------------------------------------------------------------------ metadata


def meta_frame():
    return pd.DataFrame({"run": ["a", "b"], "peak_lr": [1e-3, 2e-3], "warmup_steps": [50, 0],
                         "total_steps": [1000, 1200], "schedule": ["cosine:final=0.1", "constant"],
                         "params": [1e8, 1e8], "tokens_per_step": [5e5, 5e5]})


@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl"])
def test_meta_join_and_schedule_lr(tmp_path, ext):
    df = curves().drop(columns=["lr", "tokens"])
    rs = load_runs(write(tmp_path, "r.csv", df), meta=write(tmp_path, f"m.{ext}", meta_frame()))
    a, b = rs["a"], rs["b"]
    assert a.lr.shape == (1000,) and b.lr.shape == (1200,)
    np.testing.assert_allclose(a.lr, lr_schedule("cosine:final=0.1", steps=1000, peak_lr=1e-3, warmup_steps=50))
    assert a.lr[24] == pytest.approx(1e-3 * 25 / 50) and a.lr[49] == pytest.approx(1e-3)
    assert a.lr[-1] == pytest.approx(1e-4)
    assert np.all(b.lr == 2e-3)
    assert (a.params, b.tokens_per_step, a.warmup_steps, b.total_steps) == (1e8, 5e5, 50, 1200)
    assert rs.excluded == ()


def test_meta_unmatched_runs_are_notes(tmp_path):
    meta = meta_frame().iloc[[0]]
    meta = pd.concat([meta, meta.assign(run="ghost")], ignore_index=True)
    rs = load_runs(write(tmp_path, "r.csv", curves()), meta=write(tmp_path, "m.csv", meta))
    notes = "\n".join(rs.excluded)
    assert "m.csv: 1 run(s) without rows in the runs file ignored: ghost" in notes
    assert any(n.startswith(str(tmp_path / "m.csv") + ": no metadata row for 1 run(s)") and n.endswith(": b") for n in rs.excluded)
    assert rs["b"].params is None and rs["b"].schedule is None
    assert rs["b"].lr is not None  # from the lr column


def test_meta_and_runs_file_may_agree_but_not_conflict(tmp_path):
    df = curves().assign(params=1e8)
    meta = meta_frame()
    rs = load_runs(write(tmp_path, "r.csv", df), meta=write(tmp_path, "m.csv", meta))
    assert rs["a"].params == 1e8
    meta.loc[1, "params"] = 3e8
    with pytest.raises(DataError, match=r"m\.csv: column 'params', run 'b', row 2: 300000000 differs from 100000000 in row 11 of .*r\.csv"):
        load_runs(write(tmp_path, "r.csv", df), meta=write(tmp_path, "m.csv", meta))


def test_meta_errors_name_the_meta_file(tmp_path):
    runs = write(tmp_path, "r.csv", curves())
    with pytest.raises(DataError, match=r"m\.csv: column 'run', run 'a', row 2: run listed again \(first in row 1\)"):
        load_runs(runs, meta=write(tmp_path, "m.csv", meta_frame().assign(run=["a", "a"])))
    with pytest.raises(DataError, match=r"m\.csv: missing column 'run' \(found: 'name'"):
        load_runs(runs, meta=write(tmp_path, "m.csv", pd.DataFrame({"name": ["a"], "params": [1.0]})))
    with pytest.raises(DataError, match=r"m\.csv: column 'params', run 'b', row 2: must be a number > 0, got -1"):
        load_runs(runs, meta=write(tmp_path, "m.csv", meta_frame().assign(params=[1e8, -1.0])))
    with pytest.raises(DataError, match=r"m\.csv: column 'schedule', run 'a', row 1: .*wat"):
        load_runs(runs, meta=write(tmp_path, "m.csv", meta_frame().assign(schedule=["cosine:wat=1", "constant"])))
    with pytest.raises(DataError, match=r"m\.csv: column 'peak_lr', run 'b', row 2: 'big' is not a number"):
        load_runs(runs, meta=write(tmp_path, "m.csv", meta_frame().assign(peak_lr=["1e-3", "big"])))


# ------------------------------------------------------------------ per-step LR


def test_interpolated_lr_column(tmp_path):
    a = load_runs(write(tmp_path, "r.csv", curves()))["a"]
    assert a.lr.shape == (1000,)
    # before the first logged step, without warmup, the first logged LR is held
    assert a.lr[0] == a.lr[99] == pytest.approx(1e-3 * (1 - 0.9 * 0.1))
    # between logged steps 100 and 200 the LR is linear
    assert a.lr[149] == pytest.approx(1e-3 * (1 - 0.9 * 0.15))
    assert a.lr[999] == pytest.approx(1e-4)


def test_interpolated_lr_holds_last_value_up_to_total_steps(tmp_path):
    df = curves().assign(total_steps=1500)
    b = load_runs(write(tmp_path, "r.csv", df))["b"]
    assert b.lr.shape == (1500,) and b.total_steps == 1500
    assert np.all(b.lr[999:] == b.lr[999])


def test_warmup_ramp_before_the_first_logged_step(tmp_path):
    df = curves().assign(warmup_steps=40, peak_lr=2e-3)
    a = load_runs(write(tmp_path, "r.csv", df))["a"]
    assert a.warmup_steps == 40
    s = np.arange(1, 41)
    np.testing.assert_allclose(a.lr[:40], 2e-3 * s / 40)
    # steps 41..100 go linearly from the peak at step 40 to the logged LR at step 100
    lr100 = 1e-3 * (1 - 0.9 * 0.1)
    assert a.lr[99] == pytest.approx(lr100)
    assert a.lr[69] == pytest.approx(2e-3 + (lr100 - 2e-3) * 30 / 60)


def test_logged_lr_inside_warmup_is_used(tmp_path):
    df = pd.DataFrame({"run": "w", "step": [5, 10, 20], "lr": [0.5e-3, 1e-3, 1e-3],
                       "loss": [5.0, 4.5, 4.0], "warmup_steps": 10})
    w = load_runs(write(tmp_path, "r.csv", df))["w"]
    np.testing.assert_allclose(w.lr[:10], 1e-3 * np.arange(1, 11) / 10)
    assert w.peak_lr == 1e-3 and w.steps.tolist() == [5, 10, 20]  # warmup rows are kept


def test_schedule_wins_over_lr_column_and_disagreement_is_noted(tmp_path):
    df = curves()
    df["schedule"] = "constant"
    df["peak_lr"] = 1e-3
    rs = load_runs(write(tmp_path, "r.csv", df))
    assert np.all(rs["a"].lr == 1e-3) and np.all(rs["b"].lr == 1e-3)
    assert any(n.startswith("run a: the logged lr differs from schedule 'constant'") for n in rs.excluded)
    assert not any(n.startswith("run b:") for n in rs.excluded)


def test_schedule_without_peak_lr_takes_the_peak_from_the_lr_column(tmp_path):
    df = curves().assign(schedule="linear:final=0.1")
    a = load_runs(write(tmp_path, "r.csv", df))["a"]
    assert a.peak_lr == pytest.approx(0.91e-3)
    np.testing.assert_allclose(a.lr, lr_schedule("linear:final=0.1", steps=1000, peak_lr=0.91e-3))


def test_schedule_warmup_key_sets_warmup_steps(tmp_path):
    df = curves().drop(columns="lr").assign(schedule="cosine:warmup=20", peak_lr=1e-3)
    a = load_runs(write(tmp_path, "r.csv", df))["a"]
    assert a.warmup_steps == 20 and a.lr[9] == pytest.approx(0.5e-3)
    with pytest.raises(DataError, match=r"r\.csv: column 'schedule', run 'a', row 1: warmup=20 .* warmup_steps 30"):
        load_runs(write(tmp_path, "r.csv", df.assign(warmup_steps=30)))


def test_no_lr_information_gives_none(tmp_path):
    df = curves().drop(columns=["lr", "tokens"])
    rs = load_runs(write(tmp_path, "r.csv", df))
    assert rs["a"].lr is None and rs["a"].peak_lr is None and rs["a"].tokens_per_step is None
    rs = load_runs(write(tmp_path, "r.csv", df.assign(schedule="cosine")))
    assert rs["a"].lr is None and rs["a"].schedule == "cosine"
    assert any("schedule 'cosine' given but no peak_lr" in n for n in rs.excluded)


def test_sparse_lr_column(tmp_path):
    df = curves()
    df.loc[df.step % 500 != 0, "lr"] = np.nan
    a = load_runs(write(tmp_path, "r.csv", df))["a"]
    assert a.lr[499] == pytest.approx(1e-3 * 0.55) and a.lr[0] == pytest.approx(1e-3 * 0.55)
    assert a.lr[749] == pytest.approx((0.55e-3 + 0.1e-3) / 2)


# ------------------------------------------------------------------ final-only and divergence


def test_final_only_runs(tmp_path):
    df = pd.DataFrame({"run": ["x", "y"], "step": [500, 800], "loss": [3.1, 3.0], "peak_lr": [1e-3, 2e-3],
                       "schedule": "cosine", "tokens": [500 * 1024.0, 800 * 2048.0]})
    rs = load_runs(write(tmp_path, "r.csv", df))
    assert all(r.final_only for r in rs)
    y = rs["y"]
    assert y.final_loss == 3.0 and y.total_steps == 800 and y.tokens_per_step == 2048.0
    np.testing.assert_allclose(y.lr, lr_schedule("cosine", steps=800, peak_lr=2e-3))
    assert not load_runs(write(tmp_path, "r.csv", curves()))["a"].final_only


def test_nan_loss_marks_divergence_run_kept(tmp_path):
    df = curves()
    df.loc[(df.run == "b") & (df.step >= 700), "loss"] = [np.nan, np.inf, np.nan, -np.inf]
    rs = load_runs(write(tmp_path, "r.csv", df))
    b = rs["b"]
    assert len(rs) == 2 and b.diverged and b.diverged_step == 700
    assert b.steps.tolist() == [100, 200, 300, 400, 500, 600] and b.final_loss == pytest.approx(3.4)
    assert "run b: 4 row(s) with non-finite loss (from step 700) not fitted; treated as divergence, run kept" in rs.excluded
    assert not rs["a"].diverged and rs["a"].diverged_step is None


def test_exploding_loss_marks_divergence_but_is_kept(tmp_path):
    df = curves()
    df.loc[(df.run == "a") & (df.step == 900), "loss"] = 3.9 * 1.5 + 0.01
    df.loc[(df.run == "b") & (df.step == 300), "loss"] = 3.9 * 1.5 - 0.01  # a spike, not above 1.5x
    rs = load_runs(write(tmp_path, "r.csv", df))
    a = rs["a"]
    assert a.diverged and a.diverged_step == 900 and a.n_points == 10
    assert not rs["b"].diverged
    assert any(n.startswith("run a: loss exploded at step 900") for n in rs.excluded)


def test_loss_above_20_is_divergence(tmp_path):
    df = pd.DataFrame({"run": ["x", "x", "y"], "step": [1, 2, 100], "loss": [15.0, 21.0, 25.0]})
    rs = load_runs(write(tmp_path, "r.csv", df))
    assert rs["x"].diverged_step == 2 and rs["y"].diverged_step == 100 and rs["y"].final_only


def test_all_losses_nan(tmp_path):
    df = pd.DataFrame({"run": ["x", "x"], "step": [10, 20], "loss": [np.nan, np.nan], "peak_lr": 1.0})
    x = load_runs(write(tmp_path, "r.csv", df))["x"]
    assert x.diverged and x.diverged_step == 10 and x.n_points == 0 and math.isnan(x.final_loss)
    assert x.total_steps == 20


def test_loss_spellings_in_csv(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("run,step,loss\na,1,5.0\na,2,\na,3,NaN\na,4,inf\na,5,Infinity\n")
    a = load_runs(p)["a"]
    assert a.steps.tolist() == [1] and a.diverged_step == 2


# ------------------------------------------------------------------ bad input


def set_at(col, i, value):
    def mutate(d):
        d = d.copy()
        d[col] = d[col].astype(object)
        d.loc[i, col] = value
        return d
    return mutate


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.drop(columns="loss"), r"r\.csv: missing column 'loss' \(found: 'run', 'step', 'lr', 'tokens'\)"),
        (lambda d: d.drop(columns=["run", "step"]), r"r\.csv: missing columns 'run', 'step'"),
        (set_at("loss", 0, "oops"), r"r\.csv: column 'loss', run 'a', row 1: 'oops' is not a number; write the loss"),
        (lambda d: d.assign(loss=-d["loss"]), r"r\.csv: column 'loss', run 'a', row 1: -.* is not > 0, and neither is any other loss"),
        (set_at("step", 0, 0.5), r"r\.csv: column 'step', run 'a', row 1: .* is not an integer >= 1"),
        (set_at("step", 3, 0), r"r\.csv: column 'step', run 'a', row 4: .* is not an integer >= 1"),
        (set_at("step", 4, "five"), r"r\.csv: column 'step', run 'a', row 5: 'five' is not a number"),
        (set_at("step", 5, None), r"r\.csv: column 'step', run 'a', row 6: empty is not an integer"),
        (set_at("run", 2, None), r"r\.csv: column 'run', row 3: empty run id"),
        (lambda d: pd.concat([d, d.iloc[[3]]], ignore_index=True),
         r"r\.csv: column 'step', run 'a', row 21: step 400 of this run is already in row 4; keep one row per"),
        (set_at("lr", 10, -1.0), r"r\.csv: column 'lr', run 'b', row 11: -1 is not a finite LR >= 0"),
        (set_at("lr", 1, "fast"), r"r\.csv: column 'lr', run 'a', row 2: 'fast' is not a number"),
        (set_at("tokens", 1, -5.0), r"r\.csv: column 'tokens', run 'a', row 2: -5 is not"),
        (lambda d: d.assign(params=[1e8] * 19 + [2e8]),
         r"r\.csv: column 'params', run 'b', row 20: value 200000000 differs from 100000000 in row 11; a per-run column must be constant"),
        (lambda d: d.assign(schedule=["cosine"] * 10 + ["constant"] * 9 + ["wsd"]),
         r"r\.csv: column 'schedule', run 'b', row 20: value 'wsd' differs from 'constant' in row 11"),
        (lambda d: d.assign(params=0.0), r"r\.csv: column 'params', run 'a', row 1: must be a number > 0, got 0"),
        (lambda d: d.assign(tokens_per_step=-4.0), r"r\.csv: column 'tokens_per_step', run 'a', row 1: must be a number > 0"),
        (lambda d: d.assign(peak_lr=[np.nan] * 10 + [-1e-3] * 10), r"r\.csv: column 'peak_lr', run 'b', row 11: must be a number > 0"),
        (lambda d: d.assign(total_steps=500), r"r\.csv: column 'total_steps', run 'a', row 1: 500 is before the last logged step 1000"),
        (lambda d: d.assign(total_steps=1000.5), r"r\.csv: column 'total_steps', run 'a', row 1: must be an integer > 0"),
        (lambda d: d.assign(warmup_steps=1000), r"r\.csv: column 'warmup_steps', run 'a', row 1: 1000 warmup steps is not below total_steps 1000"),
        (lambda d: d.assign(warmup_steps=-1), r"r\.csv: column 'warmup_steps', run 'a', row 1: must be an integer >= 0"),
        (lambda d: d.assign(schedule="cosine:wat=1", peak_lr=1e-3), r"r\.csv: column 'schedule', run 'a', row 1: .*wat"),
        (lambda d: d.assign(lr=0.0), r"r\.csv: column 'lr', run 'a', row 1: every logged LR of the run is 0"),
    ],
)
def test_bad_input_names_file_column_run_row(tmp_path, mutate, match):
    p = write(tmp_path, "r.csv", mutate(curves()))
    with pytest.raises(DataError, match=match) as e:
        load_runs(p)
    assert "\n" not in str(e.value)


def test_bad_input_rows_in_jsonl(tmp_path):
    df = set_at("loss", 2, "boom")(curves())
    with pytest.raises(DataError, match=r"r\.jsonl: column 'loss', run 'a', row 3: 'boom' is not a number"):
        load_runs(write(tmp_path, "r.jsonl", df))
    p = tmp_path / "bad.jsonl"
    p.write_text('{"run": "a", "step": 1, "loss": 3.0}\n{"run": "a", "step": 2,\n')
    with pytest.raises(DataError, match=r"bad\.jsonl: line 2: not valid JSON"):
        load_runs(p)
    p.write_text('[1, 2]\n')
    with pytest.raises(DataError, match=r"bad\.jsonl: line 1: a list, not a JSON object"):
        load_runs(p)


def test_unknown_extension_missing_and_empty_files(tmp_path):
    p = tmp_path / "r.txt"
    p.write_text("run,step,loss\n")
    with pytest.raises(DataError, match=r"r\.txt: unknown file type '\.txt'; accepted extensions: \.csv, \.parquet, \.pq, \.jsonl, \.ndjson"):
        load_runs(p)
    with pytest.raises(DataError, match=r"nope\.csv: no such file"):
        load_runs(tmp_path / "nope.csv")
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=r"e\.csv: the file is empty"):
        load_runs(empty)
    empty.write_text("run,step,loss\n")
    with pytest.raises(DataError, match=r"e\.csv: the file has no rows"):
        load_runs(empty)
    junk = tmp_path / "j.parquet"
    junk.write_text("not parquet")
    with pytest.raises(DataError, match=r"j\.parquet: cannot be read as parquet"):
        load_runs(junk)


def test_unused_columns_are_noted(tmp_path):
    rs = load_runs(write(tmp_path, "r.csv", curves().assign(grad_norm=1.0)))
    assert any("column grad_norm not used" in n for n in rs.excluded)


def test_read_table_and_api_types(tmp_path):
    df = read_table(write(tmp_path, "r.jsonl", curves()))
    assert list(df.columns) == ["run", "step", "lr", "loss", "tokens"] and len(df) == 20
    assert set(EXTENSIONS) == {".csv", ".parquet", ".pq", ".jsonl", ".ndjson"}
    rs = load_runs(str(write(tmp_path, "r.csv", curves())))
    assert isinstance(rs, RunSet) and all(isinstance(r, Run) for r in rs)
    assert issubclass(DataError, ValueError)


# ------------------------------------------------------------------ branches


def branched():
    """A constant run to step 1000, and a cooldown branched from it at step 600, logged alone."""
    rows = [{"run": "const", "step": s, "lr": 1e-3, "loss": 4 - s / 1000} for s in range(100, 1001, 100)]
    rows += [{"run": "cool", "step": s, "lr": 1e-3 * (1 - 0.9 * (s - 600) / 400),
              "loss": 4 - s / 1000 - 0.05 * (s - 600) / 400} for s in range(700, 1001, 100)]
    return pd.DataFrame(rows)


def test_a_branch_takes_its_parents_rows_and_settings(tmp_path):
    df = branched()
    meta = pd.DataFrame({"run": ["const", "cool"], "params": [1e8, None], "warmup_steps": [50, None],
                         "parent": [None, "const"]})
    rs = load_runs(write(tmp_path, "r.csv", df), meta=write(tmp_path, "m.csv", meta))
    cool, const = rs["cool"], rs["const"]
    np.testing.assert_array_equal(cool.steps, np.arange(100, 1001, 100))
    np.testing.assert_array_equal(cool.loss[:6], const.loss[:6])
    assert cool.params == 1e8 and cool.warmup_steps == 50
    # the LR between the branch's last inherited row and its own first one is interpolated
    assert cool.lr[599] == pytest.approx(1e-3) and cool.lr[999] == pytest.approx(1e-4)
    assert any("6 row(s) of parent const before step 700" in n for n in rs.excluded)
    assert const.steps.size == 10 and not any(n.startswith("run const:") for n in rs.excluded)


def test_branches_of_branches_are_followed(tmp_path):
    df = branched()
    df = pd.concat([df, pd.DataFrame({"run": "late", "step": [1100, 1200], "lr": 1e-4,
                                      "loss": [3.0, 2.99]})])
    df["parent"] = df["run"].map({"cool": "const", "late": "cool"})
    late = load_runs(write(tmp_path, "r.csv", df))["late"]
    np.testing.assert_array_equal(late.steps, np.arange(100, 1201, 100))


@pytest.mark.parametrize("parent, problem", [("nope", "'nope' is not a run of"),
                                              ("cool", "the parents form a cycle (cool -> cool)")])
def test_bad_parents_name_the_file_column_run_and_row(tmp_path, parent, problem):
    meta = pd.DataFrame({"run": ["const", "cool"], "parent": [None, parent]})
    m = write(tmp_path, "m.csv", meta)
    with pytest.raises(DataError) as e:
        load_runs(write(tmp_path, "r.csv", branched()), meta=m)
    msg = str(e.value)
    assert str(m) in msg and "parent" in msg and "cool" in msg and "row 2" in msg and problem in msg
    assert "\n" not in msg
