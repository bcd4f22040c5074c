"""Loss laws as pure functions: loss curves under an LR schedule, the optimal-LR law, the bowl.

Curve laws take a per-step LR array (``lr[i]`` is the LR of step ``i + 1``) and the steps at
which to evaluate. Parameter-free schedule features (areas, momentum, multi-power segments) are
computed once in NumPy float64 by the ``*_features`` functions; the parameter-dependent parts
are ``jax.numpy`` so NumPyro can differentiate them.

Units: the caller normalises the LR (``lr / lr_ref``) and passes ``step_scale`` so that every
area is in "steps at the reference LR / step_scale"; with ``step_scale = 1000`` the areas of
typical runs are O(1-100) and every prior is O(1).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = [
    "AnnealingFeatures",
    "MultiPowerFeatures",
    "annealing_features",
    "annealing_loss",
    "multipower_features",
    "multipower_loss",
    "multipower_loss_exact",
    "lr_bowl",
    "lr_bowl_linex",
    "transfer_bowl",
    "log_lr_opt",
    "loss_nd",
    "transfer_loss",
]


def _check_eval_steps(lr: np.ndarray, steps: np.ndarray, warmup_steps: int) -> np.ndarray:
    steps = np.asarray(steps, dtype=np.int64)
    if steps.ndim != 1:
        raise ValueError("steps must be a 1-D array of step numbers")
    first = max(warmup_steps, 1)
    if steps.size and (steps.min() < first or steps.max() > len(lr)):
        raise ValueError(
            f"evaluation steps must lie in [{first}, {len(lr)}]: the laws describe the "
            "loss from the end of warmup to the end of the schedule"
        )
    return steps


def _lr_after_warmup(lr: np.ndarray, warmup_steps: int, peak_lr: float) -> np.ndarray:
    lr = np.asarray(lr, dtype=np.float64).copy()
    lr[:warmup_steps] = peak_lr
    return lr


class AnnealingFeatures(NamedTuple):
    """Forward area ``s1`` and annealing area ``s2`` at each evaluation step."""

    s1: np.ndarray
    s2: np.ndarray


def annealing_features(
    lr: np.ndarray,
    steps: np.ndarray,
    *,
    warmup_steps: int = 0,
    peak_lr: float | None = None,
    decay: float = 0.999,
    step_scale: float = 1.0,
) -> AnnealingFeatures:
    r"""Areas of the annealing law at the given steps.

    .. math::

        S_1(t) = \sum_{i \le t} \eta_i, \qquad
        m_i = \lambda m_{i-1} + (\eta_{i-1} - \eta_i), \qquad
        S_2(t) = \sum_{i \le t} m_i

    with the LR taken at its peak during warmup and :math:`\eta_0` the peak. The momentum sum
    has the closed form :math:`S_2(t) = [(\eta_0 - \eta_t) - \lambda m_t] / (1 - \lambda)`,
    so only :math:`m` needs a recursion (an IIR filter).

    References
    ----------
    Tissue et al. 2024, "Scaling Law with Learning Rate Annealing", arXiv:2408.11029.
    """
    from scipy.signal import lfilter

    lr = np.asarray(lr, dtype=np.float64)
    peak = float(lr.max()) if peak_lr is None else float(peak_lr)
    steps = _check_eval_steps(lr, steps, 0)
    eta = _lr_after_warmup(lr, warmup_steps, peak)
    s1 = np.cumsum(eta)
    delta = np.diff(np.concatenate([[peak], eta]))
    delta = -delta  # eta_{i-1} - eta_i
    m = lfilter([1.0], [1.0, -decay], delta)
    s2 = ((peak - eta) - decay * m) / (1.0 - decay)
    idx = steps - 1
    return AnnealingFeatures(s1[idx] / step_scale, s2[idx] / step_scale)


def annealing_loss(features: AnnealingFeatures, *, L0, A, alpha, C):
    r"""Annealing law :math:`L = L_0 + A S_1^{-\alpha} - C S_2`.

    References
    ----------
    Tissue et al. 2024, arXiv:2408.11029, eq. (1).
    """
    return L0 + A * jnp.power(features.s1, -alpha) - C * features.s2


class MultiPowerFeatures(NamedTuple):
    """Schedule features of the multi-power law, compressed to (point, segment) pairs.

    ``s1w`` is :math:`S_1(t) + S_W` at each evaluation point. Every pair ``p`` links point
    ``point[p]`` to one earlier segment of the LR decrease with total decrease ``d_lr[p]``,
    log mean LR ``log_lr[p]``, and area from the segment's first / last decrease to the point
    ``area_far[p]`` / ``area_near[p]``.
    """

    s1w: np.ndarray
    point: np.ndarray
    d_lr: np.ndarray
    log_lr: np.ndarray
    area_far: np.ndarray
    area_near: np.ndarray


#: Points within this many warmup areas of the warmup's end see its rise at full resolution.
WARM_NEAR = 4.0


def _segments(delta: np.ndarray, cuts: np.ndarray, max_len: int):
    """Split step indices 1..T into segments at ``cuts``, at most ``max_len`` long."""
    bounds = [0]
    for c in np.unique(np.concatenate([cuts, [len(delta)]])):
        while c - bounds[-1] > max_len:
            bounds.append(bounds[-1] + max_len)
        if c > bounds[-1]:
            bounds.append(int(c))
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def multipower_features(
    lr: np.ndarray,
    steps: np.ndarray,
    *,
    warmup_steps: int = 0,
    peak_lr: float | None = None,
    step_scale: float = 1.0,
    max_segment: int = 4096,
) -> MultiPowerFeatures:
    """Parameter-free features of the multi-power law at the given (absolute) steps.

    The sum over every step k of the loss-reduction term is compressed into segments of
    consecutive steps (cut at every evaluation step, at most ``max_segment`` long, empty
    segments dropped); inside a segment the decrease is spread evenly over the area it spans
    and G is averaged over that span in closed form (see `multipower_loss`). A single-step drop
    (step schedules) is exact; smooth decays are accurate to ~1e-5 relative. Just after a short
    warmup the error is ~6e-5 when an LR drop pays half its reduction within ~250 steps at the
    peak LR (Luo et al.'s data), and up to 1.5e-4 when it takes ~1,000 (tested against
    `multipower_loss_exact`; both below eval noise, 0.05-0.3%).
    """
    lr = np.asarray(lr, dtype=np.float64)
    peak = float(lr.max()) if peak_lr is None else float(peak_lr)
    steps = _check_eval_steps(lr, steps, warmup_steps)
    eta = lr  # steps t = 1..T, warmup included, from eta_0 = 0
    area = np.concatenate([[0.0], np.cumsum(eta)])  # area[t] = S1(t) + S_W
    delta = np.concatenate([[0.0], eta[:-1]]) - eta  # delta[k-1] = eta_{k-1} - eta_k
    points, d_lr, log_lr, far, near = [], [], [], [], []

    def add(lo, hi, later):  # segment k = lo+1..hi, paired with the evaluation points `later`
        d = delta[lo:hi]
        nz = np.flatnonzero(d)
        if nz.size == 0 or later.size == 0:
            return
        k_first, k_last = lo + nz[0] + 1, lo + nz[-1] + 1
        w = np.abs(d[nz])
        points.append(later)
        d_lr.append(np.full(later.size, d.sum()))
        mean_lr = np.sum(w * eta[lo + nz]) / np.sum(w)
        log_lr.append(np.full(later.size, np.log(max(mean_lr, 1e-12))))
        far.append(area[steps[later]] - area[k_first - 1])
        near.append(area[steps[later]] - area[k_last - 1])

    def cuts(x, floor, width):  # where the LR has moved by more than `width` in log
        level = np.floor(np.log(np.maximum(x, floor * peak)) / width)
        return np.flatnonzero(np.diff(level)) + 1

    # eta_k^-gamma is taken as constant within a segment, so segments are also cut where the
    # LR has moved by more than 4% (a fast drop stays accurate). The warmup's rise matters
    # most near its end: points within WARM_NEAR warmup areas of it see the rise in steps of
    # 20% of the LR (from 2% of the peak), later points in steps of 50%, as its pull fades.
    # This keeps the pairs, and so the fit's cost, down at ~1e-4 relative error.
    w_steps = min(warmup_steps, eta.size)
    for lo, hi in _segments(delta[w_steps:], np.concatenate(
            [steps - w_steps, cuts(eta[w_steps:], 1e-3, 0.04)]), max_segment):
        add(lo + w_steps, hi + w_steps, np.flatnonzero(steps >= hi + w_steps))
    if w_steps:
        close = area[steps] - area[w_steps] < WARM_NEAR * area[w_steps]
        for width, pts in ((0.2, np.flatnonzero(close)), (0.5, np.flatnonzero(~close))):
            for lo, hi in _segments(delta[:w_steps], cuts(eta[:w_steps], 0.02, width), max_segment):
                add(lo, hi, pts)
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt)) if points else (
        lambda xs, dt: np.zeros(0, dt))
    return MultiPowerFeatures(
        s1w=area[steps] / step_scale,
        point=cat(points, np.int64),
        d_lr=cat(d_lr, np.float64),
        log_lr=cat(log_lr, np.float64),
        area_far=cat(far, np.float64) / step_scale,
        area_near=cat(near, np.float64) / step_scale,
    )


def _g(x, C, beta):
    return 1.0 - jnp.power(C * x + 1.0, -beta)


def _g_mean(x_near, x_far, C, beta):
    r"""Mean of :math:`G` over :math:`x \in [x_{near}, x_{far}]`, in closed form.

    With :math:`a = C x_{far} + 1`, :math:`b = C x_{near} + 1` and :math:`\ell = \log(a/b)`,
    :math:`\bar G = 1 - b^{-\beta}\, \mathrm{exprel}((1-\beta)\ell)\, \ell / (a/b - 1)`,
    written so that both ratios stay finite (and differentiable) as :math:`a \to b`.
    """
    b = C * x_near + 1.0
    log_b = jnp.log1p(C * x_near)  # b^-beta as exp(-beta log b): no pow per pair
    r = C * (x_far - x_near) / b  # a/b - 1 >= 0
    ell = jnp.log1p(r)
    small_r = r < 1e-6
    r_safe = jnp.where(small_r, 1.0, r)
    log_ratio = jnp.where(small_r, 1.0 - 0.5 * r, ell / r_safe)  # log1p(r) / r
    z = (1.0 - beta) * ell
    small_z = jnp.abs(z) < 1e-6
    z_safe = jnp.where(small_z, 1.0, z)
    exprel = jnp.where(small_z, 1.0 + 0.5 * z, jnp.expm1(z_safe) / z_safe)
    return 1.0 - jnp.exp(-beta * log_b) * exprel * log_ratio


def multipower_loss(features: MultiPowerFeatures, *, L0, A, alpha, B, C, beta, gamma):
    r"""Multi-power law on compressed features.

    .. math::

        L(t) = L_0 + A (S_1(t) + S_W)^{-\alpha} - LD(t), \quad
        LD(t) = B \sum_{k \le t} (\eta_{k-1} - \eta_k)\, G(\eta_k^{-\gamma} S_k(t)),\quad
        G(x) = 1 - (C x + 1)^{-\beta}

    with :math:`S_k(t) = \sum_{\tau=k}^{t} \eta_\tau` and :math:`S_W = \eta_{max} W / 2`.
    The sum runs over every step, warmup included, from :math:`\eta_0 = 0`, as in the
    authors' reference code, and :math:`S_1(t) + S_W` is the area of all steps so far: the
    warmup's LR rises act as negative drops whose pull fades over the first thousands of
    steps. With the authors' fitted parameters this reproduces their Table 1 errors; a sum
    that starts after warmup is 3-5% off.
    Within a segment the decrease is taken as spread evenly over the area it spans, so the
    segment's share of the sum is its total decrease times the mean of G over that span
    (closed form). Parameters may be scalars or arrays indexed like the evaluation points.

    References
    ----------
    Luo et al. 2025, "A Multi-Power Law for Loss Curve Prediction Across Learning Rate
    Schedules", ICLR 2025, arXiv:2503.12811, eq. (5).
    """
    n = features.s1w.shape[0]
    point = features.point

    def at_pair(v):
        v = jnp.asarray(v)
        return v[point] if v.ndim else v

    scale = jnp.exp(-at_pair(gamma) * features.log_lr)
    g = _g_mean(scale * features.area_near, scale * features.area_far, at_pair(C), at_pair(beta))
    ld = jnp.zeros(n).at[point].add(features.d_lr * g)
    return L0 + A * jnp.power(features.s1w, -alpha) - B * ld


def multipower_loss_exact(
    lr, steps, *, warmup_steps=0, peak_lr=None, step_scale=1.0,
    L0, A, alpha, B, C, beta, gamma,
):
    """Multi-power law summed over every step (O(steps x points)); the reference for tests.

    ``warmup_steps`` and ``peak_lr`` are accepted for symmetry with `multipower_features`:
    the warmup enters through ``lr`` itself.
    """
    eta = jnp.asarray(lr, dtype=jnp.float64)
    t = jnp.asarray(steps)
    area = jnp.concatenate([jnp.zeros(1), jnp.cumsum(eta)]) / step_scale
    delta = jnp.concatenate([jnp.zeros(1), eta[:-1]]) - eta
    k = jnp.arange(1, eta.shape[0] + 1)
    s_k = area[t][:, None] - area[k - 1][None, :]  # S_k(t)
    # a step at LR 0 has S_k(t) = 0 too: its term is 0, not 0 * inf
    g = _g(jnp.power(jnp.maximum(eta, 1e-12), -gamma)[None, :] * s_k, C, beta)
    ld = jnp.sum(jnp.where(k[None, :] <= t[:, None], delta[None, :] * g, 0.0), axis=1)
    return L0 + A * jnp.power(area[t], -alpha) - B * ld


def log_lr_opt(log_n, log_d, log_b, *, c0, c_n, c_d, c_b, c_nn=0.0):
    r"""Optimal-LR law in normalised log units.

    .. math::

        \log \eta^* = c_0 + c_N x_N + c_D x_D + c_B x_B + c_{NN} x_N^2

    with :math:`x_N = \log N - \log N_0` etc. The quadratic term is the curved variant (log
    lr* bends upward at scale, Yang et al. 2026); ``c_nn = 0`` gives the log-linear law of
    Bjorck et al. 2024 and Li et al. 2025 (Step Law).
    """
    return c0 + c_n * log_n + c_d * log_d + c_b * log_b + c_nn * log_n**2


def lr_bowl(log_lr_gap, *, curv_lo, curv_hi):
    r"""Excess loss of a peak LR away from the optimum: an asymmetric quadratic bowl.

    .. math::

        h(u) = \kappa_- u^2 \; (u < 0), \qquad h(u) = \kappa_+ u^2 \; (u \ge 0)

    with :math:`u = \log\eta - \log\eta^*`; a steeper high side (:math:`\kappa_+ > \kappa_-`)
    matches sweeps in which too high an LR costs more than too low (Bjorck et al. 2024).
    """
    u = log_lr_gap
    return jnp.where(u < 0, curv_lo, curv_hi) * u**2


def lr_bowl_linex(log_lr_gap, *, curv, skew):
    r"""Excess loss of a peak LR away from the optimum: a linex bowl.

    .. math::

        h(u) = 2\kappa\,\frac{e^{s u} - s u - 1}{s^2}

    Quadratic (:math:`\kappa u^2`) near the optimum; with :math:`s > 0` it rises
    exponentially above it and only linearly below, as LR sweeps do: a too-small LR slows
    progress, a too-large one approaches instability (Wortsman et al. 2023, arXiv:2309.14322).
    """
    s = jnp.where(jnp.abs(skew) > 1e-4, skew, 1e-4)  # s -> 0 is the quadratic; keep it finite
    su = s * log_lr_gap
    return 2.0 * curv * (jnp.expm1(su) - su) / s**2


def loss_nd(log_n, log_d, *, E, A, a, B, b):
    r"""Chinchilla form :math:`L^*(N, D) = E + A e^{-a x_N} + B e^{-b x_D}` in normalised logs.

    References
    ----------
    Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", arXiv:2203.15556.
    """
    return E + A * jnp.exp(-a * log_n) + B * jnp.exp(-b * log_d)


def transfer_bowl(log_lr_gap, *, kappa, asym=0.0, skew=None):
    """The bowl of `transfer_loss`: `lr_bowl_linex` with ``skew`` given, else `lr_bowl`.

    The quadratic's curvature is ``kappa`` below the optimum and ``kappa * exp(asym)`` above it.
    """
    if skew is not None:
        return lr_bowl_linex(log_lr_gap, curv=kappa, skew=skew)
    return lr_bowl(log_lr_gap, curv_lo=kappa, curv_hi=kappa * jnp.exp(asym))


def transfer_loss(x_n, x_d, x_b, log_lr, unannealed, *, E, A, a, B, b, c0, c_n, c_d, c_b, c_nn,
                  kappa, asym, k_anneal, g_b=0.0, b_opt=0.0, b_d=0.0, skew=None):
    r"""Expected loss of a run of size N after D tokens at batch B and peak LR :math:`\eta`.

    .. math::

        L = L^*(N, D) + h(u) + k\,w\,e^{u}, \qquad u = \log\eta - \log\eta^*(N, D, B)

    (plus :math:`g_B (x_B - b_{opt} - b_D x_D)^2` when runs differ in batch: at a fixed token
    budget the loss is worst far from the critical batch, which grows with D, Li et al. 2025)
    with `loss_nd`, `log_lr_opt` and the bowl `lr_bowl` (:math:`\kappa_- = \kappa`,
    :math:`\kappa_+ = \kappa e^{\mathrm{asym}}`). :math:`w \in [0, 1]` is how far the run is
    from annealed at that point: its momentum-lagged LR over its peak (1 on a constant LR, near
    0 at the end of a decay to 0). The last term is the annealing law's :math:`-C S_2` seen
    from the other side: loss left on the table by the LR still in effect, proportional to that
    LR (Tissue et al. 2024). It lets an intermediate point of a long run inform the law at its
    shorter horizon. Inputs are normalised logs (:math:`x_N = \log N/N_0` ...). With
    ``skew`` given, the bowl is `lr_bowl_linex` instead of the quadratic.
    """
    log_opt = log_lr_opt(x_n, x_d, x_b, c0=c0, c_n=c_n, c_d=c_d, c_b=c_b, c_nn=c_nn)
    u = log_lr - log_opt
    return (loss_nd(x_n, x_d, E=E, A=A, a=a, B=B, b=b)
            + transfer_bowl(u, kappa=kappa, asym=asym, skew=skew)
            + k_anneal * unannealed * jnp.exp(u)
            + g_b * (x_b - b_opt - b_d * x_d) ** 2)
