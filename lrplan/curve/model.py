"""The NumPyro curve model: loss curves of several runs under one law, with partial pooling.

Runs that share model size, batch and peak LR form a group. Each group's law has its own
amplitudes and exponents, log-normal around shared values with spread tau (partial pooling);
when the runs span several model sizes, the asymptote follows the size law
``L0(N) = E + A_N (N / N_ref)^-a_N``. Observations are log losses with Student-t noise (a few
eval points are always off); the discrepancy between the law and a run it did not see is
calibrated separately by held-out prediction (see `lrplan.curve.calibrate`).

The model's pieces that predictions reuse live here once: `group_law` (a group's law from the
shared values, for a group the fit did not see), `size_law_level`, `law_mean` and the noise
(`observation`, `noise_draws`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from lrplan import laws
from lrplan.bayes import STUDENT_DF, prior_distribution
from lrplan.errors import FitError
from lrplan.priors import PriorSet

__all__ = [
    "LAWS",
    "Law",
    "CurveData",
    "GroupKey",
    "MATCH_RTOL",
    "same_setting",
    "law_parameters",
    "curve_data",
    "curve_model",
    "held_at_peak",
    "L0_OFFSET_SCALE",
    "size_law_level",
    "group_law",
    "law_mean",
    "observation",
    "noise_draws",
]

Law = Literal["multipower", "annealing"]
LAWS: tuple[str, ...] = ("multipower", "annealing")

#: Per-group law parameters that are partially pooled (log scale).
_POOLED = {
    "multipower": ("A", "alpha", "B", "C", "beta", "gamma"),
    "annealing": ("A", "alpha", "C"),
}
STEP_SCALE = 1000.0


def law_parameters(law: str) -> tuple[str, ...]:
    """Names of a law's own parameters, ``L0`` first."""
    if law not in _POOLED:
        raise FitError(f"unknown law {law!r}; use one of {', '.join(LAWS)}")
    return ("L0", *_POOLED[law])


#: Settings this close (relative) are the same: a peak LR read off an LR logged every so many
#: steps (a little below the true peak, differently in each run), or typed to three
#: significant digits, still names its group.
MATCH_RTOL = 0.01


def same_setting(a: float | None, b: float | None) -> bool:
    """Whether two values of a run setting (None: unknown) are the same within `MATCH_RTOL`."""
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= MATCH_RTOL * max(abs(a), abs(b))


@dataclass(frozen=True)
class GroupKey:
    """What defines a group of runs: size, batch and peak LR (None when not given)."""

    params: float | None
    tokens_per_step: float | None
    peak_lr: float

    def matches(self, other: GroupKey) -> bool:
        """Same size, batch and peak LR, each within `MATCH_RTOL`."""
        return (same_setting(self.params, other.params)
                and same_setting(self.tokens_per_step, other.tokens_per_step)
                and same_setting(self.peak_lr, other.peak_lr))

    def index_in(self, groups: Sequence[GroupKey]) -> int | None:
        """Index of the first of ``groups`` this key matches, or None."""
        return next((i for i, g in enumerate(groups) if g.matches(self)), None)


