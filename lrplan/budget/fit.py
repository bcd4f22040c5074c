"""Fit the budget's loss law L*(N, D) and its calibrated miss beyond the fitted budgets.

`fit_budget` fits `lrplan.budget.model.budget_model` to final losses (`LossLaw`), or
`law_from_transfer` takes the transfer model's L*; `isoflop_curves` evaluates a law along a
budget; `calibrate_drift` fits `lrplan.budget.model.drift_model` (`drift_posterior`) to
leave-budget-out forecasts of the runs' isoflop optima (`drift_forecasts`), and `prior_drift`
draws the rates' priors.

References
----------
Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt", arXiv:2404.10102.
Porian et al. 2024, "Resolving Discrepancies in Compute-Optimal Scaling of Language Models",
arXiv:2406.19146.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from lrplan import laws
from lrplan.bayes import Diagnostics, bucket, diagnostics, nuts
from lrplan.budget.data import SIX_N, FlopsPerToken, isoflop_vertex
from lrplan.budget.model import (
    DRIFT_SITES,
    LAW_SITES,
    IsoflopData,
    budget_model,
    drift_logliks,
    drift_model,
)
from lrplan.errors import FitError, PriorError
from lrplan.priors import PriorSet, load_priors
from lrplan.transfer.model import loss_noise

log = logging.getLogger(__name__)

__all__ = ["LossLaw", "Drift", "fit_budget", "law_from_transfer", "params_grid", "isoflop_curves",
           "calibrate_drift", "drift_forecasts", "drift_posterior", "prior_drift",
           "MIN_FOLD_BUDGETS", "FOLD_COLUMNS"]

#: A leave-budget-out fold needs at least this many fitted budgets.
MIN_FOLD_BUDGETS = 3
#: Sampler settings of the leave-budget-out fits (the calibration needs medians and sds only).
FOLD_WARMUP, FOLD_SAMPLES = 300, 300


# ---------------------------------------------------------------- the loss law


@dataclass(frozen=True)
class LossLaw:
    """Posterior draws of L*(N, D) = E + A (N/n0)^-a + B (D/d0)^-b and of a run's noise.

    ``source`` is ``"isoflop"`` (`fit_budget`) or ``"transfer"`` (`law_from_transfer`: the
    transfer model's loss at lr*, whose fit is kept in ``transfer``).
    """

    draws: dict[str, np.ndarray]
    noise: np.ndarray
    n0: float
    d0: float
    points: pd.DataFrame
    diagnostics: Diagnostics
    source: str
    fpt: FlopsPerToken
    transfer: object = None
    notes: tuple[str, ...] = ()

    @property
    def n_draws(self) -> int:
        """Posterior draws in all."""
        return int(self.noise.size)

    def loss(self, params, tokens) -> np.ndarray:
        """Draws (draws, sizes) of L*(N, D) at sizes and tokens of shape (sizes,) or (draws, sizes)."""
        v = {k: np.asarray(self.draws[k])[:, None] for k in ("E", "A", "a", "B", "b")}
        return np.asarray(laws.loss_nd(np.log(np.asarray(params, float) / self.n0),
                                       np.log(np.asarray(tokens, float) / self.d0), **v))

    def predictive_loss(self, expected, rng: np.random.Generator) -> np.ndarray:
        """Predictive draws of new final losses: ``expected`` (draws, ...) plus the model's noise.

        The noise is `lrplan.budget.model.budget_model`'s Student-t (`lrplan.transfer.model.
        loss_noise`, the transfer model's too) at the fitted scale ``noise``, one per entry.
        """
        expected = np.asarray(expected, dtype=np.float64)
        return expected + loss_noise(rng, self.noise.reshape((-1,) + (1,) * (expected.ndim - 1)),
                                     expected.shape)

    @property
    def max_flops(self) -> float:
        """The largest compute among the fitted runs (with this law's FLOPs per token)."""
        return float(self.points["flops"].max())


def _flat(samples: dict[str, np.ndarray], name: str) -> np.ndarray:
    x = np.asarray(samples[name])
    return x.reshape((-1, *x.shape[2:]))


def _sample_law(data: IsoflopData, priors: PriorSet, *, seed, chains, num_warmup, num_samples,
                progress=False):
    """NUTS draws of `budget_model` by `lrplan.bayes.nuts`.

    One compiled program per priors, settings and shape bucket serves the main fit, its
    leave-budget-out folds and other grids.
    """
    from numpyro.infer import NUTS, init_to_median

    if progress:  # one compiled run: no per-step bar
        log.info("sampling the loss law: %d chain(s) x (%d warmup + %d draws)", chains,
                 num_warmup, num_samples)
    samples, diverging = nuts(
        ("budget", priors.to_toml()),
        lambda: NUTS(partial(budget_model, priors=priors), init_strategy=init_to_median(num_samples=31),
                     target_accept_prob=0.9, dense_mass=True),
        jax.random.PRNGKey(seed), (data,), num_chains=chains, num_warmup=num_warmup,
        num_samples=num_samples)
    return samples, int(diverging.sum())


def _pad(x, size: int, fill) -> jnp.ndarray:
    """``x`` (1-d) padded with ``fill`` to length ``size`` (a shape bucket)."""
    x = np.asarray(x)
    return jnp.asarray(np.concatenate([x, np.full(size - x.size, fill, x.dtype)]))


def _isoflop_data(points: pd.DataFrame, seen: np.ndarray) -> tuple[IsoflopData, float, float]:
    """The points in normalised units, padded with unseen entries to a shape bucket.

    Grids of similar size (`lrplan.bayes.bucket`) then share one compiled sampler.
    """
    n0 = float(np.exp(np.log(points.loc[seen, "params"]).mean()))
    d0 = float(np.exp(np.log(points.loc[seen, "tokens"]).mean()))
    loss_ref = float(np.median(points.loc[seen, "loss"]))
    size = bucket(len(points))

    def padded(x, fill):
        return _pad(x, size, fill)

    data = IsoflopData(
        x_n=padded(np.log(points["params"].to_numpy(float) / n0), 0.0),
        x_d=padded(np.log(points["tokens"].to_numpy(float) / d0), 0.0),
        loss=padded(points["loss"].to_numpy(float), loss_ref), seen=padded(seen, False),
        loss_ref=jnp.asarray(loss_ref))
    return data, n0, d0


def fit_budget(points: pd.DataFrame, *, fpt: FlopsPerToken = SIX_N,
               priors: PriorSet | None = None, seen: np.ndarray | None = None, seed: int = 0,
               chains: int = 2, num_warmup: int = 1000, num_samples: int = 1000,
               progress: bool = False, notes: tuple[str, ...] = ()) -> LossLaw:
    """Fit `lrplan.budget.model.budget_model` to final losses (``seen``: the points to fit)."""
    priors = priors or load_priors("budget")
    seen = np.ones(len(points), bool) if seen is None else np.asarray(seen, bool)
    if seen.sum() < 4:
        raise FitError(f"the loss law needs at least 4 fitted runs (got {int(seen.sum())})")
    data, n0, d0 = _isoflop_data(points, seen)
    samples, divergences = _sample_law(data, priors, seed=seed, chains=chains,
                                       num_warmup=num_warmup, num_samples=num_samples,
                                       progress=progress)
    diag = diagnostics(samples, divergences, list(LAW_SITES))
    draws = {k: _flat(samples, k) for k in ("E", "A", "a", "B", "b")}
    return LossLaw(draws=draws, noise=_flat(samples, "sigma"), n0=n0, d0=d0,
                   points=points[seen].reset_index(drop=True), diagnostics=diag, source="isoflop",
                   fpt=fpt, notes=tuple(notes))


def law_from_transfer(tfit, points: pd.DataFrame, *, fpt: FlopsPerToken = SIX_N,
                      notes: tuple[str, ...] = ()) -> LossLaw:
    """The transfer fit's L*(N, D) (its loss at lr*, fully annealed) as a `LossLaw`."""
    law = tfit.law_draws()
    return LossLaw(draws={k: law[k] for k in ("E", "A", "a", "B", "b")}, noise=tfit.noise(),
                   n0=tfit.config.n0, d0=tfit.config.d0, points=points, diagnostics=tfit.diagnostics,
                   source="transfer", fpt=fpt, transfer=tfit, notes=tuple(notes))


# ---------------------------------------------------------------- isoflop curves


def params_grid(flops: float, fpt: FlopsPerToken, params_range, size: int = 401) -> np.ndarray:
    """A log grid of sizes at budget ``flops``: ``params_range`` (LO, HI), or 1-1000 tokens per parameter."""
    if params_range is None:
        # 1 to 1000 tokens per parameter (Chinchilla's ~20 in the middle, Hoffmann et al. 2022)
        lo, hi = np.sqrt(flops / (fpt.per_param * 1000)), np.sqrt(flops / fpt.per_param)
    else:
        lo, hi = params_range
    return np.exp(np.linspace(np.log(lo), np.log(hi), size))


def isoflop_curves(law: LossLaw, flops: float, grid: np.ndarray, shift: np.ndarray | None = None,
                   scale: np.ndarray | None = None) -> np.ndarray:
    """Draws (draws, grid) of the loss at budget ``flops`` for each size on ``grid``.

    Draw s's curve is shifted by ``shift[s]`` in log N and scaled by ``exp(scale[s])`` (the
    calibrated miss; zero when None): its value at N is the law's at N e^-shift, with that
    size's tokens.
    """
    n = np.broadcast_to(grid, (law.n_draws, grid.size))
    if shift is not None:
        n = n * np.exp(-shift)[:, None]
    out = law.loss(n, law.fpt.tokens(flops, n))
    return out if scale is None else out * np.exp(scale)[:, None]


# ---------------------------------------------------------------- the calibrated miss


@dataclass(frozen=True)
class Drift:
    """Draws (draws, 2) of the drift rates (log N*, log loss per e-fold of compute) and folds.

    ``none_prob`` is each direction's probability of no drift at all: posterior (calibrated)
    or prior.
    """

    rates: np.ndarray
    source: str  # "calibrated", "prior" or "none"
    folds: pd.DataFrame = field(default_factory=pd.DataFrame)
    divergences: int = 0
    none_prob: tuple[float, float] = (0.0, 0.0)


def _drift_scales(priors: PriorSet) -> tuple[float, float]:
    out = []
    for name in DRIFT_SITES:
        p = priors[name]
        if p.dist != "halfnormal":
            raise PriorError(f"prior of {name} is {p.dist}; the drift rates take a halfnormal prior")
        out.append(float(p.args["scale"]))
    return tuple(out)


def _none_prob(priors: PriorSet) -> float:
    p = priors["drift_none"]
    if p.dist != "bernoulli":
        raise PriorError(f"prior of drift_none is {p.dist}; it takes a bernoulli prior (probs)")
    return float(p.args["probs"])


def prior_drift(priors: PriorSet, *, draws: int = 2000, seed: int = 0,
                p_none: float | None = None) -> Drift:
    """Drift rates drawn from their priors: zero with probability ``drift_none``, else half-normal.

    ``p_none`` overrides the prior's ``drift_none``.
    """
    rng = np.random.default_rng(seed)
    scales = np.array(_drift_scales(priors))
    p0 = _none_prob(priors) if p_none is None else float(p_none)
    rates = np.abs(rng.standard_normal((draws, 2))) * scales * (rng.random((draws, 2)) >= p0)
    return Drift(rates=rates, source="prior", none_prob=(p0, p0))


def _law_optimum(law: LossLaw, flops: float, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    curves = isoflop_curves(law, flops, grid)
    i = np.argmin(curves, axis=1)
    return np.log(grid[i]), np.log(curves[np.arange(curves.shape[0]), i])


FOLD_COLUMNS = ["cut", "budget", "flops", "reach", "err_n", "var_n", "err_l", "var_l"]


def drift_forecasts(points: pd.DataFrame, *, fpt: FlopsPerToken = SIX_N,
                    priors: PriorSet | None = None, seed: int = 0) -> pd.DataFrame:
    """Leave-budget-out forecasts of the runs' isoflop optima: one row per (cut, later budget).

    For each cut after the 3rd budget, the law is fitted to the budgets up to the cut and
    forecasts the optimum (log N* and log of the best loss) of every later budget that has an
    empirical one (`isoflop_vertex`). A row holds the errors, their reach (e-folds of compute
    beyond the cut) and the forecasts' and vertices' own variances (`FOLD_COLUMNS`).
    """
    priors = priors or load_priors("budget")
    levels = np.sort(points["budget"].unique())
    level_flops = points.groupby("budget")["flops"].median()
    vertices = {}
    for b in levels:
        sub = points[points["budget"] == b]
        v = isoflop_vertex(sub["params"].to_numpy(), sub["loss"].to_numpy())
        if v is not None:
            vertices[b] = v
    rows = []
    for k, cut in enumerate(levels):
        later = [b for b in levels[k + 1:] if b in vertices]
        if k + 1 < MIN_FOLD_BUDGETS or not later:
            continue
        seen = (points["budget"] <= cut).to_numpy()
        # one chain: a sequential sampler is compiled once for every fold (parallel chains
        # recompile per call, ~3x the time)
        law = fit_budget(points, fpt=fpt, priors=priors, seen=seen, seed=seed, chains=1,
                         num_warmup=FOLD_WARMUP, num_samples=FOLD_SAMPLES)
        for b in later:
            c = float(level_flops[b])
            sub = points[points["budget"] == b]
            grid = params_grid(c, fpt, (sub["params"].min() / 4, sub["params"].max() * 4), 201)
            log_n, log_l = _law_optimum(law, c, grid)
            vn, vn_var, vl, vl_var = vertices[b]
            rows.append({"cut": int(cut), "budget": int(b), "flops": c,
                         "reach": float(np.log(c / law.max_flops)),
                         "err_n": vn - float(np.median(log_n)), "var_n": float(log_n.var()) + vn_var,
                         "err_l": vl - float(np.median(log_l)), "var_l": float(log_l.var()) + vl_var})
    return pd.DataFrame(rows, columns=FOLD_COLUMNS)


def drift_posterior(folds: pd.DataFrame, *, priors: PriorSet | None = None, seed: int = 0,
                    draws: int = 2000, p_none: float | None = None) -> Drift:
    """Posterior of the drift rates given leave-budget-out forecasts (`drift_forecasts`).

    `lrplan.budget.model.drift_model` is sampled with the no-drift spike summed out; each
    draw's spike is then drawn from its conditional probability given the draw's rates (a
    rate of zero where it falls), and ``none_prob`` is that probability's posterior mean.
    Forecasts from one cut share its fit, and a budget is forecast from several cuts: the
    errors are not independent, which the model ignores. With no fold the priors are returned.
    ``p_none`` overrides the prior's ``drift_none`` (0: the half-normal rates alone), here
    and in the priors returned without folds.
    """
    from numpyro.infer import NUTS

    priors = priors or load_priors("budget")
    if folds.empty:
        return prior_drift(priors, draws=draws, seed=seed, p_none=p_none)
    scales = _drift_scales(priors)
    p0 = _none_prob(priors) if p_none is None else float(p_none)
    size = bucket(len(folds))  # padded: fold counts of one bucket share the compiled sampler
    fill = {"reach": 0.0, "err_n": 0.0, "var_n": 1.0, "err_l": 0.0, "var_l": 1.0}
    arr = tuple(_pad(folds[c].to_numpy(float), size, v) for c, v in fill.items()) + (
        jnp.arange(size) < len(folds),)
    samples, diverging = nuts(("budget-drift", scales, p0),
                              lambda: NUTS(partial(drift_model, scales=scales, p_none=p0)),
                              jax.random.PRNGKey(seed), arr, num_warmup=500, num_samples=draws,
                              thinning=2)
    z = jnp.asarray(samples["drift"][0])
    rates = np.abs(np.asarray(z, dtype=np.float64))
    none_prob = np.zeros(2)
    if p0 > 0:
        slab, none = jax.vmap(lambda zi: drift_logliks(zi, *arr))(z)
        # P(no drift | rates, forecasts) per draw and direction
        p = np.asarray(jax.nn.sigmoid(np.log(p0) - np.log1p(-p0) + none - slab)) if p0 < 1 else \
            np.ones(rates.shape)
        none_prob = p.mean(axis=0)
        rates = rates * (np.random.default_rng(seed).random(rates.shape) >= p)
    return Drift(rates=rates, source="calibrated", folds=folds,
                 divergences=int(diverging.sum()),
                 none_prob=tuple(float(x) for x in none_prob))


def calibrate_drift(points: pd.DataFrame, *, fpt: FlopsPerToken = SIX_N,
                    priors: PriorSet | None = None, seed: int = 0, draws: int = 2000) -> Drift:
    """Posterior of the drift rates from leave-budget-out forecasts of the runs' isoflop optima.

    `drift_forecasts` then `drift_posterior`; with no usable fold the priors are returned.
    """
    priors = priors or load_priors("budget")
    return drift_posterior(drift_forecasts(points, fpt=fpt, priors=priors, seed=seed),
                           priors=priors, seed=seed, draws=draws)
