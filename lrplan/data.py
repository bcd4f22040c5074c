"""Load and validate runs files (`lrplan.importers` turns tracker logs into them).

A runs file is CSV, Parquet or JSONL (chosen by extension) in long format, one row per logged
measurement:

- required: ``run`` (id), ``step`` (integer >= 1), ``loss`` (float, nats/token; NaN, inf, empty,
  <= 0 or above ``EXPLODE_LOSS`` marks a diverged step);
- optional, per step: ``lr`` (LR in effect at that step), ``tokens`` (cumulative tokens);
- optional, per run (constant within a run, or from a metadata file joined on ``run``):
  ``params``, ``tokens_per_step``, ``peak_lr``, ``total_steps``, ``warmup_steps``, ``schedule``,
  ``parent``.

A run with a ``parent`` branches from that run (a WSD cooldown logged as its own segment): the
parent's rows before the branch's first logged step are the branch's too, and the branch takes
the parent's ``params``, ``tokens_per_step``, ``peak_lr`` and ``warmup_steps`` where it gives
none. Branches of branches are followed; a note says how many rows each branch took.

Every problem is a `DataError` of one line naming the file, the column, the run and the 1-based
data row (the header is not counted; for JSONL, the n-th record) and saying how to fix it.
Nothing is dropped silently: rows with a non-finite loss are not part of a `Run`'s curve, but
the run is kept, marked diverged, and `RunSet.excluded` says how many rows of which run were
left out. Rows logged during the warmup are kept; the model layer decides what to fit.

Metadata files
--------------
A metadata file (same formats) has a ``run`` column and any of the per-run columns, one row
per run. A run of the metadata file without rows in the runs file, and a run of the runs file
without a metadata row, are reported in `RunSet.excluded` rather than refused (the run's
settings then come from the runs file or stay unknown). A per-run column may be in both files;
where both give a value for a run, the values must agree. A run listed twice in the metadata
file is an error.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lrplan.errors import DataError, ScheduleError
from lrplan.schedules import lr_schedule, parse_spec

__all__ = [
    "Run",
    "RunSet",
    "load_runs",
    "runs_from_frame",
    "read_table",
    "REQUIRED_COLUMNS",
    "PER_STEP_COLUMNS",
    "PER_RUN_COLUMNS",
    "EXTENSIONS",
    "EXPLODE_FACTOR",
    "EXPLODE_LOSS",
    "MAX_STEPS",
]

REQUIRED_COLUMNS = ("run", "step", "loss")
PER_STEP_COLUMNS = ("lr", "tokens")
PER_RUN_COLUMNS = ("params", "tokens_per_step", "peak_lr", "total_steps", "warmup_steps",
                   "schedule", "parent")
_TEXT_PER_RUN = ("schedule", "parent")
_NUMERIC_PER_RUN = tuple(c for c in PER_RUN_COLUMNS if c not in _TEXT_PER_RUN)
#: What a branch takes from its parent when it does not give it: the model, batch and warmup.
_INHERITED = ("params", "tokens_per_step", "peak_lr", "warmup_steps")
_INTEGER_PER_RUN = ("total_steps", "warmup_steps")

#: Most optimizer steps a run may have (a per-step LR of that many float64 takes 800 MB).
MAX_STEPS = 100_000_000

#: File extensions accepted for runs and metadata files, and the reader each one selects.
EXTENSIONS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
              ".ndjson": "jsonl"}

#: A finite loss above ``EXPLODE_FACTOR`` times the run's first finite loss marks a divergence.
EXPLODE_FACTOR = 1.5
#: A loss above this value (nats/token; the log of a 485-million-token vocabulary) or <= 0 is
#: not physical: it marks a divergence from its step and is never fitted.
EXPLODE_LOSS = 20.0

#: Spellings of a missing value in text columns.
_MISSING_TEXT = frozenset({"", "na", "n/a", "nan", "null", "none"})

_FIX = {
    "step": "write each step as an integer >= 1 (the number of optimizer updates done)",
    "loss": "write the loss as a number > 0 (leave it empty or write NaN for a diverged step)",
    "lr": "write the LR as a number >= 0, or leave it empty where it was not logged",
    "tokens": "write the cumulative tokens as a number >= 0, or leave it empty",
    "params": "give the non-embedding parameter count as a number > 0 (e.g. 1.2e8)",
    "tokens_per_step": "give the batch size in tokens as a number > 0",
    "peak_lr": "give the peak LR as a number > 0",
    "total_steps": "give the planned number of optimizer steps as an integer >= 1",
    "warmup_steps": "give the number of warmup steps as an integer >= 0",
    "schedule": "give a schedule spec such as 'cosine:final=0.1' (see `lrplan schedule --help`)",
}


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


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
# Reading tables
# --------------------------------------------------------------------------------------------


def _accepted() -> str:
    return ", ".join(EXTENSIONS)


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a CSV, Parquet or JSONL table, chosen by the file's extension.

    Parameters
    ----------
    path : str or path-like
        A ``.csv``, ``.parquet`` / ``.pq`` or ``.jsonl`` / ``.ndjson`` file.

    Returns
    -------
    pandas.DataFrame
        The rows in file order with a fresh 0-based index; ``run`` and ``schedule`` are read
        as text from CSV files.

    Raises
    ------
    DataError
        If the extension is not accepted, the file does not exist or cannot be parsed.
    """
    p = Path(path)
    kind = EXTENSIONS.get(p.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown file type {p.suffix or '(no extension)'!r}; "
                        f"accepted extensions: {_accepted()}")
    if not p.exists():
        raise DataError(f"{path}: no such file; check the path")
    if p.is_file() and p.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; a runs file needs a header with "
                        "run, step and loss and one row per logged measurement")
    try:
        if kind == "csv":
            df = pd.read_csv(p, dtype={"run": str, "schedule": str}, skipinitialspace=True)
        elif kind == "parquet":
            df = pd.read_parquet(p)
        else:
            df = _read_jsonl(p, str(path))
    except DataError:
        raise
    except (ValueError, OSError, ImportError) as e:  # pandas' parser errors are ValueErrors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: cannot be read as {kind} ({first}); check that the file "
                        f"is valid {kind}") from None
    df.columns = [str(c).strip() for c in df.columns]
    return df.reset_index(drop=True)