@dataclass(frozen=True)
class CurveData:
    """Everything the curve model needs, in normalised units.

    ``log_loss`` is None for a prediction target. ``group_log_n`` is log(N / n_ref) per group
    (0 when the size is unknown); ``size_law`` says whether L0 follows the size law.
    """

    law: str
    features: laws.AnnealingFeatures | laws.MultiPowerFeatures
    point_group: np.ndarray
    log_loss: np.ndarray | None
    n_groups: int
    group_log_n: np.ndarray
    size_law: bool
    #: Per point: a real point (True) or padding (False) up to a shape bucket (see `padded`).
    valid: np.ndarray | None = None

    @property
    def n_points(self) -> int:
        """Number of evaluation points (padding included)."""
        return int(self.point_group.shape[0])

    def padded(self, n_points: int, n_pairs: int | None = None) -> CurveData:
        """The same data padded to ``n_points`` points (and ``n_pairs`` multi-power pairs).

        Padding points are masked out of the likelihood and of the positivity check, and
        padding pairs add nothing to the loss: the model's density is unchanged, and fits of
        data of different lengths padded to one size share compiled code.
        """
        n = self.n_points
        extra = n_points - n
        if extra < 0:
            raise ValueError(f"cannot pad {n} points to {n_points}")
        pad = lambda x, v: np.concatenate([np.asarray(x), np.full(extra, v, np.asarray(x).dtype)])  # noqa: E731
        f = self.features
        if isinstance(f, laws.MultiPowerFeatures):
            k = n_pairs if n_pairs is not None else f.point.size
            more = k - f.point.size
            if more < 0:
                raise ValueError(f"cannot pad {f.point.size} pairs to {k}")
            pp = lambda x, v: np.concatenate([x, np.full(more, v, x.dtype)])  # noqa: E731
            f = laws.MultiPowerFeatures(s1w=pad(f.s1w, 1.0), point=pp(f.point, 0),
                                        d_lr=pp(f.d_lr, 0.0), log_lr=pp(f.log_lr, 0.0),
                                        area_far=pp(f.area_far, 0.0),
                                        area_near=pp(f.area_near, 0.0))
        else:
            f = laws.AnnealingFeatures(s1=pad(f.s1, 1.0), s2=pad(f.s2, 0.0))
        valid = np.ones(n, bool) if self.valid is None else np.asarray(self.valid, bool)
        return replace(self, features=f, point_group=pad(self.point_group, 0),
                       log_loss=None if self.log_loss is None else pad(self.log_loss, 0.0),
                       valid=pad(valid, False))


# data are a pytree: arrays dynamic, the law and the groups' layout static (part of the shape)
jax.tree_util.register_dataclass(
    CurveData, data_fields=["features", "point_group", "log_loss", "group_log_n", "valid"],
    meta_fields=["law", "n_groups", "size_law"])


def held_at_peak(lr: np.ndarray, warmup_steps: int) -> np.ndarray:
    """The schedule's constant-LR counterpart: the same warmup, then the peak LR throughout."""
    lr = np.asarray(lr, dtype=np.float64)
    return np.where(np.arange(lr.size) < warmup_steps, lr, lr.max())


def _features(law: str, lr: np.ndarray, steps: np.ndarray, *, warmup_steps: int,
              peak_lr: float, lr_ref: float):
    kw = dict(warmup_steps=warmup_steps, peak_lr=peak_lr / lr_ref, step_scale=STEP_SCALE)
    if law == "multipower":
        return laws.multipower_features(lr / lr_ref, steps, **kw)
    return laws.annealing_features(lr / lr_ref, steps, **kw)


def _concat_features(law: str, parts: list) -> laws.AnnealingFeatures | laws.MultiPowerFeatures:
    if law == "annealing":
        return laws.AnnealingFeatures(*(np.concatenate(x) for x in zip(*parts, strict=True)))
    offsets = np.cumsum([0] + [len(f.s1w) for f in parts[:-1]])
    return laws.MultiPowerFeatures(
        s1w=np.concatenate([f.s1w for f in parts]),
        point=np.concatenate([f.point + o for f, o in zip(parts, offsets, strict=True)]),
        d_lr=np.concatenate([f.d_lr for f in parts]),
        log_lr=np.concatenate([f.log_lr for f in parts]),
        area_far=np.concatenate([f.area_far for f in parts]),
        area_near=np.concatenate([f.area_near for f in parts]),
    )


def curve_data(
    law: str,
    curves: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, int, int]],
    *,
    lr_ref: float,
    group_log_n: np.ndarray,
    size_law: bool,
) -> CurveData:
    """Build model inputs from curves ``(lr, steps, loss_or_None, warmup_steps, group)``.

    ``lr`` is the per-step LR of the run (raw units), ``steps`` the evaluation steps (all at
    or after warmup). Losses must be all given (fit) or all None (prediction).
    """
    law_parameters(law)
    parts, groups, ys = [], [], []
    for lr, steps, loss, warmup, g in curves:
        peak = float(np.max(lr))
        parts.append(_features(law, lr, steps, warmup_steps=warmup, peak_lr=peak, lr_ref=lr_ref))
        groups.append(np.full(len(steps), g, dtype=np.int64))
        ys.append(None if loss is None else np.log(loss))
    if any(y is None for y in ys) and not all(y is None for y in ys):
        raise ValueError("give losses for every curve or for none")
    return CurveData(
        law=law,
        features=_concat_features(law, parts),
        point_group=np.concatenate(groups),
        log_loss=None if ys[0] is None else np.concatenate(ys),
        n_groups=len(group_log_n),
        group_log_n=np.asarray(group_log_n, dtype=np.float64),
        size_law=size_law,
    )


