r"""The NumPyro models behind ``lrplan budget``: the loss law L*(N, D) and its calibrated miss.

`budget_model`: final losses of runs at size N after D tokens, each near its own best LR
(an isoflop grid, or a ladder of tuned runs):

.. math::

    y \sim \mathrm{StudentT}_5\big(L^*(N, D),\ \sigma\big), \qquad
    L^*(N, D) = E + A e^{-a x_N} + B e^{-b x_D}

(`lrplan.laws.loss_nd`, normalised logs :math:`x_N = \log N/N_0`). Runs with LR sweeps are
not fitted here: there the transfer model's L* (its loss at lr*) is used instead.

`drift_model`: how far a fit's compute-optimal size and loss miss when extrapolated to a
larger budget, from leave-budget-out forecasts. A forecast at :math:`r` e-folds of compute
beyond the fitted budgets misses log N* by :math:`e \sim N(0, v + (\tau_N r)^2)`, with
:math:`v` the forecast's own posterior variance plus the empirical optimum's, and the best
loss (relative) likewise with :math:`\tau_L`. Each rate is zero with prior probability
:math:`\pi_0` and half-normal otherwise (``models/budget.toml``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from lrplan import laws
from lrplan.bayes import STUDENT_DF, prior_distribution
from lrplan.priors import PriorSet

__all__ = ["LAW_SITES", "DRIFT_SITES", "IsoflopData", "budget_model", "drift_model", "drift_logliks",
           "drift_sd"]

#: The sampled parameters of `budget_model` (E is derived).
LAW_SITES = ("l_ref", "A", "a", "B", "b", "sigma")
#: The two drift rates of `drift_model`.
DRIFT_SITES = ("drift_n", "drift_l")


class IsoflopData(NamedTuple):
    """Final losses in normalised units (a pytree, so one compiled sampler serves every fold).

    ``x_n = log(N / n0)``, ``x_d = log(D / d0)``; ``seen`` flags the points fitted (the others
    are masked out: leave-budget-out fits keep the shapes and so the compiled code);
    ``loss_ref`` is the seen points' median loss, around which the law's level is sampled.
    """

    x_n: np.ndarray
    x_d: np.ndarray
    loss: np.ndarray
    seen: np.ndarray
    loss_ref: np.ndarray


def budget_model(data: IsoflopData, *, priors: PriorSet, observe: bool = True) -> None:
    """Final losses of runs near their best LR; ``observe=False`` samples the prior predictive."""
    v = {n: numpyro.sample(n, prior_distribution(priors[n])) for n in ("A", "a", "B", "b")}
    # The loss at the reference size and horizon is what the data pin down; E, A and B trade
    # off when the fitted budgets span little compute, so sample that level and derive E.
    l_ref = numpyro.sample("l_ref", prior_distribution(priors["l_ref"]))
    e = numpyro.deterministic("E", data.loss_ref + l_ref - v["A"] - v["B"])
    mean = laws.loss_nd(data.x_n, data.x_d, E=e, **v)
    sigma = numpyro.sample("sigma", prior_distribution(priors["sigma"]))
    with numpyro.plate("points", len(data.loss)), numpyro.handlers.mask(mask=data.seen):
        numpyro.sample("loss", dist.StudentT(STUDENT_DF, mean, sigma),
                       obs=data.loss if observe else None)


def drift_sd(rate, reach, known_var=0.0):
    """Sd of a forecast's miss ``reach`` e-folds of compute beyond the fit: ``sqrt(v + (rate r)^2)``.

    ``known_var`` is the forecast's own variance (zero for a plan's draws, whose law draws
    carry it). `drift_model` and `lrplan.budget.decide.decide_budget` both use it.
    """
    return jnp.sqrt(known_var + (rate * reach) ** 2)


def drift_logliks(z, reach, err_n, var_n, err_l, var_l, seen):
    """Log-likelihoods of the forecast errors, (log N*, log loss): under rates ``z``, and under none.

    Each is an array (2,); with no drift the errors' sd is the forecasts' own alone. Only the
    ``seen`` entries count (the rest pad the arrays to a shape bucket).
    """
    sds = (drift_sd(z[0], reach, var_n), drift_sd(z[1], reach, var_l))
    errs = (err_n, err_l)
    slab = jnp.stack([jnp.sum(seen * dist.Normal(0.0, sd).log_prob(e))
                      for sd, e in zip(sds, errs, strict=True)])
    none = jnp.stack([jnp.sum(seen * dist.Normal(0.0, jnp.sqrt(v)).log_prob(e))
                      for v, e in zip((var_n, var_l), errs, strict=True)])
    return slab, none


def drift_model(reach: jnp.ndarray, err_n: jnp.ndarray, var_n: jnp.ndarray, err_l: jnp.ndarray,
                var_l: jnp.ndarray, seen: jnp.ndarray, *, scales: tuple[float, float],
                p_none: float = 0.0) -> None:
    """Leave-budget-out forecast errors of log N* and of the best loss's log, given their reach.

    ``reach`` is each forecast's e-folds of compute beyond its fit's largest budget; ``var_*``
    the known variances (forecast posterior plus empirical optimum); ``seen`` flags the real
    forecasts among the padding. A rate is sampled as a signed normal whose absolute value is
    half-normal (smooth through 0 for NUTS). With prior probability ``p_none`` a direction has
    no drift at all (a spike at zero, summed out here;
    `lrplan.budget.fit.drift_posterior` draws it back): forecasts that agree with the law
    within their own noise can then settle the drift at zero rather than at the smallest
    rate they cannot rule out.
    """
    z = numpyro.sample("drift", dist.Normal(0.0, jnp.asarray(scales)))
    slab, none = drift_logliks(z, reach, err_n, var_n, err_l, var_l, seen)
    if p_none > 0:
        slab = jnp.logaddexp(jnp.log1p(-p_none) + slab, jnp.log(p_none) + none)
    numpyro.factor("heldout", jnp.sum(slab))
