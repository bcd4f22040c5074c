r"""How far the transfer law misses a cell it did not see, measured by leave-out refits.

A dense sweep pins the law's parameters tightly, and its posterior then narrows as if the law
were exact. This module measures the law's own miss: it refits the same model (a point fit,
the maximum a posteriori of `lrplan.transfer.model.transfer_model`) with each size left out,
the longest horizon left out, and each batch left out, and compares each held-out cell's
empirical optimum (the vertex of a quadratic in log LR, `lrplan.evaluate.baselines.cell_optima`) and
loss level with what the refit predicts there. With ``r`` the held-out cell's signed
extrapolation (e-folds of N, D and B beyond the refit's runs) and ``d = |r|``, the miss of
cell i held out by refit f is

.. math::

    e_i = x(r_i) \cdot m + u_f\, d_i + \varepsilon_i, \qquad
    u_f \sim \mathrm{Normal}(0, k^2), \quad \varepsilon_i \sim \mathrm{Normal}(0, s^2), \quad
    m \sim \mathrm{Normal}(0, \tau^2 I)

for the log lr* miss and (separately) the best-loss miss. ``u_f`` is the refit's own slope:
one refit's law is wrong once for all the cells it holds out, so a refit whose cells all miss
the same way counts as one miss, not as many. ``x(r)`` splits each dimension into its upward
and downward e-folds, so ``m`` is a signed drift per direction: a law that bends (lr* curving
in log N) misses cells beyond the largest size the same way, and the refit that leaves the
largest size out shows by how much. Only directions some refit extrapolated in get a drift.
``m`` and the slopes are integrated out exactly (linear-Gaussian given ``s, k``; Woodbury on
the grid, `miss_loglik`); ``s`` and ``k`` get a posterior on a grid (half-normal priors). A
plan's target at ``r_t`` then shifts its log lr* and loss level by
``x(r_t) \cdot m + \mathrm{Normal}(0, k^2 d_t^2)`` (``+ s^2`` when the model has no
cell-level effects to carry a cell's own miss).

``taylor=True`` measures extrapolation as Taylor `reach` instead, ``v (|v| + span)`` per
dimension: the miss of a line through a curved truth. It transfers a refit's miss on a narrow
range to the full fit's wider one, but with the same priors per unit it widened the misspecified
study's intervals far past nominal (examples/transfer_discrepancy.md), so it is not the default.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy import stats

from lrplan.bayes import map_functions
from lrplan.curve.pointfit import lbfgs
from lrplan.errors import FitError
from lrplan.evaluate.baselines import cell_optima
from lrplan.transfer.fit import TransferConfig, TransferFit
from lrplan.transfer.model import CELL_SITES, arrays_model, data_arrays
from lrplan.transfer.points import normalise, slice_labels, swept_cells, transfer_data

__all__ = ["Discrepancy", "calibrate_transfer", "leave_out_misses", "discrepancy_of", "point_fit",
           "leave_out_folds", "extrapolation", "grid_posterior", "miss_loglik", "miss_sd",
           "drift_features", "finals_of", "reach", "spans", "PRIOR_SCALE", "DRIFT", "VARIANTS"]

log = logging.getLogger(__name__)

#: Prior scales of (s, k, tau): half-normal s and k, the drift's Normal tau; log lr* (e-folds)
#: and loss (nats), k and tau per e-fold (per unit of `reach` with ``taylor=True``). A factor
#: ~1.2 miss in lr* within the fitted range and per e-fold beyond it, 0.5% of a ~3-nat loss.
PRIOR_SCALE = {"lr": (0.2, 0.2, 0.2), "loss": (0.015, 0.015, 0.015)}
#: An exponent of lr* that moves by more than this across leave-out refits is flagged.
DRIFT = 0.1
#: Named variants of `calibrate_transfer`'s switches, for studies that compare them.
VARIANTS = {"default": {}, "reach": {"taylor": True}, "independent": {"shared": False},
            "zero-mean": {"drift": False}, "reach-zero-mean": {"taylor": True, "drift": False},
            "independent-zero-mean": {"shared": False, "drift": False}}
_DIMS = (("params", "size", "c_n"), ("tokens", "horizon", "c_d"), ("tokens_per_step", "batch", "c_b"))
_GRID = 60


def extrapolation(finals: pd.DataFrame, params, tokens, tokens_per_step) -> np.ndarray:
    """Signed e-folds beyond the range of ``finals`` in log N, log D, log B (0 inside)."""
    out = []
    for (col, _, _), v in zip(_DIMS, (params, tokens, tokens_per_step), strict=True):
        lo, hi = np.log(finals[col].min()), np.log(finals[col].max())
        x = np.log(v)
        out.append(x - hi if x > hi else (x - lo if x < lo else 0.0))
    return np.array(out, dtype=np.float64)


def spans(finals: pd.DataFrame) -> np.ndarray:
    """The width of ``finals``' range in log N, log D, log B (e-folds)."""
    return np.array([np.log(finals[col].max() / finals[col].min()) for col, _, _ in _DIMS])


