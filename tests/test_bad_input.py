"""Generated malformed inputs for every command: one line, exit 2, no traceback, no output file.

Each test draws malformed files with hypothesis (truncated files, wrong types, unknown keys,
mixed units, empty runs, huge values, unicode names, duplicate steps) and runs a command on
them. The fits themselves are replaced by a stand-in that stops the command where it would
start sampling, so these tests exercise loading and validation only (no NUTS). An input may
also be accepted (the stand-in is reached, or the command succeeds); anything else fails.
Every test counts its examples and checks that they were all run.
"""

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrplan.cli import cli

COUNTS: dict[str, int] = {}
#: LRPLAN_FUZZ_SCALE=10 draws ten times as many inputs, randomly (CI: the same inputs each run).
SCALE = int(os.environ.get("LRPLAN_FUZZ_SCALE", "1"))


class Reached(Exception):
    """Raised by the stand-in fit: the input got through loading and validation."""


@pytest.fixture(autouse=True)
def _no_fits(monkeypatch):
    def stop(*args, **kwargs):
        raise Reached

    import lrplan.curve.fit
    import lrplan.evaluate.backtest
    import lrplan.transfer.fit

    pd.set_option("display.max_columns", 20)
    pd.set_option("display.width", 250)
    for mod, name in ((lrplan.curve.fit, "fit_curves"), (lrplan.transfer.fit, "fit_transfer"),
                      (lrplan.transfer.fit, "compare_variants"), (lrplan.evaluate.backtest, "backtest_curves"),
                      (lrplan.evaluate.backtest, "backtest_sweep")):
        monkeypatch.setattr(mod, name, stop)


def fuzz(name, strategy, check, n):
    """Run ``check`` on ``n`` drawn examples; record and check how many ran."""
    COUNTS[name] = 0
    n *= SCALE

    @settings(max_examples=n, deadline=None, derandomize=SCALE == 1, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def inner(case):
        COUNTS[name] += 1
        with tempfile.TemporaryDirectory() as d:
            check(Path(d), case)

    inner()
    assert COUNTS[name] >= n, COUNTS


def assert_clean(res, *, files, outputs=()):
    """Accepted, or one line naming the file on stderr with exit 2; never a traceback."""
    if isinstance(res.exception, Reached) or res.exit_code == 0:
        return "accepted"
    if res.exit_code != 2:
        import traceback

        pytest.fail("".join(traceback.format_exception(*res.exc_info)) if res.exc_info else res.output)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lrplan: error: "), res.stderr
    assert any(Path(f).name in lines[0] for f in files), (lines[0], files)
    if os.environ.get("LRPLAN_FUZZ_LOG"):  # to read the messages
        with open(os.environ["LRPLAN_FUZZ_LOG"], "a", encoding="utf-8") as fh:
            fh.write(lines[0] + "\n")
    for o in outputs:
        assert not Path(o).exists(), o
        assert not list(Path(o).parent.glob(f".{Path(o).name}.*")), "temporary file left behind"
    return "refused"


# ------------------------------------------------------------------ malformed tables

NAMES = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=6)
WEIRD = st.one_of(
    st.sampled_from(["", "NaN", "nan", "inf", "-inf", "Infinity", "1e308", "-1e308", "1e400", "true",
                     "False", "None", "null", "0", "-0", "1,5", "0x10", "3.0.1", " ", "é", "💥", "1e-320",
                     "9" * 40, "[1, 2]", '{"a": 1}']),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(max_size=8),
)


def base_table(seed, names):
    rng = np.random.default_rng(seed)
    rows = []
    for k, name in enumerate(names):
        for s in range(1, 6):
            rows.append({"run": name, "step": 100 * s, "loss": 4.0 - 0.2 * s + 0.01 * rng.standard_normal(),
                         "lr": 1e-3 * (1 + k), "tokens": 100 * s * 4096.0, "params": 1e8 * (1 + k),
                         "tokens_per_step": 4096.0, "peak_lr": 1e-3 * (1 + k)})
    return pd.DataFrame(rows)


