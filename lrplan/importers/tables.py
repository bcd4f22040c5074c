"""Readers of tables: W&B history and chart exports, and any CSV / Parquet / JSONL log.

W&B: a run's history as saved from ``run.history()`` / ``scan_history()`` (one run per file), or
a chart's data exported from the UI (``Step``, ``RUN - KEY`` columns, any number of runs), with
the run's config as JSON beside it. Generic tables: one run per file, or per value of a run
column.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lrplan.errors import DataError
from lrplan.importers.keys import STEP_KEYS
from lrplan.importers.raw import RawRun, Series, is_missing, key_list, read_json
from lrplan.tables import EXTENSIONS, read_table

__all__ = ["read_wandb", "read_csv", "read_any_table"]

def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config dicts as ``a.b`` keys; W&B's ``{"value": x, "desc": ...}`` unwrapped."""
    out: dict[str, Any] = {}
    if not isinstance(d, dict):
        return out
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and "value" in v and set(v) <= {"value", "desc"}:
            v = v["value"]
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def _read_config(path: Path) -> dict[str, Any]:
    doc = read_json(path, "run config")
    if not isinstance(doc, dict):
        raise DataError(f"{path}: a JSON {type(doc).__name__}, not an object; a run config is "
                        'one JSON object of settings, e.g. {"batch_size": 512}')
    return _flatten(doc)


def _sidecar_config(path: Path) -> Path | None:
    for cand in (path.with_name(path.stem + ".config.json"), path.with_name(path.stem + "_config.json"),
                 path.with_name("config.json")):
        if cand.is_file():
            return cand
    return None


def _table_series(df: pd.DataFrame, step_col: str | None) -> dict[str, Series]:
    where = tuple(f"row {i + 1}" for i in range(len(df)))
    steps = (df[step_col].to_numpy(dtype=object) if step_col is not None
             else np.arange(1, len(df) + 1, dtype=object))
    return {str(c): Series(steps, df[c].to_numpy(dtype=object), where) for c in df.columns}


def read_any_table(path: Path) -> pd.DataFrame:
    """A table with every value as read: CSV cells as text (empty = not logged)."""
    kind = EXTENSIONS.get(path.suffix.lower())
    if kind == "csv":
        if not path.is_file():
            raise DataError(f"{path}: no such file; check the path")
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        except (ValueError, OSError, UnicodeDecodeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"{path}: cannot be read as csv ({first}); check that the file is "
                            "valid CSV with a header row") from None
        df.columns = [str(c).strip() for c in df.columns]
        return df
    try:
        df = read_table(path)
    except DataError:
        raise
    except (ValueError, OSError, UnicodeDecodeError) as e:  # pragma: no cover - read_table wraps
        raise DataError(f"{path}: cannot be read ({type(e).__name__})") from None
    return df.astype(object).where(df.notna(), None)


def _pick_step_column(df: pd.DataFrame, path: Path, step: str | None) -> str:
    if step is not None:
        if step not in df.columns:
            raise DataError(f"{path}: no column {step!r} for the step (found: {key_list(df.columns)}); "
                            "name the step column with --step")
        return step
    for k in STEP_KEYS:
        if k in df.columns and df[k].map(lambda v: not is_missing(v)).any():
            return k
    raise DataError(f"{path}: no step column (looked for {', '.join(STEP_KEYS)}; found: "
                    f"{key_list(df.columns)}); name it with --step")


def read_wandb(path: str | os.PathLike[str], *, step: str | None = None,
               config: str | os.PathLike[str] | None = None,
               name: str | None = None) -> list[RawRun]:
    """Read a W&B run history exported as CSV or Parquet (one run per file).

    Parameters
    ----------
    path : str or path-like
        The exported history.
    step : str, optional
        Its step column (default: the first of `STEP_KEYS` that is logged).
    config : str or path-like, optional
        The run's config as JSON (default: a sidecar file, see the module docstring).
    name : str, optional
        The run's id (default: the file's stem).
    """
    p = Path(path)
    df = read_any_table(p)
    if df.empty:
        raise DataError(f"{p}: the history has no rows; export the run's history with its "
                        "logged rows")
    cfg_path = Path(config) if config is not None else _sidecar_config(p)
    cfg = _read_config(cfg_path) if cfg_path is not None else {}
    cfg_file = None if cfg_path is None else str(cfg_path)
    panel = _panel_columns(df)
    if panel is not None:
        steps = df["Step"].to_numpy(dtype=object)
        where = tuple(f"row {i + 1}" for i in range(len(df)))
        runs: dict[str, dict[str, Series]] = {}
        for col, (run, key) in panel.items():
            runs.setdefault(run, {})[key] = Series(steps, df[col].to_numpy(dtype=object), where)
        return [RawRun(r, str(p), "wandb", series, cfg, cfg_file) for r, series in runs.items()]
    step_col = _pick_step_column(df, p, step)
    return [RawRun(name or p.stem, str(p), "wandb", _table_series(df, step_col), cfg, cfg_file)]


_PANEL = re.compile(r"^(?P<run>.+?) - (?P<key>.+?)(?P<agg>__MIN|__MAX)?$")


def _panel_columns(df: pd.DataFrame) -> dict[str, tuple[str, str]] | None:
    """Columns of a W&B panel export (``Step``, ``RUN - KEY``, ``RUN - KEY__MIN``, ...), or None.

    Maps each ``RUN - KEY`` column to (run, key); the ``__MIN`` / ``__MAX`` columns (the range
    of the points a sampled panel merged into one) are not used.
    """
    others = [c for c in df.columns if c != "Step"]
    if "Step" not in df.columns or not others:
        return None
    matches = {c: _PANEL.match(c) for c in others}
    if not all(matches.values()):
        return None
    return {c: (m.group("run"), m.group("key")) for c, m in matches.items() if not m.group("agg")}


def read_csv(path: str | os.PathLike[str], *, step: str | None = None,
             run_column: str | None = None, name: str | None = None) -> list[RawRun]:
    """Read any table of logged values: one run per file, or per value of ``run_column``."""
    p = Path(path)
    df = read_any_table(p)
    if df.empty:
        raise DataError(f"{p}: the table has no rows; give one row per logged step")
    step_col = _pick_step_column(df, p, step)
    if run_column is None and "run" in df.columns:
        run_column = "run"
    if run_column is None:
        return [RawRun(name or p.stem, str(p), "csv", _table_series(df, step_col))]
    if run_column not in df.columns:
        raise DataError(f"{p}: no column {run_column!r} for the run ids (found: {key_list(df.columns)}); "
                        "name it with --run-column")
    ids = df[run_column]
    empty = ids.map(is_missing).to_numpy(dtype=bool)
    if empty.any():
        i = int(np.flatnonzero(empty)[0])
        raise DataError(f"{p}: column {run_column!r}, row {i + 1}: empty run id; give every row "
                        "the id of its run")
    runs = []
    for rid in dict.fromkeys(str(v).strip() for v in ids):
        rows = np.flatnonzero(ids.map(lambda v, r=rid: str(v).strip() == r).to_numpy(dtype=bool))
        sub = df.iloc[rows].drop(columns=[run_column])
        where = tuple(f"row {i + 1}" for i in rows)
        st = sub[step_col].to_numpy(dtype=object)
        series = {str(c): Series(st, sub[c].to_numpy(dtype=object), where) for c in sub.columns}
        runs.append(RawRun(rid, str(p), "csv", series))
    return runs


