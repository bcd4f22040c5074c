"""Reports a person would rather look at: one HTML file, or Markdown with PNG figures.

A report is built as data first -- `build_report` returns a `Report` of `Section` objects, each
with its HTML and Markdown body and its figures as PNG bytes -- and written separately by
`save_report` (or both at once by `write_report`). The output format follows the file suffix:

- ``.html``: one self-contained file; figures embedded as base64 PNG, inline CSS, no script
  and no external URL;
- ``.md``: Markdown with the figures written to ``<stem>_files/`` next to it, linked relatively.

Files are written atomically (a temporary file in the same folder, then `os.replace`).
Plotting (`lrplan.report.plots`, matplotlib) is imported only when a report is built.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lrplan.curve.fit import MAX_POINTS_PER_RUN, CurveFit
from lrplan.curve.predict import QUANTILES, CurvePrediction, predict_curve
from lrplan.errors import FitError, LrplanError
from lrplan.files import atomic_write
from lrplan.transfer.decide import BAND_EXCESS as NEAR_OPTIMAL
from lrplan.transfer.decide import MAX_DIVERGENCE, target_unannealed
from lrplan.transfer.nextrun import next_run

__all__ = [
    "DEFAULT_SCHEDULES",
    "SUFFIXES",
    "Figure",
    "Report",
    "ReportError",
    "Section",
    "build_report",
    "render_html",
    "render_markdown",
    "save_report",
    "write_report",
]

#: Candidate schedules compared when none are given (at the longest fitted run's horizon).
DEFAULT_SCHEDULES: tuple[str, ...] = ("cosine:final=0.1", "wsd:decay=0.2", "constant")
#: Output suffixes and the format each selects.
SUFFIXES = {".html": "html", ".htm": "html", ".md": "markdown"}
_BAND_QS = (0.025, 0.25, 0.5, 0.75, 0.975)


class ReportError(LrplanError, ValueError):
    """A report cannot be written as asked."""


@dataclass(frozen=True)
class Figure:
    """One figure of a report: a file-safe name, a caption and the PNG bytes."""

    name: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class Section:
    """One section: heading, anchor id, body in both formats, and figures shown after the body."""

    title: str
    id: str
    html: str
    markdown: str
    figures: tuple[Figure, ...] = ()


@dataclass(frozen=True)
class Report:
    """A whole report: title, warnings for the banner at the top, sections in order."""

    title: str
    sections: tuple[Section, ...]
    warnings: tuple[str, ...] = ()

    @property
    def figures(self) -> tuple[Figure, ...]:
        """Every figure, in order of appearance."""
        return tuple(f for s in self.sections for f in s.figures)


# ---------------------------------------------------------------- small text helpers


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if isinstance(x, int | np.integer):
        return str(x)
    x = float(x)
    if not np.isfinite(x):
        return "—"
    return f"{x:.{digits}g}"


_NUMBER = re.compile(r"[-+]?[\d.]+(e[-+]?\d+)?%?")


def _fixed(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}" if np.isfinite(x) else "—"


class _Body:
    """Accumulates a section body in HTML and Markdown side by side."""

    def __init__(self) -> None:
        self.html: list[str] = []
        self.md: list[str] = []
        self.figures: list[Figure] = []

    def h(self, text: str) -> None:
        """A subheading inside the section."""
        self.html.append(f"<h3>{_inline(text)}</h3>")
        self.md.append(f"### {text}")

    def figure(self, fig: Figure) -> None:
        """Place a figure here in the body (figures not placed follow the body)."""
        self.figures.append(fig)
        self.html.append(_marker(fig))
        self.md.append(_marker(fig))

    def p(self, text: str, *, cls: str | None = None) -> None:
        """A paragraph; ``**bold**`` and ```code``` spans are rendered in both formats."""
        attr = f' class="{cls}"' if cls else ""
        self.html.append(f"<p{attr}>{_inline(text)}</p>")
        self.md.append(text)

    def items(self, texts: Sequence[str]) -> None:
        """A bulleted list."""
        if not texts:
            return
        self.html.append("<ul>" + "".join(f"<li>{_inline(t)}</li>" for t in texts) + "</ul>")
        self.md.append("\n".join(f"- {t}" for t in texts))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence], *, caption: str = "") -> None:
        """A table of already formatted cells (numbers are formatted with 4 digits)."""
        cells = [[_fmt(c) for c in r] for r in rows]
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        num = [[not isinstance(c, str) or _NUMBER.fullmatch(c) is not None for c in r] for r in rows]
        body = "".join("<tr>" + "".join(f'<td class="n">{html.escape(c)}</td>' if n
                                        else f"<td>{html.escape(c)}</td>" for c, n in zip(r, nr, strict=True))
                       + "</tr>" for r, nr in zip(cells, num, strict=True))
        self.html.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        esc = lambda s: s.replace("|", "\\|")  # noqa: E731
        lines = ([f"*{caption}*", ""] if caption else []) + [
            "| " + " | ".join(esc(h) for h in headers) + " |",
            "|" + "|".join("---" for _ in headers) + "|",
            *("| " + " | ".join(esc(c) for c in r) + " |" for r in cells),
        ]
        self.md.append("\n".join(lines))

    def section(self, title: str, sid: str, figures: Sequence[Figure] = ()) -> Section:
        """Close the body into a `Section`."""
        return Section(title=title, id=sid, html="\n".join(self.html), markdown="\n\n".join(self.md),
                       figures=(*self.figures, *figures))


def _marker(fig: Figure) -> str:
    return f"<!--figure:{fig.name}-->"


def _place(body: str, figures: Sequence[Figure], render: Callable[[Figure], str]) -> str:
    """Replace each figure's marker in ``body`` by the rendered figure; the rest go after it."""
    tail = []
    for f in figures:
        if _marker(f) in body:
            body = body.replace(_marker(f), render(f))
        else:
            tail.append(render(f))
    return "\n\n".join([body, *tail])


