"""The folds of a curve backtest: fit each method on a fold's runs, predict and score the rest.

Each fold is a picklable `CurveFold` task, so that `map_folds` can run the folds here, in
processes or on a cluster with the same numbers. `lrplan.evaluate.backtest.backtest_curves` is
the entry point.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lrplan.data import Run, RunSet
from lrplan.errors import LrplanError
from lrplan.evaluate import metrics
from lrplan.evaluate.baselines import bootstrap_curves, nearest_curve
from lrplan.evaluate.holdout import Holdout, holdout_folds, run_attributes

__all__ = ["CURVE_COLUMNS", "CurveFold", "score_curve", "summarize_curves", "eval_steps", "map_folds",
           "score_curve_folds"]

CURVE_COLUMNS = ["mean_rel_err", "worst_rel_err", "final_rel_err"] + [
    f"{k}{int(100 * lv)}" for k in ("cover", "width", "final_in") for lv in metrics.LEVELS
] + ["crps_rel", "lpd"]


def score_curve(point: np.ndarray, draws: np.ndarray, y: np.ndarray) -> dict:
    """The metrics of one held-out curve (`CURVE_COLUMNS` and ``n_points``)."""
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


def summarize_curves(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per method: errors, widths, CRPS, LPD averaged over runs; coverage pooled over points."""
    rows = []
    for method, g in per_run.groupby("method", sort=False):
        ok = g[g["n_points"] > 0]
        row = {"method": method, "runs": int(len(ok))}
        for c in CURVE_COLUMNS:
            vals = ok[c].to_numpy(np.float64)
            if c.startswith("cover"):
                w = ok["n_points"].to_numpy(np.float64)
                good = np.isfinite(vals)
                row[c] = float(np.sum(vals[good] * w[good]) / np.sum(w[good])) if good.any() else np.nan
            else:
                row[c] = float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def eval_steps(r: Run) -> np.ndarray:
    """The logged steps of a run that are scored: after warmup, within its total steps."""
    return r.steps[(r.steps >= max(r.warmup_steps, 1)) & (r.steps <= r.total_steps)]


@dataclass(frozen=True)
class CurveFold:
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
                    p = predict_curve(fit, r.lr, eval_steps(r), warmup_steps=r.warmup_steps,
                                      params=r.params, tokens_per_step=r.tokens_per_step, seed=seed)
                except LrplanError as e:
                    notes.append(f"fold {label}: lrplan cannot predict {r.name}: {e}")
                    continue
                preds["lrplan"][r.name] = (p.law.mean(axis=0), p.draws)
        if "huber" in methods:
            t0 = time.perf_counter()
            targets = [(r.name, r.lr, eval_steps(r), r.warmup_steps, r.params) for r in test]
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
                point, src = nearest_curve(list(train), r, eval_steps(r))
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
                    rows.append({**base, **score_curve(point, draws, y)})
                else:
                    rows.append({**base, "n_points": 0, **{c: np.nan for c in CURVE_COLUMNS}})
        return rows, notes, timings


def _worker_setup(cache_dir: str | None = None, min_compile_s: float | None = None) -> None:
    """JAX as lrplan runs it in whichever process a fold lands: 64-bit, and a compile cache.

    `map_folds` passes its workers the parent's persistent compilation cache: without it every
    worker compiles every program again.
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        if min_compile_s is not None:
            jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_s)


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

    import jax

    cache = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)),
                             mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_setup, initargs=cache) as pool:
        return list(pool.map(_call, tasks))


def score_curve_folds(runs: RunSet, holdout: Holdout, *, law: str, methods: Sequence[str], seed: int,
                      chains: int, num_warmup: int, num_samples: int, n_boot: int, priors=None,
                      jobs: int = 1, executor=None) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float],
                                                             list[dict], list[str]]:
    """Score every fold of ``holdout``: ``(per_run, summary, timings, folds, notes)``.

    See `lrplan.evaluate.backtest.backtest_curves` for the methods and the columns.
    """
    all_runs = list(runs)
    notes, folds, tasks = list(runs.excluded), [], []
    for label, fit_mask, test_mask in holdout_folds(holdout, run_attributes(all_runs)):
        train = RunSet(runs=tuple(r for r, k in zip(all_runs, fit_mask, strict=True) if k),
                       source=runs.source)
        test = []
        for r, k in zip(all_runs, test_mask, strict=True):
            if not k:
                continue
            if r.lr is None or r.diverged or eval_steps(r).size == 0:
                why = "no per-step LR" if r.lr is None else (
                    "diverged" if r.diverged else "no logged point after warmup")
                notes.append(f"fold {label}: held-out run {r.name} not scored ({why})")
                continue
            test.append(r)
        folds.append({"fold": label, "fit": [r.name for r in train], "predict": [r.name for r in test]})
        if test:
            tasks.append(CurveFold(label, train, tuple(test), tuple(methods), law, priors, seed,
                                   chains, num_warmup, num_samples, n_boot))
    rows, timings = [], {m: 0.0 for m in methods}
    # folds are independent and seeded alike: any order, any process, the same numbers
    for fold_rows, fold_notes, fold_times in map_folds(tasks, jobs=jobs, executor=executor):
        rows += fold_rows
        notes += fold_notes
        for m, t in fold_times.items():
            timings[m] += t
    per_run = pd.DataFrame(rows, columns=["fold", "run", "method", "params", "total_steps",
                                          "n_points"] + CURVE_COLUMNS)
    return per_run, summarize_curves(per_run), timings, folds, notes
