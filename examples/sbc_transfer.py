"""Simulation-based calibration of the transfer model (run by hand; a few minutes per 10 sweeps).

Draws a true law from the model's priors (each term's distribution as the model itself draws it,
`lrplan.bayes.prior_distribution`: exponents, linex bowl, annealing and divergence terms; the
irreducible loss from N(1.8, 0.3)), simulates an LR sweep of 3 sizes x 2 horizons x 7 LRs at
one batch (the sweep centred on a guess within a factor ~e of the true optimum, runs diverging
as the law says, Gaussian seed noise), fits it, and checks whether the true lr* at a target 10x
beyond the largest size falls in the 80% interval, and the true exponents in their 90%
intervals. Prints the coverage over all sweeps and a line per sweep.

    python examples/sbc_transfer.py [--sweeps 50] [--seed 0] [--warmup 400] [--samples 400] [--chains 2]
"""

import argparse
import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

from lrplan.bayes import prior_distribution  # noqa: E402
from lrplan.evaluate.simulate import simulate_sweep, true_lr_star  # noqa: E402
from lrplan.priors import load_priors  # noqa: E402
from lrplan.schedules import lr_schedule, unannealed_fraction  # noqa: E402
from lrplan.transfer.fit import fit_transfer, points_from_frame  # noqa: E402

SIZES = (2e7, 5e7, 1.2e8)
HORIZONS = (1e9, 4e9)
BATCH = 5e5
TARGET = (1.2e9, 4e9, BATCH)
EXPONENTS = ("c_n", "c_d", "a", "b")
DRAWN = ("c_n", "c_d", "c_b", "kappa", "skew", "A", "a", "B", "b", "k_anneal", "div_offset", "div_width",
         "sigma")


def draw(priors, rng):
    """A true law: the terms of ``DRAWN`` from their priors, the rest fixed or drawn as documented."""
    keys = jax.random.split(jax.random.PRNGKey(int(rng.integers(1 << 31))), len(DRAWN))
    t = {k: float(prior_distribution(priors[k]).sample(key)) for k, key in zip(DRAWN, keys, strict=True)}
    t["asym"] = 0.0  # the linex bowl (the default) has its own asymmetry, skew
    t["E"] = rng.normal(1.8, 0.3)
    t["log_lr0"] = np.log(1e-3)
    return t


def main(argv=None) -> dict[str, float]:
    """Print a line per sweep and the coverages; return the coverages (and the sweeps fitted)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweeps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=400, help="NUTS warmup of each fit")
    ap.add_argument("--samples", type=int, default=400, help="NUTS draws per chain")
    ap.add_argument("--chains", type=int, default=2)
    args = ap.parse_args(argv)
    priors = load_priors("transfer")
    rng = np.random.default_rng(args.seed)
    refs = (np.exp(np.log(SIZES).mean()), np.exp(np.log(HORIZONS).mean()), BATCH)
    steps = int(TARGET[1] / BATCH)
    w = float(unannealed_fraction(lr_schedule("cosine:final=0.1", steps=steps, peak_lr=1.0,
                                              warmup_steps=steps // 100))[-1])
    hits_lr, hits = [], {k: [] for k in EXPONENTS}
    t0 = time.perf_counter()
    for i in range(args.sweeps):
        truth = draw(priors, rng)
        factors = np.exp(np.linspace(-1.8, 1.8, 7) + rng.normal(0, 0.5))
        df = simulate_sweep(truth, [(n, d, BATCH) for n in SIZES for d in HORIZONS], factors,
                            refs=refs, seed=int(rng.integers(1 << 31)))
        if df["loss"].notna().sum() < 8:
            print(f"sweep {i}: fewer than 8 runs survived; skipped", flush=True)
            continue
        fit = fit_transfer(points_from_frame(df), seed=i, num_warmup=args.warmup, num_samples=args.samples,
                           chains=args.chains)
        true = true_lr_star(truth, refs, *TARGET, unannealed=w)
        lo, hi = np.quantile(fit.lr_star(*TARGET, unannealed=w), [0.1, 0.9])
        hits_lr.append(lo <= true <= hi)
        mark = "in " if hits_lr[-1] else "OUT"
        line = [f"sweep {i:3d}: lr* true {true:.3g} 80% [{lo:.3g}, {hi:.3g}] {mark}"]
        for k in EXPONENTS:
            q = np.quantile(fit.flat(k), [0.05, 0.95])
            hits[k].append(q[0] <= truth[k] <= q[1])
            line.append(f"{k} {truth[k]:.3f} {'in' if hits[k][-1] else 'OUT'}")
        d = fit.diagnostics
        line.append(f"r_hat {d.r_hat_max:.3f} div {d.divergences} "
                    f"diverged runs {int(df['loss'].isna().sum())}")
        print("; ".join(line), flush=True)
    n = len(hits_lr)
    print(f"\n{n} sweeps in {time.perf_counter() - t0:.0f} s")
    print(f"lr* at 10x the largest size: 80% interval covers the truth in {np.mean(hits_lr):.0%}")
    for k in EXPONENTS:
        print(f"{k}: 90% interval covers the truth in {np.mean(hits[k]):.0%}")
    return {"sweeps": n, "lr_star": float(np.mean(hits_lr)),
            **{k: float(np.mean(hits[k])) for k in EXPONENTS}}


if __name__ == "__main__":
    main()
