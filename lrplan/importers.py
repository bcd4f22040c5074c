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
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from lrplan.data import EXTENSIONS, MAX_STEPS, RunSet, read_table, runs_from_frame
from lrplan.errors import DataError
from lrplan.files import atomic_write

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
LossUnit = Literal["nats", "bits", "perplexity"]

#: Loss keys, most preferred first: eval losses, then train losses.
EVAL_LOSS_KEYS = ("eval/loss", "val/loss", "eval_loss", "val_loss", "validation/loss",
                  "valid/loss", "eval/lm_loss", "lm loss validation", "lm_loss_validation",
                  "lm-loss-validation/lm loss", "validation_loss")
EVAL_LOSS_PATTERNS = ("eval/*/CrossEntropyLoss", "eval/*/loss", "val/*/loss")
TRAIN_LOSS_KEYS = ("train/loss", "train/CrossEntropyLoss", "train_loss", "loss", "lm loss",
                   "lm_loss", "train/lm_loss", "training_loss", "lm-loss-training/lm loss")
LR_KEYS = ("lr", "learning_rate", "train/learning_rate", "train/lr", "optim/learning_rate_group0",
           "learning-rate", "optim/lr", "trainer/learning_rate")
LR_PATTERNS = ("lr-*",)  # PyTorch Lightning's LearningRateMonitor
#: Step keys of tables; W&B's own ``_step`` counts log calls, so a trainer's step comes first.
STEP_KEYS = ("iter", "train/global_step", "trainer/global_step", "global_step", "step", "_step")
TOKEN_KEYS = ("throughput/total_tokens", "tokens", "num_input_tokens_seen",
              "train/num_input_tokens_seen", "total_tokens", "consumed_tokens", "consumed-tokens",
              "tokens_seen")
#: Per-run settings: keys of a config (or constant columns / tags of the log).
TOKENS_PER_STEP_KEYS = ("tokens_per_step", "batch_size_in_tokens", "global_batch_size_tokens",
                        "batch_tokens", "tokens_per_iter")
BATCH_KEYS = ("global_batch_size", "global_train_batch_size", "batch-size", "total_batch_size")
SEQ_LEN_KEYS = ("seq_len", "seq_length", "sequence_length", "max_sequence_length", "block_size",
                "max_seq_len", "max_seq_length", "context_length", "encoder_seq_length")
PARAMS_KEYS = ("params", "n_params", "num_params", "non_embedding_params", "num_parameters",
               "n_params_non_embedding", "model/num_params")
PEAK_LR_KEYS = ("peak_lr", "learning_rate_peak", "max_lr", "learning_rate", "lr")
WARMUP_KEYS = ("warmup_steps", "warmup_iters", "lr_warmup_iters", "lr_warmup_steps")

_PERPLEXITY = re.compile(r"(^|[/_\-. ])(ppl|perplexity)($|[/_\-. ])", re.IGNORECASE)
_BITS_PER_BYTE = re.compile(r"(^|[/_\-. ])(bpb|bits_per_byte|bits-per-byte)($|[/_\-. ])", re.IGNORECASE)
_BITS = re.compile(r"(^|[/_\-. ])(bits|bpt|bits_per_token|bpc)($|[/_\-. ])", re.IGNORECASE)
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_MISSING = frozenset({"", "na", "n/a", "null", "none"})
_USER_SETTINGS = ("params", "tokens_per_step", "peak_lr", "total_steps", "warmup_steps",
                  "schedule", "parent")


# --------------------------------------------------------------------------------------------
# What a reader returns
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Messages and values
# --------------------------------------------------------------------------------------------


def _fail(file: str, key: str | None, run: str | None, where: str | None, problem: str,
          fix: str) -> DataError:
    parts = [p for p in (None if key is None else f"key {key!r}",
                         None if run is None else f"run {run!r}", where) if p]
    loc = f"{file}: " + ", ".join(parts) if parts else file
    return DataError(f"{loc}: {problem}; {fix}")


