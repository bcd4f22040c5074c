"""LR files: a per-step LR read from, and written to, a CSV file with columns ``step,lr``."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from lrplan.errors import ScheduleError
from lrplan.files import atomic_write
from lrplan.schedule_specs import parse_number

__all__ = ["read_lr_file", "write_lr_file"]

def _cell(path, row: int, line: int, column: str, token: str, problem: str) -> ScheduleError:
    return ScheduleError(
        f"LR file {os.fspath(path)!r}, row {row} (line {line}), column {column!r}: "
        f"{token!r} {problem}"
    )


def read_lr_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a per-step LR from a CSV file with columns ``step,lr``.

    The file needs a header naming the columns ``step`` and ``lr`` (other columns are
    ignored). Steps are integers >= 1, strictly increasing; LRs finite and >= 0. Rows may skip
    steps: the LR between two rows is interpolated linearly, and steps before the first row
    take the first row's LR.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file.

    Returns
    -------
    numpy.ndarray
        float64 array of length ``max(step)``; ``lr[i]`` is the LR of step ``i + 1``.

    Raises
    ------
    ScheduleError
        If the file cannot be read, has no header or no data, lacks a column, or has a bad
        value; the message names the file, the column and the 1-based data row (and its line).
    """
    name = os.fspath(path)
    try:
        with open(name, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ScheduleError(f"cannot read LR file {name!r}: {exc}") from None
    header_at = next((i for i, r in enumerate(rows) if any(c.strip() for c in r)), None)
    if header_at is None:
        raise ScheduleError(f"LR file {name!r} is empty; it needs a header 'step,lr' and rows")
    header = [c.strip().lower() for c in rows[header_at]]
    for column in ("step", "lr"):
        if column not in header:
            raise ScheduleError(
                f"LR file {name!r} has no column {column!r} (found {', '.join(header)!s}); "
                "the first line must be a header naming the columns step,lr"
            )
    i_step, i_lr = header.index("step"), header.index("lr")
    steps: list[int] = []
    values: list[float] = []
    row = 0  # 1-based data row: blank lines are skipped and not counted
    for line_idx in range(header_at + 1, len(rows)):
        cells, line = rows[line_idx], line_idx + 1
        if not any(c.strip() for c in cells):
            continue
        row += 1
        if len(cells) <= max(i_step, i_lr):
            raise ScheduleError(
                f"LR file {name!r}, row {row} (line {line}): {len(cells)} fields, but the header "
                f"has {len(header)}; every row needs a step and an lr"
            )
        tok_step, tok_lr = cells[i_step].strip(), cells[i_lr].strip()
        x = parse_number(tok_step)
        if x is None or not x.is_integer():
            raise _cell(name, row, line, "step", tok_step, "is not an integer step")
        step = int(x)
        if step < 1:
            raise _cell(name, row, line, "step", tok_step, "is below 1 (steps are 1-based)")
        if steps and step <= steps[-1]:
            raise _cell(name, row, line, "step", tok_step,
                        f"does not increase (previous row has step {steps[-1]}); sort the "
                        "rows by step and remove duplicates")
        try:
            lr = float(tok_lr)
        except ValueError:
            raise _cell(name, row, line, "lr", tok_lr, "is not a number") from None
        if not math.isfinite(lr):
            raise _cell(name, row, line, "lr", tok_lr, "is not finite")
        if lr < 0.0:
            raise _cell(name, row, line, "lr", tok_lr, "is negative")
        steps.append(step)
        values.append(lr)
    if not steps:
        raise ScheduleError(f"LR file {name!r} has a header but no data rows")
    grid = np.arange(1, steps[-1] + 1, dtype=np.float64)
    return np.interp(grid, np.asarray(steps, np.float64), np.asarray(values, np.float64))


def write_lr_file(path: str | os.PathLike[str], lr: np.ndarray) -> None:
    """Write a per-step LR as a CSV file with columns ``step,lr`` and steps 1..T.

    The file is written to a temporary file in the same directory and moved into place with
    `os.replace`, so readers never see a half-written file. Values are written with full
    precision, so `read_lr_file` returns the same array.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; replaced if it exists.
    lr : numpy.ndarray
        1-D array of finite LRs >= 0; ``lr[i]`` is the LR of step ``i + 1``.

    Raises
    ------
    ScheduleError
        If ``lr`` is not a non-empty 1-D array of finite values >= 0, or the file cannot be
        written.
    """
    name = os.fspath(path)
    try:
        arr = np.asarray(lr, dtype=np.float64)
    except (TypeError, ValueError):
        raise ScheduleError(f"cannot write LR file {name!r}: lr is not numeric") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ScheduleError(
            f"cannot write LR file {name!r}: lr must be a non-empty 1-D array, got shape "
            f"{arr.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0.0))
    if bad.size:
        raise ScheduleError(
            f"cannot write LR file {name!r}: lr at step {bad[0] + 1} is {arr[bad[0]]!r}; "
            "every LR must be finite and >= 0"
        )
    text = "step,lr\n" + "".join(f"{i},{float(v)!r}\n" for i, v in enumerate(arr, start=1))
    try:
        atomic_write(name, lambda tmp: Path(tmp).write_text(text, encoding="utf-8", newline=""))
    except OSError as exc:
        raise ScheduleError(f"cannot write LR file {name!r}: {exc}") from None


