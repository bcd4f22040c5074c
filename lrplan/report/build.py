"""Build a report's sections from finished results: fits, a plan, predictions, next runs.

`build_report` turns a `lrplan.targets.ReportResults` (computed by `lrplan.targets.report_results`
or by hand) into a `lrplan.report.document.Report`; nothing here fits, plans or predicts. The
Transfer and Diagnostics sections are built in `lrplan.report.transfer` and
`lrplan.report.diagnostics`; `lrplan.report.document` renders and writes the report.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lrplan.curve.predict import CurvePrediction
from lrplan.curve.prepare import MAX_POINTS_PER_RUN
from lrplan.report.diagnostics import diagnostics_section
from lrplan.report.document import (
    Body,
    Report,
    ReportError,
    Section,
    check_report_path,
    draw_figure,
    fixed,
    fmt,
    interval,
    save_report,
)
from lrplan.report.transfer import cell_unannealed, transfer_section
from lrplan.targets import ReportResults, ScheduleCandidate
from lrplan.transfer.decide import BAND_EXCESS as NEAR_OPTIMAL

__all__ = ["MAX_CELLS", "build_report", "write_report"]

_BAND_QS = (0.025, 0.25, 0.5, 0.75, 0.975)


def _band(pred: CurvePrediction) -> dict[str, np.ndarray]:
    return pred.quantiles(_BAND_QS)


class _Context:
    """The results of a report and what its sections derive from them alone."""

    def __init__(self, results: ReportResults) -> None:
        self.results = results
        self.fit = results.fit
        self.plan = results.plan
        self.runs = results.runs
        self.candidates = list(results.candidates.candidates)
        self.target_desc = results.candidates.target
        self.notes = list(results.candidates.notes)
        self.run_preds = results.run_predictions
        self.seed = results.seed

    @property
    def fits(self) -> list[tuple[str, object]]:
        """(label, fit) of the curve fit(s) and the transfer fit, those present.

        A fit of several laws (``--law auto``) counts each sampled law as a curve fit.
        """
        curve = [] if self.fit is None else [("curve fit", self.fit)] if not hasattr(self.fit, "fits") \
            else [(f"curve fit ({f.law} law)", f) for f in self.fit.fits]
        return curve + ([("transfer fit", self.plan.fit)] if self.plan is not None else [])

    @property
    def both(self) -> bool:
        """Both a curve fit and a plan: sections label their two parts."""
        return self.fit is not None and self.plan is not None



# ---------------------------------------------------------------- sections


def _warnings(ctx: _Context) -> list[str]:
    out = []
    for label, f in ctx.fits:
        d = f.diagnostics
        if not d.ok:
            if d.misfit:
                out.append(f"The {label} does not fit its own runs: {'; '.join(d.misfit)}. Its "
                           "predictions are not to be trusted; try another --law.")
            if d.sampler_problems():
                out.append(f"The {label}'s sampler diagnostics failed: "
                           f"{'; '.join(d.sampler_problems())}. "
                           "Its intervals may be wrong; refit with more warmup/samples or more "
                           "chains before trusting them.")
    return out


def _winner(cands: list[ScheduleCandidate]) -> tuple[int, np.ndarray]:
    """Index of the candidate with the lowest mean final loss, and P(best) per candidate."""
    law = np.stack([c.pred.law[:, -1] for c in cands])  # same posterior draw order for all
    best = np.argmin(law, axis=0)
    p_best = np.bincount(best, minlength=len(cands)) / law.shape[1]
    return int(np.argmin([c.pred.final.mean() for c in cands])), p_best


def _summary(ctx: _Context) -> Section:
    b = Body()
    plan = ctx.plan
    if plan is not None:
        t = plan.target
        lo80, hi80 = interval(plan.lr_star, 0.8)
        lo95, hi95 = interval(plan.lr_star)
        b.p(f"**Use a peak learning rate of {fmt(plan.recommended_lr, 3)}** for the target "
            f"(N = {fmt(t.params, 3)} parameters, D = {fmt(t.tokens, 3)} tokens, "
            f"{fmt(t.tokens_per_step, 3)} tokens/step, schedule `{t.schedule}`). Any LR from "
            f"{fmt(plan.band[0], 3)} to {fmt(plan.band[1], 3)} is expected to cost less than "
            f"{NEAR_OPTIMAL:.2%} extra final loss.")
        b.p(f"The optimal LR itself is uncertain: median {fmt(np.median(plan.lr_star), 3)}, 80% interval "
            f"{fmt(lo80, 3)}–{fmt(hi80, 3)}, 95% interval {fmt(lo95, 3)}–{fmt(hi95, 3)}.")
        share = plan.lr_sources
        if share:
            b.p(f"Of that spread (variance of log lr*), {share['law']:.0%} is the law's own parameter "
                f"uncertainty, {share['cell']:.0%} a cell's own miss of the law (cells scatter around "
                f"it in the fitted sweep) and {share['extrapolation']:.0%} how far leave-out refits "
                "of the sweep missed held-out cells at the target's distance beyond the runs.")
        for lr, d in sorted(plan.compare.items()):
            base = float(np.mean(plan.final_loss))
            b.p(f"An LR of {fmt(lr, 3)} would cost an expected {fmt(np.mean(d), 3)} nats/token more "
                f"({np.mean(d) / base:.2%} of the loss) than the recommendation.")
        lo, hi = interval(plan.final_loss)
        b.p(f"**Predicted final loss** at the recommended LR: {np.mean(plan.final_loss):.4f} nats/token "
            f"(95% interval {lo:.4f}–{hi:.4f}).")
    cands = ctx.candidates
    if cands:
        w, p_best = _winner(cands)
        c = cands[w]
        lo, hi = interval(c.pred.final)
        if plan is None:
            b.p(f"**Predicted final loss** ({ctx.target_desc}) under `{c.spec}`: "
                f"{c.pred.final.mean():.4f} nats/token (95% interval {lo:.4f}–{hi:.4f}).")
        if len(cands) > 1:
            others = sorted((x.pred.final.mean(), x.spec) for i, x in enumerate(cands) if i != w)
            gap = others[0][0] - c.pred.final.mean()
            b.p(f"**Schedule:** among {len(cands)} candidates, `{c.spec}` gives the lowest predicted final "
                f"loss, {gap:.4f} nats/token below the runner-up `{others[0][1]}`; it is the best "
                f"schedule in {p_best[w]:.0%} of posterior draws.")
        total = float(np.var(c.pred.final))
        law = float(np.var(c.pred.law[:, -1]))
        share = law / total if total > 0 else 0.0
        from_plan = plan is not None and any(c.pred is p for p in plan.curves.values())
        noise = ("the run-to-run noise of the transfer law (seed noise and run offset)" if from_plan
                 else "the calibrated discrepancy of an unseen run plus evaluation noise")
        if share >= 0.5:
            what = (f"parameter uncertainty (the spread of the fitted law) dominates the uncertainty of "
                    f"that prediction: {share:.0%} of its variance")
        else:
            what = (f"{noise} dominates the uncertainty of that prediction: {1 - share:.0%} of its "
                    f"variance (the law's parameters give {share:.0%}); more runs of the same kind "
                    "would not shrink it much")
        b.p(f"**Uncertainty:** {what}.")
    problems = _warnings(ctx)
    if problems:
        b.p("**Diagnostics failed** — see the warning above and the Diagnostics section.")
    else:
        b.p("**Diagnostics:** R-hat, effective sample size and divergences all pass, and the "
            "fitted law follows its own runs.")
    return b.section("Summary", "summary")


def _data(ctx: _Context) -> Section:
    b = Body()
    if ctx.fit is not None:
        if ctx.both:
            b.h("Curve fit")
        _curve_data(ctx, b)
    if ctx.plan is not None:
        if ctx.both:
            b.h("Transfer fit")
        _transfer_data(ctx.plan.fit, b)
    return b.section("Data", "data")


def _notes(b: Body, notes: Sequence[str]) -> None:
    if notes:
        b.p("What the loader excluded and what the fit noted:")
        b.items(list(notes))
    else:
        b.p("Nothing was excluded.")


def _curve_data(ctx: _Context, b: Body) -> None:
    fit = ctx.fit
    rows = []
    for info in ctx.runs:
        g = fit.config.groups[info.group]
        r = info.run
        rows.append([info.name, g.params, g.tokens_per_step, g.peak_lr,
                     r.total_steps if r is not None else int(info.steps[-1]),
                     (r.schedule or "per-step LR") if r is not None else "—",
                     str(len(info.steps)), str(min(len(info.steps), MAX_POINTS_PER_RUN))])
    b.table(["run", "params N", "tokens/step", "peak LR", "steps", "schedule", "points after warmup",
             "points in likelihood"], rows, caption=f"{len(rows)} run(s) in the {fit.law} curve fit")
    c = fit.config
    if hasattr(fit, "scores"):
        b.table(["law", "stacking weight", "held-out elpd", "se", "sampled"],
                [[s.law, fixed(s.weight, 3), fixed(s.elpd, 1), fixed(s.elpd_se, 1),
                  "yes" if s.sampled else "no (weight < 0.01)"] for s in fit.scores],
                caption="Laws weighed by stacking of their held-out predictive densities (each "
                        "held-out curve of the calibration's leave-out fits scored under each law's "
                        "calibrated predictive); predictions draw from the weighted mixture. The "
                        "details below are the heaviest law's.")
    b.p(f"Fit: {c.law} law, {c.chains} chain(s) × {c.num_samples} draws after {c.num_warmup} warmup, "
        f"seed {c.seed}, lrplan {fit.version}; noise {fmt(c.noise, 3)} (log loss); the calibrated "
        f"discrepancy of an unseen run is (posterior medians) {fmt(c.discrepancy, 3)}, plus "
        f"{fmt(c.discrepancy_anneal, 3)} of the loss reduction the law credits to LR decay and "
        f"{fmt(c.discrepancy_growth, 3)} per unit log LR area beyond the fitted runs'.")
    _notes(b, c.notes)


def _transfer_data(tfit, b: Body) -> None:
    pts = tfit.points
    finals = pts[pts["final"].astype(bool)].sort_values(["params", "tokens", "tokens_per_step", "lr"])
    used = (~pts["diverged"].astype(bool)).groupby(pts["run"]).sum()
    rows = [[str(r.run), r.params, r.tokens, r.tokens_per_step, r.lr, r.loss,
             "diverged" if r.diverged else "", str(int(used.get(r.run, 0)))] for r in finals.itertuples()]
    n_div = int(finals["diverged"].astype(bool).sum())
    b.table(["run", "params N", "tokens D", "tokens/step", "peak LR", "final loss", "diverged",
             "loss points"], rows, caption=f"{len(rows)} run(s) in the transfer fit")
    b.p(f"The transfer fit uses {int(used.sum())} loss point(s) of {len(rows)} run(s); {n_div} run(s) "
        "diverged and are kept as evidence that their LR was too high.")
    c = tfit.config
    b.p(f"Fit: {c.lr_law} lr* law, {c.bowl} bowl, {c.chains} chain(s) × {c.num_samples} draws after "
        f"{c.num_warmup} warmup, seed {c.seed}, lrplan {tfit.version}.")
    _notes(b, c.notes)


def _fit_quality(ctx: _Context, plots) -> Section:
    b = Body()
    if ctx.fit is not None:
        if ctx.both:
            b.h("Curve fit")
        _curve_quality(ctx, b, plots)
    if ctx.plan is not None:
        if ctx.both:
            b.h("Transfer fit")
        _transfer_quality(ctx.plan.fit, b, plots, ctx.seed)
    return b.section("Fit quality", "fit-quality")


def _curve_quality(ctx: _Context, b: Body, plots) -> None:
    preds = ctx.run_preds
    bands = []
    for info in ctx.runs:
        pred = preds.get(info.name)
        bands.append(plots.Band(x=pred.steps if pred is not None else info.steps,
                                q=_band(pred) if pred is not None else {}, label=info.name,
                                observed=(info.steps, info.loss)))
    if not preds:
        b.p("The posterior predictive bands, residuals and predictive check need each run's "
            "per-step LR, which the fit file does not store: give the runs file "
            "(`lrplan report FIT --runs RUNS`) to draw them. Observed curves only:")
        b.figure(draw_figure("run_curves", "Observed loss curves of the fitted runs.", plots.run_curves,
                             bands))
        return
    series, obs, med, lo, hi, pit, rows = [], [], [], [], [], [], []
    for info in ctx.runs:
        pred = preds.get(info.name)
        if pred is None:
            continue
        y = info.loss[np.searchsorted(info.steps, pred.steps)]
        rel = y / pred.law.mean(axis=0) - 1
        q = pred.quantiles((0.025, 0.5, 0.975))
        series.append((info.name, pred.steps, rel))
        obs.append(y)
        med.append(q["0.5"])
        lo.append(q["0.025"])
        hi.append(q["0.975"])
        pit.append((pred.draws <= y[None, :]).mean(axis=0))
        cover = np.mean((y >= q["0.025"]) & (y <= q["0.975"]))
        rows.append([info.name, str(len(y)), f"{np.mean(np.abs(rel)):.3%}", f"{np.max(np.abs(rel)):.3%}",
                     f"{cover:.0%}"])
    b.p("Each fitted run with the posterior predictive band of a re-run under its own schedule "
        "(the law's spread plus the calibrated discrepancy and noise). The fit sees these points, "
        "so close agreement is expected; the Target schedules section extrapolates.")
    b.table(["run", "points", "mean |residual|", "max |residual|", "95% band covers"], rows,
            caption="In-sample agreement (residual relative to the posterior-mean law)")
    b.figure(draw_figure("run_curves", "Observed losses (dots) with the posterior predictive median, 50% "
                         "and 95% bands.", plots.run_curves, bands))
    b.figure(draw_figure("residuals", "Relative residuals against step: structure along a curve is the law's "
                         "misfit, not noise.", plots.residuals, series))
    cat = np.concatenate
    b.figure(draw_figure("ppc", "Posterior predictive check: observed vs predicted, and the PIT histogram "
                         "(a hump in the middle means the bands are wider than the in-sample scatter, "
                         "a U shape that they are too narrow).",
                         plots.predictive_check, cat(obs), cat(med), cat(lo), cat(hi), cat(pit)))


#: Sweep cells drawn in the transfer fit's quality figure (the table lists them all).
MAX_CELLS = 12


def _transfer_quality(tfit, b: Body, plots, seed: int) -> None:
    """Observed final loss vs LR per (N, D, B) cell against the transfer law's posterior."""
    rng = np.random.default_rng(seed)
    pts = tfit.points
    finals = pts[pts["final"].astype(bool)]
    cells, rows = [], []
    for (n, d, bsz), cell in finals.groupby(["params", "tokens", "tokens_per_step"], sort=True):
        w = cell_unannealed(cell)
        div = cell["diverged"].astype(bool).to_numpy()
        ok = cell[~div]
        lrs = cell["lr"].to_numpy(dtype=np.float64)
        ref = ok["lr"].to_numpy(dtype=np.float64) if len(ok) else lrs
        grid = np.geomspace(lrs.min() / 1.5, lrs.max() * 1.5, 120)
        law = np.asarray(tfit.expected_loss(n, d, bsz, grid, w), dtype=np.float64)
        lo, hi = np.quantile(law, [0.025, 0.975], axis=0)
        cells.append(plots.LrCell(params=float(n), tokens=float(d), tokens_per_step=float(bsz), lr=grid,
                                  mean=law.mean(axis=0), lo=lo, hi=hi, lr_obs=ref,
                                  loss_obs=ok["loss"].to_numpy(dtype=np.float64),
                                  lr_diverged=lrs[div]))
        if len(ok):
            at = np.asarray(tfit.expected_loss(n, d, bsz, ref, w), dtype=np.float64)
            y = ok["loss"].to_numpy(dtype=np.float64)
            rel = y / at.mean(axis=0) - 1
            draws = tfit.predictive_loss(at, rng)
            plo, phi = np.quantile(draws, [0.025, 0.975], axis=0)
            fit_cols = [f"{np.mean(np.abs(rel)):.3%}", f"{np.max(np.abs(rel)):.3%}",
                        f"{np.mean((y >= plo) & (y <= phi)):.0%}"]
        else:
            fit_cols = ["—"] * 3
        rows.append([float(n), float(d), float(bsz), str(len(cell)), str(int(div.sum())), *fit_cols])
    b.p("The transfer law against each sweep cell (runs sharing size N, tokens D and batch B): the "
        "observed final losses and the posterior of the law over peak LR at that cell. The fit sees "
        "these runs, so close agreement is expected; the Transfer section extrapolates to the target.")
    b.table(["params N", "tokens D", "tokens/step", "runs", "diverged", "mean |residual|",
             "max |residual|", "95% predictive covers"], rows,
            caption="In-sample agreement of final losses (residual relative to the posterior-mean law)")
    if len(cells) > MAX_CELLS:
        b.p(f"The figure shows the first {MAX_CELLS} of {len(cells)} cells.")
    b.figure(draw_figure("transfer_cells", "Final loss against peak LR in each sweep cell: observed runs "
                         "(dots), diverged runs (crosses along the top), and the transfer law's posterior "
                         "mean with its 95% credible band.", plots.sweep_cells, cells[:MAX_CELLS]))




