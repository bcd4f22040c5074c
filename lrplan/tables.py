"""Read runs and metadata tables (CSV, Parquet, JSONL) and check their cells.

`read_table` reads a file chosen by its extension (`EXTENSIONS`); the helpers here turn a
column into numbers (`numeric_column`) and word the one-line `DataError` of a bad cell
(`cell_error`: file, column, run and 1-based data row, then the fix). `lrplan.data` builds
runs from the tables.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lrplan.errors import DataError

__all__ = [
    "EXTENSIONS",
    "MAX_STEPS",
    "Cell",
    "read_table",
    "cell_error",
    "is_missing",
    "numeric_column",
    "show_value",
    "first_index",
]

#: Most optimizer steps a run may have (a per-step LR of that many float64 takes 800 MB).
MAX_STEPS = 100_000_000

#: File extensions accepted for runs and metadata files, and the reader each one selects.
EXTENSIONS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
              ".ndjson": "jsonl"}


#: Spellings of a missing value in text columns.
_MISSING_TEXT = frozenset({"", "na", "n/a", "nan", "null", "none"})

_FIXES = {
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


@dataclass(frozen=True)
class Cell:
    """A per-run value and where it came from, for messages."""

    value: Any
    file: str
    row: int  # 1-based data row


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


def cell_error(file: str, col: str | None, run: str | None, row: int | None, problem: str,
               fix: str | None = None) -> DataError:
    """The one-line error of a cell: file, column, run and 1-based row, problem, then the fix.

    ``fix`` defaults to the usual fix for the column.
    """
    fix = _FIXES.get(col or "") if fix is None else fix
    return DataError(f"{_where(file, col, run, row)}: {problem}" + (f"; {fix}" if fix else ""))


def is_missing(v: Any) -> bool:
    """Whether a cell is empty: None, NA, NaN or a spelling of a missing value in text."""
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and v.strip().lower() in _MISSING_TEXT


def numeric_column(df: pd.DataFrame, col: str, file: str, runs: np.ndarray | None) -> np.ndarray:
    """Column ``col`` as float64; missing -> nan; text that is no number -> DataError."""
    raw = df[col]
    if pd.api.types.is_bool_dtype(raw):
        raise cell_error(file, col, None, None, "holds true/false values, not numbers")
    if pd.api.types.is_numeric_dtype(raw):
        return raw.to_numpy(dtype=np.float64, na_value=np.nan)
    out = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    for i in np.flatnonzero(np.isnan(out)):
        v = raw.iloc[i]
        if is_missing(v):
            continue
        try:
            if isinstance(v, bool):
                raise ValueError
            out[i] = float(v.strip() if isinstance(v, str) else v)
        except (TypeError, ValueError):
            run = None if runs is None else str(runs[i])
            raise cell_error(file, col, run, i + 1, f"{show_value(v)} is not a number") from None
    return out


def show_value(v: Any) -> str:
    """A value for a message: numbers compactly (1e+08, 0.001), text quoted."""
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return f"{float(v):.12g}"
    return repr(v)


def first_index(mask: np.ndarray) -> int:
    """Index of the first True of a boolean array (one that has one)."""
    return int(np.flatnonzero(mask)[0])


