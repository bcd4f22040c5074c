"""Figures of a report: plain matplotlib, drawn from arrays (no model objects, no I/O).

Every function returns a `matplotlib.figure.Figure` built without pyplot (so no global state
and no GUI backend) and is meant to be called inside `style()`. Colours are the Okabe-Ito
palette, which stays distinguishable under the common colour-vision deficiencies. Only
`lrplan.report.document.draw_figure` imports this module, and only when it draws.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

__all__ = [
    "OKABE_ITO",
    "Band",
    "style",
    "to_png",
    "run_curves",
    "residuals",
    "predictive_check",
    "schedule_curves",
    "prior_posterior",
    "loss_vs_lr",
    "LrCell",
    "sweep_cells",
    "LrStarPanel",
    "lr_star_vs",
]

#: Okabe & Ito (2008) colour-blind-safe palette, most distinct first (black last).
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY, YELLOW, BLACK = OKABE_ITO
GREY = "#6b6b6b"

LOSS_LABEL = "loss (nats/token)"
STEP_LABEL = "step (optimizer updates)"
LR_LABEL = "peak learning rate"

_RC = {
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "figure.facecolor": "white",
    "font.size": 9.5,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.labelsize": 9.5,
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "axes.prop_cycle": mpl.cycler(color=OKABE_ITO),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e3e3",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "lines.linewidth": 1.6,
    "image.cmap": "cividis",
}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The house style of every report figure (a `matplotlib.rc_context`)."""
    with mpl.rc_context(_RC):
        yield


def to_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", pad_inches=0.08)
    return buf.getvalue()


@dataclass(frozen=True)
class Band:
    """A predictive curve: x values and quantiles keyed '0.025', '0.25', '0.5', '0.75', '0.975'."""

    x: np.ndarray
    q: dict[str, np.ndarray]
    label: str = ""
    lr: np.ndarray | None = None  # per-step LR, for schedule plots
    observed: tuple[np.ndarray, np.ndarray] | None = None  # (x, y) points


def _bands(ax, band: Band, color: str, *, label: str | None = None) -> None:
    q = band.q
    ax.fill_between(band.x, q["0.025"], q["0.975"], color=color, alpha=0.16, lw=0,
                    label="95% predictive" if label is None else None)
    ax.fill_between(band.x, q["0.25"], q["0.75"], color=color, alpha=0.32, lw=0,
                    label="50% predictive" if label is None else None)
    ax.plot(band.x, q["0.5"], color=color, lw=1.5, label=label or "median")


def _sci(x, _pos=None) -> str:
    """Tick label 3e-4 / 1.2e8 style, compact."""
    if x <= 0:
        return "0"
    e = int(np.floor(np.log10(x)))
    m = x / 10**e
    return f"{m:.0f}e{e}" if abs(m - round(m)) < 0.05 else f"{m:.1f}e{e}"


def _log_axis(axis) -> None:
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(_sci))
    axis.set_minor_formatter(NullFormatter())


