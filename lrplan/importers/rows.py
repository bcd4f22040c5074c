"""From one run's series to its rows of a runs table: checked values, LR, tokens, settings."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from lrplan.importers.keys import (
    BATCH_KEYS,
    LR_KEYS,
    LR_PATTERNS,
    PARAMS_KEYS,
    PEAK_LR_KEYS,
    SEQ_LEN_KEYS,
    TOKEN_KEYS,
    TOKENS_PER_STEP_KEYS,
    WARMUP_KEYS,
    LossUnit,
    choose_loss,
    is_logged,
    loss_unit_of,
    match_keys,
    run_setting,
)
from lrplan.importers.raw import (
    ImportedRun,
    RawRun,
    Series,
    import_error,
    key_list,
    numeric_points,
    show_value,
)

__all__ = ["run_rows"]

def _series_at(steps: np.ndarray, x_steps: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Linear interpolation of (x_steps, x) at steps; NaN outside the logged range."""
    out = np.full(steps.shape, np.nan)
    ok = np.isfinite(x)
    if not ok.any():
        return out
    xs, ys = x_steps[ok], x[ok]
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    inside = (steps >= xs[0]) & (steps <= xs[-1])
    out[inside] = np.interp(steps[inside], xs, ys)
    return out


def _dedupe(raw: RawRun, key: str, s: Series, steps: np.ndarray, values: np.ndarray,
            idx: np.ndarray, duplicates: str, notes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One value per step: identical repeats are dropped, differing ones refused or the last kept."""
    seen: dict[float, int] = {}
    keep = np.ones(steps.size, dtype=bool)
    same = replaced = 0
    for j, st in enumerate(steps):
        if st in seen:
            first = seen[st]
            if values[first] == values[j] or (np.isnan(values[first]) and np.isnan(values[j])):
                keep[j] = False
                same += 1
                continue
            if duplicates == "error":
                raise import_error(s.file or raw.file, key, raw.name, s.where[idx[j]],
                                   f"step {int(st)} is logged again with another value "
                                   f"({show_value(values[j])}; first {show_value(values[first])} at "
                                   f"{s.where[idx[first]]})",
                                   "a resumed run logged it twice: give --duplicates last to keep the "
                                   "later value, or remove one")
            keep[first] = False
            replaced += 1
        seen[st] = j
    if same:
        notes.append(f"run {raw.name}: {same} repeated identical value(s) of {key!r} left out")
    if replaced:
        notes.append(f"run {raw.name}: {replaced} step(s) of {key!r} logged twice; the later "
                     "value kept (--duplicates last)")
    return steps[keep], values[keep], idx[keep]


def _warmup_from_lr(steps: np.ndarray, lr: np.ndarray) -> int | None:
    """Warmup steps read off a logged LR that rises linearly from 0 to its peak."""
    ok = np.isfinite(lr) & (lr > 0) & (steps >= 1)
    if ok.sum() < 2:
        return None
    s, y = steps[ok], lr[ok]
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    peak = y.max()
    if y[0] >= 0.99 * peak:
        return 0
    with np.errstate(over="ignore", divide="ignore"):
        w_float = s[0] * (peak / y[0])
    reach = int(s[np.argmax(y >= 0.99 * peak)])
    if not w_float <= reach:
        return reach
    w = max(int(round(w_float)), 1)
    ramp = s < w
    if np.all(np.abs(y[ramp] - peak * s[ramp] / w) <= 0.05 * peak):
        return w
    return reach


def _nonnegative_series(raw, key: str, number: str, what: str, fix: str, duplicates, notes: list[str]):
    """A logged series of finite numbers >= 0 (the LR, tokens): its steps and values, repeats resolved.

    The first value that is not a number, not finite or negative fails, naming its file and row.
    """
    s = raw.series[key]
    steps, values, idx = numeric_points(raw, key, s, number)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise import_error(s.file or raw.file, key, raw.name, s.where[idx[j]],
                           f"{show_value(values[j])} is not {what}", fix)
    steps, values, _ = _dedupe(raw, key, s, steps, values, idx, duplicates, notes)
    return steps, values


def run_rows(raw: RawRun, *, loss: str | None, lr: str | None, tokens: str | None,
             loss_unit: LossUnit, duplicates: str, seq_len: float | None,
             notes: list[str]) -> tuple[pd.DataFrame, dict[str, Any], ImportedRun]:
    """One run's rows (run, step, loss, lr, tokens), its per-run settings found, and its keys.

    The settings map a column to ``(where it was read, value)``; notes are appended to ``notes``.
    """
    loss_key, kind = choose_loss(raw, loss)
    unit = loss_unit_of(raw, loss_key, loss_unit)
    s = raw.series[loss_key]
    fix = "the loss must be a number (NaN or inf for a diverged step)"
    st, y, idx = numeric_points(raw, loss_key, s, fix)
    st, y, idx = _dedupe(raw, loss_key, s, st, y, idx, duplicates, notes)
    if unit == "bits":
        y = y * math.log(2.0)
    elif unit == "perplexity":
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.where(y > 0, np.log(np.where(y > 0, y, 1.0)), np.nan)
    zero = st == 0
    if zero.any():
        notes.append(f"run {raw.name}: {int(zero.sum())} value(s) of {loss_key!r} at step 0 "
                     "(before the first update) left out")
        st, y, idx = st[~zero], y[~zero], idx[~zero]
    if st.size == 0:
        raise import_error(s.file or raw.file, loss_key, raw.name, None, "no value at a step >= 1",
                           "log the loss at least once after the first optimizer step")
    order = np.argsort(st, kind="stable")
    st, y = st[order], y[order]
    label = {"eval": "eval loss", "train": "train loss (no eval loss logged)",
             "given": "loss given"}[kind]
    notes.append(f"run {raw.name}: loss from {loss_key!r} ({label}), {st.size} point(s)")

    frame = {"run": raw.name, "step": st.astype(np.int64), "loss": y}
    lr_key = lr
    if lr_key is None:
        found = match_keys(raw, LR_KEYS, LR_PATTERNS)
        if len(found) > 1:
            raise import_error(raw.file, None, raw.name, None,
                               f"several LRs are logged ({key_list(found, 6)})", "choose one with --lr")
        lr_key = found[0] if found else None
    elif not is_logged(raw, lr_key):
        raise import_error(raw.file, lr_key, raw.name, None, "not logged in this run",
                           f"name a logged key with --lr (logged: {key_list(sorted(raw.series))})")
    per: dict[str, Any] = {}
    if lr_key is not None:
        lst, lv = _nonnegative_series(raw, lr_key, "the LR must be a number >= 0", "a finite LR >= 0",
                                      "log the LR in effect at the step", duplicates, notes)
        frame["lr"] = _series_at(st, lst, lv)
        if np.isnan(frame["lr"]).all():
            notes.append(f"run {raw.name}: {lr_key!r} is not logged within the loss's steps; "
                         "no per-step LR")
            del frame["lr"]
        else:
            w = _warmup_from_lr(lst, lv)
            if w and w < st[-1]:
                per["warmup_steps"] = ("the logged LR's rise", w)
            elif w == 0 and lst.size and lst.min() > 1:
                notes.append(f"run {raw.name}: the logged LR is at its peak from its first step "
                             f"({int(lst.min())}): a warmup before it is not seen; give "
                             "--warmup-steps (or warmup_steps in --meta) if there was one")
    else:
        notes.append(f"run {raw.name}: no LR logged (looked for {', '.join(LR_KEYS[:5])}, ...); "
                     "give --lr KEY, or a schedule and peak_lr, for the curve model")
    tokens_key = tokens
    if tokens_key is None:
        found = match_keys(raw, TOKEN_KEYS)
        tokens_key = found[0] if found else None
    elif not is_logged(raw, tokens_key):
        raise import_error(raw.file, tokens_key, raw.name, None, "not logged in this run",
                           "name a logged key with --tokens")
    if tokens_key is not None:
        tst, tv = _nonnegative_series(raw, tokens_key, "tokens must be a number >= 0", "a token count >= 0",
                                      "log the cumulative tokens seen", duplicates, notes)
        at = _series_at(st, tst, tv)
        if np.isfinite(at).any():
            frame["tokens"] = at

    for col, keys, logged in (("params", PARAMS_KEYS, None),
                              ("peak_lr", PEAK_LR_KEYS, PEAK_LR_KEYS[:3]),
                              ("tokens_per_step", TOKENS_PER_STEP_KEYS, None),
                              ("warmup_steps", WARMUP_KEYS, None)):
        got = run_setting(raw, keys, logged)
        if got is not None:
            per[col] = got
    if "tokens_per_step" not in per and "tokens" not in frame:
        batch = run_setting(raw, BATCH_KEYS)
        seq = ("--seq-len", seq_len) if seq_len is not None else run_setting(raw, SEQ_LEN_KEYS)
        # nanoGPT's config: tokens per iteration = batch_size x block_size x grad. accumulation
        nano = [run_setting(raw, (k,), ()) for k in ("batch_size", "block_size",
                                                     "gradient_accumulation_steps")]
        if batch is not None and seq is not None:
            per["tokens_per_step"] = (f"{batch[0]} x {seq[0]}", batch[1] * seq[1])
        elif all(nano):
            per["tokens_per_step"] = (" x ".join(w for w, _ in nano),
                                      math.prod(x for _, x in nano))
    info = ImportedRun(raw.name, raw.file, raw.format, loss_key, kind, lr_key,
                       tokens_key if "tokens" in frame else None, int(st.size))
    return pd.DataFrame(frame), per, info