def reach(v: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Signed Taylor reach ``v (|v| + span)`` of extrapolations ``v`` beyond ranges ``span`` wide.

    A smooth law fitted over a range of width ``span`` and extrapolated ``v`` beyond its end
    misses a truth of curvature ``c`` (second derivative / 2) by ``c |v| (|v| + span)``: the
    remainder of linear interpolation, ``f''/2 (x - a)(x - b)``. Misses measured at one reach
    transfer to another whatever the ranges' widths, where raw e-folds do not (a refit on two
    close sizes extrapolates far more wildly per e-fold than the full fit).
    """
    v = np.asarray(v, dtype=np.float64)
    return v * (np.abs(v) + np.asarray(span, dtype=np.float64))


def point_fit(points: pd.DataFrame, *, lr_law: str, bowl: str, priors, cell_effects: bool,
              fixed: dict[str, np.ndarray] | None = None, seed: int = 0) -> TransferFit:
    """The model's maximum a posteriori (in its unconstrained space) as a one-draw fit.

    ``fixed`` conditions sites on values (the cell spreads of the full fit: a point fit would
    shrink them to zero).
    """
    fixed = {k: jnp.asarray(v) for k, v in (fixed or {}).items()}
    n0, d0, b0, lr_ref = normalise(points)
    data, _ = transfer_data(points, n0, d0, b0, lr_ref, cell_effects)
    arrays, static = data_arrays(data)
    fixed_arg = fixed or None
    # the latent layout depends on the static fields and the conditioned sites only, so the
    # leave-out refits of a sweep share the compiled functions
    model = partial(arrays_model, static=static, priors=priors, lr_law=lr_law, bowl=bowl)
    fns = map_functions(("transfer point", static, tuple(sorted(fixed)), priors.to_toml(), lr_law, bowl),
                        model, (arrays, fixed_arg))
    z0, ok = fns["init"](jax.random.PRNGKey(seed), arrays, fixed_arg)
    if not bool(ok):
        raise FitError("the transfer point fit found no start with a finite posterior density; "
                       "check the priors")
    res = lbfgs(fns["value_and_grad"], np.asarray(z0, dtype=np.float64), arrays, fixed_arg)
    values = fns["constrain"](jnp.asarray(res.x), arrays, fixed_arg)
    samples = {k: np.asarray(v)[None, None] for k, v in values.items()}
    samples.update({k: np.asarray(v, dtype=np.float64)[None, None] for k, v in fixed.items()})
    config = TransferConfig(
        lr_law=lr_law, bowl=bowl, n0=n0, d0=d0, b0=b0, lr_ref=lr_ref,
        schedule_known=bool(points.loc[~points["diverged"], "unannealed"].notna().all()),
        seed=seed, chains=1, num_warmup=0, num_samples=1, cell_effects=cell_effects,
        slices=slice_labels(points) if cell_effects else ())
    return TransferFit(config=config, priors=priors, samples=samples, diagnostics=None,
                       points=points, log_lik=np.zeros((1, 1, 0)))


def leave_out_folds(points: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    """(label, dimension, held-out mask over points) of each leave-out refit.

    Each size, the longest horizon and each batch, wherever the rest still has two values of
    that dimension (so the refit still fits its exponent).
    """
    horizon = points.groupby("run", sort=False)["tokens"].transform("max")
    cols = {"params": points["params"], "tokens": horizon, "tokens_per_step": points["tokens_per_step"]}
    folds = []
    for col, what, _ in _DIMS:
        values = np.unique(cols[col])
        if values.size < 3:
            continue
        held = values[-1:] if col == "tokens" else values
        for v in held:
            mask = (cols[col] == v).to_numpy()
            folds.append((f"{what} {v:.3g} left out", what, mask))
    return folds


def _cell_table(points: pd.DataFrame) -> pd.DataFrame:
    finals = points[points["final"]]
    horizon = points.groupby("run", sort=False)["tokens"].transform("max")[finals.index]
    sweep = pd.DataFrame({"params": finals["params"], "tokens": horizon,
                          "tokens_per_step": finals["tokens_per_step"], "lr": finals["lr"],
                          "loss": finals["loss"], "diverged": finals["diverged"]})
    cells = cell_optima(sweep)
    w = finals["unannealed"].fillna(0.0).groupby(swept_cells(points)[finals.index]).median()
    key = (cells["params"].map("{:.6g}".format) + "|" + cells["tokens"].map("{:.6g}".format) + "|"
           + cells["tokens_per_step"].map("{:.6g}".format))
    return cells.assign(unannealed=key.map(w).fillna(0.0).to_numpy())[cells["vertex"]]


def miss_sd(s, k, distance):
    """Sd of the law's miss at ``distance`` beyond the runs: ``sqrt(s^2 + k^2 d^2)``."""
    return np.sqrt(s**2 + (k * distance) ** 2)


