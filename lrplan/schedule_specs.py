"""Schedule specs: the schedules' names and keys, and `parse_spec`.

A schedule spec is ``name`` or ``name:key=value,key=value``; values are numbers, lists of
numbers separated by ``|`` (``multistep:milestones=0.8|0.9``) or, for ``wsd``'s ``shape``, a
word. ``warmup=N`` is accepted by every schedule. `SPEC_KEYS` holds, per schedule, each key's
type, valid range and default; `lrplan.schedules.lr_schedule` builds the per-step LR.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from lrplan.errors import ScheduleError

__all__ = ["SCHEDULE_NAMES", "SPEC_KEYS", "SpecKey", "SpecValue", "parse_spec", "parse_number"]

SpecValue = float | int | str | tuple[float, ...]


@dataclass(frozen=True)
class SpecKey:
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


_WARMUP = SpecKey("int", "an integer >= 0 (number of warmup steps)", lambda v: v >= 0)
_FINAL = SpecKey("float", "a number in [0, 1] (final LR as a fraction of the peak)",
                 lambda v: 0.0 <= v <= 1.0)
_DECAY = SpecKey("float", "a number in (0, 1) (fraction of the total steps spent decaying)",
                 lambda v: 0.0 < v < 1.0)
_WSD_SHAPES = ("linear", "sqrt", "exp", "cosine")

SPEC_KEYS: dict[str, dict[str, SpecKey]] = {
    "constant": {},
    "cosine": {"final": replace(_FINAL, default=0.1)},
    "linear": {"final": replace(_FINAL, default=0.0)},
    "wsd": {
        "decay": replace(_DECAY, default=0.2),
        "final": replace(_FINAL, default=0.0),
        "shape": SpecKey("choice", "one of " + ", ".join(_WSD_SHAPES), lambda v: v in _WSD_SHAPES,
                         default="linear"),
    },
    "power": {
        "a": SpecKey("float", "a number > 0 (LR per token^b)", lambda v: v > 0.0, default=4.6),
        "b": SpecKey("float", "a number <= 0 (exponent; Shen et al. fit -0.51)",
                     lambda v: v <= 0.0, default=-0.51),
        "tokens_per_step": SpecKey("float", "a number > 0 (tokens per optimizer step)",
                                   lambda v: v > 0.0, required=True),
        "decay": replace(_DECAY, default=0.1),
    },
    "invsqrt": {
        "timescale": SpecKey("float", "a number > 0 (steps)", lambda v: v > 0.0),
    },
    "multistep": {
        "milestones": SpecKey("floats", "strictly increasing fractions of the total steps in (0, 1), "
                              "separated by '|', e.g. 0.8|0.9", _increasing_fractions,
                              default=(0.8, 0.9)),
        "gamma": SpecKey("float", "a number in (0, 1] (LR factor per milestone)",
                         lambda v: 0.0 < v <= 1.0, default=0.316),
    },
    "twostage": {
        "at": SpecKey("int", "an integer >= 1 (last step at the peak LR)", lambda v: v >= 1,
                      required=True),
        "ratio": SpecKey("float", "a number in (0, 1] (second-stage LR as a fraction of the peak)",
                         lambda v: 0.0 < v <= 1.0, required=True),
    },
}
for _keys in SPEC_KEYS.values():
    _keys["warmup"] = _WARMUP
del _keys

SCHEDULE_NAMES: tuple[str, ...] = tuple(SPEC_KEYS)


def parse_number(token: str) -> float | None:
    """A finite number from text, else None."""
    try:
        x = float(token)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _parse_value(spec: str, key: str, token: str, k: SpecKey) -> SpecValue:
    def bad(what: str) -> ScheduleError:
        return ScheduleError(
            f"schedule spec {spec!r}: {key}={token!r} {what}; {key} must be {k.rule}"
        )

    value: SpecValue
    if k.kind == "choice":
        value = token
    elif k.kind == "floats":
        parts = [parse_number(t.strip()) for t in token.split("|")]
        if any(x is None for x in parts):
            raise bad("is not a list of finite numbers")
        value = tuple(float(x) for x in parts)  # type: ignore[arg-type]
    else:
        x = parse_number(token)
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
    if name not in SPEC_KEYS:
        raise ScheduleError(
            f"schedule spec {spec!r}: unknown schedule {name!r}; "
            f"valid schedules: {', '.join(SCHEDULE_NAMES)}"
        )
    keys = SPEC_KEYS[name]
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


