"""Load and validate runs files: the only module that reads input runs.

Long format, one row per logged measurement: ``run``, ``step``, ``loss`` required; ``lr`` and
``tokens`` per step; ``params``, ``tokens_per_step``, ``peak_lr``, ``total_steps``,
``warmup_steps``, ``schedule`` per run (constant within a run, or from a metadata file joined
on ``run``). Every problem is one `DataError` line naming file, column, run and row; what is
left out of a fit is reported in `RunSet.excluded`, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError, ScheduleError
from .schedules import lr_schedule

__all__ = ["Run", "RunSet", "load_runs", "read_table", "PER_RUN_COLUMNS"]

REQUIRED = ("run", "step", "loss")
PER_RUN_COLUMNS = ("params", "tokens_per_step", "peak_lr", "total_steps", "warmup_steps",
                   "schedule")
_NUMERIC_PER_RUN = ("params", "tokens_per_step", "peak_lr", "total_steps", "warmup_steps")
#: a loss above this multiple of the run's first finite loss counts as a divergence
EXPLODE_FACTOR = 1.5


@dataclass(frozen=True)
class Run:
    """One training run: its logged finite losses, per-step LR and per-run settings."""

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


@dataclass(frozen=True)
class RunSet:
    """The runs of one file, and one line per thing excluded or changed on the way."""

    runs: tuple[Run, ...]
    source: str
    excluded: tuple[str, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self):
        return iter(self.runs)

    def __getitem__(self, key: int | str) -> Run:
        if isinstance(key, str):
            for r in self.runs:
                if r.name == key:
                    return r
            raise KeyError(key)
        return self.runs[key]

    def to_frame(self) -> pd.DataFrame:
        """One row per run with its settings, number of points and final loss."""
        return pd.DataFrame([
            {"run": r.name, "params": r.params, "tokens_per_step": r.tokens_per_step,
             "peak_lr": r.peak_lr, "warmup_steps": r.warmup_steps,
             "total_steps": r.total_steps, "schedule": r.schedule, "n_points": int(r.steps.size),
             "final_loss": r.final_loss, "diverged": r.diverged, "final_only": r.final_only}
            for r in self.runs
        ])


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV, Parquet or JSONL table, chosen by extension."""
    path = Path(path)
    ext = path.suffix.lower()
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:
        if ext == ".csv":
            return pd.read_csv(path, dtype={"run": str, "schedule": str})
        if ext in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if ext in (".jsonl", ".ndjson"):
            return pd.read_json(path, lines=True, dtype={"run": str})
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot be read as {ext[1:]} ({str(e).splitlines()[0]})") from None
    raise DataError(f"{path}: unknown file type {ext!r}; use .csv, .parquet or .jsonl")


def _numeric(df: pd.DataFrame, col: str, path: Path, *, allow_nan: bool) -> np.ndarray:
    raw = df[col]
    num = pd.to_numeric(raw, errors="coerce")
    spelled_nan = raw.astype(str).str.strip().str.lower().isin(["nan", ""])
    bad = num.isna() & raw.notna() & ~spelled_nan  # text that is no number
    if not allow_nan:
        bad |= num.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        run = df["run"].iloc[i] if "run" in df else "?"
        raise DataError(f"{path}: column {col!r}, run {run!r}, row {i + 1}: "
                        f"{raw.iloc[i]!r} is not a number")
    return num.to_numpy(dtype=np.float64)


def _per_run_value(df: pd.DataFrame, col: str, run: str, rows: np.ndarray, path: Path):
    values = df[col].iloc[rows]
    present = values.dropna()
    if present.empty:
        return None
    if present.nunique() > 1:
        first = present.iloc[0]
        other = present[present != first].iloc[0]
        i = int(rows[values.index.get_loc(present[present != first].index[0])])
        raise DataError(f"{path}: column {col!r}, run {run!r}, row {i + 1}: value {other!r} "
                        f"differs from {first!r} earlier in the run; a per-run column must be "
                        "constant within a run (or move it to a --meta file)")
    return present.iloc[0]


def _check_positive(value, col: str, run: str, path: Path, *, allow_zero: bool = False):
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{path}: column {col!r}, run {run!r}: {value!r} is not a number") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise DataError(f"{path}: column {col!r}, run {run!r}: must be "
                        f"{'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return v


def _interpolated_lr(steps, lr, total, warmup, peak) -> np.ndarray:
    s = np.arange(1, total + 1)
    ok = np.isfinite(lr)
    xs, ys = steps[ok].astype(float), lr[ok]
    if warmup > 0 and xs[0] > warmup:
        xs, ys = np.r_[0.0, warmup, xs], np.r_[0.0, peak, ys]
    out = np.interp(s, xs, ys)
    if warmup > 0:
        out[:warmup] = peak * s[:warmup] / warmup
    return out


