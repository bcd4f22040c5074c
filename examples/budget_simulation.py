"""Calibration of ``lrplan budget`` where its law holds: replicates drawn from a known L*(N, D).

Each replicate is an isoflop grid drawn from Hoffmann et al.'s fitted law (`CHINCHILLA_TRUTH`,
Gaussian noise of sd ``--noise`` nats on every run): ``--budgets`` budgets doubling from
1e17 FLOPs, 7 sizes each from N*/4 to 4 N*. lrplan fits it (NUTS, leave-budget-out drift
calibration) and plans the budget 8x the largest fitted one; the script counts how often the
true N* lies in the 50 / 80 / 95% intervals of the posterior of N*, and the log error of the
recommended N. Where the law holds, coverage should be near nominal: the 80% interval should
hold the truth in 70-90% of 50 replicates (a binomial 90% range for 50 draws at 0.8 is 0.70-0.88).

Usage: ``python examples/budget_simulation.py [--replicates 50] [--write] [--out FILE]
[--warmup 500] [--samples 1000] [--chains 1] [--drifts calibrated,none,prior]``; results in
``examples/budget_simulation.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from lrplan import budget as bu  # noqa: E402
from lrplan.evaluate.metrics import binomial_interval  # noqa: E402
from lrplan.evaluate.simulate import CHINCHILLA_TRUTH, simulate_isoflop, true_params_optimum  # noqa: E402

LEVELS = (0.5, 0.8, 0.95)


DRIFTS = ("calibrated", "slab", "none", "prior")


def replicate(seed: int, *, budgets: int = 6, noise: float = 0.01, chains: int = 1,
              num_warmup: int = 500, num_samples: int = 1000,
              drifts: tuple[str, ...] = ("calibrated",)) -> list[dict]:
    """One replicate: simulate, fit, plan 8x beyond; whether the true N* is in each interval.

    Each of ``drifts`` plans from the same fit: "calibrated" (leave-budget-out drift, lrplan's
    default), "slab" (the same forecasts, the rates without their spike at zero), "none" (the
    law's posterior alone), "prior" (the drift rates' priors).
    """
    flops = 1e17 * 2.0 ** np.arange(budgets)
    df = simulate_isoflop(CHINCHILLA_TRUTH, flops, noise=noise, seed=seed)
    pts, _ = bu.points_from_frame(df.rename(columns={"tokens_per_step": "tokens"}))
    law = bu.fit_budget(pts, seed=seed, chains=chains, num_warmup=num_warmup, num_samples=num_samples)
    priors = bu.load_priors("budget")
    target = 8 * flops[-1]
    true_n = float(true_params_optimum(CHINCHILLA_TRUTH, target))
    calibrated = {"calibrated", "slab"} & set(drifts)
    folds = bu.drift_forecasts(pts, priors=priors, seed=seed) if calibrated else None
    rows = []
    for kind in drifts:
        if kind == "calibrated":
            drift = bu.drift_posterior(folds, priors=priors, seed=seed)
        elif kind == "slab":
            drift = bu.drift_posterior(folds, priors=priors, seed=seed, p_none=0.0)
        elif kind == "prior":
            drift = bu.prior_drift(priors, seed=seed)
        else:
            drift = bu.Drift(rates=np.zeros((1, 2)), source="none")
        res = bu.decide_budget(law, target, drift=drift, seed=seed)
        log_star = np.log(res.params_star)
        out = {"seed": seed, "drift": kind, "true_N": true_n, "recommended": res.recommended,
               "log_err": float(np.log(res.recommended / true_n)),
               "drift_n": float(np.mean(drift.rates[:, 0])), "none_n": drift.none_prob[0],
               "folds": len(drift.folds)}
        for level in LEVELS:
            a = (1 - level) / 2
            lo, hi = np.quantile(log_star, [a, 1 - a])
            out[f"in{int(level * 100)}"] = bool(lo <= np.log(true_n) <= hi)
            out[f"width{int(level * 100)}"] = float(np.exp(hi - lo))
        rows.append(out)
    return rows


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=50)
    ap.add_argument("--budgets", type=int, default=6)
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=1)
    ap.add_argument("--drifts", default="calibrated",
                    help=f"comma list, each scored on the same fits: {', '.join(DRIFTS)}")
    ap.add_argument("--write", action="store_true", help="write the results to --out")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("budget_simulation.md"))
    args = ap.parse_args(argv)
    drifts = tuple(args.drifts.split(","))
    if not set(drifts) <= set(DRIFTS):
        ap.error(f"--drifts: choose from {', '.join(DRIFTS)}")
    rows = []
    t0 = time.time()
    for seed in range(args.replicates):
        for r in replicate(seed, budgets=args.budgets, noise=args.noise, chains=args.chains,
                           num_warmup=args.warmup, num_samples=args.samples, drifts=drifts):
            rows.append(r)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
    n = args.replicates
    lines = [f"replicates: {n}, budgets fitted: {args.budgets}, noise sd {args.noise}, target 8x "
             f"the largest fitted budget, NUTS {args.chains} chain(s) x {args.warmup} warmup + "
             f"{args.samples} draws, wall {time.time() - t0:.0f} s"]
    for kind in drifts:
        mine = [r for r in rows if r["drift"] == kind]
        rate = np.median([r["drift_n"] for r in mine])
        p0 = np.median([r["none_n"] for r in mine])
        lines.append(f"drift {kind} ({np.median([r['folds'] for r in mine]):.0f} leave-budget-out "
                     f"forecasts; medians over replicates: mean drift rate {rate:.4f} per e-fold, "
                     f"P(no drift) {p0:.2f}):")
        for level in LEVELS:
            k = sum(r[f"in{int(level * 100)}"] for r in mine)
            lo, hi = binomial_interval(k, n)
            width = np.median([r[f"width{int(level * 100)}"] for r in mine])
            lines.append(f"  {level:.0%} interval of N*: covers the truth in {k}/{n} = {k / n:.2f} "
                         f"(90% binomial range {lo:.2f}-{hi:.2f}); median width x{width:.3g}")
        err = np.array([r["log_err"] for r in mine])
        lines.append(f"  recommended N: mean log error {err.mean():+.4f}, "
                     f"rms {np.sqrt((err ** 2).mean()):.4f}")
    print("\n".join(lines))
    if args.write:
        text = ["# lrplan budget on isoflop grids drawn from a known law", "",
                f"Written by `python examples/budget_simulation.py --write --replicates {args.replicates} "
                f"--budgets {args.budgets} --noise {args.noise} --chains {args.chains} --warmup "
                f"{args.warmup} --samples {args.samples} --drifts {args.drifts}`.", "",
                *[f"- {line}" if not line.startswith("  ") else line for line in lines], ""]
        args.out.write_text("\n".join(text))
    return rows


if __name__ == "__main__":
    main()