def _grid(n: int, *, ncols: int = 3, w: float = 3.3, h: float = 2.6, sharex=False):
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(w * ncols, h * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def run_curves(bands: Sequence[Band]) -> Figure:
    """One panel per run: observed losses and the posterior predictive 50/95% band."""
    fig, axes = _grid(len(bands))
    for i, (ax, b) in enumerate(zip(axes, bands, strict=True)):
        if b.q:
            _bands(ax, b, BLUE)
        if b.observed is not None:
            ax.plot(*b.observed, ".", color=BLACK, ms=2.5, alpha=0.7, label="observed")
        ax.set_title(b.label, fontsize=9)
        ax.set_xlabel(STEP_LABEL)
        ax.set_ylabel(LOSS_LABEL)
        _zoom_y(ax, b)
        if i == 0:
            ax.legend(loc="upper right")
    return fig


def _zoom_y(ax, b: Band) -> None:
    """Loss curves fall fast early: frame the y axis on the part after the first 10%."""
    ys = []
    if b.observed is not None:
        x, y = b.observed
        ys.append(y[x >= x.min() + 0.1 * (x.max() - x.min())])
    if b.q:
        keep = b.x >= b.x.min() + 0.1 * (b.x.max() - b.x.min())
        ys += [b.q["0.025"][keep], b.q["0.975"][keep]]
    ys = np.concatenate([np.asarray(y) for y in ys]) if ys else np.array([])
    ys = ys[np.isfinite(ys)]
    if ys.size:
        lo, hi = ys.min(), ys.max()
        pad = 0.08 * (hi - lo or abs(hi) * 0.01)
        ax.set_ylim(lo - pad, hi + pad)


def residuals(series: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> Figure:
    """Relative residuals (observed / posterior-mean law - 1, in %) against step, one line per run."""
    fig = Figure(figsize=(9.5, 3.2), layout="constrained")
    ax = fig.subplots()
    for i, (name, steps, rel) in enumerate(series):
        ax.plot(steps, 100 * rel, "-", marker=".", ms=3, lw=0.9, color=OKABE_ITO[i % 7], label=name)
    ax.axhline(0.0, color=GREY, lw=0.8)
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel("residual (% of predicted loss)")
    ax.set_title("Relative residuals of each fitted run")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def predictive_check(observed: np.ndarray, predicted: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                     pit: np.ndarray) -> Figure:
    """Observed minus predicted (relative, with the 95% interval) and the PIT histogram."""
    fig = Figure(figsize=(9.5, 3.6), layout="constrained")
    a, b = fig.subplots(1, 2)
    rel = 100 * (observed / predicted - 1)
    a.errorbar(predicted, rel, yerr=[100 * (1 - lo / predicted), 100 * (hi / predicted - 1)], fmt=".",
               ms=3, color=BLUE, ecolor="#9cc3e0", elinewidth=0.7, alpha=0.8,
               label="observed (bar: 95% predictive interval)")
    a.axhline(0.0, color=GREY, lw=0.9, ls="--")
    a.set_xlabel(f"predicted median {LOSS_LABEL}")
    a.set_ylabel("observed − predicted (% of predicted)")
    a.set_title("Observed vs posterior predictive")
    a.legend(loc="upper left")
    bins = np.linspace(0, 1, 11)
    b.hist(pit, bins=bins, color=BLUE, alpha=0.75, edgecolor="white")
    b.axhline(len(pit) / 10, color=VERMILLION, lw=1.2, ls="--", label="calibrated (uniform)")
    b.set_xlim(0, 1)
    b.set_xlabel("PIT: predictive probability below the observed loss")
    b.set_ylabel("points")
    b.set_title("PIT histogram of fitted points")
    b.legend(loc="upper left", bbox_to_anchor=(0.0, 1.0))
    return fig


def schedule_curves(bands: Sequence[Band]) -> Figure:
    """LR schedules, predicted loss curves with 50/95% bands, and a zoom on the last 30%."""
    fig = Figure(figsize=(9.5, 6.4), layout="constrained")
    gs = fig.add_gridspec(2, 2, height_ratios=[1, 1.25])
    ax_lr, ax_loss, ax_zoom = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1]), fig.add_subplot(gs[1, :])
    for i, b in enumerate(bands):
        c = OKABE_ITO[i % 7]
        if b.lr is not None:
            ax_lr.plot(np.arange(1, len(b.lr) + 1), b.lr, color=c, label=b.label)
        ax_loss.fill_between(b.x, b.q["0.025"], b.q["0.975"], color=c, alpha=0.12, lw=0)
        ax_loss.plot(b.x, b.q["0.5"], color=c, label=b.label)
        late = b.x >= b.x.min() + 0.7 * (b.x.max() - b.x.min())
        _bands(ax_zoom, Band(b.x[late], {k: v[late] for k, v in b.q.items()}), c, label=b.label)
    ax_lr.set_xlabel(STEP_LABEL)
    ax_lr.set_ylabel("learning rate")
    ax_lr.yaxis.set_major_formatter(FuncFormatter(_sci))
    ax_lr.set_title("Schedules")
    ax_lr.legend(loc="lower left")
    ax_loss.set_xlabel(STEP_LABEL)
    ax_loss.set_ylabel(LOSS_LABEL)
    ax_loss.set_title("Predicted loss (median, 95%)")
    _zoom_many(ax_loss, bands, 0.1)
    ax_zoom.set_xlabel(STEP_LABEL)
    ax_zoom.set_ylabel(LOSS_LABEL)
    ax_zoom.set_title("Last 30% of training (median, 50% and 95% bands)")
    ax_zoom.legend(loc="upper right")
    return fig


def _zoom_many(ax, bands: Sequence[Band], frac: float) -> None:
    los, his = [], []
    for b in bands:
        keep = b.x >= b.x.min() + frac * (b.x.max() - b.x.min())
        los.append(b.q["0.025"][keep].min())
        his.append(b.q["0.975"][keep].max())
    lo, hi = min(los), max(his)
    ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))


