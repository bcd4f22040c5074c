"""How far the law misses runs it did not see: the held-out calibration of the discrepancy.

`calibrate` refits the law without some of its runs, or without their later points
(`lrplan.curve.pointfit.PointFit`), and collects each held-out curve's errors. An unseen
curve departs from the law by three rates (a floor, a share of the loss reduction the law
credits to LR decay, a growth beyond the fitted LR area): `discrepancy_posterior` samples
them with NUTS under `rate_model`, whose likelihood of a curve is `curve_loglik`;
`heldout_scores` gives each held-out curve's log predictive density, by which
`lrplan.curve.lawchoice` weighs laws. `misfit_checks` says when a fitted law misses its own
runs. Predictions draw the discrepancy at the rates' sites `RATE_SITES`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from lrplan.bayes import bucket, cached, nuts
from lrplan.curve.model import curve_data, held_at_peak
from lrplan.curve.pointfit import PointFit, law_at_point
from lrplan.curve.prepare import area, fit_points
from lrplan.errors import PriorError
from lrplan.priors import PriorSet

if TYPE_CHECKING:
    from lrplan.data import Run

__all__ = ["DECAY_SEEN", "FLOOR_MIN", "FLOOR_NOISES", "MISFIT_MIN", "MISFIT_NOISES", "PREFIXES",
           "RATE_SITES", "calibrate", "curve_loglik", "curve_moments", "discrepancy_draws",
           "discrepancy_posterior",
           "heldout_scores", "misfit_checks", "rate_model", "rate_scales"]

#: The three rates of the discrepancy: their priors' names and their sites in the fit's draws.
RATE_SITES = ("discrepancy_floor", "discrepancy_anneal", "discrepancy_growth")


def rate_scales(priors: PriorSet) -> tuple[float, ...]:
    """The half-normal scales of the rates' priors; another distribution raises PriorError."""
    out = []
    for name in RATE_SITES:
        p = priors[name]
        if p.dist != "halfnormal":
            raise PriorError(f"prior of {name} is {p.dist}; the discrepancy rates take a "
                             "halfnormal prior")
        out.append(float(p.args["scale"]))
    return tuple(out)


def curve_moments(curves, pad: bool = False) -> tuple[np.ndarray, ...]:
    """Per held-out curve: its points, e'e, X'e and X'X for X = [1, d, u] (see `rate_model`).

    ``pad``: add empty curves (no points: a log density of exactly 0) up to the shape
    bucket of the number of curves, so that calibrations share compiled code.
    """
    n = np.array([c[0].size for c in curves], dtype=np.float64)
    x = [np.stack([np.ones_like(e), d, u], axis=1) for e, d, u in curves]
    ee = np.array([e @ e for e, _, _ in curves], dtype=np.float64)  # an empty curve adds nothing
    xe = np.array([xi.T @ e for xi, (e, _, _) in zip(x, curves, strict=True)]).reshape(-1, 3)
    xx = np.array([xi.T @ xi for xi in x]).reshape(-1, 3, 3)
    if pad:
        k = bucket(len(curves)) - len(curves)
        n, ee = np.concatenate([n, np.zeros(k)]), np.concatenate([ee, np.zeros(k)])
        xe, xx = np.concatenate([xe, np.zeros((k, 3))]), np.concatenate([xx, np.zeros((k, 3, 3))])
    return n, ee, xe, xx


def discrepancy_draws(rng: np.random.Generator, rates: np.ndarray, d: np.ndarray,
                      u: np.ndarray) -> np.ndarray:
    """Draws of an unseen curve's departure from the law on log loss, one curve per draw.

    ``rates`` (draws, 3) are ``(floor, anneal, growth)``, ``d`` (draws, points) the share of
    the loss reduction the law credits to LR decay, ``u`` (points,) the log LR area beyond the
    fitted one. Each curve is ``z0 floor + z1 anneal d + z2 growth u`` with one standard-normal
    ``z`` per part and curve: the model whose density, with the points' noise added, is
    `curve_loglik`.
    """
    floor, anneal, growth = (rates[:, i:i + 1] for i in range(3))
    z = rng.standard_normal((3, rates.shape[0], 1))
    return z[0] * floor + z[1] * anneal * d + z[2] * growth * u[None, :]


