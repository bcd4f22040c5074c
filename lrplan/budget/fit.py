"""Plan a compute budget: the model size and tokens that minimise the expected final loss.

At a budget of C FLOPs with F(N) FLOPs per token (``6N`` by default, Kaplan et al. 2020), a
size N trains on D = C / F(N) tokens. Every posterior draw of the loss law L*(N, D) gives an
isoflop curve over log N and its own optimum N*; the recommendation minimises the posterior
mean of the curve. L* comes from `lrplan.budget.model` (final losses of runs near their best
LR: isoflop grids, tuned ladders) or, when the runs sweep the LR, from the transfer model
(its loss at lr*).

A Chinchilla-form law fitted to small budgets is misspecified when extrapolated (Porian et al.
2024: warmup, head FLOPs and decay move the optimum; Besiroglu et al. 2024: the fitted
exponents are fragile). So each predictive draw's curve is also shifted by a calibrated miss:
by ``delta ~ N(0, (drift_n r)^2)`` in log N and ``eps ~ N(0, (drift_l r)^2)`` in log loss,
with r the e-folds of compute beyond the largest fitted budget. The drift rates have a
posterior from leave-budget-out forecasts of the runs' own isoflop optima
(`calibrate_drift`), or their priors (``models/budget.toml``) when the runs have too few
budgets.

References
----------
Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", arXiv:2203.15556.
Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt", arXiv:2404.10102.
Porian et al. 2024, "Resolving Discrepancies in Compute-Optimal Scaling of Language Models",
arXiv:2406.19146.
Li et al. 2025, "Predictable Scale: Part I", arXiv:2503.04715 (Step Law).
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass, field, replace
from functools import partial
from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from lrplan import laws
from lrplan.bayes import Diagnostics, diagnostics
from lrplan.budget.model import DRIFT_SITES, LAW_SITES, IsoflopData, budget_model, drift_model
from lrplan.curve.predict import QUANTILES, summarize
from lrplan.data import RunSet
from lrplan.errors import DataError, FitError, PriorError
from lrplan.priors import PriorSet, load_priors

__all__ = ["FlopsPerToken", "parse_flops_per_token", "LossLaw", "Drift", "BudgetResult",
           "budget_points", "points_from_frame", "budget_groups", "isoflop_vertex", "fit_budget",
           "law_from_transfer", "calibrate_drift", "prior_drift", "decide_budget", "caveats",
           "step_law_lr", "step_law_batch", "has_lr_sweep", "plan_budget"]

log = logging.getLogger(__name__)

#: Points whose log compute lies within this of each other form one budget.
BUDGET_TOLERANCE = 0.05
#: A leave-budget-out fold needs at least this many fitted budgets.
MIN_FOLD_BUDGETS = 3
#: Sampler settings of the leave-budget-out fits (the calibration needs medians and sds only).
FOLD_WARMUP, FOLD_SAMPLES = 300, 300


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


def budget_points(runs: RunSet, *, fpt: FlopsPerToken = FlopsPerToken(),
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


def points_from_frame(df: pd.DataFrame, *, fpt: FlopsPerToken = FlopsPerToken(),
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

    @property
    def max_flops(self) -> float:
        """The largest compute among the fitted runs (with this law's FLOPs per token)."""
        return float(self.points["flops"].max())


def _flat(samples: dict[str, np.ndarray], name: str) -> np.ndarray:
    x = np.asarray(samples[name])
    return x.reshape((-1, *x.shape[2:]))


class _Sampler:
    """One compiled NUTS sampler of `budget_model` per data shape and settings, reused by folds."""

    _cache: dict = {}

    @classmethod
    def run(cls, data: IsoflopData, priors: PriorSet, *, seed, chains, num_warmup, num_samples,
            progress=False):
        from numpyro.infer import MCMC, NUTS, init_to_median

        method = "parallel" if jax.local_device_count() >= chains else "sequential"
        key = (data.loss.shape, priors.to_toml(), chains, num_warmup, num_samples, method, progress)
        mcmc = cls._cache.get(key)
        if mcmc is None:
            kernel = NUTS(partial(budget_model, priors=priors), init_strategy=init_to_median(num_samples=31),
                          target_accept_prob=0.9, dense_mass=True)
            mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=chains,
                        chain_method=method, progress_bar=progress, jit_model_args=True)
            if len(cls._cache) >= 4:  # a few (main fit, folds): a long study's memory stays flat
                cls._cache.pop(next(iter(cls._cache)))
            cls._cache[key] = mcmc
        mcmc.run(jax.random.PRNGKey(seed), data, extra_fields=("diverging",))
        samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
        return samples, int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())