def _inline(text: str) -> str:
    """Escape text for HTML and render **bold** and `code` spans."""
    out = html.escape(text)
    parts = out.split("**")
    out = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    a = (1 - level) / 2
    lo, hi = np.quantile(np.asarray(draws, dtype=np.float64), [a, 1 - a])
    return float(lo), float(hi)


def _band(pred: CurvePrediction) -> dict[str, np.ndarray]:
    return pred.quantiles(_BAND_QS)


# ---------------------------------------------------------------- figures


def _draw(name: str, caption: str, fn: Callable, *args, **kwargs) -> Figure:
    from lrplan.report.build import plots

    with plots.style():
        fig = fn(*args, **kwargs)
        png = plots.to_png(fig)
    return Figure(name=name, caption=caption, png=png)


# ---------------------------------------------------------------- the data behind the sections


@dataclass(frozen=True)
class _RunInfo:
    name: str
    group: int
    steps: np.ndarray
    loss: np.ndarray
    run: object | None  # the data.Run when the runs were given


@dataclass(frozen=True)
class _Candidate:
    spec: str
    lr: np.ndarray
    pred: CurvePrediction


@dataclass
class _Context:
    fit: CurveFit | None
    plan: object | None
    runs: list[_RunInfo]
    candidates: list[_Candidate]
    target_desc: str
    run_preds: dict[str, CurvePrediction] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seed: int = 0

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


def _fitted_runs(fit: CurveFit, runs) -> list[_RunInfo]:
    obs = fit.observed
    names = list(dict.fromkeys(str(n) for n in obs["run"]))
    by_name = {r.name: r for r in runs} if runs is not None else {}
    out = []
    for n in names:
        m = np.asarray([str(x) == n for x in obs["run"]])
        order = np.argsort(obs["step"][m])
        out.append(_RunInfo(n, int(obs["group"][m][0]), np.asarray(obs["step"][m])[order],
                            np.asarray(obs["loss"][m])[order], by_name.get(n)))
    return out


def _thin(n: int, k: int) -> np.ndarray:
    return np.unique(np.round(np.linspace(0, n - 1, min(n, k))).astype(int))


def _predict_runs(fit: CurveFit, infos: list[_RunInfo], seed: int) -> dict[str, CurvePrediction]:
    out = {}
    for info in infos:
        r = info.run
        if r is None or r.lr is None:
            continue
        steps = info.steps[_thin(len(info.steps), 80)]
        out[info.name] = predict_curve(fit, r.lr, steps, warmup_steps=r.warmup_steps, params=r.params,
                                       tokens_per_step=r.tokens_per_step, seed=seed)
    return out


def _eval_steps(total: int, warmup: int, n: int = 80) -> np.ndarray:
    return np.unique(np.linspace(max(warmup, 1), total, n).round().astype(np.int64))


