"""Synthetic runs from known laws: for tests, examples and calibration studies."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import laws
from .model import STEP_SCALE
from .schedules import lr_schedule

__all__ = ["simulate_curves"]


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
