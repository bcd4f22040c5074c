"""Benchmark: LR transfer on real sweeps with the largest model size held out (run by hand).

For each data set (Step Law MoE sweeps; the (Mis)Fitting Scaling Laws grid), fits lrplan's
transfer model to every size but the largest, then for each held-out (N, D, batch) cell with
at least 3 LRs reports: the recommended LR vs the cell's empirical optimum (vertex of a
quadratic fit of loss vs log LR), the excess loss of the recommendation (on that quadratic,
relative to its minimum), whether the optimum falls in lrplan's 80% interval of lr*, and
the predicted vs observed best loss, and how often the 95% interval of the predicted final
loss at each of the cell's swept LRs (``compare[].final_loss``) holds the observed loss; the
practitioners' baselines beside it: the Step Law procedure (OLS of log LR over each cell's runs
within 0.25% of its best), Bjorck et al.'s vertex power law, and the nearest fitted cell's
optimum. ``--no-calibrate`` plans without the leave-out calibration of the law's miss (lrplan
before it); ``--calibrations default,independent,zero-mean,independent-zero-mean`` scores the
same fit with each variant of the calibration (`lrplan.transfer.calibrate.calibrate_transfer`:
with or without the signed drift, with each refit's misses sharing its slope or independent).
Those two sets have no licence: they stay outside the repository; pass the folder that holds
them.

    python examples/benchmark_sweeps.py DATA_DIR [--sets steplaw,misfitting,misfitting-curves] [--variants]
        [--no-calibrate | --calibrations default,zero-mean,...] [--cell-effects auto|on|off]
        [--warmup 1000] [--samples 1000] [--chains 2]
"""

import argparse
import os
import pickle
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

jax.config.update("jax_enable_x64", True)

from lrplan.data import load_runs  # noqa: E402
from lrplan.evaluate.baselines import bjorck_fit, cell_optima, nearest_lr_fit, step_law_fit  # noqa: E402
from lrplan.transfer.calibrate import VARIANTS, discrepancy_of, leave_out_misses  # noqa: E402
from lrplan.transfer.decide import Target, plan  # noqa: E402
from lrplan.transfer.fit import compare_variants, fit_transfer, transfer_points  # noqa: E402


def steplaw(root: Path) -> pd.DataFrame:
    s = pd.read_csv(root / "steplaw-moe" / "moe_lr_bs_loss.csv")
    loss = s["smooth loss"].where(np.isfinite(s["smooth loss"]) & (s["smooth loss"] <= 5))
    return pd.DataFrame({
        "run": s["exp_name"], "step": s["ti"], "loss": loss, "params": s["Na"].astype(float),
        "tokens_per_step": s["bs"] * 2048.0, "peak_lr": s["lr"], "total_steps": s["ti"]})


def misfitting(root: Path) -> pd.DataFrame:
    m = pd.read_csv(root / "misfitting" / "scaling_results_last_ckpt_only.csv")
    return pd.DataFrame({
        "run": [f"{a}_{b}_{c}_{d}" for a, b, c, d in zip(m["model"], m["train_tokens"], m["peak_lr"],
                                                          m["sweep"], strict=True)],
        "step": m["total_steps"], "loss": m["C4 Eval Loss"], "params": m["N_no_emb"].astype(float),
        "tokens_per_step": 1048576.0, "peak_lr": m["peak_lr"], "total_steps": m["total_steps"],
        "warmup_steps": 50, "schedule": "cosine:final=0.1,warmup=50"})


def misfitting_curves(root: Path) -> pd.DataFrame:
    """The same grid with every logged checkpoint: curves, not just final losses."""
    m = pd.read_csv(root / "misfitting" / "scaling_results.csv")
    # train_tokens counts tokens so far here: a run is (model, planned steps, lr, sweep)
    key = ["model", "total_steps", "peak_lr", "sweep"]
    run = m[key].astype(str).agg("_".join, axis=1)
    # a few runs log a checkpoint just past their planned steps (256 of 250): plan to that step
    m["total_steps"] = m.groupby(key)["current_steps"].transform("max").clip(lower=m["total_steps"])
    return pd.DataFrame({
        "run": run,
        "step": m["current_steps"], "loss": m["C4 Eval Loss"], "params": m["N_no_emb"].astype(float),
        "tokens_per_step": 1048576.0, "peak_lr": m["peak_lr"], "total_steps": m["total_steps"],
        "warmup_steps": 50, "schedule": "cosine:final=0.1,warmup=50"})


def sweep_frame(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"params": df["params"], "tokens": df["total_steps"] * df["tokens_per_step"],
                         "tokens_per_step": df["tokens_per_step"], "lr": df["peak_lr"],
                         "loss": df["loss"], "diverged": ~np.isfinite(df["loss"])})


