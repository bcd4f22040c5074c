"""What practitioners do without lrplan: point fits, bootstrap intervals, sweep optima, nearest runs.

Three families of baselines, each on the same inputs lrplan gets, so that a backtest can put
them side by side:

- curve laws fitted by a robust point fit (`huber_fit`): the Huber loss on log loss, minimised
  by L-BFGS-B from a grid of starts (Hoffmann et al. 2022; Tissue et al. 2024), with the same
  law functions as lrplan (`lrplan.laws`), and intervals from a block bootstrap of that fit
  (`bootstrap_curves`, in the spirit of Besiroglu et al. 2024);
- LR rules fitted to sweeps of final losses: per-cell optima (`cell_optima`), the Step Law
  procedure (`step_law_fit`, Li et al. 2025) and the quadratic-vertex power law
  (`bjorck_fit`, Bjorck et al. 2024);
- no fit at all: the nearest run's curve (`nearest_curve`) or the nearest cell's optimum
  (`nearest_lr_fit`).

References
----------
Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", arXiv:2203.15556.
Tissue et al. 2024, "Scaling Law with Learning Rate Annealing", arXiv:2408.11029.
Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt", arXiv:2404.10102.
Li et al. 2025, "Predictable Scale: Part I", arXiv:2503.04715 (Step Law).
Bjorck et al. 2024, "Scaling Optimal LR Across Token Horizons", arXiv:2409.19913.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lrplan import laws
from lrplan.curve.model import STEP_SCALE, law_parameters, same_setting
from lrplan.curve.pointfit import lbfgs
from lrplan.data import Run
from lrplan.errors import FitError

__all__ = [
    "HUBER_DELTA",
    "STEP_LAW_TOLERANCE",
    "BootstrapResult",
    "CurveLawFit",
    "LrRule",
    "NearestLr",
    "huber_fit",
    "predict_law",
    "bootstrap_curves",
    "nearest_curve",
    "cell_optima",
    "step_law_fit",
    "bjorck_fit",
    "nearest_lr_fit",
    "ChinchillaFit",
    "chinchilla_fit",
]

#: Huber threshold on the log-loss residual (Hoffmann et al. 2022 use 1e-3).
HUBER_DELTA = 1e-3
#: Step Law keeps every run within this relative distance of its cell's best loss.
STEP_LAW_TOLERANCE = 0.0025
#: Points per run used by the point fit (evenly spaced, as lrplan's curve model thins).
MAX_POINTS = 64

_CELL = ["params", "tokens", "tokens_per_step"]


# ============================================================================ curve laws


@dataclass(frozen=True)
class CurveLawFit:
    """A point fit of a curve law: parameters in lrplan's normalised units.

    ``values`` holds the law's parameters (``lrplan.curve.model.law_parameters``); with
    ``size_law`` the asymptote is ``L0(N) = E + A_N (N / n_ref)^-a_N`` and ``values`` has
    ``E, A_N, a_N`` instead of ``L0``. LRs are divided by ``lr_ref`` and areas are per
    ``STEP_SCALE`` steps, as in `lrplan.curve.model`.
    """

    law: str
    values: dict[str, float]
    size_law: bool
    lr_ref: float
    n_ref: float
    objective: float
    starts: int
    sizes: tuple[float, ...] = ()


def _fit_steps(run: Run, max_points: int | None) -> np.ndarray:
    keep = np.flatnonzero((run.steps >= max(run.warmup_steps, 1)) & (run.steps <= run.total_steps))
    if max_points is not None and keep.size > max_points:
        keep = keep[np.unique(np.round(np.linspace(0, keep.size - 1, max_points)).astype(int))]
    return keep


def _features(law: str, lr: np.ndarray, steps: np.ndarray, warmup: int, lr_ref: float):
    kw = dict(warmup_steps=warmup, peak_lr=float(np.max(lr)) / lr_ref, step_scale=STEP_SCALE)
    if law == "multipower":
        return laws.multipower_features(lr / lr_ref, steps, **kw)
    return laws.annealing_features(lr / lr_ref, steps, **kw)


def _law_names(law: str, size_law: bool) -> tuple[str, ...]:
    names = law_parameters(law)
    return (("E", "A_N", "a_N") + names[1:]) if size_law else names


def _curve(law, feats, values, log_n):
    """Law mean of one run (a jax array) for the parameter dict ``values``."""
    import jax.numpy as jnp

    v = dict(values)
    if "E" in v:
        v["L0"] = v.pop("E") + v.pop("A_N") * jnp.exp(-v.pop("a_N") * log_n)
    if law == "multipower":
        return laws.multipower_loss(feats, **v)
    return laws.annealing_loss(feats, **v)


# bounds of each parameter (natural units); the fit works on their logs
_BOUNDS = {"L0": (0.05, 20.0), "E": (0.01, 20.0), "A_N": (1e-4, 20.0), "a_N": (1e-3, 3.0),
           "A": (1e-4, 1e3), "alpha": (1e-3, 3.0), "B": (1e-5, 1e3), "C": (1e-5, 1e4),
           "beta": (1e-3, 5.0), "gamma": (1e-3, 3.0)}


def _starts(law: str, size_law: bool, floor: float) -> list[dict[str, float]]:
    """A 2 x 2 x 2 grid of starts: asymptote, power-law exponent, annealing strength."""
    out = []
    for frac, alpha, cmul in itertools.product((0.75, 0.92), (0.3, 0.6), (0.3, 3.0)):
        v = {"L0": frac * floor, "A": 1.0, "alpha": alpha}
        if law == "multipower":
            v.update(B=0.3 * cmul, C=5.0, beta=0.6, gamma=0.6)
        else:
            v.update(C=0.1 * cmul)
        if size_law:
            l0 = v.pop("L0")
            v = {"E": 0.8 * l0, "A_N": 0.2 * l0, "a_N": 0.3, **v}
        out.append(v)
    return out


class _Problem:
    """Features and observations of the runs of a fit, and the jitted objective."""

    def __init__(self, runs: Sequence[Run], law: str, size_law: bool, lr_ref: float,
                 n_ref: float, max_points: int | None, delta: float):
        import jax
        import jax.numpy as jnp

        self.law, self.size_law = law, size_law
        self.names = _law_names(law, size_law)
        self.feats, self.log_y, self.log_n, self.run_of = [], [], [], []
        for i, r in enumerate(runs):
            keep = _fit_steps(r, max_points)
            self.feats.append(_features(law, r.lr, r.steps[keep], r.warmup_steps, lr_ref))
            self.log_y.append(np.log(r.loss[keep]))
            self.log_n.append(0.0 if (not size_law or r.params is None) else np.log(r.params / n_ref))
            self.run_of.append(np.full(keep.size, i))
        self.y_all = jnp.asarray(np.concatenate(self.log_y))
        self.n = int(self.y_all.shape[0])
        lo = np.log([_BOUNDS[k][0] for k in self.names])
        hi = np.log([_BOUNDS[k][1] for k in self.names])
        self.bounds = list(zip(lo, hi, strict=True))

        names, feats, log_n = self.names, self.feats, self.log_n

        def predict(theta):
            values = dict(zip(names, jnp.exp(theta), strict=True))
            return jnp.concatenate([_curve(law, f, values, ln) for f, ln in zip(feats, log_n, strict=True)])

        def objective(theta, w):
            pred = predict(theta)
            r = jnp.log(jnp.maximum(pred, 1e-6)) - self.y_all
            a = jnp.abs(r)
            h = jnp.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta)) / delta**2
            # a non-positive predicted loss is outside the law's domain: penalise it
            h = h + 1e6 * jnp.square(jnp.minimum(pred, 1e-6) - 1e-6)
            return jnp.sum(w * h) / jnp.sum(w)

        self.value_and_grad = jax.jit(jax.value_and_grad(objective))

    def minimize(self, theta0: np.ndarray, w: np.ndarray):
        x0 = np.clip(theta0, [b[0] for b in self.bounds], [b[1] for b in self.bounds])
        return lbfgs(self.value_and_grad, x0, np.asarray(w, dtype=np.float64), bounds=self.bounds,
                     options=dict(maxiter=3000, ftol=1e-13, gtol=1e-9))


def _usable(runs: Sequence[Run]) -> list[Run]:
    used = [r for r in runs if r.lr is not None and not r.diverged and _fit_steps(r, None).size >= 2]
    if not used:
        raise FitError("no run has a loss curve the point fit can use (need a known LR, no "
                       "divergence and >= 2 logged points after warmup)")
    return used


def _refs(used: Sequence[Run], size_law: bool | None) -> tuple[bool, float, float, tuple]:
    sizes = tuple(sorted({r.params for r in used if r.params is not None}))
    can = len(sizes) >= 2 and all(r.params is not None for r in used)
    if size_law is None:
        size_law = can
    elif size_law and not can:
        raise FitError("the size form needs runs of >= 2 model sizes, each with its params")
    n_ref = float(np.exp(np.mean(np.log(sizes)))) if sizes else 1.0
    lr_ref = max(float(np.max(r.lr)) for r in used)
    return size_law, n_ref, lr_ref, sizes


def huber_fit(
    runs: Sequence[Run],
    *,
    law: str = "multipower",
    size_law: bool | None = None,
    delta: float = HUBER_DELTA,
    max_points: int | None = MAX_POINTS,
) -> CurveLawFit:
    """Point fit of a curve law: Huber loss on log loss, L-BFGS-B from a grid of 8 starts.

    Every run shares one set of law parameters. With runs of several sizes (``size_law``
    None: automatic), the asymptote follows ``L0(N) = E + A_N (N / n_ref)^-a_N`` (the size
    term) and the other parameters stay shared. Parameters are fitted on a log scale within
    wide bounds (``_BOUNDS``); the objective is the mean over points of
    ``huber_delta(log pred - log y) / delta^2``.

    Parameters
    ----------
    runs : sequence of Run
        Runs with a known per-step LR; diverged runs and warmup points are left out.
    law : {"multipower", "annealing"}
        Curve law (`lrplan.laws`).
    size_law : bool, optional
        Force the single-size (False) or multi-size (True) form.
    delta : float
        Huber threshold on the log residual.
    max_points : int, optional
        Evenly spaced points per run (None: every logged point).

    Returns
    -------
    CurveLawFit
        The best of the starts.
    """
    used = _usable(runs)
    return _huber(used, *_refs(used, size_law), law=law, delta=delta, max_points=max_points)[0]


def _huber(used, size_law, n_ref, lr_ref, sizes, *, law, delta, max_points):
    prob = _Problem(used, law, size_law, lr_ref, n_ref, max_points, delta)
    floor = float(np.exp(min(y.min() for y in prob.log_y)))
    w = np.ones(prob.n)
    best = None
    starts = _starts(law, size_law, floor)
    for s in starts:
        res = prob.minimize(np.log([s[k] for k in prob.names]), w)
        if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
            best = res
    if best is None:
        raise FitError("the Huber point fit found no finite objective from any start")
    fit = CurveLawFit(law=law, values=dict(zip(prob.names, np.exp(best.x).tolist(), strict=True)),
                      size_law=size_law, lr_ref=lr_ref, n_ref=n_ref, objective=float(best.fun),
                      starts=len(starts), sizes=sizes)
    return fit, prob, best.x


def predict_law(fit: CurveLawFit, lr: np.ndarray, steps: np.ndarray, *, warmup_steps: int = 0,
                params: float | None = None,
                values: Sequence[dict[str, float]] | None = None) -> np.ndarray:
    """The fitted law's loss at ``steps`` of a run with per-step LR ``lr`` (and size ``params``).

    With ``values`` (parameter sets such as bootstrap refits) one curve per set, shape
    ``(len(values), len(steps))``; else the fit's own curve, shape ``(len(steps),)``.
    """
    if not fit.size_law and params is not None and fit.sizes and not any(
            same_setting(params, s) for s in fit.sizes):
        raise FitError(f"the point fit has runs of one size ({fit.sizes[0]:.4g}) and cannot "
                       f"predict N={params:.4g}")
    if fit.size_law and params is None:
        raise FitError("the point fit spans several sizes: give the target's params")
    feats = _features(fit.law, np.asarray(lr, dtype=np.float64), np.asarray(steps), warmup_steps,
                      fit.lr_ref)
    log_n = np.log(params / fit.n_ref) if fit.size_law else 0.0
    if values is None:
        return np.asarray(_curve(fit.law, feats, fit.values, log_n), dtype=np.float64)
    return np.array([np.asarray(_curve(fit.law, feats, v, log_n), dtype=np.float64) for v in values])


def _block_weights(run_of: np.ndarray, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """Per-point weights of a block bootstrap (weight = times a point's block was drawn).

    Each run's points are cut into ``n_blocks`` contiguous blocks and as many are drawn with
    replacement, per run.
    """
    w = np.zeros(run_of.size)
    for i in np.unique(run_of):
        idx = np.flatnonzero(run_of == i)
        blocks = np.array_split(idx, min(n_blocks, idx.size))
        for b in rng.integers(0, len(blocks), len(blocks)):
            w[blocks[b]] += 1.0
    return w


@dataclass(frozen=True)
class BootstrapResult:
    """Point fit, bootstrap refits and, per target, draws ``(n_boot, n_steps)`` of its curve."""

    fit: CurveLawFit
    refits: tuple[dict[str, float], ...]
    draws: dict[str, np.ndarray] = field(default_factory=dict)
    point: dict[str, np.ndarray] = field(default_factory=dict)
    failed: int = 0


def bootstrap_curves(
    runs: Sequence[Run],
    targets: Sequence[tuple[str, np.ndarray, np.ndarray, int, float | None]],
    *,
    law: str = "multipower",
    n_boot: int = 100,
    n_blocks: int = 8,
    seed: int = 0,
    size_law: bool | None = None,
    delta: float = HUBER_DELTA,
    max_points: int | None = MAX_POINTS,
) -> BootstrapResult:
    """Huber point fit plus a block bootstrap of it, and both predictions for each target.

    Resampling: blocks of each curve, not whole runs. Each run's fitted points are cut into
    ``n_blocks`` contiguous blocks and as many blocks are drawn with replacement, per run, for
    each of the ``n_boot`` refits (a weighted refit from the full fit's optimum). Whole-run
    resampling would often drop the only run that identifies a parameter (with Luo et al.'s
    three training schedules, the only decaying one fixes the annealing term) and the refit
    would be degenerate; contiguous blocks keep every schedule in every refit and keep the
    strong autocorrelation of a curve's residuals inside each block. The draws carry the
    parameter uncertainty only (no evaluation noise), as a practitioner's bootstrap would.

    Parameters
    ----------
    runs : sequence of Run
        Runs to fit.
    targets : sequence of (name, lr, steps, warmup_steps, params)
        Runs to predict: per-step LR, evaluation steps, warmup and size.

    Returns
    -------
    BootstrapResult
        ``draws[name]`` has shape ``(n_refits, len(steps))`` like
        `lrplan.curve.predict.CurvePrediction.draws`; ``point[name]`` is the full fit's curve.
    """
    used = _usable(runs)
    fit, prob, theta0 = _huber(used, *_refs(used, size_law), law=law, delta=delta,
                               max_points=max_points)
    run_of = np.concatenate(prob.run_of)
    rng = np.random.default_rng(seed)
    refits, failed = [], 0
    for _ in range(n_boot):
        res = prob.minimize(theta0, _block_weights(run_of, n_blocks, rng))
        if not np.isfinite(res.fun):
            failed += 1
            continue
        refits.append(dict(zip(prob.names, np.exp(res.x).tolist(), strict=True)))
    draws, point = {}, {}
    for name, lr, steps, warmup, params in targets:
        curves = predict_law(fit, lr, steps, warmup_steps=warmup, params=params,
                             values=[fit.values, *refits])
        point[name], draws[name] = curves[0], (curves[1:] if refits else curves[:1])
    return BootstrapResult(fit=fit, refits=tuple(refits), draws=draws, point=point, failed=failed)


def _run_tokens(r: Run) -> float:
    return float(r.total_steps) * (r.tokens_per_step or 1.0)


def _lr_shape(r: Run, n: int = 64) -> np.ndarray:
    p = np.linspace(0.0, 1.0, n)
    lr = r.lr if r.lr is not None else np.ones(1)
    return np.interp(p * (lr.size - 1), np.arange(lr.size), lr) / max(float(np.max(lr)), 1e-30)


def nearest_curve(train: Sequence[Run], target: Run, steps: np.ndarray) -> tuple[np.ndarray, str]:
    """No fit: the nearest training run's logged curve, read at the same fraction of the run.

    The source is, among the training runs with the target's schedule spec (all runs when none
    has it), the one nearest in (log params, log total tokens); ties go to the run whose LR
    schedule, as a fraction of its peak over the run's progress, is closest. The prediction at
    step s is the source's loss interpolated at the same fraction of the post-warmup part of
    the run: step ``W_s + (s - W_t) / (T_t - W_t) * (T_s - W_s)`` (W warmup, T total steps).

    Returns
    -------
    tuple
        The predicted losses at ``steps`` and the source run's name.
    """
    pool = [r for r in train if r.loss.size >= 1]
    if not pool:
        raise FitError("no training run with a logged loss to copy")
    same = [r for r in pool if target.schedule is not None and r.schedule == target.schedule]
    pool = same or pool

    def dist(r: Run) -> tuple[float, float]:
        dn = 0.0 if r.params is None or target.params is None else np.log(r.params / target.params)
        dd = np.log(_run_tokens(r) / _run_tokens(target))
        return (round(float(dn**2 + dd**2), 12),
                float(np.mean(np.abs(_lr_shape(r) - _lr_shape(target)))))

    src = min(pool, key=dist)
    # progress after warmup, mapped onto the source's post-warmup part
    p = (np.asarray(steps, dtype=np.float64) - target.warmup_steps) / max(
        target.total_steps - target.warmup_steps, 1)
    at = src.warmup_steps + p * (src.total_steps - src.warmup_steps)
    return np.interp(at, src.steps.astype(np.float64), src.loss), src.name


# ============================================================================ LR sweeps


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


# ============================================================================ loss vs N and D


@dataclass(frozen=True)
class ChinchillaFit:
    """Chinchilla's approach 3: a point fit of ``L = E + A N^-a + B D^-b`` (raw N and D).

    ``values`` has ``E, A, a, B, b``; ``boot`` the bootstrap refits' values (one dict each;
    ``failed_boot`` counts those that did not converge to finite values, left out).
    """

    values: dict[str, float]
    objective: float
    starts: int
    boot: tuple[dict[str, float], ...] = ()
    failed_boot: int = 0  # bootstrap refits left out: non-finite objective or parameters

    def loss(self, params, tokens, values: dict[str, float] | None = None) -> np.ndarray:
        """The fitted law's loss at sizes ``params`` after ``tokens``."""
        v = values or self.values
        return np.asarray(laws.loss_nd(np.log(np.asarray(params, float)),
                                       np.log(np.asarray(tokens, float)), **v))