def _missing(v: Any) -> bool:
    if v is None or v is pd.NA:
        return True
    if isinstance(v, str):
        return v.strip().lower() in _MISSING
    return False


def _number(v: Any) -> float:
    """A value as float (raises ValueError for text that is no number, or a bool)."""
    if isinstance(v, (bool, np.bool_)):
        raise ValueError
    if isinstance(v, str):
        return float(v.strip())
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    raise ValueError


def _show(v: Any) -> str:
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return f"{float(v):.12g}"
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _numbers(raw: RawRun, key: str, s: Series,
             fix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps and values of a series as floats, rows with a missing value left out.

    A missing step where a value is logged is an error; so is a value or step that is not a
    number. Returns (steps, values, index of each kept row).
    """
    steps, values, keep = [], [], []
    for i, (st, v) in enumerate(zip(s.steps, s.values, strict=True)):
        if _missing(v):
            continue
        try:
            x = _number(v)
        except (TypeError, ValueError):
            raise _fail(s.file or raw.file, key, raw.name, s.where[i], f"{_show(v)} is not a number",
                        fix) from None
        if _missing(st):
            raise _fail(s.file or raw.file, key, raw.name, s.where[i], "no step for this value",
                        "give every logged value its step")
        try:
            t = _number(st)
        except (TypeError, ValueError):
            raise _fail(s.file or raw.file, key, raw.name, s.where[i], f"step {_show(st)} is not a number",
                        "give the optimizer step as an integer >= 0") from None
        if not (math.isfinite(t) and t >= 0 and t == round(t)):
            raise _fail(s.file or raw.file, key, raw.name, s.where[i],
                        f"step {_show(st)} is not an integer >= 0",
                        "give the optimizer step as an integer >= 0")
        if t > MAX_STEPS:
            raise _fail(s.file or raw.file, key, raw.name, s.where[i],
                        f"step {_show(st)} is beyond {MAX_STEPS:.0e} optimizer steps",
                        "give the number of optimizer updates (not tokens or samples) as the step")
        steps.append(t)
        values.append(x)
        keep.append(i)
    return (np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64),
            np.asarray(keep, dtype=np.int64))


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


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


def _read_json(path: Path, what: str) -> Any:
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


def _read_config(path: Path) -> dict[str, Any]:
    doc = _read_json(path, "run config")
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


def _read_any_table(path: Path) -> pd.DataFrame:
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
            raise DataError(f"{path}: no column {step!r} for the step (found: {_cols(df.columns)}); "
                            "name the step column with --step")
        return step
    for k in STEP_KEYS:
        if k in df.columns and df[k].map(lambda v: not _missing(v)).any():
            return k
    raise DataError(f"{path}: no step column (looked for {', '.join(STEP_KEYS)}; found: "
                    f"{_cols(df.columns)}); name it with --step")


def _cols(cols: Sequence[Any], limit: int = 12) -> str:
    names = [repr(str(c)) for c in cols]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


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
    df = _read_any_table(p)
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
    df = _read_any_table(p)
    if df.empty:
        raise DataError(f"{p}: the table has no rows; give one row per logged step")
    step_col = _pick_step_column(df, p, step)
    if run_column is None and "run" in df.columns:
        run_column = "run"
    if run_column is None:
        return [RawRun(name or p.stem, str(p), "csv", _table_series(df, step_col))]
    if run_column not in df.columns:
        raise DataError(f"{p}: no column {run_column!r} for the run ids (found: {_cols(df.columns)}); "
                        "name it with --run-column")
    ids = df[run_column]
    empty = ids.map(_missing).to_numpy(dtype=bool)
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


def _event_dirs(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    found = sorted({f.parent for f in root.rglob("*tfevents*") if f.is_file()})
    return found


def read_tensorboard(path: str | os.PathLike[str]) -> list[RawRun]:
    """Read TensorBoard event files: a file, a run's folder, or a folder of run folders.

    Every scalar is kept (``size_guidance`` 0). Scalars written as tensors (TF2's
    ``tf.summary.scalar``) are read too.
    """
    try:
        from tensorboard.backend.event_processing import event_accumulator as ea
        from tensorboard.util import tensor_util
    except ImportError:
        raise DataError(f"{path}: reading TensorBoard logs needs the tensorboard package; "
                        "install it with pip install 'lrplan[import]'") from None
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: no such file or folder; check the path")
    dirs = _event_dirs(root)
    if not dirs:
        raise DataError(f"{root}: no TensorBoard event files (events.out.tfevents.*) in it; "
                        "point at a run's log folder")
    runs = []
    for d in dirs:
        name = (d.parent.name if d.is_file() else
                (root.name if d == root else str(d.relative_to(root)).replace(os.sep, "/")))
        acc = ea.EventAccumulator(str(d), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
        try:
            acc.Reload()
        except Exception as e:  # the reader's own errors (corrupt records, bad protos)
            raise DataError(f"{d}: TensorBoard cannot read these event files "
                            f"({type(e).__name__}); check that they are whole") from None
        tags = acc.Tags()
        series: dict[str, Series] = {}
        for tag in tags.get(ea.SCALARS, []):
            ev = acc.Scalars(tag)
            series[tag] = Series(np.array([e.step for e in ev], dtype=object),
                                 np.array([e.value for e in ev], dtype=object),
                                 tuple(f"step {e.step}" for e in ev))
        for tag in tags.get(ea.TENSORS, []):
            ev = acc.Tensors(tag)
            vals = []
            for e in ev:
                arr = tensor_util.make_ndarray(e.tensor_proto)
                vals.append(arr.item() if arr.size == 1 else f"a tensor of shape {arr.shape}")
            series.setdefault(tag, Series(np.array([e.step for e in ev], dtype=object),
                                          np.array(vals, dtype=object),
                                          tuple(f"step {e.step}" for e in ev)))
        runs.append(RawRun(name, str(d), "tensorboard", series))
    return runs


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
        doc = _read_json(f, "trainer state")
        if not isinstance(doc, dict) or not isinstance(doc.get("log_history"), list):
            raise DataError(f"{f}: key 'log_history': missing or not a list; a Trainer state has "
                            "a log_history list of logged rows")
        m = _CHECKPOINT.match(f.parent.name)
        name = (f.parent.parent if m else f.parent).name or f.stem
        steps, where, columns = [], [], {}
        for i, entry in enumerate(doc["log_history"]):
            if not isinstance(entry, dict):
                raise DataError(f"{f}: key 'log_history', entry {i + 1}: {_show(entry)} is not an "
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


def _mlflow_runs(root: Path) -> list[Path]:
    if (root / "metrics").is_dir():
        return [root]
    out = []
    for meta in sorted(root.rglob("meta.yaml")):
        d = meta.parent
        if (d / "metrics").is_dir() and ".trash" not in d.parts:
            out.append(d)
    return out


def read_mlflow(path: str | os.PathLike[str]) -> list[RawRun]:
    """Read runs of an MLflow file store (``mlruns``, an experiment's folder, or a run's).

    Reads the store's documented layout directly (MLflow 3 refuses to open a file store with
    its client unless told to): ``metrics/<key>`` lines ``timestamp value step``, the run name
    from ``tags/mlflow.runName``, the config from ``params/<key>``.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; point at an MLflow file store (mlruns) or a run "
                        "folder in it")
    dirs = _mlflow_runs(root)
    if not dirs:
        raise DataError(f"{root}: no MLflow runs (folders with metrics/) in it; point at the "
                        "mlruns folder")
    runs = []
    for d in dirs:
        tag = d / "tags" / "mlflow.runName"
        name = _read_text(tag).strip() if tag.is_file() else d.name
        series: dict[str, Series] = {}
        mdir = d / "metrics"
        for f in sorted(p for p in mdir.rglob("*") if p.is_file()):
            key = str(f.relative_to(mdir)).replace(os.sep, "/")
            st, vals, where = [], [], []
            for lineno, line in enumerate(_read_text(f).splitlines(), start=1):
                if not line.strip():
                    continue
                parts = line.split()
                if len(parts) not in (2, 3):
                    raise _fail(str(f), key, name or d.name, f"line {lineno}",
                                f"{_show(line)} is not 'timestamp value step'",
                                "check that the metric file is whole")
                vals.append(parts[1])
                st.append(parts[2] if len(parts) == 3 else "0")
                where.append(f"line {lineno}")
            series[key] = Series(np.array(st, dtype=object), np.array(vals, dtype=object),
                                 tuple(where), str(f))
        pdir = d / "params"
        cfg = ({str(p.relative_to(pdir)).replace(os.sep, "/"): _read_text(p).strip()
                for p in sorted(pdir.rglob("*")) if p.is_file()} if pdir.is_dir() else {})
        runs.append(RawRun(name or d.name, str(mdir), "mlflow", series, cfg, str(pdir)))
    return runs


