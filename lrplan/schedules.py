"""Learning-rate schedules: per-step LR arrays from spec strings and from LR files.

Conventions
-----------
A per-step LR array ``lr`` has length ``steps``; ``lr[i]`` is the LR in effect for optimizer
step ``i + 1`` (steps are 1-based: a loss logged at step ``s`` was measured after ``s``
updates). Every schedule starts with a linear warmup of ``W`` steps,
``lr[i] = peak_lr * (i + 1) / W`` for ``i < W``; its main part then runs over steps
``W + 1 .. T`` with the progress variable ``p = (s - W) / (T - W)`` in ``(0, 1]``.

A schedule spec is ``name`` or ``name:key=value,key=value``; values are numbers, lists of
numbers separated by ``|`` (``multistep:milestones=0.8|0.9``) or, for ``wsd``'s ``shape``, a
word. ``warmup=N`` is accepted by every schedule and overrides the ``warmup_steps`` argument.
See `lr_schedule` for the schedules and their keys.

Everything here is NumPy float64; the laws consume the arrays.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from lrplan.errors import ScheduleError
from lrplan.files import atomic_write

__all__ = [
    "SCHEDULE_NAMES",
    "parse_spec",
    "lr_schedule",
    "read_lr_file",
    "write_lr_file",
    "unannealed_fraction",
]

SpecValue = float | int | str | tuple[float, ...]

#: Final LR fraction used by ``wsd:shape=exp`` when ``final=0`` (a geometric decay cannot reach 0).
_EXP_FLOOR = 1e-3


# --------------------------------------------------------------------------------------------
# Spec keys
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    """One key of a schedule spec: how to parse it, its default and its valid range."""

    kind: Literal["float", "int", "floats", "choice"]
    rule: str  # what a valid value is, for messages: "a number in [0, 1]"
    ok: Callable[[SpecValue], bool]
    default: SpecValue | None = None  # None: no default (required, or computed)
    required: bool = False


def _increasing_fractions(v: SpecValue) -> bool:
    vals = tuple(v)  # type: ignore[arg-type]
    return (
        len(vals) > 0
        and all(0.0 < x < 1.0 for x in vals)
        and all(b > a for a, b in zip(vals, vals[1:], strict=False))
    )


_WARMUP = _Key("int", "an integer >= 0 (number of warmup steps)", lambda v: v >= 0)
_FINAL = _Key("float", "a number in [0, 1] (final LR as a fraction of the peak)",
              lambda v: 0.0 <= v <= 1.0)
_DECAY = _Key("float", "a number in (0, 1) (fraction of the total steps spent decaying)",
              lambda v: 0.0 < v < 1.0)
_WSD_SHAPES = ("linear", "sqrt", "exp", "cosine")

_KEYS: dict[str, dict[str, _Key]] = {
    "constant": {},
    "cosine": {"final": replace(_FINAL, default=0.1)},
    "linear": {"final": replace(_FINAL, default=0.0)},
    "wsd": {
        "decay": replace(_DECAY, default=0.2),
        "final": replace(_FINAL, default=0.0),
        "shape": _Key("choice", "one of " + ", ".join(_WSD_SHAPES), lambda v: v in _WSD_SHAPES,
                      default="linear"),
    },
    "power": {
        "a": _Key("float", "a number > 0 (LR per token^b)", lambda v: v > 0.0, default=4.6),
        "b": _Key("float", "a number <= 0 (exponent; Shen et al. fit -0.51)",
                  lambda v: v <= 0.0, default=-0.51),
        "tokens_per_step": _Key("float", "a number > 0 (tokens per optimizer step)",
                                lambda v: v > 0.0, required=True),
        "decay": replace(_DECAY, default=0.1),
    },
    "invsqrt": {
        "timescale": _Key("float", "a number > 0 (steps)", lambda v: v > 0.0),
    },
    "multistep": {
        "milestones": _Key("floats", "strictly increasing fractions of the total steps in (0, 1), "
                           "separated by '|', e.g. 0.8|0.9", _increasing_fractions,
                           default=(0.8, 0.9)),
        "gamma": _Key("float", "a number in (0, 1] (LR factor per milestone)",
                      lambda v: 0.0 < v <= 1.0, default=0.316),
    },
    "twostage": {
        "at": _Key("int", "an integer >= 1 (last step at the peak LR)", lambda v: v >= 1,
                   required=True),
        "ratio": _Key("float", "a number in (0, 1] (second-stage LR as a fraction of the peak)",
                      lambda v: 0.0 < v <= 1.0, required=True),
    },
}
for _keys in _KEYS.values():
    _keys["warmup"] = _WARMUP
del _keys

SCHEDULE_NAMES: tuple[str, ...] = tuple(_KEYS)


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def _parse_number(token: str) -> float | None:
    try:
        x = float(token)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _parse_value(spec: str, key: str, token: str, k: _Key) -> SpecValue:
    def bad(what: str) -> ScheduleError:
        return ScheduleError(
            f"schedule spec {spec!r}: {key}={token!r} {what}; {key} must be {k.rule}"
        )

    value: SpecValue
    if k.kind == "choice":
        value = token
    elif k.kind == "floats":
        parts = [_parse_number(t.strip()) for t in token.split("|")]
        if any(x is None for x in parts):
            raise bad("is not a list of finite numbers")
        value = tuple(float(x) for x in parts)  # type: ignore[arg-type]
    else:
        x = _parse_number(token)
        if x is None:
            raise bad("is not a finite number")
        if k.kind == "int":
            if not x.is_integer():
                raise bad("is not an integer")
            try:
                value = int(token)
            except ValueError:
                value = int(x)
        else:
            value = x
    if not k.ok(value):
        raise bad("is not allowed")
    return value


def parse_spec(spec: str) -> tuple[str, dict[str, SpecValue]]:
    """Split a schedule spec into its name and its keys, checked and converted.

    Parameters
    ----------
    spec : str
        ``name`` or ``name:key=value,key=value``. Lists use ``|`` (``milestones=0.8|0.9``).
        Whitespace around names, keys and values is ignored.

    Returns
    -------
    name : str
        One of `SCHEDULE_NAMES`.
    params : dict
        Only the keys given in the spec (defaults are not filled in), each converted to its
        type: ``int`` for ``warmup`` and ``at``, ``tuple[float, ...]`` for ``milestones``,
        ``str`` for ``shape``, ``float`` otherwise.

    Raises
    ------
    ScheduleError
        If the name or a key is unknown (the message lists the valid ones), a key is repeated,
        or a value cannot be parsed or is out of range (the message says the valid range).
        Keys that need the number of steps (e.g. whether a decay fits after the warmup) and
        required keys are checked by `lr_schedule`.

    Examples
    --------
    >>> parse_spec("wsd:decay=0.1,shape=sqrt")
    ('wsd', {'decay': 0.1, 'shape': 'sqrt'})
    >>> parse_spec("multistep:milestones=0.5|0.75,warmup=100")
    ('multistep', {'milestones': (0.5, 0.75), 'warmup': 100})
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ScheduleError(
            f"schedule spec {spec!r} is empty; give one of {', '.join(SCHEDULE_NAMES)}, "
            "optionally with keys: name:key=value,key=value"
        )
    name, sep, rest = spec.partition(":")
    name = name.strip()
    if name not in _KEYS:
        raise ScheduleError(
            f"schedule spec {spec!r}: unknown schedule {name!r}; "
            f"valid schedules: {', '.join(SCHEDULE_NAMES)}"
        )
    keys = _KEYS[name]
    valid = ", ".join(sorted(keys))
    params: dict[str, SpecValue] = {}
    if sep and not rest.strip():
        raise ScheduleError(
            f"schedule spec {spec!r}: nothing after ':'; write {name!r} alone or add "
            f"key=value pairs (valid keys for {name}: {valid})"
        )
    if not sep:
        return name, params
    for item in rest.split(","):
        key, eq, token = item.partition("=")
        key, token = key.strip(), token.strip()
        if not eq or not key or not token:
            raise ScheduleError(
                f"schedule spec {spec!r}: {item.strip()!r} is not of the form key=value "
                f"(valid keys for {name}: {valid})"
            )
        if key not in keys:
            raise ScheduleError(
                f"schedule spec {spec!r}: unknown key {key!r} for schedule {name!r}; "
                f"valid keys: {valid}"
            )
        if key in params:
            raise ScheduleError(f"schedule spec {spec!r}: key {key!r} is given twice")
        params[key] = _parse_value(spec, key, token, keys[key])
    return name, params


