"""Which small runs to do next: those that would shrink the uncertainty at the target most per FLOP.

A candidate is a small sweep: a few peak LRs at one (size, tokens, batch). Scoring it is a
preposterior analysis on the transfer fit's draws: outcomes of its runs are simulated from the
posterior predictive (final losses, or divergences) of the candidate's cell, its own cell
effects included, and each outcome reweights the draws by its likelihood, so the weighted
draws are the posterior after those runs, without a refit. A candidate that repeats a fitted
cell therefore mostly measures that cell's known effect again; one that shares a new slice
with the target (its size and batch, say) measures the target's effect too. The law's
calibrated miss beyond the runs (`lrplan.transfer.calibrate`) is not reweighted: no candidate
is scored as shrinking it.
Averaged over outcomes this gives the expected posterior spread of log lr* and of the expected
final loss at the target. A candidate's cost is its training compute, ``6 N D`` FLOPs a run.

References
----------
Raiffa & Schlaifer 1961, "Applied Statistical Decision Theory" (preposterior analysis, the
expected value of sample information); Chaloner & Verdinelli 1995, "Bayesian Experimental
Design: A Review", Statistical Science 10.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np
import pandas as pd

from lrplan.bayes import STUDENT_DF
from lrplan.curve.predict import summarize
from lrplan.errors import FitError
from lrplan.transfer.decide import PlanResult, Target, target_unannealed
from lrplan.transfer.model import loss_noise, loss_noise_logpdf

__all__ = ["Candidate", "NextRunResult", "default_candidates", "expected_posterior", "next_run",
           "LR_FACTORS"]

#: The peak LRs of a candidate sweep: these multiples of its cell's posterior-median lr*.
LR_FACTORS: tuple[float, ...] = (0.5, 1.0, 2.0)
#: Below this effective number of draws per outcome, the after-run spread is a rough estimate.
MIN_ESS = 50
#: When no candidate removes this share of lr*'s variance, the ranking says so.
LITTLE = 0.1
#: An sd of log lr* below this (lr* within ~10%) is well inside any near-optimal band.
PINNED = 0.1


@dataclass(frozen=True)
class Candidate:
    """One small sweep that could be done next: runs at one (size, tokens, batch), several LRs.

    A single run at a new size or horizon says little about lr*: its loss level is as
    uncertain as the LR's effect on it. Two or more LRs at one point measure the bowl.
    """

    params: float
    tokens: float
    tokens_per_step: float
    lrs: tuple[float, ...]

    @property
    def flops(self) -> float:
        """Training compute of its runs, 6 N D each."""
        return 6.0 * self.params * self.tokens * len(self.lrs)


def expected_posterior(
    quantities: np.ndarray,
    mu: np.ndarray,
    scale: np.ndarray,
    p_div: np.ndarray | None = None,
    *,
    n_outcomes: int = 256,
    df: float = STUDENT_DF,
    rng: np.random.Generator,
) -> dict[str, np.ndarray | float]:
    """Expected posterior variances after R new runs, by reweighting the draws.

    Each of ``n_outcomes`` simulated outcomes (a draw, then its runs' noise and divergences)
    weights every draw by the outcome's likelihood under it; the weighted variance is the
    posterior variance after that outcome.

    Parameters
    ----------
    quantities : (S, K) array
        Draws of the quantities whose uncertainty matters.
    mu : (S,) or (S, R) array
        Per draw, the predicted mean of each of R new observations (runs).
    scale : (S,) array
        Per draw, the scale of the runs' independent noise (`lrplan.transfer.model.loss_noise`:
        Student-t with ``df`` degrees of freedom, the transfer model's; ``inf``: normal noise).
        `next_run` passes the fit's `lrplan.transfer.fit.TransferFit.noise`, the scale of its
        `lrplan.transfer.fit.TransferFit.predictive_loss`.
    p_div : (S,) or (S, R) array, optional
        Per draw, the probability each new run diverges (an outcome that carries information too).

    Returns
    -------
    dict
        ``variance`` (K,): expected posterior variance of each quantity; ``ess``: median
        effective number of draws per outcome.
    """
    q = np.asarray(quantities, dtype=np.float64)
    q = q[:, None] if q.ndim == 1 else q
    S = q.shape[0]
    mu = np.asarray(mu, dtype=np.float64).reshape(S, -1)
    scale = np.asarray(scale, dtype=np.float64)
    src = rng.integers(0, S, n_outcomes)
    y = mu[src] + loss_noise(rng, scale[src, None], (n_outcomes, mu.shape[1]), df)
    # log likelihood of outcome j's run r under draw s: (J, S, R)
    ll = loss_noise_logpdf(y[:, None, :] - mu[None], scale[None, :, None], df)
    if p_div is not None:
        p = np.clip(np.asarray(p_div, dtype=np.float64).reshape(S, -1), 1e-12, 1 - 1e-12)
        diverged = rng.random(y.shape) < p[src]
        ll = np.where(diverged[:, None, :], np.log(p)[None], ll + np.log1p(-p)[None])
    logw = ll.sum(axis=2)
    w = np.exp(logw - logw.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)  # (J, S): the posterior after outcome j
    mean = w @ q
    variance = (w @ q**2 - mean**2).mean(axis=0)
    return {"variance": np.maximum(variance, 0.0), "ess": float(np.median(1.0 / np.sum(w**2, axis=1)))}


@dataclass(frozen=True)
class NextRunResult:
    """The target's uncertainty now and after each candidate run, best value per FLOP first.

    ``table`` columns: params, tokens, tokens_per_step, lrs (the sweep's peak LRs), flops,
    flops_share (of the target's), lr_sd_after (sd of log lr* at the target), loss_sd_after
    (of its expected final loss), regret_after (expected excess loss of the LR chosen then),
    value_per_pflop (the share of the goal's variance removed, per 1e15 FLOPs), ess (median
    effective number of draws behind the after-run estimates).
    """

    plan: PlanResult
    lr_sd: float
    loss_sd: float
    regret: float
    table: pd.DataFrame
    goal: str = "lr"
    notes: tuple[str, ...] = ()  # its own; to_json adds the fit's

    def to_json(self) -> dict:
        """The JSON document of ``lrplan next --json``."""
        t, fit = self.plan.target, self.plan.fit
        return {
            "target": {"params": t.params, "tokens": t.tokens, "tokens_per_step": t.tokens_per_step,
                       "schedule": t.schedule, "steps": t.steps, "warmup_steps": t.warmup_steps},
            "goal": self.goal,
            "now": {"lr_optimum": summarize(self.plan.lr_star), "log_lr_sd": self.lr_sd,
                    "final_loss_sd": self.loss_sd, "regret": self.regret},
            "candidates": self.table.to_dict(orient="records"),
            "diagnostics": fit.diagnostics.to_json(),
            "notes": list(self.notes) + list(fit.config.notes),
        }


def default_candidates(fit, sizes=None, horizons=None, tokens_per_step=None,
                       lr_factors=LR_FACTORS) -> list[Candidate]:
    """Candidate sweeps: one per (size, tokens, batch) cell, at ``lr_factors`` times its median lr*.

    By default the fitted cells again, and around each cell of the largest size: twice the
    size, twice the tokens, and both. With ``sizes`` and/or ``horizons`` (tokens): their
    product (the fitted sizes or horizons where one is not given) at ``tokens_per_step``.
    """
    finals = fit.points[fit.points["final"]]
    cells = finals[["params", "tokens", "tokens_per_step"]].drop_duplicates()
    if sizes is None and horizons is None:
        top = cells[cells["params"] == cells["params"].max()]
        grown = [top.assign(params=n * top["params"], tokens=d * top["tokens"])
                 for n, d in ((2, 1), (1, 2), (2, 2))]
        cells = pd.concat([cells, *grown]).drop_duplicates()
        triples = list(cells.itertuples(index=False, name=None))
    else:
        if tokens_per_step is None:
            raise FitError("give the candidates' batch (tokens_per_step) with sizes or horizons")
        triples = list(product(sorted(set(finals["params"])) if sizes is None else sizes,
                               sorted(set(finals["tokens"])) if horizons is None else horizons,
                               [tokens_per_step]))
    out = []
    for n, d, b in triples:
        centre = float(np.median(np.log(fit.lr_star(n, d, b))))
        out.append(Candidate(float(n), float(d), float(b),
                             tuple(float(np.exp(centre) * f) for f in lr_factors)))
    return out


def next_run(
    planned: PlanResult,
    candidates: list[Candidate] | None = None,
    *,
    goal: str = "lr",
    seed: int = 0,
    n_outcomes: int = 256,
) -> NextRunResult:
    """Rank ``candidates`` (default: `default_candidates`) by what they would teach about a plan.

    ``planned`` is `lrplan.transfer.decide.plan`'s result: its draws of the target's loss on the LR
    grid, of the optimum, and its recommendation are today's uncertainty.

    ``goal`` "lr" ranks by the share of the variance of log lr* at the target a candidate is
    expected to remove, per 1e15 FLOPs; "loss" by that of the target's expected final loss.

    Every candidate is scored with the same simulated noise (one seed), so differences between
    candidates are not sampling noise of the scoring.
    """
    if goal not in ("lr", "loss"):
        raise ValueError(f"goal {goal!r}: use 'lr' or 'loss'")
    fit, target = planned.fit, planned.target
    candidates = default_candidates(fit) if candidates is None else candidates
    if not candidates:
        raise FitError("no candidate runs to score")
    N, D = target.params, target.tokens
    loss = planned.loss_grid
    rec = int(np.argmin(np.abs(planned.lr_grid - planned.recommended_lr)))
    quantities = np.column_stack([np.log(planned.lr_star), loss[:, rec]])
    var_now = quantities.var(axis=0)
    regret_now = float(np.mean(loss[:, rec] - loss.min(axis=1)))
    noise = fit.noise()
    rows, rough = [], 0
    for c in candidates:
        steps = max(int(round(c.tokens / c.tokens_per_step)), 2)
        shape = Target(c.params, c.tokens, c.tokens_per_step, target.schedule, steps,
                       int(round(target.warmup_steps / target.steps * steps)))
        # the candidate cell's own effects, per draw: a fitted slice's posterior effect, or the
        # target's draw where it shares a new slice with the target, else a new draw
        eff = fit.cell_effects(c.params, c.tokens, c.tokens_per_step, np.random.default_rng([seed, 1]),
                               dict(planned.new_slices))
        mu = fit.expected_loss(c.params, c.tokens, c.tokens_per_step, list(c.lrs),
                               target_unannealed(fit, shape), lr_shift=eff["lr"],
                               loss_shift=eff["loss"], log_kappa_shift=eff["log_kappa"])
        pd_c = fit.divergence_probability(c.params, c.tokens, c.tokens_per_step, list(c.lrs),
                                          lr_shift=eff["lr"])
        res = expected_posterior(quantities, mu, noise, pd_c, n_outcomes=n_outcomes,
                                 rng=np.random.default_rng(seed))
        rough += res["ess"] < MIN_ESS
        # the expected posterior variance cannot exceed today's (law of total variance); an
        # estimate above it is the outcomes' sampling noise around "nothing learned"
        after = np.minimum(res["variance"], var_now)
        shed = np.where(var_now > 0, 1.0 - after / np.where(var_now > 0, var_now, 1.0), 0.0)
        rows.append({"params": c.params, "tokens": c.tokens, "tokens_per_step": c.tokens_per_step,
                     "lrs": list(c.lrs), "flops": c.flops, "flops_share": c.flops / (6.0 * N * D),
                     "lr_sd_after": float(np.sqrt(after[0])),
                     "loss_sd_after": float(np.sqrt(after[1])),
                     # near the optimum the excess loss is quadratic in the LR's error, so the
                     # expected regret scales with lr*'s variance (a direct reweighted estimate
                     # of these ~1e-4 nat differences was mostly sampling noise)
                     "regret_after": regret_now * (1.0 - float(shed[0])),
                     "value_per_pflop": float(shed[0 if goal == "lr" else 1]) / (c.flops / 1e15),
                     "ess": res["ess"]})
    table = pd.DataFrame(rows).sort_values("value_per_pflop", ascending=False, ignore_index=True)
    notes = []
    lr_sd = float(np.sqrt(var_now[0]))
    shed_most = 1.0 - np.array([table["lr_sd_after"].min(), table["loss_sd_after"].min()]) ** 2 / np.where(
        var_now > 0, var_now, np.inf)
    if goal == "lr" and shed_most[0] < LITTLE:
        why = (f"the runs already pin it (sd of log lr* {lr_sd:.3f})" if lr_sd < PINNED else
               f"its uncertainty (sd of log lr* {lr_sd:.3f}) lies in the extrapolation to the target: "
               "score sweeps nearer it (--sizes, --horizons)")
        note = f"no candidate removes more than {shed_most[0]:.0%} of lr*'s variance: {why}"
        if shed_most[1] >= LITTLE:
            by_loss = table.loc[table["loss_sd_after"].idxmin()]
            note += (f"; for the final loss (--goal loss), N={by_loss['params']:.3g}, "
                     f"D={by_loss['tokens']:.3g} would take its sd from {np.sqrt(var_now[1]):.4f} "
                     f"to {by_loss['loss_sd_after']:.4f}")
        notes.append(note)
    if not fit.diagnostics.ok:
        notes.append("the transfer fit did not converge (see the diagnostics): the draws this "
                     "ranking reweights are unreliable")
    if rough:
        notes.append(f"{rough} candidate(s) would pin the law down so much that fewer than {MIN_ESS} "
                     "posterior draws keep weight after them: their after-run spread is rough "
                     "(refit with more --samples for a finer estimate)")
    return NextRunResult(plan=planned, lr_sd=lr_sd,
                         loss_sd=float(np.sqrt(var_now[1])), regret=regret_now, table=table,
                         goal=goal, notes=tuple(notes))
