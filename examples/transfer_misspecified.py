"""Coverage of lr* at a held-out larger size when the truth is a law lrplan does not have (by hand).

Each replicate draws a dense LR sweep from a truth outside the transfer model:

- log lr* curved in log N (``c_nn`` ~ U(0.04, 0.10) per e-fold squared, upward at scale), plus
  a cell-level effect ~ Normal(0, tau) in log lr*, tau ~ U(0.1, 0.2) per replicate;
- another bowl: an asymmetric quartic, ``kappa r u^2`` below the optimum and
  ``kappa (u^2 + q u^4)`` above it (lrplan fits a linex bowl);
- a loss level with a size-data interaction Chinchilla's form lacks, and a cell-level offset;
- Gaussian seed noise, and runs far above the optimum diverging.

4 sizes x 2 horizons (8 cells) x 9 LRs around a guess of each cell's optimum are fitted; the two
cells at a 4x larger size (both horizons) are held out. For each it records whether the true
optimum (the held-out cell's own, effect included) lies in lrplan's 80% interval, |log ratio|
of the recommendation, and how many of the held-out cell's simulated runs lie in the 95%
interval of ``compare[].final_loss`` at their LRs, with cell effects alone and with the
leave-out calibration on top; the nearest fitted cell's optimum as a baseline. ``--today``
adds lrplan without either (no cell effects, no calibration): one more NUTS fit per replicate;
``--calibrations default,zero-mean,...`` scores each variant of the calibration
(`lrplan.transfer.calibrate.VARIANTS`) on the same fit.

    python examples/transfer_misspecified.py [--sweeps 50] [--seed 0] [--today]
        [--calibrations default,independent,zero-mean,independent-zero-mean]
        [--lr-law loglinear|curved] [--fit-cache DIR] [--out results.csv]
        [--warmup 300 --samples 300 --chains 2]
    python examples/transfer_misspecified.py --summarize results.csv   # the table of a saved run
"""

import argparse
import os
import pickle
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

jax.config.update("jax_enable_x64", True)

from lrplan.evaluate.baselines import nearest_lr_fit  # noqa: E402
from lrplan.transfer.calibrate import VARIANTS, discrepancy_of, leave_out_misses  # noqa: E402
from lrplan.transfer.decide import Target, plan  # noqa: E402
from lrplan.transfer.fit import fit_transfer, points_from_frame  # noqa: E402

SIZES = (2e7, 4e7, 8e7, 1.6e8)
HORIZONS = (1e9, 4e9)
HELD = 6.4e8
BATCH = 5e5
N0, D0 = 5.7e7, 2e9
SCHEDULE = "cosine:final=0.1"
LR_FACTORS = np.linspace(-1.6, 1.6, 9)


def draw_truth(rng):
    return {"c0": np.log(1e-3) + rng.normal(0, 0.3), "c_n": rng.normal(-0.5, 0.15),
            "c_nn": rng.uniform(0.04, 0.10), "c_d": rng.normal(-0.3, 0.1),
            "tau": rng.uniform(0.1, 0.2), "kappa": float(np.exp(rng.normal(np.log(0.03), 0.3))),
            "r": rng.uniform(0.5, 0.8), "q": rng.uniform(0.2, 0.5), "E": rng.normal(1.8, 0.2),
            "A": rng.uniform(0.4, 0.8), "a": rng.uniform(0.25, 0.4), "B": rng.uniform(0.3, 0.6),
            "b": rng.uniform(0.2, 0.35), "C": rng.uniform(0.05, 0.15), "level_sd": 0.004,
            "sigma": 0.005}


def cell_truth(t, n, d, rng) -> tuple[float, float]:
    """The cell's own log lr* and loss at it (law, curvature, cell effects)."""
    xn, xd = np.log(n / N0), np.log(d / D0)
    log_opt = t["c0"] + t["c_n"] * xn + t["c_nn"] * xn**2 + t["c_d"] * xd + t["tau"] * rng.normal()
    level = (t["E"] + t["A"] * np.exp(-t["a"] * xn) + t["B"] * np.exp(-t["b"] * xd)
             + t["C"] * np.exp(-t["a"] * xn - t["b"] * xd) + t["level_sd"] * rng.normal())
    return log_opt, level


def bowl(t, u):
    return np.where(u < 0, t["kappa"] * t["r"] * u**2, t["kappa"] * (u**2 + t["q"] * u**4))