def quad_excess(cell: pd.DataFrame, lr: float) -> float:
    """Loss at ``lr`` on the cell's quadratic in log LR, over its minimum, relative."""
    ok = cell[~cell["diverged"]]
    c = np.polyfit(np.log(ok["lr"]), ok["loss"], 2)
    x_min = -c[1] / (2 * c[0])
    f = np.poly1d(c)
    return float((f(np.log(lr)) - f(x_min)) / f(x_min))


def run_set(name: str, df: pd.DataFrame, args) -> list[str]:
    df = df.drop_duplicates(["run", "step"])
    top = df["params"].max()
    train, test = df[df["params"] < top], df[df["params"] == top]
    test = test.sort_values("step").groupby("run", sort=False).tail(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.csv"
        train.to_csv(path, index=False)
        runs = load_runs(path)
        t0 = time.perf_counter()
        points, notes = transfer_points(runs)
        cells_opt = {"auto": None, "on": True, "off": False}[args.cell_effects]
        sampler = dict(num_warmup=args.warmup, num_samples=args.samples, chains=args.chains)
        cached = args.fit_cache and Path(args.fit_cache, f"{name}.pkl")
        if cached and cached.exists():
            fit = pickle.loads(cached.read_bytes())
        elif args.variants:
            fit, table = compare_variants(points, seed=args.seed, notes=tuple(notes),
                                          cell_effects=cells_opt, **sampler)
            print(table.to_string())
        else:
            fit = fit_transfer(points, lr_law=args.lr_law, bowl=args.bowl, seed=args.seed,
                               notes=tuple(notes), cell_effects=cells_opt, **sampler)
        wall = time.perf_counter() - t0
        if cached and not cached.exists():
            cached.write_bytes(pickle.dumps(fit))
    kinds = ["none"] if args.no_calibrate else args.calibrations.split(",")
    lines = []
    t1 = time.perf_counter()
    misses = None if args.no_calibrate else leave_out_misses(fit, seed=args.seed)
    wall_cal = time.perf_counter() - t1
    for kind in kinds:
        cal = fit if kind == "none" else replace(
            fit, discrepancy=discrepancy_of(fit, *misses, seed=args.seed, **VARIANTS[kind]))
        lines += score(f"{name}, calibration: {kind}", cal, train, test, points, top, wall,
                       wall_cal, args)
    return lines


def score(name, fit, train, test, points, top, wall, wall_cal, args) -> list[str]:
    d = fit.diagnostics
    ex = {k: np.quantile(fit.flat(k), [0.1, 0.5, 0.9]) for k in ("c_n", "c_d", "c_b")}
    train_sweep = sweep_frame(train.sort_values("step").groupby("run", sort=False).tail(1))
    step = step_law_fit(train_sweep)
    others = {"Bjorck": bjorck_fit(train_sweep), "nearest": nearest_lr_fit(train_sweep)}
    held = sweep_frame(test)
    optima = cell_optima(held)
    n_div = int(points["diverged"].sum())
    variant = f"{fit.config.lr_law} lr*, {fit.config.bowl} bowl"
    lines = [f"### {name} ({variant}): fit on N < {top:.3g} ({train['run'].nunique()} runs, "
             f"{n_div} diverged, "
             f"{int((~points['diverged']).sum())} loss points) in {wall:.0f} s"
             + ("" if fit.discrepancy is None else f" + {wall_cal:.0f} s of leave-out refits")
             + f"; predict N = {top:.3g}; cell effects {'on' if fit.config.cell_effects else 'off'}",
             "",
             f"R-hat max {d.r_hat_max:.3f}, ESS min {d.ess_bulk_min:.0f}, divergences {d.divergences}; "
             + ", ".join(f"{k} {v[1]:.3f} [{v[0]:.3f}, {v[2]:.3f}]" for k, v in ex.items())
             + f"; Step Law OLS: {', '.join(f'{k} {v:.3f}' for k, v in step.coef.items())}"
             + ("" if not fit.config.cell_effects else
                f"; cell sd of log lr* {np.median(fit.flat('cell_lr_sd')):.3f}, of the loss "
                f"{np.median(fit.flat('cell_loss_sd')):.4f}")
             + ("" if fit.discrepancy is None else
                "; leave-out miss: "
                + ", ".join(f"{k} {v:.3g}" for k, v in fit.discrepancy.to_json().items()
                            if isinstance(v, float | int))
                + "; drift per unit: " + (", ".join(
                    f"{k} {v['lr']:+.3f} (lr*), {v['loss']:+.4f} (loss)"
                    for k, v in fit.discrepancy.drift_summary().items()) or "none")),
             "",
             "| N | D | batch | optimum | lrplan rec | 80% lr* | in 80% | excess | "
             "Step Law | excess | pred best loss (95%) | obs best | losses in 95% | law's share |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    hits, ratios, excess, s_ratios, s_excess, loss_err = [], [], [], [], [], []
    o_ratios, o_excess = {k: [] for k in others}, {k: [] for k in others}
    loss_hits, shares = [], []
    for o in optima.itertuples():
        if not o.vertex:
            continue
        cell = held[(held["params"] == o.params) & (held["tokens"] == o.tokens)
                    & (held["tokens_per_step"] == o.tokens_per_step)]
        steps = int(round(o.tokens / o.tokens_per_step))
        target = Target(o.params, o.tokens, o.tokens_per_step, "cosine:final=0.1", steps,
                        steps // 100)
        ok = cell[~cell["diverged"]]
        res = plan(fit, target, seed=args.seed, compare_lrs=tuple(ok["lr"]))
        lo, hi = np.quantile(res.lr_star, [0.1, 0.9])
        cell_hits = [bool(np.quantile(res.compare_loss[float(x)], 0.025) <= y
                          <= np.quantile(res.compare_loss[float(x)], 0.975))
                     for x, y in zip(ok["lr"], ok["loss"], strict=True)]
        loss_hits += cell_hits
        share = 1.0 - res.lr_sources.get("law", 1.0)
        shares.append(share)
        for k, rule in others.items():
            lr_k = float(rule.predict(o.params, o.tokens, o.tokens_per_step))
            o_ratios[k].append(np.log(lr_k / o.lr_opt))
            o_excess[k].append(quad_excess(cell, lr_k))
        rec, s_lr = res.recommended_lr, float(step.predict(o.params, o.tokens, o.tokens_per_step))
        hit = lo <= o.lr_opt <= hi
        e, se = quad_excess(cell, rec), quad_excess(cell, s_lr)
        q = np.quantile(res.final_loss, [0.025, 0.975])
        hits.append(hit)
        ratios.append(np.log(rec / o.lr_opt))
        s_ratios.append(np.log(s_lr / o.lr_opt))
        excess.append(e)
        s_excess.append(se)
        loss_err.append(abs(res.final_loss.mean() - o.best_loss) / o.best_loss)
        lines.append(f"| {o.params:.3g} | {o.tokens:.3g} | {o.tokens_per_step:.3g} | {o.lr_opt:.3g} | "
                     f"{rec:.3g} | {lo:.3g}-{hi:.3g} | {'yes' if hit else 'no'} | {e:.2%} | "
                     f"{s_lr:.3g} | {se:.2%} | {res.final_loss.mean():.4f} ({q[0]:.3f}-{q[1]:.3f}) | "
                     f"{o.best_loss:.4f} | {sum(cell_hits)}/{len(cell_hits)} | {1 - share:.0%} |")
    lines += ["",
              f"{len(hits)} cells with a vertex: lrplan |log(rec/opt)| mean {np.mean(np.abs(ratios)):.3f}, "
              f"excess mean {np.mean(excess):.2%}, optimum in 80% interval {np.mean(hits):.0%}, "
              f"best-loss rel. error {np.mean(loss_err):.2%}; Step Law |log(lr/opt)| mean "
              f"{np.mean(np.abs(s_ratios)):.3f}, excess mean {np.mean(s_excess):.2%}; "
              + "; ".join(f"{k} |log(lr/opt)| mean {np.mean(np.abs(o_ratios[k])):.3f}, excess mean "
                          f"{np.mean(o_excess[k]):.2%}" for k in others)
              + f"; swept runs' final losses inside lrplan's 95% interval {np.mean(loss_hits):.0%} "
              f"of {len(loss_hits)}; share of lr*'s variance from the law's discrepancy (cell + "
              f"extrapolation) mean {np.mean(shares):.0%}", ""]
    return lines


def main(argv=None) -> dict[str, list[str]]:
    """Print each set's table; return its lines by set."""
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--sets", default="steplaw,misfitting")
    ap.add_argument("--variants", action="store_true", help="compare the four variants by LOO")
    ap.add_argument("--lr-law", default="loglinear")
    ap.add_argument("--bowl", default="linex")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-calibrate", action="store_true", help="plan without the leave-out refits")
    ap.add_argument("--calibrations", default="default",
                    help=f"comma list of {', '.join(VARIANTS)} (see calibrate_transfer)")
    ap.add_argument("--fit-cache", default=None,
                    help="folder: reuse the transfer fit pickled there by an earlier run")
    ap.add_argument("--cell-effects", choices=("auto", "on", "off"), default="auto")
    ap.add_argument("--warmup", type=int, default=1000, help="NUTS warmup of the transfer fit")
    ap.add_argument("--samples", type=int, default=1000, help="NUTS draws per chain")
    ap.add_argument("--chains", type=int, default=2)
    args = ap.parse_args(argv)
    out = {}
    loaders = {"steplaw": ("Step Law MoE sweeps", steplaw), "misfitting": ("(Mis)Fitting grid", misfitting),
               "misfitting-curves": ("(Mis)Fitting grid, every checkpoint", misfitting_curves)}
    for key in args.sets.split(","):
        title, load = loaders[key]
        out[key] = run_set(title, load(args.data_dir), args)
        print("\n".join(out[key]), flush=True)
    return out


if __name__ == "__main__":
    main()
