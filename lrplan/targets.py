"""What a prediction, a plan or a report is made for, and the finished results a report shows.

The defaults of a target live here, once: the steps a curve is predicted at
(`prediction_steps`), the per-step LR of a target given as an LR file or a schedule spec
(`target_lr`), the plan's target built from the runs' batch, schedule and warmup fraction
(`plan_target`), and the candidate schedules of a report (`schedule_candidates`).

`report_results` computes everything a report shows that is not in a fit or plan itself (the
fitted runs' in-sample predictions, the candidate schedules' predictions, the next runs) so that
`lrplan.report.build` only renders finished results.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from lrplan.bayes import Diagnostics
from lrplan.curve.fit import CurveFit, CurveMixture
from lrplan.curve.predict import CurvePrediction, predict_curve, summarize
from lrplan.data import Run, RunSet
from lrplan.errors import FitError, LrplanError
from lrplan.schedules import lr_schedule, read_lr_file, steps_for
from lrplan.transfer.decide import PlanResult, Target
from lrplan.transfer.nextrun import NextRunResult, next_run

__all__ = [
    "DEFAULT_SCHEDULES",
    "FittedRun",
    "ReportResults",
    "ScheduleCandidate",
    "ScheduleCandidates",
    "TargetError",
    "TargetPrediction",
    "check_steps",
    "default_schedule",
    "fitted_runs",
    "plan_target",
    "predict_fitted_runs",
    "predict_target",
    "prediction_steps",
    "report_results",
    "schedule_candidates",
    "target_lr",
]

#: Candidate schedules compared when none are given (at the longest fitted run's horizon).
DEFAULT_SCHEDULES: tuple[str, ...] = ("cosine:final=0.1", "wsd:decay=0.2", "constant")
#: Points of an in-sample predictive band per fitted run.
RUN_POINTS = 80


class TargetError(LrplanError, ValueError):
    """A target cannot be predicted or reported as asked."""


# ---------------------------------------------------------------- a curve's target


def prediction_steps(total: int, warmup: int, n: int = 50) -> np.ndarray:
    """``n`` steps spread evenly from the end of warmup (at least step 1) to ``total``."""
    return np.unique(np.linspace(max(warmup, 1), total, n).round().astype(np.int64))


def target_lr(lr_file=None, schedule: str | None = None, *, steps: int | None = None,
              peak_lr: float | None = None, warmup_steps: int | None = None
              ) -> tuple[np.ndarray, int, dict[str, str]]:
    """Per-step LR of a target, its warmup steps and its source (for the JSON).

    From an LR file (warmup: where a rising LR first reaches its maximum, unless given) or a
    schedule spec with ``steps`` and ``peak_lr`` (warmup: 0 unless given).
    """
    if lr_file is not None:
        lr = read_lr_file(lr_file)
        if warmup_steps is None:
            # a linear warmup ends where the LR first reaches its maximum
            warmup_steps = int(np.argmax(lr >= lr.max())) + 1 if lr[0] < lr.max() else 0
        return lr, warmup_steps, {"lr_file": str(lr_file)}
    if schedule is None or steps is None or peak_lr is None:
        raise TargetError("give an LR file, or a schedule spec with its steps and peak LR")
    warmup_steps = warmup_steps or 0
    lr = lr_schedule(schedule, steps=steps, peak_lr=peak_lr, warmup_steps=warmup_steps)
    return lr, warmup_steps, {"schedule": schedule}


@dataclass(frozen=True)
class TargetPrediction:
    """A curve predicted for a target run: the target, the prediction, the fit's diagnostics."""

    source: Mapping[str, str]  # {"schedule": spec} or {"lr_file": path}
    steps: int
    peak_lr: float
    warmup_steps: int
    params: float | None
    tokens_per_step: float | None
    prediction: CurvePrediction
    diagnostics: Diagnostics

    def to_json(self) -> dict:
        """The JSON document of ``lrplan predict --json``."""
        pred = self.prediction
        q = pred.quantiles()
        return {
            "target": {**self.source, "steps": self.steps, "peak_lr": self.peak_lr,
                       "warmup_steps": self.warmup_steps, "params": self.params,
                       "tokens_per_step": self.tokens_per_step,
                       "group": "fitted" if pred.group is not None else "new"},
            "curve": {"step": [int(s) for s in pred.steps], "mean": pred.mean.tolist(),
                      "quantiles": {k: v.tolist() for k, v in q.items()}},
            "final_loss": summarize(pred.final),
            "diagnostics": self.diagnostics.to_json(),
            "notes": list(pred.notes),
        }


def check_steps(steps: Sequence[int], total: int, warmup_steps: int) -> None:
    """Refuse a step to predict before the end of warmup (or step 1) or after ``total``."""
    bad = [s for s in steps if s > total or s < max(warmup_steps, 1)]
    if bad:
        raise TargetError(f"step {bad[0]} is outside [{max(warmup_steps, 1)}, {total}] "
                          "(after warmup, within the schedule)")