def read_mlflow_client(uri: str) -> list[RawRun]:
    """Read every run of an MLflow tracking server or database with ``MlflowClient``.

    ``uri`` is a tracking URI (``sqlite:///mlflow.db``, ``http://host:5000``, ...); each
    metric's history comes from ``get_metric_history``, the config from the run's params.
    Needs the mlflow (or mlflow-skinny) package.
    """
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise DataError(f"{uri}: reading an MLflow tracking URI needs the mlflow package; install "
                        "it (pip install mlflow-skinny), or point at an mlruns folder") from None
    runs = []
    try:
        client = MlflowClient(tracking_uri=uri)
        experiments = client.search_experiments()
        for exp in sorted(experiments, key=lambda e: str(e.experiment_id)):
            token = None
            while True:
                page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token,
                                          order_by=["attributes.start_time ASC"])
                for run in page:
                    rid = run.info.run_id
                    series = {}
                    for key in sorted(run.data.metrics):
                        hist = client.get_metric_history(rid, key)
                        series[key] = Series(np.array([m.step for m in hist], dtype=object),
                                             np.array([m.value for m in hist], dtype=object),
                                             tuple(f"point {i + 1}" for i in range(len(hist))))
                    runs.append(RawRun(run.info.run_name or rid, f"{uri} run {rid}", "mlflow",
                                       series, dict(run.data.params), f"{uri} run {rid}"))
                token = page.token
                if not token:
                    break
    except MlflowException as e:
        first = str(e.message if hasattr(e, "message") else e).strip().splitlines()
        raise DataError(f"{uri}: MLflow cannot read it ({first[0] if first else type(e).__name__})"
                        "; check the tracking URI") from None
    if not runs:
        raise DataError(f"{uri}: no MLflow runs there; check the tracking URI")
    return runs


