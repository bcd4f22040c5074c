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

This module joins and checks the tables and splits them into runs; `lrplan.tables` reads the
files and checks their cells, `lrplan.runs` holds `Run` and `RunSet` and builds one run from
its rows (per-step LR, divergence). The names of both are importable from here.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from lrplan.errors import DataError
from lrplan.runs import EXPLODE_FACTOR, EXPLODE_LOSS, Run, RunSet, make_run
from lrplan.tables import (
    EXTENSIONS,
    MAX_STEPS,
    Cell,
    cell_error,
    first_index,
    is_missing,
    numeric_column,
    read_table,
    show_value,
)

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
    values for the run, their linear interpolation (see `lrplan.runs`). Otherwise None.

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
    missing_run = run_raw.map(is_missing).to_numpy(dtype=bool)
    if missing_run.any():
        raise cell_error(file, "run", None, first_index(missing_run) + 1, "empty run id",
                         "give every row the id of the run it belongs to")
    runs_col = np.array([str(v).strip() for v in run_raw], dtype=object)

    step = numeric_column(df, "step", file, runs_col)
    bad = ~np.isfinite(step) | (step < 1) | (step != np.round(step))
    if bad.any():
        i = first_index(bad)
        shown = "empty" if np.isnan(step[i]) else show_value(df["step"].iloc[i])
        raise cell_error(file, "step", runs_col[i], i + 1, f"{shown} is not an integer >= 1")
    bad = step > MAX_STEPS
    if bad.any():
        i = first_index(bad)
        raise cell_error(file, "step", runs_col[i], i + 1,
                         f"{show_value(step[i])} is beyond {MAX_STEPS:.0e} optimizer steps",
                         "give the number of optimizer updates (not tokens or samples)")
    step_i = step.astype(np.int64)

    loss = numeric_column(df, "loss", file, runs_col)
    finite = np.isfinite(loss)
    if finite.any() and (loss[finite] <= 0).all():
        i = first_index(finite)
        raise cell_error(file, "loss", runs_col[i], i + 1,
                         f"{show_value(loss[i])} is not > 0, and neither is any other loss of the file",
                         "give the cross-entropy loss in nats/token (> 0), not a log-likelihood or a "
                         "score where higher is better")

    optional = {}
    for col, what in (("lr", "a finite LR"), ("tokens", "a finite token count")):
        if col not in df.columns:
            optional[col] = None
            continue
        x = optional[col] = numeric_column(df, col, file, runs_col)
        bad = (x < 0) | np.isinf(x)
        if bad.any():
            i = first_index(bad)
            raise cell_error(file, col, runs_col[i], i + 1, f"{show_value(x[i])} is not {what} >= 0")
    lr_col, tokens = optional["lr"], optional["tokens"]

    keys = pd.DataFrame({"run": runs_col, "step": step_i})
    dup = keys.duplicated(keep="first").to_numpy()
    if dup.any():
        i = first_index(dup)
        j = first_index((runs_col == runs_col[i]) & (step_i == step_i[i]))
        raise cell_error(file, "step", runs_col[i], i + 1,
                         f"step {step_i[i]} of this run is already in row {j + 1}",
                         "keep one row per (run, step)")

    # per-run columns of the runs file, parsed column by column (errors name their row)
    in_file: dict[str, np.ndarray | pd.Series] = {}
    for c in PER_RUN_COLUMNS:
        if c in df.columns:
            in_file[c] = (numeric_column(df, c, file, runs_col) if c in _NUMERIC_PER_RUN
                          else df[c].to_numpy(dtype=object))

    order_of_runs = list(dict.fromkeys(runs_col))
    meta_values, meta_notes = _read_meta(meta, order_of_runs) if meta is not None else ({}, [])
    notes.extend(meta_notes)

    groups = pd.Series(np.arange(len(df))).groupby(runs_col, sort=False).indices
    rows_of = {name: np.asarray(groups[name]) for name in order_of_runs}  # 0-based, file order
    settings = {}
    for name, rows in rows_of.items():
        per: dict[str, Cell | None] = {}
        for c in PER_RUN_COLUMNS:
            from_file = (_values_in_runs_file(c, in_file[c], rows, name, file)
                         if c in in_file else None)
            from_meta = meta_values.get(name, {}).get(c)
            if from_file is not None and from_meta is not None and not _same(
                    from_file.value, from_meta.value):
                raise cell_error(from_meta.file, c, name, from_meta.row,
                                 f"{show_value(from_meta.value)} differs from "
                                 f"{show_value(from_file.value)} in row {from_file.row} of {file}",
                                 "give the value in one file, or make them agree")
            per[c] = from_meta if from_meta is not None else from_file
        settings[name] = per
    runs = []
    for name in order_of_runs:
        rows, per = _branch(name, rows_of, settings, step_i, file, notes)
        run, run_notes = make_run(name, rows, file=file, step=step_i, loss=loss, lr_col=lr_col,
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
            raise cell_error(pv.file, "parent", chain[-1], pv.row, f"{parent!r} is not a run of {file}",
                             "give the id of the run this one branches from, or leave it empty")
        if parent in chain:
            raise cell_error(pv.file, "parent", chain[-1], pv.row,
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
               names: list[str]) -> tuple[dict[str, dict[str, Cell | None]], list[str]]:
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
    missing_run = m["run"].map(is_missing).to_numpy(dtype=bool)
    if missing_run.any():
        raise cell_error(mfile, "run", None, first_index(missing_run) + 1, "empty run id",
                         "give every metadata row the id of its run")
    mruns = np.array([str(v).strip() for v in m["run"]], dtype=object)
    seen: dict[str, int] = {}
    for i, r in enumerate(mruns):
        if r in seen:
            raise cell_error(mfile, "run", r, i + 1, f"run listed again (first in row {seen[r] + 1})",
                             "keep one metadata row per run")
        seen[r] = i
    cols = {c: (numeric_column(m, c, mfile, mruns) if c in _NUMERIC_PER_RUN
                else m[c].to_numpy(dtype=object))
            for c in PER_RUN_COLUMNS if c in m.columns}
    values: dict[str, dict[str, Cell | None]] = {}
    for r, i in seen.items():
        values[r] = {}
        for c, col in cols.items():
            v = col[i]
            values[r][c] = None if is_missing(v) else Cell(
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


# --------------------------------------------------------------------------------------------
# Per-run values of the runs file
# --------------------------------------------------------------------------------------------


def _values_in_runs_file(col: str, values: np.ndarray | pd.Series, rows: np.ndarray, run: str,
                         file: str) -> Cell | None:
    """The one value a per-run column takes within a run (rows: 0-based, in file order)."""
    if isinstance(values, np.ndarray) and values.dtype == np.float64:  # numeric: vectorised
        v = values[rows]
        present = np.flatnonzero(~np.isnan(v))
        if present.size == 0:
            return None
        first = v[present[0]]
        differ = present[~np.isclose(v[present], first, rtol=1e-9, atol=0.0, equal_nan=True)]
        if differ.size == 0:
            return Cell(float(first), file, int(rows[present[0]]) + 1)
        rows = rows[np.r_[present[0], differ[0]]]  # report the first disagreement below
    found: Cell | None = None
    for i in rows:
        v = values[i]
        if is_missing(v):
            continue
        if isinstance(v, str):
            v = v.strip()
        if found is None:
            found = Cell(v, file, int(i) + 1)
        elif not _same(found.value, v):
            raise cell_error(file, col, run, int(i) + 1,
                             f"value {show_value(v)} differs from {show_value(found.value)} in row "
                             f"{found.row}; a per-run column must be constant within a run",
                             "fix the run's rows or give the value once in a metadata file (--meta)")
    return found


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return str(a).strip() == str(b).strip()
    return bool(np.isclose(float(a), float(b), rtol=1e-9, atol=0.0))


