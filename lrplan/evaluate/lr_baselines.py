"""LR rules fitted to sweeps of final losses, as practitioners fit them without lrplan.

Per-cell optima (`cell_optima`), the Step Law procedure (`step_law_fit`, Li et al. 2025), the
quadratic-vertex power law (`bjorck_fit`, Bjorck et al. 2024), and no fit at all: the nearest
cell's optimum (`nearest_lr_fit`).

References
----------
Li et al. 2025, "Predictable Scale: Part I", arXiv:2503.04715 (Step Law).
Bjorck et al. 2024, "Scaling Optimal LR Across Token Horizons", arXiv:2409.19913.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lrplan.errors import FitError

__all__ = [
    "STEP_LAW_TOLERANCE",
    "LrRule",
    "NearestLr",
    "cell_optima",
    "step_law_fit",
    "bjorck_fit",
    "nearest_lr_fit",
]

#: Step Law keeps every run within this relative distance of its cell's best loss.
STEP_LAW_TOLERANCE = 0.0025

_CELL = ["params", "tokens", "tokens_per_step"]


def _check_sweep(df: pd.DataFrame) -> pd.DataFrame:
    need = ["params", "tokens", "tokens_per_step", "lr", "loss", "diverged"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise FitError(f"sweep table lacks column(s) {', '.join(missing)}; give one row per run "
                       f"with {', '.join(need)}")
    out = df[need].copy()
    for c in need[:-1]:
        out[c] = out[c].astype(np.float64)
    out["diverged"] = out["diverged"].astype(bool) | ~np.isfinite(out["loss"])
    return out


def cell_optima(df: pd.DataFrame) -> pd.DataFrame:
    """Per (params, tokens, tokens_per_step) cell, the empirical optimal LR and best loss.

    The optimum is the vertex of a least-squares quadratic of final loss in log LR over the
    cell's non-diverged runs, when the cell has >= 3 distinct LRs, the quadratic curves upward
    and its vertex lies within the swept LR range (Bjorck et al. 2024). Otherwise it falls
    back to the LR of the best observed run and ``vertex`` is False.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per run: ``params, tokens, tokens_per_step, lr, loss, diverged``.

    Returns
    -------
    pandas.DataFrame
        Columns ``params, tokens, tokens_per_step, lr_opt, best_loss, n_lrs, vertex``; one row
        per cell with at least one non-diverged run, sorted by the cell's key.
    """
    d = _check_sweep(df)
    rows = []
    for key, g in d.groupby(_CELL, sort=True):
        ok = g[~g["diverged"]]
        if ok.empty:
            continue
        x, y = np.log(ok["lr"].to_numpy()), ok["loss"].to_numpy()
        n_lrs = int(np.unique(x).size)
        best = int(np.argmin(y))
        lr_opt, vertex = float(ok["lr"].iloc[best]), False
        if n_lrs >= 3:
            c2, c1, _ = np.polyfit(x, y, 2)
            if c2 > 0:
                u = -c1 / (2 * c2)
                if x.min() <= u <= x.max():
                    lr_opt, vertex = float(np.exp(u)), True
        rows.append({"params": key[0], "tokens": key[1], "tokens_per_step": key[2], "lr_opt": lr_opt,
                     "best_loss": float(y[best]), "n_lrs": n_lrs, "vertex": vertex})
    return pd.DataFrame(rows, columns=_CELL + ["lr_opt", "best_loss", "n_lrs", "vertex"])


@dataclass(frozen=True)
class LrRule:
    """An LR rule ``log lr* = log_c + sum_k coef[k] log(x_k)`` fitted by OLS in logs.

    ``coef`` has ``log_c`` and an exponent for each of ``params``, ``tokens`` and
    ``tokens_per_step`` that varied in the data it was fitted to (a column that did not vary
    has no exponent: the rule then does not depend on it).
    """

    coef: dict[str, float]
    method: str
    n_points: int
    notes: tuple[str, ...] = ()

    def predict(self, params, tokens, tokens_per_step) -> np.ndarray:
        """Predicted optimal LR at the given cells (arrays broadcast)."""
        values = {"params": params, "tokens": tokens, "tokens_per_step": tokens_per_step}
        out = np.full(np.broadcast(*(np.asarray(v, dtype=np.float64) for v in values.values())).shape,
                      self.coef["log_c"])
        for k, v in values.items():
            if k in self.coef:
                out = out + self.coef[k] * np.log(np.asarray(v, dtype=np.float64))
        return np.exp(out)


def _ols_rule(points: pd.DataFrame, lr: np.ndarray, method: str) -> LrRule:
    cols, notes = [], []
    for c in _CELL:
        if np.unique(points[c]).size > 1:
            cols.append(c)
        else:
            notes.append(f"{c} does not vary in the data: no exponent fitted for it")
    X = np.column_stack([np.ones(len(points))] + [np.log(points[c].to_numpy(np.float64)) for c in cols])
    if len(points) < X.shape[1]:
        raise FitError(f"{method}: {len(points)} point(s) cannot fix {X.shape[1]} coefficients; "
                       "give sweeps of more cells")
    beta, *_ = np.linalg.lstsq(X, np.log(lr), rcond=None)
    coef = {"log_c": float(beta[0]), **{c: float(b) for c, b in zip(cols, beta[1:], strict=True)}}
    return LrRule(coef=coef, method=method, n_points=len(points), notes=tuple(notes))


def step_law_fit(df: pd.DataFrame, *, tolerance: float = STEP_LAW_TOLERANCE) -> LrRule:
    """Step Law procedure: OLS of log LR on log N, log D (and log B) over near-optimal runs.

    Every non-diverged run whose final loss is within ``tolerance`` (relative, 0.25%) of its
    cell's best loss enters the regression (Li et al. 2025). ``log B`` enters only when the
    batch varies among those runs.
    """
    d = _check_sweep(df)
    d = d[~d["diverged"]]
    if d.empty:
        raise FitError("step_law_fit: no non-diverged run in the sweep")
    best = d.groupby(_CELL)["loss"].transform("min")
    near = d[d["loss"] <= best * (1.0 + tolerance)]
    return _ols_rule(near, near["lr"].to_numpy(np.float64), "step_law")


def bjorck_fit(df: pd.DataFrame) -> LrRule:
    """Quadratic-vertex power law: per-cell optima (`cell_optima`), then OLS in logs.

    ``lr* = c N^a D^b (B^e)`` is fitted to every cell's ``lr_opt`` (vertices, and best observed
    LRs where a cell has no vertex; their count is in ``notes``), Bjorck et al. 2024.
    """
    cells = cell_optima(df)
    if cells.empty:
        raise FitError("bjorck_fit: no cell with a non-diverged run")
    rule = _ols_rule(cells, cells["lr_opt"].to_numpy(np.float64), "bjorck")
    fallback = int((~cells["vertex"]).sum())
    if fallback:
        rule = LrRule(coef=rule.coef, method=rule.method, n_points=rule.n_points,
                      notes=rule.notes + (f"{fallback} of {len(cells)} cell(s) without a "
                                          "quadratic vertex: their best observed LR used",))
    return rule


@dataclass(frozen=True)
class NearestLr:
    """No fit: a target cell gets the optimum of the nearest training cell in log N, D, B."""

    cells: pd.DataFrame
    coef: dict[str, float] = field(default_factory=dict)
    method: str = "nearest"

    def predict(self, params, tokens, tokens_per_step) -> np.ndarray:
        """Optimal LR of the nearest fitted cell, for each target cell."""
        p, t, b = np.broadcast_arrays(*(np.log(np.asarray(v, dtype=np.float64))
                                        for v in (params, tokens, tokens_per_step)))
        ref = np.log(self.cells[_CELL].to_numpy(np.float64))
        q = np.stack([p.ravel(), t.ravel(), b.ravel()], axis=1)
        dist = np.sum((q[:, None, :] - ref[None, :, :]) ** 2, axis=2)
        return self.cells["lr_opt"].to_numpy(np.float64)[np.argmin(dist, axis=1)].reshape(p.shape)


def nearest_lr_fit(df: pd.DataFrame) -> NearestLr:
    """The nearest-cell rule of a sweep (see `NearestLr`)."""
    cells = cell_optima(df)
    if cells.empty:
        raise FitError("nearest_lr_fit: no cell with a non-diverged run")
    return NearestLr(cells=cells)