def drift_features(v: np.ndarray) -> np.ndarray:
    """Upward and downward e-folds per dimension of signed extrapolations ``v`` (..., 3) -> (..., 6)."""
    v = np.asarray(v, dtype=np.float64)
    return np.concatenate([np.maximum(v, 0.0), np.minimum(v, 0.0)], axis=-1)


def miss_loglik(err, dist, s2, k2, features=None, folds=None, tau: float = 1.0):
    """Log density of the misses at each (s^2, k^2) pair, the drift integrated out (see `grid_posterior`).

    Returns the log densities (G,) without the constant ``-n/2 log 2 pi``, and, for the drift's
    conditional ``m | s, k ~ N(A^-1 b, A^-1)``, the Cholesky factors L of A (G, p, p) and
    ``y = L^-1 b`` (G, p).
    """
    err, dist = np.asarray(err, dtype=np.float64), np.asarray(dist, dtype=np.float64)
    s2, k2 = np.asarray(s2, dtype=np.float64), np.asarray(k2, dtype=np.float64)
    x = np.zeros((err.size, 0)) if features is None else np.asarray(features, dtype=np.float64)
    p = x.shape[1]
    if folds is None:
        var = s2[:, None] + k2[:, None] * dist[None, :] ** 2
        lp = -0.5 * np.sum(np.log(var) + err**2 / var, axis=1)
        xcx = np.einsum("ip,gi,iq->gpq", x, 1.0 / var, x)
        xce = np.einsum("ip,gi->gp", x, err / var)
    else:
        # C = s^2 I + k^2 V V' (V[i, f] = d_i for miss i of refit f); Woodbury with
        # N = I + (k^2 / s^2) V'V: C^-1 = (I - (k^2 / s^2) V N^-1 V') / s^2
        labels = np.unique(folds, return_inverse=True)[1]
        v = np.zeros((err.size, labels.max() + 1))
        v[np.arange(err.size), labels] = dist
        g, j = s2.size, v.shape[1]
        r = (k2 / s2)[:, None, None]
        chol_n = np.linalg.cholesky(np.eye(j) + r * (v.T @ v))
        ve = np.linalg.solve(chol_n, np.broadcast_to((v.T @ err)[None, :, None], (g, j, 1)))[..., 0]
        vx = np.linalg.solve(chol_n, np.broadcast_to((v.T @ x)[None], (g, j, p)))
        logdet = err.size * np.log(s2) + 2.0 * np.log(np.diagonal(chol_n, axis1=1, axis2=2)).sum(axis=1)
        lp = -0.5 * (logdet + (err @ err - r[:, 0, 0] * np.sum(ve**2, axis=1)) / s2)
        xcx = ((x.T @ x)[None] - r * np.swapaxes(vx, 1, 2) @ vx) / s2[:, None, None]
        xce = ((x.T @ err)[None] - r[:, :, 0] * np.einsum("gjp,gj->gp", vx, ve)) / s2[:, None]
    chol, y = np.zeros((s2.size, p, p)), np.zeros((s2.size, p))
    if p:
        # e ~ N(0, C + tau^2 X X'); A = I / tau^2 + X' C^-1 X, b = X' C^-1 e
        tau2 = tau**2
        chol = np.linalg.cholesky(np.eye(p) / tau2 + xcx)
        y = np.linalg.solve(chol, xce[..., None])[..., 0]
        logdet_a = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        lp = lp - 0.5 * (p * np.log(tau2) + logdet_a - np.sum(y**2, axis=1))
    return lp, chol, y


