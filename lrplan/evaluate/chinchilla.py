"""Chinchilla's approach 3: a Huber point fit of ``L = E + A N^-a + B D^-b``, and its bootstrap.

References
----------
Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", arXiv:2203.15556.
Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt", arXiv:2404.10102.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np

from lrplan import laws
from lrplan.errors import FitError

__all__ = ["HUBER_DELTA", "ChinchillaFit", "chinchilla_fit"]

#: Huber threshold on the log-loss residual (Hoffmann et al. 2022 use 1e-3).
HUBER_DELTA = 1e-3


@dataclass(frozen=True)
class ChinchillaFit:
    """Chinchilla's approach 3: a point fit of ``L = E + A N^-a + B D^-b`` (raw N and D).

    ``values`` has ``E, A, a, B, b``; ``boot`` the bootstrap refits' values (one dict each;
    ``failed_boot`` counts those that did not converge to finite values, left out).
    """

    values: dict[str, float]
    objective: float
    starts: int
    boot: tuple[dict[str, float], ...] = ()
    failed_boot: int = 0  # bootstrap refits left out: non-finite objective or parameters

    def loss(self, params, tokens, values: dict[str, float] | None = None) -> np.ndarray:
        """The fitted law's loss at sizes ``params`` after ``tokens``."""
        v = values or self.values
        return np.asarray(laws.loss_nd(np.log(np.asarray(params, float)),
                                       np.log(np.asarray(tokens, float)), **v))


#: Hoffmann et al.'s grid of starts, thinned (theirs has 4,500 points; Besiroglu et al. 2024).
_CHINCHILLA_STARTS = dict(e=(-1.0, 0.0, 1.0), a=(0.0, 10.0, 20.0), b=(0.0, 10.0, 20.0),
                          alpha=(0.2, 0.5, 1.0), beta=(0.2, 0.5, 1.0))


def _chinchilla_objective(delta: float):
    import jax.numpy as jnp

    def objective(x, log_n, log_d, log_y, w):
        e, a, b, alpha, beta = x[0], x[1], x[2], x[3], x[4]
        pred = jnp.log(laws.loss_nd(log_n, log_d, E=jnp.exp(e), A=jnp.exp(a), a=alpha,
                                    B=jnp.exp(b), b=beta))
        r = jnp.abs(pred - log_y)
        hub = jnp.where(r <= delta, 0.5 * r**2, delta * (r - 0.5 * delta))
        return jnp.sum(w * hub) / delta**2

    return objective


@functools.lru_cache(maxsize=4)
def _chinchilla_solver(delta: float):
    """BFGS from many starts (and weights) at once: one compiled, vectorised call."""
    import jax
    from jax.scipy.optimize import minimize

    objective = _chinchilla_objective(delta)

    def solve(x0, w, log_n, log_d, log_y):
        res = minimize(objective, x0, args=(log_n, log_d, log_y, w), method="BFGS",
                       options={"maxiter": 500})
        return res.x, res.fun

    return jax.jit(jax.vmap(solve, in_axes=(0, 0, None, None, None)))


def chinchilla_fit(params: np.ndarray, tokens: np.ndarray, loss: np.ndarray, *,
                   delta: float = HUBER_DELTA, n_boot: int = 0, seed: int = 0) -> ChinchillaFit:
    """Chinchilla's approach 3 and bootstrap refits (Hoffmann et al. 2022; Besiroglu et al. 2024).

    The Huber loss (``delta``) on ``log L`` against the log of the law, minimised by BFGS from
    a grid of starts (`_CHINCHILLA_STARTS`); each of ``n_boot`` refits resamples the points with
    replacement and starts from the best fit, as Besiroglu et al. bootstrap.
    """
    import jax.numpy as jnp

    log_n, log_d = np.log(np.asarray(params, float)), np.log(np.asarray(tokens, float))
    log_y = np.log(np.asarray(loss, float))
    solve = _chinchilla_solver(delta)
    s = _CHINCHILLA_STARTS
    starts = np.array(list(itertools.product(s["e"], s["a"], s["b"], s["alpha"], s["beta"])), float)
    data = (jnp.asarray(log_n), jnp.asarray(log_d), jnp.asarray(log_y))
    x, fun = (np.asarray(v) for v in solve(jnp.asarray(starts), jnp.ones((len(starts), log_y.size)), *data))
    ok = np.isfinite(fun) & np.all(np.isfinite(x), axis=1)
    if not ok.any():
        raise FitError("the Chinchilla fit found no finite objective from any start")
    best = x[np.flatnonzero(ok)[np.argmin(fun[ok])]]

    def values(v):
        return {"E": float(np.exp(v[0])), "A": float(np.exp(v[1])), "B": float(np.exp(v[2])),
                "a": float(v[3]), "b": float(v[4])}

    boot = []
    if n_boot:
        rng = np.random.default_rng(seed)
        w = np.stack([np.bincount(rng.integers(0, log_y.size, log_y.size), minlength=log_y.size)
                      for _ in range(n_boot)]).astype(float)
        xb, fb = solve(jnp.asarray(np.tile(best, (n_boot, 1))), jnp.asarray(w), *data)
        xb, fb = np.asarray(xb), np.asarray(fb)
        boot = [values(v) for v, f in zip(xb, fb, strict=True) if np.isfinite(f) and np.isfinite(v).all()]
    return ChinchillaFit(values=values(best), objective=float(np.min(fun[ok])), starts=len(starts),
                         boot=tuple(boot), failed_boot=n_boot - len(boot))
