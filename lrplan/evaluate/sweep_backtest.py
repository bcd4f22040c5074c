"""The folds of an LR sweep backtest: LR rules and lrplan's recommender scored on held-out cells.

`lrplan.evaluate.backtest.backtest_sweep` is the entry point.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from lrplan.data import RunSet
from lrplan.errors import DataError, LrplanError
from lrplan.evaluate import metrics
from lrplan.evaluate.holdout import Holdout, holdout_folds
from lrplan.evaluate.lr_baselines import bjorck_fit, cell_optima, nearest_lr_fit, step_law_fit
from lrplan.schedules import steps_for

__all__ = ["SWEEP_METHODS", "SWEEP_COLUMNS", "Recommender", "sweep_frame", "transfer_recommender",
           "score_sweep_folds"]

SWEEP_METHODS: tuple[str, ...] = ("step_law", "bjorck", "nearest")


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
            steps = steps_for(c.tokens, c.tokens_per_step)
            res = plan(fit, Target(c.params, c.tokens, c.tokens_per_step, "constant", steps, 0))
            lo, hi = np.quantile(res.lr_star, [0.1, 0.9])
            out.append({"lr": res.recommended_lr, "lr_lo": lo, "lr_hi": hi})
        return pd.DataFrame(out)

    return recommend


SWEEP_COLUMNS = ["lr_rec", "lr_opt", "vertex", "log_ratio", "excess_loss", "rel_excess",
                 "above_diverged", "opt_in_interval"]


def score_sweep_folds(df: pd.DataFrame, holdout: Holdout, *, recommend: Recommender | None,
                      methods: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float],
                                                       list[dict], list[str], list[str]]:
    """Score every fold of ``holdout``: ``(per_run, summary, timings, folds, notes, methods)``.

    See `lrplan.evaluate.backtest.backtest_sweep` for the scores; ``methods`` comes back with
    ``lrplan`` added when ``recommend`` is given.
    """
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
                    rows.append({**base, **{c: np.nan for c in SWEEP_COLUMNS if c not in base}})
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
                                          "n_lrs"] + SWEEP_COLUMNS)
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
    return per_run, pd.DataFrame(summary), timings, folds, notes, names
