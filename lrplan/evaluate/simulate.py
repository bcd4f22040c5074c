"""Synthetic runs from known laws: for tests, examples and calibration studies."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lrplan import laws
from lrplan.curve.model import STEP_SCALE
from lrplan.schedules import lr_schedule, steps_for, unannealed_fraction
from lrplan.transfer.model import divergence_logit

__all__ = ["simulate_curves", "simulate_sweep", "log_lr_centre", "true_lr_star", "simulate_isoflop",
           "true_params_optimum", "CHINCHILLA_TRUTH"]


def simulate_curves(
    law: str,
    truth: dict[str, float],
    schedules: dict[str, str],
    *,
    steps: int,
    peak_lr: float,
    warmup_steps: int = 0,
    every: int = 100,
    noise: float = 0.002,
    lr_ref: float | None = None,
    params: float | None = None,
    tokens_per_step: float | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Loss curves of one model under several schedules, with multiplicative noise.

    ``truth`` holds the law's parameters in lrplan's normalised units (LR divided by
    ``lr_ref``, default ``peak_lr``; areas per 1000 steps). Returns the runs table (``run,
    step, lr, loss``) and the metadata table, in the format `lrplan.data.load_runs` reads.
    """
    rng = np.random.default_rng(seed)
    lr_ref = peak_lr if lr_ref is None else lr_ref
    rows, meta = [], []
    first = max(warmup_steps, every)
    at = np.arange(first, steps + 1, every)
    for name, spec in schedules.items():
        lr = lr_schedule(spec, steps=steps, peak_lr=peak_lr, warmup_steps=warmup_steps)
        kw = dict(warmup_steps=warmup_steps, peak_lr=peak_lr / lr_ref, step_scale=STEP_SCALE)
        if law == "multipower":
            f = laws.multipower_features(lr / lr_ref, at, **kw)
            mean = laws.multipower_loss(f, **truth)
        else:
            f = laws.annealing_features(lr / lr_ref, at, **kw)
            mean = laws.annealing_loss(f, **truth)
        loss = np.asarray(mean) * np.exp(noise * rng.standard_normal(at.size))
        rows.append(pd.DataFrame({"run": name, "step": at, "lr": lr[at - 1], "loss": loss}))
        meta.append({"run": name, "params": params, "tokens_per_step": tokens_per_step,
                     "peak_lr": peak_lr, "warmup_steps": warmup_steps, "total_steps": steps,
                     "schedule": spec})
    return pd.concat(rows, ignore_index=True), pd.DataFrame(meta)


def _sweep_mean(truth: dict[str, float], refs, params, tokens, batch, lr, w):
    n0, d0, b0 = refs
    law = {k: truth[k] for k in ("E", "A", "a", "B", "b", "c_n", "c_d", "c_b", "kappa", "asym",
                                 "k_anneal")}
    batch_law = {k: truth.get(k, 0.0) for k in ("c_nn", "g_b", "b_opt", "b_d")}
    if "skew" in truth:  # a linex bowl
        batch_law["skew"] = truth["skew"]
    return np.asarray(laws.transfer_loss(
        np.log(params / n0), np.log(tokens / d0), np.log(batch / b0), np.log(lr), w,
        c0=truth["log_lr0"], **batch_law, **law))


def log_lr_centre(truth: dict[str, float], refs, params, tokens, batch) -> float:
    """The true bowl centre, log lr* of an annealed run, at one point."""
    n0, d0, b0 = refs
    return float(laws.log_lr_opt(np.log(params / n0), np.log(tokens / d0), np.log(batch / b0),
                                 c0=truth["log_lr0"], c_n=truth["c_n"], c_d=truth["c_d"],
                                 c_b=truth["c_b"], c_nn=truth.get("c_nn", 0.0)))


