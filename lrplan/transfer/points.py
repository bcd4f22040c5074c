"""The transfer model's inputs: runs -> observation points -> cells and slices -> `TransferData`.

A run gives its final loss and, when it logged a curve, points from its annealed tail
(`transfer_points`); a diverged run one row that says so. Points are grouped into cells (runs
sharing size, horizon and batch) and slices (cells sharing two of the three) for the model's
crossed cell effects, put in normalised units (`normalise`, `transfer_data`), and checked for
what the runs cannot identify (`identifiability_notes`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from lrplan.data import Run, RunSet
from lrplan.errors import FitError
from lrplan.schedules import lr_schedule, unannealed_fraction
from lrplan.transfer.model import TransferData

__all__ = ["MAX_UNANNEALED", "POINTS_PER_CURVE", "POINT_COLUMNS", "ANNEAL_SPREAD", "MIN_SWEPT_CELLS",
           "MIN_CELL_LRS", "transfer_points", "points_from_frame", "normalise", "swept_cells",
           "slice_keys", "dense_cells", "slice_labels", "transfer_data", "identifiability_notes"]

#: Points taken from a logged curve besides its last, spread over its nearly annealed tail.
POINTS_PER_CURVE = 6
#: A logged point counts as a shorter run's final loss only once the run is this close to
#: annealed (lagged LR / peak). Earlier points have taken more LR area than a finished run of
#: that length and annealed less; the law has no term for the first, and on real curves (the
#: (Mis)Fitting checkpoints) using them turned lr*'s horizon exponent positive.
MAX_UNANNEALED = 0.3

#: The annealing term is fitted only when the points' unannealed fractions span this much.
ANNEAL_SPREAD = 0.1

#: Cell-level effects (each cell's own lr* and level) are fitted when at least this many cells
#: have runs at MIN_CELL_LRS or more peak LRs: only then can a cell's miss be told from the law's.
MIN_SWEPT_CELLS = 3
MIN_CELL_LRS = 3

POINT_COLUMNS = ("run", "params", "tokens", "tokens_per_step", "lr", "loss", "diverged",
                 "unannealed", "final")


# ---------------------------------------------------------------- runs -> points


def _require(run: Run, source: str) -> None:
    missing = [c for c in ("params", "tokens_per_step", "peak_lr") if getattr(run, c) is None]
    if missing:
        raise FitError(
            f"{source}: run {run.name} has no {', '.join(missing)}; the transfer model needs "
            "each run's params, tokens_per_step and peak_lr (columns of the runs file or --meta)"
        )


def _curve_steps(run: Run, unannealed: np.ndarray | None) -> np.ndarray:
    """Logged steps used as points: up to POINTS_PER_CURVE from the annealed tail, and the last."""
    last = run.steps[-1]
    if unannealed is None:
        return np.array([last])
    w = unannealed[np.minimum(run.steps, unannealed.size) - 1]
    inner = run.steps[(w <= MAX_UNANNEALED) & (run.steps > run.warmup_steps) & (run.steps < last)]
    if inner.size == 0:
        return np.array([last])
    picked = inner[np.unique(np.linspace(0, inner.size - 1, POINTS_PER_CURVE).round().astype(int))]
    return np.append(picked, last)


def transfer_points(runs: RunSet) -> tuple[pd.DataFrame, list[str]]:
    """One row per observation the transfer model sees, and notes on what was not used.

    A non-diverged run gives its last logged loss and, when it logged a curve with a known LR,
    a few earlier points from its annealed tail (each at its own token count, with how
    unannealed the run was there).
    A diverged run gives one row with ``loss`` NaN and ``diverged`` True.
    """
    rows, notes = [], []
    unknown_schedule = []
    for r in runs:
        _require(r, runs.source)
        w_all = unannealed_fraction(r.lr) if r.lr is not None else None
        if r.lr is None:
            unknown_schedule.append(r.name)
        base = dict(run=r.name, params=r.params, tokens_per_step=r.tokens_per_step, lr=r.peak_lr)
        if r.diverged or not r.loss.size:
            rows.append({**base, "tokens": r.total_steps * r.tokens_per_step, "loss": np.nan,
                         "diverged": True, "unannealed": np.nan, "final": True})
            continue
        steps = _curve_steps(r, w_all)
        loss = r.loss[np.searchsorted(r.steps, steps)]
        for i, (s, y) in enumerate(zip(steps, loss, strict=True)):
            w = float(w_all[min(s, w_all.size) - 1]) if w_all is not None else np.nan
            rows.append({**base, "tokens": s * r.tokens_per_step, "loss": float(y),
                         "diverged": False, "unannealed": w, "final": i == steps.size - 1})
    if unknown_schedule:
        notes.append(
            f"{len(unknown_schedule)} run(s) have no LR schedule (e.g. {unknown_schedule[0]}); "
            "their final losses are taken as fully annealed, and so is the target's"
        )
    points = pd.DataFrame(rows, columns=list(POINT_COLUMNS))
    if (~points["diverged"]).sum() < 3:
        raise FitError(f"{runs.source}: the transfer model needs at least 3 runs that did not "
                       "diverge")
    return points, notes


def points_from_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Points table of final-only runs given as a runs-format frame (simulations, sweeps).

    Rows need ``run, loss, params, tokens_per_step, peak_lr, total_steps``; a NaN loss is a
    diverged run. Runs with a ``schedule`` get its unannealed fraction at the end; others NaN
    (unknown: treated as annealed).
    """
    w = []
    for r in df.itertuples():
        spec = getattr(r, "schedule", None)
        if isinstance(spec, str):
            shape = lr_schedule(spec, steps=int(r.total_steps), peak_lr=1.0,
                                warmup_steps=int(getattr(r, "warmup_steps", 0)))
            w.append(float(unannealed_fraction(shape)[-1]))
        else:
            w.append(np.nan)
    loss = df["loss"].to_numpy(float)
    return pd.DataFrame({
        "run": df["run"].astype(str).to_numpy(), "params": df["params"].to_numpy(float),
        "tokens": df["total_steps"].to_numpy(float) * df["tokens_per_step"].to_numpy(float),
        "tokens_per_step": df["tokens_per_step"].to_numpy(float), "lr": df["peak_lr"].to_numpy(float),
        "loss": loss, "diverged": ~np.isfinite(loss), "unannealed": np.where(np.isfinite(loss), w, np.nan),
        "final": True,
    }, columns=list(POINT_COLUMNS))