#: A group's L0 departs from the shared level (or the size law's) with sd ``L0_OFFSET_SCALE *
#: tau``, in loss units: the groups' log amplitudes and exponents spread by tau, their
#: asymptotes far less.
L0_OFFSET_SCALE = 0.05


def size_law_level(E, A_N, a_N, log_n, *, xp=jnp):
    r"""The asymptote at model size N: :math:`L_0(N) = E + A_N (N / N_{ref})^{-a_N}`.

    ``log_n`` is :math:`\log(N / N_{ref})`; the arguments broadcast (draws, groups). ``xp``
    is the array module: `jax.numpy` in the model, `numpy` for predictions from posterior
    draws (which then stay in float64 whatever JAX's precision).
    """
    return E + A_N * xp.exp(-a_N * log_n)


def group_law(shared: dict, level, tau, z: dict, *, xp=jnp) -> dict:
    """A group's law parameters, non-centred: the shared ones moved by standard normals ``z``.

    Each pooled parameter is ``shared[n] * exp(tau * z[n])`` (log-normal around the shared
    value with sd tau); L0 is ``level + L0_OFFSET_SCALE * tau * z["L0"]``, ``level`` the shared
    L0 or the size law's (`size_law_level`). `curve_model` samples its groups so (non-centred),
    and a prediction for a group it did not fit draws one so, from the posterior's shared
    values and fresh normals. The arguments broadcast; ``xp`` as for `size_law_level`.
    """
    out = {n: v * xp.exp(tau * z[n]) for n, v in shared.items()}
    out["L0"] = level + L0_OFFSET_SCALE * tau * z["L0"]
    return out


def observation(log_mean, scale) -> dist.Distribution:
    """The model's noise on log loss: Student-t with `STUDENT_DF` degrees of freedom."""
    return dist.StudentT(STUDENT_DF, log_mean, scale)


def noise_draws(rng: np.random.Generator, scale: float, shape) -> np.ndarray:
    """Draws of `observation`'s noise (around 0) at ``scale``, from a NumPy generator.

    What a prediction and a replicate add to the law's log loss: the likelihood's Student-t.
    """
    return scale * rng.standard_t(STUDENT_DF, size=shape)


def _group_values(data: CurveData, priors: PriorSet, centred: bool) -> dict[str, jnp.ndarray]:
    """Sample the law's parameters; return per-group arrays (shape (G,)).

    The groups' log parameters are normal around the shared ones with sd tau, sampled
    centred (``log_<name>``, and ``L0_offset``) or non-centred (``z_<name>`` and ``z_L0``
    through `group_law`); the model and so the posterior are the same. A group's dense curves
    pin its law far more tightly than tau spreads the groups, so NUTS samples them centred:
    non-centred, each z is tied to tau along a curved ridge. A MAP point is found
    non-centred, where the density stays bounded as tau goes to 0 (centred, it does not). On
    OLMo's four-size fit this, with L_ref below and tau's gamma prior, took NUTS from 12
    divergences and R-hat 1.019 to 0 and 1.003.
    """
    G = data.n_groups
    shared = {}
    for n in _POOLED[data.law]:
        if n == "C":
            continue
        shared[n] = numpyro.sample(n, prior_distribution(priors[n]))
        if n == "beta" and data.law == "multipower":
            # C and beta trade off strongly; the half-life of an LR drop's payoff, where
            # G = 1/2, is what the data pin down, so sample it and derive C.
            half = numpyro.sample("half_life", prior_distribution(priors["half_life"]))
            shared["C"] = numpyro.deterministic("C", jnp.expm1(jnp.log(2.0) / shared[n]) / half)
    if data.law == "annealing":
        shared["C"] = numpyro.sample("C", prior_distribution(priors["C"]))
    if G > 1:
        tau = numpyro.sample("tau", prior_distribution(priors["tau"]))
        with numpyro.plate("group", G):
            if centred:
                out = {n: numpyro.deterministic(f"{n}_group", jnp.exp(numpyro.sample(
                    f"log_{n}", dist.Normal(jnp.log(v), tau)))) for n, v in shared.items()}
                l0_offset = numpyro.sample("L0_offset", dist.Normal(0.0, L0_OFFSET_SCALE * tau))
            else:
                z = {n: numpyro.sample(f"z_{n}", dist.Normal(0, 1)) for n in shared}
                z["L0"] = numpyro.sample("z_L0", dist.Normal(0, 1))
    else:
        out = {n: jnp.broadcast_to(v, (1,)) for n, v in shared.items()}
        l0_offset = jnp.zeros(1)
    if data.size_law:
        A_N = numpyro.sample("A_N", prior_distribution(priors["A_N"]))
        a_N = numpyro.sample("a_N", prior_distribution(priors["a_N"]))
        # With few sizes E, A_N and a_N trade off along a curved ridge (two sizes pin only a
        # level and a slope); the asymptote at the reference size, E + A_N, is what the data
        # pin down, so sample it, E's prior shifted by A_N (a unit Jacobian), and derive E.
        L_ref = numpyro.sample("L_ref", dist.TransformedDistribution(
            prior_distribution(priors["E"]), dist.transforms.AffineTransform(A_N, 1.0)))
        E = numpyro.deterministic("E", L_ref - A_N)
        base = size_law_level(E, A_N, a_N, jnp.asarray(data.group_log_n))
    else:
        base = numpyro.sample("L0", prior_distribution(priors["L0"]))
    if G > 1 and not centred:
        return {n: numpyro.deterministic(f"{n}_group", v)
                for n, v in group_law(shared, base, tau, z).items()}
    out["L0"] = numpyro.deterministic("L0_group", base + l0_offset)
    return out


