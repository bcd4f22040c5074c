"""The curve model's maximum a posteriori point, and the law evaluated at the fitted points.

`PointFit` finds the MAP point by L-BFGS (`lbfgs`) from several starts; it starts NUTS and
gives the held-out fits of the calibration (`lrplan.curve.calibrate`), which differ from the
full fit only in the points they see. `law_means`, `law_at_point` and `law_median` evaluate
the law at a data set's points from per-group values, a point or posterior draws. Every
function is compiled once per law, group layout, priors and shape bucket (`lrplan.bayes`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lrplan.bayes import cached, map_functions
from lrplan.curve.model import CurveData, curve_model, law_mean, law_parameters
from lrplan.curve.prepare import pad_to_bucket
from lrplan.errors import FitError
from lrplan.priors import PriorSet

__all__ = ["PointFit", "compile_key", "law_at_point", "law_means", "law_median", "lbfgs"]

def lbfgs(value_and_grad, x0: np.ndarray, *args, **kwargs):
    """L-BFGS-B (scipy) on a jax ``value_and_grad(x, *args)``; a non-finite value is a wall.

    ``kwargs`` go to `scipy.optimize.minimize` (``bounds``, ``options``).
    """
    from scipy.optimize import minimize

    def fun(x):
        v, g = value_and_grad(x, *args)
        v, g = float(v), np.asarray(g, dtype=np.float64)
        if not np.isfinite(v):
            return 1e30, np.zeros_like(g)
        return v, np.nan_to_num(g)

    return minimize(fun, x0, jac=True, method="L-BFGS-B", **kwargs)


def compile_key(data: CurveData, priors: PriorSet, *rest) -> tuple:
    """What picks a compiled function besides array shapes: the law, groups, size law, priors."""
    return (data.law, data.n_groups, data.size_law, priors.to_toml(), *rest)


def _point_functions(data: CurveData, priors: PriorSet):
    """The point fit's compiled functions (`lrplan.bayes.map_functions`), built once.

    For data like ``data`` (padded); the model takes ``(data, seen)``, ``seen=None`` fitting
    every point.
    """

    def model(data, seen=None):
        curve_model(data=data, priors=priors, obs=data.log_loss, seen=seen)

    return map_functions(("point", *compile_key(data, priors)), model, (data, None))


class PointFit:
    """Maximum a posteriori points of the curve model on one data set, compiled once.

    L-BFGS from several starts: the prior median, then random moves from it.

    ``solve(seen)`` fits the points flagged in ``seen`` only; the held-out fits of the
    calibration differ in nothing else, so they share the set-up. The objective is compiled
    once per law, group layout, priors and shape bucket (`lrplan.bayes`), with the data as
    arguments: fits of similar data in one process share it. Once the full data are solved, a
    held-out fit starts from that optimum as well: from the prior median alone, a fit to a
    short prefix can stall at a law that fits nothing.
    """

    def __init__(self, data: CurveData, priors: PriorSet, *, seed: int = 0):
        self.data, self.seed = data, seed
        self._padded = jax.tree.map(jnp.asarray, pad_to_bucket(data))
        self._fns = _point_functions(self._padded, priors)
        x0, ok = self._fns["init"](jax.random.PRNGKey(seed), self._padded, None)
        if not bool(ok):
            raise FitError("the point fit found no start with a finite posterior density; "
                           "check the priors")
        self._x0 = np.asarray(x0)
        self._x_full = None

    def _seen(self, seen: np.ndarray | None) -> jnp.ndarray:
        n = self.data.n_points
        seen = np.ones(n, bool) if seen is None else np.asarray(seen, bool)
        return jnp.asarray(np.concatenate([seen, np.zeros(self._padded.n_points - n, bool)]))

    def solve(self, seen: np.ndarray | None = None, *, starts: int = 4):
        """The best of ``starts`` L-BFGS runs: constrained values of every site, and energy."""
        full = seen is None
        mask = self._seen(seen)
        rng = np.random.default_rng(self.seed)
        x0 = self._x0
        points = [x0] + [x0 + rng.normal(0.0, 0.5, x0.shape) for _ in range(starts - 1)]
        if self._x_full is not None and not full:
            points.append(self._x_full)
        best = None
        for start in points:
            res = lbfgs(self._fns["value_and_grad"], start, self._padded, mask,
                        options=dict(maxiter=3000))
            if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
                best = res
        if best is None:
            raise FitError("the point fit found no finite posterior density; check the priors")
        if full:
            self._x_full = best.x
        constrained = self._fns["constrain"](jnp.asarray(best.x), self._padded, None)
        return {k: np.asarray(v) for k, v in constrained.items()}, float(best.fun)


def law_means(data: CurveData, values: dict, *, draws: bool = False) -> np.ndarray:
    """The law at ``data``'s points from per-group values (``draws``: a leading draw axis).

    Compiled once per law, group layout and shape bucket (the data are padded to it).
    """
    fn = cached(("law_mean", draws), lambda: jax.jit(
        jax.vmap(law_mean, in_axes=(None, 0)) if draws else law_mean))
    return np.asarray(fn(pad_to_bucket(data), values))[..., :data.n_points]


def law_at_point(data: CurveData, point: dict[str, np.ndarray]) -> np.ndarray:
    """The law at ``data``'s points from one point of the model (a MAP point's sites)."""
    values = {}
    for n in law_parameters(data.law):
        key = f"{n}_group" if f"{n}_group" in point else n
        v = jnp.asarray(point[key])
        values[n] = jnp.broadcast_to(v, (data.n_groups,)) if v.ndim == 0 else v
    return law_means(data, values)


def law_median(data: CurveData, samples: dict[str, np.ndarray], max_draws: int = 200) -> np.ndarray:
    """The posterior-median law at the fitted points, from up to ``max_draws`` draws."""
    names = law_parameters(data.law)
    flat = {}
    for n in names:
        key = f"{n}_group" if f"{n}_group" in samples else n
        x = samples[key]
        x = x.reshape((-1, *x.shape[2:]))
        flat[n] = x.reshape(x.shape[0], -1) if x.ndim > 1 else x[:, None]
    total = flat[names[0]].shape[0]
    pick = np.unique(np.linspace(0, total - 1, min(max_draws, total)).round().astype(int))
    values = {n: jnp.broadcast_to(jnp.asarray(v[pick]), (pick.size, data.n_groups))
              for n, v in flat.items()}
    return np.median(law_means(data, values, draws=True), axis=0)