# ---------------------------------------------------------------- cells and model inputs


def normalise(points: pd.DataFrame) -> tuple[float, float, float, float]:
    """Reference size, tokens and batch (geometric means) and LR (median of non-diverged runs)."""
    ok = ~points["diverged"].to_numpy(bool)
    gm = lambda c: float(np.exp(np.log(points[c].to_numpy(float)).mean()))  # noqa: E731
    return gm("params"), gm("tokens"), gm("tokens_per_step"), \
        float(np.exp(np.median(np.log(points.loc[ok, "lr"].to_numpy(float)))))


def _cell_columns(points: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Each point's size, horizon (its run's last token count) and batch, as labels."""
    horizon = points.groupby("run", sort=False)["tokens"].transform("max")
    return (points["params"].map("{:.6g}".format), horizon.map("{:.6g}".format),
            points["tokens_per_step"].map("{:.6g}".format))


def swept_cells(points: pd.DataFrame) -> pd.Series:
    """Each point's cell: its run's size, final token count and batch, as a label.

    Points of one logged curve share its run's cell (its horizon is the run's, not the point's).
    """
    n, d, b = _cell_columns(points)
    return n + "|" + d + "|" + b


def slice_keys(params, tokens, tokens_per_step) -> tuple[str, str, str]:
    """A cell's slice of each kind in `SLICE_KINDS` (the labels of its other two dimensions)."""
    n, d, b = (f"{float(x):.6g}" for x in (params, tokens, tokens_per_step))
    return f"{d}|{b}", f"{n}|{b}", f"{n}|{d}"


def dense_cells(points: pd.DataFrame) -> bool:
    """Whether enough cells are swept over enough LRs to tell a cell's miss from the law's."""
    ok = points[~points["diverged"] & points["final"]]
    n_lrs = ok.groupby(swept_cells(points)[ok.index])["lr"].nunique()
    return bool((n_lrs >= MIN_CELL_LRS).sum() >= MIN_SWEPT_CELLS)


def slice_labels(points: pd.DataFrame) -> tuple[tuple[str, ...], ...]:
    """The fitted slices of each kind, in the order of the model's ``z_*_<kind>`` sites."""
    n, d, b = _cell_columns(points)
    return tuple(tuple(pd.factorize(k)[1]) for k in (d + "|" + b, n + "|" + b, n + "|" + d))


