"""Benchmark ``lrplan plan --batch auto`` on the Step Law MoE lr x batch sweeps (run by hand).

Fits the transfer model to every size but the largest (12 cells of 5 batches x 9 LRs), then
for each held-out cell (the largest size at each of 4 token counts) compares the recommended
batch with the cell's empirical best batch and with Step Law's B* = 0.58 D^0.571 tokens (Li
et al. 2025), and the excess loss of each. The cell's loss at a batch is its best over LRs
(the vertex of a quadratic in log LR through that batch's runs); the empirical best batch is
the vertex of a quadratic in log batch through those five losses, and a batch's excess loss is
read off that quadratic (relative to its minimum; batches outside the tested range are clipped
to it, and marked). It also checks the predicted cost of every tested batch against its
observed excess (error, and whether it lies in the 80% interval), and the LR recommended at
the chosen batch against the best LR of the nearest tested batch.

The data have no licence: they stay outside the repository; pass the folder holding
``steplaw-moe/moe_lr_bs_loss.csv``.

    python examples/batch_steplaw.py DATA_DIR [--write] [--out FILE]
        [--warmup 1000] [--samples 1000] [--chains 2]

writes ``examples/batch_steplaw.md`` (or ``--out``) with ``--write``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

jax.config.update("jax_enable_x64", True)

from lrplan.budget import step_law_batch  # noqa: E402
from lrplan.data import load_runs  # noqa: E402
from lrplan.transfer.batch import plan_batch  # noqa: E402
from lrplan.transfer.fit import fit_transfer, transfer_points  # noqa: E402

SEQ = 2048.0


def load(root: Path) -> pd.DataFrame:
    s = pd.read_csv(root / "steplaw-moe" / "moe_lr_bs_loss.csv")
    loss = s["smooth loss"].where(np.isfinite(s["smooth loss"]) & (s["smooth loss"] <= 5))
    return pd.DataFrame({
        "run": s["exp_name"], "step": s["ti"], "loss": loss, "params": s["Na"].astype(float),
        "tokens_per_step": s["bs"] * SEQ, "peak_lr": s["lr"], "total_steps": s["ti"]})


def vertex(x: np.ndarray, y: np.ndarray):
    """(x at the minimum, loss there, the quadratic) of a quadratic through (x, y); the argmin
    if it opens downward or its vertex lies outside x."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.RankWarning)
        c = np.polyfit(x, y, 2)
    f = np.poly1d(c)
    if c[0] > 0 and x.min() <= -c[1] / (2 * c[0]) <= x.max():
        xv = -c[1] / (2 * c[0])
        return xv, float(f(xv)), f
    i = int(np.argmin(y))
    return float(x[i]), float(y[i]), f


def cell_batches(cell: pd.DataFrame) -> pd.DataFrame:
    """Per tested batch: best loss over LRs (quadratic vertex in log LR) and the LR there."""
    rows = []
    for b, g in cell.groupby("tokens_per_step"):
        g = g[np.isfinite(g["loss"])]
        x, y, _ = vertex(np.log(g["peak_lr"].to_numpy()), g["loss"].to_numpy())
        rows.append({"batch": b, "best_loss": y, "lr_opt": float(np.exp(x))})
    return pd.DataFrame(rows)


def cell_tokens(df: pd.DataFrame) -> pd.Series:
    """The planned tokens of each run: steps x batch rounded to 2 significant digits."""
    d = df["total_steps"] * df["tokens_per_step"]
    return d.map(lambda v: float(f"{v:.2g}")).rename("tokens")


def excess(batch: float, xb: np.ndarray, f, best: float) -> tuple[float, bool]:
    """Relative excess loss of ``batch`` on the cell's quadratic in log batch (clipped to the
    tested batches ``exp(xb)``), and whether it was clipped."""
    x = np.clip(np.log(batch), xb.min(), xb.max())
    return float(f(x) - best) / best, not xb.min() <= np.log(batch) <= xb.max()


