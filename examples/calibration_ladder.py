"""Calibration study of OLMo's size and horizon backtest in a world where lrplan's model is true.

OLMo's backtest (fit the 190M-1B runs of <= 2x Chinchilla tokens; predict 3B, the 5x / 10x
runs, and both) has few held-out runs per split: three 3B runs, two 3B runs beyond 2x. Runs of
one size share that size's extrapolation error, so a split's pooled coverage is close to one
draw of it: near 1 when that error is small against the interval, near 0 when not. What does a
calibrated method then score? This script answers by simulation:

1. fit the backtest's training runs (the real bundled ladder), as the backtest does;
2. per replicate, take one posterior draw and replicate all 25 runs from it
   (`lrplan.curve.predict.replicate_runs`: the law plus Student-t noise at the fitted scale; 3B is a
   new group drawn from that draw's population);
3. run the same backtest on the replicate and score its held-out runs against that truth.

The truths come from the posterior of the real fit, not from the prior, so calibration is
approximate (exact simulation-based calibration draws from the prior), but the model holds
exactly. Prints and writes per split: the real backtest's coverage, then over replicates the
mean coverage, the share of replicates whose 80% coverage is within 10 points of nominal, over
it by more, and under it by more, and the share of held-out runs whose final loss lies in the
80% interval.

    python examples/calibration_ladder.py [--holdout size-horizon|rolling] [--reps 40]
        [--law annealing] [--seed 0] [--out examples/calibration_<holdout>.md]
        [--warmup 300] [--samples 500] [--chains 2]

``--holdout rolling`` runs OLMo's rolling size hold-out (each size but the largest as the
cutoff, every larger run predicted) on the same replicates instead.
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

jax.config.update("jax_enable_x64", True)

from benchmark_backtest import olmo_extrapolates  # noqa: E402

from lrplan.curve.fit import fit_curves  # noqa: E402
from lrplan.curve.predict import replicate_runs  # noqa: E402
from lrplan.data import RunSet, load_runs  # noqa: E402
from lrplan.evaluate.backtest import backtest_curves, markdown_table  # noqa: E402
from lrplan.examples import example_path  # noqa: E402

HERE = Path(__file__).resolve().parent
HOLDOUTS = {"size-horizon": "size:1.5e9;horizon:ratio=50", "rolling": "size:rolling"}


def scored(runs: RunSet, args, seed: int) -> pd.DataFrame:
    res = backtest_curves(runs, HOLDOUTS[args.holdout], law=args.law, methods=("lrplan",), seed=seed,
                          chains=args.chains, num_warmup=args.warmup, num_samples=args.samples)
    pr = res.per_run.copy()
    if args.holdout == "rolling":  # per fold (a fold's runs share its fit), and all of them
        return pd.concat([pr.assign(split="fit " + pr["fold"]), pr.assign(split="all folds")])
    pr["split"] = olmo_extrapolates(pr)
    return pr


def pooled(pr: pd.DataFrame) -> pd.DataFrame:
    """Per split: coverage pooled over points, as the backtest's summary pools it."""
    rows = []
    for split, g in pr.groupby("split", sort=False):
        w = g["n_points"].to_numpy(float)
        rows.append({"split": split, "runs": len(g),
                     **{f"cover{lv}": float(np.sum(g[f"cover{lv}"] * w) / w.sum()) for lv in (50, 80, 95)},
                     "final_in80": float(g["final_in80"].mean()),
                     "mean_rel_err": float(g["mean_rel_err"].mean())})
    return pd.DataFrame(rows)


def trio(row: pd.Series) -> str:
    """'cover50/cover80/cover95' of a row."""
    return "/".join(f"{row[f'cover{lv}']:.2f}" for lv in (50, 80, 95))


def main(argv=None) -> pd.DataFrame:
    """Print and write the table; return it."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--holdout", choices=sorted(HOLDOUTS), default="size-horizon")
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--law", default="annealing")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--chains", type=int, default=2, help="NUTS chains of the backtests' fits")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    out = args.out or HERE / f"calibration_{args.holdout.replace('-', '_')}.md"
    t0 = time.perf_counter()
    runs = load_runs(example_path("olmo-ladder", "runs.csv"), meta=example_path("olmo-ladder", "meta.csv"))
    # the truth: the fit of the size and horizon backtest's training runs (<= 1B, <= 2xC)
    train = RunSet(runs=tuple(r for r in runs if r.params < 1.5e9
                              and r.total_steps * r.tokens_per_step / r.params <= 50), source=runs.source)
    truth = fit_curves(train, law=args.law, seed=args.seed, num_warmup=args.warmup, num_samples=args.samples)
    real = pooled(scored(runs, args, args.seed)).set_index("split")
    print(f"real data: {time.perf_counter() - t0:.0f} s\n{real}", flush=True)
    draws = np.random.default_rng(args.seed).choice(truth.flat("L0_group").shape[0], args.reps, replace=False)
    reps = []
    for i, d in enumerate(draws):
        pr = scored(replicate_runs(truth, runs, draw=int(d), seed=args.seed + i), args, args.seed + i)
        reps.append(pooled(pr).assign(rep=i))
        if i % 8 == 7:
            # each fit compiles its own model, and JAX keeps every executable for the life of
            # the process (~1000 memory maps a fit): about 60 fits exhaust the kernel's limit
            jax.clear_caches()
        print(f"replicate {i + 1}/{args.reps} ({time.perf_counter() - t0:.0f} s):",
              ", ".join(f"{s} cov80 {c:.2f}" for s, c in zip(reps[-1]["split"], reps[-1]["cover80"],
                                                              strict=True)), flush=True)
    sims = pd.concat(reps)
    rows = []
    for split, g in sims.groupby("split", sort=False):
        c80 = g["cover80"].to_numpy()
        rows.append({"split": split, "held-out runs": int(real.loc[split, "runs"]),
                     "real cov50/80/95": trio(real.loc[split]),
                     "replicates' mean cov50/80/95": trio(g.mean(numeric_only=True)),
                     "cov80 within 10 pts": float(np.mean(np.abs(c80 - 0.8) <= 0.1)),
                     "cov80 over by > 10": float(np.mean(c80 > 0.9)),
                     "cov80 under by > 10": float(np.mean(c80 < 0.7)),
                     "final in 80%": float(g["final_in80"].mean()),
                     "real mean err": float(real.loc[split, "mean_rel_err"]),
                     "replicates' mean err": float(g["mean_rel_err"].mean())})
    table = pd.DataFrame(rows)
    text = [f"# Calibration of OLMo's {args.holdout} backtest, when the model is true", "",
            f"Produced by `python examples/calibration_ladder.py --holdout {args.holdout} --reps {args.reps} "
            f"--law {args.law} --warmup {args.warmup} --samples {args.samples} --seed {args.seed}` in "
            f"{time.perf_counter() - t0:.0f} s on a shared 2-core CPU. See the script's docstring for the "
            "method. Coverage is of central predictive intervals, pooled over the held-out points of a "
            "split; the shares are of replicates (runs, for 'final in 80%').", "",
            markdown_table(table), ""]
    Path(out).write_text("\n".join(text))
    print("\n".join(text))
    return table


if __name__ == "__main__":
    main()