def grid_posterior(err: np.ndarray, dist: np.ndarray, scales: tuple[float, ...],
                   rng: np.random.Generator, n: int = 4000, features: np.ndarray | None = None,
                   folds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` posterior draws of (s, k, m) given misses ``err`` at distances ``dist``.

    Without ``folds`` the misses are independent, ``Normal(features @ m, s^2 + k^2 d^2)``.
    With ``folds`` (a label per miss: the refit it came from) the misses of one refit share
    its slope: ``e_i = features_i @ m + u_f d_i + Normal(0, s^2)`` with ``u_f ~ Normal(0, k^2)``
    per refit ``f``, so a refit whose held-out cells all miss the same way counts once. s and
    k have half-normal priors of ``scales[:2]`` on a grid; the drift ``m`` (one per column of
    ``features``, none when it is None) a Normal(0, ``scales[2]``) prior, integrated out
    exactly on the grid and drawn from its Gaussian conditional.
    """
    s = np.linspace(0.0, 4.0 * scales[0], _GRID + 1)[1:]
    k = np.linspace(0.0, 4.0 * scales[1], _GRID + 1)
    # grid point (i, j) flattened
    lp, chol, y = miss_loglik(err, dist, np.repeat(s**2, k.size), np.tile(k**2, s.size),
                              features, folds, scales[2])
    p = y.shape[1]
    lp = (lp.reshape(s.size, k.size) + stats.halfnorm.logpdf(s, scale=scales[0])[:, None]
          + stats.halfnorm.logpdf(k, scale=scales[1])[None, :])
    w = np.exp(lp - lp.max()).ravel()
    idx = rng.choice(w.size, size=n, p=w / w.sum())
    i, j = np.unravel_index(idx, lp.shape)
    m = np.zeros((n, p))
    if p:
        # m | s, k ~ N(A^-1 b, A^-1): with A = L L', mean = L'^-1 y and L'^-1 z has cov A^-1
        lt = np.swapaxes(chol[idx], 1, 2)
        m = np.linalg.solve(lt, (y[idx] + rng.standard_normal((n, p)))[..., None])[..., 0]
    return s[i], k[j], m


def finals_of(points: pd.DataFrame, cell) -> pd.DataFrame:
    """The non-diverged final points of one cell (its runs' size, horizon and batch)."""
    horizon = points.groupby("run", sort=False)["tokens"].transform("max")
    keep = (points["final"] & ~points["diverged"] & (points["params"] == cell.params)
            & (horizon == cell.tokens) & (points["tokens_per_step"] == cell.tokens_per_step))
    return points[keep]


def _vertex(lr, loss) -> float:
    """Log LR of the vertex of a quadratic in log LR (as `cell_optima`), else of the best run.

    The refit's losses at the cell's own LRs go through the same estimator as the runs, so
    the estimator's bias (a quadratic through an asymmetric bowl) cancels in the miss.
    """
    x, y = np.log(np.asarray(lr, dtype=np.float64)), np.asarray(loss, dtype=np.float64)
    c2, c1, _ = np.polyfit(x, y, 2)
    if c2 > 0 and x.min() <= -c1 / (2 * c2) <= x.max():
        return float(-c1 / (2 * c2))
    return float(x[np.argmin(y)])


@dataclass(frozen=True)
class Discrepancy:
    """The law's leave-out misses and the posterior of their scale.

    ``errors`` has one row per (fold, held-out cell): the fold, its dimension, the cell, its
    distance ``distance`` beyond the refit's runs, ``log_lr_error`` (the cell's empirical
    optimum minus the same estimator applied to the refit's losses at the cell's LRs, in log LR)
    and ``loss_error`` (the cell's runs minus the refit's losses once that miss of the optimum
    is taken out, mean, nats), and ``v_size, v_horizon, v_batch``, its signed extrapolation.
    ``lr_s, lr_k, loss_s, loss_k`` are posterior draws of the scales and ``lr_m, loss_m``
    (draws, len(drift)) of the signed drifts along the `drift_features` columns ``drift``;
    ``exponents`` the refits' lr* exponents (one row per fold).
    """

    errors: pd.DataFrame
    exponents: pd.DataFrame
    lr_s: np.ndarray
    lr_k: np.ndarray
    loss_s: np.ndarray
    loss_k: np.ndarray
    with_cell_floor: bool  # add s^2 at the target (the model has no cell-level effects)
    drift: tuple[int, ...] = ()
    lr_m: np.ndarray | None = None
    loss_m: np.ndarray | None = None
    taylor: bool = False  # distances are Taylor `reach`, else raw e-folds

    def beyond(self, fit: TransferFit, params, tokens, tokens_per_step) -> np.ndarray:
        """The target's signed extrapolation in the units the misses were measured in."""
        finals = fit.points[fit.points["final"]]
        v = extrapolation(finals, params, tokens, tokens_per_step)
        return reach(v, spans(finals)) if self.taylor else v

    def draws(self, fit: TransferFit, params, tokens, tokens_per_step, n: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Per draw, the extra shift of the target's log lr* and of its loss level."""
        v = self.beyond(fit, params, tokens, tokens_per_step)
        d = float(np.linalg.norm(v))
        if self.errors.empty:
            return np.zeros(n), np.zeros(n)
        pick = rng.integers(0, self.lr_k.size, size=n)
        floor = 1.0 if self.with_cell_floor else 0.0
        sd_lr = miss_sd(floor * self.lr_s[pick], self.lr_k[pick], d)
        sd_loss = miss_sd(floor * self.loss_s[pick], self.loss_k[pick], d)
        z = rng.standard_normal((2, n))
        x = drift_features(v)[list(self.drift)]
        mean_lr = self.lr_m[pick] @ x if self.drift else 0.0
        mean_loss = self.loss_m[pick] @ x if self.drift else 0.0
        return mean_lr + sd_lr * z[0], mean_loss + sd_loss * z[1]

    def notes(self, fit: TransferFit, params, tokens, tokens_per_step) -> list[str]:
        """Where the target extrapolates along a dimension whose exponent drifts in the refits."""
        if self.errors.empty:
            return ["no leave-out refit could be scored (no held-out cell with a quadratic vertex): "
                    "the interval of lr* carries no measured miss of the law"]
        out = []
        beyond = extrapolation(fit.points[fit.points["final"]], params, tokens, tokens_per_step)
        for (_, what, name), x in zip(_DIMS, beyond, strict=True):
            sub = self.exponents[self.exponents["dimension"] == what]
            if x == 0.0 or sub.empty or name not in fit.samples:
                continue
            lo, hi = float(sub[name].min()), float(sub[name].max())
            if hi - lo > DRIFT:
                out.append(f"lr*'s {what} exponent moves from {lo:.3f} to {hi:.3f} as {what}s are left "
                           f"out, and the target lies {abs(x):.2g} e-folds beyond the fitted {what}s: "
                           "the law may be breaking there; trust its lr* less than its interval")
        far = self.beyond(fit, params, tokens, tokens_per_step)
        miss = float(np.median(self.lr_k)) * float(np.linalg.norm(far))
        if miss > 0.25:
            out.append(f"leave-out refits miss held-out cells' lr* by ~{miss:.2f} in log (a factor "
                       f"{np.exp(miss):.2f}) at the target's distance ({np.linalg.norm(beyond):.2g} "
                       "e-folds beyond the runs): the law's own miss dominates the interval")
        if self.drift:
            shift = float(np.median(self.lr_m @ drift_features(far)[list(self.drift)]))
            if abs(shift) > 0.1:
                out.append(f"refits that extrapolate the way the target does miss held-out cells' lr* "
                           f"{'upward' if shift > 0 else 'downward'}: the plan moves the law's lr* by "
                           f"a factor {np.exp(shift):.2f} at the target")
        return out

    def drift_summary(self) -> dict[str, dict[str, float]]:
        """Posterior median of each signed drift per unit: ``{"size up": {"lr": .., "loss": ..}}``."""
        names = [f"{what} {way}" for way in ("up", "down") for _, what, _ in _DIMS]
        return {names[c]: {"lr": float(np.median(self.lr_m[:, j])),
                           "loss": float(np.median(self.loss_m[:, j]))}
                for j, c in enumerate(self.drift)}

    def to_json(self) -> dict:
        """Summary of the refits and the scales (medians)."""
        return {"folds": int(self.errors["fold"].nunique()) if not self.errors.empty else 0,
                "cells": int(len(self.errors)),
                "distance": "reach" if self.taylor else "e-folds",
                "lr_within": float(np.median(self.lr_s)), "lr_per_unit": float(np.median(self.lr_k)),
                "loss_within": float(np.median(self.loss_s)),
                "loss_per_unit": float(np.median(self.loss_k)),
                "drift_per_unit": self.drift_summary()}


def calibrate_transfer(fit: TransferFit, *, seed: int = 0, drift: bool = True, shared: bool = True,
                       taylor: bool = False) -> TransferFit:
    """The fit with its `Discrepancy` measured by leave-out point refits (see the module doc).

    ``drift=False`` leaves out the signed drift (zero-mean misses only); ``shared=False``
    takes the held-out cells' misses as independent rather than sharing their refit's slope;
    ``taylor=True`` measures extrapolation as Taylor `reach` rather than raw e-folds.
    """
    disc = discrepancy_of(fit, *leave_out_misses(fit, seed=seed), seed=seed, drift=drift, shared=shared,
                          taylor=taylor)
    return replace(fit, discrepancy=disc)


def leave_out_misses(fit: TransferFit, *, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The leave-out refits' misses of their held-out cells, and the refits' lr* exponents.

    The tables `Discrepancy` keeps as ``errors`` and ``exponents``.
    """
    points = fit.points.reset_index(drop=True)
    cells = _cell_table(points)
    fixed = ({k: np.median(fit.flat(k), axis=0) for k in CELL_SITES}
             if fit.config.cell_effects else None)
    rows, expo = [], []
    for label, what, held in leave_out_folds(points):
        train = points[~held]
        if (~train["diverged"]).sum() < 3:
            continue
        hcells = cells.merge(points[held][["params", "tokens_per_step"]].drop_duplicates(),
                             on=["params", "tokens_per_step"])
        horizon = points[held].groupby("run")["tokens"].max().unique()
        hcells = hcells[hcells["tokens"].isin(horizon)]
        if hcells.empty:
            continue
        try:
            one = point_fit(train.reset_index(drop=True), lr_law=fit.config.lr_law,
                            bowl=fit.config.bowl, priors=fit.priors, seed=seed,
                            cell_effects=fit.config.cell_effects, fixed=fixed)
        except (FloatingPointError, RuntimeError, ValueError, FitError) as e:
            log.warning("leave-out refit %s failed: %s", label, e)
            continue
        expo.append({"fold": label, "dimension": what,
                     **{k: float(one.flat(k)[0]) for _, _, k in _DIMS}})
        tfin = train[train["final"]]
        for c in hcells.itertuples(index=False):
            runs = finals_of(points, c)
            w = c.unannealed if fit.config.schedule_known else 0.0
            # the law and the effects of the cell's slices the refit saw (none new)
            known = one.cell_effects(c.params, c.tokens, c.tokens_per_step, None)
            kw = dict(lr_shift=known["lr"], loss_shift=known["loss"], log_kappa_shift=known["log_kappa"])
            pred = one.expected_loss(c.params, c.tokens, c.tokens_per_step, runs["lr"], w, **kw)[0]
            e_lr = _vertex(runs["lr"], runs["loss"]) - _vertex(runs["lr"], pred)
            # the level's miss once the optimum's is taken out: the cell's runs against the
            # refit's losses at the same distance from its optimum
            moved = one.expected_loss(c.params, c.tokens, c.tokens_per_step,
                                      runs["lr"] * np.exp(-e_lr), w, **kw)[0]
            v = extrapolation(tfin, c.params, c.tokens, c.tokens_per_step)
            rows.append({"fold": label, "dimension": what, "params": c.params, "tokens": c.tokens,
                         "tokens_per_step": c.tokens_per_step, "distance": float(np.linalg.norm(v)),
                         **{f"v_{name}": float(x) for (_, name, _), x in zip(_DIMS, v, strict=True)},
                         **{f"span_{name}": float(x)
                            for (_, name, _), x in zip(_DIMS, spans(tfin), strict=True)},
                         "log_lr_error": float(e_lr),
                         "loss_error": float(np.mean(runs["loss"].to_numpy() - moved))})
    errors = pd.DataFrame(rows, columns=["fold", "dimension", "params", "tokens", "tokens_per_step",
                                         "distance", *(f"v_{name}" for _, name, _ in _DIMS),
                                         *(f"span_{name}" for _, name, _ in _DIMS),
                                         "log_lr_error", "loss_error"])
    return errors, pd.DataFrame(expo)


def discrepancy_of(fit: TransferFit, errors: pd.DataFrame, exponents: pd.DataFrame, *, seed: int = 0,
                   drift: bool = True, shared: bool = True, taylor: bool = False) -> Discrepancy:
    """The posterior of the law's miss from `leave_out_misses`' tables (see `calibrate_transfer`)."""
    rng = np.random.default_rng(seed)
    if errors.empty:
        z = np.zeros(1)
        return Discrepancy(errors, exponents, z, z, z, z, not fit.config.cell_effects, taylor=taylor)
    v = errors[[f"v_{name}" for _, name, _ in _DIMS]].to_numpy(np.float64)
    if taylor:
        v = reach(v, errors[[f"span_{name}" for _, name, _ in _DIMS]].to_numpy(np.float64))
    dist = np.linalg.norm(v, axis=1)
    x = drift_features(v)
    # a drift only along directions some refit extrapolated in
    cols = tuple(int(c) for c in np.flatnonzero(np.any(x != 0.0, axis=0))) if drift else ()
    x = x[:, list(cols)]
    folds = errors["fold"].to_numpy() if shared else None
    lr_s, lr_k, lr_m = grid_posterior(errors["log_lr_error"].to_numpy(np.float64), dist,
                                      PRIOR_SCALE["lr"], rng, features=x, folds=folds)
    loss_s, loss_k, loss_m = grid_posterior(errors["loss_error"].to_numpy(np.float64), dist,
                                            PRIOR_SCALE["loss"], rng, features=x, folds=folds)
    disc = Discrepancy(errors, exponents, lr_s, lr_k, loss_s, loss_k,
                       with_cell_floor=not fit.config.cell_effects, drift=cols, lr_m=lr_m, loss_m=loss_m,
                       taylor=taylor)
    log.info("leave-out refits: %d folds, %d cells; log lr* miss %.3f + %.3f per unit; drift %s",
             errors["fold"].nunique(), len(errors), np.median(lr_s), np.median(lr_k),
             disc.drift_summary())
    return disc
