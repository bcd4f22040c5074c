"""Render a budget plan (`lrplan.budget.fit.BudgetResult`) and a batch decision: text, report sections.

The terminal shows the decision and the isoflop curve at the budget with its 80% band as
text; the report (``lrplan budget --report``, HTML or Markdown via `lrplan.report.document`) adds a
figure of the curve with 50/80/95% bands, the leave-budget-out forecasts behind the
calibrated miss, the literature's caveats and the sampler's diagnostics.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from lrplan.budget.decide import BudgetResult, caveats
from lrplan.report.document import Body, Figure, Report, Section, save_report

__all__ = ["render_text", "build_budget_report", "write_budget_report", "batch_section"]


def _g(x: float) -> str:
    return f"{x:.3g}"


def _q(summary: dict, fmt=_g) -> str:
    q = summary["quantiles"]
    return (f"median {fmt(q['0.5'])}   80% {fmt(q['0.1'])}-{fmt(q['0.9'])}   "
            f"95% {fmt(q['0.025'])}-{fmt(q['0.975'])}")


def _source(src: str) -> str:
    return {"transfer": "transfer law", "step_law": "Step Law prior"}.get(src, src)


def _drift_phrase(drift: dict, which: str) -> str:
    """One drift rate (JSON ``drift``) in words: its probability of zero and its 90th percentile."""
    rate = drift[f"{which}_rate"]["quantiles"]
    p = drift["none_probability"][which]
    return f"no drift with probability {p:.2f}, rate 90th percentile {rate['0.9']:.3g}"


def _curve_rows(result: BudgetResult, rows: int = 15) -> list[tuple[float, float, float, float, float]]:
    """(N, D, median, 10%, 90%) at ``rows`` sizes from N*/8 to 8 N* (within the grid)."""
    g = result.grid
    lo, hi = max(g[0], result.recommended / 8), min(g[-1], result.recommended * 8)
    sizes = np.exp(np.linspace(np.log(lo), np.log(hi), rows))
    idx = np.unique(np.searchsorted(g, sizes).clip(0, g.size - 1))
    out = []
    for i in idx:
        c = result.curves[:, i]
        q10, q50, q90 = np.quantile(c, [0.1, 0.5, 0.9])
        out.append((float(g[i]), float(result.tokens(g[i])), float(q50), float(q10), float(q90)))
    return out


def render_text(result: BudgetResult, width: int = 36) -> str:
    """The terminal view of a budget plan."""
    doc = result.to_json()
    b, rec = doc["budget"], doc["recommended"]
    lines = [f"Budget: {b['flops']:.3g} FLOPs at {b['flops_per_token']} FLOPs per token "
             + (f"({np.exp(b['reach']):.3g}x the largest fitted run's compute)" if b["reach"] > 0
                else "(within the fitted runs' compute)"),
             "",
             f"  recommended           N={_g(rec['params'])} params, D={_g(rec['tokens'])} tokens "
             f"({rec['tokens_per_param']:.3g} tokens/param)",
             f"  optimal size N*       {_q(doc['params_optimum'])}",
             f"  optimal tokens D*     {_q(doc['tokens_optimum'])}",
             f"  final loss there      {_q(doc['final_loss'], lambda x: f'{x:.4f}')}",
             f"  peak LR there         {_q(doc['lr']['optimum'])}   ({_source(doc['lr']['source'])})",
             f"  batch there (tokens)  {_q(doc['batch']['optimum'])}   ({_source(doc['batch']['source'])})"]
    for c in doc["compare"]:
        e = c["excess_loss"]
        lines.append(f"  N={_g(c['params']):>8} costs       {e['mean']:+.4f} nats "
                     f"({c['excess_relative']:+.2%}; "
                     f"95% {e['quantiles']['0.025']:+.4f} to {e['quantiles']['0.975']:+.4f})")
    rows = _curve_rows(result)
    lo = min(r[3] for r in rows)
    hi = max(r[4] for r in rows)
    span = max(hi - lo, 1e-12)
    col = lambda v: int(round((v - lo) / span * (width - 1)))  # noqa: E731
    lines += ["", f"Isoflop curve at {b['flops']:.3g} FLOPs: median loss, 80% band "
                  f"(bar from {lo:.3f} to {hi:.3f}; * = recommended size)",
              f"  {'N':>9} {'D':>9} {'loss':>7} {'80% band':>15}"]
    for n, d, m, q10, q90 in rows:
        bar = [" "] * width
        for k in range(col(q10), col(q90) + 1):
            bar[k] = "-"
        bar[col(m)] = "|"
        mark = "*" if abs(np.log(n / result.recommended)) < 0.5 * np.log(64) / (len(rows) - 1) else " "
        lines.append(f"{mark} {n:9.3g} {d:9.3g} {m:7.4f} {q10:7.4f}-{q90:7.4f} [{''.join(bar)}]")
    m = doc["model"]
    lines += ["", f"Loss law: {m['source']} fit of {m['runs']} runs at {m['budgets']} budgets; "
                  f"drift of the optimum beyond them: {doc['drift']['source']} "
                  f"({doc['drift']['folds']} leave-budget-out forecasts): "
                  f"{_drift_phrase(doc['drift'], 'params')} in log N* per e-fold of compute"]
    d = doc["diagnostics"]
    r_hat = "-" if d["r_hat_max"] is None else f"{d['r_hat_max']:.3f}"
    lines.append(f"  R-hat max {r_hat}, ESS min {d['ess_bulk_min'] or 0:.0f}, "
                 f"divergences {d['divergences']}")
    lines += [f"  note: {n}" for n in doc["notes"]]
    return "\n".join(lines)


def _figure(result: BudgetResult) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g, c = result.grid, result.curves
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for lo, hi, alpha in ((0.025, 0.975, 0.15), (0.1, 0.9, 0.25), (0.25, 0.75, 0.35)):
        ql, qh = np.quantile(c, [lo, hi], axis=0)
        ax.fill_between(g, ql, qh, color="C0", alpha=alpha, lw=0,
                        label=f"{(hi - lo):.0%} band")
    ax.plot(g, np.median(c, axis=0), color="C0", lw=1.5, label="median")
    ax.axvline(result.recommended, color="C3", lw=1, ls="--", label="recommended N")
    for n in result.compare:
        ax.axvline(n, color="C2", lw=1, ls=":")
    ax.set_xscale("log")
    top = np.quantile(c, 0.975, axis=0)
    lo_y = np.quantile(c, 0.025, axis=0).min()
    ax.set_ylim(lo_y - 0.01 * abs(lo_y), min(top.max(), lo_y + 4 * (np.median(top) - lo_y) + 1e-9))
    ax.set_xlabel("model size N (params)")
    ax.set_ylabel("final loss")
    ax.set_title(f"Isoflop curve at {result.flops:.3g} FLOPs")
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return Figure(name="isoflop", caption=f"Loss against size at {result.flops:.3g} FLOPs: median "
                  "and 50/80/95% bands, calibrated miss included", png=buf.getvalue())


def build_budget_report(result: BudgetResult) -> Report:
    """The budget plan as report sections (render with `lrplan.report.document.save_report`)."""
    doc = result.to_json()
    s = Body()
    rec = doc["recommended"]
    s.p(f"At **{result.flops:.3g} FLOPs** ({doc['budget']['flops_per_token']} FLOPs per token) the "
        f"expected final loss is lowest at **N = {_g(rec['params'])}** parameters trained on "
        f"**D = {_g(rec['tokens'])}** tokens ({rec['tokens_per_param']:.3g} tokens per parameter).")
    rows = [["optimal size N*", *_row(doc["params_optimum"])],
            ["optimal tokens D*", *_row(doc["tokens_optimum"])],
            ["final loss at N", *_row(doc["final_loss"], lambda x: f"{x:.4f}")],
            [f"peak LR ({_source(doc['lr']['source'])})", *_row(doc["lr"]["optimum"])],
            [f"batch, tokens ({_source(doc['batch']['source'])})", *_row(doc["batch"]["optimum"])]]
    s.table(["quantity", "median", "80% interval", "95% interval"], rows)
    if doc["compare"]:
        s.table(["size N", "tokens D", "expected excess loss", "relative", "95% interval"],
                [[_g(c["params"]), _g(c["tokens"]), f"{c['excess_loss']['mean']:+.4f}",
                  f"{c['excess_relative']:+.2%}",
                  f"{c['excess_loss']['quantiles']['0.025']:+.4f} to "
                  f"{c['excess_loss']['quantiles']['0.975']:+.4f}"] for c in doc["compare"]],
                caption="Cost of the sizes named with --compare, against the recommendation")
    s.items(doc["notes"])
    summary = s.section("Allocation", "allocation")

    c = Body()
    c.figure(_figure(result))
    c.table(["N", "D", "median loss", "80% band"],
            [[_g(n), _g(d), f"{m:.4f}", f"{lo:.4f}-{hi:.4f}"] for n, d, m, lo, hi in _curve_rows(result)])
    curve = c.section("Isoflop curve", "isoflop")

    m = Body()
    law = doc["model"]
    m.p(f"Loss law `L*(N, D) = E + A (N/N0)^-a + B (D/D0)^-b` ({law['source']} fit; N0 = "
        f"{law['n0']:.3g}, D0 = {law['d0']:.3g}) on {law['runs']} runs at {law['budgets']} budgets.")
    m.table(["parameter", "median", "80% interval", "95% interval"],
            [[k, *_row(v)] for k, v in law["law"].items()])
    dr = doc["drift"]
    m.p(f"Each draw's curve is shifted by a miss growing with the e-folds of compute beyond the "
        f"largest fitted budget (here {doc['budget']['reach']:.2f}); its rates are "
        f"{dr['source']} ({dr['folds']} leave-budget-out forecasts): "
        f"{_drift_phrase(dr, 'params')} in log N* and {_drift_phrase(dr, 'loss')} in log loss "
        "per e-fold.")
    folds = result.drift.folds
    if len(folds):
        m.table(["fitted up to", "forecast", "reach (e-folds)", "error log N*", "error log loss"],
                [[_g(float(result.law.points.loc[result.law.points['budget'] == r.cut, 'flops'].max())),
                  _g(r.flops), f"{r.reach:.2f}", f"{r.err_n:+.3f}", f"{r.err_l:+.4f}"]
                 for r in folds.itertuples()],
                caption="Leave-budget-out forecasts of the fitted budgets' own isoflop optima")
    d = doc["diagnostics"]
    m.p(f"Sampler: R-hat max {d['r_hat_max']}, bulk ESS min {d['ess_bulk_min']}, "
        f"{d['divergences']} divergences.")
    model = m.section("Loss law and its miss", "law")

    v = Body()
    v.items([f"**{k}**: {t}" for k, t in caveats().items()])
    cav = v.section("Caveats from the literature", "caveats")
    warn = tuple(result.law.diagnostics.problems())
    return Report(title="lrplan budget plan", sections=(summary, curve, model, cav), warnings=warn)


def _row(summary: dict, fmt=_g) -> list[str]:
    q = summary["quantiles"]
    return [fmt(q["0.5"]), f"{fmt(q['0.1'])}-{fmt(q['0.9'])}", f"{fmt(q['0.025'])}-{fmt(q['0.975'])}"]


def write_budget_report(path: str | os.PathLike[str], result: BudgetResult) -> Path:
    """Build the budget report and write it (``.html`` or ``.md``)."""
    return save_report(build_budget_report(result), path)


def batch_section(plan) -> Section:
    """The batch decision of ``lrplan plan --batch auto`` as a report section."""
    doc = plan.to_json()
    b = Body()
    src = ("the transfer law's batch term (some size was run at two or more batches)" if plan.identified
           else "Step Law's prior: the runs do not identify the batch")
    b.p(f"Recommended batch: **{_g(plan.recommended)} tokens per step**, from {src}.")
    b.table(["quantity", "median", "80% interval", "95% interval"],
            [["optimal batch B* (tokens)", *_row(doc["optimum"])],
             ["optimal peak LR at the recommended batch", *_row(doc["lr_at_recommended"])]])
    if doc["compare"]:
        b.table(["batch (tokens)", "expected excess loss", "relative", "its optimal LR (median)"],
                [[_g(c["tokens_per_step"]),
                  "unknown" if c["excess_loss"] is None else f"{c['excess_loss']['mean']:+.4f}",
                  "unknown" if c["excess_relative"] is None else f"{c['excess_relative']:+.2%}",
                  _g(c["lr"]["quantiles"]["0.5"])] for c in doc["compare"]],
                caption="Other batches, each at its own best LR, against the recommendation")
    b.items(doc["notes"])
    return b.section("Batch", "batch")
