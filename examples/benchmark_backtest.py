"""Benchmark: backtests of lrplan against the practitioners' baselines on real runs (by hand, not CI).

Curve backtests use the data bundled in ``examples/`` (converted from the shared copies):
- multipower: Luo et al.'s schedule hold-out (fit cosine_24000, constant_24000, wsdcon_9;
  predict the other six) for the 25M, 100M and 400M models, multi-power law;
- olmo-ladder: fit the 190M-1B runs of <= 2x Chinchilla tokens, predict 3B (size) and the
  5x / 10x runs (horizon) in one fold (``size:1.5e9;horizon:ratio=50``); the summary is split
  by what is extrapolated. Then ``size:rolling``: each size but the largest in turn as the
  cutoff, every run of the larger sizes predicted (30 held-out runs in 3 folds). Both with
  ``--olmo-law`` (default annealing: the multi-power law's fit of the first split takes ~7 min,
  and its horizon errors are less than half the annealing law's; see the README).
- olmo-wsd: OLMo's constant-LR run per size with linear cooldowns branched from it (WSD), read
  from DATA_DIR: fit the constant run up to the 2x Chinchilla branch and the 0.5x / 1x / 2x
  cooldowns, predict the 5x and 10x cooldown runs (their constant part past 2x included),
  multi-power law, one fit per size.
LR sweeps (internal-only data, read from DATA_DIR, never copied into the project): misfitting
and steplaw-moe with the largest model size held out; baselines only until the transfer
model provides lrplan's recommendation.

Writes a Markdown table of every method side by side to ``examples/backtest_results.md``.

    python examples/benchmark_backtest.py --data-dir DATA_DIR [--parts multipower,olmo,olmo-wsd,sweeps]
        [--olmo-splits first,rolling] [--sizes 25M,100M,400M] [--wsd-sizes 190M,370M,760M] [--chains 2]
        [--warmup 300] [--samples 500] [--boot 100] [--sweep-warmup 1000] [--sweep-samples 1000] [--out FILE]

``--data-dir`` is needed by the olmo-wsd and sweeps parts only.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

jax.config.update("jax_enable_x64", True)

from lrplan.data import RunSet, load_runs  # noqa: E402
from lrplan.evaluate.backtest import backtest_curves, backtest_sweep, markdown_table, transfer_recommender  # noqa: E402
from lrplan.evaluate.metrics import binomial_interval  # noqa: E402
from lrplan.examples import MULTIPOWER_TRAIN, example_path  # noqa: E402

HERE = Path(__file__).resolve().parent
CURVE_COLS = ["mean_rel_err", "worst_rel_err", "final_rel_err", "cover50", "cover80", "cover95",
              "width95", "final_in80", "final_in95", "crps_rel", "lpd"]


def runs_inside(share: float, runs: int) -> str:
    """'k/n [lo-hi]': held-out runs whose final loss is inside, with the exact 90% interval of
    the coverage that k of n allows (n is small: the interval says how little k/n pins down)."""
    if not np.isfinite(share):
        return "-"
    k = int(round(share * runs))
    lo, hi = binomial_interval(k, runs, 0.9)
    return f"{k}/{runs} [{lo:.2f}-{hi:.2f}]"


def summary_rows(res, data: str, split: str, out: list) -> None:
    """One row per method of a curve backtest's summary."""
    s = res.summary.set_index("method")
    for m in s.index:
        out.append({"data": data, "split": split, "method": m, "runs": int(s.loc[m, "runs"]),
                    **{c: s.loc[m, c] for c in CURVE_COLS}, "fit_s": res.timings[m]})


