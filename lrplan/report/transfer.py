"""The report's Transfer section: the plan's recommendation, lr* across sizes and horizons, next runs.

Built from a finished `lrplan.transfer.decide.PlanResult` and its
`lrplan.transfer.nextrun.NextRunResult`; nothing here plans or ranks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lrplan.curve.predict import QUANTILES
from lrplan.report.document import Body, Section, draw_figure, fmt
from lrplan.transfer.decide import BAND_EXCESS as NEAR_OPTIMAL
from lrplan.transfer.decide import MAX_DIVERGENCE, PlanResult, target_unannealed
from lrplan.transfer.nextrun import NextRunResult

__all__ = ["cell_unannealed", "sweep_optima", "transfer_section"]


def cell_unannealed(cell) -> float:
    """A cell's median unannealed fraction at its runs' ends (0 when unknown)."""
    w = cell["unannealed"].to_numpy(dtype=np.float64) if "unannealed" in cell else np.array([])
    w = w[np.isfinite(w)]
    return float(np.median(w)) if w.size else 0.0


def sweep_optima(points) -> list[dict]:
    """Sweep cells with a quadratic-vertex optimum, and their runs' median unannealed fraction.

    The optima are `lrplan.evaluate.baselines.cell_optima`'s; intermediate points of a curve are not
    final losses and stay out.
    """
    from lrplan.evaluate.baselines import cell_optima

    if "final" in points.columns:
        points = points[points["final"].astype(bool)]
    w = {k: cell_unannealed(cell) for k, cell in points.groupby(["params", "tokens", "tokens_per_step"])}
    opt = cell_optima(points)
    return [{"params": c.params, "tokens": c.tokens, "tokens_per_step": c.tokens_per_step,
             "lr": c.lr_opt, "lrs": c.n_lrs,
             "unannealed": w.get((c.params, c.tokens, c.tokens_per_step), 0.0)}
            for c in opt[opt["vertex"]].itertuples(index=False)]


def _lr_star_q(tfit, params, tokens, bsz, unannealed: float) -> np.ndarray:
    return np.quantile(np.asarray(tfit.lr_star(params, tokens, bsz, unannealed), dtype=np.float64),
                       QUANTILES)


def _axis_grid(values: Sequence[float], n: int = 30) -> np.ndarray:
    lo, hi = np.log(min(values)) - np.log(2.0), np.log(max(values)) + np.log(2.0)
    return np.exp(np.linspace(lo, hi, n))


def _risky(plan: PlanResult) -> np.ndarray:
    """Grid LRs the plan never recommends: posterior-mean divergence risk above its limit."""
    return np.asarray(plan.divergence, dtype=np.float64) > MAX_DIVERGENCE


def _along(col: str, v: float, params: float, tokens: float, bsz: float) -> tuple[float, float, float]:
    """(params, tokens, tokens_per_step) with the ``col`` coordinate replaced by ``v``."""
    return (v, tokens, bsz) if col == "params" else (params, v, bsz)


def transfer_section(plan: PlanResult | None, next_runs: NextRunResult | None) -> Section:
    """The Transfer section of a plan (a pointer to `lrplan plan` without one)."""
    from lrplan.report import plots

    b = Body()
    if plan is None:
        b.p("No LR sweep in this fit: run `lrplan plan RUNS --params N --tokens D` on runs at several "
            "peak LRs to get the recommended LR, its near-optimal band and lr* across sizes and horizons.")
        return b.section("Transfer", "transfer")
    t, tfit = plan.target, plan.fit
    lr_grid = np.asarray(plan.lr_grid, dtype=np.float64)
    loss_grid = np.asarray(plan.loss_grid, dtype=np.float64)
    tol = NEAR_OPTIMAL * float(np.mean(plan.final_loss))
    figs = [draw_figure("loss_vs_lr", "Final loss at the target against peak LR: expected value and credible "
                        "bands (left), expected excess over the recommendation (right) with the near-optimal "
                        "band shaded and the compared LRs marked.", plots.loss_vs_lr, lr_grid, loss_grid,
                        recommended=plan.recommended_lr, band=tuple(plan.band), compare=dict(plan.compare),
                        tolerance=tol, title=f"Target: N={fmt(t.params, 3)}, D={fmt(t.tokens, 3)}",
                        risky=_risky(plan))]
    cells = sweep_optima(tfit.points)
    target_q = np.quantile(np.asarray(plan.lr_star, dtype=np.float64), QUANTILES)
    # lr* depends on how annealed a run ends: the target's schedule, each cell's runs
    w_t = target_unannealed(tfit, t)
    pts = tfit.points
    panels = []
    for axis, label, col in (("N", "parameters N", "params"), ("D", "training tokens D", "tokens")):
        tx = t.params if col == "params" else t.tokens
        x = _axis_grid([*pts[col].astype(float), tx])
        q = np.stack([_lr_star_q(tfit, *_along(col, v, t.params, t.tokens, t.tokens_per_step), w_t)
                      for v in x], axis=1)
        # one dashed model line per setting of the other coordinates, with that setting's optima
        other = ("tokens", "tokens_per_step") if col == "params" else ("params", "tokens_per_step")
        groups: dict[tuple, list[dict]] = {}
        for c in cells:
            groups.setdefault((c[other[0]], c[other[1]]), []).append(c)
        lines = []
        for (o, bsz), cs in list(groups.items())[:5]:
            n, d = (cs[0]["params"], o) if col == "params" else (o, cs[0]["tokens"])
            w = float(np.median([c["unannealed"] for c in cs]))
            med = [np.median(tfit.lr_star(*_along(col, v, n, d, bsz), w)) for v in x]
            name = "D" if col == "params" else "N"
            lines.append((f"{name}={fmt(o, 2)}, B={fmt(bsz, 2)}", x, np.asarray(med),
                          [c[col] for c in cs], [c["lr"] for c in cs]))
        panels.append(plots.LrStarPanel(x=x, q=q, xlabel=label, title=f"lr* vs {axis}", target_x=tx,
                                        target_q=target_q, recommended=plan.recommended_lr,
                                        cells=tuple(lines)))
    figs.append(draw_figure("lr_star", "Optimal LR against model size and training tokens, at the target's "
                            "other settings (median, 80% and 95% bands), with the target (square: lr* median "
                            "and 95%) and the recommendation (star). Dots are the sweep cells' empirical "
                            "optima (vertex of a quadratic in log LR), the dashed line the model's median at "
                            "those cells' other settings and schedule.", plots.lr_star_vs, panels))
    b.p(f"Recommended peak LR {fmt(plan.recommended_lr, 3)}; near-optimal band "
        f"{fmt(plan.band[0], 3)}–{fmt(plan.band[1], 3)} (expected excess loss < {NEAR_OPTIMAL:.2%}, "
        f"here {fmt(tol, 2)} nats/token).")
    if cells:
        b.table(["params N", "tokens D", "tokens/step", "LRs", "empirical lr*", "model median lr*"],
                [[c["params"], c["tokens"], c["tokens_per_step"], str(c["lrs"]), c["lr"],
                  float(np.median(tfit.lr_star(c["params"], c["tokens"], c["tokens_per_step"],
                                               c["unannealed"])))]
                 for c in cells], caption="Empirical optima of the sweep cells")
    else:
        b.p("No sweep cell has three or more non-diverged LRs around a minimum, so no empirical optimum "
            "is shown.")
    b.items([n for n in plan.notes if n not in tfit.config.notes])  # the fit's are under Data
    if next_runs is not None:
        _next_runs(next_runs, b)
    return b.section("Transfer", "transfer", figs)


def _next_runs(nxt: NextRunResult, b: Body, top: int = 5) -> None:
    b.h("What to run next")
    b.p(f"Small sweeps (three peak LRs around each cell's median lr*) ranked by the share of the "
        f"variance of log lr* at the target they are expected to remove per FLOP. Today the sd of log "
        f"lr* is {nxt.lr_sd:.3f} and not knowing lr* costs {fmt(nxt.regret, 2)} nats of expected "
        "excess final loss (`lrplan next` scores other candidates).")
    b.table(["params N", "tokens D", "tokens/step", "peak LRs", "share of the target's compute",
             "sd of log lr* after", "sd of final loss after"],
            [[r.params, r.tokens, r.tokens_per_step, ", ".join(fmt(x, 3) for x in r.lrs),
              f"{r.flops_share:.2%}", r.lr_sd_after, r.loss_sd_after]
             for r in nxt.table.head(top).itertuples()], caption="The best next sweeps per FLOP")
    b.items(list(nxt.notes))

