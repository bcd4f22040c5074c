"""Decisions at a target run: the recommended peak LR, its band, the cost of other LRs.

Every number comes from the same posterior draws: the target's expected final loss on a fine
log-LR grid, ``loss_grid[s, g]``. The recommendation minimises its posterior mean (with an
asymmetric bowl that sits below the median optimum: overshooting costs more), among LRs whose
posterior-mean divergence probability is at most `MAX_DIVERGENCE`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lrplan.curve.predict import CurvePrediction, beyond, summarize
from lrplan.errors import FitError
from lrplan.schedules import lr_schedule, unannealed_fraction

__all__ = ["PlanResult", "Target", "plan", "target_unannealed", "BAND_EXCESS", "MAX_DIVERGENCE"]

#: The near-optimal band: LRs whose expected excess final loss is below this fraction.
BAND_EXCESS = 0.0025
#: An LR whose posterior-mean probability of diverging exceeds this is never recommended.
MAX_DIVERGENCE = 0.05


@dataclass(frozen=True)
class Target:
    """The run being planned: size, tokens, batch, schedule."""

    params: float
    tokens: float
    tokens_per_step: float
    schedule: str
    steps: int
    warmup_steps: int

    def lr_shape(self, schedule: str | None = None) -> np.ndarray:
        """Per-step LR of the target at peak 1."""
        return lr_schedule(schedule or self.schedule, steps=self.steps, peak_lr=1.0,
                           warmup_steps=self.warmup_steps)


@dataclass(frozen=True)
class PlanResult:
    """Everything a plan decided, with the draws behind it (draws share one index ``s``).

    ``loss_grid[s, g]`` is draw s of the target cell's expected final loss at peak LR
    ``lr_grid[g]`` (the law, the target cell's own effects and the law's calibrated miss);
    ``lr_star[s]`` the cell's optimal LR; ``final_loss[s]`` a predictive draw of the final loss
    at ``recommended_lr``; ``compare`` maps a user-named LR to its draws of excess loss over the
    recommended LR and ``compare_loss`` to its predictive draws of the final loss; ``lr_sources``
    splits the variance of log lr* into the law's parameters, the cell's own effect and the
    law's miss beyond the fitted runs; ``curves`` maps a schedule spec to the target's predicted curve at
    ``recommended_lr``; ``divergence[g]`` the posterior-mean divergence probability.
    """

    target: Target
    fit: object
    lr_grid: np.ndarray
    loss_grid: np.ndarray
    recommended_lr: float
    lr_star: np.ndarray
    band: tuple[float, float]
    final_loss: np.ndarray
    divergence: np.ndarray
    compare: dict[float, np.ndarray] = field(default_factory=dict)
    curves: dict[str, CurvePrediction] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    compare_loss: dict[float, np.ndarray] = field(default_factory=dict)
    lr_sources: dict[str, float] = field(default_factory=dict)
    #: The target's batch when the plan chose it (`lrplan.transfer.batch.BatchPlan`), else None.
    batch: object = None
    #: The standard normal draws of the target's new slices (`lrplan.transfer.model.
    #: new_cell_effects`' memo): a candidate run in the same new slice shares its effect.
    new_slices: dict = field(default_factory=dict)

    @property
    def expected_loss(self) -> np.ndarray:
        """Posterior-mean final loss at each grid LR."""
        return self.loss_grid.mean(axis=0)

    def to_json(self) -> dict:
        """The JSON document of ``lrplan plan --json`` (DESIGN.md's contract, plus details)."""
        t, fit = self.target, self.fit
        rec = int(np.argmin(np.abs(self.lr_grid - self.recommended_lr)))
        best = float(self.expected_loss[rec])
        curve = self.curves.get(t.schedule)
        doc = {
            "target": {"params": t.params, "tokens": t.tokens, "tokens_per_step": t.tokens_per_step,
                       "schedule": t.schedule, "steps": t.steps, "warmup_steps": t.warmup_steps},
            "lr": {
                "recommended": self.recommended_lr,
                "optimum": summarize(self.lr_star),
                "band": [self.band[0], self.band[1]],
                "band_excess": BAND_EXCESS,
                "divergence_probability": float(self.divergence[rec]),
                "compare": [{"lr": lr, "excess_loss": summarize(d),
                             "excess_relative": float(d.mean() / best),
                             **({"final_loss": summarize(self.compare_loss[lr])}
                                if lr in self.compare_loss else {})}
                            for lr, d in self.compare.items()],
                "optimum_variance_share": dict(self.lr_sources),
            },
            "final_loss": summarize(self.final_loss),
            "model": {
                "lr_law": fit.config.lr_law, "bowl": fit.config.bowl,
                "exponents": {k: summarize(fit.flat(k))
                              for k in ("c_n", "c_d", "c_b", "c_nn", "a", "b") if k in fit.samples},
                "loo": None if fit.loo is None else [
                    {"variant": k, "elpd_loo": float(r["elpd_loo"]), "se": float(r["se"]),
                     "elpd_diff": float(r["elpd_diff"]), "dse": float(r["dse"]),
                     "weight": float(r["weight"])} for k, r in fit.loo.iterrows()],
                "runs": int(fit.points["run"].nunique()), "points": int((~fit.points["diverged"]).sum()),
                "diverged_runs": int(fit.points.loc[fit.points["final"], "diverged"].sum()),
            },
            "discrepancy": (None if getattr(fit, "discrepancy", None) is None
                            else fit.discrepancy.to_json()),
            "diagnostics": fit.diagnostics.to_json(),
            "notes": list(self.notes),
        }
        if self.batch is not None:
            doc["batch"] = self.batch.to_json()
        if curve is not None:
            q = curve.quantiles()
            doc["curve"] = {"step": curve.steps.tolist(), "mean": curve.mean.tolist(),
                            "quantiles": {k: v.tolist() for k, v in q.items()}}
        return doc


def _curve(fit, target: Target, schedule: str, lr: float, rng, cell: dict,
           n_points: int = 60) -> CurvePrediction:
    shape = target.lr_shape(schedule)
    w = unannealed_fraction(shape)
    first = max(target.warmup_steps, int(0.05 * target.steps), 1)
    steps = np.unique(np.linspace(first, target.steps, n_points).round().astype(np.int64))
    law = fit.expected_loss(target.params, steps * target.tokens_per_step, target.tokens_per_step,
                            lr, w[steps - 1], lr_shift=cell["lr"], loss_shift=cell["loss"],
                            log_kappa_shift=cell["log_kappa"])
    draws = fit.predictive_loss(law, rng, one_run=True)
    return CurvePrediction(steps=steps, draws=draws, law=law, group=None,
                           notes=("curve from the transfer law: L*(N, D) along the schedule, the LR "
                                  "bowl, and the loss an unannealed LR leaves",))


def target_unannealed(fit, target: Target) -> float:
    """How unannealed the target ends (its lagged final LR over its peak).

    0 (annealed) when the fitted runs' schedules are unknown: their final losses were taken as
    annealed, and the target must be read on the same footing.
    """
    if not fit.config.schedule_known:
        return 0.0
    return float(unannealed_fraction(target.lr_shape())[-1])


def plan(
    fit,
    target: Target,
    *,
    compare_lrs: tuple[float, ...] = (),
    schedules: tuple[str, ...] = (),
    seed: int = 0,
    grid_size: int = 401,
) -> PlanResult:
    """Decide the peak LR of ``target`` from a `lrplan.transfer.fit.TransferFit`.

    Every draw carries the target cell's own shift of lr* and of the loss level (the model's
    cell-level effect and the law's calibrated miss, `lrplan.transfer.fit.TransferFit.cell_draws`),
    so the optimum is the predictive distribution of the target cell's optimum, and the
    recommendation minimises the expected loss under it.

    Returns the recommendation (argmin of the posterior-mean final loss over a log grid, among
    LRs unlikely to diverge), the draws of the optimum (each draw's own argmin), the band whose
    expected excess loss is below `BAND_EXCESS` of the best, the excess loss of each LR in
    ``compare_lrs``, the predictive final loss, and the target's curve under its schedule and
    each of ``schedules``.
    """
    rng = np.random.default_rng(seed)
    notes = list(fit.config.notes)
    w_end = target_unannealed(fit, target)
    N, D, B = target.params, target.tokens, target.tokens_per_step
    new_slices: dict = {}
    cell = fit.cell_draws(N, D, B, rng, new_slices)
    grid = fit.lr_grid(N, D, B, size=grid_size, lr_shift=cell["lr"])
    loss = fit.expected_loss(N, D, B, grid, w_end, lr_shift=cell["lr"], loss_shift=cell["loss"],
                            log_kappa_shift=cell["log_kappa"])
    if not np.all(np.isfinite(loss)):
        raise FitError("the transfer law gives a non-finite loss at this target; check --params "
                       "and --tokens")
    mean = loss.mean(axis=0)
    p_div = fit.divergence_probability(N, D, B, grid, lr_shift=cell["lr"]).mean(axis=0)
    safe = p_div <= MAX_DIVERGENCE
    if not safe.any():
        raise FitError("every LR on the grid is likely to diverge at this target: the fit is "
                       "dominated by diverged runs; add runs at lower LRs")
    rec = int(np.argmin(np.where(safe, mean, np.inf)))
    if rec != int(np.argmin(mean)):
        notes.append(f"the loss-optimal LR has a divergence risk above {MAX_DIVERGENCE:.0%}: "
                     "the recommendation is the best LR below that risk")
    near = safe & (mean - mean[rec] <= BAND_EXCESS * mean[rec])
    lo = hi = rec
    while lo > 0 and near[lo - 1]:
        lo -= 1
    while hi < grid.size - 1 and near[hi + 1]:
        hi += 1
    if lo == 0 or hi == grid.size - 1:
        notes.append("the near-optimal band reaches the edge of the LR grid: the bowl is barely "
                     "constrained; sweep a wider range of LRs")
    lr_rec = float(grid[rec])
    best = loss[:, rec]
    at = {float(x): fit.expected_loss(N, D, B, [x], w_end, lr_shift=cell["lr"], loss_shift=cell["loss"],
                                      log_kappa_shift=cell["log_kappa"])[:, 0] for x in compare_lrs}
    compare = {x: v - best for x, v in at.items()}
    compare_loss = {x: fit.predictive_loss(v, rng) for x, v in at.items()}
    final = fit.predictive_loss(best, rng)
    lr_star = grid[np.argmin(loss, axis=1)]
    sources = _lr_sources(np.log(lr_star), cell)
    if schedules and not (fit.config.schedule_known and "k_anneal" in fit.samples):
        notes.append("the fitted runs' schedules are unknown or all anneal alike, so the transfer "
                     "law cannot tell the candidate schedules apart (a curve fit can: lrplan predict); "
                     f"only {target.schedule} is predicted")
        schedules = ()
    curves = {s: _curve(fit, target, s, lr_rec, rng, cell)
              for s in dict.fromkeys((target.schedule, *schedules))}
    _extrapolation_notes(fit, target, notes)
    if fit.discrepancy is not None:
        notes.extend(fit.discrepancy.notes(fit, N, D, B))
    return PlanResult(target=target, fit=fit, lr_grid=grid, loss_grid=loss, recommended_lr=lr_rec,
                      lr_star=lr_star, band=(float(grid[lo]), float(grid[hi])),
                      final_loss=final, divergence=p_div, compare=compare, curves=curves,
                      notes=tuple(notes), compare_loss=compare_loss, lr_sources=sources,
                      new_slices=new_slices)


def _lr_sources(log_lr_star: np.ndarray, cell: dict) -> dict[str, float]:
    """Shares of the variance of the target's log lr*: the law, the cell, the law's miss.

    The cell's shifts move each draw's optimum by exactly that much (the bowl depends on
    log LR - log lr* only), so the law's part is what is left once they are taken out.
    """
    parts = {"law": np.var(log_lr_star - cell["lr"]), "cell": np.var(cell["lr_cell"]),
             "extrapolation": np.var(cell["lr_extrapolation"])}
    total = sum(parts.values())
    return {k: float(v / total) if total > 0 else 0.0 for k, v in parts.items()}


def _extrapolation_notes(fit, target: Target, notes: list[str]) -> None:
    finals = fit.points[fit.points["final"]]
    for col, value, what in (("params", target.params, "size"), ("tokens", target.tokens, "horizon"),
                             ("tokens_per_step", target.tokens_per_step, "batch")):
        top = float(finals[col].max())
        low = float(finals[col].min())
        ratio = beyond(value, low, top)
        if ratio is not None:
            notes.append(f"the target's {what} ({value:.3g}) is {ratio:.3g}x outside the fitted "
                         f"runs ({low:.3g}-{top:.3g}): an extrapolation")
