"""Import runs written by the trackers' own writers; fit and plan what comes out."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lrplan.cli import cli
from lrplan.data import load_runs
from lrplan.errors import DataError
from lrplan.evaluate.simulate import simulate_curves
from lrplan.importers import import_runs
from lrplan.schedules import lr_schedule

TRUTH = dict(L0=2.9, A=0.9, alpha=0.5, C=0.25)
STEPS, WARMUP, EVERY, EVAL_EVERY = 2000, 100, 10, 100
PEAKS = {"small-lr": 1e-3, "large-lr": 2e-3}
PARAMS, BATCH, SEQ = 1e8, 256, 2048  # batch in sequences
TPS = BATCH * SEQ


def _truth():
    """Two cosine runs at two peak LRs: train loss every 10 steps, eval loss every 100, LR every step."""
    out = {}
    for i, (name, peak) in enumerate(PEAKS.items()):
        runs, _ = simulate_curves("annealing", TRUTH, {name: "cosine:final=0.1"}, steps=STEPS, peak_lr=peak,
                                  warmup_steps=WARMUP, every=EVERY, noise=0.002, seed=i, lr_ref=1e-3)
        lr = lr_schedule("cosine:final=0.1", steps=STEPS, peak_lr=peak, warmup_steps=WARMUP)
        train = runs[["step", "loss"]].to_numpy()
        ev = train[train[:, 0] % EVAL_EVERY == 0]
        out[name] = dict(train=train, eval=np.c_[ev[:, 0], ev[:, 1] - 0.01], lr=lr, peak=peak,
                         log_steps=np.arange(EVERY, STEPS + 1, EVERY))  # the LR is logged from step 10
    return out


TRUE = _truth()


def _expected(name):
    """Eval loss at its steps, the LR at those steps."""
    t = TRUE[name]
    steps = t["eval"][:, 0].astype(int)
    return steps, t["eval"][:, 1], t["lr"][steps - 1]


# ------------------------------------------------------------------ writers


def write_wandb(d, ext="csv"):
    """W&B history as `run.history()` gives it: one row per log call, NaN where a key was not logged."""
    paths = []
    for name, t in TRUE.items():
        rows = []
        ev = dict(zip(t["eval"][:, 0].astype(int), t["eval"][:, 1], strict=True))
        tr = dict(zip(t["train"][:, 0].astype(int), t["train"][:, 1], strict=True))
        for k, s in enumerate(t["log_steps"]):
            rows.append({"_step": k, "iter": s, "train/loss": tr.get(s, np.nan), "lr": t["lr"][s - 1],
                         "val/loss": ev.get(s, np.nan), "mfu": 0.3})
        df = pd.DataFrame(rows)
        p = d / f"{name}.{ext}"
        df.to_csv(p, index=False) if ext == "csv" else df.to_parquet(p, index=False)
        # a config as the W&B API / config.yaml gives it: values wrapped, model settings nested
        cfg = {"global_batch_size": {"value": BATCH}, "model": {"value": {"seq_len": SEQ, "n_params": PARAMS}},
               "learning_rate": {"value": t["peak"], "desc": None}}
        (d / f"{name}.config.json").write_text(json.dumps(cfg))
        paths.append(p)
    return paths


class _TorchStyleWriter:
    """TensorBoard's own EventFileWriter, as torch.utils.tensorboard's SummaryWriter drives it
    (Megatron's writer): tags are kept as given, spaces included."""

    def __init__(self, logdir):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.w = EventFileWriter(logdir)

    def add_scalar(self, tag, value, step):
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        self.w.add_event(Event(wall_time=float(step), step=int(step),
                               summary=Summary(value=[Summary.Value(tag=tag, simple_value=float(value))])))

    def close(self):
        self.w.close()


def write_tensorboard(d):
    """tensorboardX's SummaryWriter with HF's tags; TensorBoard's event writer with Megatron's."""
    from tensorboardX import SummaryWriter

    for name, t in TRUE.items():
        hf = name == "small-lr"
        w = SummaryWriter(str(d / "tb" / name)) if hf else _TorchStyleWriter(str(d / "tb" / name))
        for s, y in t["train"]:
            w.add_scalar("train/loss" if hf else "lm loss", y, int(s))
        for s in t["log_steps"]:
            w.add_scalar("train/learning_rate" if hf else "learning-rate", t["lr"][s - 1], int(s))
            if hf:  # the Trainer's include_num_input_tokens_seen
                w.add_scalar("train/num_input_tokens_seen", s * TPS, s)
            else:
                w.add_scalar("batch-size", BATCH, s)
        for s, y in t["eval"]:
            w.add_scalar("eval/loss" if hf else "lm loss validation", y, int(s))
        w.close()
    return [d / "tb"]


def write_hf(d):
    """transformers' TrainerState.save_to_json, as the Trainer writes it into each checkpoint."""
    from transformers.trainer_callback import TrainerState

    for name, t in TRUE.items():
        for upto in (STEPS // 2, STEPS):  # two checkpoints: the later holds the whole history
            state = TrainerState(global_step=upto, max_steps=STEPS, train_batch_size=BATCH)
            tr = dict(zip(t["train"][:, 0].astype(int), t["train"][:, 1], strict=True))
            for s in t["log_steps"]:
                if s <= upto:
                    s = int(s)
                    entry = {"learning_rate": t["lr"][s - 1], "step": s, "num_input_tokens_seen": s * TPS,
                             "epoch": s / STEPS}
                    state.log_history.append(entry | ({"loss": tr[s]} if s in tr else {}))
                    if s % EVAL_EVERY == 0:
                        y_ev = t["eval"][t["eval"][:, 0] == s, 1][0]
                        state.log_history.append({"eval_loss": y_ev, "step": s, "epoch": s / STEPS})
            ck = d / "hf" / name / f"checkpoint-{upto}"
            ck.mkdir(parents=True)
            state.save_to_json(str(ck / "trainer_state.json"))
    return [d / "hf"]


def write_mlflow(d, monkeypatch):
    """MlflowClient on a file store."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(d / "mlruns").as_uri())
    exp = client.create_experiment("ladder")
    for name, t in TRUE.items():
        run = client.create_run(exp, run_name=name)
        rid = run.info.run_id
        ms = []
        ms += [Metric("loss", y, 0, int(s)) for s, y in t["train"]]
        ms += [Metric("learning_rate", t["lr"][s - 1], 0, int(s)) for s in t["log_steps"]]
        ms += [Metric("eval_loss", y, 0, int(s)) for s, y in t["eval"]]
        for i in range(0, len(ms), 1000):
            client.log_batch(rid, metrics=ms[i:i + 1000])
        client.log_param(rid, "params", PARAMS)
        client.log_param(rid, "tokens_per_step", TPS)
        client.set_terminated(rid)
    return [d / "mlruns"]


def write_csv(d):
    """A hand-rolled logger's table: its own column names, mapped on the command line."""
    rows = []
    for name, t in TRUE.items():
        for s, y in t["eval"]:
            rows.append({"experiment": name, "iteration": int(s), "heldout_ce": y, "lr_now": t["lr"][int(s) - 1]})
    pd.DataFrame(rows).to_csv(d / "log.csv", index=False)
    return [d / "log.csv"]


FORMATS = {
    "wandb": (lambda d, mp: write_wandb(d), ["--params", "1e8"]),
    "wandb-parquet": (lambda d, mp: write_wandb(d, "parquet"), []),
    "tensorboard": (lambda d, mp: write_tensorboard(d), ["--params", "1e8", "--seq-len", str(SEQ)]),
    "hf": (lambda d, mp: write_hf(d), ["--params", "1e8"]),
    "mlflow": (write_mlflow, []),
    "csv": (lambda d, mp: write_csv(d), ["--format", "csv", "--run-column", "experiment", "--step", "iteration",
                                         "--loss", "heldout_ce", "--lr", "lr_now", "--params", "1e8",
                                         "--tokens-per-step", str(TPS), "--warmup-steps", "100"]),
}


def _import(tmp_path, monkeypatch, fmt):
    write, extra = FORMATS[fmt]
    sources = write(tmp_path, monkeypatch)
    out = tmp_path / "runs.csv"
    res = CliRunner().invoke(cli, ["import", *map(str, sources), "-o", str(out), *extra, "--json"])
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_imports_the_eval_loss_lr_and_batch(tmp_path, monkeypatch, fmt):
    out, doc = _import(tmp_path, monkeypatch, fmt)
    assert sorted(r["run"] for r in doc["runs"]) == sorted(TRUE)
    assert all(r["loss_kind"] in ("eval", "given") for r in doc["runs"])
    runs = load_runs(out)
    for name in TRUE:
        steps, loss, lr = _expected(name)
        r = runs[name]
        np.testing.assert_array_equal(r.steps, steps)
        tol = 1e-6 if fmt == "tensorboard" else 1e-12  # TensorBoard stores float32
        np.testing.assert_allclose(r.loss, loss, rtol=tol)
        # the per-step LR rebuilt from the logged LR matches the true schedule at every step
        assert r.lr is not None
        np.testing.assert_allclose(r.lr[steps - 1], lr, rtol=tol)
        assert r.warmup_steps == WARMUP
        assert r.peak_lr == pytest.approx(PEAKS[name], rel=1e-6)
        assert r.params == PARAMS and r.tokens_per_step == pytest.approx(TPS)
        assert not r.diverged


def test_formats_give_the_same_runs(tmp_path, monkeypatch):
    runs = {}
    for fmt in FORMATS:
        d = tmp_path / fmt
        d.mkdir()
        runs[fmt] = load_runs(_import(d, monkeypatch, fmt)[0])
    base = runs.pop("wandb")
    for fmt, rs in runs.items():
        assert sorted(rs.names) == sorted(base.names)
        for r in rs:
            b = base[r.name]
            assert (r.total_steps, r.warmup_steps, r.params) == (b.total_steps, b.warmup_steps, b.params), fmt
            np.testing.assert_array_equal(r.steps, b.steps)
            np.testing.assert_allclose(r.loss, b.loss, rtol=1e-6)
            at = r.steps - 1 if fmt == "csv" else slice(None)  # the csv logs the LR at its eval steps only
            np.testing.assert_allclose(r.lr[at], b.lr[at], rtol=1e-6, atol=1e-12)


@pytest.mark.slow
def test_an_imported_pair_fits_and_plans(tmp_path, monkeypatch):
    """Import -> fit -> plan, on every format in turn (about a minute per format and command)."""
    results = {}
    for fmt in ("wandb", "tensorboard", "hf", "mlflow", "csv"):
        d = tmp_path / fmt
        d.mkdir()
        out, _ = _import(d, monkeypatch, fmt)
        fit = CliRunner().invoke(cli, ["fit", str(out), "--law", "annealing", "--warmup", "100", "--samples",
                                       "100", "-o", str(d / "fit.nc"), "--json"])
        assert fit.exit_code == 0, fit.output
        assert json.loads(fit.stdout)["runs"] == 2
        plan = CliRunner().invoke(cli, ["plan", str(out), "--params", "4e8", "--tokens", "4e9", "--warmup", "100",
                                        "--samples", "100", "--json"])
        assert plan.exit_code == 0, plan.output
        results[fmt] = json.loads(plan.stdout)
        assert results[fmt]["target"]["tokens_per_step"] == pytest.approx(TPS)
        assert 1e-5 < results[fmt]["lr"]["recommended"] < 1e-1


def test_train_loss_used_when_no_eval_loss_and_said(tmp_path):
    t = TRUE["small-lr"]
    pd.DataFrame({"step": t["train"][:, 0].astype(int), "train/loss": t["train"][:, 1],
                  "lr": t["lr"][t["train"][:, 0].astype(int) - 1]}).to_csv(tmp_path / "a.csv", index=False)
    imp = import_runs([tmp_path / "a.csv"])
    assert imp.runs[0].loss_key == "train/loss" and imp.runs[0].loss_kind == "train"
    assert any("train loss (no eval loss logged)" in n for n in imp.notes)


def test_what_cannot_be_inferred_is_asked_for_by_name(tmp_path):
    df = pd.DataFrame({"_step": [1, 2, 3], "eval/c4/CrossEntropyLoss": [4.0, 3.9, 3.8],
                       "eval/pile/CrossEntropyLoss": [4.1, 4.0, 3.9]})
    df.to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(DataError, match=r"r\.csv: run 'r': 2 eval losses are logged .*choose one with --loss"):
        import_runs([tmp_path / "r.csv"])
    imp = import_runs([tmp_path / "r.csv"], loss="eval/c4/CrossEntropyLoss")
    assert any("params unknown; plan and next need it (give --params" in n for n in imp.notes)


def test_perplexity_and_bits_keys(tmp_path):
    steps = np.arange(1, 6)
    pd.DataFrame({"step": steps, "val/ppl": np.exp(3.0 - 0.1 * steps)}).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(DataError, match=r"key 'val/ppl', run 'p': the key's name says perplexity.*--loss-unit perplexity"):
        import_runs([tmp_path / "p.csv"], loss="val/ppl")
    imp = import_runs([tmp_path / "p.csv"], loss="val/ppl", loss_unit="perplexity")
    np.testing.assert_allclose(imp.runset["p"].loss, 3.0 - 0.1 * steps)
    pd.DataFrame({"step": steps, "loss_bits": (3.0 - 0.1 * steps) / math.log(2)}).to_csv(tmp_path / "b.csv", index=False)
    imp = import_runs([tmp_path / "b.csv"], loss="loss_bits", loss_unit="bits")
    np.testing.assert_allclose(imp.runset["b"].loss, 3.0 - 0.1 * steps)
    # perplexity under a plain name is caught by its values
    pd.DataFrame({"step": steps, "loss": np.exp(4.0 - 0.1 * steps)}).to_csv(tmp_path / "q.csv", index=False)
    with pytest.raises(DataError, match=r"column 'loss', run 'q', row 1: every loss of the run is above 20 and falls.*perplexity"):
        import_runs([tmp_path / "q.csv"])


def test_resumed_run_with_a_step_logged_twice(tmp_path):
    pd.DataFrame({"step": [10, 20, 30, 20, 30, 40], "loss": [4.0, 3.9, 3.8, 3.95, 3.85, 3.7]}).to_csv(
        tmp_path / "r.csv", index=False)
    with pytest.raises(DataError, match=r"r\.csv: key 'loss', run 'r', row 4: step 20 is logged again.*--duplicates last"):
        import_runs([tmp_path / "r.csv"])
    imp = import_runs([tmp_path / "r.csv"], duplicates="last")
    np.testing.assert_allclose(imp.runset["r"].loss, [4.0, 3.95, 3.85, 3.7])


def test_bad_import_leaves_no_output_and_one_line(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("_step,train/loss\n1,4.0\n2,abc\n")
    out = tmp_path / "runs.csv"
    res = CliRunner().invoke(cli, ["import", str(p), "-o", str(out)])
    assert res.exit_code == 2 and not out.exists() and list(tmp_path.iterdir()) == [p]
    assert res.stderr.strip() == ("lrplan: error: " + str(p) + ": key 'train/loss', run 'r', row 2: 'abc' is not "
                                  "a number; the loss must be a number (NaN or inf for a diverged step)")


def test_same_logs_give_the_same_bytes(tmp_path, monkeypatch):
    out, _ = _import(tmp_path, monkeypatch, "hf")
    first = out.read_bytes()
    args = ["import", str(tmp_path / "hf"), "-o", str(tmp_path / "again.csv"), "--params", "1e8", "--json"]
    a, b = CliRunner().invoke(cli, args), CliRunner().invoke(cli, args)
    assert a.exit_code == 0 and a.stdout == b.stdout
    assert (tmp_path / "again.csv").read_bytes() == first


def test_non_physical_losses_mark_divergence_and_are_never_fitted(tmp_path):
    from lrplan.curve.prepare import select_runs as _select
    from lrplan.transfer.fit import transfer_points

    runs = []
    for name, bad in (("ok1", None), ("ok2", None), ("ok3", None), ("huge", 1e308), ("neg", -0.5)):
        steps = np.arange(100, 1100, 100)
        loss = 4.0 - steps / 1000
        if bad is not None:
            loss[6] = bad
        runs.append(pd.DataFrame({"run": name, "step": steps, "loss": loss, "lr": 1e-3, "params": 1e8,
                                  "tokens_per_step": 1e6}))
    pd.concat(runs).to_csv(tmp_path / "r.csv", index=False)
    rs = load_runs(tmp_path / "r.csv")
    for name in ("huge", "neg"):
        r = rs[name]
        assert r.diverged and r.diverged_step == 700 and 700 not in r.steps and r.loss.max() < 20
        assert any(n.startswith(f"run {name}: 1 row(s) with a loss <= 0 or above 20") for n in rs.excluded)
    used, notes = _select(rs)
    assert [r.name for r in used] == ["ok1", "ok2", "ok3"]
    points, _ = transfer_points(rs)
    assert points.loc[points.run.isin(["huge", "neg"]), "loss"].isna().all()
    assert points.loc[points.run.isin(["huge", "neg"]), "diverged"].all()


def test_mlflow_client_reads_what_the_file_store_reader_reads(tmp_path, monkeypatch):
    (store,) = write_mlflow(tmp_path, monkeypatch)
    direct = import_runs([store])
    client = import_runs([store.as_uri()])
    assert sorted(direct.runset.names) == sorted(client.runset.names) == sorted(TRUE)
    for r in direct.runset:
        c = client.runset[r.name]
        np.testing.assert_array_equal(r.steps, c.steps)
        np.testing.assert_array_equal(r.loss, c.loss)
        np.testing.assert_array_equal(r.lr, c.lr)
        assert (r.params, r.tokens_per_step, r.warmup_steps) == (c.params, c.tokens_per_step, c.warmup_steps)
    assert {r.file for r in client.runs} != {r.file for r in direct.runs}


def test_wandb_chart_exports_of_several_runs(tmp_path):
    """The UI's chart export: Step, 'RUN - KEY' (+ __MIN/__MAX) columns; the loss and the LR chart in two files."""
    frames = {}
    for key in ("val/loss", "lr"):
        cols = {}
        for name, t in TRUE.items():
            steps = t["log_steps"]
            if key == "lr":
                vals = t["lr"][steps - 1]
            else:
                ev = dict(zip(t["eval"][:, 0].astype(int), t["eval"][:, 1], strict=True))
                vals = np.array([ev.get(s, np.nan) for s in steps])
            cols[f"{name} - {key}"] = vals
            cols[f"{name} - {key}__MIN"] = vals
            cols[f"{name} - {key}__MAX"] = vals
        frames[key] = pd.DataFrame({"Step": TRUE["small-lr"]["log_steps"], **cols})
    frames["val/loss"].to_csv(tmp_path / "loss_chart.csv", index=False)
    frames["lr"].to_csv(tmp_path / "lr_chart.csv", index=False)
    imp = import_runs([tmp_path / "loss_chart.csv", tmp_path / "lr_chart.csv"], settings={"params": PARAMS})
    for name in TRUE:
        steps, loss, lr = _expected(name)
        r = imp.runset[name]
        np.testing.assert_array_equal(r.steps, steps)
        np.testing.assert_allclose(r.loss, loss, rtol=1e-12)
        np.testing.assert_allclose(r.lr[steps - 1], lr, rtol=1e-12)
        assert r.warmup_steps == WARMUP
    # the same chart twice is one run logged twice, not a merge
    with pytest.raises(DataError, match=r"run 'small-lr' is also in .*loss_chart\.csv \(both log 'val/loss'\)"):
        import_runs([tmp_path / "loss_chart.csv", tmp_path / "loss_chart.csv"])


def test_trainer_state_of_lists_is_refused_by_entry(tmp_path):
    hist = [{"loss": [4.0, 3.9], "step": [1, 2]}, {"loss": [3.8, 3.7], "step": [3, 4]}]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": hist}))
    with pytest.raises(DataError, match=r"trainer_state\.json: key 'loss', run '.*', log_history entry 1: \[4\.0, 3\.9\] is not a number"):
        import_runs([tmp_path / "trainer_state.json"])