def curve_loglik(rates, n, ee, xe, xx, noise2):
    """Log density of each held-out curve's errors given the three rates (one draw).

    A curve's errors are ``e ~ N(0, noise2 I + X diag(rates^2) X')`` with ``X = [1, d, u]``
    (`discrepancy_draws` plus the noise); only the curve's moments (`curve_moments`) enter.
    """
    z = rates
    # Through the 3x3 capacitance matrix (Woodbury): M = I + Z X'X Z / noise2 with
    # Z = diag(z), inverted by its adjugate (batched 3x3 factorisations cost XLA on CPU ~20x
    # more per NUTS step).
    m = jnp.eye(3) + z[:, None] * z[None, :] * xx / noise2
    b = z * xe
    adj = jnp.stack([jnp.cross(m[..., 1, :], m[..., 2, :]), jnp.cross(m[..., 2, :], m[..., 0, :]),
                     jnp.cross(m[..., 0, :], m[..., 1, :])], axis=-1)
    det = jnp.sum(m[..., 0, :] * adj[..., :, 0], axis=-1)
    quad = (ee - jnp.einsum("ci,cij,cj->c", b, adj, b) / det / noise2) / noise2
    logdet = n * jnp.log(noise2) + jnp.log(det)
    return -0.5 * (quad + logdet + n * jnp.log(2 * jnp.pi))


def rate_model(n, ee, xe, xx, noise2, scales):
    """The NumPyro model of the three discrepancy rates given held-out curves' moments.

    ``scales`` are the rates' half-normal prior scales (`rate_scales`); the likelihood is
    `curve_loglik` summed over the curves.
    """
    # The variance needs only the squared rates, so each rate is sampled as a signed normal
    # whose absolute value is half-normal: a smooth density through 0, where a positive rate
    # sampled on log scale has a long flat tail that makes NUTS diverge.
    z = numpyro.sample("rate", dist.Normal(0.0, jnp.asarray(scales)))
    numpyro.factor("heldout", jnp.sum(curve_loglik(z, n, ee, xe, xx, noise2)))


def heldout_scores(curves, *, noise2: float, rates: np.ndarray) -> np.ndarray:
    """Log predictive density of each held-out curve, averaged over draws of the rates.

    ``curves`` as for `discrepancy_posterior`; ``rates`` (draws, 3). The score of curve c is
    ``log mean_s p(e_c | rates_s)``: the joint density of its errors under the law's
    calibrated predictive distribution, one number per curve (its points are not independent).
    """
    from scipy.special import logsumexp

    moments = [jnp.asarray(x) for x in curve_moments(curves, pad=True)]
    fn = cached("curve_loglik_draws", lambda: jax.jit(
        jax.vmap(curve_loglik, in_axes=(0, None, None, None, None, None))))
    ll = np.asarray(fn(jnp.asarray(rates), *moments, noise2))[:, :len(curves)]
    return logsumexp(ll, axis=0) - np.log(ll.shape[0])


def discrepancy_posterior(curves: list[tuple[np.ndarray, np.ndarray, np.ndarray]], *,
                          noise2: float, scales: tuple[float, ...], draws: int = 2000,
                          seed: int = 0) -> tuple[np.ndarray, int]:
    """Draws (draws, 3) of ``(floor, anneal, growth)`` given held-out curves; and divergences.

    Each curve is ``(e, d, u)``: a held-out run's errors on log loss and, per point, the loss
    reduction the law credits to LR decay and the log LR area beyond the fitted one. The
    model is the one a prediction draws from: each curve departs from the law by one
    standard-normal offset per part, ``e = z0 floor + z1 anneal d + z2 growth u`` plus the
    points' own Gaussian noise of variance ``noise2``; the rates' priors are half-normal with
    ``scales``. A curve's errors along its points are one draw of those offsets, not many
    independent errors: a few curves leave the rates uncertain however densely each is
    logged, and a growth the fitted runs barely reveal is not ruled out.
    """
    from numpyro.infer import NUTS

    moments = curve_moments(curves, pad=True)
    # thinned: draws that pass near a zero rate are autocorrelated (ESS ~0.1 per draw unthinned)
    args = (*(jnp.asarray(x) for x in moments), jnp.asarray(noise2, dtype=jnp.float64),
            jnp.asarray(scales, dtype=jnp.float64))
    samples, diverging = nuts("rates", lambda: NUTS(rate_model), jax.random.PRNGKey(seed), args,
                              num_warmup=500, num_samples=draws, thinning=3)
    return np.abs(np.asarray(samples["rate"][0], dtype=np.float64)), int(diverging.sum())


#: Where the calibration cuts every run to forecast the rest: the forecasts reach ~3x the
#: fitted LR area, the range a planner extrapolates over.
PREFIXES = (0.3, 0.45, 0.6)
#: A point has seen an LR decay once the LR after warmup has fallen this far (relative) below
#: its peak. It depends on the schedule alone, so every law is calibrated (and scored) on the
#: same held-out points.
DECAY_SEEN = 1e-3


def _decayed(run: Run, steps: np.ndarray) -> np.ndarray:
    """Per evaluation step: whether the run's LR has fallen below its peak since warmup."""
    lr = np.asarray(run.lr, dtype=np.float64)
    low = lr.copy()
    low[: run.warmup_steps] = lr.max()
    return np.minimum.accumulate(low)[np.asarray(steps) - 1] < (1.0 - DECAY_SEEN) * lr.max()


