"""The workflows behind ``lrplan plan``, ``next`` and ``backtest``, as functions for notebooks.

Each takes runs (a `RunSet` from `lrplan.load_runs`, or a path) and returns a typed result
with ``to_json()``; the CLI calls these and only parses and renders.

    sweep = lrplan.load_runs("sweep.csv")
    result = lrplan.plan(sweep, params=1.2e9, tokens=2e10)
    result.recommended_lr, result.to_json()["lr"]["optimum"]
    ranked = lrplan.next_runs(result)            # the small sweeps worth running next
    scores = lrplan.backtest(runs, "size:rolling")
    scores.summary                                # a pandas table
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from lrplan.data import RunSet, load_runs
from lrplan.errors import DataError
from lrplan.evaluate.backtest import BacktestResult
from lrplan.priors import PriorSet
from lrplan.targets import plan_target
from lrplan.transfer.decide import PlanResult, Target
from lrplan.transfer.nextrun import NextRunResult

__all__ = ["backtest", "next_runs", "plan"]


def _runs(runs: RunSet | str | os.PathLike[str]) -> RunSet:
    return runs if isinstance(runs, RunSet) else load_runs(runs)


def _target(runs: RunSet, points, *, params, tokens, tokens_per_step, schedules,
            warmup_steps) -> tuple[Target, tuple[str, ...]]:
    """The plan's target (`lrplan.targets.plan_target`), at the runs' batch by default."""
    if tokens_per_step is None:
        batches = set(points["tokens_per_step"])
        if len(batches) > 1:
            raise DataError("the runs use several batch sizes: give the target's tokens per step "
                            "(--tokens-per-step)")
        tokens_per_step = batches.pop()
    return plan_target(runs, params=params, tokens=tokens, tokens_per_step=tokens_per_step,
                       schedules=schedules, warmup_steps=warmup_steps)


def plan(
    runs: RunSet | str | os.PathLike[str],
    *,
    params: float,
    tokens: float,
    tokens_per_step: float | None = None,
    schedules: Sequence[str] = (),
    warmup_steps: int | None = None,
    compare_lrs: Sequence[float] = (),
    variants: Literal["default", "compare"] = "default",
    priors: PriorSet | None = None,
    batch: Literal["given", "auto"] = "given",
    calibrate: bool = True,
    seed: int = 0,
    chains: int = 2,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    progress: bool = False,
) -> PlanResult:
    """Fit the LR-transfer law to ``runs`` and plan the peak LR of a target run.

    The target has ``params`` parameters and trains on ``tokens`` tokens at ``tokens_per_step``
    (default: the runs' batch when they share one) under the first of ``schedules`` (default:
    the runs' most common schedule; the others are predicted for comparison) with
    ``warmup_steps`` (default: the runs' median warmup fraction). ``compare_lrs`` are priced
    against the recommendation. ``variants="compare"`` fits the lr* law and bowl variants and
    decides with the best by PSIS-LOO. ``calibrate`` measures the law's miss by leave-out refits
    (`lrplan.transfer.calibrate`). ``batch="auto"`` also chooses the target's batch: the result's
    ``batch`` is that `BatchPlan` and the target is planned at its recommended batch (a given
    ``tokens_per_step`` is then priced against it).
    """
    from lrplan.transfer.calibrate import calibrate_transfer
    from lrplan.transfer.decide import plan as decide
    from lrplan.transfer.decide import target_unannealed
    from lrplan.transfer.fit import compare_variants, fit_transfer, transfer_points

    runs = _runs(runs)
    points, notes = transfer_points(runs)
    provisional = tokens_per_step
    if batch == "auto" and provisional is None:  # decided after the fit
        provisional = math.exp(sum(map(math.log, points["tokens_per_step"])) / len(points))
    target, others = _target(runs, points, params=params, tokens=tokens, tokens_per_step=provisional,
                             schedules=schedules, warmup_steps=warmup_steps)
    kwargs = dict(priors=priors, seed=seed, chains=chains,
                  num_warmup=num_warmup, num_samples=num_samples, progress=progress,
                  notes=tuple(runs.excluded) + tuple(notes))
    fit = compare_variants(points, **kwargs)[0] if variants == "compare" else fit_transfer(points, **kwargs)
    if calibrate:
        fit = calibrate_transfer(fit, seed=seed)
    batch_plan = None
    if batch == "auto":
        from lrplan.transfer.batch import plan_batch

        batch_plan = plan_batch(fit, params, tokens, unannealed=target_unannealed(fit, target),
                                compare=() if tokens_per_step is None else (tokens_per_step,), seed=seed)
        target, others = _target(runs, points, params=params, tokens=tokens,
                                 tokens_per_step=batch_plan.recommended, schedules=schedules,
                                 warmup_steps=warmup_steps)
    result = decide(fit, target, compare_lrs=tuple(compare_lrs), schedules=others, seed=seed)
    return result if batch_plan is None else replace(result, batch=batch_plan)


def next_runs(
    planned: PlanResult,
    *,
    sizes: Sequence[float] | None = None,
    horizons: Sequence[float] | None = None,
    lr_factors: Sequence[float] = (0.5, 1.0, 2.0),
    goal: Literal["lr", "loss"] = "lr",
    seed: int = 0,
) -> NextRunResult:
    """Rank the small sweeps worth running next by what they would teach about ``planned``.

    A candidate is a sweep of ``lr_factors`` times its median optimal LR at one size and
    horizon (default: the fitted cells, and twice the largest size and its tokens), at the
    target's batch; ``goal`` "lr" ranks by the share of the variance of the target's log lr*
    each would remove per FLOP, "loss" by that of its final loss (`lrplan.transfer.nextrun`).
    """
    from lrplan.transfer.nextrun import default_candidates, next_run

    candidates = default_candidates(planned.fit, sizes, horizons, planned.target.tokens_per_step,
                                    tuple(lr_factors))
    return next_run(planned, candidates, goal=goal, seed=seed)


def backtest(
    runs: RunSet | str | os.PathLike[str],
    holdout: str,
    *,
    law: str = "auto",
    seed: int = 0,
    chains: int = 2,
    num_warmup: int = 400,
    num_samples: int = 1000,
    n_boot: int = 100,
    jobs: int = 1,
    executor=None,
) -> BacktestResult:
    """Hold runs out (``holdout``, e.g. ``"size:rolling"``), fit on the rest, score the predictions.

    Curves are scored against the practitioners' point fit with a bootstrap (``n_boot``
    refits) and the nearest fitted run; an LR sweep of final losses (every run final-only)
    against the Step Law, Bjorck et al.'s rule and the nearest swept cell. The folds of a
    curve backtest run in ``jobs`` processes or on ``executor`` (e.g. a Dask client's).
    Tables are pandas frames: ``summary`` and ``per_run``.
    """
    from lrplan.evaluate import backtest as bt

    runs = _runs(runs)
    if all(r.final_only for r in runs):
        recommend = bt.transfer_recommender(seed=seed, chains=chains, num_warmup=num_warmup,
                                            num_samples=num_samples)
        return bt.backtest_sweep(bt.sweep_frame(runs), holdout, recommend=recommend)
    return bt.backtest_curves(runs, holdout, law=law, seed=seed, chains=chains, num_warmup=num_warmup,
                              num_samples=num_samples, n_boot=n_boot, jobs=jobs, executor=executor)
