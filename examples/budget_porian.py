"""Backtest ``lrplan budget`` on Porian et al.'s isoflop grids, beside Chinchilla's approach 3.

For each setting of Porian et al. 2024 (data set x hyperparameters x warmup x decay x
parameter count x loss split; 15 grids of 11-12 budgets, 1.25e16-2.56e19 FLOPs), fit the
budgets up to 1/8 of the largest and predict, at the largest budget, the compute-optimal size
N* and the best loss. The truth is the largest budget's empirical optimum: the vertex of a
quadratic in log N through all its runs (`lrplan.budget.fit.isoflop_vertex`). Both methods see
the same points: every run within ``--max-excess`` (10%) of the best loss at its budget (far
from the optimum the grids hold runs of a few hundred steps that no Chinchilla-form law
describes).

- lrplan: `fit_budget` (NUTS) + `calibrate_drift` (leave-budget-out forecasts of the fitted
  budgets' own optima) + `decide_budget`; N* and the best loss are each draw's minimiser and
  minimum of its isoflop curve, miss included.
- Chinchilla approach 3: Huber (delta 1e-3) on log loss from a grid of starts, and intervals
  from 100 bootstrap refits (Hoffmann et al. 2022; Besiroglu et al. 2024).

Prints one table (and writes ``examples/budget_porian.md`` with ``--write``): log error of N*
(predicted median over the vertex), relative error of the best loss, whether the vertex lies
in each 80% interval, and the 80% interval's width (ratio hi/lo for N*).

Usage: ``python examples/budget_porian.py --data-dir DATA_DIR [--write] [--settings K]
[--drifts calibrated,slab] [--warmup 1000] [--samples 1000] [--chains 2] [--boot 100] [--out FILE]``
(DATA_DIR holds ``porian-isoflop/isoflop_points_long.csv``, derived from the summary files of
github.com/formll/resolving-scaling-law-discrepancies, MIT). Under a minute per setting on two
CPU cores, most of it Chinchilla's bootstrap.

Porian et al. 2024, "Resolving Discrepancies in Compute-Optimal Scaling of Language Models",
arXiv:2406.19146.
"""

from __future__ import annotations

import argparse
import ast
import os
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lrplan import budget as bu  # noqa: E402
from lrplan.evaluate.backtest import markdown_table  # noqa: E402
from lrplan.evaluate.baselines import chinchilla_fit  # noqa: E402

SETTING = ["source_file", "dataset", "hparams", "warmup", "decay", "param_count", "val"]
LEVEL = 0.8


def interval(draws, level=LEVEL):
    a = (1 - level) / 2
    return np.quantile(draws, [a, 1 - a])


def lrplan_predict(train: pd.DataFrame, flops: float, seed: int, drifts=("calibrated",), **sampler):
    """Per drift variant: draws of log N* and of the best loss, and the drift; one fit for all.

    "calibrated" is lrplan's default; "slab" the same forecasts with the rates' spike at zero
    left out (a half-normal rate alone).
    """
    law = bu.fit_budget(train, seed=seed, **sampler)
    folds = bu.drift_forecasts(train, seed=seed)
    out = {}
    for kind in drifts:
        drift = bu.drift_posterior(folds, seed=seed, p_none=0.0 if kind == "slab" else None)
        res = bu.decide_budget(law, flops, drift=drift, seed=seed)
        out[kind] = (np.log(res.params_star), res.curves.min(axis=1), drift)
    return law, out


def chinchilla_predict(train: pd.DataFrame, flops: float, seed: int, n_boot: int):
    fit = chinchilla_fit(train["params"], train["tokens"], train["loss"], n_boot=n_boot, seed=seed)
    grid = bu.params_grid(flops, bu.FlopsPerToken(), None, 801)

    def optimum(values):
        c = fit.loss(grid, flops / (6 * grid), values)
        i = int(np.argmin(c))
        return np.log(grid[i]), c[i]

    point = optimum(None)
    boot = np.array([optimum(v) for v in fit.boot])
    boot = boot[np.all(np.isfinite(boot), axis=1)]
    return point, boot


def only(name: str):
    """The settings whose name contains ``name`` (rerun one)."""
    return lambda key: name in "/".join(map(str, key))


