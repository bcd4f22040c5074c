"""Fit the curve model: point fit for a start, NUTS, held-out calibration, provenance.

A `CurveFit` carries the posterior draws, everything needed to rebuild the model inputs for a
new schedule (groups, reference units, priors, law) and the diagnostics; it round-trips
through an ArviZ InferenceData NetCDF file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from lrplan import __version__

if TYPE_CHECKING:
    from lrplan.data import Run, RunSet
from lrplan.bayes import Diagnostics, bucket, cached, diagnostics, nuts, prior_distribution
from lrplan.curve.lawchoice import AUTO, CurveMixture, law_scores, stacking_weights
from lrplan.curve.model import (
    LAWS,
    STEP_SCALE,
    CurveData,
    GroupKey,
    curve_data,
    curve_model,
    held_at_peak,
    law_parameters,
)
from lrplan.errors import FitError, PriorError
from lrplan.files import atomic_write
from lrplan.priors import PriorSet, load_priors, priors_from_toml

__all__ = ["RATE_SITES", "CurveFit", "PointFit", "area", "discrepancy_posterior",
           "fit_curves", "load_fit", "rate_scales", "save_fit"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitConfig:
    """What a fit needs besides its draws to predict a new schedule (stored in the file)."""

    law: str
    lr_ref: float
    n_ref: float
    size_law: bool
    groups: tuple[GroupKey, ...]
    noise: float
    # posterior medians of the discrepancy rates, for reports; the draws are sites RATE_SITES
    discrepancy: float
    discrepancy_anneal: float
    discrepancy_growth: float
    area_ref: float
    seed: int
    chains: int
    num_warmup: int
    num_samples: int
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CurveFit:
    """A fitted curve model: posterior draws (chain, draw, ...), config, diagnostics, data."""

    config: FitConfig
    priors: PriorSet
    samples: dict[str, np.ndarray]
    diagnostics: Diagnostics
    observed: dict[str, np.ndarray] = field(default_factory=dict)
    version: str = __version__

    @property
    def law(self) -> str:
        """Name of the curve law."""
        return self.config.law

    def flat(self, name: str) -> np.ndarray:
        """Draws of one site with chains merged."""
        x = self.samples[name]
        return x.reshape((-1, *x.shape[2:]))

    def to_json(self) -> dict:
        """The fit's part of ``lrplan fit --json``: data, calibrated miss and noise, diagnostics."""
        c = self.config
        return {"runs": len(set(self.observed["run"])), "points": int(len(self.observed["step"])),
                "groups": len(c.groups), "discrepancy": c.discrepancy,
                "discrepancy_anneal": c.discrepancy_anneal, "discrepancy_growth": c.discrepancy_growth,
                "noise": c.noise, "diagnostics": self.diagnostics.to_json(), "notes": list(c.notes)}


# ---------------------------------------------------------------- preparing the runs


#: Points of one curve the likelihood sees. Residuals along a curve are strongly
#: autocorrelated, so evenly spaced points carry nearly all of a long log's information, and
#: the multi-power law's cost grows with the square of the points of a decaying run. On Luo
#: et al.'s split 40 points give the held-out errors of 64 (and of every point) in half the
#: time: the posterior is less sharp, so NUTS needs fewer leapfrog steps per draw.
MAX_POINTS_PER_RUN = 40


def _fit_points(run: Run, *, thin: bool = False) -> np.ndarray:
    first = max(run.warmup_steps, 1)
    keep = (run.steps >= first) & (run.steps <= run.total_steps)
    idx = np.flatnonzero(keep)
    if thin and idx.size > MAX_POINTS_PER_RUN:
        chosen = idx[np.unique(np.round(np.linspace(0, idx.size - 1, MAX_POINTS_PER_RUN)).astype(int))]
        keep = np.zeros_like(keep)
        keep[chosen] = True
    return keep


def _select(runs: RunSet) -> tuple[list[Run], list[str]]:
    used, notes = [], []
    for r in runs:
        if r.lr is None:
            notes.append(f"run {r.name}: no per-step LR (give an lr column or schedule + "
                         "peak_lr); not used by the curve model")
            continue
        keep = _fit_points(r)
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


def _groups(used: list[Run]) -> tuple[tuple[GroupKey, ...], list[int]]:
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


def _size_refs(groups: tuple[GroupKey, ...]) -> tuple[bool, float]:
    sizes = {g.params for g in groups}
    if None in sizes or len(sizes) < 2:
        known = [s for s in sizes if s is not None]
        return False, float(known[0]) if known else 1.0
    return True, float(np.exp(np.mean(np.log(sorted(sizes)))))


def _group_log_n(groups, n_ref) -> np.ndarray:
    return np.array([0.0 if g.params is None else np.log(g.params / n_ref) for g in groups])


def _build(law, used, group_index, *, lr_ref, n_ref, size_law, groups) -> CurveData:
    """Model inputs for the ``used`` runs, at the points the likelihood sees."""
    curves = []
    for r, g in zip(used, group_index, strict=True):
        keep = _fit_points(r, thin=True)
        curves.append((r.lr, r.steps[keep], r.loss[keep], r.warmup_steps, g))
    return curve_data(law, curves, lr_ref=lr_ref, group_log_n=_group_log_n(groups, n_ref),
                      size_law=size_law)


# ---------------------------------------------------------------- point fit