#: Hoffmann et al.'s grid of starts, thinned (theirs has 4,500 points; Besiroglu et al. 2024).
_CHINCHILLA_STARTS = dict(e=(-1.0, 0.0, 1.0), a=(0.0, 10.0, 20.0), b=(0.0, 10.0, 20.0),
                          alpha=(0.2, 0.5, 1.0), beta=(0.2, 0.5, 1.0))


def _chinchilla_objective(delta: float):
    import jax.numpy as jnp

    def objective(x, log_n, log_d, log_y, w):
        e, a, b, alpha, beta = x[0], x[1], x[2], x[3], x[4]
        pred = jnp.log(laws.loss_nd(log_n, log_d, E=jnp.exp(e), A=jnp.exp(a), a=alpha,
                                    B=jnp.exp(b), b=beta))
        r = jnp.abs(pred - log_y)
        hub = jnp.where(r <= delta, 0.5 * r**2, delta * (r - 0.5 * delta))
        return jnp.sum(w * hub) / delta**2

    return objective


@functools.lru_cache(maxsize=4)
def _chinchilla_solver(delta: float):
    """BFGS from many starts (and weights) at once: one compiled, vectorised call."""
    import jax
    from jax.scipy.optimize import minimize

    objective = _chinchilla_objective(delta)

    def solve(x0, w, log_n, log_d, log_y):
        res = minimize(objective, x0, args=(log_n, log_d, log_y, w), method="BFGS",
                       options={"maxiter": 500})
        return res.x, res.fun

    return jax.jit(jax.vmap(solve, in_axes=(0, 0, None, None, None)))