def _candidates(fit, plan, infos, schedules, *, steps, peak_lr, warmup_steps, params, tokens_per_step,
                seed) -> tuple[list[_Candidate], str, list[str]]:
    from lrplan.schedules import lr_schedule

    notes: list[str] = []
    target = getattr(plan, "target", None)
    if target is not None:
        steps = steps or target.steps
        peak_lr = peak_lr or plan.recommended_lr
        warmup_steps = target.warmup_steps if warmup_steps is None else warmup_steps
        params = params or target.params
        tokens_per_step = tokens_per_step or target.tokens_per_step
        if not schedules and plan.curves:
            cands = [_Candidate(spec, lr_schedule(spec, steps=steps, peak_lr=peak_lr,
                                                  warmup_steps=warmup_steps), pred)
                     for spec, pred in plan.curves.items()]
            return cands, _target_text(steps, peak_lr, warmup_steps, params, tokens_per_step), notes
    if fit is None:
        raise ReportError("candidate schedules other than the plan's need a curve fit; give the "
                          "schedules to `lrplan plan --schedule` instead")
    if steps is None or peak_lr is None:
        longest = max(infos, key=lambda i: i.steps[-1])
        g = fit.config.groups[longest.group]
        r = longest.run
        steps = steps or (r.total_steps if r is not None else int(longest.steps[-1]))
        peak_lr = peak_lr or g.peak_lr
        if warmup_steps is None:
            warmup_steps = r.warmup_steps if r is not None else 0
        params = params or g.params
        tokens_per_step = tokens_per_step or g.tokens_per_step
        notes.append(f"Candidates are at the longest fitted run's horizon and peak LR ({longest.name}).")
    warmup_steps = warmup_steps or 0
    given = bool(schedules)
    cands = []
    at = _eval_steps(steps, warmup_steps)
    for spec in schedules or DEFAULT_SCHEDULES:
        lr = lr_schedule(spec, steps=steps, peak_lr=peak_lr, warmup_steps=warmup_steps)
        try:
            pred = predict_curve(fit, lr, at, warmup_steps=warmup_steps, params=params,
                                 tokens_per_step=tokens_per_step, seed=seed)
        except FitError as e:
            if given:
                raise
            notes.append(f"The default candidate {spec} cannot be predicted from this fit: {e}.")
            continue
        cands.append(_Candidate(spec, lr, pred))
    return cands, _target_text(steps, peak_lr, warmup_steps, params, tokens_per_step), notes


def _target_text(steps, peak_lr, warmup, params, tokens_per_step) -> str:
    parts = [f"{steps} steps", f"peak LR {_fmt(peak_lr, 3)}", f"{warmup} warmup steps"]
    if params:
        parts.append(f"N = {_fmt(params, 3)} parameters")
    if tokens_per_step:
        parts.append(f"{_fmt(tokens_per_step, 3)} tokens/step")
    return ", ".join(parts)


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


def _winner(cands: list[_Candidate]) -> tuple[int, np.ndarray]:
    """Index of the candidate with the lowest mean final loss, and P(best) per candidate."""
    law = np.stack([c.pred.law[:, -1] for c in cands])  # same posterior draw order for all
    best = np.argmin(law, axis=0)
    p_best = np.bincount(best, minlength=len(cands)) / law.shape[1]
    return int(np.argmin([c.pred.final.mean() for c in cands])), p_best


def _summary(ctx: _Context) -> Section:
    b = _Body()
    plan = ctx.plan
    if plan is not None:
        t = plan.target
        lo80, hi80 = _interval(plan.lr_star, 0.8)
        lo95, hi95 = _interval(plan.lr_star)
        b.p(f"**Use a peak learning rate of {_fmt(plan.recommended_lr, 3)}** for the target "
            f"(N = {_fmt(t.params, 3)} parameters, D = {_fmt(t.tokens, 3)} tokens, "
            f"{_fmt(t.tokens_per_step, 3)} tokens/step, schedule `{t.schedule}`). Any LR from "
            f"{_fmt(plan.band[0], 3)} to {_fmt(plan.band[1], 3)} is expected to cost less than "
            f"{NEAR_OPTIMAL:.2%} extra final loss.")
        b.p(f"The optimal LR itself is uncertain: median {_fmt(np.median(plan.lr_star), 3)}, 80% interval "
            f"{_fmt(lo80, 3)}–{_fmt(hi80, 3)}, 95% interval {_fmt(lo95, 3)}–{_fmt(hi95, 3)}.")
        share = plan.lr_sources
        if share:
            b.p(f"Of that spread (variance of log lr*), {share['law']:.0%} is the law's own parameter "
                f"uncertainty, {share['cell']:.0%} a cell's own miss of the law (cells scatter around "
                f"it in the fitted sweep) and {share['extrapolation']:.0%} how far leave-out refits "
                "of the sweep missed held-out cells at the target's distance beyond the runs.")
        for lr, d in sorted(plan.compare.items()):
            base = float(np.mean(plan.final_loss))
            b.p(f"An LR of {_fmt(lr, 3)} would cost an expected {_fmt(np.mean(d), 3)} nats/token more "
                f"({np.mean(d) / base:.2%} of the loss) than the recommendation.")
        lo, hi = _interval(plan.final_loss)
        b.p(f"**Predicted final loss** at the recommended LR: {np.mean(plan.final_loss):.4f} nats/token "
            f"(95% interval {lo:.4f}–{hi:.4f}).")
    cands = ctx.candidates
    if cands:
        w, p_best = _winner(cands)
        c = cands[w]
        lo, hi = _interval(c.pred.final)
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
    b = _Body()
    if ctx.fit is not None:
        if ctx.both:
            b.h("Curve fit")
        _curve_data(ctx, b)
    if ctx.plan is not None:
        if ctx.both:
            b.h("Transfer fit")
        _transfer_data(ctx.plan.fit, b)
    return b.section("Data", "data")


