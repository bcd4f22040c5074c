"""Compiled code shared across fits: NUTS runs and jitted functions keyed by model and shapes.

Every function here is built once per *signature* (the model, its fixed settings and the
structure of its arguments) and kept in a module-level cache, and the data are passed to
it as arguments (pytrees), never closed over. Fits of data with the same structure and
shape bucket (see `bucket`) therefore reuse one compiled program: a process that fits a
hundred data sets compiles each program once and keeps its memory flat, where functions
closing over each fit's data compiled afresh for every fit (~1,000 memory maps a fit) and
never hit JAX's persistent cache.

`nuts` runs numpyro's NUTS kernel under one `jax.jit` (init, warmup and sampling in one
`lax.scan` each) with the model's arguments dynamic. Its random stream, adaptation and
draws are those of ``numpyro.infer.MCMC`` with the same kernel, key and start (the chains'
keys split as MCMC splits them), so a fit gives the numbers it gave through MCMC.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Hashable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from lrplan.errors import FitError
from lrplan.priors import Prior

__all__ = ["STUDENT_DF", "Diagnostics", "bucket", "cache_size", "cached", "diagnostics", "map_functions",
           "nuts", "prior_distribution"]

_CACHE: dict[Hashable, object] = {}
_LOCK = threading.Lock()


def cached(key: Hashable, build: Callable[[], object]):
    """The object built for ``key``, built by ``build()`` on first use and kept."""
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = build()
        return _CACHE[key]


def cache_size() -> int:
    """How many compiled-function signatures this process holds."""
    return len(_CACHE)


#: Shape buckets: sizes are padded up to the next 2^k times one of these (at most 25% more).
_STEPS = (1.0, 1.25, 1.5, 1.75)
_MIN_BUCKET = 16


def bucket(n: int) -> int:
    """The padded size for ``n`` entries: ``n`` rounded up to ``m * 2^k``, m in 1, 1.25, 1.5, 1.75."""
    if n <= _MIN_BUCKET:
        return _MIN_BUCKET
    k = 2 ** math.floor(math.log2(n))
    return next(int(math.ceil(m * k)) for m in (*_STEPS, 2.0) if math.ceil(m * k) >= n)


_WARM: set = set()


@contextmanager
def _first_call(sig):
    """Serialise a program's first call (its tracing sets the kernel's state), then run freely."""
    if sig in _WARM:
        yield
        return
    with _TRACE_LOCK:
        yield
        _WARM.add(sig)


_TRACE_LOCK = threading.RLock()


def _chain_fn(kernel, num_warmup: int, num_samples: int, thinning: int):
    """One chain: start at ``values`` (None: the kernel's init strategy), warmup, draws."""
    from numpyro.infer import init_to_value

    default = kernel._init_strategy

    def run(rng_key, values, args):
        # the start is an argument, so the strategy is set while tracing (as MCMC would
        # build the kernel with init_to_value(values=...)): one program for every start
        kernel._init_strategy = default if values is None else init_to_value(values=values)
        state = kernel.init(rng_key, num_warmup, init_params=None, model_args=args,
                            model_kwargs={})
        step = partial(kernel.sample, model_args=args, model_kwargs={})

        def warm(s, _):
            return step(s), None

        state, _ = jax.lax.scan(warm, state, None, length=num_warmup)
        post = kernel.postprocess_fn(args, {})

        def draw(s, _):
            s, _ = jax.lax.scan(warm, s, None, length=thinning - 1) if thinning > 1 else (s, None)
            s = step(s)
            return s, (post(s.z), s.diverging)

        _, (samples, diverging) = jax.lax.scan(draw, state, None, length=num_samples)
        return samples, diverging

    return run


def nuts(key: Hashable, make_kernel: Callable[[], object], rng_key, args: tuple, *,
         init: dict | None = None, num_chains: int = 1, num_warmup: int, num_samples: int,
         thinning: int = 1, parallel: bool | None = None) -> tuple[dict, np.ndarray]:
    """Draws of a model by NUTS: ``(samples (chain, draw, ...) by site, diverging (chain, draw))``.

    ``make_kernel()`` builds the kernel (e.g. ``NUTS(model, dense_mass=True)``) whose model
    takes ``args`` (arrays or pytrees of arrays: dynamic) and nothing else; ``key`` names the
    kernel and its fixed settings, and with the shapes of ``args`` picks the compiled program.
    ``init`` holds constrained starting values by site, as for ``init_to_value`` (None: the
    kernel's init strategy); sites it lacks start as that strategy's fallback does.
    The chains run on one device each when JAX has as many (``parallel=None``), else one
    after another through the same compiled chain.
    """
    if parallel is None:
        parallel = num_chains > 1 and jax.local_device_count() >= num_chains
    shapes = (jax.tree.structure((init, args)),
              tuple((np.shape(a), np.result_type(a).str) for a in jax.tree.leaves((init, args))))
    sig = ("nuts", key, num_warmup, num_samples, thinning, parallel and num_chains, shapes)

    def build():
        kernel = make_kernel()
        run = _chain_fn(kernel, num_warmup, num_samples, thinning)
        if parallel:
            return jax.pmap(run, in_axes=(0, None, None))
        return jax.jit(run)

    run = cached(sig, build)
    if init is not None:
        init = {k: jnp.asarray(v) for k, v in init.items()}
    keys = jax.random.split(rng_key, num_chains) if num_chains > 1 else rng_key[None]
    with _first_call(sig):
        if parallel:
            samples, diverging = run(keys, init, args)
        else:
            outs = [run(k, init, args) for k in keys]
    if not parallel:
        samples = jax.tree.map(lambda *x: jnp.stack(x), *[o[0] for o in outs])
        diverging = jnp.stack([o[1] for o in outs])
    return {k: np.asarray(v) for k, v in samples.items()}, np.asarray(diverging)


def map_functions(key: Hashable, model: Callable, example_args: tuple, *, init_samples: int = 15) -> dict:
    """Compiled functions for a model's maximum a posteriori point, built once per ``key``.

    ``model(*args)`` takes arrays (pytrees; ``None`` for an absent argument) and nothing else,
    so fits of data laid out alike share the functions; ``example_args`` fixes the latent
    layout (the unconstrained sites' shapes), which ``key`` must therefore determine.

    ``init(rng_key, *args)``: the prior-median start (unconstrained, flat) and whether its
    density is finite; ``value_and_grad(x, *args)``: the potential energy and its gradient;
    ``constrain(x, *args)``: every site's constrained value, deterministic ones included.
    """
    from jax.flatten_util import ravel_pytree
    from numpyro.infer import init_to_median
    from numpyro.infer.util import constrain_fn, initialize_model, potential_energy

    def start(rng_key, *args):
        info, *_ = initialize_model(rng_key, model, model_args=args, dynamic_args=False,
                                    init_strategy=init_to_median(num_samples=init_samples))
        return info.z, jnp.isfinite(info.potential_energy)

    def build():
        proto = jax.eval_shape(start, jax.random.PRNGKey(0), *example_args)[0]
        unravel = ravel_pytree(jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), proto))[1]

        def init(rng_key, *args):
            z, ok = start(rng_key, *args)
            return ravel_pytree(z)[0], ok

        return dict(
            init=jax.jit(init),
            value_and_grad=jax.jit(jax.value_and_grad(
                lambda x, *args: potential_energy(model, args, {}, unravel(x)))),
            constrain=jax.jit(lambda x, *args: constrain_fn(model, args, {}, unravel(x),
                                                            return_deterministic=True)),
        )

    return cached(key, build)