def predict_target(fit: CurveFit | CurveMixture, lr: np.ndarray, at_steps: Sequence[int] | None = None,
                   *, warmup_steps: int, source: Mapping[str, str], params: float | None = None,
                   tokens_per_step: float | None = None, seed: int = 0) -> TargetPrediction:
    """Predict a target's curve at ``at_steps`` (default: `prediction_steps`)."""
    total = len(lr)
    at = list(at_steps) if at_steps else prediction_steps(total, warmup_steps).tolist()
    check_steps(at, total, warmup_steps)
    pred = predict_curve(fit, lr, at, warmup_steps=warmup_steps, params=params,
                         tokens_per_step=tokens_per_step, seed=seed)
    return TargetPrediction(source=dict(source), steps=total, peak_lr=float(lr.max()),
                            warmup_steps=warmup_steps, params=params, tokens_per_step=tokens_per_step,
                            prediction=pred, diagnostics=fit.diagnostics)


# ---------------------------------------------------------------- a plan's target


def default_schedule(runs) -> tuple[str, float]:
    """The runs' most common schedule spec and median warmup fraction (for the target)."""
    specs = Counter(r.schedule for r in runs if r.schedule)
    spec = specs.most_common(1)[0][0] if specs else "cosine:final=0.1"
    fractions = sorted(r.warmup_steps / r.total_steps for r in runs if r.total_steps)
    return spec, fractions[len(fractions) // 2] if fractions else 0.0


def plan_target(runs, *, params: float, tokens: float, tokens_per_step: float,
                schedules: Sequence[str] = (), warmup_steps: int | None = None
                ) -> tuple[Target, tuple[str, ...]]:
    """The target run of a plan, and the other candidate schedules.

    The runs' most common schedule and median warmup fraction are the defaults; the target's
    steps are ``round(tokens / tokens_per_step)`` (at least 1). A bad spec fails here, before
    any fit.
    """
    spec, warm_frac = default_schedule(runs)
    schedules = tuple(schedules) or (spec,)
    steps = steps_for(tokens, tokens_per_step)
    warmup_steps = int(round(warm_frac * steps)) if warmup_steps is None else warmup_steps
    target = Target(params=params, tokens=tokens, tokens_per_step=tokens_per_step,
                    schedule=schedules[0], steps=steps, warmup_steps=warmup_steps)
    target.lr_shape()
    return target, schedules[1:]


# ---------------------------------------------------------------- a report's results


@dataclass(frozen=True)
class FittedRun:
    """A run of a curve fit: its points after warmup, its group, and the run when given."""

    name: str
    group: int
    steps: np.ndarray
    loss: np.ndarray
    run: Run | None


def fitted_runs(fit: CurveFit | CurveMixture, runs: RunSet | None = None) -> tuple[FittedRun, ...]:
    """The runs a curve fit saw, in order, with the matching run of ``runs`` where given."""
    obs = fit.observed
    names = list(dict.fromkeys(str(n) for n in obs["run"]))
    by_name = {r.name: r for r in runs} if runs is not None else {}
    out = []
    for n in names:
        m = np.asarray([str(x) == n for x in obs["run"]])
        order = np.argsort(obs["step"][m])
        out.append(FittedRun(n, int(obs["group"][m][0]), np.asarray(obs["step"][m])[order],
                             np.asarray(obs["loss"][m])[order], by_name.get(n)))
    return tuple(out)


def predict_fitted_runs(fit: CurveFit | CurveMixture, infos: Sequence[FittedRun],
                        seed: int = 0) -> dict[str, CurvePrediction]:
    """Each fitted run's in-sample predictive curve (those with a per-step LR)."""
    out = {}
    for info in infos:
        r = info.run
        if r is None or r.lr is None:
            continue
        n = len(info.steps)
        steps = info.steps[np.unique(np.round(np.linspace(0, n - 1, min(n, RUN_POINTS))).astype(int))]
        out[info.name] = predict_curve(fit, r.lr, steps, warmup_steps=r.warmup_steps, params=r.params,
                                       tokens_per_step=r.tokens_per_step, seed=seed)
    return out


@dataclass(frozen=True)
class ScheduleCandidate:
    """A candidate schedule of the target: its spec, per-step LR and predicted curve."""

    spec: str
    lr: np.ndarray
    pred: CurvePrediction


@dataclass(frozen=True)
class ScheduleCandidates:
    """The target's candidate schedules, the target in words, and notes on the defaults."""

    candidates: tuple[ScheduleCandidate, ...]
    target: str
    notes: tuple[str, ...] = ()


def _g3(x) -> str:
    if isinstance(x, int | np.integer):
        return str(x)
    return f"{float(x):.3g}" if np.isfinite(float(x)) else "—"


def _target_text(steps, peak_lr, warmup, params, tokens_per_step) -> str:
    parts = [f"{steps} steps", f"peak LR {_g3(peak_lr)}", f"{warmup} warmup steps"]
    if params:
        parts.append(f"N = {_g3(params)} parameters")
    if tokens_per_step:
        parts.append(f"{_g3(tokens_per_step)} tokens/step")
    return ", ".join(parts)


def schedule_candidates(fit: CurveFit | CurveMixture | None, plan: PlanResult | None,
                        infos: Sequence[FittedRun], schedules: Sequence[str] | None = None, *,
                        steps: int | None = None, peak_lr: float | None = None,
                        warmup_steps: int | None = None, params: float | None = None,
                        tokens_per_step: float | None = None, seed: int = 0) -> ScheduleCandidates:
    """Predict the target under each candidate schedule.

    Defaults: the plan's target and its predicted curves; without a plan, `DEFAULT_SCHEDULES`
    at the longest fitted run's steps and peak LR (a default that cannot be predicted is left
    out with a note; a schedule given that cannot be is an error).
    """
    notes: list[str] = []
    target = plan.target if plan is not None else None
    if target is not None:
        steps = steps or target.steps
        peak_lr = peak_lr or plan.recommended_lr
        warmup_steps = target.warmup_steps if warmup_steps is None else warmup_steps
        params = params or target.params
        tokens_per_step = tokens_per_step or target.tokens_per_step
        if not schedules and plan.curves:
            cands = [ScheduleCandidate(spec, lr_schedule(spec, steps=steps, peak_lr=peak_lr,
                                                         warmup_steps=warmup_steps), pred)
                     for spec, pred in plan.curves.items()]
            return ScheduleCandidates(tuple(cands), _target_text(steps, peak_lr, warmup_steps, params,
                                                                 tokens_per_step))
    if fit is None:
        raise TargetError("candidate schedules other than the plan's need a curve fit; give the "
                          "schedules to `lrplan plan --schedule` instead")
    if steps is None or peak_lr is None:
        longest = max(infos, key=lambda i: i.steps[-1])
        g = fit.config.groups[longest.group]
        r = longest.run
        steps = steps or (r.total_steps if r is not None else int(longest.steps[-1]))
        peak_lr = peak_lr or g.peak_lr
        if warmup_steps is None:
            warmup_steps = r.warmup_steps if r is not None else 0
        params = params or g.params
        tokens_per_step = tokens_per_step or g.tokens_per_step
        notes.append(f"Candidates are at the longest fitted run's horizon and peak LR ({longest.name}).")
    warmup_steps = warmup_steps or 0
    cands = []
    at = prediction_steps(steps, warmup_steps, RUN_POINTS)
    for spec in schedules or DEFAULT_SCHEDULES:
        lr = lr_schedule(spec, steps=steps, peak_lr=peak_lr, warmup_steps=warmup_steps)
        try:
            pred = predict_curve(fit, lr, at, warmup_steps=warmup_steps, params=params,
                                 tokens_per_step=tokens_per_step, seed=seed)
        except FitError as e:
            if schedules:
                raise
            notes.append(f"The default candidate {spec} cannot be predicted from this fit: {e}.")
            continue
        cands.append(ScheduleCandidate(spec, lr, pred))
    return ScheduleCandidates(tuple(cands), _target_text(steps, peak_lr, warmup_steps, params,
                                                         tokens_per_step), tuple(notes))


@dataclass(frozen=True)
class ReportResults:
    """The finished results a report shows: fits, plan, predictions and next runs."""

    fit: CurveFit | CurveMixture | None
    plan: PlanResult | None
    runs: tuple[FittedRun, ...]
    candidates: ScheduleCandidates
    run_predictions: Mapping[str, CurvePrediction] = field(default_factory=dict)
    next_runs: NextRunResult | None = None
    seed: int = 0


def report_results(fit: CurveFit | CurveMixture | None = None, *, plan: PlanResult | None = None,
                   runs: RunSet | None = None, schedules: Sequence[str] | None = None,
                   next_runs: NextRunResult | None = None, seed: int = 0, **target) -> ReportResults:
    """Compute what a report of ``fit`` and/or ``plan`` shows (see `schedule_candidates`).

    ``target`` takes `schedule_candidates`'s steps, peak_lr, warmup_steps, params and
    tokens_per_step. ``next_runs`` defaults to `lrplan.transfer.nextrun.next_run` of the plan.
    """
    if fit is None and plan is None:
        raise TargetError("a report needs a curve fit, a plan, or both")
    infos = fitted_runs(fit, runs) if fit is not None else ()
    cands = schedule_candidates(fit, plan, infos, schedules, seed=seed, **target)
    preds = predict_fitted_runs(fit, infos, seed) if fit is not None else {}
    if plan is not None and next_runs is None:
        next_runs = next_run(plan, seed=seed)
    return ReportResults(fit=fit, plan=plan, runs=infos, candidates=cands, run_predictions=preds,
                         next_runs=next_runs, seed=seed)
