"""Every script in examples/ run with tiny settings, so the examples cannot rot.

Scripts that read outside data (not redistributable, never read by the tests) run on a tiny
folder written here in the same file layout and columns. Each test checks the script's output,
not only that it ran; none writes into the repository (outputs go under ``tmp_path``).
"""

import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lrplan.evaluate.simulate import CHINCHILLA_TRUTH, simulate_isoflop, simulate_sweep

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NUTS = ["--chains", "1", "--warmup", "20", "--samples", "20"]


def script(name: str) -> dict:
    """The namespace of ``examples/<name>.py`` (its ``__main__`` block not run)."""
    return runpy.run_path(str(EXAMPLES / f"{name}.py"))


def table_rows(text: str, first: str) -> list[list[str]]:
    """The cells of the Markdown table rows of ``text`` whose first cell is ``first``."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]
    return [r for r in rows if r[0] == first]


# ---------------------------------------------------------------- tiny stand-ins of the outside data

# a transfer law with a batch term (the loss is worst away from a critical batch growing with D)
SWEEP_TRUTH = dict(E=1.9, A=0.6, a=0.34, B=0.5, b=0.28, log_lr0=np.log(2e-3), c_n=-0.6, c_d=-0.3,
                   c_b=0.4, kappa=0.04, asym=0.0, skew=1.0, k_anneal=0.1, div_offset=1.5, div_width=0.3,
                   sigma=0.005, g_b=0.01, b_opt=0.0, b_d=0.5)
LR_FACTORS = np.exp(np.linspace(-1.2, 1.2, 5))


def sweep(cells, seed: int) -> pd.DataFrame:
    """A simulated LR sweep (final losses) with each run's planned tokens as ``tokens``."""
    n0 = np.exp(np.mean(np.log([c[0] for c in cells])))
    df = simulate_sweep(SWEEP_TRUTH, cells, LR_FACTORS, refs=(n0, 4e9, 2.6e5), schedule="constant",
                        seed=seed)
    df["tokens"] = np.repeat([c[1] for c in cells], len(LR_FACTORS))
    return df


def write_steplaw(root: Path) -> None:
    """``steplaw-moe/moe_lr_bs_loss.csv``: 3 sizes x 2 token counts x 3 batches x 5 LRs."""
    cells = [(n, d, bs * 2048.0) for n in (1e8, 2e8, 4e8) for d in (2e9, 8e9) for bs in (64, 128, 256)]
    df = sweep(cells, seed=1)
    (root / "steplaw-moe").mkdir(parents=True)
    pd.DataFrame({"exp_name": [f"moe_{i}" for i in range(len(df))], "Na": df["params"].astype(int),
                  "D": df["tokens"].astype(int), "bs": (df["tokens_per_step"] / 2048).astype(int),
                  "lr": df["peak_lr"], "ti": df["total_steps"], "smooth loss": df["loss"]}
                 ).to_csv(root / "steplaw-moe" / "moe_lr_bs_loss.csv", index=False)


def write_misfitting(root: Path) -> None:
    """``misfitting/scaling_results_last_ckpt_only.csv``: 4 sizes x 2 horizons x 5 LRs, 1M batch."""
    batch = 1048576.0
    cells = [(n, steps * batch, batch) for n in (2e7, 5e7, 1.2e8, 3e8) for steps in (1000, 4000)]
    df = sweep(cells, seed=2)
    (root / "misfitting").mkdir(parents=True)
    pd.DataFrame({"model": [f"misfitting_{n / 1e6:.0f}m" for n in df["params"]],
                  "N_no_emb": df["params"].astype(int), "train_tokens": df["tokens"].astype(int),
                  "total_steps": df["total_steps"], "current_steps": df["total_steps"],
                  "peak_lr": df["peak_lr"], "sweep": "sweep_test", "C4 Eval Loss": df["loss"]}
                 ).to_csv(root / "misfitting" / "scaling_results_last_ckpt_only.csv", index=False)


OLMO_LOSS, OLMO_LR = "eval/c4_en-validation/CrossEntropyLoss", "optim/learning_rate_group0"