@st.composite
def malformed_table(draw):
    names = draw(st.lists(NAMES, min_size=1, max_size=3, unique_by=lambda s: s.strip()).filter(
        lambda xs: all(x.strip() for x in xs)))
    df = base_table(draw(st.integers(0, 1000)), names).astype(object)
    kind = draw(st.sampled_from(["cell", "cell", "huge", "duplicate", "drop_column", "unknown_column",
                                 "mixed_units", "empty_run", "header_only", "nonphysical", "cells"]))
    if kind in ("cell", "cells"):
        for _ in range(1 if kind == "cell" else draw(st.integers(2, 6))):
            i = draw(st.integers(0, len(df) - 1))
            col = draw(st.sampled_from(list(df.columns)))
            df.loc[i, col] = draw(WEIRD)
    elif kind == "huge":
        i = draw(st.integers(0, len(df) - 1))
        col = draw(st.sampled_from(["loss", "lr", "tokens", "step", "params", "tokens_per_step", "peak_lr"]))
        df.loc[i, col] = draw(st.sampled_from([1e308, -1e308, 1e300, 2.0**63, 1e20, 5e-324]))
    elif kind == "duplicate":
        df = pd.concat([df, df.iloc[[draw(st.integers(0, len(df) - 1))]]], ignore_index=True)
    elif kind == "drop_column":
        df = df.drop(columns=draw(st.sampled_from(["run", "step", "loss", "lr", "params"])))
    elif kind == "unknown_column":
        df[draw(NAMES)] = draw(WEIRD)
    elif kind == "mixed_units":
        run = df["run"].iloc[0]
        col, factor = draw(st.sampled_from([("loss", 1 / math.log(2)), ("loss", None), ("lr", 100.0),
                                             ("tokens", 1e-6), ("params", 1e-6)]))
        sel = df["run"] == run
        if factor is None:  # perplexity
            df.loc[sel, col] = np.exp(df.loc[sel, col].astype(float) + 0.5)
        else:
            df.loc[sel, col] = df.loc[sel, col].astype(float) * factor
    elif kind == "empty_run":
        df.loc[df["run"] == df["run"].iloc[0], "loss"] = None
    elif kind == "header_only":
        df = df.iloc[:0]
    elif kind == "nonphysical":
        df.loc[draw(st.integers(0, len(df) - 1)), "loss"] = draw(st.sampled_from([0.0, -1.0, 21.0, 1e308]))
    ext = draw(st.sampled_from(["csv", "csv", "jsonl", "parquet"]))
    truncate = draw(st.one_of(st.none(), st.floats(0.0, 1.0)))
    return df, ext, truncate


def write_table(d, df, ext, truncate, stem="runs"):
    p = d / f"{stem}.{ext}"
    if ext == "csv":
        df.to_csv(p, index=False)
    elif ext == "jsonl":
        recs = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                for r in df.to_dict("records")]
        p.write_text("".join(json.dumps(r, default=str) + "\n" for r in recs))
    else:
        try:
            df.to_parquet(p, index=False)
        except Exception:  # a column of mixed types: parquet holds it as text
            df.astype(str).to_parquet(p, index=False)
    if truncate is not None:
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * truncate)])
    return p


def _fit_check(d, case):
    p = write_table(d, *case)
    out = d / "fit.nc"
    res = CliRunner().invoke(cli, ["fit", str(p), "-o", str(out), "--law", "annealing"])
    assert_clean(res, files=[p], outputs=[out])


def _plan_check(d, case):
    p = write_table(d, *case)
    res = CliRunner().invoke(cli, ["plan", str(p), "--params", "1e9", "--tokens", "2e10", "--tokens-per-step",
                                   "4096", "--json"])
    assert_clean(res, files=[p])


def _next_check(d, case):
    p = write_table(d, *case)
    res = CliRunner().invoke(cli, ["next", str(p), "--params", "1e9", "--tokens", "2e10", "--tokens-per-step",
                                   "4096"])
    assert_clean(res, files=[p])


def _backtest_check(d, case):
    p = write_table(d, *case)
    res = CliRunner().invoke(cli, ["backtest", str(p), "--holdout", "size:1.5e8"])
    assert_clean(res, files=[p])


