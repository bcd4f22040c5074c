"""Hold-out specs of a backtest and the folds they make; see `lrplan.evaluate.backtest`."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from lrplan.data import Run
from lrplan.errors import DataError

__all__ = ["Clause", "Holdout", "parse_holdout", "run_attributes", "holdout_folds"]

_HELP = ("use schedule:NAME1,NAME2 (or a glob), horizon:STEPS, horizon:tokens=D, "
         "horizon:ratio=TOKENS_PER_PARAM, size:N or size:rolling; join clauses with ';'")


# ============================================================================ hold-out specs


@dataclass(frozen=True)
class Clause:
    """One hold-out rule; see the module docstring."""

    kind: Literal["schedule", "horizon", "size"]
    patterns: tuple[str, ...] = ()
    unit: Literal["steps", "tokens", "ratio", "params"] | None = None
    cutoff: float | None = None
    rolling: bool = False


@dataclass(frozen=True)
class Holdout:
    """A parsed hold-out spec."""

    spec: str
    clauses: tuple[Clause, ...]


def _number(text: str, spec: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise DataError(f"holdout {spec!r}: {text!r} is not a number; {_HELP}") from None
    if not (math.isfinite(v) and v > 0):
        raise DataError(f"holdout {spec!r}: the cutoff must be a number > 0")
    return v


def parse_holdout(spec: str) -> Holdout:
    """Parse a hold-out spec (see the module docstring); a bad spec raises `DataError`."""
    clauses = []
    for part in (p.strip() for p in spec.split(";")):
        kind, sep, arg = part.partition(":")
        kind, arg = kind.strip().lower(), arg.strip()
        if not sep or not arg:
            raise DataError(f"holdout {spec!r}: {part!r} has no argument; {_HELP}")
        if kind == "schedule":
            pats = tuple(p.strip() for p in arg.split(",") if p.strip())
            clauses.append(Clause("schedule", patterns=pats))
        elif kind == "horizon":
            key, eq, val = arg.partition("=")
            if not eq:
                clauses.append(Clause("horizon", unit="steps", cutoff=_number(arg, spec)))
            elif key.strip() in ("tokens", "ratio"):
                clauses.append(Clause("horizon", unit=key.strip(), cutoff=_number(val, spec)))
            else:
                raise DataError(f"holdout {spec!r}: unknown horizon unit {key.strip()!r}; {_HELP}")
        elif kind == "size":
            if arg.lower() == "rolling":
                clauses.append(Clause("size", unit="params", rolling=True))
            else:
                clauses.append(Clause("size", unit="params", cutoff=_number(arg, spec)))
        else:
            raise DataError(f"holdout {spec!r}: unknown kind {kind!r}; {_HELP}")
    if any(c.rolling for c in clauses) and len(clauses) > 1:
        raise DataError(f"holdout {spec!r}: size:rolling cannot be combined with other clauses")
    return Holdout(spec=spec, clauses=tuple(clauses))


def run_attributes(runs: Sequence[Run]) -> pd.DataFrame:
    """What hold-outs select runs by: name, params, total steps and total tokens, per run."""
    return pd.DataFrame({
        "name": [r.name for r in runs],
        "params": [np.nan if r.params is None else r.params for r in runs],
        "steps": [float(r.total_steps) for r in runs],
        "tokens": [r.total_steps * r.tokens_per_step if r.tokens_per_step else np.nan for r in runs],
    })


def _held(c: Clause, items: pd.DataFrame, spec: str) -> np.ndarray:
    if c.kind == "schedule":
        if "name" not in items:
            raise DataError(f"holdout {spec!r}: schedule hold-outs need named runs, not sweep cells")
        names = items["name"].astype(str)
        hit = np.array([any(fnmatch.fnmatchcase(n, p) for p in c.patterns) for n in names])
        if not hit.any():
            raise DataError(f"holdout {spec!r}: no run matches {', '.join(c.patterns)}; runs: "
                            + ", ".join(names[:8]) + (" ..." if len(names) > 8 else ""))
        return hit
    if c.unit == "ratio":
        value = items["tokens"] / items["params"]
    elif c.unit == "params":
        value = items["params"]
    else:
        if c.unit not in items:
            raise DataError(f"holdout {spec!r}: horizon in steps needs runs with steps; "
                            "use horizon:tokens=D for sweep cells")
        value = items[c.unit]
    value = value.to_numpy(np.float64)
    if np.isnan(value).any():
        need = {"ratio": "params and tokens_per_step", "params": "params",
                "tokens": "tokens_per_step", "steps": "total_steps"}[c.unit]
        raise DataError(f"holdout {spec!r}: every run needs {need} for this hold-out; give them "
                        "in the runs or metadata file")
    return value > c.cutoff


def holdout_folds(holdout: Holdout, items: pd.DataFrame) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Folds ``(label, fit_mask, predict_mask)`` of items with columns name/params/steps/tokens."""
    spec = holdout.spec
    if holdout.clauses[0].rolling:
        sizes = np.unique(items["params"].to_numpy(np.float64))
        if np.isnan(sizes).any() or sizes.size < 2:
            raise DataError(f"holdout {spec!r}: size:rolling needs params on every run and >= 2 sizes")
        cuts = sizes[1:-1] if sizes.size >= 3 else sizes[:1]
        folds = []
        for cut in cuts:
            test = items["params"].to_numpy(np.float64) > cut
            folds.append((f"size<={cut:.4g}", ~test, test))
        return folds
    test = np.zeros(len(items), dtype=bool)
    for c in holdout.clauses:
        test |= _held(c, items, spec)
    if test.all() or not test.any():
        raise DataError(f"holdout {spec!r}: it {'holds out every' if test.all() else 'holds out no'} "
                        "run; choose a cutoff or names that leave runs on both sides")
    return [(spec, ~test, test)]