def write_olmo_wsd(root: Path, size: str = "1M", n_params: float = 1e6, batch: float = 2e4,
                   peak: float = 1e-3) -> None:
    """OLMo's WSD runs of one size: INDEX.csv, the constant run to 10xC and five cooldowns."""
    folder = root / "olmo-ladder"
    (folder / "peteish-moreeval-const").mkdir(parents=True)
    (folder / "peteish-moreeval-decay").mkdir()
    pd.DataFrame([{"file": f"peteish-moreeval-const/{size}-10xC.csv", "n_params": n_params,
                   "batch_tokens": batch, "peak_lr": peak}]).to_csv(folder / "INDEX.csv", index=False)

    def loss(step, lr):  # a power law in the steps, lowered by the cooldown
        return 2.5 + 1.5 * (1.0 + step / 200.0) ** -0.4 - 0.15 * (1 - np.asarray(lr) / peak)

    horizon = {x: int(x * 20 * n_params / batch) for x in (0.5, 1, 2, 5, 10)}
    const = np.arange(50, horizon[10] + 1, 50)
    pd.DataFrame({"_step": const, OLMO_LR: peak, OLMO_LOSS: loss(const, peak)}).to_csv(
        folder / "peteish-moreeval-const" / f"{size}-10xC.csv", index=False)
    for x, end in horizon.items():
        start = int(0.9 * end) + 1
        steps = np.arange(start, end + 1, 10)
        lr = peak * (1 - 0.9 * (steps - start + 1) / (end - start + 1))
        name = f"{x:g}xC"
        pd.DataFrame({"_step": steps, OLMO_LR: lr, OLMO_LOSS: loss(steps, lr)}).to_csv(
            folder / "peteish-moreeval-decay" / f"{size}-{name}.csv", index=False)


def write_porian(root: Path) -> None:
    """``porian-isoflop/isoflop_points_long.csv``: two settings of 4 budgets x 5 sizes."""
    frames = []
    for dataset, seed in (("rw", 0), ("owt2", 1)):
        budgets = [1e17, 2e17, 4e17, 3.2e18]
        df = simulate_isoflop(CHINCHILLA_TRUTH, budgets, sizes=5, spread=3.0, noise=0.003, seed=seed)
        frames.append(pd.DataFrame({
            "source_file": "summary_df", "dataset": dataset, "hparams": "base", "warmup": "long",
            "decay": "kaplan", "param_count": "kaplan", "val": "train",
            "flops": np.repeat(budgets, 5), "N": df["params"], "D_tokens": df["tokens_per_step"],
            "loss": df["loss"]}))
    (root / "porian-isoflop").mkdir(parents=True)
    pd.concat(frames).to_csv(root / "porian-isoflop" / "isoflop_points_long.csv", index=False)


# ---------------------------------------------------------------- the scripts