def _isoflop_data(points: pd.DataFrame, seen: np.ndarray) -> tuple[IsoflopData, float, float]:
    n0 = float(np.exp(np.log(points.loc[seen, "params"]).mean()))
    d0 = float(np.exp(np.log(points.loc[seen, "tokens"]).mean()))
    data = IsoflopData(
        x_n=jnp.asarray(np.log(points["params"].to_numpy(float) / n0)),
        x_d=jnp.asarray(np.log(points["tokens"].to_numpy(float) / d0)),
        loss=jnp.asarray(points["loss"].to_numpy(float)), seen=jnp.asarray(seen),
        loss_ref=jnp.asarray(float(np.median(points.loc[seen, "loss"]))))
    return data, n0, d0


def fit_budget(points: pd.DataFrame, *, fpt: FlopsPerToken = FlopsPerToken(),
               priors: PriorSet | None = None, seen: np.ndarray | None = None, seed: int = 0,
               chains: int = 2, num_warmup: int = 1000, num_samples: int = 1000,
               progress: bool = False, notes: tuple[str, ...] = ()) -> LossLaw:
    """Fit `lrplan.budget.model.budget_model` to final losses (``seen``: the points to fit)."""
    priors = priors or load_priors("budget")
    seen = np.ones(len(points), bool) if seen is None else np.asarray(seen, bool)
    if seen.sum() < 4:
        raise FitError(f"the loss law needs at least 4 fitted runs (got {int(seen.sum())})")
    data, n0, d0 = _isoflop_data(points, seen)
    samples, divergences = _Sampler.run(data, priors, seed=seed, chains=chains,
                                        num_warmup=num_warmup, num_samples=num_samples,
                                        progress=progress)
    diag = diagnostics(samples, divergences, list(LAW_SITES))
    draws = {k: _flat(samples, k) for k in ("E", "A", "a", "B", "b")}
    return LossLaw(draws=draws, noise=_flat(samples, "sigma"), n0=n0, d0=d0,
                   points=points[seen].reset_index(drop=True), diagnostics=diag, source="isoflop",
                   fpt=fpt, notes=tuple(notes))


def law_from_transfer(tfit, points: pd.DataFrame, *, fpt: FlopsPerToken = FlopsPerToken(),
                      notes: tuple[str, ...] = ()) -> LossLaw:
    """The transfer fit's L*(N, D) (its loss at lr*, fully annealed) as a `LossLaw`."""
    law = tfit._law()
    return LossLaw(draws={k: law[k] for k in ("E", "A", "a", "B", "b")}, noise=tfit.noise(),
                   n0=tfit.config.n0, d0=tfit.config.d0, points=points, diagnostics=tfit.diagnostics,
                   source="transfer", fpt=fpt, transfer=tfit, notes=tuple(notes))


# ---------------------------------------------------------------- isoflop curves


def _grid(flops: float, fpt: FlopsPerToken, params_range, size: int = 401) -> np.ndarray:
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
    """Draws (draws, 2) of the drift rates (log N*, log loss per e-fold of compute) and folds."""

    rates: np.ndarray
    source: str  # "calibrated" or "prior"
    folds: pd.DataFrame = field(default_factory=pd.DataFrame)
    divergences: int = 0


def _drift_scales(priors: PriorSet) -> tuple[float, float]:
    out = []
    for name in DRIFT_SITES:
        p = priors[name]
        if p.dist != "halfnormal":
            raise PriorError(f"prior of {name} is {p.dist}; the drift rates take a halfnormal prior")
        out.append(float(p.args["scale"]))
    return tuple(out)