# ---------------------------------------------------------------- priors, likelihood, diagnostics

#: Degrees of freedom of the Student-t likelihood of every model (heavy tails for outlying points).
STUDENT_DF = 5.0


def prior_distribution(prior: Prior) -> dist.Distribution:
    """The NumPyro distribution of a `Prior`."""
    a = prior.args
    match prior.dist:
        case "normal":
            return dist.Normal(a["loc"], a["scale"])
        case "lognormal":
            return dist.LogNormal(a["loc"], a["scale"])
        case "halfnormal":
            return dist.HalfNormal(a["scale"])
        case "truncnormal":
            return dist.TruncatedNormal(a["loc"], a["scale"], low=a["low"])
        case "gamma":
            return dist.Gamma(a["concentration"], a["rate"])
        case "exponential":
            return dist.Exponential(a["rate"])
        case "uniform":
            return dist.Uniform(a["low"], a["high"])
        case "bernoulli":
            return dist.Bernoulli(probs=a["probs"])
    raise FitError(f"unsupported prior distribution {prior.dist!r}")


@dataclass(frozen=True)
class Diagnostics:
    """Convergence summary of a NUTS run."""

    r_hat_max: float
    ess_bulk_min: float
    divergences: int
    ess_tail_min: float = float("nan")
    #: How the fitted law misses its own fitted runs, one phrase each (see `misfit_checks`).
    misfit: tuple[str, ...] = ()

    #: Mixed: R-hat at most this and bulk ESS at least ESS_MIN.
    R_HAT_MAX = 1.01
    ESS_MIN = 200

    def to_json(self) -> dict:
        """JSON form; R-hat is null when undefined (one chain). ``status`` is "ok" or "warning"."""
        finite = lambda x: float(x) if np.isfinite(x) else None  # noqa: E731
        return {"status": "ok" if self.ok else "warning",
                "r_hat_max": finite(self.r_hat_max), "ess_bulk_min": finite(self.ess_bulk_min),
                "ess_tail_min": finite(self.ess_tail_min),
                "divergences": int(self.divergences), "misfit": list(self.misfit)}

    @property
    def mixed(self) -> bool:
        """R-hat <= R_HAT_MAX and bulk ESS >= ESS_MIN: the chains agree and give enough draws."""
        return self.r_hat_max <= self.R_HAT_MAX and self.ess_bulk_min >= self.ESS_MIN

    @property
    def ok(self) -> bool:
        """Mixed, no divergence, and the law fits its own runs."""
        return self.mixed and self.divergences == 0 and not self.misfit

    def problems(self) -> list[str]:
        """What failed, one short phrase each (empty when ok): the sampler's, then the misfit."""
        return self.sampler_problems() + list(self.misfit)

    def sampler_problems(self) -> list[str]:
        """What failed in the sampler (R-hat, ESS, divergences), one short phrase each."""
        out = []
        if not np.isfinite(self.r_hat_max):
            out.append("R-hat could not be computed (one chain): run two or more chains")
        elif self.r_hat_max > self.R_HAT_MAX:
            out.append(f"R-hat {self.r_hat_max:.3f} > {self.R_HAT_MAX} (chains disagree)")
        if not self.ess_bulk_min >= self.ESS_MIN:
            out.append(f"bulk ESS {self.ess_bulk_min:.0f} < {self.ESS_MIN} (too few effective draws)")
        if self.divergences > 0:
            out.append(f"{self.divergences} divergent transition(s)")
        return out