def _read_jsonl(p: Path, label: str) -> pd.DataFrame:
    records = []
    with open(p, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{label}: line {lineno}: not valid JSON ({e.msg}); write one "
                                "JSON object per line") from None
            if not isinstance(rec, dict):
                raise DataError(f"{label}: line {lineno}: a {type(rec).__name__}, not a JSON "
                                "object; write one object per line, e.g. "
                                '{"run": "a", "step": 100, "loss": 3.2}')
            records.append(rec)
    return pd.DataFrame.from_records(records)


# --------------------------------------------------------------------------------------------
# Column checks
# --------------------------------------------------------------------------------------------


def _where(file: str, col: str | None = None, run: str | None = None,
           row: int | None = None) -> str:
    parts = []
    if col is not None:
        parts.append(f"column {col!r}")
    if run is not None:
        parts.append(f"run {run!r}")
    if row is not None:
        parts.append(f"row {row}")
    return f"{file}: " + ", ".join(parts) if parts else file


def _fail(file: str, col: str | None, run: str | None, row: int | None, problem: str,
          fix: str | None = None) -> DataError:
    fix = _FIX.get(col or "") if fix is None else fix
    return DataError(f"{_where(file, col, run, row)}: {problem}" + (f"; {fix}" if fix else ""))


def _is_missing(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and v.strip().lower() in _MISSING_TEXT


def _numeric(df: pd.DataFrame, col: str, file: str, runs: np.ndarray | None) -> np.ndarray:
    """Column ``col`` as float64; missing -> nan; text that is no number -> DataError."""
    raw = df[col]
    if pd.api.types.is_bool_dtype(raw):
        raise _fail(file, col, None, None, "holds true/false values, not numbers")
    if pd.api.types.is_numeric_dtype(raw):
        return raw.to_numpy(dtype=np.float64, na_value=np.nan)
    out = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    for i in np.flatnonzero(np.isnan(out)):
        v = raw.iloc[i]
        if _is_missing(v):
            continue
        try:
            if isinstance(v, bool):
                raise ValueError
            out[i] = float(v.strip() if isinstance(v, str) else v)
        except (TypeError, ValueError):
            run = None if runs is None else str(runs[i])
            raise _fail(file, col, run, i + 1, f"{_show(v)} is not a number") from None
    return out


def _show(v: Any) -> str:
    """A value for a message: numbers compactly (1e+08, 0.001), text quoted."""
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return f"{float(v):.12g}"
    return repr(v)


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


# --------------------------------------------------------------------------------------------
# Per-run values
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Value:
    """A per-run value and where it came from, for messages."""

    value: Any
    file: str
    row: int  # 1-based data row


def _values_in_runs_file(col: str, values: np.ndarray | pd.Series, rows: np.ndarray, run: str,
                         file: str) -> _Value | None:
    """The one value a per-run column takes within a run (rows: 0-based, in file order)."""
    if isinstance(values, np.ndarray) and values.dtype == np.float64:  # numeric: vectorised
        v = values[rows]
        present = np.flatnonzero(~np.isnan(v))
        if present.size == 0:
            return None
        first = v[present[0]]
        differ = present[~np.isclose(v[present], first, rtol=1e-9, atol=0.0, equal_nan=True)]
        if differ.size == 0:
            return _Value(float(first), file, int(rows[present[0]]) + 1)
        rows = rows[np.r_[present[0], differ[0]]]  # report the first disagreement below
    found: _Value | None = None
    for i in rows:
        v = values[i]
        if _is_missing(v):
            continue
        if isinstance(v, str):
            v = v.strip()
        if found is None:
            found = _Value(v, file, int(i) + 1)
        elif not _same(found.value, v):
            raise _fail(file, col, run, int(i) + 1,
                        f"value {_show(v)} differs from {_show(found.value)} in row {found.row}; a "
                        "per-run column must be constant within a run",
                        "fix the run's rows or give the value once in a metadata file (--meta)")
    return found


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return str(a).strip() == str(b).strip()
    return bool(np.isclose(float(a), float(b), rtol=1e-9, atol=0.0))


def _positive(v: _Value | None, col: str, run: str, *, allow_zero: bool = False,
              integer: bool = False) -> float | None:
    if v is None:
        return None
    x = float(v.value)
    ok = math.isfinite(x) and (x >= 0 if allow_zero else x > 0)
    if ok and integer:
        ok = x == round(x)
    if not ok:
        need = ("an integer" if integer else "a number") + (" >= 0" if allow_zero else " > 0")
        raise _fail(v.file, col, run, v.row, f"must be {need}, got {_show(v.value)}")
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


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_runs(path: str | os.PathLike[str], *,
              meta: str | os.PathLike[str] | None = None) -> RunSet:
    """Load a runs file, and optionally a per-run metadata file, into a validated `RunSet`.

    Parameters
    ----------
    path : str or path-like
        Runs file: ``.csv``, ``.parquet`` / ``.pq`` or ``.jsonl`` / ``.ndjson``, long format
        (see the module docstring for the columns).
    meta : str or path-like, optional
        Metadata file with a ``run`` column and per-run columns, joined on ``run``.

    Returns
    -------
    RunSet
        One `Run` per run id, in order of first appearance, and the notes of what was left
        out of the curves (non-finite losses) or could not be matched (metadata).

    Raises
    ------
    DataError
        On any malformed input; one line naming the file, column, run and row, and the fix.

    Notes
    -----
    Per-step LR: if ``schedule`` and ``peak_lr`` are known (``peak_lr`` possibly taken from
    the largest logged ``lr``), ``lr_schedule(schedule, steps=total_steps, peak_lr=peak_lr,
    warmup_steps=warmup_steps)``; a logged ``lr`` column that disagrees with it by more than
    1% of the peak is reported in ``excluded``. Otherwise, if the ``lr`` column has finite
    values for the run, their linear interpolation (see `_interpolate_lr`). Otherwise None.

    Divergence: a run is diverged at the first step whose loss is non-finite, not physical
    (<= 0 or above ``EXPLODE_LOSS``), or above ``EXPLODE_FACTOR`` times its first physical
    loss. Rows with a non-finite or non-physical loss are not in ``Run.steps`` (each such run
    gets a note); exploding physical losses are kept. A run of three or more losses all above
    ``EXPLODE_LOSS`` that fall is refused as perplexity, and a file whose every loss is <= 0
    as a log-likelihood. Diverged runs are kept: they tell the planner the LR was too high.
    """
    return runs_from_frame(read_table(path), source=str(path), meta=meta)


def runs_from_frame(df: pd.DataFrame, *, source: str,
                    meta: str | os.PathLike[str] | None = None) -> RunSet:
    """Validate a runs table already in memory, as `load_runs` does a file.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows in the runs-file layout, with a 0-based index in row order.
    source : str
        What the messages call the table (a file name, or where it was imported from).
    meta : str or path-like, optional
        Metadata file joined on ``run``.

    Returns
    -------
    RunSet
        As `load_runs`.
    """
    file = source
    df = df.reset_index(drop=True)
    if df.empty:
        raise DataError(f"{file}: the file has no rows; a runs file needs one row per logged "
                        "measurement with run, step and loss")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{file}: missing column{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(repr(c) for c in missing)} (found: "
                        f"{', '.join(repr(c) for c in df.columns)}); a runs file needs the "
                        "columns run, step and loss, one row per logged measurement")
    notes: list[str] = []
    unknown = [c for c in df.columns
               if c not in REQUIRED_COLUMNS + PER_STEP_COLUMNS + PER_RUN_COLUMNS]
    if unknown:
        notes.append(f"{file}: column{'s' if len(unknown) > 1 else ''} "
                     f"{', '.join(unknown)} not used by lrplan")

    run_raw = df["run"]
    missing_run = run_raw.map(_is_missing).to_numpy(dtype=bool)
    if missing_run.any():
        raise _fail(file, "run", None, _first(missing_run) + 1, "empty run id",
                    "give every row the id of the run it belongs to")
    runs_col = np.array([str(v).strip() for v in run_raw], dtype=object)

    step = _numeric(df, "step", file, runs_col)
    bad = ~np.isfinite(step) | (step < 1) | (step != np.round(step))
    if bad.any():
        i = _first(bad)
        shown = "empty" if np.isnan(step[i]) else _show(df["step"].iloc[i])
        raise _fail(file, "step", runs_col[i], i + 1, f"{shown} is not an integer >= 1")
    bad = step > MAX_STEPS
    if bad.any():
        i = _first(bad)
        raise _fail(file, "step", runs_col[i], i + 1,
                    f"{_show(step[i])} is beyond {MAX_STEPS:.0e} optimizer steps",
                    "give the number of optimizer updates (not tokens or samples)")
    step_i = step.astype(np.int64)

    loss = _numeric(df, "loss", file, runs_col)
    finite = np.isfinite(loss)
    if finite.any() and (loss[finite] <= 0).all():
        i = _first(finite)
        raise _fail(file, "loss", runs_col[i], i + 1,
                    f"{_show(loss[i])} is not > 0, and neither is any other loss of the file",
                    "give the cross-entropy loss in nats/token (> 0), not a log-likelihood or a "
                    "score where higher is better")

    optional = {}
    for col, what in (("lr", "a finite LR"), ("tokens", "a finite token count")):
        if col not in df.columns:
            optional[col] = None
            continue
        x = optional[col] = _numeric(df, col, file, runs_col)
        bad = (x < 0) | np.isinf(x)
        if bad.any():
            i = _first(bad)
            raise _fail(file, col, runs_col[i], i + 1, f"{_show(x[i])} is not {what} >= 0")
    lr_col, tokens = optional["lr"], optional["tokens"]

    keys = pd.DataFrame({"run": runs_col, "step": step_i})
    dup = keys.duplicated(keep="first").to_numpy()
    if dup.any():
        i = _first(dup)
        j = _first((runs_col == runs_col[i]) & (step_i == step_i[i]))
        raise _fail(file, "step", runs_col[i], i + 1,
                    f"step {step_i[i]} of this run is already in row {j + 1}",
                    "keep one row per (run, step)")

    # per-run columns of the runs file, parsed column by column (errors name their row)
    in_file: dict[str, np.ndarray | pd.Series] = {}
    for c in PER_RUN_COLUMNS:
        if c in df.columns:
            in_file[c] = (_numeric(df, c, file, runs_col) if c in _NUMERIC_PER_RUN
                          else df[c].to_numpy(dtype=object))

    order_of_runs = list(dict.fromkeys(runs_col))
    meta_values, meta_notes = _read_meta(meta, order_of_runs) if meta is not None else ({}, [])
    notes.extend(meta_notes)

    groups = pd.Series(np.arange(len(df))).groupby(runs_col, sort=False).indices
    rows_of = {name: np.asarray(groups[name]) for name in order_of_runs}  # 0-based, file order
    settings = {}
    for name, rows in rows_of.items():
        per: dict[str, _Value | None] = {}
        for c in PER_RUN_COLUMNS:
            from_file = (_values_in_runs_file(c, in_file[c], rows, name, file)
                         if c in in_file else None)
            from_meta = meta_values.get(name, {}).get(c)
            if from_file is not None and from_meta is not None and not _same(
                    from_file.value, from_meta.value):
                raise _fail(from_meta.file, c, name, from_meta.row,
                            f"{_show(from_meta.value)} differs from {_show(from_file.value)} in row "
                            f"{from_file.row} of {file}",
                            "give the value in one file, or make them agree")
            per[c] = from_meta if from_meta is not None else from_file
        settings[name] = per
    runs = []
    for name in order_of_runs:
        rows, per = _branch(name, rows_of, settings, step_i, file, notes)
        run, run_notes = _make_run(name, rows, file=file, step=step_i, loss=loss, lr_col=lr_col,
                                   tokens=tokens, per=per)
        runs.append(run)
        notes.extend(run_notes)
    return RunSet(runs=tuple(runs), source=file, excluded=tuple(notes))


def _branch(name: str, rows_of: dict[str, np.ndarray], settings: dict[str, dict],
            step: np.ndarray, file: str, notes: list[str]) -> tuple[np.ndarray, dict]:
    """A run's rows and per-run values with those of its chain of parents before it."""
    rows, per = rows_of[name], dict(settings[name])
    chain = [name]
    while per["parent"] is not None:
        pv = per["parent"]
        parent = str(pv.value)
        if parent not in rows_of:
            raise _fail(pv.file, "parent", chain[-1], pv.row, f"{parent!r} is not a run of {file}",
                        "give the id of the run this one branches from, or leave it empty")
        if parent in chain:
            raise _fail(pv.file, "parent", chain[-1], pv.row,
                        f"the parents form a cycle ({' -> '.join(chain + [parent])})",
                        "give each branch the run it was started from")
        before = rows_of[parent][step[rows_of[parent]] < step[rows].min()]
        notes.append(f"run {name}: {before.size} row(s) of parent {parent} before step "
                     f"{int(step[rows].min())} taken as its own")
        rows = np.concatenate([before, rows])
        up = settings[parent]
        for c in _INHERITED:
            if per[c] is None:
                per[c] = up[c]
        per["parent"] = up["parent"]
        chain.append(parent)
    return rows, per


def _read_meta(meta: str | os.PathLike[str],
               names: list[str]) -> tuple[dict[str, dict[str, _Value | None]], list[str]]:
    """Per-run values of a metadata file, keyed by run then column, and notes."""
    mfile = str(meta)
    m = read_table(meta)
    if m.empty:
        raise DataError(f"{mfile}: the metadata file has no rows; give one row per run with "
                        "a run column and per-run columns")
    if "run" not in m.columns:
        raise DataError(f"{mfile}: missing column 'run' (found: "
                        f"{', '.join(repr(c) for c in m.columns)}); a metadata file needs a "
                        "run column to join on")
    notes = []
    unknown = [c for c in m.columns if c != "run" and c not in PER_RUN_COLUMNS]
    if unknown:
        notes.append(f"{mfile}: column{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                     f"not used (a metadata file holds only run and {', '.join(PER_RUN_COLUMNS)})")
    missing_run = m["run"].map(_is_missing).to_numpy(dtype=bool)
    if missing_run.any():
        raise _fail(mfile, "run", None, _first(missing_run) + 1, "empty run id",
                    "give every metadata row the id of its run")
    mruns = np.array([str(v).strip() for v in m["run"]], dtype=object)
    seen: dict[str, int] = {}
    for i, r in enumerate(mruns):
        if r in seen:
            raise _fail(mfile, "run", r, i + 1, f"run listed again (first in row {seen[r] + 1})",
                        "keep one metadata row per run")
        seen[r] = i
    cols = {c: (_numeric(m, c, mfile, mruns) if c in _NUMERIC_PER_RUN
                else m[c].to_numpy(dtype=object))
            for c in PER_RUN_COLUMNS if c in m.columns}
    values: dict[str, dict[str, _Value | None]] = {}
    for r, i in seen.items():
        values[r] = {}
        for c, col in cols.items():
            v = col[i]
            values[r][c] = None if _is_missing(v) else _Value(
                v.strip() if isinstance(v, str) else v, mfile, i + 1)
    known = set(names)
    extra = [r for r in seen if r not in known]
    if extra:
        notes.append(f"{mfile}: {len(extra)} run(s) without rows in the runs file ignored: "
                     + _list(extra))
    lacking = [r for r in names if r not in seen]
    if lacking:
        notes.append(f"{mfile}: no metadata row for {len(lacking)} run(s), their per-run "
                     "settings come from the runs file or are unknown: " + _list(lacking))
    return values, notes


def _list(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _make_run(name: str, rows: np.ndarray, *, file: str, step: np.ndarray, loss: np.ndarray,
              lr_col: np.ndarray | None, tokens: np.ndarray | None,
              per: dict[str, _Value | None]) -> tuple[Run, list[str]]:
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
            raise _fail(spec_v.file, "schedule", name, spec_v.row, str(e), "") from None
        if "warmup" in spec_keys:
            w = int(spec_keys["warmup"])
            if warmup_f is None:
                warmup_f = float(w)
            elif int(warmup_f) != w:
                wv = per["warmup_steps"]
                raise _fail(spec_v.file, "schedule", name, spec_v.row,
                            f"warmup={w} in the spec disagrees with warmup_steps "
                            f"{int(warmup_f)} (row {wv.row} of {wv.file})",
                            "drop one of them or make them agree")

    if total_f is not None and total_f > MAX_STEPS:
        tv = per["total_steps"]
        raise _fail(tv.file, "total_steps", name, tv.row,
                    f"{_show(total_f)} is beyond {MAX_STEPS:.0e} optimizer steps",
                    "give the planned number of optimizer updates (not tokens)")
    total = int(total_f) if total_f is not None else last_step
    if total < last_step:
        tv = per["total_steps"]
        raise _fail(tv.file, "total_steps", name, tv.row,
                    f"{total} is before the last logged step {last_step}",
                    "give the planned number of optimizer steps of the run (>= every logged step)")
    warmup = int(warmup_f) if warmup_f is not None else 0
    if warmup >= total:
        wv = per["warmup_steps"]
        wfile, wrow = (wv.file, wv.row) if wv is not None else (spec_v.file, spec_v.row)
        raise _fail(wfile, "warmup_steps", name, wrow,
                    f"{warmup} warmup steps is not below total_steps {total}",
                    "give a warmup shorter than the run")

    if tps is None and tokens is not None:
        tok = tokens[order]
        has = np.flatnonzero(np.isfinite(tok))
        if has.size:
            k = has[-1]
            tps = float(tok[k]) / float(st[k])
            if not tps > 0:
                raise _fail(file, "tokens", name, int(order[k]) + 1,
                            f"{_show(tok[k])} cumulative tokens at step {int(st[k])} gives no "
                            "tokens_per_step > 0")

    run_lr = lr_col[order] if lr_col is not None else None
    has_lr = run_lr is not None and bool(np.isfinite(run_lr).any())
    if peak is None and has_lr:
        peak = float(np.nanmax(run_lr))
        if not peak > 0:
            raise _fail(file, "lr", name, int(order[0]) + 1, "every logged LR of the run is 0",
                        "give the LR actually used, or a peak_lr and schedule")

    lr: np.ndarray | None = None
    if spec is not None and peak is not None:
        try:
            lr = lr_schedule(spec, steps=total, peak_lr=peak, warmup_steps=warmup)
        except ScheduleError as e:
            raise _fail(spec_v.file, "schedule", name, spec_v.row, str(e), "") from None
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
        k = _first(finite)
        raise _fail(file, "loss", name, int(order[k]) + 1,
                    f"every loss of the run is above {EXPLODE_LOSS:g} and falls ({ls[finite][0]:.4g} "
                    f"to {ls[finite][-1]:.4g}): this looks like perplexity, not nats/token",
                    "give the loss as log(perplexity) in nats/token (bits/token times ln 2)")
    physical = finite & ~unphysical
    first_loss = ls[physical][0] if physical.any() else np.nan
    exploded = physical & (ls > EXPLODE_FACTOR * first_loss)
    bad = ~physical | exploded
    diverged = bool(bad.any())
    div_step = int(st[_first(bad)]) if diverged else None
    n_nonfinite = int((~finite).sum())
    if n_nonfinite:
        notes.append(f"run {name}: {n_nonfinite} row(s) with non-finite loss (from step "
                     f"{int(st[_first(~finite)])}) not fitted; treated as divergence, run kept")
    if unphysical.any():
        k = _first(unphysical)
        notes.append(f"run {name}: {int(unphysical.sum())} row(s) with a loss <= 0 or above "
                     f"{EXPLODE_LOSS:g} nats/token (first {ls[k]:.4g} at step {int(st[k])}) not "
                     "fitted; treated as divergence from that step, run kept")
    if exploded.any():
        k = _first(exploded)
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