def multipower(args, out):
    runs = load_runs(example_path("multipower", "runs.csv"), meta=example_path("multipower", "meta.csv"))
    for size in args.sizes.split(","):
        mine = RunSet(runs=tuple(r for r in runs if r.name.startswith(size + "_")), source=runs.source)
        test = [r.name for r in mine if r.name[len(size) + 1:] not in MULTIPOWER_TRAIN]
        t0 = time.perf_counter()
        res = backtest_curves(mine, "schedule:" + ",".join(test), law="multipower", seed=args.seed,
                              chains=args.chains, num_warmup=args.warmup, num_samples=args.samples,
                              n_boot=args.boot)
        print(f"multipower {size}: {time.perf_counter() - t0:.0f} s", flush=True)
        summary_rows(res, "multipower", f"{size} schedules (paper split)", out)


def olmo(args, out, flush=lambda: None):
    runs = load_runs(example_path("olmo-ladder", "runs.csv"), meta=example_path("olmo-ladder", "meta.csv"))
    splits = args.olmo_splits.split(",")
    if "first" in splits:
        t0 = time.perf_counter()
        res = backtest_curves(runs, "size:1.5e9;horizon:ratio=50", law=args.olmo_law, seed=args.seed,
                              chains=args.chains, num_warmup=args.warmup, num_samples=args.samples,
                              n_boot=args.boot)
        print(f"olmo: {time.perf_counter() - t0:.0f} s", flush=True)
        pr = res.per_run.copy()
        pr["what"] = olmo_extrapolates(pr)
        grouped_rows(res, pr, "what", lambda what: f"fit <=1B, <=2xC; predict {what}", out)
        flush()
    if "rolling" in splits:
        # every size in turn as the cutoff: 30 held-out runs, enough for coverage to mean something
        t0 = time.perf_counter()
        res = backtest_curves(runs, "size:rolling", law=args.olmo_law, seed=args.seed, chains=args.chains,
                              num_warmup=args.warmup, num_samples=args.samples, n_boot=args.boot,
                              jobs=args.jobs)
        print(f"olmo rolling: {time.perf_counter() - t0:.0f} s", flush=True)
        summary_rows(res, "olmo-ladder", "rolling: fit <= each size, predict all larger ones", out)
        # and per cutoff: the runs of one fold share its fit's errors, so a fold is one draw of them
        grouped_rows(res, res.per_run, "fold", lambda fold: f"rolling, one fold: fit {fold}, predict larger",
                     out, timed=False)


def olmo_extrapolates(per_run: pd.DataFrame) -> np.ndarray:
    """What each held-out run of OLMo's size and horizon split extrapolates."""
    big = per_run["params"] > 1.5e9
    long = per_run["run"].str.extract(r"-(\d+(?:\.\d+)?)xC")[0].astype(float) > 2.5
    return np.where(big & long, "size+horizon", np.where(big, "size (3B)", "horizon (5-10xC)"))


def grouped_rows(res, per_run, by: str, split, out: list, timed: bool = True) -> None:
    """One row per (group of held-out runs, method): errors averaged, coverage pooled over points.

    ``timed=False``: the groups are folds of one backtest, whose fit time is only known in all.
    """
    for (what, m), g in per_run.groupby([by, "method"], sort=False):
        row = {"data": "olmo-ladder", "split": split(what), "method": m, "runs": int(len(g))}
        for c in CURVE_COLS:
            v = g[c].to_numpy(float)
            if c.startswith("cover"):
                w = g["n_points"].to_numpy(float)
                row[c] = np.sum(v * w) / np.sum(w) if np.isfinite(v).all() else np.nan
            else:
                row[c] = np.nanmean(v) if np.isfinite(v).any() else np.nan
        row["fit_s"] = res.timings[m] if timed else np.nan
        out.append(row)


OLMO_LOSS, OLMO_LR = "eval/c4_en-validation/CrossEntropyLoss", "optim/learning_rate_group0"