def diagnostics(samples: dict[str, np.ndarray], divergences: int, sites: list[str],
                 single_chain: tuple[str, ...] = ()) -> Diagnostics:
    """Rank-normalised split R-hat and bulk / tail ESS (ArviZ, Vehtari et al. 2021) over ``sites``.

    ``samples[name]`` is (chain, draw, ...). The ``single_chain`` sites were drawn by one
    chain (the calibration's rates, laid out like the law's draws): they count towards the
    ESS as one chain and never towards R-hat, whose chains they are not.
    """
    import arviz as az

    r_hat, bulk, tail = [], [], []
    for n in [*sites, *single_chain]:
        x = np.asarray(samples[n], dtype=np.float64)
        if n in single_chain:
            x = x.reshape((1, -1, *x.shape[2:]))
        x = x.reshape(x.shape[0], x.shape[1], -1)
        for i in range(x.shape[2]):
            xi = x[:, :, i]
            if np.ptp(xi) == 0:  # a constant (e.g. a fixed site): nothing to diagnose
                continue
            if x.shape[0] >= 2:
                r_hat.append(float(az.rhat(xi, method="rank")))
            bulk.append(float(az.ess(xi, method="bulk")))
            tail.append(float(az.ess(xi, method="tail")))
    return Diagnostics(
        r_hat_max=float(np.nanmax(r_hat)) if r_hat else float("nan"),
        ess_bulk_min=float(np.nanmin(bulk)) if bulk else float("nan"),
        divergences=int(divergences),
        ess_tail_min=float(np.nanmin(tail)) if tail else float("nan"),
    )