def _schedules(ctx: _Context, plots) -> Section:
    b = Body()
    cands = ctx.candidates
    b.items(ctx.notes)
    if not cands:
        b.p("No candidate schedule could be predicted.")
        return b.section("Target schedules", "schedules")
    b.p(f"Target: {ctx.target_desc}.")
    _, p_best = _winner(cands)
    rows = []
    for c, p in zip(cands, p_best, strict=True):
        lo, hi = interval(c.pred.final)
        rows.append([c.spec, float(c.lr[-1]), c.pred.final.mean(), lo, hi, f"{p:.0%}"])
    b.table(["schedule", "final LR", "final loss mean", "2.5%", "97.5%", "P(best)"], rows,
            caption="Predicted final loss (nats/token) under each candidate schedule")
    b.items(sorted({n for c in cands for n in c.pred.notes}))
    bands = [plots.Band(x=c.pred.steps, q=_band(c.pred), label=c.spec, lr=c.lr) for c in cands]
    fig = draw_figure("schedules", "Candidate schedules (top left), their predicted loss curves with 95% "
                      "bands (top right) and the last 30% of training with 50% and 95% bands (bottom).",
                      plots.schedule_curves, bands)
    return b.section("Target schedules", "schedules", [fig])



# ---------------------------------------------------------------- building


