"""Fit the LR-transfer model with NUTS: points -> posterior (`TransferFit`), LOO, variants.

`TransferFit` holds the draws and answers questions at a target through the model's own
pieces (`lrplan.transfer.model`): the law's expected loss in a cell (`cell_loss`), the
divergence probability (`divergence_logit`), the cell effects (`new_cell_effects`) and
predictive losses (`loss_noise`: the likelihood's Student-t). The points table comes from
`lrplan.transfer.points` (`transfer_points`, `points_from_frame` and `POINT_COLUMNS` are
re-exported here).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from lrplan import __version__, laws
from lrplan.bayes import Diagnostics, diagnostics, nuts
from lrplan.errors import FitError
from lrplan.priors import PriorSet, load_priors
from lrplan.transfer.model import (
    BOWLS,
    CELL_SITES,
    FIXED,
    LR_LAWS,
    arrays_model,
    cell_loss,
    data_arrays,
    divergence_logit,
    loss_noise,
    new_cell_effects,
    transfer_model,
    transfer_sites,
)
from lrplan.transfer.points import (
    POINT_COLUMNS,
    dense_cells,
    identifiability_notes,
    normalise,
    points_from_frame,
    slice_keys,
    slice_labels,
    transfer_data,
    transfer_points,
)

__all__ = ["TransferConfig", "TransferFit", "fit_transfer", "compare_variants", "inference_data",
           "offset_notes",
           "transfer_points", "points_from_frame", "POINT_COLUMNS"]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- fitting


@dataclass(frozen=True)
class TransferConfig:
    """Normalisation, variant and sampler settings of a transfer fit."""

    lr_law: str
    bowl: str
    n0: float
    d0: float
    b0: float
    lr_ref: float
    schedule_known: bool
    seed: int
    chains: int
    num_warmup: int
    num_samples: int
    notes: tuple[str, ...] = ()
    cell_effects: bool = False
    #: with cell effects, the labels of the fitted slices of each kind (`slice_labels`)
    slices: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class TransferFit:
    """A fitted transfer model: draws (chain, draw, ...), the points it saw, diagnostics, LOO.

    ``log_lik[c, s, r]`` is run r's log likelihood under draw (c, s) (all its points and its
    divergence term), the unit of leave-one-run-out cross-validation.
    """

    config: TransferConfig
    priors: PriorSet
    samples: dict[str, np.ndarray]
    diagnostics: Diagnostics
    points: pd.DataFrame
    log_lik: np.ndarray
    loo: pd.DataFrame | None = None
    version: str = __version__
    #: the law's calibrated miss beyond the fitted range (`lrplan.transfer.calibrate.Discrepancy`)
    discrepancy: object | None = None

    @property
    def posterior(self):
        """The fit as ArviZ ``InferenceData``: the draws and each run's log likelihood (for LOO)."""
        return inference_data(self)

    def flat(self, name: str) -> np.ndarray:
        """Draws of one site with chains merged."""
        x = self.samples[name]
        return x.reshape((-1, *x.shape[2:]))

    @property
    def n_draws(self) -> int:
        """Posterior draws in all."""
        return int(np.prod(self.samples["c0"].shape[:2]))

    def _x(self, params, tokens, tokens_per_step):
        c = self.config
        return (np.log(np.asarray(params, float) / c.n0), np.log(np.asarray(tokens, float) / c.d0),
                np.log(np.asarray(tokens_per_step, float) / c.b0))

    def law_draws(self) -> dict[str, np.ndarray]:
        """Draws of the law's parameters (`lrplan.laws.transfer_loss`'s), zero where the variant fixes one."""
        out = {n: self.flat(n) for n in ("E", "A", "a", "B", "b", "c0", "c_n", "c_d", "c_b", "kappa")}
        for k, value in FIXED.items():  # as `lrplan.transfer.model.law_values` fixes them
            out[k] = self.flat(k) if k in self.samples else np.full(self.n_draws, value)
        if "skew" in self.samples:
            out["skew"] = self.flat("skew")
        return out

    def log_batch_opt(self, tokens) -> np.ndarray:
        """Draws of the critical batch's normalised log ``b_opt + b_d log(D / d0)`` at ``tokens``.

        The batch term of `lrplan.laws.transfer_loss` (present when some size was run at two
        batches); the batch itself is ``b0`` times its exponential.
        """
        return self.flat("b_opt") + self.flat("b_d") * np.log(np.asarray(tokens, float) / self.config.d0)

    def log_lr_center(self, params, tokens, tokens_per_step, lr_shift=0.0) -> np.ndarray:
        """Draws of the bowl's centre, log lr* of a fully annealed run (natural log of LR).

        ``lr_shift`` (per draw) moves it, as a cell's own effect does (see `cell_draws`).
        """
        x_n, x_d, x_b = self._x(params, tokens, tokens_per_step)
        v = self.law_draws()
        law = laws.log_lr_opt(x_n, x_d, x_b, c0=v["c0"], c_n=v["c_n"], c_d=v["c_d"], c_b=v["c_b"],
                              c_nn=v["c_nn"])
        return np.asarray(law) + lr_shift + np.log(self.config.lr_ref)

    def expected_loss(self, params, tokens, tokens_per_step, lr, unannealed, *, lr_shift=0.0,
                      loss_shift=0.0, log_kappa_shift=0.0) -> np.ndarray:
        """Draws of the law's loss, shape (draws, len(lr)).

        ``lr`` and ``unannealed`` broadcast against each other: several LRs at one point, or
        one LR along a curve (``tokens`` then an array too). ``lr_shift``, ``loss_shift`` and
        ``log_kappa_shift`` (scalars or one per draw) move log lr*, the loss level and the
        bowl's log curvature: a cell's own effects.
        """
        x_n, x_d, x_b = (np.asarray(x)[None, :] if np.ndim(x) else x
                         for x in self._x(params, tokens, tokens_per_step))
        log_lr = np.log(np.atleast_1d(np.asarray(lr, float)) / self.config.lr_ref)
        w = np.atleast_1d(np.asarray(unannealed, float))
        v = {k: x[:, None] for k, x in self.law_draws().items()}
        per_draw = lambda x: np.asarray(x, float).reshape(-1, 1)  # noqa: E731
        return np.asarray(cell_loss(x_n, x_d, x_b, log_lr[None, :], w[None, :], v,
                                    lr_shift=per_draw(lr_shift), loss_shift=per_draw(loss_shift),
                                    log_kappa_shift=per_draw(log_kappa_shift)))

    def cell_draws(self, params, tokens, tokens_per_step, rng: np.random.Generator,
                   memo: dict | None = None) -> dict:
        """Per draw, a new cell's own shift of log lr* and of its loss level at a target.

        The sum of two parts: the model's cell-level effect (`lrplan.transfer.model.
        new_cell_effects`; zero when the fit has none) and the law's calibrated miss at the
        target's distance beyond the fitted runs (`lrplan.transfer.calibrate.Discrepancy`; zero when the
        fit has none). Returns ``lr``, ``loss``, ``log_kappa`` (the cell's bowl curvature) and
        the parts ``lr_cell``, ``lr_extrapolation``, ``loss_cell``, ``loss_extrapolation``.
        """
        n = self.n_draws
        cell = self.cell_effects(params, tokens, tokens_per_step, rng, memo)
        lr_x, loss_x = np.zeros(n), np.zeros(n)
        if self.discrepancy is not None:
            lr_x, loss_x = self.discrepancy.draws(self, params, tokens, tokens_per_step, n, rng)
        return {"lr": cell["lr"] + lr_x, "loss": cell["loss"] + loss_x, "log_kappa": cell["log_kappa"],
                "lr_cell": cell["lr"], "lr_extrapolation": lr_x, "loss_cell": cell["loss"],
                "loss_extrapolation": loss_x}

    def cell_effects(self, params, tokens, tokens_per_step, rng: np.random.Generator | None,
                     memo: dict | None = None) -> dict[str, np.ndarray]:
        """Per draw, a cell's crossed effects (`lrplan.transfer.model.new_cell_effects`).

        Slices the fit has seen give their posterior effects; others draw new ones (none when
        ``rng`` is None), kept in ``memo`` for other cells of the same new slice. Zeros when
        the fit has no cell effects.
        """
        if not self.config.cell_effects:
            zero = np.zeros(self.n_draws)
            return {"lr": zero, "loss": zero, "log_kappa": zero, "lr_new": zero}
        keys = slice_keys(params, tokens, tokens_per_step)
        known = [labels.index(k) if k in labels else None
                 for k, labels in zip(keys, self.config.slices, strict=True)]
        flat = {k: self.flat(k) for k in self.samples if k.startswith(("z_lr_", "z_loss_", "z_kappa_"))}
        flat.update({k: self.flat(k) for k in CELL_SITES})
        return new_cell_effects(flat, known, rng, keys, memo)

    def divergence_probability(self, params, tokens, tokens_per_step, lr, lr_shift=0.0) -> np.ndarray:
        """Draws of the probability that a run at each LR diverges, shape (draws, len(lr))."""
        centre = self.log_lr_center(params, tokens, tokens_per_step, lr_shift)[:, None]
        z = divergence_logit(np.log(np.atleast_1d(np.asarray(lr, float)))[None, :], centre,
                             self.flat("div_offset")[:, None], self.flat("div_width")[:, None])
        return 1.0 / (1.0 + np.exp(-z))

    def noise(self) -> np.ndarray:
        """Draws of the spread of one new run around the law (seed noise and run offset)."""
        s = self.flat("sigma")
        return np.hypot(s, self.flat("sigma_run")) if "sigma_run" in self.samples else s

    def predictive_loss(self, expected, rng: np.random.Generator, *, one_run: bool = False) -> np.ndarray:
        """Predictive draws of new losses: ``expected`` (draws, ...) plus the model's noise.

        The noise is the likelihood's Student-t (`lrplan.transfer.model.loss_noise`) at the
        fitted scale (`noise`), drawn per entry; with ``one_run`` one draw per posterior draw
        is shared along the trailing axes (the points of one run's curve).
        """
        expected = np.asarray(expected, dtype=np.float64)
        scale = self.noise().reshape((-1,) + (1,) * (expected.ndim - 1))
        shape = (expected.shape[0],) + (1,) * (expected.ndim - 1) if one_run else expected.shape
        return expected + loss_noise(rng, scale, shape)

    def lr_grid(self, params, tokens, tokens_per_step, size: int = 401, lr_shift=0.0) -> np.ndarray:
        """A log-spaced LR grid wide enough for every draw's optimum at a target."""
        c = self.log_lr_center(params, tokens, tokens_per_step, lr_shift)
        lo, hi = np.quantile(c, [0.001, 0.999])
        return np.exp(np.linspace(lo - 2.0, hi + 1.5, size))

    def lr_star(self, params, tokens, tokens_per_step, unannealed: float = 0.0) -> np.ndarray:
        """Draws of the optimal peak LR at a target: each draw's minimiser over a fine grid."""
        grid = self.lr_grid(params, tokens, tokens_per_step)
        loss = self.expected_loss(params, tokens, tokens_per_step, grid, unannealed)
        return grid[np.argmin(loss, axis=1)]


