"""Posterior predictive loss curves of a fitted curve model under any LR schedule."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from lrplan.curve.calibrate import RATE_SITES, discrepancy_draws
from lrplan.curve.fit import CurveFit, CurveMixture
from lrplan.curve.model import (
    MATCH_RTOL,
    CurveData,
    GroupKey,
    curve_data,
    group_law,
    held_at_peak,
    law_mean,
    law_parameters,
    noise_draws,
    same_setting,
    size_law_level,
)
from lrplan.curve.prepare import area, group_log_n, pad_to_bucket
from lrplan.data import RunSet
from lrplan.errors import FitError

__all__ = ["QUANTILES", "CurvePrediction", "predict_curve", "replicate_runs", "summarize"]

QUANTILES: tuple[float, ...] = (0.025, 0.1, 0.5, 0.9, 0.975)
#: A target whose LR area exceeds the longest fitted run's by more than this is extrapolated.
_REACH_SLACK = 1.05


@dataclass(frozen=True)
class CurvePrediction:
    """Predictive draws of a loss curve: ``draws[i, j]`` is draw i at ``steps[j]``.

    ``law`` holds the law's draws without noise or discrepancy (the expected curve);
    ``reach`` the target's LR area at its furthest step over the longest fitted run's (> 1:
    the law is extrapolated).
    """

    steps: np.ndarray
    draws: np.ndarray
    law: np.ndarray
    group: int | None
    notes: tuple[str, ...] = ()
    reach: float = 1.0

    @property
    def extrapolates(self) -> bool:
        """Whether the target goes beyond the fitted LR area."""
        return self.reach > _REACH_SLACK

    @property
    def mean(self) -> np.ndarray:
        """Posterior predictive mean at each step."""
        return self.draws.mean(axis=0)

    def quantiles(self, qs=QUANTILES) -> dict[str, np.ndarray]:
        """Predictive quantiles keyed by their string form ('0.025', ...)."""
        values = np.quantile(self.draws, qs, axis=0)
        return {str(q): v for q, v in zip(qs, values, strict=True)}

    @property
    def final(self) -> np.ndarray:
        """Predictive draws of the loss at the last requested step."""
        return self.draws[:, -1]


def summarize(draws: np.ndarray, qs=QUANTILES) -> dict:
    """JSON form of an uncertain scalar: mean and quantiles."""
    draws = np.asarray(draws, dtype=np.float64)
    return {"mean": float(draws.mean()),
            "quantiles": {str(q): float(v) for q, v in zip(qs, np.quantile(draws, qs), strict=True)}}


def _resolve_group(fit: CurveFit, params, tokens_per_step, peak_lr) -> tuple[int | None, GroupKey, list[str]]:
    cfg = fit.config
    notes = []
    sizes = {g.params for g in cfg.groups}
    batches = {g.tokens_per_step for g in cfg.groups}
    if params is None and len(sizes) == 1:
        params = next(iter(sizes))
    if tokens_per_step is None and len(batches) == 1:
        tokens_per_step = next(iter(batches))
    key = GroupKey(params, tokens_per_step, float(peak_lr))
    group = key.index_in(cfg.groups)
    if group is not None:
        return group, key, notes
    if params is None and len(sizes) > 1:
        raise FitError("the fit spans several model sizes: give the target's --params")
    if not cfg.size_law and not any(same_setting(params, s) for s in sizes):
        raise FitError(
            f"the fit has runs of one model size ({', '.join(f'{s:.4g}' for s in sizes if s)})"
            f" and cannot predict N={params:.4g}: fit runs of two or more sizes"
        )
    notes.append("target's (size, batch, peak LR) is not among the fitted groups: its law is "
                 "drawn from the pooled population of groups")
    far = beyond(params, min(sizes), max(sizes)) if cfg.size_law else None
    if far is not None:
        edge, side = (max(sizes), "largest") if params > max(sizes) else (min(sizes), "smallest")
        notes.append(f"the target's size N={params:.3g} is {far:.1f}x the {side} fitted "
                     f"({edge:.3g}): its loss level extrapolates the size law of {len(sizes)} sizes, "
                     "and its interval holds only as far as that law does")
    return None, key, notes


def beyond(value: float, low: float, high: float) -> float | None:
    """How many times ``value`` lies outside ``[low, high]`` (None inside, to `MATCH_RTOL`)."""
    if value > high * (1 + MATCH_RTOL):
        return value / high
    if value < low / (1 + MATCH_RTOL):
        return low / value
    return None


def _target_values(fit: CurveFit, group: int | None, key: GroupKey, rng: np.random.Generator):
    """Per-draw law parameters of the target group, shape (draws,) each.

    A fitted group's are its draws. A new group of a fit of several groups is drawn as the
    model draws its groups (`lrplan.curve.model.group_law`), from each draw's shared values
    and tau with fresh standard normals; a fit of one group has only the shared values.
    """
    cfg = fit.config
    pooled = law_parameters(cfg.law)[1:]
    several = len(cfg.groups) > 1
    if group is not None:
        l0 = fit.flat("L0_group")
        return {**{n: fit.flat(f"{n}_group")[:, group] if several else fit.flat(n) for n in pooled},
                "L0": l0[:, group] if l0.ndim == 2 else l0}
    if cfg.size_law:
        level = size_law_level(fit.flat("E"), fit.flat("A_N"), fit.flat("a_N"),
                               group_log_n((key,), cfg.n_ref)[0], xp=np)
    else:
        level = fit.flat("L0") if "L0" in fit.samples else fit.flat("L0_group")[:, 0]
    shared = {n: fit.flat(n) for n in pooled}
    if not several:
        return {**shared, "L0": level}
    n = len(level)
    z = {name: rng.standard_normal(n) for name in (*pooled, "L0")}  # in this order: the seed's stream
    return group_law(shared, level, fit.flat("tau"), z, xp=np)


@partial(jax.jit, static_argnums=0)
def _law_draws(law: str, features, point_group, values: dict) -> jnp.ndarray:
    """The law's curve for each draw in ``values``; compiled once per law and input shapes."""
    data = CurveData(law=law, features=features, point_group=point_group, log_loss=None,
                     n_groups=1, group_log_n=np.zeros(1), size_law=False)
    return jax.vmap(lambda v: law_mean(data, {k: x[None] for k, x in v.items()}))(values)


