r"""The NumPyro transfer model: final (and intermediate) losses across size, horizon, batch and LR.

Each observation is a run's loss after D tokens at size N, batch B and peak LR eta:

.. math::

    y \sim \mathrm{StudentT}_5\big(L^*(N, D) + h(u) + k\,w\,e^{u} + r_{\mathrm{run}},\ \sigma\big),
    \qquad u = \log\eta - \log\eta^*(N, D, B)

(`lrplan.laws.transfer_loss`). When cells (runs sharing size, horizon and batch) are swept
densely, each cell also misses the law, in log lr* and in its loss level, by crossed random
effects: one shared by the cells that differ only in size (a "slice along size", keyed by
horizon and batch), one along horizon (keyed by size and batch) and one along batch (keyed by
size and horizon):

.. math::

    \log\eta^*_c = \mathrm{law}(N, D, B) + \sum_k \tau_k z_{k, s_k(c)}, \qquad
    \mathrm{level}_c = L + \sum_k \omega_k y_{k, s_k(c)}

(``cell_lr_sd`` = tau, ``cell_loss_sd`` = omega, one per kind; standard-normal ``z_lr_<kind>``,
``z_loss_<kind>``). The law then cannot be pinned by cells' misses, a miss shared along a
dimension carries to a new cell in that slice, and a new slice draws its own effect
(`new_cell_effects`). A run logged at several points gets an offset ``r_run`` shared
by its points, so a long curve counts as one run with a known shape, not as many independent
runs. Every run, diverged or not, also enters a divergence term: it diverged with probability
``sigmoid((u - div_offset) / div_width)``, so a diverged run says its LR was too high instead of
being dropped.

A fit's predictions (`lrplan.transfer.fit.TransferFit`) go through this module's pieces, so
the model is written once: the parameters a variant fixes (`FIXED`), the law in a cell with
its own effects (`cell_loss`), the divergence odds (`divergence_logit`), a cell's effects
(`new_cell_effects`) and the likelihood's Student-t noise (`loss_noise`, `loss_noise_logpdf`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, fields
from typing import Literal

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from lrplan import laws
from lrplan.bayes import STUDENT_DF, bucket, prior_distribution
from lrplan.priors import PriorSet

__all__ = ["LR_LAWS", "BOWLS", "FIXED", "CELL_SITES", "SLICE_KINDS", "TransferData", "transfer_model",
           "STATIC_FIELDS", "data_arrays", "arrays_model",
           "transfer_sites", "law_values", "cell_loss", "divergence_logit", "new_cell_effects",
           "loss_noise", "loss_noise_logpdf"]

LrLaw = Literal["loglinear", "curved"]
Bowl = Literal["asymmetric", "symmetric", "linex"]
LR_LAWS: tuple[str, ...] = ("loglinear", "curved")
BOWLS: tuple[str, ...] = ("asymmetric", "symmetric", "linex")

_LAW = ("l_ref", "A", "a", "B", "b", "c0", "c_n", "c_d", "c_b", "kappa")


_BATCH = ("g_b", "b_opt", "b_d")
#: Parameters a variant leaves out, at the value the law then takes: lr*'s size law without
#: curvature, a bowl without asymmetry, no annealing term, no batch term.
FIXED = {"c_nn": 0.0, "asym": 0.0, "k_anneal": 0.0, "g_b": 0.0, "b_opt": 0.0, "b_d": 0.0}
#: Spreads of the cell-level effects (sampled only when ``TransferData.n_slices`` is set):
#: of log lr*, of the loss level and of the bowl's log curvature.
CELL_SITES = ("cell_lr_sd", "cell_loss_sd", "cell_kappa_sd")
#: The crossed effects' kinds: cells sharing all but size, all but horizon, all but batch.
SLICE_KINDS = ("along_size", "along_horizon", "along_batch")


def transfer_sites(lr_law: str, bowl: str, batch_term: bool = False,
                   anneal_term: bool = True, cell_term: bool = False) -> tuple[str, ...]:
    """The sampled global parameters of a variant (the law's, divergence and noise)."""
    shape = {"asymmetric": ("asym",), "linex": ("skew",)}.get(bowl, ())
    extra = (("c_nn",) if lr_law == "curved" else ()) + shape
    return (*_LAW, *extra, *(_BATCH if batch_term else ()), *(("k_anneal",) if anneal_term else ()),
            "div_offset", "div_width", "sigma", *(CELL_SITES if cell_term else ()))


@dataclass(frozen=True)
class TransferData:
    """Model inputs in normalised units; ``point_*`` per loss point, ``run_*`` per run."""

    x_n: np.ndarray
    x_d: np.ndarray
    x_b: np.ndarray
    log_lr: np.ndarray
    unannealed: np.ndarray
    loss: np.ndarray
    curve_slot: np.ndarray  # index of the point's run offset; n_curve_runs = no offset
    n_curve_runs: int
    run_x_n: np.ndarray
    run_x_d: np.ndarray
    run_x_b: np.ndarray
    run_log_lr: np.ndarray
    run_diverged: np.ndarray
    loss_ref: float  # median observed final loss; the law's level is sampled around it
    batch_term: bool  # some size has runs at two batches: the loss's batch term is separable
    anneal_term: bool  # points differ in how annealed they are, so k_anneal is identified
    point_slice: np.ndarray | None = None  # (3, points): each point's slice of each kind
    run_slice: np.ndarray | None = None  # (3, runs)
    n_slices: tuple[int, ...] = ()  # slices per kind; () = no cell-level effects
    point_seen: np.ndarray | None = None  # padding (`data_arrays`): False for padded points
    run_seen: np.ndarray | None = None  # and runs; None = every entry is data


def law_values(priors: PriorSet, lr_law: str, bowl: str, data: TransferData) -> dict[str, jnp.ndarray]:
    """Sample the law's parameters (fixing those the variant leaves out)."""
    loss_ref = data.loss_ref
    names = _LAW + (_BATCH if data.batch_term else ()) + (("k_anneal",) if data.anneal_term else ())
    v = {n: numpyro.sample(n, prior_distribution(priors[n])) for n in names}
    v["c_nn"] = (numpyro.sample("c_nn", prior_distribution(priors["c_nn"])) if lr_law == "curved"
                 else FIXED["c_nn"])
    v["asym"] = (numpyro.sample("asym", prior_distribution(priors["asym"])) if bowl == "asymmetric"
                 else FIXED["asym"])
    if bowl == "linex":
        v["skew"] = numpyro.sample("skew", prior_distribution(priors["skew"]))
    # E, A, B and the bowl trade off when few sizes, horizons or LRs are fitted; the loss at the
    # reference size, horizon and batch at the runs' median LR is what the data pin down, so
    # sample it and derive E. (Sampling E + A + B, the loss at lr*, leaves a curved ridge where
    # the runs' distance from lr* trades with the level: chains stall on it when no cell has
    # two LRs, as on OLMo's ladder: R-hat 1.2-1.4, against 1.01.)
    at_ref = laws.transfer_bowl(-v["c0"], kappa=v["kappa"], asym=v["asym"], skew=v.get("skew"))
    v["E"] = numpyro.deterministic("E", loss_ref + v.pop("l_ref") - v["A"] - v["B"] - at_ref)
    # With one annealing state in the data, k w e^u is one more exponential side of the bowl:
    # k_anneal and the bowl then trade off along a ridge that NUTS crosses slowly.
    for k in ("k_anneal", *_BATCH):
        v.setdefault(k, FIXED[k])
    return v


def cell_loss(x_n, x_d, x_b, log_lr, unannealed, values: dict, *, lr_shift=0.0, loss_shift=0.0,
              log_kappa_shift=0.0):
    """The law's loss in a cell whose own effects move log lr*, the loss level and the bowl.

    ``values`` are the law's parameters (`law_values`; draws broadcast against the inputs);
    ``lr_shift`` is added to log lr* (``c0``), ``loss_shift`` to the loss and
    ``log_kappa_shift`` to the bowl's log curvature. The model's cell-level effects and a
    fit's predictions at a cell (`lrplan.transfer.fit.TransferFit.expected_loss`) both go
    through here.
    """
    shifted = {**values, "c0": values["c0"] + lr_shift, "kappa": values["kappa"] * jnp.exp(log_kappa_shift)}
    return loss_shift + laws.transfer_loss(x_n, x_d, x_b, log_lr, unannealed, **shifted)


def divergence_logit(log_lr, log_lr_opt, offset, width):
    """Log-odds that a run at peak LR ``log_lr`` diverges: ``(log_lr - log_lr_opt - offset) / width``.

    Used by the model's divergence term and by a fit's divergence probability
    (`lrplan.transfer.fit.TransferFit.divergence_probability`).
    """
    return (log_lr - log_lr_opt - offset) / width


def transfer_model(
    data: TransferData, *, priors: PriorSet, lr_law: str = "loglinear", bowl: str = "linex",
    observe: bool = True,
) -> None:
    """Losses and divergences of a set of runs; ``observe=False`` samples the prior predictive."""
    v = law_values(priors, lr_law, bowl, data)
    run_shift = 0.0
    if data.n_slices:
        with numpyro.plate("slice_kinds", len(SLICE_KINDS)):
            sd_lr = numpyro.sample("cell_lr_sd", prior_distribution(priors["cell_lr_sd"]))
            sd_loss = numpyro.sample("cell_loss_sd", prior_distribution(priors["cell_loss_sd"]))
            sd_kappa = numpyro.sample("cell_kappa_sd", prior_distribution(priors["cell_kappa_sd"]))
        point_shift = level = log_kappa = 0.0
        for k, kind in enumerate(SLICE_KINDS):
            with numpyro.plate(f"slices_{kind}", data.n_slices[k]):
                lr_k = sd_lr[k] * numpyro.sample(f"z_lr_{kind}", dist.Normal(0.0, 1.0))
                loss_k = sd_loss[k] * numpyro.sample(f"z_loss_{kind}", dist.Normal(0.0, 1.0))
                kappa_k = sd_kappa[k] * numpyro.sample(f"z_kappa_{kind}", dist.Normal(0.0, 1.0))
            point_shift = point_shift + lr_k[data.point_slice[k]]
            run_shift = run_shift + lr_k[data.run_slice[k]]
            level = level + loss_k[data.point_slice[k]]
            log_kappa = log_kappa + kappa_k[data.point_slice[k]]
        mean = cell_loss(data.x_n, data.x_d, data.x_b, data.log_lr, data.unannealed, v,
                         lr_shift=point_shift, loss_shift=level, log_kappa_shift=log_kappa)
    else:
        mean = laws.transfer_loss(data.x_n, data.x_d, data.x_b, data.log_lr, data.unannealed, **v)
    if data.n_curve_runs:
        sigma_run = numpyro.sample("sigma_run", prior_distribution(priors["sigma_run"]))
        with numpyro.plate("curve_runs", data.n_curve_runs):
            z = numpyro.sample("z_run", dist.Normal(0.0, 1.0))
        mean = mean + jnp.concatenate([sigma_run * z, jnp.zeros(1)])[data.curve_slot]
    sigma = numpyro.sample("sigma", prior_distribution(priors["sigma"]))
    with numpyro.plate("points", len(data.loss)), _only(data.point_seen):
        numpyro.sample("loss", dist.StudentT(STUDENT_DF, mean, sigma),
                       obs=data.loss if observe else None)
    offset = numpyro.sample("div_offset", prior_distribution(priors["div_offset"]))
    width = numpyro.sample("div_width", prior_distribution(priors["div_width"]))
    log_opt = run_shift + laws.log_lr_opt(data.run_x_n, data.run_x_d, data.run_x_b, c0=v["c0"],
                                          c_n=v["c_n"], c_d=v["c_d"], c_b=v["c_b"], c_nn=v["c_nn"])
    with numpyro.plate("runs", len(data.run_log_lr)), _only(data.run_seen):
        numpyro.sample("diverged", dist.Bernoulli(logits=divergence_logit(data.run_log_lr, log_opt,
                                                                          offset, width)),
                       obs=data.run_diverged if observe else None)


#: `TransferData` fields that shape the model (Python values); the others are arrays.
STATIC_FIELDS = ("n_curve_runs", "batch_term", "anneal_term", "n_slices")


def _only(seen):
    """Mask a plate's likelihood to its data entries (``None``: all of them)."""
    return nullcontext() if seen is None else numpyro.handlers.mask(mask=seen)


_POINT_FIELDS = ("x_n", "x_d", "x_b", "log_lr", "unannealed", "loss", "curve_slot", "point_slice")
_RUN_FIELDS = ("run_x_n", "run_x_d", "run_x_b", "run_log_lr", "run_diverged", "run_slice")


def data_arrays(data: TransferData) -> tuple[dict[str, jnp.ndarray], tuple]:
    """``(arrays, static)``: the data's arrays by field, padded, and its `STATIC_FIELDS` values.

    Points and runs are padded to their shape bucket (`lrplan.bayes.bucket`) with masked
    entries (``point_seen``, ``run_seen``). Compiled programs take the arrays as arguments and
    key on ``static`` and the shapes, so one program serves every data set of the same layout
    and bucket (`arrays_model`): the leave-out refits of a sweep, or sweeps of similar size.
    """
    n_points, n_runs = len(data.loss), len(data.run_log_lr)
    fill = {"loss": float(data.loss_ref), "curve_slot": data.n_curve_runs}
    arrays = {}
    for f in fields(data):
        value = getattr(data, f.name)
        if f.name in STATIC_FIELDS or value is None:
            continue
        value = np.asarray(value)
        n = n_points if f.name in _POINT_FIELDS else n_runs if f.name in _RUN_FIELDS else None
        if n is not None:
            width = [(0, 0)] * (value.ndim - 1) + [(0, bucket(n) - n)]
            value = np.pad(value, width, constant_values=fill.get(f.name, 0))
        arrays[f.name] = jnp.asarray(value)
    arrays["point_seen"] = jnp.arange(bucket(n_points)) < n_points
    arrays["run_seen"] = jnp.arange(bucket(n_runs)) < n_runs
    return arrays, tuple(getattr(data, n) for n in STATIC_FIELDS)


def arrays_model(arrays: dict, fixed: dict | None = None, *, static: tuple, priors: PriorSet,
                 lr_law: str = "loglinear", bowl: str = "linex") -> None:
    """`transfer_model` of data given as `data_arrays`; ``fixed`` conditions sites on values."""
    data = TransferData(**arrays, **dict(zip(STATIC_FIELDS, static, strict=True)))
    model = numpyro.handlers.condition(transfer_model, data=fixed) if fixed else transfer_model
    model(data, priors=priors, lr_law=lr_law, bowl=bowl)


def new_cell_effects(samples: dict[str, np.ndarray], known: list[int | None],
                     rng: np.random.Generator | None, keys: tuple[str, ...] | None = None,
                     memo: dict | None = None) -> dict[str, np.ndarray]:
    """A cell's shifts of log lr*, of its loss level and of its bowl's log curvature, per draw.

    ``samples`` are flat draws (``cell_lr_sd`` (draws, 3), ``z_lr_<kind>`` (draws, slices), ...);
    ``known[k]`` is the cell's slice of kind k in the fit, or None for a slice without runs,
    which draws its effect from the model's own prior ``sd_k * Normal(0, 1)`` (zero when
    ``rng`` is None: the known effects only). With ``memo`` (a dict) and the cell's slice
    ``keys``, a new slice's standard normal draws are kept under (kind, key, what) and reused:
    two cells that share a slice no run has seen share its effect. Returns ``lr``, ``loss``,
    ``log_kappa`` and ``lr_new`` (the part of ``lr`` from new slices).
    """
    n = samples["cell_lr_sd"].shape[0]
    out = {"lr": np.zeros(n), "loss": np.zeros(n), "log_kappa": np.zeros(n), "lr_new": np.zeros(n)}
    for k, kind in enumerate(SLICE_KINDS):
        for what, site in (("lr", "cell_lr_sd"), ("loss", "cell_loss_sd"),
                           ("log_kappa", "cell_kappa_sd")):
            sd = samples[site][:, k]
            if known[k] is not None:
                out[what] = out[what] + sd * samples[f"z_{what.split('_')[-1]}_{kind}"][:, known[k]]
            elif rng is not None:
                slot = None if memo is None or keys is None else (kind, keys[k], what)
                if slot is not None and slot in memo:
                    z = memo[slot]
                else:
                    z = rng.standard_normal(n)
                    if slot is not None:
                        memo[slot] = z
                new = sd * z
                out[what] = out[what] + new
                if what == "lr":
                    out["lr_new"] = out["lr_new"] + new
    return out


def loss_noise(rng: np.random.Generator, scale, shape, df: float = STUDENT_DF) -> np.ndarray:
    """Draws of the noise of new losses around the law: ``scale`` times a Student-t variate.

    The model's likelihood (``StudentT(STUDENT_DF, mean, sigma)``) and its budget counterpart
    (`lrplan.budget.model.budget_model`) use the same law; ``scale`` broadcasts against
    ``shape``. ``df=inf`` gives normal noise (for tests against conjugate results).
    """
    z = rng.standard_normal(shape) if np.isinf(df) else rng.standard_t(df, size=shape)
    return np.asarray(scale, dtype=np.float64) * z


def loss_noise_logpdf(residual, scale, df: float = STUDENT_DF) -> np.ndarray:
    """Log density of `loss_noise` at ``residual`` (observed minus law) with ``scale``."""
    from scipy import stats

    noise = stats.norm if np.isinf(df) else stats.t(df)
    return noise.logpdf(residual / scale) - np.log(scale)