def prior_drift(priors: PriorSet, *, draws: int = 2000, seed: int = 0) -> Drift:
    """Drift rates drawn from their half-normal priors."""
    rng = np.random.default_rng(seed)
    scales = np.array(_drift_scales(priors))
    return Drift(rates=np.abs(rng.standard_normal((draws, 2))) * scales, source="prior")


def _law_optimum(law: LossLaw, flops: float, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    curves = isoflop_curves(law, flops, grid)
    i = np.argmin(curves, axis=1)
    return np.log(grid[i]), np.log(curves[np.arange(curves.shape[0]), i])


def calibrate_drift(points: pd.DataFrame, *, fpt: FlopsPerToken = FlopsPerToken(),
                    priors: PriorSet | None = None, seed: int = 0, draws: int = 2000) -> Drift:
    """Posterior of the drift rates from leave-budget-out forecasts of the runs' isoflop optima.

    For each cut after the 3rd budget, the law is fitted to the budgets up to the cut and
    forecasts the optimum (log N* and log of the best loss) of every later budget that has an
    empirical one (`isoflop_vertex`); the errors, their reach (e-folds of compute beyond the
    cut) and the forecasts' and vertices' own variances enter `drift_model`. Forecasts from
    one cut share its fit, and a budget is forecast from several cuts: the errors are not
    independent, which the model ignores. With no usable fold the priors are returned.
    """
    from numpyro.infer import MCMC, NUTS

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
            grid = _grid(c, fpt, (sub["params"].min() / 4, sub["params"].max() * 4), 201)
            log_n, log_l = _law_optimum(law, c, grid)
            vn, vn_var, vl, vl_var = vertices[b]
            rows.append({"cut": int(cut), "budget": int(b), "flops": c,
                         "reach": float(np.log(c / law.max_flops)),
                         "err_n": vn - float(np.median(log_n)), "var_n": float(log_n.var()) + vn_var,
                         "err_l": vl - float(np.median(log_l)), "var_l": float(log_l.var()) + vl_var})
    folds = pd.DataFrame(rows, columns=["cut", "budget", "flops", "reach", "err_n", "var_n",
                                        "err_l", "var_l"])
    if folds.empty:
        return prior_drift(priors, draws=draws, seed=seed)
    scales = _drift_scales(priors)
    key = ("drift", len(folds), scales, draws)
    mcmc = _Sampler._cache.get(key)
    if mcmc is None:
        mcmc = MCMC(NUTS(partial(drift_model, scales=scales)), num_warmup=500, num_samples=2 * draws,
                    thinning=2, progress_bar=False, jit_model_args=True)
        _Sampler._cache[key] = mcmc
    arr = {c: jnp.asarray(folds[c].to_numpy(float)) for c in ("reach", "err_n", "var_n", "err_l", "var_l")}
    mcmc.run(jax.random.PRNGKey(seed), arr["reach"], arr["err_n"], arr["var_n"], arr["err_l"],
             arr["var_l"], extra_fields=("diverging",))
    rates = np.abs(np.asarray(mcmc.get_samples()["drift"], dtype=np.float64))
    return Drift(rates=rates, source="calibrated", folds=folds,
                 divergences=int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum()))


# ---------------------------------------------------------------- LR and batch priors


def step_law_lr(params, tokens):
    """Step Law's optimal peak LR, 1.79 N^-0.713 D^0.307 (Li et al. 2025, arXiv:2503.04715)."""
    return 1.79 * np.asarray(params, float) ** -0.713 * np.asarray(tokens, float) ** 0.307


def step_law_batch(tokens):
    """Step Law's optimal batch in tokens, 0.58 D^0.571 (Li et al. 2025, arXiv:2503.04715)."""
    return 0.58 * np.asarray(tokens, float) ** 0.571


def caveats() -> dict[str, str]:
    """The literature's caveats on compute-optimal fits (``[caveats]`` of ``models/budget.toml``)."""
    text = resources.files("lrplan.models").joinpath("budget.toml").read_text()
    return dict(tomllib.loads(text).get("caveats", {}))


# ---------------------------------------------------------------- the decision