def _curves(law: str, data: CurveData, values: dict, chunk: int) -> np.ndarray:
    """The law's curve for every draw, in chunks of one shape (one compilation).

    The points (and multi-power pairs) are padded to their shape bucket, so targets of
    similar lengths share the compiled code.
    """
    points = data.n_points
    data = pad_to_bucket(data)
    n = len(values["L0"])
    out = []
    for i in range(0, n, chunk):
        part = {k: jnp.asarray(v[i:i + chunk]) for k, v in values.items()}
        m = len(part["L0"])
        if m < chunk:
            part = {k: jnp.concatenate([v, jnp.repeat(v[-1:], chunk - m)]) for k, v in part.items()}
        out.append(np.asarray(_law_draws(law, data.features, data.point_group, part))[:m, :points])
    return np.concatenate(out)


def _law_curves(fit: CurveFit, values: dict, schedules: tuple[np.ndarray, ...], steps: np.ndarray,
                warmup_steps: int, log_n: np.ndarray, chunk: int) -> list[np.ndarray]:
    """The law's curve per draw of ``values`` under each of ``schedules`` (per-step LRs)."""
    cfg = fit.config
    return [_curves(cfg.law, curve_data(cfg.law, [(lr, steps, None, warmup_steps, 0)], lr_ref=cfg.lr_ref,
                                        group_log_n=log_n, size_law=cfg.size_law), values, chunk)
            for lr in schedules]


def predict_curve(
    fit: CurveFit | CurveMixture,
    lr: np.ndarray,
    steps: np.ndarray,
    *,
    warmup_steps: int = 0,
    params: float | None = None,
    tokens_per_step: float | None = None,
    seed: int = 0,
    chunk: int = 64,
) -> CurvePrediction:
    """Posterior predictive of the loss at ``steps`` for a run with per-step LR ``lr``.

    Each posterior draw gives the law's curve for the target's group (an existing group when
    size, batch and peak LR match one, else a new group drawn from the pooled population),
    plus the calibrated discrepancy of an unseen run and the evaluation noise.
    """
    if isinstance(fit, CurveMixture):
        return _predict_mixture(fit, lr, steps, warmup_steps=warmup_steps, params=params,
                                tokens_per_step=tokens_per_step, seed=seed, chunk=chunk)
    lr = np.asarray(lr, dtype=np.float64)
    steps = np.asarray(steps, dtype=np.int64)
    group, key, notes = _resolve_group(fit, params, tokens_per_step, float(lr.max()))
    cfg = fit.config
    rng = np.random.default_rng(seed)
    values = _target_values(fit, group, key, rng)
    law_curves, flat_curves = _law_curves(fit, values, (lr, held_at_peak(lr, warmup_steps)), steps,
                                          warmup_steps, group_log_n((key,), cfg.n_ref), chunk)
    if not np.all(np.isfinite(law_curves)) or np.any(law_curves <= 0):
        raise FitError("the law gives a non-positive or non-finite loss for this schedule; "
                       "check the steps and the LR")
    noise = noise_draws(rng, cfg.noise, law_curves.shape)
    # An unseen run departs from the law smoothly: per draw, one standard-normal offset for
    # each part of the calibrated discrepancy (a floor, a share of the loss reduction the law
    # credits to LR decay, a growth once the LR area exceeds anything fitted), at that draw's
    # rates: integrating over the rates' posterior is what keeps the tails honest when only a
    # few held-out curves stand behind them.
    reach = area(lr, steps, cfg.lr_ref) / cfg.area_ref
    u = np.maximum(0.0, np.log(reach))
    rates = np.stack([fit.flat(k) for k in RATE_SITES], axis=1)
    disc = discrepancy_draws(rng, rates, flat_curves / law_curves - 1, u)
    draws = law_curves * np.exp(noise + disc)
    furthest = float(reach.max())
    if furthest > _REACH_SLACK:
        notes.append(f"the target's LR area reaches {furthest:.1f}x that of the longest fitted "
                     "run: beyond it the curve extrapolates the law, and its intervals can be "
                     "optimistic (README, Honest intervals)")
    return CurvePrediction(steps=steps, draws=draws, law=law_curves, group=group,
                           notes=tuple(notes), reach=furthest)