def chinchilla_fit(params: np.ndarray, tokens: np.ndarray, loss: np.ndarray, *,
                   delta: float = HUBER_DELTA, n_boot: int = 0, seed: int = 0) -> ChinchillaFit:
    """Chinchilla's approach 3 and bootstrap refits (Hoffmann et al. 2022; Besiroglu et al. 2024).

    The Huber loss (``delta``) on ``log L`` against the log of the law, minimised by BFGS from
    a grid of starts (`_CHINCHILLA_STARTS`); each of ``n_boot`` refits resamples the points with
    replacement and starts from the best fit, as Besiroglu et al. bootstrap.
    """
    import jax.numpy as jnp

    log_n, log_d = np.log(np.asarray(params, float)), np.log(np.asarray(tokens, float))
    log_y = np.log(np.asarray(loss, float))
    solve = _chinchilla_solver(delta)
    s = _CHINCHILLA_STARTS
    starts = np.array(list(itertools.product(s["e"], s["a"], s["b"], s["alpha"], s["beta"])), float)
    data = (jnp.asarray(log_n), jnp.asarray(log_d), jnp.asarray(log_y))
    x, fun = (np.asarray(v) for v in solve(jnp.asarray(starts), jnp.ones((len(starts), log_y.size)), *data))
    ok = np.isfinite(fun) & np.all(np.isfinite(x), axis=1)
    if not ok.any():
        raise FitError("the Chinchilla fit found no finite objective from any start")
    best = x[np.flatnonzero(ok)[np.argmin(fun[ok])]]

    def values(v):
        return {"E": float(np.exp(v[0])), "A": float(np.exp(v[1])), "B": float(np.exp(v[2])),
                "a": float(v[3]), "b": float(v[4])}

    boot = []
    if n_boot:
        rng = np.random.default_rng(seed)
        w = np.stack([np.bincount(rng.integers(0, log_y.size, log_y.size), minlength=log_y.size)
                      for _ in range(n_boot)]).astype(float)
        xb, fb = solve(jnp.asarray(np.tile(best, (n_boot, 1))), jnp.asarray(w), *data)
        xb, fb = np.asarray(xb), np.asarray(fb)
        boot = [values(v) for v, f in zip(xb, fb, strict=True) if np.isfinite(f) and np.isfinite(v).all()]
    return ChinchillaFit(values=values(best), objective=float(np.min(fun[ok])), starts=len(starts),
                         boot=tuple(boot), failed_boot=n_boot - len(boot))