# --------------------------------------------------------------------------------------------
# Schedules: each builder returns the LR of the main-part steps ``s`` (float64 array of
# absolute steps W+1..T)
# --------------------------------------------------------------------------------------------


def _progress(s: np.ndarray, steps: int, warmup: int) -> np.ndarray:
    return (s - warmup) / (steps - warmup)


def _decay_start(spec: str, decay: float, steps: int, warmup: int) -> int:
    """Last step before a decay over the final ``decay`` fraction of the run: round(T(1-decay))."""
    start = round(steps * (1.0 - decay))
    if start >= steps:
        raise ScheduleError(
            f"schedule spec {spec!r}: decay={decay:g} of {steps} steps leaves no decay step; "
            f"increase decay to at least {1.0 / steps:.3g} or use more steps"
        )
    if start < warmup:
        raise ScheduleError(
            f"schedule spec {spec!r}: the decay would start at step {start}, inside the "
            f"{warmup}-step warmup; decrease decay to at most {1.0 - warmup / steps:.3g} "
            "or shorten the warmup"
        )
    return start


def _cosine_down(p: np.ndarray) -> np.ndarray:
    """1 at p = 0, 0 at p = 1, half-cosine in between."""
    return 0.5 * (1.0 + np.cos(np.pi * p))


def _constant(s, *, spec, steps, warmup, peak, params):
    return np.full_like(s, peak)


