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
"""

from __future__ import annotations

import fnmatch
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from lrplan.data import Run, RunSet
from lrplan.errors import DataError, LrplanError
from lrplan.evaluate import metrics
from lrplan.evaluate.baselines import (
    bjorck_fit,
    bootstrap_curves,
    cell_optima,
    nearest_curve,
    nearest_lr_fit,
    step_law_fit,
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
    "backtest_curves",
    "backtest_sweep",
    "map_folds",
    "to_json",
    "markdown_table",
    "to_markdown",
    "write_report",
]

CURVE_METHODS: tuple[str, ...] = ("lrplan", "huber", "nearest")
SWEEP_METHODS: tuple[str, ...] = ("step_law", "bjorck", "nearest")

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


def _attrs_of_runs(runs: Sequence[Run]) -> pd.DataFrame:
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


# ============================================================================ results


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


_CURVE_COLUMNS = ["mean_rel_err", "worst_rel_err", "final_rel_err"] + [
    f"{k}{int(100 * lv)}" for k in ("cover", "width", "final_in") for lv in metrics.LEVELS
] + ["crps_rel", "lpd"]


def _score_curve(point: np.ndarray, draws: np.ndarray, y: np.ndarray) -> dict:
    mean_err, worst = metrics.curve_errors(point, y)
    row = {"n_points": int(y.size), "mean_rel_err": mean_err, "worst_rel_err": worst,
           "final_rel_err": metrics.final_relative_error(point, y)}
    for lv in metrics.LEVELS:
        row[f"cover{int(100 * lv)}"] = metrics.coverage(draws, y, lv)
    for lv in metrics.LEVELS:
        row[f"width{int(100 * lv)}"] = metrics.relative_width(draws, y, lv)
    # The final loss is what a plan is judged by, and one per run: unlike the points of a
    # curve, these are about as many independent checks as there are held-out runs.
    for lv in metrics.LEVELS:
        row[f"final_in{int(100 * lv)}"] = metrics.coverage(draws[:, -1:], y[-1:], lv)
    row["crps_rel"] = float(np.mean(metrics.crps_draws(draws, y) / y))
    row["lpd"] = float(np.mean(metrics.log_predictive_density(draws, y)))
    return row


def _summarize_curves(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per method: errors, widths, CRPS, LPD averaged over runs; coverage pooled over points."""
    rows = []
    for method, g in per_run.groupby("method", sort=False):
        ok = g[g["n_points"] > 0]
        row = {"method": method, "runs": int(len(ok))}
        for c in _CURVE_COLUMNS:
            vals = ok[c].to_numpy(np.float64)
            if c.startswith("cover"):
                w = ok["n_points"].to_numpy(np.float64)
                good = np.isfinite(vals)
                row[c] = float(np.sum(vals[good] * w[good]) / np.sum(w[good])) if good.any() else np.nan
            else:
                row[c] = float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _eval_steps(r: Run) -> np.ndarray:
    return r.steps[(r.steps >= max(r.warmup_steps, 1)) & (r.steps <= r.total_steps)]