def simulate(t, rng) -> tuple[pd.DataFrame, dict]:
    rows, held = [], {}
    for n in (*SIZES, HELD):
        for d in HORIZONS:
            log_opt, level = cell_truth(t, n, d, rng)
            guess = log_opt + rng.normal(0, 0.3)  # a practitioner centres the sweep near it
            steps = int(d / BATCH)
            for f in LR_FACTORS:
                u = guess + f - log_opt
                p_div = 1.0 / (1.0 + np.exp(-(u - 1.8) / 0.3))
                loss = (np.nan if rng.random() < p_div
                        else level + float(bowl(t, u)) + t["sigma"] * rng.normal())
                rows.append({"run": f"n{n:.2g}_d{d:.2g}_f{f:+.2f}", "step": steps, "loss": loss,
                             "params": n, "tokens_per_step": BATCH, "peak_lr": float(np.exp(guess + f)),
                             "total_steps": steps, "warmup_steps": steps // 100, "schedule": SCHEDULE})
            if n == HELD:
                held[d] = log_opt
    return pd.DataFrame(rows), held


def score(fit, df_held, held, nearest, label) -> list[dict]:
    out = []
    for d, log_opt in held.items():
        cell = df_held[(df_held["total_steps"] * BATCH == d) & df_held["loss"].notna()]
        steps = int(d / BATCH)
        res = plan(fit, Target(HELD, d, BATCH, SCHEDULE, steps, steps // 100),
                   compare_lrs=tuple(cell["peak_lr"]))
        lo, hi = np.quantile(np.log(res.lr_star), [0.1, 0.9])
        inside = [bool(np.quantile(res.compare_loss[float(x)], 0.025) <= y
                       <= np.quantile(res.compare_loss[float(x)], 0.975))
                  for x, y in zip(cell["peak_lr"], cell["loss"], strict=True)]
        out.append({"variant": label, "tokens": d, "in80": bool(lo <= log_opt <= hi),
                    "width80": float(hi - lo), "abs_log_ratio": abs(np.log(res.recommended_lr) - log_opt),
                    "nearest_abs_log_ratio": abs(np.log(float(nearest.predict(HELD, d, BATCH))) - log_opt),
                    "loss_in95": int(sum(inside)), "losses": len(inside),
                    "law_share": res.lr_sources.get("law", 1.0)})
    return out


def main(argv=None) -> pd.DataFrame:
    """Print a line per sweep and the summary table; return every replicate's scores."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweeps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--today", action="store_true", help="also fit lrplan without cell effects")
    ap.add_argument("--calibrations", default="default",
                    help=f"comma list of the calibration's variants: {', '.join(VARIANTS)}")
    ap.add_argument("--fit-cache", default=None,
                    help="folder: reuse each sweep's transfer fit pickled there by an earlier run")
    ap.add_argument("--lr-law", default="loglinear", help="the transfer model's lr* law")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--out", default=None, help="CSV of every replicate's scores")
    ap.add_argument("--summarize", default=None, help="print the table of a saved CSV and stop")
    args = ap.parse_args(argv)
    if args.summarize:
        res = pd.read_csv(args.summarize)
        print(f"{res['sweep'].nunique()} sweeps")
        print(summary(res))
        return res
    rng = np.random.default_rng(args.seed)
    rows, t0 = [], time.perf_counter()
    for i in range(args.sweeps):
        truth = draw_truth(rng)
        df, held = simulate(truth, rng)
        train, test = df[df["params"] < HELD], df[df["params"] == HELD]
        points = points_from_frame(train)
        sweep = pd.DataFrame({"params": train["params"], "tokens": train["total_steps"] * BATCH,
                              "tokens_per_step": BATCH, "lr": train["peak_lr"], "loss": train["loss"],
                              "diverged": train["loss"].isna()})
        nearest = nearest_lr_fit(sweep)
        kw = dict(seed=i, num_warmup=args.warmup, num_samples=args.samples, chains=args.chains,
                  lr_law=args.lr_law)
        cached = args.fit_cache and Path(args.fit_cache, f"{args.lr_law}-{args.seed}-{i}.pkl")
        if cached and cached.exists():
            fit = pickle.loads(cached.read_bytes())
        else:
            fit = fit_transfer(points, cell_effects=True, **kw)
            if cached:
                cached.write_bytes(pickle.dumps(fit))
        got = score(fit, test, held, nearest, "cells")
        misses = leave_out_misses(fit, seed=i)  # the refits, shared by every variant
        for kind in args.calibrations.split(","):
            cal = replace(fit, discrepancy=discrepancy_of(fit, *misses, seed=i, **VARIANTS[kind]))
            got += score(cal, test, held, nearest,
                         "cells+calibration" + ("" if kind == "default" else f" ({kind})"))
        if args.today:
            got += score(fit_transfer(points, cell_effects=False, **kw), test, held, nearest, "today")
        d = fit.diagnostics
        for g in got:
            g.update(sweep=i, r_hat=d.r_hat_max, divergences=d.divergences)
        rows += got
        print(f"sweep {i:3d} ({time.perf_counter() - t0:.0f} s): " + "; ".join(
            f"{g['variant']} {g['tokens']:.0e} {'in ' if g['in80'] else 'OUT'} "
            f"w{g['width80']:.2f} |lr| {g['abs_log_ratio']:.2f} loss {g['loss_in95']}/{g['losses']}"
            for g in got) + f"; nearest {got[0]['nearest_abs_log_ratio']:.2f}; r_hat {d.r_hat_max:.3f}",
            flush=True)
        if args.out:
            pd.DataFrame(rows).to_csv(args.out, index=False)
    res = pd.DataFrame(rows)
    print(f"\n{res['sweep'].nunique()} sweeps, {len(res) // res['variant'].nunique()} held-out cells "
          f"per variant, {time.perf_counter() - t0:.0f} s")
    print(summary(res))
    return res


def summary(res: pd.DataFrame) -> str:
    lines = ["| variant | cells | optimum in 80% | 90% CI of coverage | median 80% width (log) | "
             "mean abs log ratio | nearest cell's | runs' losses in 95% |",
             "|---|---|---|---|---|---|---|---|"]
    from scipy import stats

    for v, g in res.groupby("variant", sort=False):
        k, n = int(g["in80"].sum()), len(g)
        lo, hi = stats.beta.ppf([0.05, 0.95], k + 0.5, n - k + 0.5)
        lines.append(f"| {v} | {n} | {k / n:.0%} | {lo:.0%}-{hi:.0%} | {g['width80'].median():.2f} | "
                     f"{g['abs_log_ratio'].mean():.3f} | {g['nearest_abs_log_ratio'].mean():.3f} | "
                     f"{g['loss_in95'].sum() / g['losses'].sum():.0%} of {g['losses'].sum()} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