def _notes(b: _Body, notes: Sequence[str]) -> None:
    if notes:
        b.p("What the loader excluded and what the fit noted:")
        b.items(list(notes))
    else:
        b.p("Nothing was excluded.")


def _curve_data(ctx: _Context, b: _Body) -> None:
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
                [[s.law, _fixed(s.weight, 3), _fixed(s.elpd, 1), _fixed(s.elpd_se, 1),
                  "yes" if s.sampled else "no (weight < 0.01)"] for s in fit.scores],
                caption="Laws weighed by stacking of their held-out predictive densities (each "
                        "held-out curve of the calibration's leave-out fits scored under each law's "
                        "calibrated predictive); predictions draw from the weighted mixture. The "
                        "details below are the heaviest law's.")
    b.p(f"Fit: {c.law} law, {c.chains} chain(s) × {c.num_samples} draws after {c.num_warmup} warmup, "
        f"seed {c.seed}, lrplan {fit.version}; noise {_fmt(c.noise, 3)} (log loss); the calibrated "
        f"discrepancy of an unseen run is (posterior medians) {_fmt(c.discrepancy, 3)}, plus "
        f"{_fmt(c.discrepancy_anneal, 3)} of the loss reduction the law credits to LR decay and "
        f"{_fmt(c.discrepancy_growth, 3)} per unit log LR area beyond the fitted runs'.")
    _notes(b, c.notes)


def _transfer_data(tfit, b: _Body) -> None:
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
    b = _Body()
    if ctx.fit is not None:
        if ctx.both:
            b.h("Curve fit")
        _curve_quality(ctx, b, plots)
    if ctx.plan is not None:
        if ctx.both:
            b.h("Transfer fit")
        _transfer_quality(ctx.plan.fit, b, plots, ctx.seed)
    return b.section("Fit quality", "fit-quality")


def _curve_quality(ctx: _Context, b: _Body, plots) -> None:
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
        b.figure(_draw("run_curves", "Observed loss curves of the fitted runs.", plots.run_curves, bands))
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
    b.figure(_draw("run_curves", "Observed losses (dots) with the posterior predictive median, 50% "
                   "and 95% bands.", plots.run_curves, bands))
    b.figure(_draw("residuals", "Relative residuals against step: structure along a curve is the law's "
                   "misfit, not noise.", plots.residuals, series))
    cat = np.concatenate
    b.figure(_draw("ppc", "Posterior predictive check: observed vs predicted, and the PIT histogram "
                   "(a hump in the middle means the bands are wider than the in-sample scatter, "
                   "a U shape that they are too narrow).",
                   plots.predictive_check, cat(obs), cat(med), cat(lo), cat(hi), cat(pit)))


#: Sweep cells drawn in the transfer fit's quality figure (the table lists them all).
MAX_CELLS = 12


def _transfer_quality(tfit, b: _Body, plots, seed: int) -> None:
    """Observed final loss vs LR per (N, D, B) cell against the transfer law's posterior."""
    rng = np.random.default_rng(seed)
    pts = tfit.points
    finals = pts[pts["final"].astype(bool)]
    cells, rows = [], []
    for (n, d, bsz), cell in finals.groupby(["params", "tokens", "tokens_per_step"], sort=True):
        w = _unannealed(cell)
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
    b.figure(_draw("transfer_cells", "Final loss against peak LR in each sweep cell: observed runs "
                   "(dots), diverged runs (crosses along the top), and the transfer law's posterior "
                   "mean with its 95% credible band.", plots.sweep_cells, cells[:MAX_CELLS]))


def _unannealed(cell) -> float:
    """A cell's median unannealed fraction at its runs' ends (0 when unknown)."""
    w = cell["unannealed"].to_numpy(dtype=np.float64) if "unannealed" in cell else np.array([])
    w = w[np.isfinite(w)]
    return float(np.median(w)) if w.size else 0.0