def prior_posterior(params: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray, bool]]) -> Figure:
    """One panel per parameter: prior density (line) and posterior draws (histogram).

    Each entry is ``(name, grid, prior_density, posterior_draws, log)``; with ``log`` the grid,
    density and draws are of log10 of the parameter and the ticks show the parameter itself.
    """
    fig, axes = _grid(len(params), ncols=4, w=2.45, h=2.0)
    for i, (ax, (name, grid, prior, post, log)) in enumerate(zip(axes, params, strict=True)):
        ax.fill_between(grid, prior, color=ORANGE, alpha=0.25, lw=0)
        ax.plot(grid, prior, color=ORANGE, lw=1.4, label="prior")
        ax.hist(post, bins=40, range=(grid[0], grid[-1]), density=True, color=BLUE, alpha=0.7,
                label="posterior")
        # long names (the discrepancy rates) take the scale note on a second line
        sep = "\n" if len(name) > 12 else " "
        ax.set_title(f"{name}{sep}(log scale)" if log else name, fontsize=9.5)
        ax.set_yticks([])
        ax.set_xlim(grid[0], grid[-1])
        if log:
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{10**v:.2g}"))
        ax.tick_params(axis="x", labelsize=7.5)
        ax.grid(False)
        if i == 0:
            ax.legend(loc="upper right", fontsize=7.5)
    fig.supylabel("density", fontsize=9)
    return fig


def loss_vs_lr(lr_grid: np.ndarray, loss_grid: np.ndarray, *, recommended: float,
               band: tuple[float, float], compare: dict[float, np.ndarray], tolerance: float,
               title: str, risky: np.ndarray | None = None) -> Figure:
    """Final loss at the target vs peak LR (left) and the expected excess loss (right).

    ``loss_grid[s, g]`` are the draws at ``lr_grid[g]``; ``compare`` maps an LR to its draws
    of excess loss over ``recommended``; ``tolerance`` is the near-optimal band's excess;
    ``risky`` marks grid LRs likely to diverge (hatched from the first one up).
    """
    fig = Figure(figsize=(9.5, 4.1), layout="constrained")
    a, b = fig.subplots(1, 2)
    mean = loss_grid.mean(axis=0)
    q = np.quantile(loss_grid, [0.025, 0.25, 0.75, 0.975], axis=0)
    a.fill_between(lr_grid, q[0], q[3], color=BLUE, alpha=0.15, lw=0, label="95% credible")
    a.fill_between(lr_grid, q[1], q[2], color=BLUE, alpha=0.3, lw=0, label="50% credible")
    a.plot(lr_grid, mean, color=BLUE, label="expected")
    excess = mean - np.interp(np.log(recommended), np.log(lr_grid), mean)
    b.plot(lr_grid, excess, color=BLUE, label="expected excess loss")
    b.axhline(tolerance, color=GREY, lw=0.9, ls="--", label="near-optimal threshold")
    for ax in (a, b):
        if risky is not None and risky.any():
            ax.axvspan(lr_grid[risky].min(), lr_grid[-1], facecolor="none", edgecolor=VERMILLION,
                       hatch="//", lw=0, alpha=0.5, label="divergence risk > 5%")
        ax.axvspan(*band, color=GREEN, alpha=0.15, lw=0, label="near-optimal band")
        ax.axvline(recommended, color=GREEN, lw=1.6, label=f"recommended {_sci(recommended)}")
        ax.set_xscale("log")
        _log_axis(ax.xaxis)
        ax.set_xlabel(f"{LR_LABEL} (log scale)")
    for i, (lr, d) in enumerate(sorted(compare.items())):
        c = (VERMILLION, PURPLE, ORANGE, SKY)[i % 4]
        y = float(np.interp(np.log(lr), np.log(lr_grid), mean))
        a.plot([lr], [y], "D", color=c, ms=6, label=f"compare {_sci(lr)}")
        e = float(np.mean(d))
        b.plot([lr], [e], "D", color=c, ms=6)
        b.annotate(f"+{e:.3g}", (lr, e), textcoords="offset points", xytext=(6, 4), fontsize=8, color=c)
    top = max([4 * tolerance, *(float(np.mean(d)) * 1.3 for d in compare.values())])
    b.set_ylim(-0.1 * top, top)
    a.set_ylim(q[0].min() - 0.02 * (q[3].max() - q[0].min()),
               min(q[3].max(), np.quantile(q[3], 0.7)) + 0.05 * (q[3].max() - q[0].min()))
    a.set_ylabel(f"final {LOSS_LABEL}")
    a.set_title(title)
    b.set_ylabel("expected excess final loss (nats/token)")
    b.set_title("Cost of missing the optimum")
    _shared_legend(fig, (a, b), ncols=5)
    return fig


@dataclass(frozen=True)
class LrCell:
    """One sweep cell (runs sharing N, D, B): the law over an LR grid and the runs observed.

    ``mean``, ``lo`` and ``hi`` are the posterior mean and 95% band of the law at ``lr``;
    ``lr_obs``/``loss_obs`` the runs that finished, ``lr_diverged`` the LRs of those that did not.
    """

    params: float
    tokens: float
    tokens_per_step: float
    lr: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    lr_obs: np.ndarray
    loss_obs: np.ndarray
    lr_diverged: np.ndarray