def _import_csv_check(d, case):
    df, ext, truncate = case
    p = write_table(d, df, ext, truncate)
    out = d / "out.csv"
    res = CliRunner().invoke(cli, ["import", str(p), "--format", "csv", "-o", str(out)])
    if assert_clean(res, files=[p], outputs=[out]) == "accepted":
        assert out.exists()


def _meta_check(d, case):
    df, ext, truncate = case
    runs = write_table(d, base_table(0, ["a", "b"]), "csv", None)
    meta = df.drop(columns=[c for c in ("step", "loss", "lr", "tokens") if c in df.columns])
    meta = meta.drop_duplicates(subset=["run"]) if "run" in meta.columns and len(meta) > 1 and ext == "csv" else meta
    m = write_table(d, meta, ext, truncate, stem="meta")
    res = CliRunner().invoke(cli, ["fit", str(runs), "--meta", str(m), "-o", str(d / "f.nc")])
    assert_clean(res, files=[runs, m], outputs=[d / "f.nc"])


def test_fit_on_malformed_runs_files():
    fuzz("fit", malformed_table(), _fit_check, 60)


def test_plan_on_malformed_runs_files():
    fuzz("plan", malformed_table(), _plan_check, 30)


def test_next_on_malformed_runs_files():
    fuzz("next", malformed_table(), _next_check, 20)


def test_backtest_on_malformed_runs_files():
    fuzz("backtest", malformed_table(), _backtest_check, 20)


def test_import_csv_on_malformed_tables():
    fuzz("import-csv", malformed_table(), _import_csv_check, 40)


def test_fit_on_malformed_metadata_files():
    fuzz("meta", malformed_table(), _meta_check, 20)


# ------------------------------------------------------------------ tracker logs


def _history(seed):
    rng = np.random.default_rng(seed)
    steps = np.arange(0, 200, 10)
    return pd.DataFrame({"_step": np.arange(steps.size), "iter": steps,
                         "train/loss": 4.0 - steps / 400 + 0.01 * rng.standard_normal(steps.size),
                         "val/loss": np.where(steps % 50 == 0, 4.0 - steps / 410, np.nan),
                         "lr": np.minimum(steps / 50, 1.0) * 1e-3}).astype(object)


@st.composite
def malformed_wandb(draw):
    df = _history(draw(st.integers(0, 100)))
    cfg = {"global_batch_size": {"value": 8}, "model": {"seq_len": 1024}, "n_params": 1e8}
    kind = draw(st.sampled_from(["cell", "cells", "duplicate", "config", "drop", "nonphysical", "units"]))
    if kind in ("cell", "cells"):
        for _ in range(1 if kind == "cell" else draw(st.integers(2, 5))):
            df.loc[draw(st.integers(0, len(df) - 1)), draw(st.sampled_from(list(df.columns)))] = draw(WEIRD)
    elif kind == "duplicate":
        i = draw(st.integers(0, len(df) - 1))
        row = df.iloc[[i]].copy()
        row["val/loss"] = draw(st.sampled_from([3.0, 3.5, np.nan]))
        row["train/loss"] = draw(st.sampled_from([3.0, 3.5]))
        df = pd.concat([df, row], ignore_index=True)
    elif kind == "config":
        cfg = draw(st.one_of(st.sampled_from(['{"a": ', "[1, 2]", "null", '"x"', "{}", "\u00e9\u00e9"]),
                             st.dictionaries(NAMES, WEIRD, max_size=3).map(json.dumps)))
    elif kind == "drop":
        df = df.drop(columns=draw(st.lists(st.sampled_from(list(df.columns)), min_size=1, max_size=3, unique=True)))
    elif kind == "nonphysical":
        df.loc[draw(st.integers(0, len(df) - 1)), "val/loss"] = draw(st.sampled_from([0.0, -2.0, 1e308, 50.0]))
    else:
        df = df.rename(columns={"val/loss": draw(st.sampled_from(["val/ppl", "val/bpb", "eval/bits", "val/loss"]))})
    return df, cfg, draw(st.sampled_from(["csv", "parquet"])), draw(st.one_of(st.none(), st.floats(0.0, 1.0))), \
        draw(NAMES)