def test_benchmark_curves_prints_a_row_per_law(capsys):
    module = script("benchmark_curves")
    module["main"](["--sizes", "100M", "--laws", "annealing", "--warmup", "50", "--samples", "50"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    authors, annealing = rows
    assert authors[:2] == ["100M", "authors"] and float(authors[2]) == pytest.approx(0.00142, abs=2e-5)
    assert annealing[:2] == ["100M", "annealing"]
    mean_err, train_err, cov95 = float(annealing[2]), float(annealing[4]), float(annealing[6])
    assert 0 < train_err < mean_err < 0.01 and 0.5 < cov95 <= 1


@pytest.mark.slow
def test_benchmark_backtest_multipower_part_has_a_row_per_method(tmp_path):
    out = tmp_path / "backtest.md"
    text = script("benchmark_backtest")["main"](
        ["--parts", "multipower", "--sizes", "25M", *NUTS, "--boot", "2", "--out", str(out)])
    assert out.read_text() == text and "## Loss curves" in text and "## LR sweeps" not in text
    rows = {r[2]: r for r in table_rows(text, "multipower")}
    assert set(rows) == {"lrplan", "huber", "nearest"}
    header = next(r for r in table_rows(text, "data"))
    for method, row in rows.items():
        cell = dict(zip(header, row, strict=True))
        assert cell["runs"] == "6" and 0 < float(cell["mean_rel_err"]) < 0.05, method
        if method != "nearest":
            assert 0 <= float(cell["cover95"]) <= 1


@pytest.mark.slow
def test_benchmark_backtest_wsd_and_sweeps_parts_on_tiny_data(tmp_path):
    write_olmo_wsd(tmp_path)
    write_steplaw(tmp_path)
    write_misfitting(tmp_path)
    out = tmp_path / "backtest.md"
    text = script("benchmark_backtest")["main"](
        ["--parts", "olmo-wsd,sweeps", "--data-dir", str(tmp_path), "--wsd-sizes", "1M", *NUTS, "--boot", "2",
         "--sweep-warmup", "20", "--sweep-samples", "20", "--out", str(out)])
    assert out.exists() and "## LR sweeps" in text
    assert {r[2] for r in table_rows(text, "olmo-wsd")} == {"lrplan", "huber", "nearest"}
    assert {r[0] for r in table_rows(text, "misfitting") + table_rows(text, "steplaw-moe")} == {
        "misfitting", "steplaw-moe"}


def test_benchmark_backtest_says_which_parts_need_data():
    with pytest.raises(SystemExit):
        script("benchmark_backtest")["main"](["--parts", "sweeps"])


@pytest.mark.slow  # ~30 CPU s even with tiny settings: CI's budget
def test_batch_steplaw_on_a_tiny_sweep(tmp_path, capsys):
    write_steplaw(tmp_path)
    out = tmp_path / "batch.md"
    text = script("batch_steplaw")["main"]([str(tmp_path), *NUTS, "--write", "--out", str(out)])
    assert out.read_text() == text and "batch term identified: True" in text
    held = [r for r in table_rows(text, "2e+09") + table_rows(text, "8e+09") if len(r) == 8]
    assert len(held) == 2  # one row per held-out token count
    for r in held:
        assert r[3] in ("yes", "no") and np.isfinite(float(r[1]))
    assert "for" in text and "/6 (cell, batch) pairs" in text  # 2 cells x 3 tested batches


@pytest.mark.slow
def test_benchmark_sweeps_on_tiny_sweeps(tmp_path):
    write_steplaw(tmp_path)
    write_misfitting(tmp_path)
    out = script("benchmark_sweeps")["main"]([str(tmp_path), "--sets", "steplaw,misfitting", *NUTS])
    assert set(out) == {"steplaw", "misfitting"}
    for key, lines in out.items():
        text = "\n".join(lines)
        cells = [r for r in text.splitlines() if r.startswith("| ") and r[2].isdigit()]
        assert cells, key  # a row per held-out cell with a vertex
        assert all(r.split("|")[7].strip() in ("yes", "no") for r in cells)
        assert "leave-out miss" in text and f"{len(cells)} cells with a vertex" in text


@pytest.mark.slow
def test_benchmark_next_simulated_and_real_layout(tmp_path):
    write_misfitting(tmp_path)
    out = script("benchmark_next")["main"](
        ["--settings", "one-horizon", "--reps", "1", "--candidates", "2", *NUTS, "--data-dir", str(tmp_path),
         "--data-warmup", "20", "--data-samples", "20"])
    assert set(out) == {"one-horizon", "misfitting"}
    predicted, realised = out["one-horizon"]
    assert len(predicted) == len(realised) == 2
    predicted, realised = out["misfitting"]
    assert len(predicted) == 2  # the second-largest size's two horizons as candidates
    assert np.all(np.isfinite(predicted)) and np.all(np.asarray(realised) > 0)


@pytest.mark.slow
def test_benchmark_speed_memory_task(capsys):
    out = script("benchmark_speed")["main"](["--tasks", "memory", "--fits", "2", "--boot", "2"])
    (mine,), (boot,) = out["memory"], out["boot_memory"]
    assert "error" not in mine and "error" not in boot, (mine, boot)
    assert mine["compiles_first"] > 0 and mine["seconds"] > 0 and mine["maps_last"] > 0
    assert "| compiles_first |" in capsys.readouterr().out


def test_budget_porian_on_a_tiny_grid(tmp_path):
    write_porian(tmp_path)
    out = tmp_path / "porian.md"
    res = script("budget_porian")["main"](
        ["--data-dir", str(tmp_path), "--settings", "1", *NUTS, "--boot", "3", "--write", "--out", str(out),
         "--drifts", "calibrated,slab"])
    assert len(res) == 1 and res["train_budgets"].iloc[0] == 3
    row = res.iloc[0]
    assert row["true_N"] > 0 and np.isfinite(row["lrplan_logerr_N"]) and np.isfinite(row["chin_logerr_N"])
    assert abs(row["lrplan_relerr_loss"]) < 0.1 and row["lrplan_width80_N"] >= 1
    # one fit, two drifts: the same median law, the spike only narrows
    assert 0 < row["lrplan_none_n"] < 1 and row["lrplan_slab_none_n"] == 0
    assert row["lrplan_width80_N"] <= row["lrplan_slab_width80_N"] * 1.05
    text = out.read_text()
    assert "lrplan (posterior + calibrated drift)" in text and "Chinchilla approach 3" in text
    assert "without its spike" in text


def test_budget_simulation_one_replicate(tmp_path):
    out = tmp_path / "sim.md"
    rows = script("budget_simulation")["main"](
        ["--replicates", "1", "--budgets", "4", "--warmup", "30", "--samples", "30", "--write", "--out",
         str(out), "--drifts", "calibrated,none"])
    assert [r["drift"] for r in rows] == ["calibrated", "none"]
    for r in rows:
        assert r["in50"] <= r["in80"] <= r["in95"]  # nested intervals
        assert 1 <= r["width50"] <= r["width80"] <= r["width95"] and abs(r["log_err"]) < 1
    assert rows[0]["folds"] >= 1 and rows[0]["drift_n"] > 0 and rows[1]["drift_n"] == 0
    assert 0 < rows[0]["none_n"] < 1 and rows[1]["none_n"] == 0
    text = out.read_text()
    assert "drift none" in text and "80% interval of N*: covers the truth in" in text


@pytest.mark.slow
def test_calibration_ladder_one_replicate(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))  # it imports benchmark_backtest, as run from examples/
    out = tmp_path / "calibration.md"
    table = script("calibration_ladder")["main"](["--reps", "1", *NUTS, "--out", str(out)])
    assert set(table["split"]) == {"size (3B)", "horizon (5-10xC)", "size+horizon"}
    for c in ("cov80 within 10 pts", "cov80 over by > 10", "cov80 under by > 10", "final in 80%"):
        assert table[c].between(0, 1).all()
    assert "# Calibration of OLMo's size-horizon backtest" in out.read_text()


@pytest.mark.slow  # ~30 CPU s even with tiny settings: CI's budget
def test_sbc_transfer_draws_the_truth_from_the_priors():
    module = script("sbc_transfer")
    priors = module["load_priors"]("transfer")
    a, b = (module["draw"](priors, np.random.default_rng(7)) for _ in range(2))
    assert a == b  # the same seed, the same truth
    assert all(a[k] > 0 for k in ("kappa", "A", "a", "B", "b", "sigma"))  # lognormal / halfnormal
    cov = module["main"](["--sweeps", "1", *NUTS])
    assert cov["sweeps"] == 1 and all(0 <= cov[k] <= 1 for k in ("lr_star", "c_n", "c_d", "a", "b"))


@pytest.mark.slow
def test_transfer_misspecified_one_sweep(tmp_path):
    module = script("transfer_misspecified")
    out = tmp_path / "scores.csv"
    res = module["main"](["--sweeps", "1", *NUTS, "--out", str(out)])
    assert list(res["variant"]) == ["cells", "cells", "cells+calibration", "cells+calibration"]
    assert res["in80"].dtype == bool and (res["loss_in95"] <= res["losses"]).all()
    assert (res["width80"] > 0).all() and np.isfinite(res["abs_log_ratio"]).all()
    again = module["main"](["--summarize", str(out)])
    assert len(again) == len(res)


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.py") if p.stem != "__init__"))
def test_every_script_has_main_and_help(name, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    with pytest.raises(SystemExit) as stop:
        script(name)["main"](["--help"])
    assert stop.value.code == 0 and "usage:" in capsys.readouterr().out


class Parsed(Exception):
    """Raised by the patched parser in place of running the script."""


def documented_commands() -> list[tuple[str, list[str]]]:
    """Every ``python examples/X.py ARGS`` written in the README and examples/*.md."""
    import re

    found = set()
    for doc in [EXAMPLES.parent / "README.md", *EXAMPLES.glob("*.md")]:
        for name, args in re.findall(r"python examples/(\w+)\.py((?: +[^\s`\[\]|()]+)*)", doc.read_text()):
            found.add((name, args.strip()))
    return sorted((name, args.split()) for name, args in found)


@pytest.mark.parametrize(("name", "args"), documented_commands(),
                         ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_documented_command_lines_still_parse(name, args, tmp_path, monkeypatch):
    import argparse

    monkeypatch.syspath_prepend(str(EXAMPLES))
    parse = argparse.ArgumentParser.parse_args

    def parse_only(self, argv=None, namespace=None):
        parse(self, argv, namespace)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    with pytest.raises(Parsed):
        script(name)["main"]([str(tmp_path) if a == "DATA_DIR" else a for a in args])