def _read_text(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot be read as text ({type(e).__name__}); check the "
                        "file") from None


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


# --------------------------------------------------------------------------------------------
# From series to a runs table
# --------------------------------------------------------------------------------------------


def _logged(raw: RawRun, key: str) -> bool:
    s = raw.series.get(key)
    return s is not None and any(not _missing(v) for v in s.values)


def _match(raw: RawRun, keys: Sequence[str], patterns: Sequence[str] = ()) -> list[str]:
    found = [k for k in keys if _logged(raw, k)]
    if found:
        return found[:1]
    return sorted(k for k in raw.series for pat in patterns
                  if fnmatch.fnmatchcase(k, pat) and _logged(raw, k))


def _choose_loss(raw: RawRun, loss: str | None) -> tuple[str, str]:
    if loss is not None:
        if not _logged(raw, loss):
            raise _fail(raw.file, loss, raw.name, None, "not logged in this run",
                        f"name a logged key with --loss (logged: {_cols(sorted(raw.series))})")
        kind = "eval" if (loss in EVAL_LOSS_KEYS or any(
            fnmatch.fnmatchcase(loss, p) for p in EVAL_LOSS_PATTERNS)) else "given"
        return loss, kind
    for keys, patterns, kind in ((EVAL_LOSS_KEYS, EVAL_LOSS_PATTERNS, "eval"),
                                 (TRAIN_LOSS_KEYS, (), "train")):
        found = _match(raw, keys, patterns)
        if len(found) > 1:
            raise _fail(raw.file, None, raw.name, None,
                        f"{len(found)} {kind} losses are logged ({_cols(found, 6)})",
                        "choose one with --loss")
        if found:
            return found[0], kind
    raise _fail(raw.file, None, raw.name, None,
                f"no loss key found (looked for {', '.join(EVAL_LOSS_KEYS[:4] + TRAIN_LOSS_KEYS[:4])}, "
                f"...; logged: {_cols(sorted(raw.series), 8)})", "name the loss key with --loss")