def lbfgs(value_and_grad, x0: np.ndarray, *args, **kwargs):
    """L-BFGS-B (scipy) on a jax ``value_and_grad(x, *args)``; a non-finite value is a wall.

    ``kwargs`` go to `scipy.optimize.minimize` (``bounds``, ``options``).
    """
    from scipy.optimize import minimize

    def fun(x):
        v, g = value_and_grad(x, *args)
        v, g = float(v), np.asarray(g, dtype=np.float64)
        if not np.isfinite(v):
            return 1e30, np.zeros_like(g)
        return v, np.nan_to_num(g)

    return minimize(fun, x0, jac=True, method="L-BFGS-B", **kwargs)


def _padded(data: CurveData) -> CurveData:
    """``data`` padded to its shape bucket (points, and multi-power pairs): see `sampling.bucket`."""
    pairs = getattr(data.features, "point", None)
    return data.padded(bucket(data.n_points), None if pairs is None else bucket(pairs.size))


def _signature(data: CurveData, priors: PriorSet, *rest) -> tuple:
    """What picks a compiled function besides array shapes: the law, groups, size law, priors."""
    return (data.law, data.n_groups, data.size_law, priors.to_toml(), *rest)


def _point_functions(data: CurveData, priors: PriorSet):
    """The point fit's compiled functions for data like ``data`` (padded), built once.

    ``init(key, data)``: the prior-median start (unconstrained, flat) and whether it is
    valid; ``value_and_grad(x, seen, data)``: the potential energy and its gradient;
    ``constrain(x, data)``: every site's constrained value, deterministic ones included.
    """
    from jax.flatten_util import ravel_pytree
    from numpyro.infer import init_to_median
    from numpyro.infer.util import constrain_fn, initialize_model, potential_energy

    def kwargs(data, seen=None):
        return dict(data=data, priors=priors, obs=data.log_loss, seen=seen)

    def start(key, data):
        info, *_ = initialize_model(key, curve_model, model_kwargs=kwargs(data),
                                    init_strategy=init_to_median(num_samples=15),
                                    dynamic_args=False)
        return info.z, jnp.isfinite(info.potential_energy)

    def build():
        proto = jax.eval_shape(start, jax.random.PRNGKey(0), data)[0]
        unravel = ravel_pytree(jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), proto))[1]
        def init(key, data):
            z, ok = start(key, data)
            return ravel_pytree(z)[0], ok

        return dict(
            init=jax.jit(init),
            value_and_grad=jax.jit(jax.value_and_grad(lambda x, seen, data: potential_energy(
                curve_model, (), kwargs(data, seen), unravel(x)))),
            constrain=jax.jit(lambda x, data: constrain_fn(
                curve_model, (), kwargs(data), unravel(x), return_deterministic=True)),
        )

    return cached(("point", *_signature(data, priors)), build)


class PointFit:
    """Maximum a posteriori points of the curve model on one data set, compiled once.

    L-BFGS from several starts: the prior median, then random moves from it.

    ``solve(seen)`` fits the points flagged in ``seen`` only; the held-out fits of the
    calibration differ in nothing else, so they share the set-up. The objective is compiled
    once per law, group layout, priors and shape bucket (`lrplan.bayes`), with the data as
    arguments: fits of similar data in one process share it. Once the full data are solved, a
    held-out fit starts from that optimum as well: from the prior median alone, a fit to a
    short prefix can stall at a law that fits nothing.
    """

    def __init__(self, data: CurveData, priors: PriorSet, *, seed: int = 0):
        self.data, self.seed = data, seed
        self._padded = jax.tree.map(jnp.asarray, _padded(data))
        self._fns = _point_functions(self._padded, priors)
        x0, ok = self._fns["init"](jax.random.PRNGKey(seed), self._padded)
        if not bool(ok):
            raise FitError("the point fit found no start with a finite posterior density; "
                           "check the priors")
        self._x0 = np.asarray(x0)
        self._x_full = None

    def _seen(self, seen: np.ndarray | None) -> jnp.ndarray:
        n = self.data.n_points
        seen = np.ones(n, bool) if seen is None else np.asarray(seen, bool)
        return jnp.asarray(np.concatenate([seen, np.zeros(self._padded.n_points - n, bool)]))

    def solve(self, seen: np.ndarray | None = None, *, starts: int = 4):
        """The best of ``starts`` L-BFGS runs: constrained values of every site, and energy."""
        full = seen is None
        mask = self._seen(seen)
        rng = np.random.default_rng(self.seed)
        x0 = self._x0
        points = [x0] + [x0 + rng.normal(0.0, 0.5, x0.shape) for _ in range(starts - 1)]
        if self._x_full is not None and not full:
            points.append(self._x_full)
        best = None
        for start in points:
            res = lbfgs(self._fns["value_and_grad"], start, mask, self._padded,
                        options=dict(maxiter=3000))
            if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
                best = res
        if best is None:
            raise FitError("the point fit found no finite posterior density; check the priors")
        if full:
            self._x_full = best.x
        constrained = self._fns["constrain"](jnp.asarray(best.x), self._padded)
        return {k: np.asarray(v) for k, v in constrained.items()}, float(best.fun)


def area(lr: np.ndarray, steps: np.ndarray, lr_ref: float) -> np.ndarray:
    """Forward LR area at ``steps`` in the model's units (kilo-steps at the reference LR)."""
    return np.cumsum(lr / lr_ref)[np.asarray(steps) - 1] / STEP_SCALE