def build_report(results: ReportResults, *, title: str | None = None) -> Report:
    """Build the sections of a report (figures rendered to PNG), without writing anything.

    Parameters
    ----------
    results : ReportResults
        The curve fit and/or plan, and what was predicted from them
        (`lrplan.targets.report_results`). Without a curve fit (an LR sweep of final-only runs
        has none), the report is built from the plan alone: its transfer fit's runs, fit
        quality and diagnostics.
    title : str, optional
        Report title.
    """
    from lrplan.report import plots

    fit, plan = results.fit, results.plan
    if fit is None and plan is None:
        raise ReportError("a report needs a curve fit, a plan, or both")
    ctx = _Context(results)
    loo = getattr(plan.fit, "loo", None) if plan is not None else None
    sections = (_summary(ctx), _data(ctx), _fit_quality(ctx, plots),
                transfer_section(plan, results.next_runs), _schedules(ctx, plots),
                diagnostics_section(ctx.fits, loo))
    if title is None:
        parts = [f"{fit.law} law, {len(ctx.runs)} run(s)"] if fit is not None else []
        if plan is not None:
            parts.append(f"LR plan from {plan.fit.points['run'].nunique()} run(s)")
        title = "lrplan report: " + "; ".join(parts)
    return Report(title=title, sections=sections, warnings=tuple(_warnings(ctx)))


def write_report(path: str | os.PathLike[str], results: ReportResults, *,
                 title: str | None = None) -> Path:
    """Build a report of ``results`` (see `build_report`) and write it to ``path``."""
    check_report_path(path)
    return save_report(build_report(results, title=title), path)