def load_runs(path: str | Path, *, meta: str | Path | None = None) -> RunSet:
    """Load a runs file (and an optional metadata file) into a validated `RunSet`.

    Raises
    ------
    DataError
        On any malformed input, naming the file, column, run and row.
    """
    path = Path(path)
    df = read_table(path).reset_index(drop=True)
    if df.empty:
        raise DataError(f"{path}: the file has no rows")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column {missing[0]!r} (found: {', '.join(map(str, df.columns))}); "
                        "a runs file needs run, step and loss")
    if df["run"].isna().any():
        i = int(np.flatnonzero(df["run"].isna().to_numpy())[0])
        raise DataError(f"{path}: column 'run', row {i + 1}: empty run id")
    df["run"] = df["run"].astype(str)
    notes: list[str] = []
    if meta is not None:
        mpath = Path(meta)
        m = read_table(mpath)
        if "run" not in m.columns:
            raise DataError(f"{mpath}: missing column 'run' to join on")
        m["run"] = m["run"].astype(str)
        dup = m["run"].duplicated()
        if dup.any():
            i = int(np.flatnonzero(dup.to_numpy())[0])
            raise DataError(f"{mpath}: column 'run', row {i + 1}: run {m['run'].iloc[i]!r} listed twice")
        unknown = sorted(set(m["run"]) - set(df["run"]))
        if unknown:
            notes.append(f"{mpath}: {len(unknown)} run(s) in the metadata have no rows in "
                         f"{path.name} and are ignored: {', '.join(unknown[:5])}")
        clash = [c for c in m.columns if c != "run" and c in df.columns]
        if clash:
            raise DataError(f"{mpath}: column {clash[0]!r} is in both the runs file and the "
                            "metadata; keep it in one")
        keep = [c for c in m.columns if c == "run" or c in PER_RUN_COLUMNS]
        df = df.merge(m[keep], on="run", how="left")
    steps_f = _numeric(df, "step", path, allow_nan=False)
    bad = (steps_f < 1) | (steps_f != np.round(steps_f))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: column 'step', run {df['run'].iloc[i]!r}, row {i + 1}: "
                        f"{df['step'].iloc[i]!r} is not an integer >= 1")
    loss = _numeric(df, "loss", path, allow_nan=True)
    lr_col = _numeric(df, "lr", path, allow_nan=True) if "lr" in df.columns else None
    if lr_col is not None and (lr_col < 0).any():
        i = int(np.flatnonzero(lr_col < 0)[0])
        raise DataError(f"{path}: column 'lr', run {df['run'].iloc[i]!r}, row {i + 1}: negative LR")
    tokens = _numeric(df, "tokens", path, allow_nan=True) if "tokens" in df.columns else None
    for c in _NUMERIC_PER_RUN:
        if c in df.columns:
            df[c] = _numeric(df, c, path, allow_nan=True)
    dup = df.duplicated(["run", "step"])
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{path}: column 'step', run {df['run'].iloc[i]!r}, row {i + 1}: step "
                        f"{int(steps_f[i])} logged twice for this run")

    runs = []
    for name, idx in df.groupby("run", sort=False).indices.items():
        idx = np.asarray(idx)
        order = idx[np.argsort(steps_f[idx], kind="stable")]
        st, ls = steps_f[order].astype(np.int64), loss[order]
        per = {c: (_per_run_value(df, c, name, order, path) if c in df.columns else None)
               for c in PER_RUN_COLUMNS}
        params = _check_positive(per["params"], "params", name, path)
        tps = _check_positive(per["tokens_per_step"], "tokens_per_step", name, path)
        if tps is None and tokens is not None and np.isfinite(tokens[order[-1]]):
            tps = float(tokens[order[-1]]) / float(st[-1])
        peak = _check_positive(per["peak_lr"], "peak_lr", name, path)
        warmup = _check_positive(per["warmup_steps"], "warmup_steps", name, path, allow_zero=True)
        warmup = int(warmup or 0)
        total = _check_positive(per["total_steps"], "total_steps", name, path)
        total = int(total) if total is not None else int(st[-1])
        if total < st[-1]:
            raise DataError(f"{path}: column 'total_steps', run {name!r}: {total} is before the "
                            f"last logged step {int(st[-1])}")
        if warmup >= total:
            raise DataError(f"{path}: column 'warmup_steps', run {name!r}: {warmup} must be "
                            f"below total_steps {total}")
        spec = per["schedule"]
        spec = None if spec is None or (isinstance(spec, float) and np.isnan(spec)) else str(spec)
        run_lr = lr_col[order] if lr_col is not None else None
        if peak is None and run_lr is not None and np.isfinite(run_lr).any():
            peak = float(np.nanmax(run_lr))
        lr = None
        if spec is not None and peak is not None:
            try:
                lr = lr_schedule(spec, steps=total, peak_lr=peak, warmup_steps=warmup)
            except ScheduleError as e:
                raise DataError(f"{path}: column 'schedule', run {name!r}: {e}") from None
        elif run_lr is not None and np.isfinite(run_lr).any():
            lr = _interpolated_lr(st, run_lr, total, warmup, peak)
        finite = np.isfinite(ls)
        first_ok = ls[finite][0] if finite.any() else np.nan
        exploded = finite & (ls > EXPLODE_FACTOR * first_ok)
        bad_rows = ~finite | exploded
        diverged = bool(bad_rows.any())
        div_step = int(st[np.argmax(bad_rows)]) if diverged else None
        if diverged:
            # after a divergence nothing of the run is trusted as a curve
            keep = st < div_step
            notes.append(f"run {name}: diverged at step {div_step} (non-finite or exploding "
                         f"loss); {int((~keep).sum())} row(s) from there on are not fitted as "
                         "a curve, the run is kept as evidence the LR was too high")
        else:
            keep = np.ones_like(finite)
        runs.append(Run(
            name=name, steps=st[keep], loss=ls[keep], lr=lr, params=params,
            tokens_per_step=tps, peak_lr=peak, warmup_steps=warmup, total_steps=total,
            schedule=spec, diverged=diverged, diverged_step=div_step,
            final_only=len(order) == 1,
        ))
    return RunSet(runs=tuple(runs), source=str(path), excluded=tuple(notes))