@dataclass(frozen=True)
class _CurveFold:
    """One fold of `backtest_curves`: everything its fits need, picklable for other processes."""

    label: str
    train: RunSet
    test: tuple[Run, ...]
    methods: tuple[str, ...]
    law: str
    priors: object
    seed: int
    chains: int
    num_warmup: int
    num_samples: int
    n_boot: int

    def __call__(self) -> tuple[list[dict], list[str], dict[str, float]]:
        """Fit each method on the fold's runs and score its held-out runs: rows, notes, timings."""
        from lrplan.curve.fit import fit_curves
        from lrplan.curve.predict import predict_curve

        _worker_setup()
        label, train, test, methods, law, seed = (self.label, self.train, self.test, self.methods,
                                                  self.law, self.seed)
        rows, notes = [], []
        timings = {m: 0.0 for m in methods}
        preds: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {m: {} for m in methods}
        if "lrplan" in methods:
            t0 = time.perf_counter()
            try:
                fit = fit_curves(train, law=law, priors=self.priors, seed=seed, chains=self.chains,
                                 num_warmup=self.num_warmup, num_samples=self.num_samples)
            except LrplanError as e:
                fit = None
                notes.append(f"fold {label}: lrplan fit failed: {e}")
            timings["lrplan"] += time.perf_counter() - t0
            if fit is not None and hasattr(fit, "scores"):
                notes.append(f"fold {label}: laws weighed " + ", ".join(
                    f"{s.law} {s.weight:.2f}" for s in fit.scores))
            if fit is not None and fit.diagnostics.misfit:
                notes.append(f"fold {label}: lrplan's fit misses its own runs: "
                             + "; ".join(fit.diagnostics.misfit))
            for r in test if fit is not None else []:
                try:
                    p = predict_curve(fit, r.lr, _eval_steps(r), warmup_steps=r.warmup_steps,
                                      params=r.params, tokens_per_step=r.tokens_per_step, seed=seed)
                except LrplanError as e:
                    notes.append(f"fold {label}: lrplan cannot predict {r.name}: {e}")
                    continue
                preds["lrplan"][r.name] = (p.law.mean(axis=0), p.draws)
        if "huber" in methods:
            t0 = time.perf_counter()
            targets = [(r.name, r.lr, _eval_steps(r), r.warmup_steps, r.params) for r in test]
            try:
                # practitioners fit the annealing law by Huber when no law is named
                boot = bootstrap_curves(list(train), targets, law="annealing" if law == "auto" else law,
                                        n_boot=self.n_boot, seed=seed)
                for r in test:
                    preds["huber"][r.name] = (boot.point[r.name], boot.draws[r.name])
                if boot.failed:
                    notes.append(f"fold {label}: {boot.failed} of {self.n_boot} bootstrap refits failed")
            except LrplanError as e:
                notes.append(f"fold {label}: huber baseline failed: {e}")
            timings["huber"] += time.perf_counter() - t0
        if "nearest" in methods:
            t0 = time.perf_counter()
            for r in test:
                point, src = nearest_curve(list(train), r, _eval_steps(r))
                preds["nearest"][r.name] = (point, point[None, :])
            timings["nearest"] += time.perf_counter() - t0
        for r in test:
            keep = (r.steps >= max(r.warmup_steps, 1)) & (r.steps <= r.total_steps)
            y = r.loss[keep]
            for m in methods:
                base = {"fold": label, "run": r.name, "method": m, "params": r.params,
                        "total_steps": r.total_steps}
                if r.name in preds[m]:
                    point, draws = preds[m][r.name]
                    rows.append({**base, **_score_curve(point, draws, y)})
                else:
                    rows.append({**base, "n_points": 0, **{c: np.nan for c in _CURVE_COLUMNS}})
        return rows, notes, timings


def _worker_setup() -> None:
    """JAX as lrplan runs it (64-bit), in whichever process a fold lands."""
    import jax

    jax.config.update("jax_enable_x64", True)


def _call(task):
    return task()


def map_folds(tasks: Sequence[Callable], *, jobs: int = 1, executor=None) -> list:
    """Each task's result, in order: here (``jobs=1``), in ``jobs`` processes, or on ``executor``.

    ``executor`` is any `concurrent.futures.Executor` (a Dask cluster's
    ``Client.get_executor()``, a ``ProcessPoolExecutor``); the tasks must pickle. New
    processes are spawned (JAX does not survive a fork) with this process's environment,
    ``XLA_FLAGS`` included.
    """
    if executor is None and (jobs <= 1 or len(tasks) <= 1):
        return [t() for t in tasks]
    if executor is not None:
        return list(executor.map(_call, tasks))
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_call, tasks))



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
    all_runs = list(runs)
    notes, folds, tasks = list(runs.excluded), [], []
    for label, fit_mask, test_mask in holdout_folds(holdout, _attrs_of_runs(all_runs)):
        train = RunSet(runs=tuple(r for r, k in zip(all_runs, fit_mask, strict=True) if k),
                       source=runs.source)
        test = []
        for r, k in zip(all_runs, test_mask, strict=True):
            if not k:
                continue
            if r.lr is None or r.diverged or _eval_steps(r).size == 0:
                why = "no per-step LR" if r.lr is None else (
                    "diverged" if r.diverged else "no logged point after warmup")
                notes.append(f"fold {label}: held-out run {r.name} not scored ({why})")
                continue
            test.append(r)
        folds.append({"fold": label, "fit": [r.name for r in train], "predict": [r.name for r in test]})
        if test:
            tasks.append(_CurveFold(label, train, tuple(test), tuple(methods), law, priors, seed,
                                    chains, num_warmup, num_samples, n_boot))
    rows, timings = [], {m: 0.0 for m in methods}
    # folds are independent and seeded alike: any order, any process, the same numbers
    for fold_rows, fold_notes, fold_times in map_folds(tasks, jobs=jobs, executor=executor):
        rows += fold_rows
        notes += fold_notes
        for m, t in fold_times.items():
            timings[m] += t
    per_run = pd.DataFrame(rows, columns=["fold", "run", "method", "params", "total_steps",
                                          "n_points"] + _CURVE_COLUMNS)
    settings = {"law": law, "seed": seed, "chains": chains, "num_warmup": num_warmup,
                "num_samples": num_samples, "n_boot": n_boot, "methods": list(methods)}
    return BacktestResult(kind="curves", holdout=holdout.spec, per_run=per_run,
                          summary=_summarize_curves(per_run), timings=timings, folds=tuple(folds),
                          notes=tuple(notes), settings=settings)


