"""From runs to the curve model's inputs: which runs and points are fitted, groups, units.

A run is fitted when it has a per-step LR, no divergence and at least two logged points
after warmup (`select_runs`); runs of the same size, batch and peak LR form a group
(`group_runs`); the model sizes fix whether L0 follows the size law and its reference size
(`size_reference`); `build_data` turns the runs into `lrplan.curve.model.CurveData` at the
points the likelihood sees (`fit_points`). `area` is the forward LR area in the model's
units, and `pad_to_bucket` pads data to the shape bucket that compiled code is shared by.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from lrplan.bayes import bucket
from lrplan.curve.model import STEP_SCALE, CurveData, GroupKey, curve_data
from lrplan.errors import FitError

if TYPE_CHECKING:
    from lrplan.data import Run, RunSet

__all__ = ["MAX_POINTS_PER_RUN", "area", "build_data", "fit_points", "group_log_n", "group_runs",
           "pad_to_bucket", "select_runs", "size_reference"]


#: Points of one curve the likelihood sees. Residuals along a curve are strongly
#: autocorrelated, so evenly spaced points carry nearly all of a long log's information, and
#: the multi-power law's cost grows with the square of the points of a decaying run. On Luo
#: et al.'s split 40 points give the held-out errors of 64 (and of every point) in half the
#: time: the posterior is less sharp, so NUTS needs fewer leapfrog steps per draw.
MAX_POINTS_PER_RUN = 40


def fit_points(run: Run, *, thin: bool = False) -> np.ndarray:
    """Per logged point of ``run``: whether it is fitted (after warmup, within the run).

    ``thin``: at most `MAX_POINTS_PER_RUN` of them, evenly spread (what the likelihood sees).
    """
    first = max(run.warmup_steps, 1)
    keep = (run.steps >= first) & (run.steps <= run.total_steps)
    idx = np.flatnonzero(keep)
    if thin and idx.size > MAX_POINTS_PER_RUN:
        chosen = idx[np.unique(np.round(np.linspace(0, idx.size - 1, MAX_POINTS_PER_RUN)).astype(int))]
        keep = np.zeros_like(keep)
        keep[chosen] = True
    return keep


def select_runs(runs: RunSet) -> tuple[list[Run], list[str]]:
    """The runs the curve model can fit, and a note for each run left out or trimmed.

    Raises FitError, with the first run's reason, when no run can be fitted.
    """
    used, notes = [], []
    for r in runs:
        if r.lr is None:
            notes.append(f"run {r.name}: no per-step LR (give an lr column or schedule + "
                         "peak_lr); not used by the curve model")
            continue
        keep = fit_points(r)
        if r.diverged:
            notes.append(f"run {r.name}: diverged at step {r.diverged_step}; its curve is not "
                         "fitted by the curve law")
            continue
        if keep.sum() < 2:
            notes.append(f"run {r.name}: fewer than 2 logged points after warmup; not used by "
                         "the curve model")
            continue
        if (~keep).any():
            notes.append(f"run {r.name}: {int((~keep).sum())} point(s) during warmup not fitted")
        used.append(r)
    if not used:
        # one line: the first run's reason stands for the rest
        why = f"; {notes[0]}{f' (and {len(notes) - 1} more)' if len(notes) > 1 else ''}" if notes else ""
        raise FitError(f"{runs.source}: no run has a loss curve the curve model can use{why}. A "
                       "run needs >= 2 logged points after warmup, a known LR and no divergence")
    return used, notes


def group_runs(used: Sequence[Run]) -> tuple[tuple[GroupKey, ...], list[int]]:
    """The groups of ``used`` (size, batch, peak LR; first seen first) and each run's group."""
    keys: list[GroupKey] = []
    index = []
    for r in used:
        k = GroupKey(r.params, r.tokens_per_step, float(np.max(r.lr)))
        i = k.index_in(keys)
        if i is None:
            i = len(keys)
            keys.append(k)
        index.append(i)
    return tuple(keys), index


def size_reference(groups: Sequence[GroupKey]) -> tuple[bool, float]:
    """Whether L0 follows the size law (two or more known sizes), and the reference size.

    The reference is the geometric mean of the sizes; with one size, that size (1 unknown).
    """
    sizes = {g.params for g in groups}
    if None in sizes or len(sizes) < 2:
        known = [s for s in sizes if s is not None]
        return False, float(known[0]) if known else 1.0
    return True, float(np.exp(np.mean(np.log(sorted(sizes)))))


def group_log_n(groups: Sequence[GroupKey], n_ref: float) -> np.ndarray:
    """Per group, log(N / n_ref) (0 when its size is unknown)."""
    return np.array([0.0 if g.params is None else np.log(g.params / n_ref) for g in groups])


def build_data(law: str, used: Sequence[Run], group_index: Sequence[int], *, lr_ref: float,
               n_ref: float, size_law: bool, groups: Sequence[GroupKey]) -> CurveData:
    """Model inputs for the ``used`` runs, at the points the likelihood sees."""
    curves = []
    for r, g in zip(used, group_index, strict=True):
        keep = fit_points(r, thin=True)
        curves.append((r.lr, r.steps[keep], r.loss[keep], r.warmup_steps, g))
    return curve_data(law, curves, lr_ref=lr_ref, group_log_n=group_log_n(groups, n_ref),
                      size_law=size_law)


def area(lr: np.ndarray, steps: np.ndarray, lr_ref: float) -> np.ndarray:
    """Forward LR area at ``steps`` in the model's units (kilo-steps at the reference LR)."""
    return np.cumsum(lr / lr_ref)[np.asarray(steps) - 1] / STEP_SCALE


def pad_to_bucket(data: CurveData) -> CurveData:
    """``data`` padded to its shape bucket (points, and multi-power pairs): see `bucket`."""
    pairs = getattr(data.features, "point", None)
    return data.padded(bucket(data.n_points), None if pairs is None else bucket(pairs.size))