def sweep_cells(cells: Sequence[LrCell]) -> Figure:
    """One panel per sweep cell: final loss vs peak LR, observed and the law's posterior.

    Diverged runs have no loss: they are crosses along the top of their panel. The y axis frames
    the observed losses and the band over the finished runs' LRs, not the band's far ends.
    """
    fig, axes = _grid(len(cells), ncols=3, w=3.2, h=2.5)
    for ax, c in zip(axes, cells, strict=True):
        ax.fill_between(c.lr, c.lo, c.hi, color=BLUE, alpha=0.2, lw=0, label="law, 95% credible")
        ax.plot(c.lr, c.mean, color=BLUE, lw=1.4, label="law, posterior mean")
        ax.plot(c.lr_obs, c.loss_obs, "o", color=BLACK, ms=3.5, label="observed final loss")
        if c.lr_diverged.size:
            ax.plot(c.lr_diverged, np.full(c.lr_diverged.size, 0.94), "x", color=VERMILLION, ms=6, mew=1.6,
                    transform=ax.get_xaxis_transform(), clip_on=False, label="diverged (no loss)")
        if c.lr_obs.size:
            inside = (c.lr >= c.lr_obs.min() / 1.2) & (c.lr <= c.lr_obs.max() * 1.2)
            ys = np.concatenate([c.loss_obs, c.lo[inside], c.hi[inside]])
            ys = ys[np.isfinite(ys)]
            lo, hi = ys.min(), ys.max()
            pad = 0.06 * (hi - lo or abs(hi) * 0.01)
            ax.set_ylim(lo - pad, hi + 2.5 * pad)  # room for the crosses at the top
        ax.set_xscale("log")
        _log_axis(ax.xaxis)
        ax.set_xlim(c.lr[0], c.lr[-1])
        ax.set_title(f"N={_sci(c.params)}, D={_sci(c.tokens)}, B={_sci(c.tokens_per_step)}", fontsize=9)
        ax.set_xlabel(f"{LR_LABEL} (log scale)")
        ax.set_ylabel(f"final {LOSS_LABEL}")
    _shared_legend(fig, axes, ncols=4)
    return fig


def _shared_legend(fig: Figure, axes, *, ncols: int) -> None:
    """One legend below the panels, each label once."""
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=ncols, fontsize=8)


@dataclass(frozen=True)
class LrStarPanel:
    """One axis of the lr* plot.

    ``q`` has rows (2.5%, 10%, 50%, 90%, 97.5%) of lr* over ``x`` at the target's other
    settings; ``target_q`` the same at the target. ``cells`` are ``(label, x_line, median_line,
    x_points, empirical_lr*)``: sweep cells' empirical optima with the model's median lr* at
    those cells' other coordinates, drawn dashed.
    """

    x: np.ndarray
    q: np.ndarray
    xlabel: str
    title: str
    target_x: float
    target_q: np.ndarray
    recommended: float | None = None
    cells: tuple = ()


def lr_star_vs(panels: Sequence[LrStarPanel]) -> Figure:
    """Posterior of lr* along each panel's axis (median, 80%/95% bands), target and optima marked."""
    fig = Figure(figsize=(4.75 * len(panels), 4.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, p in zip(axes, panels, strict=True):
        ax.fill_between(p.x, p.q[0], p.q[4], color=BLUE, alpha=0.15, lw=0, label="95% credible")
        ax.fill_between(p.x, p.q[1], p.q[3], color=BLUE, alpha=0.3, lw=0, label="80% credible")
        ax.plot(p.x, p.q[2], color=BLUE, label="median at the target's other settings")
        for i, (label, xl, ml, xp, yp) in enumerate(p.cells):
            c = (ORANGE, VERMILLION, PURPLE, SKY, GREEN)[i % 5]
            ax.plot(xl, ml, color=c, lw=0.9, ls="--")
            ax.plot(xp, yp, "o", color=c, ms=6, mec="white", label=f"empirical optima, {label}")
        t = p.target_q
        ax.errorbar([p.target_x], [t[2]], yerr=[[t[2] - t[0]], [t[4] - t[2]]], fmt="s", color=BLACK,
                    mfc="white", ms=7, capsize=3, label="target lr* (median, 95%)", zorder=4)
        if p.recommended is not None:
            ax.plot([p.target_x], [p.recommended], "*", color=GREEN, ms=12, mec=BLACK, mew=0.5,
                    label=f"recommended {_sci(p.recommended)}", zorder=5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_axis(ax.xaxis)
        _log_axis(ax.yaxis)
        ax.set_xlabel(f"{p.xlabel} (log scale)")
        ax.set_ylabel("optimal peak LR lr* (log scale)")
        ax.set_title(p.title)
    _shared_legend(fig, axes, ncols=3)
    return fig