def _run_log_lik(samples, data, point_run, priors, lr_law, bowl) -> np.ndarray:
    """Per run log likelihood with its cell's effects at their draws (conditional on the cells)."""
    from numpyro.infer.util import log_likelihood

    flat = {k: jnp.asarray(v.reshape((-1, *v.shape[2:]))) for k, v in samples.items()}
    ll = log_likelihood(transfer_model, flat, data=data, priors=priors, lr_law=lr_law, bowl=bowl)
    per_run = np.array(ll["diverged"])
    np.add.at(per_run.T, point_run, np.array(ll["loss"]).T)
    chains, draws = next(iter(samples.values())).shape[:2]
    return per_run.reshape(chains, draws, -1)


def fit_transfer(
    points: pd.DataFrame,
    *,
    lr_law: str = "loglinear",
    bowl: str = "linex",
    priors: PriorSet | None = None,
    seed: int = 0,
    chains: int = 2,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    progress: bool = False,
    notes: tuple[str, ...] = (),
    cell_effects: bool | None = None,
) -> TransferFit:
    """Fit one variant of the transfer model to a points table (see `transfer_points`).

    ``cell_effects`` (default: `lrplan.transfer.points.dense_cells`, enough cells swept over enough LRs)
    gives each cell its own lr* and loss level around the law's.
    """
    from numpyro.infer import NUTS, init_to_median

    if lr_law not in LR_LAWS or bowl not in BOWLS:
        raise FitError(f"unknown variant {lr_law}/{bowl}: lr laws {LR_LAWS}, bowls {BOWLS}")
    priors = priors or load_priors("transfer")
    n0, d0, b0, lr_ref = normalise(points)
    cell_effects = dense_cells(points) if cell_effects is None else cell_effects
    data, point_run = transfer_data(points, n0, d0, b0, lr_ref, cell_effects)
    notes = list(notes) + identifiability_notes(points)
    log.info("fitting transfer model (%s lr*, %s bowl) to %d runs, %d loss points", lr_law, bowl,
             len(data.run_log_lr), len(data.loss))
    arrays, static = data_arrays(data)
    model = partial(arrays_model, static=static, priors=priors, lr_law=lr_law, bowl=bowl)
    if progress:  # one compiled run: no per-step bar
        log.info("sampling the transfer model: %d chain(s) x (%d warmup + %d draws)", chains,
                 num_warmup, num_samples)
    samples, diverging = nuts(
        ("transfer", lr_law, bowl, priors.to_toml(), static),
        lambda: NUTS(model, init_strategy=init_to_median(num_samples=31), target_accept_prob=0.9,
                     dense_mass=True),
        jax.random.PRNGKey(seed), (arrays,), num_chains=chains, num_warmup=num_warmup,
        num_samples=num_samples)
    divergences = int(diverging.sum())
    sites = [*transfer_sites(lr_law, bowl, data.batch_term, data.anneal_term, cell_effects),
             *(["sigma_run"] if data.n_curve_runs else [])]
    diag = diagnostics(samples, divergences, sites)
    if data.n_curve_runs:
        notes += offset_notes(samples["sigma_run"], priors)
    config = TransferConfig(
        lr_law=lr_law, bowl=bowl, n0=n0, d0=d0, b0=b0, lr_ref=lr_ref,
        schedule_known=bool(points.loc[~points["diverged"], "unannealed"].notna().all()), seed=seed,
        chains=chains,
        num_warmup=num_warmup, num_samples=num_samples, notes=tuple(notes), cell_effects=cell_effects,
        slices=slice_labels(points) if cell_effects else (),
    )
    log_lik = _run_log_lik(samples, data, point_run, priors, lr_law, bowl)
    return TransferFit(config=config, priors=priors, samples=samples, diagnostics=diag,
                       points=points, log_lik=log_lik)


