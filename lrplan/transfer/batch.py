"""Choose the batch of a target run from a transfer fit (``lrplan plan --batch auto``).

When some size was run at two or more batches, the transfer model has a batch term in the
loss (at a fixed token budget the loss is worst far from a critical batch that grows with D,
`lrplan.laws.transfer_loss`). For each batch on a log grid and each posterior draw, the loss
at that batch's own best LR is the minimum over a fine LR grid; the recommended batch
minimises its posterior mean, each draw's minimiser is a draw of B*, and any other batch (the
user's hardware batch) costs the draws' difference, at its own best LR. The batch term puts B*
on a power of D alone, the same at every size; each draw's curve is also shifted in log batch
by a normal miss whose sd is the law's miss of the fitted cells' own best batches
(`cell_batch_miss`).

With one batch per size the batch is not identified by the runs: B* is then Step Law's
0.58 D^0.571 tokens (Li et al. 2025) with the spread of ``batch_step_law`` in
``models/budget.toml``, and the cost of another batch is not known.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lrplan.curve.predict import summarize
from lrplan.priors import PriorSet, load_priors

__all__ = ["BatchPlan", "plan_batch", "batch_identified", "cell_batch_miss", "render_batch_text"]


def batch_identified(fit) -> bool:
    """Whether the transfer fit has a batch term (some size was run at two batches)."""
    return "b_opt" in fit.samples


@dataclass(frozen=True)
class BatchPlan:
    """The batch decision at one target size and token count; draws share the fit's index.

    ``loss[s, g]`` is draw s's loss at ``grid[g]`` and its own best LR (None when the batch
    is not identified); ``compare`` maps a named batch to its draws of excess loss (None when
    not identified) and ``compare_lr`` to the draws of its optimal LR.
    """

    params: float
    tokens: float
    identified: bool
    grid: np.ndarray
    loss: np.ndarray | None
    recommended: float
    batch_star: np.ndarray
    lr_star: np.ndarray
    compare: dict[float, np.ndarray | None] = field(default_factory=dict)
    compare_lr: dict[float, np.ndarray] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict:
        """The ``batch`` section of ``lrplan plan --batch auto --json``."""
        rec = int(np.argmin(np.abs(self.grid - self.recommended)))
        best = None if self.loss is None else float(self.loss[:, rec].mean())
        return {
            "identified": self.identified,
            "source": "transfer" if self.identified else "step_law",
            "recommended": self.recommended,
            "optimum": summarize(self.batch_star),
            "lr_at_recommended": summarize(self.lr_star),
            "compare": [{"tokens_per_step": b,
                         "excess_loss": None if d is None else summarize(d),
                         "excess_relative": None if d is None or best is None else float(d.mean() / best),
                         "lr": summarize(self.compare_lr[b])} for b, d in self.compare.items()],
            "notes": list(self.notes),
        }


def _best_over_lr(fit, params, tokens, batch, unannealed) -> np.ndarray:
    grid = fit.lr_grid(params, tokens, batch, size=201)
    return fit.expected_loss(params, tokens, batch, grid, unannealed).min(axis=1)


def cell_batch_miss(fit) -> float:
    """The rms miss, in log batch, of the fit's B*(D) against the fitted cells' best batches.

    A cell is a (size, tokens) run at 3 or more batches: its loss at a batch is the best over
    LRs (`lrplan.evaluate.baselines.cell_optima`), its best batch the vertex of a quadratic in log batch
    through those (when it curves upward inside the batches run). The fit's B* there is the
    posterior median of ``b0 exp(b_opt + b_d log(D / d0))``. The miss is the rms of the log
    ratios less their posterior variance (0 when no cell qualifies). In-sample: the fit saw
    these cells, so it understates a new size's miss.
    """
    from lrplan.evaluate.baselines import cell_optima

    pts = fit.points[fit.points["final"]].copy()
    pts["tokens"] = pts["tokens"].map(lambda v: float(f"{v:.2g}"))  # steps x batch rounds
    optima = cell_optima(pts)
    c = fit.config
    errs, var = [], []
    for (_, d), g in optima.groupby(["params", "tokens"]):
        if g["tokens_per_step"].nunique() < 3:
            continue
        x, y = np.log(g["tokens_per_step"].to_numpy(float)), g["best_loss"].to_numpy(float)
        c2, c1, _ = np.polyfit(x, y, 2)
        if not (c2 > 0 and x.min() <= -c1 / (2 * c2) <= x.max()):
            continue
        law = np.log(c.b0) + fit.log_batch_opt(d)
        errs.append(-c1 / (2 * c2) - float(np.median(law)))
        var.append(float(law.var()))
    if not errs:
        return 0.0
    return float(np.sqrt(max(np.mean(np.square(errs)) - np.mean(var), 0.0)))


def plan_batch(fit, params: float, tokens: float, *, unannealed: float = 0.0,
               compare: tuple[float, ...] = (), priors: PriorSet | None = None, seed: int = 0,
               grid_size: int = 161) -> BatchPlan:
    """The batch (tokens per step) minimising the expected final loss at ``params``, ``tokens``.

    ``fit`` is a `lrplan.transfer.fit.TransferFit`; ``unannealed`` the target's unannealed fraction
    at its end (`lrplan.transfer.decide.target_unannealed`); ``compare`` batches to price.
    """
    from lrplan.budget.decide import step_law_batch

    notes = []
    fitted = fit.points["tokens_per_step"].to_numpy(float)
    lo = min(fitted.min(), *compare) / 16 if compare else fitted.min() / 16
    hi = max(fitted.max(), *compare) * 16 if compare else fitted.max() * 16
    grid = np.exp(np.linspace(np.log(lo), np.log(hi), grid_size))
    if batch_identified(fit):
        law = np.stack([_best_over_lr(fit, params, tokens, b, unannealed) for b in grid], axis=1)
        # each draw's curve in log batch, shifted by the law's miss of the fitted cells' own
        # best batches (the batch term puts B* on a power of D alone, the same at every size)
        miss = cell_batch_miss(fit)
        rng = np.random.default_rng(seed)
        shift = miss * rng.standard_normal(law.shape[0])
        xg = np.log(grid)

        def at(x):  # draws of the shifted curves at log batches x
            return np.stack([np.interp(np.asarray(x, float) - d, xg, row)
                             for d, row in zip(shift, law, strict=True)])

        loss = at(xg)
        rec = int(np.argmin(loss.mean(axis=0)))
        star = grid[np.argmin(law, axis=1)] * np.exp(shift)
        if miss > 0:
            notes.append(f"B*'s interval includes the law's miss of the fitted cells' own best batches "
                         f"(sd {miss:.2f} in log batch)")
        if rec in (0, grid.size - 1) or np.mean((star == grid[0]) | (star == grid[-1])) > 0.05:
            notes.append("the optimal batch reaches the edge of the batches considered "
                         f"({lo:.3g}-{hi:.3g} tokens): the batch term is barely constrained")
        top = fitted.max()
        if grid[rec] > 2 * top or grid[rec] < fitted.min() / 2:
            notes.append(f"the recommended batch ({grid[rec]:.3g} tokens) lies outside the fitted "
                         f"runs' batches ({fitted.min():.3g}-{top:.3g}): an extrapolation")
        cmp = {float(b): at([np.log(b)])[:, 0] - loss[:, rec] for b in compare}
        recommended = float(grid[rec])
    else:
        priors = priors or load_priors("budget")
        sd = float(priors["batch_step_law"].args["scale"])
        rng = np.random.default_rng(seed)
        star = step_law_batch(tokens) * np.exp(sd * rng.standard_normal(fit.n_draws))
        recommended = float(step_law_batch(tokens))
        loss = None
        cmp = {float(b): None for b in compare}
        notes.append("the batch is not identified by these runs (no size was run at two or more "
                     f"batches): only the Step Law prior speaks, B* = 0.58 D^0.571 = {recommended:.3g} "
                     f"tokens with a spread of x{np.exp(sd):.2g} (1 sd; Li et al. 2025), and the cost "
                     "of another batch is unknown; run one size at 2-3 batches to identify it")
    lr = fit.lr_star(params, tokens, recommended, unannealed)
    cmp_lr = {float(b): fit.lr_star(params, tokens, b, unannealed) for b in compare}
    return BatchPlan(params=float(params), tokens=float(tokens), identified=loss is not None,
                     grid=grid, loss=loss, recommended=recommended, batch_star=star, lr_star=lr,
                     compare=cmp, compare_lr=cmp_lr, notes=tuple(notes))


def render_batch_text(plan: BatchPlan) -> str:
    """Terminal lines of a batch decision."""
    doc = plan.to_json()
    q = doc["optimum"]["quantiles"]
    src = "transfer law" if plan.identified else "Step Law prior: not identified by the runs"
    lines = [f"  batch (tokens/step)   {plan.recommended:.3g} recommended; B* median {q['0.5']:.3g}   "
             f"80% {q['0.1']:.3g}-{q['0.9']:.3g}   ({src})",
             f"  LR at that batch      median {doc['lr_at_recommended']['quantiles']['0.5']:.3g}"]
    for c in doc["compare"]:
        e = c["excess_loss"]
        cost = ("cost unknown (batch not identified)" if e is None else
                f"costs {e['mean']:+.4f} nats ({c['excess_relative']:+.2%}; 95% "
                f"{e['quantiles']['0.025']:+.4f} to {e['quantiles']['0.975']:+.4f})")
        lines.append(f"  batch {c['tokens_per_step']:>9.3g}       {cost}; its LR median "
                     f"{c['lr']['quantiles']['0.5']:.3g}")
    lines += [f"  note: {n}" for n in doc["notes"]]
    return "\n".join(lines)
