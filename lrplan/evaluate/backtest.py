"""Backtests: hold runs out, fit lrplan and the baselines on the rest, score the predictions.

Hold-out specs (``--holdout SPEC``), clauses joined by ``;``; a run is predicted when any
clause holds it out and fitted otherwise:

- ``schedule:PAT1,PAT2`` -- predict the runs whose name matches a pattern (exact or a glob
  such as ``100M_wsd*``), fit the rest;
- ``horizon:STEPS`` / ``horizon:tokens=D`` / ``horizon:ratio=R`` -- fit runs whose total
  steps / total tokens / tokens per parameter are <= the cutoff, predict longer ones;
- ``size:N`` -- fit runs with params <= N, predict larger ones; ``size:rolling`` makes one
  fold per cutoff (every size but the smallest and the largest, so each fold fits >= 2 sizes).

Curve data (`backtest_curves`) compares lrplan's curve model with the Huber point fit and its
block bootstrap and with the nearest run's curve. Sweeps of final losses (`backtest_sweep`)
compare LR rules (Step Law, Bjorck et al., nearest cell) and take lrplan's recommendation as
a callable, to be plugged in by the transfer model.

This module holds the entry points, the result and its renderings; the hold-out specs are
parsed in `lrplan.evaluate.holdout`, the folds fitted and scored in
`lrplan.evaluate.curve_backtest` and `lrplan.evaluate.sweep_backtest` (their public names are
importable from here).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from lrplan.data import RunSet
from lrplan.errors import DataError
from lrplan.evaluate.curve_backtest import map_folds, score_curve_folds
from lrplan.evaluate.holdout import Clause, Holdout, holdout_folds, parse_holdout
from lrplan.evaluate.sweep_backtest import (
    SWEEP_METHODS,
    Recommender,
    score_sweep_folds,
    sweep_frame,
    transfer_recommender,
)
from lrplan.files import atomic_write

__all__ = [
    "CURVE_METHODS",
    "SWEEP_METHODS",
    "Clause",
    "Holdout",
    "BacktestResult",
    "parse_holdout",
    "holdout_folds",
    "sweep_frame",
    "transfer_recommender",
    "Recommender",
    "backtest_curves",
    "backtest_sweep",
    "map_folds",
    "to_json",
    "markdown_table",
    "to_markdown",
    "write_report",
]

CURVE_METHODS: tuple[str, ...] = ("lrplan", "huber", "nearest")


# ============================================================ the result and the entry points


@dataclass(frozen=True)
class BacktestResult:
    """Per held-out item and method, the metrics; per method, their summary; fit wall times."""

    kind: Literal["curves", "sweep"]
    holdout: str
    per_run: pd.DataFrame
    summary: pd.DataFrame
    timings: dict[str, float]
    folds: tuple[dict, ...]
    notes: tuple[str, ...] = ()
    settings: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The JSON document of ``lrplan backtest --json`` (`to_json`)."""
        return to_json(self)

    def to_markdown(self) -> str:
        """The Markdown summary and per-run tables of ``lrplan backtest --report`` (`to_markdown`)."""
        return to_markdown(self)


def backtest_curves(
    runs: RunSet,
    holdout: str | Holdout,
    *,
    law: str = "auto",
    methods: Sequence[str] = CURVE_METHODS,
    seed: int = 0,
    chains: int = 2,
    num_warmup: int = 300,
    num_samples: int = 500,
    n_boot: int = 100,
    priors=None,
    jobs: int = 1,
    executor=None,
) -> BacktestResult:
    """Fit each method on a fold's runs, predict its held-out runs' curves, score them.

    Folds run one after another (``jobs=1``), in ``jobs`` processes on this machine, or on
    ``executor`` (a `concurrent.futures.Executor`, e.g. a Dask cluster's
    ``Client.get_executor()``): every fold is fitted with the same seed, so the tables are
    the same whichever way they ran.

    Methods: ``lrplan`` (`lrplan.curve.fit.fit_curves` + `lrplan.curve.predict.predict_curve`; the
    point error uses the posterior-mean law, intervals and scores the predictive draws),
    ``huber`` (`lrplan.evaluate.baselines.bootstrap_curves` of the same law, the annealing law for
    ``law="auto"``: point error from the full Huber fit,
    intervals and scores from ``n_boot`` block-bootstrap refits) and ``nearest``
    (`lrplan.evaluate.baselines.nearest_curve`; a point: no intervals, CRPS = absolute error).
    Held-out runs are scored at their logged steps after warmup.

    Returns
    -------
    BacktestResult
        ``per_run``: one row per (fold, run, method) with ``n_points``, ``mean_rel_err``,
        ``worst_rel_err``, ``final_rel_err``, ``cover50/80/95``, ``width50/80/95`` (median
        relative width), ``final_in50/80/95`` (1 if the last held-out loss lies inside the
        central interval, else 0), ``crps_rel`` (mean CRPS / loss) and ``lpd`` (mean log
        predictive density per point, Gaussian KDE of the draws); ``summary``: one row per
        method (coverage pooled over points, ``final_in*`` the share of runs);
        ``timings``: seconds spent fitting per method (lrplan: NUTS incl. calibration;
        huber: point fit + bootstrap), summed over folds.
    """
    holdout = parse_holdout(holdout) if isinstance(holdout, str) else holdout
    unknown = [m for m in methods if m not in CURVE_METHODS]
    if unknown:
        raise DataError(f"unknown method(s) {', '.join(unknown)}; use {', '.join(CURVE_METHODS)}")
    per_run, summary, timings, folds, notes = score_curve_folds(
        runs, holdout, law=law, methods=methods, seed=seed, chains=chains, num_warmup=num_warmup,
        num_samples=num_samples, n_boot=n_boot, priors=priors, jobs=jobs, executor=executor)
    settings = {"law": law, "seed": seed, "chains": chains, "num_warmup": num_warmup,
                "num_samples": num_samples, "n_boot": n_boot, "methods": list(methods)}
    return BacktestResult(kind="curves", holdout=holdout.spec, per_run=per_run, summary=summary,
                          timings=timings, folds=tuple(folds), notes=tuple(notes), settings=settings)


