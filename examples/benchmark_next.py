"""Benchmark: does `lrplan next` predict what a new small sweep actually teaches?

Simulates LR sweeps from a known transfer law, fits them, and scores the default candidate
sweeps for a target 10x larger and 10x longer than the largest fitted run. Then, for every
candidate, it simulates the candidate's runs from the true law, refits with them added, and
measures the posterior sd of log lr* at the target that this really leaves. Prints, per
candidate, the predicted and the realised sd (mean over --reps outcomes), the rank
correlation between them, and the wall time of scoring against a refit.

With --data-dir, the same on a real sweep ((Mis)Fitting Scaling Laws, not redistributable):
fit the sizes below the two largest, score the real 3-LR cells of the second-largest size as
candidates for the largest size's longest run, and refit with each cell's real runs added.

    python examples/benchmark_next.py [--reps 2] [--settings one-horizon,full-grid] [--data-dir DIR]
        [--warmup 300] [--samples 400] [--chains 2] [--candidates K]
        [--data-warmup 1000] [--data-samples 1000]

``--candidates K`` refits only the first K candidates of each setting (all by default).
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

jax.config.update("jax_enable_x64", True)

from lrplan.evaluate.simulate import log_lr_centre, simulate_sweep  # noqa: E402
from lrplan.transfer.decide import Target, plan, target_unannealed  # noqa: E402
from lrplan.transfer.fit import POINT_COLUMNS, fit_transfer, points_from_frame  # noqa: E402
from lrplan.transfer.nextrun import Candidate, next_run  # noqa: E402

TRUTH = dict(E=1.9, A=0.6, a=0.34, B=0.5, b=0.28, log_lr0=np.log(2e-3), c_n=-0.6, c_d=-0.3,
             c_b=0.4, kappa=0.04, asym=0.0, skew=1.0, k_anneal=0.1, div_offset=1.5, div_width=0.3,
             sigma=0.005)
REFS = (1e8, 2e9, 1e6)
TARGET = Target(params=1.2e9, tokens=2e10, tokens_per_step=1e6, schedule="cosine:final=0.1",
                steps=20000, warmup_steps=200)
SETTINGS = {
    "one-horizon": [(n, 2e9, 1e6) for n in (2e7, 5e7, 1.2e8)],
    "full-grid": [(n, d, 1e6) for n in (2e7, 5e7, 1.2e8) for d in (5e8, 2e9)],
}
LR_FACTORS = np.exp(np.linspace(-1.5, 2.2, 8))


def fit(frame: pd.DataFrame, seed: int, *, num_warmup: int = 300, num_samples: int = 400, chains: int = 2):
    return fit_transfer(points_from_frame(frame), seed=seed, num_warmup=num_warmup, num_samples=num_samples,
                        chains=chains)


def sd_at_target(f, t: Target = TARGET) -> float:
    grid = f.lr_grid(t.params, t.tokens, t.tokens_per_step, size=401)  # as lrplan plan and next
    loss = f.expected_loss(t.params, t.tokens, t.tokens_per_step, grid, target_unannealed(f, t))
    return float(np.log(grid[np.argmin(loss, axis=1)]).std())


def main(argv=None) -> dict[str, tuple[list[float], list[float]]]:
    """Print the tables; return each setting's (predicted, realised) sds per candidate."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--settings", default="one-horizon,full-grid")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=300, help="NUTS warmup of the simulated sweeps' fits")
    ap.add_argument("--samples", type=int, default=400, help="NUTS draws per chain of those fits")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--candidates", type=int, default=None, help="refit only the first K candidates")
    ap.add_argument("--data-dir", help="folder holding misfitting/ (not redistributable)")
    ap.add_argument("--data-warmup", type=int, default=1000, help="NUTS warmup of the real sweep's fits")
    ap.add_argument("--data-samples", type=int, default=1000, help="NUTS draws per chain of those fits")
    args = ap.parse_args(argv)
    sampler = dict(num_warmup=args.warmup, num_samples=args.samples, chains=args.chains)
    out = {}
    for setting in filter(None, args.settings.split(",")):
        base = simulate_sweep(TRUTH, SETTINGS[setting], LR_FACTORS, refs=REFS, seed=args.seed + 3)
        t0 = time.perf_counter()
        f0 = fit(base, args.seed, **sampler)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = next_run(plan(f0, TARGET), seed=args.seed)
        score_s = time.perf_counter() - t0
        print(f"\n{setting}: {len(base)} runs; sd of log lr* at the target now {res.lr_sd:.3f}; "
              f"scoring {len(res.table)} candidates {score_s:.1f} s, one refit {fit_s:.1f} s")
        print(f"{'params':>8} {'tokens':>8} {'runs':>4} {'predicted sd':>12} {'realised sd':>16} {'ess':>5}")
        predicted, realised = [], []
        for i, row in res.table.head(args.candidates).iterrows():
            cell = (row["params"], row["tokens"], row["tokens_per_step"])
            centre = log_lr_centre(TRUTH, REFS, *cell)  # simulate_sweep's LRs are factors of it
            sds = []
            for rep in range(args.reps):
                new = simulate_sweep(TRUTH, [cell], np.asarray(row["lrs"]) / np.exp(centre), refs=REFS,
                                     seed=1000 * (i + 1) + rep)
                new["run"] = [f"new{i}_{k}" for k in range(len(new))]
                sds.append(sd_at_target(fit(pd.concat([base, new], ignore_index=True), args.seed, **sampler)))
            predicted.append(row["lr_sd_after"])
            realised.append(np.mean(sds))
            print(f"{cell[0]:8.3g} {cell[1]:8.3g} {len(row['lrs']):4d} {row['lr_sd_after']:12.3f} "
                  f"{np.mean(sds):9.3f} +- {np.std(sds):.3f} {row['ess']:5.0f}", flush=True)
        summarise(predicted, realised)
        out[setting] = (predicted, realised)
    if args.data_dir:
        out["misfitting"] = misfitting(Path(args.data_dir), args.seed, num_warmup=args.data_warmup,
                                       num_samples=args.data_samples, chains=args.chains)
    return out


