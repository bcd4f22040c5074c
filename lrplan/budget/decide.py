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
with r the e-folds of compute beyond the largest fitted budget. Each rate is zero (no drift)
with some probability and half-normal otherwise; both have a posterior from leave-budget-out
forecasts of the runs' own isoflop optima (`calibrate_drift`), or their priors
(``models/budget.toml``) when the runs have too few budgets.

References
----------
Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", arXiv:2203.15556.
Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt", arXiv:2404.10102.
Porian et al. 2024, "Resolving Discrepancies in Compute-Optimal Scaling of Language Models",
arXiv:2406.19146.
Li et al. 2025, "Predictable Scale: Part I", arXiv:2503.04715 (Step Law).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from importlib import resources

import numpy as np

from lrplan.budget.data import SIX_N, FlopsPerToken, budget_points, has_lr_sweep
from lrplan.budget.fit import (
    Drift,
    LossLaw,
    calibrate_drift,
    fit_budget,
    isoflop_curves,
    law_from_transfer,
    params_grid,
    prior_drift,
)
from lrplan.budget.model import drift_sd
from lrplan.curve.predict import QUANTILES, summarize
from lrplan.data import RunSet
from lrplan.errors import DataError, FitError
from lrplan.priors import PriorSet, load_priors

__all__ = ["BudgetResult", "decide_budget", "plan_budget", "caveats", "step_law_lr", "step_law_batch"]


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
                      "loss_rate": summarize(self.drift.rates[:, 1]),
                      "none_probability": {"params": self.drift.none_prob[0],
                                           "loss": self.drift.none_prob[1]}},
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
        batch = tfit.config.b0 * np.exp(tfit.log_batch_opt(tokens))
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
    grid = params_grid(flops, law.fpt, params_range, grid_size)
    lo, hi = float(grid[0]), float(grid[-1])
    _check_compare(grid, compare)
    s = law.n_draws
    reach = max(0.0, float(np.log(flops / law.max_flops)))
    pick = rng.integers(0, drift.rates.shape[0], s)
    shift = np.asarray(drift_sd(drift.rates[pick, 0], reach)) * rng.standard_normal(s)
    scale = np.asarray(drift_sd(drift.rates[pick, 1], reach)) * rng.standard_normal(s)
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
    # the noise has its own stream: the LR and batch draws below do not depend on how it is drawn
    final = law.predictive_loss(curves[:, rec], rng.spawn(1)[0])
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


def plan_budget(runs: RunSet, flops: float, *, fpt: FlopsPerToken = SIX_N,
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
    _check_compare(params_grid(flops, fpt, params_range, 2), compare)  # before any fit
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