def law_mean(data: CurveData, values: dict[str, jnp.ndarray]) -> jnp.ndarray:
    """The law's loss at every point, from per-group parameter arrays."""
    g = jnp.asarray(data.point_group)
    if data.law == "multipower":
        p = {n: values[n][g] for n in ("C", "beta", "gamma")}  # indexed by point
        return laws.multipower_loss(
            data.features, L0=values["L0"][g], A=values["A"][g], alpha=values["alpha"][g],
            B=values["B"][g], **p,
        )
    return laws.annealing_loss(
        data.features, L0=values["L0"][g], A=values["A"][g], alpha=values["alpha"][g],
        C=values["C"][g],
    )


def curve_model(
    data: CurveData, *, priors: PriorSet, obs: np.ndarray | None = None,
    scale: float | None = None, seen: jnp.ndarray | None = None, centred: bool = False,
) -> None:
    r"""Loss curves of several runs under one law.

    .. math::

        \log y_i \sim \mathrm{StudentT}_5\big(\log L_{g(i)}(t_i), s\big)

    With ``scale=None`` the scale :math:`s = \sigma` is sampled (point fits). For the posterior
    the caller fixes :math:`s = \sqrt{\sigma^2 + \delta^2}` with :math:`\delta` the rms by
    which the law misses points of runs it did not see more than those it fitted: a curve's
    residuals are strongly autocorrelated,
    so treating its points as independent with the small in-sample noise alone gives a
    posterior far narrower than the law's real accuracy. ``obs=None`` samples the prior
    predictive. ``seen`` (booleans, one per point) keeps the other points out of the
    likelihood, so that held-out point fits reuse one compiled model. ``centred`` picks how
    the groups are sampled (see `_group_values`).
    """
    values = _group_values(data, priors, centred)
    mean = law_mean(data, values)
    # A law whose parameters make the loss non-positive is outside the model: give it no mass.
    positive = mean > 0 if data.valid is None else (mean > 0) | ~jnp.asarray(data.valid)
    numpyro.factor("positive_loss", jnp.where(jnp.all(positive), 0.0, -jnp.inf))
    log_mean = jnp.log(jnp.clip(mean, 1e-6))
    if scale is None:
        scale = numpyro.sample("sigma", prior_distribution(priors["sigma"]))
    mask = True if seen is None else seen
    if data.valid is not None:
        mask = jnp.asarray(data.valid) & mask
    with numpyro.plate("points", data.n_points), numpyro.handlers.mask(mask=mask):
        numpyro.sample("log_loss", observation(log_mean, scale), obs=obs)
