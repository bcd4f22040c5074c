"""Reader of Hugging Face Trainer states (``trainer_state.json``: its ``log_history``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from lrplan.errors import DataError
from lrplan.importers.raw import RawRun, Series, read_json, show_value

__all__ = ["read_hf"]

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _objects(values: list) -> np.ndarray:
    """A 1-d object array of the values as they are (lists stay single elements)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def _hf_states(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    files = sorted(root.rglob("trainer_state.json"))
    latest: dict[Path, tuple[int, Path]] = {}
    for f in files:
        m = _CHECKPOINT.match(f.parent.name)
        run_dir, n = (f.parent.parent, int(m.group(1))) if m else (f.parent, 2**62)
        if run_dir not in latest or n > latest[run_dir][0]:
            latest[run_dir] = (n, f)
    return [f for _, f in sorted(latest.values(), key=lambda t: str(t[1]))]


def read_hf(path: str | os.PathLike[str]) -> list[RawRun]:
    """Read Hugging Face Trainer ``trainer_state.json`` files (a file, or a folder of runs).

    A run is named by its output folder (the folder above ``checkpoint-N``); its config holds
    the state's top-level settings (``train_batch_size``, ``max_steps``, ...).
    """
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: no such file or folder; check the path")
    files = _hf_states(root)
    if not files:
        raise DataError(f"{root}: no trainer_state.json in it; point at a Trainer output folder "
                        "or its trainer_state.json")
    runs = []
    for f in files:
        doc = read_json(f, "trainer state")
        if not isinstance(doc, dict) or not isinstance(doc.get("log_history"), list):
            raise DataError(f"{f}: key 'log_history': missing or not a list; a Trainer state has "
                            "a log_history list of logged rows")
        m = _CHECKPOINT.match(f.parent.name)
        name = (f.parent.parent if m else f.parent).name or f.stem
        steps, where, columns = [], [], {}
        for i, entry in enumerate(doc["log_history"]):
            if not isinstance(entry, dict):
                raise DataError(f"{f}: key 'log_history', entry {i + 1}: {show_value(entry)} is not an "
                                "object; each entry is a JSON object of logged values")
            steps.append(entry.get("step"))
            where.append(f"log_history entry {i + 1}")
            for k in entry:
                columns.setdefault(k, [None] * len(doc["log_history"]))
        for i, entry in enumerate(doc["log_history"]):
            for k, v in entry.items():
                columns[k][i] = v
        st = _objects(steps)
        series = {k: Series(st, _objects(v), tuple(where)) for k, v in columns.items()}
        cfg = {k: v for k, v in doc.items() if k != "log_history" and not isinstance(v, (list, dict))}
        runs.append(RawRun(name, str(f), "hf", series, cfg, str(f)))
    return runs