def transfer_data(points: pd.DataFrame, n0, d0, b0, lr_ref,
                  cell_effects: bool = False) -> tuple[TransferData, np.ndarray]:
    """Model inputs from the points table, and each loss point's run index (for LOO)."""
    runs = pd.unique(points["run"])
    run_index = {r: i for i, r in enumerate(runs)}
    per_run = points.groupby("run", sort=False).last().loc[runs]
    ok = points[~points["diverged"]]
    counts = ok.groupby("run", sort=False).size()
    curve_runs = [r for r in runs if counts.get(r, 0) > 1]
    slot = {r: i for i, r in enumerate(curve_runs)}
    x = lambda df, c, ref: np.log(df[c].to_numpy(float) / ref)  # noqa: E731
    data = TransferData(
        x_n=x(ok, "params", n0), x_d=x(ok, "tokens", d0), x_b=x(ok, "tokens_per_step", b0),
        # a run of unknown schedule counts as annealed, and so does the target (see `plan`)
        log_lr=x(ok, "lr", lr_ref), unannealed=np.nan_to_num(ok["unannealed"].to_numpy(float)),
        loss=ok["loss"].to_numpy(float),
        curve_slot=np.array([slot.get(r, len(curve_runs)) for r in ok["run"]], dtype=np.int64),
        n_curve_runs=len(curve_runs),
        run_x_n=x(per_run, "params", n0), run_x_d=x(per_run, "tokens", d0),
        run_x_b=x(per_run, "tokens_per_step", b0), run_log_lr=x(per_run, "lr", lr_ref),
        run_diverged=per_run["diverged"].to_numpy(bool).astype(np.float64),
        loss_ref=float(np.median(ok.loc[ok["final"], "loss"] if ok["final"].any() else ok["loss"])),
        # With one batch per size (a ladder that scales the batch with the model), a batch term
        # in the loss is the size term again: the two trade along ridges NUTS does not cross
        # (OLMo's ladder, seeds 0 and 1: R-hat 2.3 and 1.2 with it, 1.01 without).
        batch_term=_batch_varies_at_a_size(points),
        anneal_term=bool(np.ptp(np.nan_to_num(ok["unannealed"].to_numpy(float))) >= ANNEAL_SPREAD),
    )
    if cell_effects:
        n, d, b = _cell_columns(points)
        ok_mask = ~points["diverged"].to_numpy(bool)
        point_slice, run_slice, n_slices = [], [], []
        for key in (d + "|" + b, n + "|" + b, n + "|" + d):
            codes, labels = pd.factorize(key)
            per_run = pd.Series(codes, index=points.index).groupby(points["run"], sort=False).last()
            point_slice.append(codes[ok_mask])
            run_slice.append(per_run.loc[runs].to_numpy())
            n_slices.append(len(labels))
        data = replace(data, point_slice=np.array(point_slice, dtype=np.int64),
                       run_slice=np.array(run_slice, dtype=np.int64), n_slices=tuple(n_slices))
    return data, np.array([run_index[r] for r in ok["run"]], dtype=np.int64)


def _batch_varies_at_a_size(points: pd.DataFrame) -> bool:
    """Whether some model size has runs at two batches (else batch and size move together)."""
    return bool(points.groupby("params")["tokens_per_step"].nunique().max() > 1)


def identifiability_notes(points: pd.DataFrame) -> list[str]:
    """Notes on what the runs leave to the priors: one size, horizon or batch; no LR sweep."""
    finals = points[points["final"]]
    notes = []
    for col, what, src in (("params", "size", "the prior (Porian et al., Li et al.)"),
                           ("tokens", "horizon", "the prior (Bjorck et al.)"),
                           ("tokens_per_step", "batch", "the prior (square-root rule)")):
        if finals[col].nunique() < 2:
            notes.append(f"the runs have one {what}: lr*'s {what} exponent comes from {src}")
    if finals["tokens_per_step"].nunique() > 1 and not _batch_varies_at_a_size(finals):
        notes.append("the runs' batch changes only with their size: lr*'s batch exponent comes "
                     "mostly from the prior (square-root rule), and the loss is taken not to depend "
                     "on the batch at a given size and token count")
    ok = finals[~finals["diverged"]]
    if len(ok) and ok.groupby(["params", "tokens", "tokens_per_step"])["lr"].nunique().max() < 2:
        notes.append("no (size, tokens, batch) has runs at two or more peak LRs: how the loss "
                     "depends on the LR, and so lr*, rests on the priors; sweep the LR at one "
                     "size (lrplan next ranks such sweeps)")
    return notes