def calibrate(fit: PointFit, point: dict, used: list[Run], group_index: list[int],
               lr_ref: float, *, scales: tuple[float, ...], draws: int, seed: int):
    """The law's error on log loss where it did not see the data, in three parts.

    Returns a dict with ``draws`` posterior draws of the three rates (``rates``), their
    sampler's ``divergences``, their medians (``floor``, ``anneal``, ``growth``) and
    ``fitted``, the rms by which held-out points within the fitted LR area miss more than the
    fitted points do (the likelihood's discrepancy), plus notes.

    Held-out errors come from predicting each run of a group with >= 2 runs from a fit
    without it (schedule transfer, and a forecast beyond the other runs' LR area where it
    outlasts them), from fitting every run's first `PREFIXES` and forecasting the rest (after
    an LR decay only if the fit saw one), and, in groups with runs of several lengths, from
    forecasting the longest run from the others. An unseen curve's discrepancy at a point is
    ``sqrt(floor^2 + (anneal * d)^2 + (growth * u)^2)``, with d the relative loss reduction
    the law credits to LR decay there (the gap to the schedule held at its peak LR) and u the
    log ratio of the forward LR area to the area fitted (0 within it); the rates' posterior
    is `discrepancy_posterior`, with each held-out run of each held-out fit as one curve. On
    Luo et al.'s curves the law is exact to ~0.05% while the LR is constant and off by 5-25%
    of the reduction it predicts after a decay it has not seen, so one constant scale is too
    wide before a decay and too narrow after it.
    """
    data = fit.data
    steps = [r.steps[fit_points(r, thin=True)] for r in used]
    run_of = np.concatenate([np.full(st.size, i) for i, st in enumerate(steps)])
    flat = curve_data(data.law, [(held_at_peak(r.lr, r.warmup_steps), st, None, r.warmup_steps, g)
                                 for r, st, g in zip(used, steps, group_index, strict=True)],
                      lr_ref=lr_ref, group_log_n=data.group_log_n, size_law=data.size_law)

    def reduction(p):
        law = np.asarray(law_at_point(data, p))
        return law, np.asarray(law_at_point(flat, p)) / law - 1.0

    law_fit, d_fit = reduction(point)
    decayed = np.concatenate([_decayed(r, st) for r, st in zip(used, steps, strict=True)])

    def held_out(seen):
        p, _ = fit.solve(seen, starts=2)
        law, d = reduction(p)
        return data.log_loss - np.log(law), d

    curves = []  # (error, d, u) at the points of each held-out run of each held-out fit
    counts = np.bincount(group_index)
    eligible = [j for j, g in enumerate(group_index) if counts[g] >= 2]
    # at most 6 point fits, spread over the runs (and so over groups), not the first six
    folds = [eligible[i] for i in np.unique(np.linspace(0, len(eligible) - 1, 6).round().astype(int))
             ] if eligible else []
    areas = [area(r.lr, st, lr_ref) for r, st in zip(used, steps, strict=True)]
    ends = np.array([a[-1] for a in areas])
    def decay_unseen(seen):
        # A fit that saw no LR decay knows nothing of what one does, and the fit being
        # calibrated always has seen one (else no point has d > 0): its misses after a decay
        # (WSD cooldowns cut off by every prefix; 0.4-1.6% rms on OLMo's 370M runs; a cosine
        # forecast from a constant run alone, where the law's L0 and B are one sum) would pass
        # for a floor that widens every interval.
        return not np.any(decayed[seen])

    for j in folds:
        e, d = held_out(run_of != j)
        out = run_of == j
        keep = ~decayed[out] if decay_unseen(run_of != j) else np.ones(out.sum(), bool)
        # a run that outlasts the others' LR area is a forecast beyond it, as in a prediction
        reach = np.delete(ends, j).max()
        u = np.maximum(0.0, np.log(areas[j] / reach))
        curves.append((e[out][keep], d[out][keep], u[keep]))
    for frac in PREFIXES:
        cut = [int(frac * (st.size - 1)) for st in steps]
        seen = np.concatenate([np.arange(st.size) <= c for st, c in zip(steps, cut, strict=True)])
        e, d = held_out(seen)
        u = np.concatenate([np.log(a / a[c]) for a, c in zip(areas, cut, strict=True)])
        late = u > 0
        if decay_unseen(seen):
            late &= ~decayed
        curves += [(e[k], d[k], u[k]) for k in (late & (run_of == i) for i in range(len(used)))]
    # In a group with runs of several lengths, the longest one forecast from the others is
    # the horizon extrapolation a planner makes: its reach beyond the group's fitted area, at a
    # small decay share early on, is what prefix forecasts of decaying runs never show.
    group_index = np.asarray(group_index)
    longest = []
    for g in np.unique(group_index):
        members = np.flatnonzero(group_index == g)
        top = members[np.argmax(ends[members])]
        shorter = ends[members[members != top]]
        if shorter.size and shorter.min() < ends[top] / 1.5:
            longest.append((top, shorter.max()))
    if len(longest) == 1 and longest[0][0] in folds:
        longest = []  # that fit is the fold leaving the run out, above
    if longest:
        seen = ~np.isin(run_of, [j for j, _ in longest])
        e, d = held_out(seen)
        for j, reach in longest:
            out = run_of == j
            keep = ~decayed[out] if decay_unseen(seen) else np.ones(out.sum(), bool)
            u = np.maximum(0.0, np.log(areas[j] / reach))
            curves.append((e[out][keep], d[out][keep], u[keep]))
    curves = [c for c in curves if c[0].size]
    fits = len(folds) + len(PREFIXES) + bool(longest)
    # The held-out errors carry the points' own noise, outliers included: its variance is
    # the fitted points' mean squared residual. The Student-t scale alone understates it
    # where a few points are far off (Luo et al.'s 25M curves: 6e-4 against an rms of 1.8e-3),
    # and the excess would pass for a discrepancy that shifts whole curves.
    noise2 = float(np.mean((data.log_loss - np.log(law_fit)) ** 2))
    rates, divergences = discrepancy_posterior(curves, noise2=noise2, scales=scales, draws=draws,
                                               seed=seed)
    floor, anneal, growth = np.median(rates, axis=0)
    # The likelihood's discrepancy: how much further the law misses the points of a run it did
    # not fit than those it fitted, within the fitted LR area; modelled only where no held-out
    # point lies there.
    within = np.concatenate([e[u == 0] for e, _, u in curves]) if curves else np.zeros(0)
    fitted = float(np.sqrt(max(0.0, np.mean(within**2) - noise2)) if within.size
                   else np.sqrt(floor**2 + anneal**2 * np.mean(d_fit**2)))
    notes = [f"discrepancy {floor:.2e} (log loss), plus {anneal:.3f} of the loss reduction the law "
             f"credits to LR decay and {growth:.2e} per unit log area beyond the fitted area "
             f"(posterior medians from {len(curves)} curves of {fits} held-out fits: "
             f"{len(folds)} leaving one run out, "
             f"{len(PREFIXES)} of every run's first {', '.join(f'{p:.0%}' for p in PREFIXES)}"
             + (f", 1 without the longest run of {len(longest)} group(s))" if longest else ")")]
    # Each held-out curve's log predictive density under the calibrated law: how laws are
    # weighed against each other (`lrplan.curve.lawchoice`). Thinned draws: the mean is smooth.
    thin = max(1, len(rates) // 1000)
    scores = heldout_scores(curves, noise2=noise2, rates=rates[::thin]) if curves else np.zeros(0)
    return dict(rates=rates, divergences=divergences, floor=float(floor), anneal=float(anneal),
                growth=float(growth), fitted=fitted, scores=scores), notes


#: A fitted run is missed when its last points sit off the posterior-median law by more than
#: this many noise scales, and by at least `MISFIT_MIN` in log loss.
MISFIT_NOISES = 4.0
MISFIT_MIN = 0.002
#: A discrepancy floor over this many noise scales (and over `FLOOR_MIN`) dwarfs the noise: the
#: law misses unseen runs everywhere, not only where it extrapolates.
FLOOR_NOISES = 10.0
FLOOR_MIN = 0.005


def misfit_checks(law_median: np.ndarray, log_loss: np.ndarray, run_of: np.ndarray,
                  names: list[str], *, noise: float, floor: float) -> tuple[str, ...]:
    """Ways in which a fitted law misses its own runs, one phrase each (empty: it fits).

    ``law_median`` is the posterior-median law at the fitted points. A run is missed when
    the mean error over its last 10% of points (at least 3) exceeds ``MISFIT_NOISES`` noise
    scales and ``MISFIT_MIN``: the end of a fitted run is what a forecast of a similar run
    leans on.
    """
    out = []
    err = log_loss - np.log(law_median)
    limit = max(MISFIT_NOISES * noise, MISFIT_MIN)
    for i, name in enumerate(names):
        e = err[run_of == i]
        tail = e[-max(3, int(np.ceil(0.1 * e.size))):]
        bias = float(np.mean(tail))
        if abs(bias) > limit:
            out.append(f"the law misses its fitted run {name} by {bias:+.2%} over its last "
                       f"{tail.size} points (noise {noise:.2%}): the fit failed, or the law "
                       "does not describe this run")
    if floor > max(FLOOR_NOISES * noise, FLOOR_MIN):
        out.append(f"the law misses runs it did not fit by {floor:.2%} everywhere (its noise is "
                   f"{noise:.2%}): it does not describe these runs")
    return tuple(out)
