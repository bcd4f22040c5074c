"""What practitioners do without lrplan: point fits, bootstrap intervals, sweep optima, nearest runs.

Three families of baselines, each on the same inputs lrplan gets, so that a backtest can put
them side by side:

- curve laws fitted by a robust point fit (`huber_fit`): the Huber loss on log loss, minimised
  by L-BFGS-B from a grid of starts (Hoffmann et al. 2022; Tissue et al. 2024), with the same
  law functions as lrplan (`lrplan.laws`), and intervals from a block bootstrap of that fit
  (`bootstrap_curves`, in the spirit of Besiroglu et al. 2024);
- LR rules fitted to sweeps of final losses: per-cell optima (`cell_optima`), the Step Law
  procedure (`step_law_fit`, Li et al. 2025) and the quadratic-vertex power law
  (`bjorck_fit`, Bjorck et al. 2024), in `lrplan.evaluate.lr_baselines`;
- no fit at all: the nearest run's curve (`nearest_curve`) or the nearest cell's optimum
  (`nearest_lr_fit`, in `lrplan.evaluate.lr_baselines`).

This module holds the curve baselines; Chinchilla's fit of loss against N and D is in
`lrplan.evaluate.chinchilla`. The names of both modules are importable from here too.

References
----------
Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", arXiv:2203.15556.
Tissue et al. 2024, "Scaling Law with Learning Rate Annealing", arXiv:2408.11029.
Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt", arXiv:2404.10102.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lrplan import laws
from lrplan.curve.model import STEP_SCALE, law_parameters, same_setting
from lrplan.curve.pointfit import lbfgs
from lrplan.data import Run
from lrplan.errors import FitError
from lrplan.evaluate.chinchilla import HUBER_DELTA, ChinchillaFit, chinchilla_fit
from lrplan.evaluate.lr_baselines import (
    STEP_LAW_TOLERANCE,
    LrRule,
    NearestLr,
    bjorck_fit,
    cell_optima,
    nearest_lr_fit,
    step_law_fit,
)

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
    "block_weights",
    "cell_optima",
    "step_law_fit",
    "bjorck_fit",
    "nearest_lr_fit",
    "ChinchillaFit",
    "chinchilla_fit",
]

#: Points per run used by the point fit (evenly spaced, as lrplan's curve model thins).
MAX_POINTS = 64


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


def block_weights(run_of: np.ndarray, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
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
        res = prob.minimize(theta0, block_weights(run_of, n_blocks, rng))
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