def _unit(raw: RawRun, key: str, unit: LossUnit) -> LossUnit:
    if _BITS_PER_BYTE.search(key):
        raise _fail(raw.file, key, raw.name, None,
                    "a loss in bits per byte cannot be turned into nats per token without the "
                    "bytes per token", "log or choose a loss in nats/token with --loss")
    named = "perplexity" if _PERPLEXITY.search(key) else ("bits" if _BITS.search(key) else "nats")
    if named != "nats" and unit == "nats":
        raise _fail(raw.file, key, raw.name, None,
                    f"the key's name says {named}, but lrplan fits nats/token",
                    f"give --loss-unit {named} to convert it, or choose another key with --loss")
    return unit


def _series_at(steps: np.ndarray, x_steps: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Linear interpolation of (x_steps, x) at steps; NaN outside the logged range."""
    out = np.full(steps.shape, np.nan)
    ok = np.isfinite(x)
    if not ok.any():
        return out
    xs, ys = x_steps[ok], x[ok]
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    inside = (steps >= xs[0]) & (steps <= xs[-1])
    out[inside] = np.interp(steps[inside], xs, ys)
    return out


def _dedupe(raw: RawRun, key: str, s: Series, steps: np.ndarray, values: np.ndarray,
            idx: np.ndarray, duplicates: str, notes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One value per step: identical repeats are dropped, differing ones refused or the last kept."""
    seen: dict[float, int] = {}
    keep = np.ones(steps.size, dtype=bool)
    same = replaced = 0
    for j, st in enumerate(steps):
        if st in seen:
            first = seen[st]
            if values[first] == values[j] or (np.isnan(values[first]) and np.isnan(values[j])):
                keep[j] = False
                same += 1
                continue
            if duplicates == "error":
                raise _fail(s.file or raw.file, key, raw.name, s.where[idx[j]],
                            f"step {int(st)} is logged again with another value "
                            f"({_show(values[j])}; first {_show(values[first])} at "
                            f"{s.where[idx[first]]})",
                            "a resumed run logged it twice: give --duplicates last to keep the "
                            "later value, or remove one")
            keep[first] = False
            replaced += 1
        seen[st] = j
    if same:
        notes.append(f"run {raw.name}: {same} repeated identical value(s) of {key!r} left out")
    if replaced:
        notes.append(f"run {raw.name}: {replaced} step(s) of {key!r} logged twice; the later "
                     "value kept (--duplicates last)")
    return steps[keep], values[keep], idx[keep]


def _setting(raw: RawRun, keys: Sequence[str],
             logged: Sequence[str] | None = None) -> tuple[str, float] | None:
    """A per-run number > 0 from the config or a logged series that holds one value.

    Config keys match exactly or as the end of a nested key; ``logged`` (default ``keys``)
    names the series to look at.
    """
    for k in keys:
        hits = [c for c in raw.config if c == k or c.endswith("." + k)]
        for c in hits:
            try:
                x = _number(raw.config[c])
            except (TypeError, ValueError):
                continue
            if math.isfinite(x) and x > 0:
                return f"config {c!r}", x
    for k in keys if logged is None else logged:
        if k in raw.series:
            vals = [v for v in raw.series[k].values if not _missing(v)]
            try:
                xs = {_number(v) for v in vals}
            except (TypeError, ValueError):
                continue
            if len(xs) == 1:
                x = xs.pop()
                if math.isfinite(x) and x > 0:
                    return f"logged {k!r}", x
    return None


def _warmup_from_lr(steps: np.ndarray, lr: np.ndarray) -> int | None:
    """Warmup steps read off a logged LR that rises linearly from 0 to its peak."""
    ok = np.isfinite(lr) & (lr > 0) & (steps >= 1)
    if ok.sum() < 2:
        return None
    s, y = steps[ok], lr[ok]
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    peak = y.max()
    if y[0] >= 0.99 * peak:
        return 0
    with np.errstate(over="ignore", divide="ignore"):
        w_float = s[0] * (peak / y[0])
    reach = int(s[np.argmax(y >= 0.99 * peak)])
    if not w_float <= reach:
        return reach
    w = max(int(round(w_float)), 1)
    ramp = s < w
    if np.all(np.abs(y[ramp] - peak * s[ramp] / w) <= 0.05 * peak):
        return w
    return reach


def _run_rows(raw: RawRun, *, loss: str | None, lr: str | None, tokens: str | None,
              loss_unit: LossUnit, duplicates: str, seq_len: float | None,
              notes: list[str]) -> tuple[pd.DataFrame, dict[str, Any], ImportedRun]:
    loss_key, kind = _choose_loss(raw, loss)
    unit = _unit(raw, loss_key, loss_unit)
    s = raw.series[loss_key]
    fix = "the loss must be a number (NaN or inf for a diverged step)"
    st, y, idx = _numbers(raw, loss_key, s, fix)
    st, y, idx = _dedupe(raw, loss_key, s, st, y, idx, duplicates, notes)
    if unit == "bits":
        y = y * math.log(2.0)
    elif unit == "perplexity":
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.where(y > 0, np.log(np.where(y > 0, y, 1.0)), np.nan)
    zero = st == 0
    if zero.any():
        notes.append(f"run {raw.name}: {int(zero.sum())} value(s) of {loss_key!r} at step 0 "
                     "(before the first update) left out")
        st, y, idx = st[~zero], y[~zero], idx[~zero]
    if st.size == 0:
        raise _fail(s.file or raw.file, loss_key, raw.name, None, "no value at a step >= 1",
                    "log the loss at least once after the first optimizer step")
    order = np.argsort(st, kind="stable")
    st, y = st[order], y[order]
    label = {"eval": "eval loss", "train": "train loss (no eval loss logged)",
             "given": "loss given"}[kind]
    notes.append(f"run {raw.name}: loss from {loss_key!r} ({label}), {st.size} point(s)")

    frame = {"run": raw.name, "step": st.astype(np.int64), "loss": y}
    lr_key = lr
    if lr_key is None:
        found = _match(raw, LR_KEYS, LR_PATTERNS)
        if len(found) > 1:
            raise _fail(raw.file, None, raw.name, None, f"several LRs are logged ({_cols(found, 6)})",
                        "choose one with --lr")
        lr_key = found[0] if found else None
    elif not _logged(raw, lr_key):
        raise _fail(raw.file, lr_key, raw.name, None, "not logged in this run",
                    f"name a logged key with --lr (logged: {_cols(sorted(raw.series))})")
    per: dict[str, Any] = {}
    if lr_key is not None:
        ls = raw.series[lr_key]
        lst, lv, lidx = _numbers(raw, lr_key, ls, "the LR must be a number >= 0")
        bad = ~np.isfinite(lv) | (lv < 0)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise _fail(ls.file or raw.file, lr_key, raw.name, ls.where[lidx[j]],
                        f"{_show(lv[j])} is not a finite LR >= 0", "log the LR in effect at the step")
        lst, lv, lidx = _dedupe(raw, lr_key, ls, lst, lv, lidx, duplicates, notes)
        frame["lr"] = _series_at(st, lst, lv)
        if np.isnan(frame["lr"]).all():
            notes.append(f"run {raw.name}: {lr_key!r} is not logged within the loss's steps; "
                         "no per-step LR")
            del frame["lr"]
        else:
            w = _warmup_from_lr(lst, lv)
            if w and w < st[-1]:
                per["warmup_steps"] = ("the logged LR's rise", w)
            elif w == 0 and lst.size and lst.min() > 1:
                notes.append(f"run {raw.name}: the logged LR is at its peak from its first step "
                             f"({int(lst.min())}): a warmup before it is not seen; give "
                             "--warmup-steps (or warmup_steps in --meta) if there was one")
    else:
        notes.append(f"run {raw.name}: no LR logged (looked for {', '.join(LR_KEYS[:5])}, ...); "
                     "give --lr KEY, or a schedule and peak_lr, for the curve model")
    tokens_key = tokens
    if tokens_key is None:
        found = _match(raw, TOKEN_KEYS)
        tokens_key = found[0] if found else None
    elif not _logged(raw, tokens_key):
        raise _fail(raw.file, tokens_key, raw.name, None, "not logged in this run",
                    "name a logged key with --tokens")
    if tokens_key is not None:
        ts = raw.series[tokens_key]
        tst, tv, tidx = _numbers(raw, tokens_key, ts, "tokens must be a number >= 0")
        bad = ~np.isfinite(tv) | (tv < 0)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise _fail(ts.file or raw.file, tokens_key, raw.name, ts.where[tidx[j]],
                        f"{_show(tv[j])} is not a token count >= 0",
                        "log the cumulative tokens seen")
        tst, tv, tidx = _dedupe(raw, tokens_key, ts, tst, tv, tidx, duplicates, notes)
        at = _series_at(st, tst, tv)
        if np.isfinite(at).any():
            frame["tokens"] = at

    for col, keys, logged in (("params", PARAMS_KEYS, None),
                              ("peak_lr", PEAK_LR_KEYS, PEAK_LR_KEYS[:3]),
                              ("tokens_per_step", TOKENS_PER_STEP_KEYS, None),
                              ("warmup_steps", WARMUP_KEYS, None)):
        got = _setting(raw, keys, logged)
        if got is not None:
            per[col] = got
    if "tokens_per_step" not in per and "tokens" not in frame:
        batch = _setting(raw, BATCH_KEYS)
        seq = ("--seq-len", seq_len) if seq_len is not None else _setting(raw, SEQ_LEN_KEYS)
        # nanoGPT's config: tokens per iteration = batch_size x block_size x grad. accumulation
        nano = [_setting(raw, (k,), ()) for k in ("batch_size", "block_size",
                                                  "gradient_accumulation_steps")]
        if batch is not None and seq is not None:
            per["tokens_per_step"] = (f"{batch[0]} x {seq[0]}", batch[1] * seq[1])
        elif all(nano):
            per["tokens_per_step"] = (" x ".join(w for w, _ in nano),
                                      math.prod(x for _, x in nano))
    info = ImportedRun(raw.name, raw.file, raw.format, loss_key, kind, lr_key,
                       tokens_key if "tokens" in frame else None, int(st.size))
    return pd.DataFrame(frame), per, info


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
        f, per, info = _run_rows(r, loss=loss, lr=lr, tokens=tokens, loss_unit=loss_unit,
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
                notes.append(f"run {name}: {col} {_show(value)} from {where} used instead of "
                             f"{_show(per[col][1])} from {per[col][0]}")
            per[col] = (where, value)
        for col, (where, value) in sorted(per.items()):
            if not where.startswith(("--", "meta")):
                notes.append(f"run {name}: {col} {_show(value)} from {where}")
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
            raise DataError(f"{meta}: missing column 'run' (found: {_cols(m.columns)}); a "
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
                if col in m.columns and not _missing(row[col]) and not (
                        isinstance(row[col], float) and math.isnan(row[col])):
                    v = row[col]
                    if col not in ("schedule", "parent"):
                        try:
                            v = _number(v)
                        except (TypeError, ValueError):
                            raise DataError(f"{meta}: column {col!r}, run {rid!r}, row {i + 1}: "
                                            f"{_show(v)} is not a number; give a number") from None
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