def offset_notes(sigma_run: np.ndarray, priors: PriorSet) -> list[str]:
    """A note when logged curves sit off the law run by run by far more than seed noise."""
    sd, scale = float(np.median(sigma_run)), priors["sigma_run"].args.get("scale")
    if scale is None or sd <= 2.0 * scale:
        return []
    # OLMo's ladder (cosine to 10%, 0.5-10x Chinchilla): offsets of +0.18 nats at 0.5x and
    # -0.13 at 10x, at every size; the runs' final losses alone fit to 0.003
    return [f"the runs' logged curves sit off the law by {sd:.3f} nats run by run (sd), far more "
            f"than seed noise (prior scale {scale:g}): the law's term for partly annealed points "
            "does not describe these curves, and every prediction's interval carries that spread"]


def inference_data(fit: TransferFit):
    """The fit as ArviZ ``InferenceData``: the posterior (no standardised offsets) and log likelihood."""
    import arviz as az

    return az.from_dict(posterior={k: v for k, v in fit.samples.items() if not k.startswith("z_")},
                        log_likelihood={"run": fit.log_lik})


def compare_variants(points: pd.DataFrame, *, variants=None, **kwargs) -> tuple[TransferFit, pd.DataFrame]:
    """Fit each (lr law, bowl) variant, compare them by PSIS-LOO, return the best and the table.

    The table is `arviz.compare`'s (rank, elpd_loo, p_loo, elpd_diff, weight, se, dse, warning)
    indexed by ``"<lr law>/<bowl>"``; the returned fit carries it as ``loo``.
    """
    import arviz as az

    variants = variants or [(a, b) for a in LR_LAWS for b in BOWLS]
    fits = {f"{a}/{b}": fit_transfer(points, lr_law=a, bowl=b, **kwargs) for a, b in variants}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.compare({k: inference_data(f) for k, f in fits.items()}, ic="loo")
    best = fits[table.index[0]]
    return replace(best, loo=table), table
