"""The budget model's inputs: FLOPs per token, runs -> final-loss points grouped by compute.

`budget_points` (or `points_from_frame`) gives one row per non-diverged run with its FLOPs
and compute level (`budget_groups`); `isoflop_vertex` is one level's empirical optimum (a
quadratic in log N); `has_lr_sweep` says whether the runs sweep the LR (then the transfer
model's L* is used).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lrplan.data import RunSet
from lrplan.errors import DataError, FitError

__all__ = ["FlopsPerToken", "parse_flops_per_token", "budget_points", "points_from_frame",
           "budget_groups", "isoflop_vertex", "has_lr_sweep", "BUDGET_TOLERANCE", "SIX_N"]

#: Points whose log compute lies within this of each other form one budget.
BUDGET_TOLERANCE = 0.05


# ---------------------------------------------------------------- FLOPs per token


@dataclass(frozen=True)
class FlopsPerToken:
    """F(N) = per_param * N + fixed FLOPs per training token."""

    per_param: float = 6.0
    fixed: float = 0.0

    def __call__(self, params):
        """FLOPs per token at size ``params``."""
        return self.per_param * np.asarray(params, float) + self.fixed

    def tokens(self, flops: float, params):
        """Tokens a budget of ``flops`` buys at size ``params``."""
        return flops / self(params)

    def __str__(self) -> str:
        return f"{self.per_param:g}N" + (f"+{self.fixed:g}" if self.fixed else "")


#: The default FLOPs per token, 6N (Kaplan et al. 2020).
SIX_N = FlopsPerToken()

_FPT = re.compile(r"^\s*([0-9.eE+-]*)\s*\*?\s*N\s*(?:\+\s*([0-9.eE+-]+))?\s*$")


def parse_flops_per_token(text: str) -> FlopsPerToken:
    """Parse ``6N``, ``7.2N`` or ``6N+2.4e9`` (a size-independent part: head and attention)."""
    m = _FPT.match(text or "")
    try:
        if m is None:
            raise ValueError
        per = float(m.group(1)) if m.group(1) else 1.0
        fixed = float(m.group(2)) if m.group(2) else 0.0
    except ValueError:
        raise DataError(f"--flops-per-token {text!r}: give FLOPs per token as a multiple of N plus "
                        "an optional constant, e.g. 6N or 6N+2.4e9") from None
    if not (per > 0 and fixed >= 0 and np.isfinite(per) and np.isfinite(fixed)):
        raise DataError(f"--flops-per-token {text!r}: the multiple of N must be > 0 and the "
                        "constant >= 0")
    return FlopsPerToken(per, fixed)


# ---------------------------------------------------------------- runs -> points


def budget_points(runs: RunSet, *, fpt: FlopsPerToken = SIX_N,
                  max_excess: float | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One row per run that did not diverge: ``run, params, tokens, loss, flops, budget``.

    ``tokens`` is the run's total steps times its batch; ``budget`` numbers the compute levels
    (`budget_groups`). With ``max_excess``, runs whose loss exceeds the best at their budget by
    more than that fraction are left out (and said so): far from the optimum an isoflop grid's
    runs are too short or too small for the law (Porian et al. 2024).
    """
    rows, notes, missing = [], [], []
    diverged = [r.name for r in runs if r.diverged or not r.loss.size]
    for r in runs:
        if r.name in diverged:
            continue
        if r.params is None or r.tokens_per_step is None:
            missing.append(r.name)
            continue
        rows.append({"run": r.name, "params": float(r.params),
                     "tokens": float(r.total_steps * r.tokens_per_step), "loss": r.final_loss,
                     "peak_lr": r.peak_lr, "tokens_per_step": float(r.tokens_per_step)})
    if missing:
        raise DataError(f"{runs.source}: column params or tokens_per_step: run {missing[0]} has no "
                        f"value ({len(missing)} run(s) in all); the budget plan needs each run's size "
                        "and tokens (params, and tokens per step or a tokens column)")
    if diverged:
        notes.append(f"{len(diverged)} diverged run(s) left out of the loss law (e.g. {diverged[0]}): "
                     "a diverged run says its LR was too high, not what the size could reach")
    pts = pd.DataFrame(rows, columns=["run", "params", "tokens", "loss", "peak_lr", "tokens_per_step"])
    pts, more = points_from_frame(pts, fpt=fpt, max_excess=max_excess, source=runs.source)
    return pts, notes + more