# ============================================================================ LR sweeps


def sweep_frame(runs: RunSet) -> pd.DataFrame:
    """Final-loss points of a runs file as a sweep table (params, tokens, ..., diverged)."""
    rows = []
    for r in runs:
        if r.params is None or r.tokens_per_step is None or r.peak_lr is None:
            raise DataError(f"{runs.source}: run {r.name} lacks params, tokens_per_step or peak_lr; "
                            "an LR sweep backtest needs all three for every run")
        rows.append({"run": r.name, "params": r.params, "tokens": r.total_steps * r.tokens_per_step,
                     "tokens_per_step": r.tokens_per_step, "lr": r.peak_lr, "loss": r.final_loss,
                     "diverged": r.diverged})
    return pd.DataFrame(rows)


#: ``recommend(train, cells) -> DataFrame`` with column ``lr`` (and optionally ``lr_lo``,
#: ``lr_hi``: an interval for the optimum), one row per row of ``cells`` (columns params,
#: tokens, tokens_per_step).
Recommender = Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]

def transfer_recommender(**fit_kwargs) -> Recommender:
    """The recommender of lrplan for `backtest_sweep`: fit the transfer model, plan each cell.

    ``lr`` is the plan's recommended LR, ``lr_lo``/``lr_hi`` the 80% interval of the cell's
    optimum (with the law's miss calibrated by leave-out refits, as `lrplan plan` does). Sweep
    tables carry no schedule, so runs and targets count as annealed alike.
    """
    from lrplan.transfer.calibrate import calibrate_transfer
    from lrplan.transfer.decide import Target, plan
    from lrplan.transfer.fit import POINT_COLUMNS, fit_transfer

    def recommend(train: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
        pts = train.assign(run=[f"r{i}" for i in range(len(train))], unannealed=np.nan, final=True)
        fit = calibrate_transfer(fit_transfer(pts[list(POINT_COLUMNS)], **fit_kwargs),
                                 seed=fit_kwargs.get("seed", 0))
        out = []
        for c in cells.itertuples(index=False):
            steps = max(int(round(c.tokens / c.tokens_per_step)), 1)
            res = plan(fit, Target(c.params, c.tokens, c.tokens_per_step, "constant", steps, 0))
            lo, hi = np.quantile(res.lr_star, [0.1, 0.9])
            out.append({"lr": res.recommended_lr, "lr_lo": lo, "lr_hi": hi})
        return pd.DataFrame(out)

    return recommend


_SWEEP_COLUMNS = ["lr_rec", "lr_opt", "vertex", "log_ratio", "excess_loss", "rel_excess",
                  "above_diverged", "opt_in_interval"]


def backtest_sweep(
    df: pd.DataFrame,
    holdout: str | Holdout,
    *,
    recommend: Recommender | None = None,
    methods: Sequence[str] = SWEEP_METHODS,
) -> BacktestResult:
    """Fit LR rules on a fold's sweep cells, recommend an LR for each held-out cell, score it.

    Each held-out cell's empirical optimum comes from its own runs (`lrplan.evaluate.baselines.
    cell_optima`). Scores per (cell, method): ``log_ratio`` = ln(recommended / optimum),
    ``excess_loss`` = loss at the recommended LR interpolated in the cell minus the cell's best
    loss (NaN outside the swept range), ``rel_excess`` = that over the best loss,
    ``above_diverged`` = the recommendation is >= the lowest diverged LR of the cell, and
    ``opt_in_interval`` = the optimum lies in the method's interval (only for a recommender
    that returns ``lr_lo``/``lr_hi``; NaN otherwise).

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
    fits = {"step_law": step_law_fit, "bjorck": bjorck_fit, "nearest": nearest_lr_fit}
    unknown = [m for m in methods if m not in fits]
    if unknown:
        raise DataError(f"unknown method(s) {', '.join(unknown)}; use {', '.join(SWEEP_METHODS)}")
    d = df.copy()
    d["diverged"] = d["diverged"].astype(bool) | ~np.isfinite(d["loss"].astype(np.float64))
    items = pd.DataFrame({"params": d["params"].astype(np.float64), "tokens": d["tokens"].astype(np.float64)})
    rows, notes, folds = [], [], []
    names = list(methods) + (["lrplan"] if recommend is not None else [])
    timings = {m: 0.0 for m in names}
    for label, fit_mask, test_mask in holdout_folds(holdout, items):
        train, test = d[fit_mask], d[test_mask]
        cells = cell_optima(test)
        folds.append({"fold": label, "fit_runs": int(len(train)), "predict_cells": int(len(cells))})
        recs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for m in names:
            t0 = time.perf_counter()
            nan = np.full(len(cells), np.nan)
            try:
                if m == "lrplan":
                    out = recommend(train.reset_index(drop=True),
                                    cells[["params", "tokens", "tokens_per_step"]].reset_index(drop=True))
                    out = pd.DataFrame(out)
                    recs[m] = (out["lr"].to_numpy(np.float64),
                               out["lr_lo"].to_numpy(np.float64) if "lr_lo" in out else nan,
                               out["lr_hi"].to_numpy(np.float64) if "lr_hi" in out else nan)
                else:
                    rule = fits[m](train)
                    notes.extend(f"fold {label}: {m}: {n}" for n in getattr(rule, "notes", ()))
                    recs[m] = (rule.predict(cells["params"], cells["tokens"],
                                            cells["tokens_per_step"]), nan, nan)
            except LrplanError as e:
                notes.append(f"fold {label}: {m} failed: {e}")
            timings[m] += time.perf_counter() - t0
        for i, cell in enumerate(cells.itertuples(index=False)):
            in_cell = test[(test["params"] == cell.params) & (test["tokens"] == cell.tokens)
                           & (test["tokens_per_step"] == cell.tokens_per_step)]
            ok = in_cell[~in_cell["diverged"]]
            div = in_cell[in_cell["diverged"]]["lr"]
            for m in names:
                base = {"fold": label, "method": m, "params": cell.params, "tokens": cell.tokens,
                        "tokens_per_step": cell.tokens_per_step, "lr_opt": cell.lr_opt,
                        "vertex": bool(cell.vertex), "n_lrs": int(cell.n_lrs)}
                if m not in recs:
                    rows.append({**base, **{c: np.nan for c in _SWEEP_COLUMNS if c not in base}})
                    continue
                lr, lo, hi = (v[i] for v in recs[m])
                exc = metrics.excess_loss(lr, ok["lr"], ok["loss"], cell.best_loss)
                rows.append({**base, "lr_rec": float(lr),
                             "log_ratio": float(metrics.lr_log_ratio(lr, cell.lr_opt)),
                             "excess_loss": exc, "rel_excess": exc / cell.best_loss,
                             "above_diverged": bool(len(div) and lr >= div.min()),
                             "opt_in_interval": (float(metrics.in_interval(cell.lr_opt, lo, hi))
                                                 if np.isfinite(lo) and np.isfinite(hi) else np.nan)})
    per_run = pd.DataFrame(rows, columns=["fold", "method", "params", "tokens", "tokens_per_step",
                                          "n_lrs"] + _SWEEP_COLUMNS)
    summary = []
    for m, g in per_run.groupby("method", sort=False):
        lr_ = g["log_ratio"].to_numpy(np.float64)
        ex = g["rel_excess"].to_numpy(np.float64)
        summary.append({
            "method": m, "cells": int(len(g)),
            "mean_abs_log_ratio": float(np.nanmean(np.abs(lr_))) if np.isfinite(lr_).any() else np.nan,
            "median_log_ratio": float(np.nanmedian(lr_)) if np.isfinite(lr_).any() else np.nan,
            "mean_rel_excess": float(np.nanmean(ex)) if np.isfinite(ex).any() else np.nan,
            "outside_sweep": int(np.sum(~np.isfinite(ex) & np.isfinite(lr_))),
            "above_diverged": int(g["above_diverged"].fillna(False).astype(bool).sum()),
            "opt_in_interval": (float(g["opt_in_interval"].mean())
                                if g["opt_in_interval"].notna().any() else np.nan),
        })
    return BacktestResult(kind="sweep", holdout=holdout.spec, per_run=per_run,
                          summary=pd.DataFrame(summary), timings=timings, folds=tuple(folds),
                          notes=tuple(notes), settings={"methods": names})


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