def simulate_sweep(
    truth: dict[str, float],
    cells: list[tuple[float, float, float]],
    lr_factors: np.ndarray,
    *,
    refs: tuple[float, float, float],
    schedule: str = "cosine:final=0.1",
    warmup_fraction: float = 0.01,
    seed: int = 0,
) -> pd.DataFrame:
    """Final losses of an LR sweep drawn from the transfer law, with diverged runs.

    Each cell ``(params, tokens, tokens_per_step)`` is swept over ``lr_factors`` times the
    cell's true optimum of the bowl (``exp(log_lr0 + ...)`` in `lrplan.laws.log_lr_opt`, with
    ``x_N = log(N / refs[0])`` etc.). A run diverges with probability
    ``sigmoid((u - div_offset) / div_width)``; its loss is then NaN. Returns one row per run in
    the runs-file format (``run, step, loss, params, tokens_per_step, peak_lr, total_steps,
    warmup_steps, schedule``).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for i, (n, d, b) in enumerate(cells):
        steps = steps_for(d, b, minimum=2)
        warm = int(round(warmup_fraction * steps))
        w = float(unannealed_fraction(lr_schedule(schedule, steps=steps, peak_lr=1.0,
                                                  warmup_steps=warm))[-1])
        centre = log_lr_centre(truth, refs, n, d, b)
        for f in lr_factors:
            lr = float(np.exp(centre) * f)
            mean = float(_sweep_mean(truth, refs, n, d, b, lr, w))
            # the transfer model's divergence term, at the log LR relative to the optimum
            z = divergence_logit(np.log(f), 0.0, truth["div_offset"], truth["div_width"])
            diverged = rng.random() < 1.0 / (1.0 + np.exp(-z))
            loss = np.nan if diverged else mean + truth["sigma"] * rng.standard_normal()
            rows.append({"run": f"c{i}_lr{lr:.3e}", "step": steps, "loss": loss, "params": n,
                         "tokens_per_step": b, "peak_lr": lr, "total_steps": steps,
                         "warmup_steps": warm, "schedule": schedule})
    return pd.DataFrame(rows)


def true_lr_star(truth: dict[str, float], refs, params, tokens, tokens_per_step, *,
                 unannealed: float, grid: np.ndarray | None = None) -> float:
    """The LR minimising the true expected final loss at a point (over a fine log grid)."""
    centre = log_lr_centre(truth, refs, params, tokens, tokens_per_step)
    grid = np.exp(centre + np.linspace(-3, 3, 6001)) if grid is None else grid
    loss = _sweep_mean(truth, refs, params, tokens, tokens_per_step, grid, unannealed)
    return float(grid[np.argmin(loss)])


#: Hoffmann et al. 2022's fitted L*(N, D) (approach 3), in raw N and D.
CHINCHILLA_TRUTH = {"E": 1.69, "A": 406.4, "a": 0.34, "B": 410.7, "b": 0.28}


def simulate_isoflop(truth: dict[str, float], budgets, *, sizes: int = 7, spread: float = 4.0,
                     noise: float = 0.01, seed: int = 0, flops_per_param: float = 6.0) -> pd.DataFrame:
    """An isoflop grid drawn from ``L = E + A N^-a + B D^-b`` (raw N, D) with Gaussian noise.

    At each budget C, ``sizes`` sizes log-spaced from N*(C)/spread to spread N*(C), each trained
    on D = C / (flops_per_param N) tokens. Returns the runs format of final-only runs:
    ``run, step, loss, params, tokens_per_step`` (one step of D tokens).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for c in budgets:
        n_opt = true_params_optimum(truth, c, flops_per_param=flops_per_param)
        for n in np.exp(np.linspace(np.log(n_opt / spread), np.log(n_opt * spread), sizes)):
            d = c / (flops_per_param * n)
            y = float(laws.loss_nd(np.log(n), np.log(d), **truth)) + noise * rng.standard_normal()
            rows.append({"run": f"c{c:.3g}_n{n:.4g}", "step": 1, "loss": y, "params": float(n),
                         "tokens_per_step": float(d)})
    return pd.DataFrame(rows)


def true_params_optimum(truth: dict[str, float], flops, *, flops_per_param: float = 6.0):
    """The exact compute-optimal size of ``L = E + A N^-a + B D^-b`` at D = C / (k N).

    ``N* = G (C/k)^(b/(a+b))`` with ``G = (a A / (b B))^(1/(a+b))`` (Hoffmann et al. 2022, D.2).
    """
    a, b = truth["a"], truth["b"]
    g = (a * truth["A"] / (b * truth["B"])) ** (1 / (a + b))
    return g * (np.asarray(flops, float) / flops_per_param) ** (b / (a + b))