def _wandb_check(d, case):
    df, cfg, ext, truncate, name = case
    stem = "".join(c if c.isalnum() else "_" for c in name) or "run"
    p = write_table(d, df, ext, truncate, stem=stem)
    (d / f"{stem}.config.json").write_text(cfg if isinstance(cfg, str) else json.dumps(cfg), encoding="utf-8")
    out = d / "out.csv"
    res = CliRunner().invoke(cli, ["import", str(p), "-o", str(out)])
    assert_clean(res, files=[p, d / f"{stem}.config.json"], outputs=[out])


def test_import_wandb_exports():
    fuzz("import-wandb", malformed_wandb(), _wandb_check, 40)


@st.composite
def malformed_trainer_state(draw):
    hist = []
    for s in range(10, 110, 10):
        hist.append({"loss": 4.0 - s / 100, "learning_rate": 1e-3, "step": s, "epoch": s / 100})
        if s % 50 == 0:
            hist.append({"eval_loss": 3.9 - s / 100, "step": s})
    doc = {"global_step": 100, "max_steps": 100, "train_batch_size": 8, "log_history": hist}
    kind = draw(st.sampled_from(["value", "values", "entry", "top", "truncate", "dup"]))
    if kind in ("value", "values"):
        for _ in range(1 if kind == "value" else draw(st.integers(2, 5))):
            e = hist[draw(st.integers(0, len(hist) - 1))]
            e[draw(st.sampled_from(list(e) + ["extra key"]))] = draw(
                st.one_of(WEIRD, st.none(), st.booleans(), st.lists(st.integers(), max_size=2),
                          st.floats(allow_nan=True, allow_infinity=True)))
    elif kind == "entry":
        hist[draw(st.integers(0, len(hist) - 1))] = draw(st.one_of(st.integers(), st.text(max_size=4), st.none(),
                                                                   st.lists(st.integers(), max_size=2)))
    elif kind == "top":
        doc["log_history"] = draw(st.one_of(st.none(), st.integers(), st.text(max_size=4), st.just({})))
    elif kind == "dup":
        hist.append({"eval_loss": 1.5, "step": 50})
    text = json.dumps(doc)
    if kind == "truncate":
        text = text[: draw(st.integers(0, len(text) - 1))]
    return text


def _hf_check(d, text):
    p = d / "run" / "trainer_state.json"
    p.parent.mkdir()
    p.write_text(text, encoding="utf-8")
    out = d / "out.csv"
    res = CliRunner().invoke(cli, ["import", str(d / "run"), "-o", str(out), "--format", "hf"])
    assert_clean(res, files=[p, d / "run"], outputs=[out])


def test_import_trainer_states():
    fuzz("import-hf", malformed_trainer_state(), _hf_check, 30)


@st.composite
def malformed_mlflow(draw):
    lines = [f"1700000000000 {4.0 - s / 100!r} {s}" for s in range(10, 110, 10)]
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        parts = lines[i].split()
        if len(parts) != 3:
            continue
        how = draw(st.sampled_from(["value", "step", "short", "long", "garbage", "dup"]))
        if how == "value":
            parts[1] = draw(WEIRD).replace("\n", "").replace(" ", "") or "x"
        elif how == "step":
            parts[2] = draw(WEIRD).replace("\n", "").replace(" ", "") or "x"
        elif how == "short":
            parts = parts[:1]
        elif how == "long":
            parts.append("7")
        elif how == "garbage":
            parts = [draw(st.text(max_size=10)).replace("\n", " ")]
        else:
            lines.append(f"1700000000001 3.3 {parts[2]}")
        lines[i] = " ".join(parts)
    return "\n".join(lines) + "\n", draw(NAMES)


def _mlflow_check(d, case):
    text, name = case
    run = d / "mlruns" / "1" / "abc"
    (run / "metrics").mkdir(parents=True)
    (run / "tags").mkdir()
    (run / "meta.yaml").write_text("run_id: abc\n")
    (run / "tags" / "mlflow.runName").write_text(name, encoding="utf-8")
    (run / "metrics" / "eval_loss").write_text(text, encoding="utf-8")
    out = d / "out.csv"
    res = CliRunner().invoke(cli, ["import", str(d / "mlruns"), "-o", str(out)])
    assert_clean(res, files=[run / "metrics" / "eval_loss", run / "metrics", d / "mlruns"], outputs=[out])