def _cell_optima(points) -> list[dict]:
    """Sweep cells with a quadratic-vertex optimum, and their runs' median unannealed fraction.

    The optima are `lrplan.evaluate.baselines.cell_optima`'s; intermediate points of a curve are not
    final losses and stay out.
    """
    from lrplan.evaluate.baselines import cell_optima

    if "final" in points.columns:
        points = points[points["final"].astype(bool)]
    w = {k: _unannealed(cell) for k, cell in points.groupby(["params", "tokens", "tokens_per_step"])}
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


def _risky(plan) -> np.ndarray:
    """Grid LRs the plan never recommends: posterior-mean divergence risk above its limit."""
    return np.asarray(plan.divergence, dtype=np.float64) > MAX_DIVERGENCE


def _along(col: str, v: float, params: float, tokens: float, bsz: float) -> tuple[float, float, float]:
    """(params, tokens, tokens_per_step) with the ``col`` coordinate replaced by ``v``."""
    return (v, tokens, bsz) if col == "params" else (params, v, bsz)


def _transfer(ctx: _Context, plots) -> Section:
    b = _Body()
    plan = ctx.plan
    if plan is None:
        b.p("No LR sweep in this fit: run `lrplan plan RUNS --params N --tokens D` on runs at several "
            "peak LRs to get the recommended LR, its near-optimal band and lr* across sizes and horizons.")
        return b.section("Transfer", "transfer")
    t, tfit = plan.target, plan.fit
    lr_grid = np.asarray(plan.lr_grid, dtype=np.float64)
    loss_grid = np.asarray(plan.loss_grid, dtype=np.float64)
    tol = NEAR_OPTIMAL * float(np.mean(plan.final_loss))
    figs = [_draw("loss_vs_lr", "Final loss at the target against peak LR: expected value and credible "
                  "bands (left), expected excess over the recommendation (right) with the near-optimal "
                  "band shaded and the compared LRs marked.", plots.loss_vs_lr, lr_grid, loss_grid,
                  recommended=plan.recommended_lr, band=tuple(plan.band), compare=dict(plan.compare),
                  tolerance=tol, title=f"Target: N={_fmt(t.params, 3)}, D={_fmt(t.tokens, 3)}",
                  risky=_risky(plan))]
    cells = _cell_optima(tfit.points)
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
            lines.append((f"{name}={_fmt(o, 2)}, B={_fmt(bsz, 2)}", x, np.asarray(med),
                          [c[col] for c in cs], [c["lr"] for c in cs]))
        panels.append(plots.LrStarPanel(x=x, q=q, xlabel=label, title=f"lr* vs {axis}", target_x=tx,
                                        target_q=target_q, recommended=plan.recommended_lr,
                                        cells=tuple(lines)))
    figs.append(_draw("lr_star", "Optimal LR against model size and training tokens, at the target's "
                      "other settings (median, 80% and 95% bands), with the target (square: lr* median "
                      "and 95%) and the recommendation (star). Dots are the sweep cells' empirical "
                      "optima (vertex of a quadratic in log LR), the dashed line the model's median at "
                      "those cells' other settings and schedule.", plots.lr_star_vs, panels))
    b.p(f"Recommended peak LR {_fmt(plan.recommended_lr, 3)}; near-optimal band "
        f"{_fmt(plan.band[0], 3)}–{_fmt(plan.band[1], 3)} (expected excess loss < {NEAR_OPTIMAL:.2%}, "
        f"here {_fmt(tol, 2)} nats/token).")
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
    _next_runs(plan, b, ctx.seed)
    return b.section("Transfer", "transfer", figs)


def _next_runs(plan, b: _Body, seed: int, top: int = 5) -> None:
    nxt = next_run(plan, seed=seed)
    b.h("What to run next")
    b.p(f"Small sweeps (three peak LRs around each cell's median lr*) ranked by the share of the "
        f"variance of log lr* at the target they are expected to remove per FLOP. Today the sd of log "
        f"lr* is {nxt.lr_sd:.3f} and not knowing lr* costs {_fmt(nxt.regret, 2)} nats of expected "
        "excess final loss (`lrplan next` scores other candidates).")
    b.table(["params N", "tokens D", "tokens/step", "peak LRs", "share of the target's compute",
             "sd of log lr* after", "sd of final loss after"],
            [[r.params, r.tokens, r.tokens_per_step, ", ".join(_fmt(x, 3) for x in r.lrs),
              f"{r.flops_share:.2%}", r.lr_sd_after, r.loss_sd_after]
             for r in nxt.table.head(top).itertuples()], caption="The best next sweeps per FLOP")
    b.items(list(nxt.notes))