def cell_of(t: Target):
    return t.params, t.tokens, t.tokens_per_step


def summarise(predicted, realised):
    rho = spearmanr(predicted, realised).statistic
    ratio = np.array(predicted) / np.array(realised)
    print(f"rank correlation predicted vs realised {rho:.2f}; predicted / realised "
          f"{ratio.min():.2f}-{ratio.max():.2f} (median {np.median(ratio):.2f})")


def misfitting(data: Path, seed: int, *, num_warmup: int = 1000, num_samples: int = 1000, chains: int = 2):
    d = pd.read_csv(data / "misfitting" / "scaling_results_last_ckpt_only.csv")
    loss = d["C4 Eval Loss"].astype(float)
    df = pd.DataFrame({"run": [f"r{i}" for i in range(len(d))], "params": d["N_no_emb"],
                       "tokens": d["train_tokens"], "tokens_per_step": 1048576.0, "lr": d["peak_lr"],
                       "loss": loss, "diverged": ~np.isfinite(loss), "unannealed": np.nan, "final": True})
    sizes = np.sort(df["params"].unique())
    base = df[df["params"] < sizes[-2]]
    # lrplan plan's default sampler settings: the real sweep is harder than the simulated ones
    fit_one = lambda frame: fit_transfer(frame[list(POINT_COLUMNS)], seed=seed,  # noqa: E731
                                         num_warmup=num_warmup, num_samples=num_samples, chains=chains)
    f0 = fit_one(base)
    big = df[df["params"] == sizes[-1]]
    tokens = float(big["tokens"].max())
    target = Target(float(sizes[-1]), tokens, 1048576.0, "constant", int(tokens / 1048576.0), 0)
    cells = {k: g for k, g in df[df["params"] == sizes[-2]].groupby("tokens")}
    cands = [Candidate(float(sizes[-2]), float(t), 1048576.0, tuple(g["lr"].astype(float)))
             for t, g in cells.items()]
    res = next_run(plan(f0, target), cands, seed=seed)
    print(f"\nmisfitting: fit {len(base)} runs of N < {sizes[-2]:.3g}; target N={sizes[-1]:.3g}, "
          f"D={tokens:.3g}; sd of log lr* now {res.lr_sd:.3f} (a refit of the same runs: "
          f"{sd_at_target(f0, target):.3f})")
    print(f"{'params':>8} {'tokens':>8} {'runs':>4} {'predicted sd':>12} {'realised sd':>11} {'ess':>5}")
    predicted, realised = [], []
    for row in res.table.itertuples():
        f1 = fit_one(pd.concat([base, cells[row.tokens]], ignore_index=True))
        real = sd_at_target(f1, target)
        predicted.append(row.lr_sd_after)
        realised.append(real)
        before, after = (np.median(f.lr_star(*cell_of(target))) for f in (f0, f1))
        print(f"{row.params:8.3g} {row.tokens:8.3g} {len(row.lrs):4d} {row.lr_sd_after:12.3f} "
              f"{real:11.3f} {row.ess:5.0f}  refit: lr* median {after:.3g} (before {before:.3g}), "
              f"R-hat {f1.diagnostics.r_hat_max:.3f}", flush=True)
    summarise(predicted, realised)
    return predicted, realised


if __name__ == "__main__":
    main()