def _cosine(s, *, spec, steps, warmup, peak, params):
    final = params["final"]
    return peak * (final + (1.0 - final) * _cosine_down(_progress(s, steps, warmup)))


def _linear(s, *, spec, steps, warmup, peak, params):
    final = params["final"]
    return peak * (final + (1.0 - final) * (1.0 - _progress(s, steps, warmup)))


def _wsd(s, *, spec, steps, warmup, peak, params):
    final, shape = params["final"], params["shape"]
    start = _decay_start(spec, params["decay"], steps, warmup)
    q = np.clip((s - start) / (steps - start), 0.0, 1.0)
    if shape == "exp":
        floor = final if final > 0.0 else _EXP_FLOOR
        return peak * np.power(floor, q)
    down = {"linear": 1.0 - q, "sqrt": 1.0 - np.sqrt(q), "cosine": _cosine_down(q)}[shape]
    return peak * (final + (1.0 - final) * down)


def _power(s, *, spec, steps, warmup, peak, params):
    a, b, tps = params["a"], params["b"], params["tokens_per_step"]
    start = _decay_start(spec, params["decay"], steps, warmup)
    stable = np.minimum(peak, a * np.power(s * tps, b))
    at_start = min(peak, a * (start * tps) ** b) if start > 0 else peak
    q = (s - start) / (steps - start)
    return np.where(s <= start, stable, at_start * (1.0 - q))


def _invsqrt(s, *, spec, steps, warmup, peak, params):
    timescale = params.get("timescale")
    if timescale is None:
        timescale = float(warmup) if warmup > 0 else 1.0
    return peak / np.sqrt(1.0 + (s - warmup) / timescale)


def _multistep(s, *, spec, steps, warmup, peak, params):
    marks = [round(m * steps) for m in params["milestones"]]
    if marks[0] < warmup:
        raise ScheduleError(
            f"schedule spec {spec!r}: the first milestone falls at step {marks[0]}, inside the "
            f"{warmup}-step warmup; use milestones >= {warmup / steps:.3g} or shorten the warmup"
        )
    drops = np.searchsorted(np.asarray(marks, dtype=np.float64), s, side="left")
    return peak * np.power(params["gamma"], drops)