def _schedules(ctx: _Context, plots) -> Section:
    b = _Body()
    cands = ctx.candidates
    b.items(ctx.notes)
    if not cands:
        b.p("No candidate schedule could be predicted.")
        return b.section("Target schedules", "schedules")
    b.p(f"Target: {ctx.target_desc}.")
    _, p_best = _winner(cands)
    rows = []
    for c, p in zip(cands, p_best, strict=True):
        lo, hi = _interval(c.pred.final)
        rows.append([c.spec, float(c.lr[-1]), c.pred.final.mean(), lo, hi, f"{p:.0%}"])
    b.table(["schedule", "final LR", "final loss mean", "2.5%", "97.5%", "P(best)"], rows,
            caption="Predicted final loss (nats/token) under each candidate schedule")
    b.items(sorted({n for c in cands for n in c.pred.notes}))
    bands = [plots.Band(x=c.pred.steps, q=_band(c.pred), label=c.spec, lr=c.lr) for c in cands]
    fig = _draw("schedules", "Candidate schedules (top left), their predicted loss curves with 95% bands "
                "(top right) and the last 30% of training with 50% and 95% bands (bottom).",
                plots.schedule_curves, bands)
    return b.section("Target schedules", "schedules", [fig])


#: What the curve fit's shared parameters mean (LR in units of the fit's largest peak LR,
#: areas in thousands of steps at it; see models/*.toml for their priors).
CURVE_LEGEND = {
    "L0": "the loss the law tends to as the LR area grows, before any LR decay's reduction",
    "A": "amplitude of the power law in the LR area",
    "alpha": "exponent of the power law in the LR area",
    "B": "loss reduction per unit of LR decay",
    "C": "rate at which an LR decay pays off (annealing: weight of the momentum area)",
    "beta": "saturation exponent of an LR decay's payoff",
    "gamma": "exponent of the LR in an LR decay's payoff",
    "half_life": "LR area after which an LR decay has paid half its reduction",
    "E": "the size law's floor, L0(N) = E + A_N (N / N_ref)^-a_N",
    "A_N": "the size law's amplitude at the reference size N_ref",
    "a_N": "the size law's exponent",
    "L_ref": "L0 at the reference size N_ref (E + A_N), what two or more sizes pin down",
    "tau": "spread of the groups' log parameters around the shared ones",
}


def _param_rows(samples: dict[str, np.ndarray]) -> list[list]:
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

    rows = []
    for name, x in samples.items():
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            continue
        flat = x.reshape(-1)
        lo, hi = np.quantile(flat, [0.025, 0.975])
        varies = x.shape[1] >= 4 and np.ptp(flat) > 0  # R-hat and ESS are undefined otherwise
        r_hat = float(split_gelman_rubin(x)) if varies and x.shape[0] >= 2 else float("nan")
        ess = float(effective_sample_size(x)) if varies else float("nan")
        rows.append([name, flat.mean(), flat.std(), lo, hi, _fixed(r_hat, 3), _fixed(ess, 0)])
    return rows


#: Transfer-fit parameters whose prior and posterior the report draws (those the fit has).
TRANSFER_SHOWN = ("c_n", "c_d", "c_b", "c_nn", "a", "b", "kappa", "asym")


def _prior_panels(priors, samples: dict[str, np.ndarray], names: Sequence[str] | None = None) -> list[tuple]:
    """(name, grid, prior density, posterior draws, log) per scalar parameter with a prior.

    ``names`` restricts (and orders) the parameters shown; default: every one with a prior.
    A positive parameter whose prior spans more than a factor 30 is shown on log10 scale.
    """
    import jax
    import jax.numpy as jnp

    from lrplan.bayes import prior_distribution

    panels = []
    for i, name in enumerate(names or priors.params):
        prior = priors.params.get(name)
        x = samples.get(name)
        if prior is None:
            continue
        if x is None or np.ndim(x) != 2:
            continue
        post = np.asarray(x, dtype=np.float64).reshape(-1)
        d = prior_distribution(prior)
        pdraws = np.asarray(d.sample(jax.random.PRNGKey(i), (4000,)), dtype=np.float64)
        plo, phi = np.quantile(pdraws, [0.01, 0.99])
        log = bool(plo > 0 and post.min() > 0 and phi / plo > 30)
        if log:
            pdraws, post = np.log10(pdraws), np.log10(post)
            plo, phi = np.quantile(pdraws, [0.01, 0.99])
        lo = min(plo, np.quantile(post, 0.002))
        hi = max(phi, np.quantile(post, 0.998))
        grid = np.linspace(lo, hi, 300)
        x_grid = 10**grid if log else grid
        # a grid point outside the prior's support (a rate of exactly 0) has density 0
        inside = np.asarray(d.support(jnp.asarray(x_grid)), dtype=bool)
        dens = np.zeros_like(x_grid)
        dens[inside] = np.exp(np.asarray(d.log_prob(jnp.asarray(x_grid[inside])), dtype=np.float64))
        if log:  # density of log10(x)
            dens = dens * x_grid * np.log(10.0)
        panels.append((name, grid, np.nan_to_num(dens), post, log))
    return panels