def main(argv=None) -> str:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=1000, help="NUTS warmup steps of the transfer fit")
    ap.add_argument("--samples", type=int, default=1000, help="NUTS draws per chain")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="write the table to --out")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("batch_steplaw.md"))
    args = ap.parse_args(argv)
    df = load(args.data_dir)
    top = df["params"].max()
    train, test = df[df["params"] < top], df[df["params"] == top]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.csv"
        train.to_csv(path, index=False)
        runs = load_runs(path)
    t0 = time.perf_counter()
    points, notes = transfer_points(runs)
    fit = fit_transfer(points, seed=args.seed, notes=tuple(notes), chains=args.chains,
                       num_warmup=args.warmup, num_samples=args.samples)
    wall = time.perf_counter() - t0
    d = fit.diagnostics
    lines = [f"# `plan --batch auto` on the Step Law MoE sweeps: largest size ({top:.3g} active "
             "params) held out", "",
             f"Written by `python examples/batch_steplaw.py DATA_DIR --write`. Transfer fit on "
             f"{train['run'].nunique()} runs of the smaller sizes in {wall:.0f} s (R-hat max "
             f"{d.r_hat_max:.3f}, ESS min {d.ess_bulk_min:.0f}, divergences {d.divergences}); "
             f"batch term identified: {'b_opt' in fit.samples}.", "",
             "| D | empirical best batch | lrplan B* (80%) | in 80% | lrplan excess | "
             "Step Law B* | Step Law excess | lr at lrplan batch / best lr at nearest tested |",
             "|---|---|---|---|---|---|---|---|"]
    summary = {"lrplan": [], "step": [], "hit": [], "lr": []}
    cost_rows = []
    # a cell's runs differ in steps by rounding (batch x steps ~ D): group by the planned D
    for tokens, cell in test.groupby(cell_tokens(test)):
        per_b = cell_batches(cell)
        xb = np.log(per_b["batch"].to_numpy())
        xv, best, f = vertex(xb, per_b["best_loss"].to_numpy())
        b_emp = float(np.exp(xv))
        bp = plan_batch(fit, top, tokens, compare=tuple(per_b["batch"]), seed=args.seed)
        lo, hi = np.quantile(bp.batch_star, [0.1, 0.9])
        s_b = float(step_law_batch(tokens))

        e_l, out_l = excess(bp.recommended, xb, f, best)
        e_s, out_s = excess(s_b, xb, f, best)
        near = per_b.iloc[int(np.argmin(np.abs(xb - np.log(bp.recommended))))]
        lr_ratio = float(np.median(bp.lr_star) / near["lr_opt"])
        hit = lo <= b_emp <= hi
        summary["lrplan"].append(e_l)
        summary["step"].append(e_s)
        summary["hit"].append(hit)
        summary["lr"].append(abs(np.log(lr_ratio)))
        lines.append(f"| {tokens:.3g} | {b_emp:.3g} | {bp.recommended:.3g} ({lo:.3g}-{hi:.3g}) | "
                     f"{'yes' if hit else 'no'} | {e_l:.3%}{' (clipped)' if out_l else ''} | {s_b:.3g} | "
                     f"{e_s:.3%}{' (clipped)' if out_s else ''} | {lr_ratio:.3g} |")
        for b in per_b["batch"]:
            pred = bp.compare[float(b)] / float(np.mean(bp.loss.min(axis=1)))
            obs = float(f(np.log(b)) - best) / best
            q = np.quantile(pred, [0.1, 0.9])
            cost_rows.append({"tokens": tokens, "batch": b, "pred": float(pred.mean()), "obs": obs,
                              "in80": bool(q[0] <= obs <= q[1])})
    costs = pd.DataFrame(cost_rows)
    cost_err = float(np.mean(np.abs(costs["pred"] - costs["obs"])))
    lines += ["",
              f"Mean excess loss of the chosen batch: lrplan {np.mean(summary['lrplan']):.3%}, Step Law "
              f"{np.mean(summary['step']):.3%}; empirical best batch in lrplan's 80% interval of B* in "
              f"{sum(summary['hit'])}/{len(summary['hit'])} cells; LR at the chosen batch vs the best LR of "
              f"the nearest tested batch: mean |log ratio| {np.mean(summary['lr']):.3f}.", "",
              f"Predicted cost of each tested batch (relative excess over the best batch, at its own "
              f"best LR) against the observed: mean |error| {cost_err:.3%}, observed in the 80% "
              f"interval for {int(costs['in80'].sum())}/{len(costs)} (cell, batch) pairs.",
              "", "| D | batch | predicted excess | observed excess | in 80% |", "|---|---|---|---|---|",
              *[f"| {r.tokens:.3g} | {r.batch:.3g} | {r.pred:.3%} | {r.obs:.3%} | "
                f"{'yes' if r.in80 else 'no'} |" for r in costs.itertuples()], ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        args.out.write_text(text)
    return text


if __name__ == "__main__":
    main()