def points_from_frame(df: pd.DataFrame, *, fpt: FlopsPerToken = SIX_N,
                      max_excess: float | None = None, source: str = "<points>"
                      ) -> tuple[pd.DataFrame, list[str]]:
    """Budget points from a frame with ``run, params, tokens, loss`` (finite losses).

    Adds ``flops`` and ``budget``; with ``max_excess`` leaves out (and names) the runs more
    than that fraction above the best loss of their budget.
    """
    notes = []
    pts = df.reset_index(drop=True).copy()
    if len(pts) < 4:
        raise FitError(f"{source}: the budget plan needs at least 4 runs that did not diverge "
                       f"(got {len(pts)})")
    pts["flops"] = fpt(pts["params"].to_numpy(float)) * pts["tokens"].to_numpy(float)
    pts["budget"] = budget_groups(pts["flops"].to_numpy())
    if max_excess is not None:
        best = pts.groupby("budget")["loss"].transform("min")
        far = pts["loss"] > best * (1 + max_excess)
        if far.any():
            notes.append(f"{int(far.sum())} run(s) more than {max_excess:.0%} above the best loss at "
                         f"their budget left out (--max-excess; e.g. {pts.loc[far, 'run'].iloc[0]})")
            pts = pts[~far].reset_index(drop=True)
            pts["budget"] = budget_groups(pts["flops"].to_numpy())
    return pts, notes


def budget_groups(flops: np.ndarray) -> np.ndarray:
    """Index of each point's compute level: sorted log FLOPs split at gaps over the tolerance."""
    x = np.log(np.asarray(flops, float))
    order = np.argsort(x)
    level = np.concatenate([[0], np.cumsum(np.diff(x[order]) > BUDGET_TOLERANCE)])
    out = np.empty_like(level)
    out[order] = level
    return out


def isoflop_vertex(params: np.ndarray, loss: np.ndarray) -> tuple[float, float, float, float] | None:
    """The empirical optimum of one budget: the vertex of a quadratic in log N through its runs.

    Returns ``(log N*, var of log N*, log of the loss there, its var)`` by the delta method on
    the least-squares quadratic, or None when the budget has fewer than 4 distinct sizes, the
    quadratic opens downward or its vertex lies outside the sizes run.
    """
    x = np.log(np.asarray(params, float))
    y = np.asarray(loss, float)
    if np.unique(x).size < 4:
        return None
    xc = x.mean()
    coef, cov = np.polyfit(x - xc, y, 2, cov=True)
    c2, c1, c0 = coef
    v = -c1 / (2 * c2)
    if not (c2 > 0 and (x - xc).min() <= v <= (x - xc).max()):
        return None
    # gradients of the vertex and of the vertex's loss with respect to (c2, c1, c0)
    g_v = np.array([c1 / (2 * c2**2), -1 / (2 * c2), 0.0])
    y_v = c0 - c1**2 / (4 * c2)
    g_y = np.array([c1**2 / (4 * c2**2), -c1 / (2 * c2), 1.0])
    return (float(v + xc), float(g_v @ cov @ g_v), float(np.log(y_v)),
            float(g_y @ cov @ g_y) / y_v**2)


def has_lr_sweep(points: pd.DataFrame) -> bool:
    """Whether some (size, tokens, batch) was run at two or more peak LRs."""
    if points["peak_lr"].isna().any():
        return False
    return bool(points.groupby(["params", "tokens", "tokens_per_step"])["peak_lr"].nunique().max() > 1)