def olmo_wsd_runs(folder: Path, size: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One size's WSD runs (runs and meta tables): the constant run up to the 2xC branch, and
    each cooldown with the constant run's rows before its branch prepended."""
    index = pd.read_csv(folder / "INDEX.csv").set_index("file")
    info = index.loc[f"peteish-moreeval-const/{size}-10xC.csv"]
    const = pd.read_csv(folder / "peteish-moreeval-const" / f"{size}-10xC.csv").dropna(subset=[OLMO_LOSS])
    rows, meta = [], []

    def add(name, df):
        rows.append(pd.DataFrame({"run": name, "step": df["_step"].astype(int), "lr": df[OLMO_LR],
                                  "loss": df[OLMO_LOSS]}))
        meta.append({"run": name, "params": info.n_params, "tokens_per_step": info.batch_tokens,
                     "peak_lr": info.peak_lr, "total_steps": int(df["_step"].max()),
                     "warmup_steps": int(round(info.n_params / info.batch_tokens))})

    for x in ("0.5xC", "1xC", "2xC", "5xC", "10xC"):
        decay = pd.read_csv(folder / "peteish-moreeval-decay" / f"{size}-{x}.csv").dropna(subset=[OLMO_LOSS])
        branch = decay["_step"].min()
        if x == "2xC":
            add(f"{size}-constant-to-2xC", const[const["_step"] < branch])
        add(f"{size}-wsd-{x}", pd.concat([const[const["_step"] < branch], decay]))
    return pd.concat(rows), pd.DataFrame(meta)


def olmo_wsd(args, out):
    folder = Path(args.data_dir) / "olmo-ladder"
    for size in args.wsd_sizes.split(","):
        runs, meta = olmo_wsd_runs(folder, size)
        with tempfile.TemporaryDirectory() as tmp:  # the loader's checks apply, as to a user's files
            runs.to_csv(Path(tmp, "runs.csv"), index=False)
            meta.to_csv(Path(tmp, "meta.csv"), index=False)
            rs = load_runs(Path(tmp, "runs.csv"), meta=Path(tmp, "meta.csv"))
        t0 = time.perf_counter()
        res = backtest_curves(rs, f"schedule:{size}-wsd-5xC,{size}-wsd-10xC", law="multipower",
                              seed=args.seed, chains=args.chains, num_warmup=args.warmup,
                              num_samples=args.samples, n_boot=args.boot)
        print(f"olmo-wsd {size}: {time.perf_counter() - t0:.0f} s", flush=True)
        summary_rows(res, "olmo-wsd", f"{size}: fit constant to 2xC + 0.5-2xC cooldowns; "
                     "predict 5xC, 10xC cooldowns", out)


def sweeps(args, out):
    data = Path(args.data_dir)
    frames = {}
    f = data / "misfitting" / "scaling_results_last_ckpt_only.csv"
    if f.exists():
        d = pd.read_csv(f)
        frames["misfitting"] = pd.DataFrame({
            "params": d["N_no_emb"], "tokens": d["train_tokens"], "tokens_per_step": 1048576.0,
            "lr": d["peak_lr"], "loss": d["C4 Eval Loss"], "diverged": ~np.isfinite(d["C4 Eval Loss"])})
    f = data / "steplaw-moe" / "moe_lr_bs_loss.csv"
    if f.exists():
        d = pd.read_csv(f)
        loss = d["smooth loss"].astype(float)
        frames["steplaw-moe"] = pd.DataFrame({
            "params": d["Na"], "tokens": d["D"], "tokens_per_step": d["bs"] * 2048.0, "lr": d["lr"],
            "loss": loss, "diverged": ~np.isfinite(loss) | (loss > 5)})
    for name, df in frames.items():
        sizes = np.sort(df["params"].unique())
        res = backtest_sweep(df, f"size:{sizes[-2]:.6g}",
                             recommend=transfer_recommender(seed=args.seed, chains=args.chains,
                                                            num_warmup=args.sweep_warmup,
                                                            num_samples=args.sweep_samples))
        for rec in res.summary.to_dict(orient="records"):
            out.append({"data": name, "split": f"predict N={sizes[-1]:.3g} from N<={sizes[-2]:.3g}",
                        **rec, "fit_s": res.timings[rec["method"]]})


def main(argv=None) -> str:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir",
                    help="folder holding olmo-ladder/, misfitting/ and steplaw-moe/ (not redistributable); "
                    "needed by the olmo-wsd and sweeps parts")
    ap.add_argument("--parts", default="multipower,olmo,olmo-wsd,sweeps")
    ap.add_argument("--sizes", default="25M,100M,400M", help="model sizes of the multipower part")
    ap.add_argument("--wsd-sizes", default="190M,370M,760M", help="model sizes of the olmo-wsd part")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--boot", type=int, default=100)
    ap.add_argument("--sweep-warmup", type=int, default=1000, help="NUTS warmup of the sweeps' transfer fits")
    ap.add_argument("--sweep-samples", type=int, default=1000, help="NUTS draws of the sweeps' transfer fits")
    ap.add_argument("--olmo-law", default="annealing")
    ap.add_argument("--olmo-splits", default="first,rolling",
                    help="olmo part: 'first' (fit <=1B, <=2xC; predict 3B and 5-10xC), 'rolling' (each size "
                    "in turn as the cutoff), or both")
    ap.add_argument("--jobs", type=int, default=1, help="processes for the rolling split's folds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "backtest_results.md"))
    args = ap.parse_args(argv)
    curves, lr = [], []
    parts = args.parts.split(",")
    if args.data_dir is None and {"olmo-wsd", "sweeps"} & set(parts):
        ap.error("--data-dir is required by the olmo-wsd and sweeps parts")
    t0 = time.perf_counter()

    def write(final: bool = True) -> str:
        """The results so far, written at once (a long study keeps what it has if stopped)."""
        text = ["# Backtest results" + ("" if final else " (partial)"), "",
                f"Produced by `python examples/benchmark_backtest.py --parts {args.parts} --chains "
                f"{args.chains} --warmup {args.warmup} --samples {args.samples} --boot {args.boot} "
                f"--olmo-law {args.olmo_law} --olmo-splits {args.olmo_splits}` in "
                f"{time.perf_counter() - t0:.0f} s on a shared 2-core CPU. "
                "fit_s: wall seconds to fit (lrplan: NUTS with its held-out calibration; huber: 8-start "
                "point fit plus the block bootstrap), per split.", ""]
        if curves:
            table = pd.DataFrame(curves)
            for c in ("final_in80", "final_in95"):
                table[c] = [runs_inside(v, n) for v, n in zip(table[c], table["runs"], strict=True)]
            text += ["## Loss curves", "",
                     "Errors are relative (|pred - y| / y), averaged over held-out runs (point: lrplan's "
                     "posterior-mean law, the Huber fit, the nearest run's curve); coverage of central "
                     "intervals pooled over points; width95 the median relative width; crps_rel mean "
                     "CRPS / loss; lpd mean log predictive density (Gaussian KDE of the draws). "
                     "final_in80 / final_in95: held-out runs whose final loss lies inside the 80% / 95% "
                     "interval, with the exact 90% interval of the coverage that count allows. "
                     "nearest is a point: no intervals.", "", markdown_table(table), ""]
        if lr:
            text += ["## LR sweeps", "",
                     "log ratio = ln(recommended / empirical optimum of the held-out cell); rel_excess = "
                     "loss at the recommended LR (interpolated in the cell) over the best, minus 1; "
                     "outside_sweep = recommendations outside the cell's swept LRs (no excess computed).",
                     "", markdown_table(pd.DataFrame(lr)), ""]
        Path(args.out).write_text("\n".join(text))
        return "\n".join(text)

    if "multipower" in parts:
        multipower(args, curves)
    if "olmo" in parts:
        olmo(args, curves, flush=lambda: write(final=False))
    if "olmo-wsd" in parts:
        olmo_wsd(args, curves)
    if "sweeps" in parts:
        sweeps(args, lr)
    text = write()
    print(text)
    return text


if __name__ == "__main__":
    main()
