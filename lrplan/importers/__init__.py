"""Import training runs from experiment trackers into lrplan's runs format.

Each reader turns what a tracker wrote into *series*: for every logged key of a run, the
steps and values it was logged at, and where each value sits in the source (a row, a line, a
log entry, a step) for messages. `import_runs` then picks the loss, LR and token keys of each
run, checks every value it uses, and builds one runs table (the contract of
`lrplan.data.load_runs`), which `write_runs` writes atomically.

Formats, each read with the ecosystem's own reader where one exists:

- ``wandb``: a run history as saved from ``run.history()`` / ``scan_history()`` (CSV or
  Parquet, one run per file), or a chart's data exported from the UI (``Step``, ``RUN - KEY``
  columns, any number of runs; a run's keys may come from several charts' files), with the
  run's config as JSON beside it (``NAME.config.json``, ``NAME_config.json`` or ``config.json``; W&B's
  ``{"key": {"value": ...}}`` wrapping is undone, nested keys are joined with ``.``).
- ``tensorboard``: event files, or folders of them (one run per folder that holds event files),
  read with TensorBoard's ``EventAccumulator`` keeping every scalar (its default keeps a
  sample of 10,000 points per tag); needs ``pip install lrplan[import]``.
- ``hf``: a Hugging Face Trainer ``trainer_state.json`` (``log_history``), or a folder of
  them (one run per folder; of a run's ``checkpoint-N`` folders, the latest).
- ``mlflow``: an MLflow file store (``mlruns/<experiment>/<run>/metrics/<key>``, lines of
  ``timestamp value step``); the run's name is its ``mlflow.runName`` tag, its config its
  ``params``. A tracking URI (``sqlite:///mlflow.db``, ``http://host:5000``) is read with
  ``MlflowClient().get_metric_history`` (needs mlflow or mlflow-skinny).
- ``csv``: any CSV / Parquet / JSONL table; ``run_column`` names the column of run ids (else
  one run per file), the key options name the other columns.

Choice of keys (each can be given instead): the loss is an eval loss where one is logged
(``eval/loss``, ``val/loss``, ``eval_loss``, ``lm loss validation``, ``eval/*/CrossEntropyLoss``,
...), else a train loss (``train/loss``, ``loss``, ``lm loss``, ...); the note of each run says
which. The LR is the logged LR (``lr``, ``learning_rate``, ``train/learning_rate``,
``optim/learning_rate_group0``, ``learning-rate``, ...), interpolated linearly in the step to the
loss's steps; a warmup is read off its rise. Tokens per step come from logged cumulative tokens
(``throughput/total_tokens``, ``num_input_tokens_seen``, ...), a batch size in tokens, or a
batch in sequences times a sequence length (config, log, or the ``seq_len`` argument). Per-run
settings given by the caller (arguments, a metadata file) win over those read from the logs.

Every problem is a `DataError` of one line naming the file, the key, the run and the row (or
line, entry or step) and saying how to fix it. Nothing is dropped silently: rows at step 0
(logged before the first update) and repeated identical values are left out with a note.

Modules: `lrplan.importers.raw` (what a reader returns; value checks and messages), one reader
module per family (`~lrplan.importers.tables`: W&B exports and CSV / Parquet / JSONL tables;
`~lrplan.importers.tb_events`: TensorBoard; `~lrplan.importers.hf_trainer`: HF Trainer;
`~lrplan.importers.mlflow_store`: MLflow), `lrplan.importers.keys` (key lists, choice of keys)
and `lrplan.importers.rows` (one run's rows of the table). This module tells the formats apart,
dispatches to the readers and assembles and writes the table.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from lrplan.data import runs_from_frame
from lrplan.errors import DataError
from lrplan.files import atomic_write
from lrplan.importers.hf_trainer import read_hf
from lrplan.importers.keys import LossUnit
from lrplan.importers.mlflow_store import read_mlflow, read_mlflow_client
from lrplan.importers.raw import ImportedRun, RawRun, Series, as_number, is_missing, key_list, show_value
from lrplan.importers.rows import run_rows
from lrplan.importers.tables import read_csv, read_wandb
from lrplan.importers.tb_events import read_tensorboard
from lrplan.runs import RunSet
from lrplan.tables import EXTENSIONS, read_table

__all__ = [
    "FORMATS",
    "RawRun",
    "ImportedRun",
    "Imported",
    "read_wandb",
    "read_tensorboard",
    "read_hf",
    "read_mlflow",
    "read_mlflow_client",
    "read_csv",
    "detect_format",
    "import_runs",
    "write_runs",
]

Format = Literal["auto", "wandb", "tensorboard", "hf", "mlflow", "csv"]
FORMATS = ("auto", "wandb", "tensorboard", "hf", "mlflow", "csv")
#: Per-run settings the caller may give (arguments, a metadata file); they win over the logs'.
_USER_SETTINGS = ("params", "tokens_per_step", "peak_lr", "total_steps", "warmup_steps",
                  "schedule", "parent")


@dataclass(frozen=True)
class Imported:
    """The runs table built from tracker logs, the runs it holds, and notes."""

    frame: pd.DataFrame
    runs: tuple[ImportedRun, ...]
    notes: tuple[str, ...]
    runset: RunSet

    def to_json(self) -> dict:
        """A JSON-ready summary (no table)."""
        return {"runs": [r.to_json() for r in self.runs], "rows": int(len(self.frame)),
                "columns": list(self.frame.columns), "notes": list(self.notes)}


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of a source, from its name and what it holds."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder; check the path")
    if p.is_file():
        if "tfevents" in p.name:
            return "tensorboard"
        if p.suffix.lower() == ".json":
            return "hf"
        if p.suffix.lower() in EXTENSIONS:
            return "wandb"
        raise DataError(f"{p}: cannot tell the format of this file; give --format "
                        f"({', '.join(FORMATS[1:])})")
    if (p / "metrics").is_dir() or any(m.parent.joinpath("metrics").is_dir()
                                       for m in p.rglob("meta.yaml")):
        return "mlflow"
    if any(f.is_file() for f in p.rglob("*tfevents*")):
        return "tensorboard"
    if any(p.rglob("trainer_state.json")):
        return "hf"
    raise DataError(f"{p}: no TensorBoard events, trainer_state.json or MLflow runs found in "
                    "this folder; point at a run's logs or give --format")


def _read(source: str, fmt: str, *, step: str | None, run_column: str | None,
          config: str | None) -> list[RawRun]:
    if "://" in source and fmt in ("auto", "mlflow"):
        return read_mlflow_client(source)
    source = Path(source)
    fmt = detect_format(source) if fmt == "auto" else fmt
    if fmt == "wandb":
        if source.is_dir():
            raise DataError(f"{source}: a folder; a W&B export is a CSV or Parquet file of one "
                            "run's history")
        return read_wandb(source, step=step, config=config)
    if fmt == "csv":
        if source.is_dir():
            raise DataError(f"{source}: a folder; give the CSV, Parquet or JSONL file")
        return read_csv(source, step=step, run_column=run_column)
    if fmt == "tensorboard":
        return read_tensorboard(source)
    if fmt == "hf":
        return read_hf(source)
    return read_mlflow(source)


def import_runs(sources: Sequence[str | os.PathLike[str]], *, format: Format = "auto",
                loss: str | None = None, lr: str | None = None, step: str | None = None,
                tokens: str | None = None, run_names: Sequence[str] = (),
                run_column: str | None = None, configs: Sequence[str | os.PathLike[str]] = (),
                meta: str | os.PathLike[str] | None = None,
                settings: dict[str, Any] | None = None, seq_len: float | None = None,
                loss_unit: LossUnit = "nats",
                duplicates: Literal["error", "last"] = "error") -> Imported:
    """Read tracker logs into one runs table, checked as `lrplan.data.load_runs` checks a file.

    Parameters
    ----------
    sources : sequence of path-like
        Files or folders of logs (see the module docstring).
    format : {"auto", "wandb", "tensorboard", "hf", "mlflow", "csv"}
        The sources' format; "auto" tells each one's from its name and contents.
    loss, lr, step, tokens : str, optional
        Keys (columns, tags, metric names) to use instead of the automatic choice.
    run_names : sequence of str
        New ids for the runs found, in order (as many as there are runs).
    run_column : str, optional
        The column of run ids of a ``csv`` table.
    configs : sequence of path-like
        W&B config JSON files, one per source, in order (instead of sidecar files).
    meta : path-like, optional
        A metadata file (``run`` and per-run columns) whose values win over those read from the
        logs.
    settings : dict, optional
        Per-run values for every run (``params``, ``tokens_per_step``, ``peak_lr``,
        ``total_steps``, ``warmup_steps``, ``schedule``); they win over everything else.
    seq_len : float, optional
        Sequence length, for a batch logged in sequences.
    loss_unit : {"nats", "bits", "perplexity"}
        Unit of the logged loss; bits are multiplied by ln 2, perplexity is logged.
    duplicates : {"error", "last"}
        A step logged twice with different values: refuse, or keep the later value.

    Returns
    -------
    Imported
        The table (columns ``run, step, loss`` and ``lr``, ``tokens`` and per-run columns where
        known), the runs with the keys used, notes, and the table loaded as a `RunSet`.

    Raises
    ------
    DataError
        On any malformed input: one line naming the file, key, run and row.
    """
    if configs and len(configs) != len(sources):
        raise DataError(f"{len(configs)} config file(s) for {len(sources)} source(s); give one "
                        "--config per source, in the same order")
    raws: list[RawRun] = []
    for i, src in enumerate(sources):
        raws.extend(_read(str(src), format, step=step, run_column=run_column,
                          config=str(configs[i]) if configs else None))
    if run_names:
        if len(run_names) != len(raws):
            raise DataError(f"{len(run_names)} --run name(s) for {len(raws)} run(s) found "
                            f"({', '.join(r.name for r in raws[:8])}); give one name per run")
        raws = [RawRun(n, r.file, r.format, r.series, r.config, r.config_file)
                for n, r in zip(run_names, raws, strict=True)]
    merged: dict[str, RawRun] = {}
    for r in raws:
        if not r.name.strip():
            raise DataError(f"{r.file}: the run has an empty name; give one with --run")
        first = merged.get(r.name)
        if first is None:
            merged[r.name] = r
            continue
        # one run's keys spread over several files (W&B panel exports: one per chart)
        both = sorted(set(first.series) & set(r.series))
        if both or first.format != r.format:
            raise DataError(f"{r.file}: run {r.name!r} is also in {first.file}"
                            + (f" (both log {both[0]!r})" if both else "")
                            + "; give the runs distinct names with --run")
        moved = {k: Series(v.steps, v.values, v.where, v.file or r.file) for k, v in r.series.items()}
        merged[r.name] = RawRun(r.name, first.file, first.format, {**first.series, **moved},
                                {**r.config, **first.config}, first.config_file or r.config_file)
    raws = list(merged.values())
    notes: list[str] = []
    frames, infos = [], []
    per_run: dict[str, dict[str, tuple[str, Any]]] = {}
    for r in raws:
        f, per, info = run_rows(r, loss=loss, lr=lr, tokens=tokens, loss_unit=loss_unit,
                                duplicates=duplicates, seq_len=seq_len, notes=notes)
        frames.append(f)
        infos.append(info)
        per_run[r.name] = per
    given = _given(meta, settings, list(per_run), notes)
    for name, g in given.items():
        if "warmup_steps" in g:  # the caller knows the warmup the log does not show
            notes[:] = [n for n in notes if not n.startswith(f"run {name}: the logged LR is at its peak")]
    for name, per in per_run.items():
        for col, (where, value) in given.get(name, {}).items():
            if col in per and not _close(per[col][1], value):
                notes.append(f"run {name}: {col} {show_value(value)} from {where} used instead of "
                             f"{show_value(per[col][1])} from {per[col][0]}")
            per[col] = (where, value)
        for col, (where, value) in sorted(per.items()):
            if not where.startswith(("--", "meta")):
                notes.append(f"run {name}: {col} {show_value(value)} from {where}")
    table = pd.concat(frames, ignore_index=True)
    for col in _USER_SETTINGS:
        vals = [per_run[n].get(col, (None, None))[1] for n in table["run"]]
        if any(v is not None for v in vals):
            table[col] = pd.Series(vals, dtype=object if col in ("schedule", "parent") else "float64")
    for name, per in per_run.items():
        if "params" not in per:
            notes.append(f"run {name}: params unknown; plan and next need it (give --params or a "
                         "--meta file with a params column)")
    source = ", ".join(str(s) for s in sources)
    label = source if len(source) <= 200 else source[:197] + "..."
    runset = runs_from_frame(table, source=f"{label} (imported)")
    return Imported(table, tuple(infos), tuple(notes) + tuple(runset.excluded), runset)


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return str(a) == str(b)
    return bool(np.isclose(float(a), float(b), rtol=1e-9, atol=0.0))


def _given(meta: str | os.PathLike[str] | None, settings: dict[str, Any] | None,
           names: list[str], notes: list[str]) -> dict[str, dict[str, tuple[str, Any]]]:
    """Per-run values given by the caller: the metadata file's, then the settings for all."""
    out: dict[str, dict[str, tuple[str, Any]]] = {n: {} for n in names}
    if meta is not None:
        m = read_table(meta)
        if "run" not in m.columns:
            raise DataError(f"{meta}: missing column 'run' (found: {key_list(m.columns)}); a "
                            "metadata file needs a run column to join on")
        unused = [c for c in m.columns if c != "run" and c not in _USER_SETTINGS]
        if unused:
            notes.append(f"{meta}: column(s) {', '.join(map(str, unused))} not used")
        other, seen = [], set()
        for i, row in m.iterrows():
            rid = str(row["run"]).strip()
            if rid in seen:
                raise DataError(f"{meta}: column 'run', run {rid!r}, row {i + 1}: run listed again; "
                                "keep one metadata row per run")
            seen.add(rid)
            if rid not in out:
                other.append(rid)
                continue
            for col in _USER_SETTINGS:
                if col in m.columns and not is_missing(row[col]) and not (
                        isinstance(row[col], float) and math.isnan(row[col])):
                    v = row[col]
                    if col not in ("schedule", "parent"):
                        try:
                            v = as_number(v)
                        except (TypeError, ValueError):
                            raise DataError(f"{meta}: column {col!r}, run {rid!r}, row {i + 1}: "
                                            f"{show_value(v)} is not a number; give a number") from None
                    out[rid][col] = (f"meta {meta}", v)
        if other:
            notes.append(f"{meta}: {len(other)} run(s) not among the imported runs ignored: "
                         + ", ".join(other[:8]) + (" ..." if len(other) > 8 else ""))
    for col, v in (settings or {}).items():
        if v is None:
            continue
        if col not in _USER_SETTINGS:
            raise DataError(f"unknown per-run setting {col!r}; use one of {', '.join(_USER_SETTINGS)}")
        for n in names:
            out[n][col] = (f"--{col.replace('_', '-')}", v)
    return out


def write_runs(imported: Imported, path: str | os.PathLike[str]) -> Path:
    """Write the imported table atomically as CSV, Parquet or JSONL (by the extension)."""
    p = Path(path)
    kind = EXTENSIONS.get(p.suffix.lower())
    if kind is None:
        raise DataError(f"{p}: unknown file type {p.suffix or '(no extension)'!r}; name the runs "
                        f"file {', '.join(EXTENSIONS)}")
    if not p.parent.is_dir():
        raise DataError(f"{p}: folder {p.parent} does not exist; create it first")
    df = imported.frame
    if kind == "csv":
        return atomic_write(p, lambda tmp: df.to_csv(tmp, index=False))
    if kind == "parquet":
        return atomic_write(p, lambda tmp: df.to_parquet(tmp, index=False))
    records = df.astype(object).where(df.notna(), None).to_dict("records")
    text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)
    return atomic_write(p, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