def _diagnostics(ctx: _Context, plots) -> Section:
    b = _Body()
    fits = ctx.fits
    b.table(["fit", "R-hat max", "bulk ESS min", "divergences", "status"],
            [[label, _fixed(f.diagnostics.r_hat_max, 3), _fixed(f.diagnostics.ess_bulk_min, 0),
              str(f.diagnostics.divergences),
              "ok" if f.diagnostics.ok else "FAILED: " + "; ".join(f.diagnostics.problems())]
             for label, f in fits],
            caption="Thresholds: R-hat ≤ 1.01, bulk ESS ≥ 200, no divergent transition")
    for label, f in fits:
        if ctx.both:
            b.h(label.capitalize())
        slug = label.split()[0]
        b.table(["parameter", "mean", "sd", "2.5%", "97.5%", "R-hat", "bulk ESS"], _param_rows(f.samples),
                caption=f"Posterior of the {label}'s scalar parameters")
        b.items([f"{n}: {CURVE_LEGEND[n]}" for n in CURVE_LEGEND if slug == "curve" and n in f.samples])
        panels = _prior_panels(f.priors, f.samples, TRANSFER_SHOWN if slug == "transfer" else None)
        if panels:
            what = "exponents and bowl" if slug == "transfer" else "parameters"
            b.figure(_draw(f"prior_posterior_{slug}",
                           f"Prior (orange) and posterior (blue) of the {label}'s {what}, in the "
                           "model's normalised units: a posterior no narrower than its "
                           "prior means the data did not inform that parameter.",
                           plots.prior_posterior, panels))
    loo = getattr(ctx.plan.fit, "loo", None) if ctx.plan is not None else None
    if loo is not None:
        cols = [c for c in ("rank", "elpd_loo", "p_loo", "elpd_diff", "weight", "se", "dse", "warning")
                if c in loo.columns]
        rows = zip(loo.index, loo[cols].itertuples(index=False), strict=True)
        b.table(["model", *cols], [[str(i), *(v if isinstance(v, float) else str(v) for v in row)]
                                   for i, row in rows],
                caption="Transfer model variants compared by PSIS-LOO over runs (higher elpd_loo is "
                        "better)")
    else:
        b.p("No LOO model comparison in these fits (`lrplan plan --variants compare` ranks the transfer "
            "model's variants).")
    return b.section("Diagnostics", "diagnostics")


# ---------------------------------------------------------------- building


def build_report(
    fit: CurveFit | None = None,
    *,
    plan=None,
    runs=None,
    schedules: Sequence[str] | None = None,
    steps: int | None = None,
    peak_lr: float | None = None,
    warmup_steps: int | None = None,
    params: float | None = None,
    tokens_per_step: float | None = None,
    seed: int = 0,
    title: str | None = None,
) -> Report:
    """Build the sections of a report (figures rendered to PNG), without writing anything.

    Parameters
    ----------
    fit : CurveFit, optional
        The curve fit. Without one (an LR sweep of final-only runs has none), the report is
        built from ``plan`` alone: its transfer fit's runs, fit quality and diagnostics.
    plan : PlanResult, optional
        Adds the Transfer section and the transfer fit's data, fit quality and diagnostics; its
        target and recommended LR become the schedule defaults. Required without ``fit``.
    runs : RunSet, optional
        The fitted runs; their per-step LRs give the posterior predictive bands, residuals and
        predictive check (a fit file does not store them).
    schedules : sequence of str, optional
        Candidate schedule specs for the target. Default: the plan's curves, else
        `DEFAULT_SCHEDULES` at the longest fitted run's steps and peak LR.
    steps, peak_lr, warmup_steps, params, tokens_per_step
        The target of the candidate schedules (defaults as above).
    seed : int
        Seed of the predictive draws.
    title : str, optional
        Report title.
    """
    from lrplan.report.build import plots

    if fit is None and plan is None:
        raise ReportError("a report needs a curve fit, a plan, or both")
    infos = _fitted_runs(fit, runs) if fit is not None else []
    cands, desc, notes = _candidates(fit, plan, infos, schedules, steps=steps, peak_lr=peak_lr,
                                     warmup_steps=warmup_steps, params=params,
                                     tokens_per_step=tokens_per_step, seed=seed)
    ctx = _Context(fit=fit, plan=plan, runs=infos, candidates=cands, target_desc=desc,
                   run_preds=_predict_runs(fit, infos, seed) if fit is not None else {}, notes=notes,
                   seed=seed)
    sections = (_summary(ctx), _data(ctx), _fit_quality(ctx, plots), _transfer(ctx, plots),
                _schedules(ctx, plots), _diagnostics(ctx, plots))
    if title is None:
        parts = [f"{fit.law} law, {len(infos)} run(s)"] if fit is not None else []
        if plan is not None:
            parts.append(f"LR plan from {plan.fit.points['run'].nunique()} run(s)")
        title = "lrplan report: " + "; ".join(parts)
    return Report(title=title, sections=sections, warnings=tuple(_warnings(ctx)))