#: Laws weighed at least this much are compared at the target for the disagreement note.
_DISAGREE_WEIGHT = 0.1


def _predict_mixture(fit: CurveMixture, lr, steps, **kw) -> CurvePrediction:
    """Draws from the stacking mixture: each law's share of draws is its weight.

    A note says when two laws of weight >= 0.1 disagree at the target beyond their 80%
    intervals: the data did not settle which law holds there, and the mixture's interval
    spans both.
    """
    seed = kw.pop("seed")
    parts = [predict_curve(f, lr, steps, seed=seed + i, **kw) for i, f in enumerate(fit.fits)]
    n = parts[0].draws.shape[0]
    rng = np.random.default_rng(seed)
    draws, law = [], []
    for p, count in zip(parts, fit.draw_counts(n), strict=True):
        pick = rng.choice(p.draws.shape[0], size=count, replace=False)
        draws.append(p.draws[pick])
        law.append(p.law[pick])
    notes = list(dict.fromkeys(x for p in parts for x in p.notes))
    heavy = [(f.law, p) for f, p, w in zip(fit.fits, parts, fit.weights, strict=True)
             if w >= _DISAGREE_WEIGHT]
    bands = {name: np.quantile(p.final, (0.1, 0.5, 0.9)) for name, p in heavy}
    if len(bands) > 1 and max(b[0] for b in bands.values()) > min(b[2] for b in bands.values()):
        notes.append("the laws disagree at the target beyond their 80% intervals of the final "
                     "loss (" + "; ".join(f"{k} {b[1]:.4f} ({b[0]:.4f}-{b[2]:.4f})"
                                         for k, b in bands.items())
                     + "): the fitted runs do not settle which law holds here, and the "
                     "interval spans both")
    main = parts[int(np.argmax(fit.weights))]
    return CurvePrediction(steps=main.steps, draws=np.concatenate(draws), law=np.concatenate(law),
                           group=main.group, notes=tuple(notes), reach=max(p.reach for p in parts))


def replicate_runs(fit: CurveFit, runs: RunSet, *, draw: int, seed: int = 0) -> RunSet:
    """One replicate of ``runs`` from the curve model itself: what they would log if it held.

    Every run gets the law of posterior draw ``draw`` for its group, times Student-t
    evaluation noise at the fitted scale (the model's likelihood). Runs whose (size, batch,
    peak LR) is not among the fitted groups share one new group, drawn from that draw's
    population as a prediction draws it. No discrepancy is added: it is lrplan's calibrated
    forecast error, not something runs do. The runs keep their schedules and their logged
    steps after warmup; a calibration study fits the replicate and scores its predictions
    against a truth that the model holds exactly.
    """
    if isinstance(fit, CurveMixture):
        raise FitError("replicate_runs draws from one law's model: pass one of the mixture's fits")
    rng = np.random.default_rng(seed)
    laws_of: list[tuple[GroupKey, dict]] = []
    out = []
    for r in runs:
        if r.lr is None:
            raise FitError(f"run {r.name}: no per-step LR to replicate it under")
        group, key, _ = _resolve_group(fit, r.params, r.tokens_per_step, float(r.lr.max()))
        values = next((v for k, v in laws_of if k.matches(key)), None)
        if values is None:
            values = {k: v[draw:draw + 1] for k, v in _target_values(fit, group, key, rng).items()}
            laws_of.append((key, values))
        steps = r.steps[(r.steps >= max(r.warmup_steps, 1)) & (r.steps <= r.total_steps)]
        law = _law_curves(fit, values, (r.lr,), steps, r.warmup_steps,
                          group_log_n((key,), fit.config.n_ref), chunk=1)[0][0]
        loss = law * np.exp(noise_draws(rng, fit.config.noise, law.shape))
        out.append(replace(r, steps=steps, loss=loss, diverged=False, diverged_step=None))
    return RunSet(runs=tuple(out), source=f"{runs.source} (replicate of draw {draw})")