#: The three rates of the discrepancy: their priors' names and their sites in the fit's draws.
RATE_SITES = ("discrepancy_floor", "discrepancy_anneal", "discrepancy_growth")


def rate_scales(priors: PriorSet) -> tuple[float, ...]:
    """The half-normal scales of the rates' priors; another distribution raises PriorError."""
    out = []
    for name in RATE_SITES:
        p = priors[name]
        if p.dist != "halfnormal":
            raise PriorError(f"prior of {name} is {p.dist}; the discrepancy rates take a "
                             "halfnormal prior")
        out.append(float(p.args["scale"]))
    return tuple(out)


def _curve_moments(curves, pad: bool = False) -> tuple[np.ndarray, ...]:
    """Per held-out curve: its points, e'e, X'e and X'X for X = [1, d, u] (see `_rate_model`).

    ``pad``: add empty curves (no points: a log density of exactly 0) up to the shape
    bucket of the number of curves, so that calibrations share compiled code.
    """
    n = np.array([c[0].size for c in curves], dtype=np.float64)
    x = [np.stack([np.ones_like(e), d, u], axis=1) for e, d, u in curves]
    ee = np.array([e @ e for e, _, _ in curves], dtype=np.float64)  # an empty curve adds nothing
    xe = np.array([xi.T @ e for xi, (e, _, _) in zip(x, curves, strict=True)]).reshape(-1, 3)
    xx = np.array([xi.T @ xi for xi in x]).reshape(-1, 3, 3)
    if pad:
        k = bucket(len(curves)) - len(curves)
        n, ee = np.concatenate([n, np.zeros(k)]), np.concatenate([ee, np.zeros(k)])
        xe, xx = np.concatenate([xe, np.zeros((k, 3))]), np.concatenate([xx, np.zeros((k, 3, 3))])
    return n, ee, xe, xx


def curve_loglik(rates, n, ee, xe, xx, noise2):
    """Log density of each held-out curve's errors given the three rates (one draw).

    A curve's errors are ``e ~ N(0, noise2 I + X diag(rates^2) X')`` with ``X = [1, d, u]``
    (see `discrepancy_posterior`); only the curve's moments (`_curve_moments`) enter.
    """
    z = rates
    # Through the 3x3 capacitance matrix (Woodbury): M = I + Z X'X Z / noise2 with
    # Z = diag(z), inverted by its adjugate (batched 3x3 factorisations cost XLA on CPU ~20x
    # more per NUTS step).
    m = jnp.eye(3) + z[:, None] * z[None, :] * xx / noise2
    b = z * xe
    adj = jnp.stack([jnp.cross(m[..., 1, :], m[..., 2, :]), jnp.cross(m[..., 2, :], m[..., 0, :]),
                     jnp.cross(m[..., 0, :], m[..., 1, :])], axis=-1)
    det = jnp.sum(m[..., 0, :] * adj[..., :, 0], axis=-1)
    quad = (ee - jnp.einsum("ci,cij,cj->c", b, adj, b) / det / noise2) / noise2
    logdet = n * jnp.log(noise2) + jnp.log(det)
    return -0.5 * (quad + logdet + n * jnp.log(2 * jnp.pi))


def _rate_model(n, ee, xe, xx, noise2, scales):
    import numpyro
    import numpyro.distributions as dist

    # The variance needs only the squared rates, so each rate is sampled as a signed normal
    # whose absolute value is half-normal: a smooth density through 0, where a positive rate
    # sampled on log scale has a long flat tail that makes NUTS diverge.
    z = numpyro.sample("rate", dist.Normal(0.0, jnp.asarray(scales)))
    numpyro.factor("heldout", jnp.sum(curve_loglik(z, n, ee, xe, xx, noise2)))


def heldout_scores(curves, *, noise2: float, rates: np.ndarray) -> np.ndarray:
    """Log predictive density of each held-out curve, averaged over draws of the rates.

    ``curves`` as for `discrepancy_posterior`; ``rates`` (draws, 3). The score of curve c is
    ``log mean_s p(e_c | rates_s)``: the joint density of its errors under the law's
    calibrated predictive distribution, one number per curve (its points are not independent).
    """
    from scipy.special import logsumexp

    moments = [jnp.asarray(x) for x in _curve_moments(curves, pad=True)]
    fn = cached("curve_loglik_draws", lambda: jax.jit(
        jax.vmap(curve_loglik, in_axes=(0, None, None, None, None, None))))
    ll = np.asarray(fn(jnp.asarray(rates), *moments, noise2))[:, :len(curves)]
    return logsumexp(ll, axis=0) - np.log(ll.shape[0])