def one_setting(key, df: pd.DataFrame, *, max_excess: float, seed: int, n_boot: int,
                drifts=("calibrated",), **sampler) -> dict:
    """One setting's row; ``sampler``: `fit_budget`'s chains, num_warmup, num_samples."""
    pts, _ = bu.points_from_frame(
        pd.DataFrame({"run": [f"p{i}" for i in range(len(df))], "params": df["N"].to_numpy(),
                      "tokens": df["D_tokens"].to_numpy(), "loss": df["loss"].to_numpy()}))
    top = pts["flops"].max()
    target = pts[pts["budget"] == pts["budget"].max()]
    vertex = bu.isoflop_vertex(target["params"].to_numpy(), target["loss"].to_numpy())
    if vertex is None:
        return {"setting": "/".join(map(str, key)), "skipped": "no vertex at the largest budget"}
    true_n, true_l = vertex[0], float(np.exp(vertex[2]))
    kept, _ = bu.points_from_frame(pts[["run", "params", "tokens", "loss"]], max_excess=max_excess)
    train = kept[kept["flops"] <= top / 8 * 1.01].reset_index(drop=True)
    train = bu.points_from_frame(train[["run", "params", "tokens", "loss"]])[0]
    t0 = time.time()
    law, variants = lrplan_predict(train, top, seed, drifts, **sampler)
    t1 = time.time()
    (c_n, c_l), boot = chinchilla_predict(train, top, seed, n_boot)
    t2 = time.time()
    blo_n, bhi_n = interval(boot[:, 0])
    blo_l, bhi_l = interval(boot[:, 1])
    source = key[0].removeprefix("summary_df").strip("_") or "base"
    row = {
        "setting": "/".join(map(str, key[1:])) + f" ({source})",
        "train_budgets": int(train["budget"].nunique()), "train_runs": len(train),
        "true_N": float(np.exp(true_n)), "true_loss": true_l}
    for kind, (log_n, best, drift) in variants.items():
        m = PREFIX[kind]
        lo_n, hi_n = interval(log_n)
        lo_l, hi_l = interval(best)
        row |= {
            f"{m}_N": float(np.exp(np.median(log_n))), f"{m}_logerr_N": float(np.median(log_n) - true_n),
            f"{m}_in80_N": bool(lo_n <= true_n <= hi_n), f"{m}_width80_N": float(np.exp(hi_n - lo_n)),
            f"{m}_loss": float(np.median(best)), f"{m}_relerr_loss": float(np.median(best) / true_l - 1),
            f"{m}_in80_loss": bool(lo_l <= true_l <= hi_l),
            f"{m}_width80_loss": float((hi_l - lo_l) / true_l),
            f"{m}_drift_n_mean": float(np.mean(drift.rates[:, 0])),
            f"{m}_none_n": drift.none_prob[0], "folds": len(drift.folds)}
    return row | {
        "chin_N": float(np.exp(c_n)), "chin_logerr_N": float(c_n - true_n),
        "chin_in80_N": bool(blo_n <= true_n <= bhi_n), "chin_width80_N": float(np.exp(bhi_n - blo_n)),
        "chin_loss": float(c_l), "chin_relerr_loss": float(c_l / true_l - 1),
        "chin_in80_loss": bool(blo_l <= true_l <= bhi_l),
        "chin_width80_loss": float((bhi_l - blo_l) / true_l),
        "r_hat": law.diagnostics.r_hat_max, "divergences": law.diagnostics.divergences,
        "lrplan_s": t1 - t0, "chin_s": t2 - t1,
    }


#: Column prefix and table name of each method.
PREFIX = {"calibrated": "lrplan", "slab": "lrplan_slab"}
NAMES = {"lrplan": "lrplan (posterior + calibrated drift)",
         "lrplan_slab": "lrplan, drift without its spike at zero (before)",
         "chin": "Chinchilla approach 3 (Huber + bootstrap)"}