def test_import_mlflow_stores():
    fuzz("import-mlflow", malformed_mlflow(), _mlflow_check, 30)


def _tb_bytes():
    from tensorboardX import SummaryWriter

    with tempfile.TemporaryDirectory() as d:
        w = SummaryWriter(d)
        for s in range(10, 110, 10):
            w.add_scalar("eval/loss", 4.0 - s / 100, s)
            w.add_scalar("train/learning_rate", 1e-3, s)
        w.close()
        (f,) = Path(d).glob("events.out.tfevents*")
        return f.read_bytes()


@st.composite
def malformed_events(draw):
    data = bytearray(TB_BYTES)
    how = draw(st.sampled_from(["truncate", "flip", "garbage", "append"]))
    if how == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "flip":
        for _ in range(draw(st.integers(1, 5))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif how == "garbage":
        data = bytearray(draw(st.binary(max_size=200)))
    else:
        data += draw(st.binary(min_size=1, max_size=50))
    return bytes(data)


TB_BYTES = _tb_bytes()


def _tb_check(d, data):
    p = d / "run" / "events.out.tfevents.1.host"
    p.parent.mkdir()
    p.write_bytes(data)
    out = d / "out.csv"
    res = CliRunner().invoke(cli, ["import", str(d / "run"), "-o", str(out), "--format", "tensorboard"])
    assert_clean(res, files=[p, d / "run"], outputs=[out])


def test_import_tensorboard_event_files():
    fuzz("import-tensorboard", malformed_events(), _tb_check, 30)


# ------------------------------------------------------------------ fit files and LR files


@st.composite
def malformed_lr_file(draw):
    rows = [f"{s},{1e-3 * min(s / 10, 1):.6g}" for s in range(1, 51)]
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(rows) - 1))
        rows[i] = draw(st.sampled_from([f"{i + 1},{draw(WEIRD)}", f"{draw(WEIRD)},1e-3", "", ",", "1,2,3",
                                        rows[max(i - 1, 0)]]))
    header = draw(st.sampled_from(["step,lr", "lr,step", "step", "s,lr", ""]))
    text = header + "\n" + "\n".join(rows) + "\n"
    return text, draw(st.one_of(st.none(), st.integers(0, len(text))))


def _predict_check(d, case):
    text, cut = case
    lr = d / "lr.csv"
    lr.write_text(text if cut is None else text[:cut], encoding="utf-8")
    fit = d / "fit.nc"
    fit.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(40))  # the start of an HDF5 file, cut short
    res = CliRunner().invoke(cli, ["predict", str(fit), "--lr-file", str(lr), "--json"])
    assert_clean(res, files=[fit, lr])
    res = CliRunner().invoke(cli, ["report", str(fit), "-o", str(d / "r.html")])
    assert_clean(res, files=[fit], outputs=[d / "r.html"])


def test_predict_and_report_on_malformed_files():
    fuzz("predict-report", malformed_lr_file(), _predict_check, 15)


def test_schedule_specs():
    spec = st.one_of(st.text(max_size=30), st.sampled_from(["cosine:final=", "wsd:decay=2", "wsd:decay=0.2,shape=x",
                                                            "power:a=1e308", "multistep:milestones=0.9|0.8",
                                                            "cosine:warmup=-1", "constant:final=0.1,final=2"]))

    def check(d, s):
        out = d / "lr.csv"
        res = CliRunner().invoke(cli, ["schedule", s, "--steps", "100", "--peak-lr", "1e-3", "-o", str(out)])
        if res.exit_code == 0:
            assert out.exists()
            return
        assert res.exit_code == 2 and "Traceback" not in res.output and not out.exists(), res.output
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr

    fuzz("schedule", spec, check, 15)


def test_zz_total_examples():
    """The suite's count (run last in file order)."""
    total = sum(COUNTS.values())
    print(f"\nbad-input fuzz: {total} generated inputs: {COUNTS}")
    if len(COUNTS) == 12:
        assert total >= 200