def discrepancy_posterior(curves: list[tuple[np.ndarray, np.ndarray, np.ndarray]], *,
                          noise2: float, scales: tuple[float, ...], draws: int = 2000,
                          seed: int = 0) -> tuple[np.ndarray, int]:
    """Draws (draws, 3) of ``(floor, anneal, growth)`` given held-out curves; and divergences.

    Each curve is ``(e, d, u)``: a held-out run's errors on log loss and, per point, the loss
    reduction the law credits to LR decay and the log LR area beyond the fitted one. The
    model is the one a prediction draws from: each curve departs from the law by one
    standard-normal offset per part, ``e = z0 floor + z1 anneal d + z2 growth u`` plus the
    points' own Gaussian noise of variance ``noise2``; the rates' priors are half-normal with
    ``scales``. A curve's errors along its points are one draw of those offsets, not many
    independent errors: a few curves leave the rates uncertain however densely each is
    logged, and a growth the fitted runs barely reveal is not ruled out.
    """
    from numpyro.infer import NUTS

    moments = _curve_moments(curves, pad=True)
    # thinned: draws that pass near a zero rate are autocorrelated (ESS ~0.1 per draw unthinned)
    args = (*(jnp.asarray(x) for x in moments), jnp.asarray(noise2, dtype=jnp.float64),
            jnp.asarray(scales, dtype=jnp.float64))
    samples, diverging = nuts("rates", lambda: NUTS(_rate_model), jax.random.PRNGKey(seed), args,
                              num_warmup=500, num_samples=draws, thinning=3)
    return np.abs(np.asarray(samples["rate"][0], dtype=np.float64)), int(diverging.sum())


#: Where the calibration cuts every run to forecast the rest: the forecasts reach ~3x the
#: fitted LR area, the range a planner extrapolates over.
PREFIXES = (0.3, 0.45, 0.6)
#: A point has seen an LR decay once the LR after warmup has fallen this far (relative) below
#: its peak. It depends on the schedule alone, so every law is calibrated (and scored) on the
#: same held-out points.
DECAY_SEEN = 1e-3


def _decayed(run: Run, steps: np.ndarray) -> np.ndarray:
    """Per evaluation step: whether the run's LR has fallen below its peak since warmup."""
    lr = np.asarray(run.lr, dtype=np.float64)
    low = lr.copy()
    low[: run.warmup_steps] = lr.max()
    return np.minimum.accumulate(low)[np.asarray(steps) - 1] < (1.0 - DECAY_SEEN) * lr.max()