def summary(res: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for m, name in NAMES.items():
        if f"{m}_N" not in res:
            continue
        rows.append({
            "method": name, "settings": len(res),
            "mean abs log err N*": res[f"{m}_logerr_N"].abs().mean(),
            "median abs log err N*": res[f"{m}_logerr_N"].abs().median(),
            "N* in 80%": f"{int(res[f'{m}_in80_N'].sum())}/{len(res)}",
            "median 80% width N* (x)": res[f"{m}_width80_N"].median(),
            "mean abs rel err loss": res[f"{m}_relerr_loss"].abs().mean(),
            "loss in 80%": f"{int(res[f'{m}_in80_loss'].sum())}/{len(res)}",
            "median 80% width loss": res[f"{m}_width80_loss"].median(),
        })
    return pd.DataFrame(rows)


def main(argv=None) -> pd.DataFrame:
    """Print (and with ``--write`` write) the table; return the per-setting rows."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", help="folder holding porian-isoflop/ (needed unless --merge-logs)")
    ap.add_argument("--max-excess", type=float, default=0.1)
    ap.add_argument("--boot", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=1000, help="NUTS warmup of the loss law's fit")
    ap.add_argument("--samples", type=int, default=1000, help="NUTS draws per chain")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--drifts", default="calibrated",
                    help="comma list of lrplan's drift variants, scored on the same fits: calibrated, slab")
    ap.add_argument("--settings", type=int, default=None, help="only the first K settings")
    ap.add_argument("--only", default=None, help="only settings whose name contains this")
    ap.add_argument("--skip", type=int, default=0, help="skip the first K settings (split a run)")
    ap.add_argument("--merge-logs", nargs="+", default=None,
                    help="no fits: build the table from the printed rows of earlier runs' logs")
    ap.add_argument("--write", action="store_true", help="write the results to OUT")
    ap.add_argument("--out", type=Path, default=Path("budget_porian.md"),
                    help="a relative path is taken from the examples/ folder")
    args = ap.parse_args(argv)
    rows = []
    if args.merge_logs:
        for log in args.merge_logs:
            rows += [ast.literal_eval(line.replace(": nan", ": None"))
                     for line in Path(log).read_text().splitlines() if line.startswith("{'setting'")]
        rows = list({r["setting"]: r for r in rows}.values())  # a setting rerun: its last row
    else:
        if args.data_dir is None:
            ap.error("--data-dir is required (or --merge-logs)")
        data = pd.read_csv(Path(args.data_dir) / "porian-isoflop" / "isoflop_points_long.csv")
        groups = list(data.groupby(SETTING))[args.skip: args.settings]
        if args.only:
            groups = [g for g in groups if only(args.only)(g[0])]
        for key, df in groups:
            r = one_setting(key, df, max_excess=args.max_excess, seed=args.seed, n_boot=args.boot,
                            drifts=tuple(args.drifts.split(",")), chains=args.chains,
                            num_warmup=args.warmup, num_samples=args.samples)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
            rows.append(r)
    res = pd.DataFrame([r for r in rows if "skipped" not in r])
    summ = summary(res)
    pd.set_option("display.width", 250)
    print(summ.to_string(index=False))
    if args.write:
        ms = [m for m in NAMES if f"{m}_N" in res]
        cols = ["setting", "true_N", *[f"{m}_{c}" for m in ms for c in ("N", "in80_N", "width80_N")],
                "true_loss", *[f"{m}_{c}" for m in ms for c in ("loss", "in80_loss")], "folds",
                *[f"{m}_{c}" for m in ms if m != "chin" for c in ("drift_n_mean", "none_n")], "r_hat"]
        text = ["# lrplan budget vs Chinchilla's approach 3 on Porian et al.'s isoflop grids", "",
                "Written by `python examples/budget_porian.py --data-dir DATA_DIR --write`: fit the "
                "budgets up to 1/8 of the largest, predict the largest budget's optimum (the vertex "
                "of a quadratic in log N through its runs). 80% intervals; N* widths are hi/lo "
                f"ratios, loss widths relative. Runs within {args.max_excess:.0%} of their budget's "
                f"best loss; {args.boot} bootstrap refits for Chinchilla.", "",
                markdown_table(summ), "", "## Per setting", "",
                markdown_table(res[cols]), ""]
        skipped = [r for r in rows if "skipped" in r]
        if skipped:
            text += [f"Skipped: {', '.join(r['setting'] + ' (' + r['skipped'] + ')' for r in skipped)}", ""]
        Path(__file__).parent.joinpath(args.out).write_text("\n".join(text))
    return res


if __name__ == "__main__":
    main()