def _twostage(s, *, spec, steps, warmup, peak, params):
    at = params["at"]
    if not warmup <= at <= steps:
        raise ScheduleError(
            f"schedule spec {spec!r}: at={at} must lie between the end of warmup ({warmup}) "
            f"and the last step ({steps}); it is the last step at the peak LR"
        )
    return np.where(s <= at, peak, params["ratio"] * peak)


_BUILDERS = {
    "constant": _constant,
    "cosine": _cosine,
    "linear": _linear,
    "wsd": _wsd,
    "power": _power,
    "invsqrt": _invsqrt,
    "multistep": _multistep,
    "twostage": _twostage,
}


def _check_int(value, what: str, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ScheduleError(f"{what} must be an integer, got {value!r}; {fix}")
    return int(value)


def lr_schedule(spec: str, *, steps: int, peak_lr: float, warmup_steps: int = 0) -> np.ndarray:
    r"""Per-step LR of a schedule given by a spec string.

    Every schedule starts with a linear warmup of ``W`` steps to ``peak_lr``
    (``lr[i] = peak_lr * (i + 1) / W`` for ``i < W``); the main part runs over steps
    :math:`s = W+1 .. T` with progress :math:`p = (s - W) / (T - W) \in (0, 1]`.
    ``final`` is the final LR as a fraction of the peak :math:`\eta`.

    ``constant``
        :math:`\eta`.
    ``cosine`` (``final=0.1``)
        :math:`\eta\,[f + (1 - f)\,\tfrac12 (1 + \cos \pi p)]`.
    ``linear`` (``final=0``)
        :math:`\eta\,[f + (1 - f)(1 - p)]`.
    ``wsd`` (``decay=0.2, final=0, shape=linear``)
        Warmup-stable-decay: :math:`\eta` up to step :math:`s_0 = \mathrm{round}(T(1 -
        \mathrm{decay}))` (``decay`` is a fraction of the *total* steps), then a decay with
        :math:`q = (s - s_0) / (T - s_0)` reaching ``final * peak_lr`` at step T. ``shape``:
        ``linear`` :math:`f + (1-f)(1-q)`; ``sqrt`` :math:`f + (1-f)(1-\sqrt q)`; ``cosine``
        :math:`f + (1-f)\tfrac12(1 + \cos\pi q)`; ``exp`` geometric :math:`f^q` -- a
        geometric decay cannot reach 0, so with ``final=0`` it ends at ``1e-3 * peak_lr``.
    ``power`` (``a=4.6, b=-0.51, tokens_per_step`` required, ``decay=0.1``)
        Power scheduler: :math:`\min(\eta, a\,n^b)` with :math:`n = s \cdot` ``tokens_per_step``
        the tokens seen, up to :math:`s_0 = \mathrm{round}(T(1 - \mathrm{decay}))`, then linear
        from the value at :math:`s_0` to 0 at step T. Shen et al. write :math:`\beta a n^b`
        with :math:`\beta` the batch size; here that factor is folded into ``a``, which is in
        LR units per token\ :sup:`b`.
    ``invsqrt`` (``timescale`` = warmup steps, or 1 without warmup)
        :math:`\eta / \sqrt{1 + (s - W) / \mathrm{timescale}}`.
    ``multistep`` (``milestones=0.8|0.9, gamma=0.316``)
        :math:`\eta\,\gamma^k`, with k the number of milestone steps
        :math:`\mathrm{round}(m T)` strictly before step s (the LR drops after each milestone).
    ``twostage`` (``at`` and ``ratio`` required)
        :math:`\eta` up to step ``at`` inclusive, then ``ratio * peak_lr`` (the ``wsdcon``
        schedules of Luo et al., e.g. 3e-4 to step 8000 then 3e-5:
        ``twostage:at=8000,ratio=0.1``).

    Parameters
    ----------
    spec : str
        Schedule spec, see `parse_spec`; ``warmup=N`` in it overrides ``warmup_steps``.
    steps : int
        Total number of optimizer steps T >= 1.
    peak_lr : float
        Peak LR, finite and > 0.
    warmup_steps : int, default 0
        Linear warmup steps W, ``0 <= W < steps``.

    Returns
    -------
    numpy.ndarray
        float64 array of length ``steps``; ``lr[i]`` is the LR of step ``i + 1``. Never above
        ``peak_lr``.

    Raises
    ------
    ScheduleError
        For a malformed spec, a missing required key, or values that do not fit the number of
        steps (e.g. a decay that would start inside the warmup).

    References
    ----------
    Shen et al. 2024, "Power Scheduler", arXiv:2408.13359.
    Luo et al. 2025, "A Multi-Power Law for Loss Curve Prediction", arXiv:2503.12811.
    Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training
    Durations", arXiv:2405.18392 (WSD decay shapes).

    Examples
    --------
    >>> lr_schedule("cosine:final=0", steps=4, peak_lr=1.0, warmup_steps=2)
    array([0.5, 1. , 0.5, 0. ])
    """
    steps = _check_int(steps, "steps", "give the total number of optimizer steps")
    if steps < 1:
        raise ScheduleError(f"steps must be >= 1, got {steps}")
    try:
        peak = float(peak_lr)
    except (TypeError, ValueError):
        raise ScheduleError(f"peak_lr must be a number, got {peak_lr!r}") from None
    if not (math.isfinite(peak) and peak > 0.0):
        raise ScheduleError(f"peak_lr must be finite and > 0, got {peak_lr!r}")
    name, params = parse_spec(spec)
    if "warmup" in params:
        warmup, source = int(params.pop("warmup")), f"warmup in spec {spec!r}"
    else:
        warmup = _check_int(warmup_steps, "warmup_steps", "give a number of steps")
        source = "warmup_steps"
    if not 0 <= warmup < steps:
        raise ScheduleError(
            f"{source} = {warmup} must be >= 0 and < steps = {steps}; shorten the warmup"
        )
    keys = _KEYS[name]
    missing = [k for k, key in keys.items() if key.required and k not in params]
    if missing:
        example = ",".join(f"{k}=..." for k in missing)
        raise ScheduleError(
            f"schedule spec {spec!r}: schedule {name!r} needs {', '.join(missing)} "
            f"(e.g. {name}:{example}); {'; '.join(f'{k} is {keys[k].rule}' for k in missing)}"
        )
    full = {k: key.default for k, key in keys.items() if key.default is not None}
    full.update(params)
    s = np.arange(warmup + 1, steps + 1, dtype=np.float64)
    main = _BUILDERS[name](s, spec=spec, steps=steps, warmup=warmup, peak=peak, params=full)
    lr = np.empty(steps, dtype=np.float64)
    lr[:warmup] = peak * np.arange(1, warmup + 1, dtype=np.float64) / warmup if warmup else 0.0
    lr[warmup:] = main
    return np.minimum(lr, peak)


# --------------------------------------------------------------------------------------------
# LR files
# --------------------------------------------------------------------------------------------


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
        x = _parse_number(tok_step)
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



#: The annealing law's memory of an LR drop, as a fraction of the run: Tissue et al.'s momentum
#: 0.999 per step is a 1000-step memory in their ~20k-step runs.
ANNEAL_MEMORY = 0.05


def unannealed_fraction(lr: np.ndarray, *, memory: float = ANNEAL_MEMORY) -> np.ndarray:
    """How far a run is from annealed at each step: its lagged LR over its peak.

    An LR drop pays off over a memory of ``memory`` times the run's length (an exponential
    moving average, the annealing law's momentum), so just after a fast decay the run still
    behaves as if at a higher LR. 1 on a constant LR, near 0 at the end of a decay to 0. The
    warmup counts as peak, as in the annealing law.
    """
    from scipy.signal import lfilter

    lr = np.asarray(lr, dtype=np.float64)
    peak = float(lr.max()) if lr.size else 0.0
    if not peak > 0:
        return np.zeros_like(lr)
    momentum = 1.0 - 1.0 / max(1.0, memory * lr.size)
    x = np.where(np.arange(lr.size) < int(np.argmax(lr)), peak, lr) / peak
    lagged, _ = lfilter([1 - momentum], [1, -momentum], x, zi=[momentum])
    return np.clip(lagged, 0.0, 1.0)