def _calibrate(fit: PointFit, point: dict, used: list[Run], group_index: list[int],
               lr_ref: float, *, scales: tuple[float, ...], draws: int, seed: int):
    """The law's error on log loss where it did not see the data, in three parts.

    Returns a dict with ``draws`` posterior draws of the three rates (``rates``), their
    sampler's ``divergences``, their medians (``floor``, ``anneal``, ``growth``) and
    ``fitted``, the rms by which held-out points within the fitted LR area miss more than the
    fitted points do (the likelihood's discrepancy), plus notes.

    Held-out errors come from predicting each run of a group with >= 2 runs from a fit
    without it (schedule transfer, and a forecast beyond the other runs' LR area where it
    outlasts them), from fitting every run's first `PREFIXES` and forecasting the rest (after
    an LR decay only if the fit saw one), and, in groups with runs of several lengths, from
    forecasting the longest run from the others. An unseen curve's discrepancy at a point is
    ``sqrt(floor^2 + (anneal * d)^2 + (growth * u)^2)``, with d the relative loss reduction
    the law credits to LR decay there (the gap to the schedule held at its peak LR) and u the
    log ratio of the forward LR area to the area fitted (0 within it); the rates' posterior
    is `discrepancy_posterior`, with each held-out run of each held-out fit as one curve. On
    Luo et al.'s curves the law is exact to ~0.05% while the LR is constant and off by 5-25%
    of the reduction it predicts after a decay it has not seen, so one constant scale is too
    wide before a decay and too narrow after it.
    """
    data = fit.data
    steps = [r.steps[_fit_points(r, thin=True)] for r in used]
    run_of = np.concatenate([np.full(st.size, i) for i, st in enumerate(steps)])
    flat = curve_data(data.law, [(held_at_peak(r.lr, r.warmup_steps), st, None, r.warmup_steps, g)
                                 for r, st, g in zip(used, steps, group_index, strict=True)],
                      lr_ref=lr_ref, group_log_n=data.group_log_n, size_law=data.size_law)

    def reduction(p):
        law = np.asarray(_law_at_point(data, p))
        return law, np.asarray(_law_at_point(flat, p)) / law - 1.0

    law_fit, d_fit = reduction(point)
    decayed = np.concatenate([_decayed(r, st) for r, st in zip(used, steps, strict=True)])

    def held_out(seen):
        p, _ = fit.solve(seen, starts=2)
        law, d = reduction(p)
        return data.log_loss - np.log(law), d

    curves = []  # (error, d, u) at the points of each held-out run of each held-out fit
    counts = np.bincount(group_index)
    eligible = [j for j, g in enumerate(group_index) if counts[g] >= 2]
    # at most 6 point fits, spread over the runs (and so over groups), not the first six
    folds = [eligible[i] for i in np.unique(np.linspace(0, len(eligible) - 1, 6).round().astype(int))
             ] if eligible else []
    areas = [area(r.lr, st, lr_ref) for r, st in zip(used, steps, strict=True)]
    ends = np.array([a[-1] for a in areas])
    def decay_unseen(seen):
        # A fit that saw no LR decay knows nothing of what one does, and the fit being
        # calibrated always has seen one (else no point has d > 0): its misses after a decay
        # (WSD cooldowns cut off by every prefix; 0.4-1.6% rms on OLMo's 370M runs; a cosine
        # forecast from a constant run alone, where the law's L0 and B are one sum) would pass
        # for a floor that widens every interval.
        return not np.any(decayed[seen])

    for j in folds:
        e, d = held_out(run_of != j)
        out = run_of == j
        keep = ~decayed[out] if decay_unseen(run_of != j) else np.ones(out.sum(), bool)
        # a run that outlasts the others' LR area is a forecast beyond it, as in a prediction
        reach = np.delete(ends, j).max()
        u = np.maximum(0.0, np.log(areas[j] / reach))
        curves.append((e[out][keep], d[out][keep], u[keep]))
    for frac in PREFIXES:
        cut = [int(frac * (st.size - 1)) for st in steps]
        seen = np.concatenate([np.arange(st.size) <= c for st, c in zip(steps, cut, strict=True)])
        e, d = held_out(seen)
        u = np.concatenate([np.log(a / a[c]) for a, c in zip(areas, cut, strict=True)])
        late = u > 0
        if decay_unseen(seen):
            late &= ~decayed
        curves += [(e[k], d[k], u[k]) for k in (late & (run_of == i) for i in range(len(used)))]
    # In a group with runs of several lengths, the longest one forecast from the others is
    # the horizon extrapolation a planner makes: its reach beyond the group's fitted area, at a
    # small decay share early on, is what prefix forecasts of decaying runs never show.
    group_index = np.asarray(group_index)
    longest = []
    for g in np.unique(group_index):
        members = np.flatnonzero(group_index == g)
        top = members[np.argmax(ends[members])]
        shorter = ends[members[members != top]]
        if shorter.size and shorter.min() < ends[top] / 1.5:
            longest.append((top, shorter.max()))
    if len(longest) == 1 and longest[0][0] in folds:
        longest = []  # that fit is the fold leaving the run out, above
    if longest:
        seen = ~np.isin(run_of, [j for j, _ in longest])
        e, d = held_out(seen)
        for j, reach in longest:
            out = run_of == j
            keep = ~decayed[out] if decay_unseen(seen) else np.ones(out.sum(), bool)
            u = np.maximum(0.0, np.log(areas[j] / reach))
            curves.append((e[out][keep], d[out][keep], u[keep]))
    curves = [c for c in curves if c[0].size]
    fits = len(folds) + len(PREFIXES) + bool(longest)
    # The held-out errors carry the points' own noise, outliers included: its variance is
    # the fitted points' mean squared residual. The Student-t scale alone understates it
    # where a few points are far off (Luo et al.'s 25M curves: 6e-4 against an rms of 1.8e-3),
    # and the excess would pass for a discrepancy that shifts whole curves.
    noise2 = float(np.mean((data.log_loss - np.log(law_fit)) ** 2))
    rates, divergences = discrepancy_posterior(curves, noise2=noise2, scales=scales, draws=draws,
                                               seed=seed)
    floor, anneal, growth = np.median(rates, axis=0)
    # The likelihood's discrepancy: how much further the law misses the points of a run it did
    # not fit than those it fitted, within the fitted LR area; modelled only where no held-out
    # point lies there.
    within = np.concatenate([e[u == 0] for e, _, u in curves]) if curves else np.zeros(0)
    fitted = float(np.sqrt(max(0.0, np.mean(within**2) - noise2)) if within.size
                   else np.sqrt(floor**2 + anneal**2 * np.mean(d_fit**2)))
    notes = [f"discrepancy {floor:.2e} (log loss), plus {anneal:.3f} of the loss reduction the law "
             f"credits to LR decay and {growth:.2e} per unit log area beyond the fitted area "
             f"(posterior medians from {len(curves)} curves of {fits} held-out fits: "
             f"{len(folds)} leaving one run out, "
             f"{len(PREFIXES)} of every run's first {', '.join(f'{p:.0%}' for p in PREFIXES)}"
             + (f", 1 without the longest run of {len(longest)} group(s))" if longest else ")")]
    # Each held-out curve's log predictive density under the calibrated law: how laws are
    # weighed against each other (`lrplan.curve.lawchoice`). Thinned draws: the mean is smooth.
    thin = max(1, len(rates) // 1000)
    scores = heldout_scores(curves, noise2=noise2, rates=rates[::thin]) if curves else np.zeros(0)
    return dict(rates=rates, divergences=divergences, floor=float(floor), anneal=float(anneal),
                growth=float(growth), fitted=fitted, scores=scores), notes


def _law_mean(data: CurveData, values: dict, *, draws: bool = False) -> np.ndarray:
    """The law at ``data``'s points from per-group values (``draws``: a leading draw axis).

    Compiled once per law, group layout and shape bucket (the data are padded to it).
    """
    from lrplan.curve.model import law_mean

    fn = cached(("law_mean", draws), lambda: jax.jit(
        jax.vmap(law_mean, in_axes=(None, 0)) if draws else law_mean))
    return np.asarray(fn(_padded(data), values))[..., :data.n_points]


def _law_at_point(data: CurveData, point: dict[str, np.ndarray]) -> np.ndarray:
    values = {}
    for n in law_parameters(data.law):
        key = f"{n}_group" if f"{n}_group" in point else n
        v = jnp.asarray(point[key])
        values[n] = jnp.broadcast_to(v, (data.n_groups,)) if v.ndim == 0 else v
    return _law_mean(data, values)


# ---------------------------------------------------------------- NUTS


def _centred_start(point: dict[str, np.ndarray], priors: PriorSet, law: str) -> dict:
    """NUTS's starting values for the centred model, from the MAP point (non-centred)."""
    start = {k: jnp.asarray(v) for k, v in point.items()
             if not k.endswith("_group") and not k.startswith("z_") and k not in ("sigma", "C", "E")}
    if "tau" in point:
        # When the groups agree, the MAP's tau sits near 0, the neck of the centred funnel,
        # where NUTS's step size collapses: start at the prior's mean spread instead.
        start["tau"] = jnp.maximum(start["tau"], prior_distribution(priors["tau"]).mean)
        for n in law_parameters(law)[1:]:
            start[f"log_{n}"] = jnp.log(jnp.asarray(point[f"{n}_group"]))
        start["L0_offset"] = jnp.asarray(0.05 * point["tau"] * point["z_L0"])
    return start


@dataclass
class _Prepared:
    """One law's data, MAP point and held-out calibration: everything before NUTS."""

    law: str
    priors: PriorSet
    data: CurveData
    used: list
    group_index: list[int]
    groups: tuple[GroupKey, ...]
    size_law: bool
    n_ref: float
    lr_ref: float
    point: dict
    cal: dict
    notes: list[str]


def _prepare(runs: RunSet, law: str, priors: PriorSet, *, seed: int, draws: int) -> _Prepared:
    law_parameters(law)
    if priors.law != law:
        raise FitError(f"priors are for law {priors.law!r}, the fit asks for {law!r}")
    scales = rate_scales(priors)
    used, notes = _select(runs)
    groups, group_index = _groups(used)
    size_law, n_ref = _size_refs(groups)
    lr_ref = max(g.peak_lr for g in groups)
    data = _build(law, used, group_index, lr_ref=lr_ref, n_ref=n_ref, size_law=size_law,
                  groups=groups)
    log.info("fitting %s law to %d runs (%d points, %d groups)", law, len(used),
             data.n_points, data.n_groups)
    point_fit = PointFit(data, priors, seed=seed)
    point, _ = point_fit.solve()
    cal, cal_notes = _calibrate(point_fit, point, used, group_index, lr_ref,
                                scales=scales, draws=draws, seed=seed)
    return _Prepared(law, priors, data, used, group_index, groups, size_law, n_ref, lr_ref,
                     point, cal, notes + cal_notes)


#: A fitted run is missed when its last points sit off the posterior-median law by more than
#: this many noise scales, and by at least `MISFIT_MIN` in log loss.
MISFIT_NOISES = 4.0
MISFIT_MIN = 0.002
#: A discrepancy floor over this many noise scales (and over `FLOOR_MIN`) dwarfs the noise: the
#: law misses unseen runs everywhere, not only where it extrapolates.
FLOOR_NOISES = 10.0
FLOOR_MIN = 0.005


def misfit_checks(law_median: np.ndarray, log_loss: np.ndarray, run_of: np.ndarray,
                  names: list[str], *, noise: float, floor: float) -> tuple[str, ...]:
    """Ways in which a fitted law misses its own runs, one phrase each (empty: it fits).

    ``law_median`` is the posterior-median law at the fitted points. A run is missed when
    the mean error over its last 10% of points (at least 3) exceeds ``MISFIT_NOISES`` noise
    scales and ``MISFIT_MIN``: the end of a fitted run is what a forecast of a similar run
    leans on.
    """
    out = []
    err = log_loss - np.log(law_median)
    limit = max(MISFIT_NOISES * noise, MISFIT_MIN)
    for i, name in enumerate(names):
        e = err[run_of == i]
        tail = e[-max(3, int(np.ceil(0.1 * e.size))):]
        bias = float(np.mean(tail))
        if abs(bias) > limit:
            out.append(f"the law misses its fitted run {name} by {bias:+.2%} over its last "
                       f"{tail.size} points (noise {noise:.2%}): the fit failed, or the law "
                       "does not describe this run")
    if floor > max(FLOOR_NOISES * noise, FLOOR_MIN):
        out.append(f"the law misses runs it did not fit by {floor:.2%} everywhere (its noise is "
                   f"{noise:.2%}): it does not describe these runs")
    return tuple(out)


def _law_median(data: CurveData, samples: dict[str, np.ndarray], max_draws: int = 200) -> np.ndarray:
    """The posterior-median law at the fitted points, from up to ``max_draws`` draws."""
    names = law_parameters(data.law)
    flat = {}
    for n in names:
        key = f"{n}_group" if f"{n}_group" in samples else n
        x = samples[key]
        x = x.reshape((-1, *x.shape[2:]))
        flat[n] = x.reshape(x.shape[0], -1) if x.ndim > 1 else x[:, None]
    total = flat[names[0]].shape[0]
    pick = np.unique(np.linspace(0, total - 1, min(max_draws, total)).round().astype(int))
    values = {n: jnp.broadcast_to(jnp.asarray(v[pick]), (pick.size, data.n_groups))
              for n, v in flat.items()}
    return np.median(_law_mean(data, values, draws=True), axis=0)


class _Centred:
    """The centred curve model with fixed priors and the data and scale as its arguments.

    One per priors (cached), so that NUTS's compiled code is shared by every fit with them.
    """

    def __init__(self, priors: PriorSet):
        self.priors = priors

    def __call__(self, data: CurveData, scale):
        curve_model(data, priors=self.priors, obs=data.log_loss, scale=scale, centred=True)


def _sample(prep: _Prepared, runs: RunSet, *, seed: int, chains: int, num_warmup: int,
            num_samples: int, progress: bool) -> CurveFit:
    from numpyro.infer import NUTS

    data, point, cal, priors, used = prep.data, prep.point, prep.cal, prep.priors, prep.used
    noise = float(point["sigma"])
    scale = float(np.hypot(noise, cal["fitted"]))
    model = cached(("centred model", priors.to_toml()), lambda: _Centred(priors))
    padded = jax.tree.map(jnp.asarray, _padded(data))
    if progress:  # one compiled run: no per-step bar
        log.info("sampling the %s law: %d chain(s) x (%d warmup + %d draws)", prep.law, chains,
                 num_warmup, num_samples)
    samples, diverging = nuts(
        ("curve", *_signature(data, priors)),
        lambda: NUTS(model, dense_mass=True, target_accept_prob=0.8),
        jax.random.PRNGKey(seed), (padded, jnp.asarray(scale, dtype=jnp.float64)),
        init=_centred_start(point, priors, prep.law), num_chains=chains,
        num_warmup=num_warmup, num_samples=num_samples)
    sites = [k for k in samples if not k.endswith("_group") and k not in ("C", "E")]
    run_of = np.concatenate([np.full(int(_fit_points(r, thin=True).sum()), i)
                             for i, r in enumerate(used)])
    misfit = misfit_checks(_law_median(data, samples), data.log_loss, run_of,
                           [r.name for r in used], noise=noise, floor=cal["floor"])
    # one draw of the discrepancy rates per draw of the law (they are independent)
    samples.update({k: cal["rates"][:, i].reshape(chains, num_samples) for i, k in enumerate(RATE_SITES)})
    divergences = int(diverging.sum()) + cal["divergences"]
    diag = replace(diagnostics(samples, divergences, sites, single_chain=RATE_SITES), misfit=misfit)
    for m in misfit:
        log.warning("%s law: %s", prep.law, m)

    config = FitConfig(law=prep.law, lr_ref=prep.lr_ref, n_ref=prep.n_ref, size_law=prep.size_law,
                       groups=prep.groups, noise=noise, discrepancy=cal["floor"],
                       discrepancy_growth=cal["growth"], discrepancy_anneal=cal["anneal"],
                       area_ref=float(max(area(r.lr, r.steps[_fit_points(r)][-1:], prep.lr_ref)[0]
                                          for r in used)),
                       seed=seed, chains=chains, num_warmup=num_warmup,
                       num_samples=num_samples,
                       notes=tuple(runs.excluded) + tuple(prep.notes))
    observed = {
        "run": np.concatenate([np.full(_fit_points(r).sum(), r.name, dtype=object) for r in used]),
        "step": np.concatenate([r.steps[_fit_points(r)] for r in used]),
        "loss": np.concatenate([r.loss[_fit_points(r)] for r in used]),
        "group": np.concatenate([np.full(_fit_points(r).sum(), g)
                                 for r, g in zip(used, prep.group_index, strict=True)]),
    }
    return CurveFit(config=config, priors=priors, samples=samples, diagnostics=diag,
                    observed=observed)


def _priors_of(law: str, priors: PriorSet | dict | None) -> PriorSet:
    """A law's priors in a fit of several laws: its own entry, else its defaults."""
    if isinstance(priors, dict):
        priors = priors.get(law)
    return priors if priors is not None and priors.law == law else load_priors(law)


def fit_curves(
    runs: RunSet,
    *,
    law: str = AUTO,
    priors: PriorSet | dict[str, PriorSet] | None = None,
    seed: int = 0,
    chains: int = 2,
    num_warmup: int = 400,
    num_samples: int = 1000,
    progress: bool = False,
) -> CurveFit | CurveMixture:
    """Fit a curve law to every usable run with NUTS; ``law="auto"`` lets the data choose.

    The chains start at the MAP point (L-BFGS from several starts), so warmup only has to adapt
    the step size and a dense mass matrix. Chains run in parallel when JAX has one device per
    chain (the CLI asks for that), else one after another.

    With ``law="auto"`` every law is calibrated on the same held-out curves and weighed by
    stacking of their held-out predictive densities (`lrplan.curve.lawchoice`); the laws with a
    weight of at least `MIN_WEIGHT` are sampled and returned as a `CurveMixture`. ``priors``
    is one law's `PriorSet` (the other laws take their defaults) or a dict by law.
    """
    draws = chains * num_samples
    if law != AUTO:
        # a law's own prior set goes as given: `_prepare` refuses one for another law
        own = priors if isinstance(priors, PriorSet) else _priors_of(law, priors)
        prep = _prepare(runs, law, own, seed=seed, draws=draws)
        return _sample(prep, runs, seed=seed, chains=chains, num_warmup=num_warmup,
                       num_samples=num_samples, progress=progress)
    preps = [_prepare(runs, name, _priors_of(name, priors), seed=seed, draws=draws) for name in LAWS]
    lpd = np.stack([p.cal["scores"] for p in preps])
    scores = law_scores(list(LAWS), lpd, stacking_weights(lpd))
    log.info("law weights: %s", ", ".join(f"{s.law} {s.weight:.2f}" for s in scores))
    fits = tuple(_sample(p, runs, seed=seed, chains=chains, num_warmup=num_warmup,
                         num_samples=num_samples, progress=progress)
                 for p, s in zip(preps, scores, strict=True) if s.sampled)
    w = np.array([s.weight for s in scores if s.sampled])
    return CurveMixture(fits=fits, weights=tuple((w / w.sum()).tolist()), scores=scores)


# ---------------------------------------------------------------- files


def _config_to_json(config: FitConfig) -> str:
    d = asdict(config)
    return json.dumps(d)


def _config_from_json(text: str) -> FitConfig:
    d = json.loads(text)
    d["groups"] = tuple(GroupKey(**g) for g in d["groups"])
    d["notes"] = tuple(d["notes"])
    return FitConfig(**d)


#: Separates a law's name from its sites in a mixture's posterior file.
_LAW_SEP = "__"


def _law_attrs(fit: CurveFit) -> dict:
    return {"law": fit.law, "config": _config_to_json(fit.config), "priors": fit.priors.to_toml(),
            "diagnostics": json.dumps(asdict(fit.diagnostics))}


def save_fit(fit: CurveFit | CurveMixture, path: str | Path) -> None:
    """Write the fit as ArviZ InferenceData NetCDF, atomically, with its provenance inside.

    A `CurveMixture` keeps each law's draws under ``<law>__<site>`` and, in the attributes,
    each law's config, priors and diagnostics, the weights and every law's held-out score.
    """
    import arviz as az

    mixture = isinstance(fit, CurveMixture)
    fits = fit.fits if mixture else (fit,)
    samples = ({f"{f.law}{_LAW_SEP}{k}": v for f in fits for k, v in f.samples.items()}
               if mixture else fit.samples)
    obs = {k: (v.astype(str) if v.dtype == object else v) for k, v in fit.observed.items()}
    idata = az.from_dict(
        posterior=samples,
        observed_data={"loss": obs["loss"]},
        constant_data={"run": obs["run"], "step": obs["step"], "group": obs["group"]},
        dims={"loss": ["point"], "run": ["point"], "step": ["point"], "group": ["point"]},
    )
    attrs = {"lrplan_version": fit.version, "lrplan_kind": "curve_mixture" if mixture else "curve"}
    if mixture:
        attrs.update(law="auto", laws=json.dumps({f.law: _law_attrs(f) for f in fits}),
                     weights=json.dumps(dict(zip((f.law for f in fits), fit.weights, strict=True))),
                     scores=json.dumps([s.to_json() for s in fit.scores]))
    else:
        attrs.update(_law_attrs(fit))
    idata.posterior.attrs.update(attrs)
    atomic_write(path, lambda tmp: idata.to_netcdf(tmp, engine="h5netcdf"))


def _release(version: str) -> tuple[str, ...]:
    """The part of a version that fit files must share.

    The major, and before 1.0 the minor too: 0.x releases may change a law (0.2 added the
    warmup's term to the multi-power law).
    """
    parts = version.split(".") + ["0"]
    return tuple(parts[:2]) if parts[0] == "0" else (parts[0],)


def _diagnostics_from_json(text: str) -> Diagnostics:
    d = json.loads(text)
    return Diagnostics(**{**d, "misfit": tuple(d.get("misfit", ()))})


def load_fit(path: str | Path) -> CurveFit | CurveMixture:
    """Read a fit written by `save_fit`; a file of another kind or version raises FitError."""
    import arviz as az

    from lrplan.curve.lawchoice import LawScore

    path = Path(path)
    if not path.exists():
        raise FitError(f"{path}: no such fit file; make one with `lrplan fit RUNS -o {path}`")
    try:
        idata = az.from_netcdf(str(path), engine="h5netcdf")
    except Exception as e:  # noqa: BLE001 - any reader failure means "not a fit file"
        raise FitError(f"{path}: not an lrplan fit file ({type(e).__name__})") from None
    attrs = idata.posterior.attrs
    kind = attrs.get("lrplan_kind")
    if kind not in ("curve", "curve_mixture") or ("config" not in attrs and "laws" not in attrs):
        raise FitError(f"{path}: not an lrplan curve fit (no lrplan provenance inside)")
    if _release(str(attrs.get("lrplan_version", "0"))) != _release(__version__):
        raise FitError(f"{path}: written by lrplan {attrs['lrplan_version']}, this is "
                       f"{__version__}; refit with this version")
    post = idata.posterior
    cd = idata.constant_data
    observed = {"run": np.asarray(cd["run"].values).astype(object),
                "step": np.asarray(cd["step"].values),
                "loss": np.asarray(idata.observed_data["loss"].values),
                "group": np.asarray(cd["group"].values)}

    def one(a: dict, samples: dict) -> CurveFit:
        return CurveFit(config=_config_from_json(a["config"]),
                        priors=priors_from_toml(a["priors"], source=str(path)), samples=samples,
                        diagnostics=_diagnostics_from_json(a["diagnostics"]), observed=observed,
                        version=str(attrs["lrplan_version"]))

    if kind == "curve":
        return one(attrs, {k: np.asarray(post[k].values) for k in post.data_vars})
    fits = []
    for law, a in json.loads(attrs["laws"]).items():
        prefix = f"{law}{_LAW_SEP}"
        fits.append(one(a, {k[len(prefix):]: np.asarray(post[k].values)
                            for k in post.data_vars if k.startswith(prefix)}))
    weights = json.loads(attrs["weights"])
    return CurveMixture(fits=tuple(fits), weights=tuple(float(weights[f.law]) for f in fits),
                        scores=tuple(LawScore(**s) for s in json.loads(attrs["scores"])))
