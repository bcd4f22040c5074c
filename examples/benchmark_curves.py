"""Benchmark: Luo et al.'s schedule-transfer split on the bundled curves, each law, every size.

Fits each size's train schedules (cosine_24000, constant_24000, wsdcon_9) and predicts the six
test schedules from their exact per-step LR. Prints per-size mean / worst relative error of
the posterior-mean law (averaged over test curves, as in Luo et al. Table 1), the coverage of
the 80% and 95% predictive intervals (pooled over points), the 95% intervals' median relative
width, diagnostics and the fit's wall time. The row "authors" is Luo et al.'s released point
fit of the multi-power law, scored the same way: the baseline in the same run. "auto" is the
default: both laws weighed by stacking of their held-out scores (weights printed); its wall
time beside the one-law rows is the cost of choosing the law. "train err" is
each row's mean relative error on the three train curves it was fitted to (after warmup): a
fit of this split should be close to them.

    python examples/benchmark_curves.py [--sizes 25M,100M,400M] [--laws multipower,annealing,auto]
        [--warmup 400] [--samples 1000]
"""

import argparse
import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

from lrplan import laws  # noqa: E402
from lrplan.curve.fit import fit_curves  # noqa: E402
from lrplan.curve.model import law_parameters  # noqa: E402
from lrplan.curve.predict import predict_curve  # noqa: E402
from lrplan.examples import MULTIPOWER_AUTHORS_FIT, multipower_example  # noqa: E402

PAPER = {"25M": (0.0012, 0.0040), "100M": (0.0013, 0.0058), "400M": (0.0019, 0.0070)}


def rel_errors(law_at, runs):
    """|law - y| / y per run, at the logged steps from the end of warmup on."""
    out = []
    for r in runs:
        keep = r.steps >= r.warmup_steps
        out.append(np.abs(law_at(r, keep) - r.loss[keep]) / r.loss[keep])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="25M,100M,400M")
    ap.add_argument("--laws", default="multipower,annealing,auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=400)
    ap.add_argument("--samples", type=int, default=1000)
    args = ap.parse_args(argv)
    print(f"{'size':5} {'law':10} {'mean err':>8} {'worst':>7} {'train err':>9} {'paper':>13} {'cov80':>6} "
          f"{'cov95':>6} {'width95':>7} {'r_hat':>6} {'ess':>5} {'div':>3} {'fit s':>6}")
    for size in args.sizes.split(","):
        train, test = multipower_example(size)
        if size in MULTIPOWER_AUTHORS_FIT:
            params = dict(zip(law_parameters("multipower"), MULTIPOWER_AUTHORS_FIT[size], strict=True))

            def authors(r, keep, params=params):
                return np.asarray(laws.multipower_loss(laws.multipower_features(
                    r.lr, r.steps[keep], warmup_steps=r.warmup_steps), **params))

            errs = rel_errors(authors, test)
            print(f"{size:5} {'authors':10} {np.mean([e.mean() for e in errs]):8.5f} "
                  f"{np.mean([e.max() for e in errs]):7.5f} "
                  f"{np.mean([e.mean() for e in rel_errors(authors, train)]):9.5f}", flush=True)
        for law in args.laws.split(","):
            t0 = time.perf_counter()
            fit = fit_curves(train, law=law, seed=args.seed, num_warmup=args.warmup,
                             num_samples=args.samples)
            wall = time.perf_counter() - t0
            means, worsts, hits80, hits, widths = [], [], [], [], []
            for r in test:
                keep = r.steps >= r.warmup_steps
                pred = predict_curve(fit, r.lr, r.steps[keep], warmup_steps=r.warmup_steps)
                y = r.loss[keep]
                err = np.abs(pred.law.mean(axis=0) - y) / y
                q = pred.quantiles()
                means.append(err.mean())
                worsts.append(err.max())
                hits80.append((y >= q["0.1"]) & (y <= q["0.9"]))
                hits.append((y >= q["0.025"]) & (y <= q["0.975"]))
                widths.append((q["0.975"] - q["0.025"]) / y)

            def posterior_mean(r, keep, fit=fit):
                return predict_curve(fit, r.lr, r.steps[keep], warmup_steps=r.warmup_steps).law.mean(axis=0)

            train_err = np.mean([e.mean() for e in rel_errors(posterior_mean, train)])
            d = fit.diagnostics
            paper = f"{PAPER[size][0]:.4f}/{PAPER[size][1]:.4f}" if law == "multipower" else ""
            print(f"{size:5} {law:10} {np.mean(means):8.5f} {np.mean(worsts):7.5f} {train_err:9.5f} "
                  f"{paper:>13} {np.concatenate(hits80).mean():6.3f} {np.concatenate(hits).mean():6.3f} "
                  f"{np.median(np.concatenate(widths)):7.4f} "
                  f"{d.r_hat_max:6.3f} {d.ess_bulk_min:5.0f} {d.divergences:3d} {wall:6.1f}"
                  + ("  weights " + ", ".join(f"{s.law} {s.weight:.2f}" for s in fit.scores)
                     if law == "auto" else "")
                  + ("  MISFIT" if d.misfit else ""),
                  flush=True)


if __name__ == "__main__":
    main()