# ---------------------------------------------------------------- rendering and writing

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1060px;margin:2em auto;
padding:0 1.2em;color:#1d1d1d;line-height:1.5}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #0072B2;padding-bottom:.2em;margin-top:2em}
nav{font-size:.95em;margin:.6em 0 1.4em}nav a{margin-right:1.1em;color:#0072B2}
.warning{background:#fdecea;border:1px solid #D55E00;border-left:6px solid #D55E00;padding:.7em 1em;
margin:1em 0;border-radius:4px}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em;font-variant-numeric:tabular-nums}
caption{text-align:left;font-style:italic;padding-bottom:.3em;color:#444}
th,td{border:1px solid #d6d6d6;padding:.25em .6em;text-align:left}th{background:#f2f5f8}
td.n{text-align:right}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#444;margin-top:.3em}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px}
"""


def render_html(report: Report) -> str:
    """The report as one self-contained HTML document (figures as base64 data URIs)."""
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{esc(report.title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{esc(report.title)}</h1>"]
    for w in report.warnings:
        out.append(f'<div class="warning" role="alert"><strong>Warning:</strong> {esc(w)}</div>')
    out.append("<nav>" + "".join(f'<a href="#{s.id}">{esc(s.title)}</a>' for s in report.sections) + "</nav>")
    def figure(f: Figure) -> str:
        data = base64.b64encode(f.png).decode("ascii")
        return (f'<figure id="fig-{f.name}"><img src="data:image/png;base64,{data}" '
                f'alt="{esc(f.caption)}"><figcaption>{esc(f.caption)}</figcaption></figure>')

    for s in report.sections:
        out.append(f'<section id="{s.id}" aria-labelledby="{s.id}-h"><h2 id="{s.id}-h">{esc(s.title)}</h2>')
        out.append(_place(s.html, s.figures, figure))
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def render_markdown(report: Report, files_dir: str) -> str:
    """The report as Markdown; figure ``name`` is linked as ``files_dir/name.png``."""
    out = [f"# {report.title}", ""]
    for w in report.warnings:
        out += [f"> **Warning:** {w}", ""]
    out += [" · ".join(f"[{s.title}](#{s.id})" for s in report.sections), ""]
    def figure(f: Figure) -> str:
        return f"![{f.caption}]({files_dir}/{f.name}.png)\n\n*{f.caption}*"

    for s in report.sections:
        out += [f'<a id="{s.id}"></a>', "", f"## {s.title}", "", _place(s.markdown, s.figures, figure), ""]
    return "\n".join(out)


def _atomic_write(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _check_suffix(path: Path) -> str:
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ReportError(f"{path}: unknown report format {path.suffix!r}; name the output "
                          f"{path.stem}.html (one self-contained file) or {path.stem}.md")
    if not path.parent.is_dir():
        raise ReportError(f"{path}: folder {path.parent} does not exist; create it first")
    return fmt


def save_report(report: Report, path: str | os.PathLike[str]) -> Path:
    """Write a built report to ``path`` (``.html`` or ``.md``, see the module docstring)."""
    path = Path(path)
    if _check_suffix(path) == "html":
        _atomic_write(path, render_html(report).encode("utf-8"))
        return path
    folder = path.parent / f"{path.stem}_files"
    folder.mkdir(exist_ok=True)
    for f in report.figures:
        _atomic_write(folder / f"{f.name}.png", f.png)
    _atomic_write(path, render_markdown(report, folder.name).encode("utf-8"))
    return path


def write_report(path: str | os.PathLike[str], fit: CurveFit | None = None, *, plan=None, runs=None,
                 schedules: Sequence[str] | None = None, **kwargs) -> Path:
    """Build a report (see `build_report` for the arguments) and write it to ``path``."""
    _check_suffix(Path(path))
    return save_report(build_report(fit, plan=plan, runs=runs, schedules=schedules, **kwargs), path)
