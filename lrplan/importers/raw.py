"""What a tracker reader returns, and how its raw values are read and checked.

A reader turns a tracker's files into `RawRun` objects: for every logged key of a run a
`Series` of the steps and values as read (numbers, text, None) and where each one sits in the
source, for messages. The helpers here check those values (`numeric_points`) and word the
one-line `DataError` every problem becomes (`import_error`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lrplan.errors import DataError
from lrplan.tables import MAX_STEPS

__all__ = [
    "Series",
    "RawRun",
    "ImportedRun",
    "import_error",
    "is_missing",
    "as_number",
    "show_value",
    "numeric_points",
    "key_list",
    "read_json",
    "read_text",
]

_MISSING = frozenset({"", "na", "n/a", "null", "none"})


@dataclass(frozen=True)
class Series:
    """One logged key of one run: raw steps and values, and where each came from."""

    steps: np.ndarray  # object: as read (numbers, text, None)
    values: np.ndarray  # object: as read
    where: tuple[str, ...]  # "row 12", "line 3", "log_history entry 7", "step 400"
    file: str | None = None  # where it differs from its run's file (a run merged from files)


@dataclass(frozen=True)
class RawRun:
    """A run as a reader found it: its series, its config and the file to name in messages."""

    name: str
    file: str
    format: str
    series: dict[str, Series]
    config: dict[str, Any] = field(default_factory=dict)
    config_file: str | None = None


@dataclass(frozen=True)
class ImportedRun:
    """What was imported of one run, and from which keys."""

    name: str
    file: str
    format: str
    loss_key: str
    loss_kind: str  # "eval" or "train"
    lr_key: str | None
    tokens_key: str | None
    rows: int

    def to_json(self) -> dict:
        """The run as a JSON-ready dict."""
        return {"run": self.name, "file": self.file, "format": self.format,
                "loss_key": self.loss_key, "loss_kind": self.loss_kind, "lr_key": self.lr_key,
                "tokens_key": self.tokens_key, "rows": self.rows}


def import_error(file: str, key: str | None, run: str | None, where: str | None, problem: str,
                 fix: str) -> DataError:
    """The one-line error of a source: file, then key, run and place where known, problem, fix."""
    parts = [p for p in (None if key is None else f"key {key!r}",
                         None if run is None else f"run {run!r}", where) if p]
    loc = f"{file}: " + ", ".join(parts) if parts else file
    return DataError(f"{loc}: {problem}; {fix}")


def is_missing(v: Any) -> bool:
    """Whether a raw value means "not logged" (None, pandas' NA, empty or NA-like text)."""
    if v is None or v is pd.NA:
        return True
    if isinstance(v, str):
        return v.strip().lower() in _MISSING
    return False


def as_number(v: Any) -> float:
    """A value as float (raises ValueError for text that is no number, or a bool)."""
    if isinstance(v, (bool, np.bool_)):
        raise ValueError
    if isinstance(v, str):
        return float(v.strip())
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    raise ValueError


def show_value(v: Any) -> str:
    """A raw value for a message: numbers compactly, anything else as a (shortened) repr."""
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return f"{float(v):.12g}"
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def numeric_points(raw: RawRun, key: str, s: Series,
                   fix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps and values of a series as floats, rows with a missing value left out.

    A missing step where a value is logged is an error; so is a value or step that is not a
    number. Returns (steps, values, index of each kept row).
    """
    steps, values, keep = [], [], []
    for i, (st, v) in enumerate(zip(s.steps, s.values, strict=True)):
        if is_missing(v):
            continue
        try:
            x = as_number(v)
        except (TypeError, ValueError):
            raise import_error(s.file or raw.file, key, raw.name, s.where[i],
                               f"{show_value(v)} is not a number", fix) from None
        if is_missing(st):
            raise import_error(s.file or raw.file, key, raw.name, s.where[i], "no step for this value",
                               "give every logged value its step")
        try:
            t = as_number(st)
        except (TypeError, ValueError):
            raise import_error(s.file or raw.file, key, raw.name, s.where[i],
                               f"step {show_value(st)} is not a number",
                               "give the optimizer step as an integer >= 0") from None
        if not (math.isfinite(t) and t >= 0 and t == round(t)):
            raise import_error(s.file or raw.file, key, raw.name, s.where[i],
                               f"step {show_value(st)} is not an integer >= 0",
                               "give the optimizer step as an integer >= 0")
        if t > MAX_STEPS:
            raise import_error(s.file or raw.file, key, raw.name, s.where[i],
                               f"step {show_value(st)} is beyond {MAX_STEPS:.0e} optimizer steps",
                               "give the number of optimizer updates (not tokens or samples) as the step")
        steps.append(t)
        values.append(x)
        keep.append(i)
    return (np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64),
            np.asarray(keep, dtype=np.int64))


def key_list(cols: Sequence[Any], limit: int = 12) -> str:
    """Keys or columns for a message: quoted, the first ``limit`` of them."""
    names = [repr(str(c)) for c in cols]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def read_json(path: Path, what: str) -> Any:
    """One JSON document (``what`` names it in messages); unreadable or invalid -> `DataError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the {what} ({type(e).__name__}); check the "
                        "file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {e.lineno}: not valid JSON ({e.msg}); the {what} must "
                        "be one JSON document (is the file cut short?)") from None
    except RecursionError:
        raise DataError(f"{path}: nested too deeply to be a {what}") from None


def read_text(p: Path) -> str:
    """A file's text (UTF-8); unreadable -> `DataError`."""
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot be read as text ({type(e).__name__}); check the "
                        "file") from None