@dataclass(frozen=True)
class BudgetResult:
    """A budget plan; every draw array shares one index s (the law's draws).

    ``curves[s, g]`` is draw s's isoflop curve (with its calibrated miss) on ``grid``;
    ``params_star[s]`` its minimiser; ``final_loss[s]`` a predictive draw of the loss at the
    recommended size; ``compare`` maps a named size to its draws of excess loss over it.
    """

    flops: float
    law: LossLaw
    drift: Drift
    reach: float
    grid: np.ndarray
    curves: np.ndarray
    recommended: float
    params_star: np.ndarray
    final_loss: np.ndarray
    lr_star: np.ndarray
    lr_source: str
    batch_star: np.ndarray
    batch_source: str
    compare: dict[float, np.ndarray]
    params_range: tuple[float, float]
    notes: tuple[str, ...] = ()

    @property
    def fpt(self) -> FlopsPerToken:
        """FLOPs per token."""
        return self.law.fpt

    def tokens(self, params):
        """Tokens at size ``params`` under this budget."""
        return self.fpt.tokens(self.flops, params)

    def curve_summary(self, n_points: int = 41) -> dict:
        """The isoflop curve thinned to ``n_points`` sizes: mean and quantiles per size."""
        idx = np.unique(np.linspace(0, self.grid.size - 1, n_points).round().astype(int))
        c = self.curves[:, idx]
        q = np.quantile(c, QUANTILES, axis=0)
        return {"params": self.grid[idx].tolist(), "tokens": self.tokens(self.grid[idx]).tolist(),
                "mean": c.mean(axis=0).tolist(),
                "quantiles": {str(k): v.tolist() for k, v in zip(QUANTILES, q, strict=True)}}

    def to_json(self) -> dict:
        """The JSON document of ``lrplan budget --json``."""
        rec = self.recommended
        best = float(self.final_loss.mean())
        law = self.law
        return {
            "budget": {"flops": self.flops, "flops_per_token": str(self.fpt),
                       "params_range": list(self.params_range),
                       "fitted_max_flops": law.max_flops, "reach": self.reach},
            "recommended": {"params": rec, "tokens": float(self.tokens(rec)),
                            "tokens_per_param": float(self.tokens(rec) / rec)},
            "params_optimum": summarize(self.params_star),
            "tokens_optimum": summarize(self.tokens(self.params_star)),
            "final_loss": summarize(self.final_loss),
            "lr": {"optimum": summarize(self.lr_star), "source": self.lr_source},
            "batch": {"optimum": summarize(self.batch_star), "source": self.batch_source},
            "compare": [{"params": n, "tokens": float(self.tokens(n)), "excess_loss": summarize(d),
                         "excess_relative": float(d.mean() / best)} for n, d in self.compare.items()],
            "isoflop": self.curve_summary(),
            "drift": {"source": self.drift.source, "folds": len(self.drift.folds),
                      "params_rate": summarize(self.drift.rates[:, 0]),
                      "loss_rate": summarize(self.drift.rates[:, 1])},
            "model": {"source": law.source, "runs": int(law.points["run"].nunique()),
                      "budgets": int(law.points["budget"].nunique()),
                      "law": {k: summarize(law.draws[k]) for k in ("E", "A", "a", "B", "b")},
                      "n0": law.n0, "d0": law.d0},
            "diagnostics": law.diagnostics.to_json(),
            "notes": list(self.notes),
        }


def _lr_and_batch(law: LossLaw, params: float, tokens: float, priors: PriorSet,
                  rng: np.random.Generator, notes: list[str]):
    s = law.n_draws
    tfit = law.transfer
    batch_term = tfit is not None and "b_opt" in tfit.samples
    if batch_term:
        c = tfit.config
        x_d = np.log(tokens / c.d0)
        batch = c.b0 * np.exp(tfit.flat("b_opt") + tfit.flat("b_d") * x_d)
        batch_source = "transfer"
    else:
        sd = float(priors["batch_step_law"].args["scale"])
        batch = step_law_batch(tokens) * np.exp(sd * rng.standard_normal(s))
        batch_source = "step_law"
        notes.append("the batch is not identified by these runs (no size was run at two batches): "
                     f"B* is Step Law's 0.58 D^0.571 with a spread of x{np.exp(sd):.2g} (1 sd)")
    if tfit is not None:
        lr = tfit.lr_star(params, tokens, float(np.median(batch)))
        lr_source = "transfer"
    else:
        sd = float(priors["lr_step_law"].args["scale"])
        lr = step_law_lr(params, tokens) * np.exp(sd * rng.standard_normal(s))
        lr_source = "step_law"
        notes.append("the runs have no LR sweep: lr* is Step Law's 1.79 N^-0.713 D^0.307 at the "
                     f"recommended size, with a spread of x{np.exp(sd):.2g} (1 sd); sweep the LR "
                     "(lrplan plan) to replace it")
    return lr, lr_source, batch, batch_source