def backtest_sweep(
    df: pd.DataFrame,
    holdout: str | Holdout,
    *,
    recommend: Recommender | None = None,
    methods: Sequence[str] = SWEEP_METHODS,
) -> BacktestResult:
    """Fit LR rules on a fold's sweep cells, recommend an LR for each held-out cell, score it.

    Each held-out cell's empirical optimum comes from its own runs
    (`lrplan.evaluate.lr_baselines.cell_optima`). Scores per (cell, method): ``log_ratio`` =
    ln(recommended / optimum), ``excess_loss`` = loss at the recommended LR interpolated in the
    cell minus the cell's best loss (NaN outside the swept range), ``rel_excess`` = that over
    the best loss, ``above_diverged`` = the recommendation is >= the lowest diverged LR of the
    cell, and ``opt_in_interval`` = the optimum lies in the method's interval (only for a
    recommender that returns ``lr_lo``/``lr_hi``; NaN otherwise).

    Parameters
    ----------
    df : pandas.DataFrame
        One row per run: ``params, tokens, tokens_per_step, lr, loss, diverged``.
    holdout : str or Holdout
        ``size:N``, ``size:rolling``, ``horizon:tokens=D`` or ``horizon:ratio=R``.
    recommend : callable, optional
        lrplan's recommender (see `Recommender`); scored as method ``lrplan`` when given.
    methods : sequence of str
        Baselines among ``step_law``, ``bjorck``, ``nearest``.
    """
    holdout = parse_holdout(holdout) if isinstance(holdout, str) else holdout
    per_run, summary, timings, folds, notes, names = score_sweep_folds(
        df, holdout, recommend=recommend, methods=methods)
    return BacktestResult(kind="sweep", holdout=holdout.spec, per_run=per_run, summary=summary,
                          timings=timings, folds=tuple(folds), notes=tuple(notes),
                          settings={"methods": names})


# ============================================================================ rendering


def _clean(v):
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v


def _records(df: pd.DataFrame) -> list[dict]:
    return [{k: _clean(v) for k, v in rec.items()} for rec in df.to_dict(orient="records")]


def to_json(result: BacktestResult) -> dict:
    """A JSON-ready document of a backtest (NaN becomes null)."""
    return {"kind": result.kind, "holdout": result.holdout, "settings": result.settings,
            "folds": list(result.folds), "summary": _records(result.summary),
            "runs": _records(result.per_run),
            "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
            "notes": list(result.notes)}


def _fmt(v) -> str:
    v = _clean(v)
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown_table(df: pd.DataFrame) -> str:
    """A plain Markdown table of a data frame (numbers to 4 significant digits, NaN as '-')."""
    head = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def to_markdown(result: BacktestResult) -> str:
    """Markdown report of a backtest: settings, summary per method, per-run table, notes."""
    lines = [f"# Backtest ({result.kind}): holdout `{result.holdout}`", ""]
    if result.settings:
        lines += [", ".join(f"{k}={v}" for k, v in result.settings.items()), ""]
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
    lines += ["## Summary", "", markdown_table(result.summary), "", f"Fit wall time: {timing}", "",
              "## Per held-out item", "", markdown_table(result.per_run), ""]
    if result.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in result.notes] + [""]
    return "\n".join(lines)


def write_report(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file in the same folder, then rename)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
