"""One training run (`Run`), the runs of a file (`RunSet`), and how a run is built from its rows.

`make_run` turns a run's rows and per-run values into a `Run`: its per-step LR (from its
schedule and peak LR, else interpolated from the logged LR) and its divergence (a non-finite,
non-physical or exploding loss). `lrplan.data` reads and checks the tables and calls it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from lrplan.errors import ScheduleError
from lrplan.schedules import lr_schedule, parse_spec
from lrplan.tables import MAX_STEPS, Cell, cell_error, first_index, show_value

__all__ = ["Run", "RunSet", "make_run", "EXPLODE_FACTOR", "EXPLODE_LOSS"]

#: A finite loss above ``EXPLODE_FACTOR`` times the run's first finite loss marks a divergence.
EXPLODE_FACTOR = 1.5
#: A loss above this value (nats/token; the log of a 485-million-token vocabulary) or <= 0 is
#: not physical: it marks a divergence from its step and is never fitted.
EXPLODE_LOSS = 20.0


@dataclass(frozen=True, eq=False)
class Run:
    """One training run: its logged finite losses, per-step LR and per-run settings.

    Attributes
    ----------
    name : str
        The run id.
    steps : numpy.ndarray
        int64 logged steps with a finite loss, sorted ascending, unique.
    loss : numpy.ndarray
        float64 losses at ``steps``.
    lr : numpy.ndarray or None
        Per-step LR for steps ``1 .. total_steps`` (``lr[i]`` is the LR of step ``i + 1``):
        from ``schedule`` and ``peak_lr`` if both are known, else interpolated from the ``lr``
        column, else None.
    params : float or None
        Non-embedding parameters N.
    tokens_per_step : float or None
        Batch size in tokens; derived from the ``tokens`` column if not given.
    peak_lr : float or None
        From the per-run column, else the largest logged ``lr``, else None.
    warmup_steps : int
        From the per-run column, else from ``warmup=`` in the schedule spec, else 0.
    total_steps : int
        From the per-run column, else the last logged step.
    schedule : str or None
        Schedule spec string, if given.
    diverged : bool
        Whether any logged loss is non-finite, not physical (<= 0 or above ``EXPLODE_LOSS``)
        or explodes (above ``EXPLODE_FACTOR`` times the run's first physical loss). A diverged
        run is still kept.
    diverged_step : int or None
        First step at which it diverged.
    final_only : bool
        Whether the run has a single row (a sweep summary: its step is its last step).
    """

    name: str
    steps: np.ndarray
    loss: np.ndarray
    lr: np.ndarray | None
    params: float | None
    tokens_per_step: float | None
    peak_lr: float | None
    warmup_steps: int
    total_steps: int
    schedule: str | None
    diverged: bool
    diverged_step: int | None
    final_only: bool

    @property
    def final_loss(self) -> float:
        """Last finite loss (nan if none)."""
        return float(self.loss[-1]) if self.loss.size else float("nan")

    @property
    def n_points(self) -> int:
        """Number of logged points with a finite loss."""
        return int(self.steps.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Run):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if a is None or b is None or not np.array_equal(a, b):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # holds arrays: not hashable


@dataclass(frozen=True)
class RunSet:
    """The runs of one file, and one line per thing excluded or changed on the way.

    Runs keep the order in which they first appear in the file. Index by position or by name.
    """

    runs: tuple[Run, ...]
    source: str
    excluded: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self) -> Iterator[Run]:
        return iter(self.runs)

    def __getitem__(self, key: int | str) -> Run:
        if isinstance(key, str):
            for r in self.runs:
                if r.name == key:
                    return r
            raise KeyError(f"no run {key!r} in {self.source}; runs: "
                           + ", ".join(r.name for r in self.runs))
        return self.runs[key]

    @property
    def names(self) -> tuple[str, ...]:
        """Run ids, in file order."""
        return tuple(r.name for r in self.runs)

    def to_frame(self) -> pd.DataFrame:
        """One row per run: its per-run settings, divergence, number of points and final loss."""
        cols = ["run", "params", "tokens_per_step", "peak_lr", "warmup_steps", "total_steps",
                "schedule", "has_lr", "diverged", "diverged_step", "final_only", "n_points",
                "final_loss"]
        rows = [
            {"run": r.name, "params": r.params, "tokens_per_step": r.tokens_per_step,
             "peak_lr": r.peak_lr, "warmup_steps": r.warmup_steps, "total_steps": r.total_steps,
             "schedule": r.schedule, "has_lr": r.lr is not None, "diverged": r.diverged,
             "diverged_step": r.diverged_step, "final_only": r.final_only,
             "n_points": r.n_points, "final_loss": r.final_loss}
            for r in self.runs
        ]
        df = pd.DataFrame(rows, columns=cols)
        for c in ("params", "tokens_per_step", "peak_lr", "final_loss"):
            df[c] = df[c].astype("float64")
        df["diverged_step"] = df["diverged_step"].astype("Int64")
        return df


# --------------------------------------------------------------------------------------------
# Building a run
# --------------------------------------------------------------------------------------------


def _positive(v: Cell | None, col: str, run: str, *, allow_zero: bool = False,
              integer: bool = False) -> float | None:
    if v is None:
        return None
    x = float(v.value)
    ok = math.isfinite(x) and (x >= 0 if allow_zero else x > 0)
    if ok and integer:
        ok = x == round(x)
    if not ok:
        need = ("an integer" if integer else "a number") + (" >= 0" if allow_zero else " > 0")
        raise cell_error(v.file, col, run, v.row, f"must be {need}, got {show_value(v.value)}")
    return x


# --------------------------------------------------------------------------------------------
# Per-step LR
# --------------------------------------------------------------------------------------------


def _interpolate_lr(steps: np.ndarray, lr: np.ndarray, *, total_steps: int, warmup_steps: int,
                    peak_lr: float) -> np.ndarray:
    """Per-step LR (steps 1..total_steps) from logged (step, lr) pairs, lr finite somewhere.

    Linear interpolation between logged steps; the last logged LR is held after the last
    logged step. Before the first logged step s0: with a warmup of W > 0 steps the LR ramps
    as ``peak_lr * s / W`` up to step W and is interpolated from the peak at W to the first
    logged LR at s0 (if s0 <= W, it ramps linearly from 0 to the first logged LR, and the
    warmup's end W is a knot at the peak when no step logs it); with no warmup the first
    logged LR is held.
    """
    ok = np.isfinite(lr)
    xs, ys = steps[ok].astype(np.float64), lr[ok].astype(np.float64)
    if warmup_steps > 0:
        w = float(warmup_steps)
        if xs[0] > w:
            xs, ys = np.r_[0.0, w, xs], np.r_[0.0, peak_lr, ys]
        elif w in xs or xs[-1] < w:
            xs, ys = np.r_[0.0, xs], np.r_[0.0, ys]
        else:  # the warmup ends between two logged steps: at the peak
            before = xs < w
            xs = np.r_[0.0, xs[before], w, xs[~before]]
            ys = np.r_[0.0, ys[before], peak_lr, ys[~before]]
    return np.interp(np.arange(1, total_steps + 1, dtype=np.float64), xs, ys)


def make_run(name: str, rows: np.ndarray, *, file: str, step: np.ndarray, loss: np.ndarray,
             lr_col: np.ndarray | None, tokens: np.ndarray | None,
             per: dict[str, Cell | None]) -> tuple[Run, list[str]]:
    """A `Run` from its rows (0-based indices into the columns) and its per-run values, and notes.

    ``step``, ``loss``, ``lr_col`` and ``tokens`` are the whole table's checked columns; see
    `lrplan.data.load_runs` for how the per-step LR and the divergence are derived.
    """
    notes: list[str] = []
    order = rows[np.argsort(step[rows], kind="stable")]
    st, ls = step[order], loss[order]
    last_step = int(st[-1])

    params = _positive(per["params"], "params", name)
    tps = _positive(per["tokens_per_step"], "tokens_per_step", name)
    peak = _positive(per["peak_lr"], "peak_lr", name)
    total_f = _positive(per["total_steps"], "total_steps", name, integer=True)
    warmup_f = _positive(per["warmup_steps"], "warmup_steps", name, allow_zero=True,
                         integer=True)

    spec_v = per["schedule"]
    spec = None if spec_v is None else str(spec_v.value)
    if spec is not None:
        try:
            _, spec_keys = parse_spec(spec)
        except ScheduleError as e:
            raise cell_error(spec_v.file, "schedule", name, spec_v.row, str(e), "") from None
        if "warmup" in spec_keys:
            w = int(spec_keys["warmup"])
            if warmup_f is None:
                warmup_f = float(w)
            elif int(warmup_f) != w:
                wv = per["warmup_steps"]
                raise cell_error(spec_v.file, "schedule", name, spec_v.row,
                                 f"warmup={w} in the spec disagrees with warmup_steps "
                                 f"{int(warmup_f)} (row {wv.row} of {wv.file})",
                                 "drop one of them or make them agree")

    if total_f is not None and total_f > MAX_STEPS:
        tv = per["total_steps"]
        raise cell_error(tv.file, "total_steps", name, tv.row,
                         f"{show_value(total_f)} is beyond {MAX_STEPS:.0e} optimizer steps",
                         "give the planned number of optimizer updates (not tokens)")
    total = int(total_f) if total_f is not None else last_step
    if total < last_step:
        tv = per["total_steps"]
        raise cell_error(tv.file, "total_steps", name, tv.row,
                         f"{total} is before the last logged step {last_step}",
                         "give the planned number of optimizer steps of the run (>= every logged step)")
    warmup = int(warmup_f) if warmup_f is not None else 0
    if warmup >= total:
        wv = per["warmup_steps"]
        wfile, wrow = (wv.file, wv.row) if wv is not None else (spec_v.file, spec_v.row)
        raise cell_error(wfile, "warmup_steps", name, wrow,
                         f"{warmup} warmup steps is not below total_steps {total}",
                         "give a warmup shorter than the run")

    if tps is None and tokens is not None:
        tok = tokens[order]
        has = np.flatnonzero(np.isfinite(tok))
        if has.size:
            k = has[-1]
            tps = float(tok[k]) / float(st[k])
            if not tps > 0:
                raise cell_error(file, "tokens", name, int(order[k]) + 1,
                                 f"{show_value(tok[k])} cumulative tokens at step {int(st[k])} gives no "
                                 "tokens_per_step > 0")

    run_lr = lr_col[order] if lr_col is not None else None
    has_lr = run_lr is not None and bool(np.isfinite(run_lr).any())
    if peak is None and has_lr:
        peak = float(np.nanmax(run_lr))
        if not peak > 0:
            raise cell_error(file, "lr", name, int(order[0]) + 1, "every logged LR of the run is 0",
                             "give the LR actually used, or a peak_lr and schedule")

    lr: np.ndarray | None = None
    if spec is not None and peak is not None:
        try:
            lr = lr_schedule(spec, steps=total, peak_lr=peak, warmup_steps=warmup)
        except ScheduleError as e:
            raise cell_error(spec_v.file, "schedule", name, spec_v.row, str(e), "") from None
        if has_lr:
            ok = np.isfinite(run_lr)
            dev = np.abs(run_lr[ok] - lr[st[ok] - 1]) / peak
            if dev.max() > 0.01:
                k = int(np.argmax(dev))
                notes.append(f"run {name}: the logged lr differs from schedule {spec!r} by up "
                             f"to {100 * dev[k]:.1f}% of the peak (step {int(st[ok][k])}); "
                             "the schedule is used")
    elif has_lr:
        lr = _interpolate_lr(st, run_lr, total_steps=total, warmup_steps=warmup,
                             peak_lr=peak)
    elif spec is not None:
        notes.append(f"run {name}: schedule {spec!r} given but no peak_lr (and no lr column); "
                     "its per-step LR is unknown")

    finite = np.isfinite(ls)
    # <= 0 or above the log of any vocabulary: not a loss in nats/token, never fitted
    unphysical = finite & ((ls <= 0) | (ls > EXPLODE_LOSS))
    if finite.sum() >= 3 and (ls[finite] > EXPLODE_LOSS).all() and ls[finite][-1] < ls[finite][0]:
        k = first_index(finite)
        raise cell_error(file, "loss", name, int(order[k]) + 1,
                         f"every loss of the run is above {EXPLODE_LOSS:g} and falls ({ls[finite][0]:.4g} "
                         f"to {ls[finite][-1]:.4g}): this looks like perplexity, not nats/token",
                         "give the loss as log(perplexity) in nats/token (bits/token times ln 2)")
    physical = finite & ~unphysical
    first_loss = ls[physical][0] if physical.any() else np.nan
    exploded = physical & (ls > EXPLODE_FACTOR * first_loss)
    bad = ~physical | exploded
    diverged = bool(bad.any())
    div_step = int(st[first_index(bad)]) if diverged else None
    n_nonfinite = int((~finite).sum())
    if n_nonfinite:
        notes.append(f"run {name}: {n_nonfinite} row(s) with non-finite loss (from step "
                     f"{int(st[first_index(~finite)])}) not fitted; treated as divergence, run kept")
    if unphysical.any():
        k = first_index(unphysical)
        notes.append(f"run {name}: {int(unphysical.sum())} row(s) with a loss <= 0 or above "
                     f"{EXPLODE_LOSS:g} nats/token (first {ls[k]:.4g} at step {int(st[k])}) not "
                     "fitted; treated as divergence from that step, run kept")
    if exploded.any():
        k = first_index(exploded)
        notes.append(f"run {name}: loss exploded at step {int(st[k])} ({ls[k]:.4g} > "
                     f"{EXPLODE_FACTOR} x first loss {first_loss:.4g}); "
                     "treated as divergence, run kept")
    finite = physical

    run = Run(
        name=name, steps=st[finite].astype(np.int64), loss=ls[finite].astype(np.float64),
        lr=lr, params=params, tokens_per_step=tps, peak_lr=peak, warmup_steps=warmup,
        total_steps=total, schedule=spec, diverged=diverged, diverged_step=div_step,
        final_only=rows.size == 1,
    )
    return run, notes