def _check_compare(grid: np.ndarray, compare: tuple[float, ...]) -> None:
    lo, hi = float(grid[0]), float(grid[-1])
    bad = [n for n in compare if not lo * (1 - 1e-9) <= n <= hi * (1 + 1e-9)]
    if bad:
        raise DataError(f"--compare {bad[0]:g} lies outside the sizes considered ({lo:.3g}-{hi:.3g}); "
                        "widen --params-range")


def decide_budget(law: LossLaw, flops: float, *, drift: Drift, priors: PriorSet | None = None,
                  params_range: tuple[float, float] | None = None,
                  compare: tuple[float, ...] = (), seed: int = 0, grid_size: int = 401) -> BudgetResult:
    """The (N, D) minimising the posterior-mean final loss at ``flops``, and what surrounds it.

    Each law draw's isoflop curve is shifted by its own draw of the calibrated miss (drift
    rates times the reach beyond the fitted budgets times a standard normal), so the optimum's
    posterior, the loss there and the cost of each size in ``compare`` carry it.
    """
    if not (np.isfinite(flops) and flops > 0):
        raise DataError(f"--flops {flops}: give a positive budget in FLOPs, e.g. 1e21")
    priors = priors or load_priors("budget")
    rng = np.random.default_rng(seed)
    notes = list(law.notes)
    grid = _grid(flops, law.fpt, params_range, grid_size)
    lo, hi = float(grid[0]), float(grid[-1])
    _check_compare(grid, compare)
    s = law.n_draws
    reach = max(0.0, float(np.log(flops / law.max_flops)))
    pick = rng.integers(0, drift.rates.shape[0], s)
    shift = drift.rates[pick, 0] * reach * rng.standard_normal(s)
    scale = drift.rates[pick, 1] * reach * rng.standard_normal(s)
    curves = isoflop_curves(law, flops, grid, shift, scale)
    if not np.all(np.isfinite(curves)):
        raise FitError("the loss law gives a non-finite loss on this isoflop curve; check --flops "
                       "and --params-range")
    mean = curves.mean(axis=0)
    rec = int(np.argmin(mean))
    star = grid[np.argmin(curves, axis=1)]
    at_edge = np.mean((star <= grid[0]) | (star >= grid[-1]))
    if rec in (0, grid.size - 1) or at_edge > 0.05:
        notes.append(f"the optimum reaches the edge of the sizes considered ({lo:.3g}-{hi:.3g}) in "
                     f"{at_edge:.0%} of draws: widen --params-range")
    n_rec = float(grid[rec])
    final = curves[:, rec] + law.noise * rng.standard_normal(s)
    cmp = {}
    for n in compare:
        cn = isoflop_curves(law, flops, np.array([n]), shift, scale)[:, 0]
        cmp[float(n)] = cn - curves[:, rec]
    fitted = law.points
    if reach > 0:
        notes.append(f"the budget is {np.exp(reach):.3g}x the largest fitted compute "
                     f"({law.max_flops:.3g} FLOPs): N*, D* and the loss are extrapolated, and their "
                     f"intervals carry the {drift.source} drift of the law's optimum ({len(drift.folds)} "
                     "leave-budget-out forecasts)" if drift.source == "calibrated" else
                     f"the budget is {np.exp(reach):.3g}x the largest fitted compute "
                     f"({law.max_flops:.3g} FLOPs): N*, D* and the loss are extrapolated, and the "
                     "drift of the law's optimum beyond the fitted budgets comes from its prior "
                     "(too few budgets with an isoflop optimum to calibrate it)")
    if n_rec > 10 * fitted["params"].max():
        notes.append(f"the recommended size is {n_rec / fitted['params'].max():.3g}x the largest "
                     "fitted run: the size term of the law is extrapolated")
    lr, lr_src, batch, batch_src = _lr_and_batch(law, n_rec, float(law.fpt.tokens(flops, n_rec)),
                                                 priors, rng, notes)
    return BudgetResult(flops=float(flops), law=law, drift=drift, reach=reach, grid=grid,
                        curves=curves, recommended=n_rec, params_star=star, final_loss=final,
                        lr_star=lr, lr_source=lr_src, batch_star=batch, batch_source=batch_src,
                        compare=cmp, params_range=(lo, hi), notes=tuple(notes))


