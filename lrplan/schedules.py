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

Everything here is NumPy float64; the laws consume the arrays. Specs are parsed in
`lrplan.schedule_specs`, LR files read and written in `lrplan.lr_files`; their public names are
importable from here too.
"""

from __future__ import annotations

import math

import numpy as np

from lrplan.errors import ScheduleError
from lrplan.lr_files import read_lr_file, write_lr_file
from lrplan.schedule_specs import SCHEDULE_NAMES, SPEC_KEYS, parse_spec

__all__ = [
    "SCHEDULE_NAMES",
    "parse_spec",
    "lr_schedule",
    "read_lr_file",
    "write_lr_file",
    "unannealed_fraction",
    "steps_for",
]

#: Final LR fraction used by ``wsd:shape=exp`` when ``final=0`` (a geometric decay cannot reach 0).
_EXP_FLOOR = 1e-3


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
    keys = SPEC_KEYS[name]
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


def steps_for(tokens: float, tokens_per_step: float, *, minimum: int = 1) -> int:
    """Optimizer steps of a run of ``tokens`` tokens at ``tokens_per_step``: ``round(D / B)``.

    The one place lrplan turns a token horizon into steps; never fewer than ``minimum``.

    Raises
    ------
    ScheduleError
        If ``tokens`` or ``tokens_per_step`` is not a finite number > 0.
    """
    d, b = float(tokens), float(tokens_per_step)
    if not (math.isfinite(d) and d > 0 and math.isfinite(b) and b > 0):
        raise ScheduleError(f"tokens {tokens!r} and tokens_per_step {tokens_per_step!r} must be "
                            "finite numbers > 0 to give a number of steps")
    return max(int(round(d / b)), minimum)