# ---------------------------------------------------------------- one call


def has_lr_sweep(points: pd.DataFrame) -> bool:
    """Whether some (size, tokens, batch) was run at two or more peak LRs."""
    if points["peak_lr"].isna().any():
        return False
    return bool(points.groupby(["params", "tokens", "tokens_per_step"])["peak_lr"].nunique().max() > 1)


def plan_budget(runs: RunSet, flops: float, *, fpt: FlopsPerToken = FlopsPerToken(),
                params_range: tuple[float, float] | None = None, compare: tuple[float, ...] = (),
                max_excess: float | None = None, calibrate: bool = True,
                priors: PriorSet | None = None, transfer_priors: PriorSet | None = None,
                seed: int = 0, chains: int = 2, num_warmup: int = 1000, num_samples: int = 1000,
                progress: bool = False) -> BudgetResult:
    """Fit the loss law to ``runs`` and decide the allocation of ``flops`` (`decide_budget`).

    Runs that sweep the LR (some size and horizon at two LRs) are fitted by the transfer model
    and its L* is used; otherwise `fit_budget` fits their final losses, and (``calibrate``)
    `calibrate_drift` calibrates the law's miss beyond the fitted budgets.
    """
    priors = priors or load_priors("budget")
    if params_range is not None and not 0 < params_range[0] < params_range[1]:
        raise DataError(f"--params-range {params_range[0]:g},{params_range[1]:g}: give LO,HI with "
                        "0 < LO < HI")
    if max_excess is not None and not max_excess > 0:
        raise DataError(f"--max-excess {max_excess:g}: give a positive fraction, e.g. 0.1")
    _check_compare(_grid(flops, fpt, params_range, 2), compare)  # before any fit
    pts, notes = budget_points(runs, fpt=fpt, max_excess=max_excess)
    notes = list(runs.excluded) + notes
    if has_lr_sweep(pts):
        from lrplan.transfer.fit import fit_transfer, transfer_points

        tpoints, tnotes = transfer_points(runs)
        tfit = fit_transfer(tpoints, priors=transfer_priors, seed=seed, chains=chains,
                            num_warmup=num_warmup, num_samples=num_samples, progress=progress,
                            notes=tuple(tnotes))
        law = law_from_transfer(tfit, pts, fpt=fpt, notes=tuple(notes) + tfit.config.notes)
        drift = prior_drift(priors, seed=seed)
        if calibrate:
            law = replace(law, notes=law.notes + (
                "the runs sweep the LR, so the loss law is the transfer model's L* and its drift "
                "beyond the fitted budgets comes from the prior (no leave-budget-out refits of the "
                "transfer model)",))
    else:
        law = fit_budget(pts, fpt=fpt, priors=priors, seed=seed, chains=chains,
                         num_warmup=num_warmup, num_samples=num_samples, progress=progress,
                         notes=tuple(notes))
        drift = calibrate_drift(pts, fpt=fpt, priors=priors, seed=seed) if calibrate else \
            prior_drift(priors, seed=seed)
    if law.diagnostics.problems():
        law = replace(law, notes=law.notes + ("the loss law's sampler did not converge: "
                                              + "; ".join(law.diagnostics.problems()),))
    return decide_budget(law, flops, drift=drift, priors=priors, params_range=params_range,
                         compare=compare, seed=seed)
