"""Fit the curve model: per law, prepare the runs, find the MAP point, calibrate, run NUTS.

`fit_curves` fits one law, or with ``law="auto"`` every law, weighed by stacking of their
held-out scores (`lrplan.curve.lawchoice`). A `CurveFit` carries the posterior draws,
everything needed to rebuild the model inputs for a new schedule (groups, reference units,
priors, law: its `FitConfig`) and the diagnostics; a `CurveMixture` carries the fits of several
laws and their weights. Both round-trip through NetCDF (`lrplan.curve.io`). The steps:
`lrplan.curve.prepare` (runs to model inputs), `lrplan.curve.pointfit` (the MAP start),
`lrplan.curve.calibrate` (the held-out discrepancy), then NUTS on the centred model here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from lrplan import __version__

if TYPE_CHECKING:
    from lrplan.data import RunSet
from lrplan.bayes import Diagnostics, cached, diagnostics, nuts, prior_distribution
from lrplan.curve.calibrate import RATE_SITES, calibrate, misfit_checks, rate_scales
from lrplan.curve.lawchoice import AUTO, LawScore, law_scores, stacking_weights
from lrplan.curve.model import L0_OFFSET_SCALE, LAWS, CurveData, GroupKey, curve_model, law_parameters
from lrplan.curve.pointfit import PointFit, compile_key, law_median
from lrplan.curve.prepare import (
    area,
    build_data,
    fit_points,
    group_runs,
    pad_to_bucket,
    select_runs,
    size_reference,
)
from lrplan.errors import FitError
from lrplan.priors import PriorSet, load_priors

__all__ = ["LAW_SEP", "CurveFit", "CurveMixture", "FitConfig", "fit_curves", "inference_data"]

#: Separates a law's name from its sites in a mixture's posterior (``<law>__<site>``).
LAW_SEP = "__"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitConfig:
    """What a fit needs besides its draws to predict a new schedule (stored in the file)."""

    law: str
    lr_ref: float
    n_ref: float
    size_law: bool
    groups: tuple[GroupKey, ...]
    noise: float
    # posterior medians of the discrepancy rates, for reports; the draws are sites RATE_SITES
    discrepancy: float
    discrepancy_anneal: float
    discrepancy_growth: float
    area_ref: float
    seed: int
    chains: int
    num_warmup: int
    num_samples: int
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CurveFit:
    """A fitted curve model: posterior draws (chain, draw, ...), config, diagnostics, data."""

    config: FitConfig
    priors: PriorSet
    samples: dict[str, np.ndarray]
    diagnostics: Diagnostics
    observed: dict[str, np.ndarray] = field(default_factory=dict)
    version: str = __version__

    @property
    def law(self) -> str:
        """Name of the curve law."""
        return self.config.law

    def flat(self, name: str) -> np.ndarray:
        """Draws of one site with chains merged."""
        x = self.samples[name]
        return x.reshape((-1, *x.shape[2:]))

    @property
    def posterior(self):
        """The fit as ArviZ ``InferenceData`` (see `inference_data`)."""
        return inference_data(self)

    def to_json(self) -> dict:
        """The fit's part of ``lrplan fit --json``: data, calibrated miss and noise, diagnostics."""
        c = self.config
        return {"runs": len(set(self.observed["run"])), "points": int(len(self.observed["step"])),
                "groups": len(c.groups), "discrepancy": c.discrepancy,
                "discrepancy_anneal": c.discrepancy_anneal, "discrepancy_growth": c.discrepancy_growth,
                "noise": c.noise, "diagnostics": self.diagnostics.to_json(), "notes": list(c.notes)}


@dataclass(frozen=True)
class CurveMixture:
    """Curve fits of several laws, weighed by stacking; predictions draw from the mixture.

    ``fits`` holds the sampled laws (weight >= `lrplan.curve.lawchoice.MIN_WEIGHT`), ``weights`` their weights
    renormalised over them, ``scores`` every law's held-out score and stacking weight.
    Settings that do not depend on the law (groups, reference units, the data) come from the
    heaviest fit.
    """

    fits: tuple[CurveFit, ...]
    weights: tuple[float, ...]
    scores: tuple[LawScore, ...]

    law = AUTO

    @property
    def posterior(self):
        """The fit as ArviZ ``InferenceData`` (see `inference_data`)."""
        return inference_data(self)

    @property
    def main(self) -> CurveFit:
        """The fit of the heaviest law."""
        return self.fits[int(np.argmax(self.weights))]

    @property
    def config(self) -> FitConfig:
        """The heaviest fit's config, its notes extended by the law choice's."""
        return replace(self.main.config, notes=self.main.config.notes + (self.choice_note(),))

    @property
    def observed(self) -> dict[str, np.ndarray]:
        """The fitted points (the same for every law)."""
        return self.main.observed

    @property
    def priors(self) -> PriorSet:
        """The heaviest law's priors."""
        return self.main.priors

    @property
    def version(self) -> str:
        """The lrplan version that wrote the fits."""
        return self.main.version

    @property
    def diagnostics(self) -> Diagnostics:
        """The worst of the sampled fits' diagnostics."""
        ds = [f.diagnostics for f in self.fits]
        return Diagnostics(r_hat_max=max(d.r_hat_max for d in ds),
                           ess_bulk_min=min(d.ess_bulk_min for d in ds),
                           divergences=sum(d.divergences for d in ds),
                           ess_tail_min=min(d.ess_tail_min for d in ds),
                           misfit=tuple(m for f, d in zip(self.fits, ds, strict=True)
                                        for m in (f"{f.law}: {x}" for x in d.misfit)))

    def choice_note(self) -> str:
        """One line: each law's weight and held-out score."""
        parts = [f"{s.law} {s.weight:.2f} (held-out elpd {s.elpd:.1f} +- {s.elpd_se:.1f})"
                 for s in self.scores]
        return "laws weighed by stacking of held-out predictive densities: " + ", ".join(parts)

    def draw_counts(self, n: int) -> list[int]:
        """How many of ``n`` predictive draws each fit gives (largest-remainder rounding)."""
        w = np.asarray(self.weights) * n
        counts = np.floor(w).astype(int)
        for i in np.argsort(-(w - counts))[: n - counts.sum()]:
            counts[i] += 1
        return counts.tolist()

    def to_json(self) -> dict:
        """The fit's part of ``lrplan fit --json``: the heaviest law's, each law's weight and score."""
        docs = {f.law: f.to_json() for f in self.fits}
        miss = ("discrepancy", "discrepancy_anneal", "discrepancy_growth", "noise")
        per_law = {law: {k: doc[k] for k in miss} for law, doc in docs.items()}
        main = docs[self.main.law]
        return {"runs": main["runs"], "points": main["points"], "groups": main["groups"],
                **per_law[self.main.law],
                "weights": {f.law: w for f, w in zip(self.fits, self.weights, strict=True)},
                "laws": [{**s.to_json(), **per_law.get(s.law, {})} for s in self.scores],
                "diagnostics": self.diagnostics.to_json(), "notes": list(self.config.notes)}


def _centred_start(point: dict[str, np.ndarray], priors: PriorSet, law: str) -> dict:
    """NUTS's starting values for the centred model, from the MAP point (non-centred)."""
    start = {k: jnp.asarray(v) for k, v in point.items()
             if not k.endswith("_group") and not k.startswith("z_") and k not in ("sigma", "C", "E")}
    if "tau" in point:
        # When the groups agree, the MAP's tau sits near 0, the neck of the centred funnel,
        # where NUTS's step size collapses: start at the prior's mean spread instead.
        start["tau"] = jnp.maximum(start["tau"], prior_distribution(priors["tau"]).mean)
        for n in law_parameters(law)[1:]:
            start[f"log_{n}"] = jnp.log(jnp.asarray(point[f"{n}_group"]))
        start["L0_offset"] = jnp.asarray(L0_OFFSET_SCALE * point["tau"] * point["z_L0"])
    return start


@dataclass
class _Prepared:
    """One law's data, MAP point and held-out calibration: everything before NUTS."""

    law: str
    priors: PriorSet
    data: CurveData
    used: list
    group_index: list[int]
    groups: tuple[GroupKey, ...]
    size_law: bool
    n_ref: float
    lr_ref: float
    point: dict
    cal: dict
    notes: list[str]


def _prepare(runs: RunSet, law: str, priors: PriorSet, *, seed: int, draws: int) -> _Prepared:
    law_parameters(law)
    if priors.law != law:
        raise FitError(f"priors are for law {priors.law!r}, the fit asks for {law!r}")
    scales = rate_scales(priors)
    used, notes = select_runs(runs)
    groups, group_index = group_runs(used)
    size_law, n_ref = size_reference(groups)
    lr_ref = max(g.peak_lr for g in groups)
    data = build_data(law, used, group_index, lr_ref=lr_ref, n_ref=n_ref, size_law=size_law,
                      groups=groups)
    log.info("fitting %s law to %d runs (%d points, %d groups)", law, len(used),
             data.n_points, data.n_groups)
    point_fit = PointFit(data, priors, seed=seed)
    point, _ = point_fit.solve()
    cal, cal_notes = calibrate(point_fit, point, used, group_index, lr_ref,
                               scales=scales, draws=draws, seed=seed)
    return _Prepared(law, priors, data, used, group_index, groups, size_law, n_ref, lr_ref,
                     point, cal, notes + cal_notes)


class _Centred:
    """The centred curve model with fixed priors and the data and scale as its arguments.

    One per priors (cached), so that NUTS's compiled code is shared by every fit with them.
    """

    def __init__(self, priors: PriorSet):
        self.priors = priors

    def __call__(self, data: CurveData, scale):
        curve_model(data, priors=self.priors, obs=data.log_loss, scale=scale, centred=True)


def _sample(prep: _Prepared, runs: RunSet, *, seed: int, chains: int, num_warmup: int,
            num_samples: int, progress: bool) -> CurveFit:
    from numpyro.infer import NUTS

    data, point, cal, priors, used = prep.data, prep.point, prep.cal, prep.priors, prep.used
    noise = float(point["sigma"])
    scale = float(np.hypot(noise, cal["fitted"]))
    model = cached(("centred model", priors.to_toml()), lambda: _Centred(priors))
    padded = jax.tree.map(jnp.asarray, pad_to_bucket(data))
    if progress:  # one compiled run: no per-step bar
        log.info("sampling the %s law: %d chain(s) x (%d warmup + %d draws)", prep.law, chains,
                 num_warmup, num_samples)
    samples, diverging = nuts(
        ("curve", *compile_key(data, priors)),
        lambda: NUTS(model, dense_mass=True, target_accept_prob=0.8),
        jax.random.PRNGKey(seed), (padded, jnp.asarray(scale, dtype=jnp.float64)),
        init=_centred_start(point, priors, prep.law), num_chains=chains,
        num_warmup=num_warmup, num_samples=num_samples)
    sites = [k for k in samples if not k.endswith("_group") and k not in ("C", "E")]
    run_of = np.concatenate([np.full(int(fit_points(r, thin=True).sum()), i)
                             for i, r in enumerate(used)])
    misfit = misfit_checks(law_median(data, samples), data.log_loss, run_of,
                           [r.name for r in used], noise=noise, floor=cal["floor"])
    # one draw of the discrepancy rates per draw of the law (they are independent)
    samples.update({k: cal["rates"][:, i].reshape(chains, num_samples) for i, k in enumerate(RATE_SITES)})
    divergences = int(diverging.sum()) + cal["divergences"]
    diag = replace(diagnostics(samples, divergences, sites, single_chain=RATE_SITES), misfit=misfit)
    for m in misfit:
        log.warning("%s law: %s", prep.law, m)

    config = FitConfig(law=prep.law, lr_ref=prep.lr_ref, n_ref=prep.n_ref, size_law=prep.size_law,
                       groups=prep.groups, noise=noise, discrepancy=cal["floor"],
                       discrepancy_growth=cal["growth"], discrepancy_anneal=cal["anneal"],
                       area_ref=float(max(area(r.lr, r.steps[fit_points(r)][-1:], prep.lr_ref)[0]
                                          for r in used)),
                       seed=seed, chains=chains, num_warmup=num_warmup,
                       num_samples=num_samples,
                       notes=tuple(runs.excluded) + tuple(prep.notes))
    observed = {
        "run": np.concatenate([np.full(fit_points(r).sum(), r.name, dtype=object) for r in used]),
        "step": np.concatenate([r.steps[fit_points(r)] for r in used]),
        "loss": np.concatenate([r.loss[fit_points(r)] for r in used]),
        "group": np.concatenate([np.full(fit_points(r).sum(), g)
                                 for r, g in zip(used, prep.group_index, strict=True)]),
    }
    return CurveFit(config=config, priors=priors, samples=samples, diagnostics=diag,
                    observed=observed)


def _priors_of(law: str, priors: PriorSet | dict | None) -> PriorSet:
    """A law's priors in a fit of several laws: its own entry, else its defaults."""
    if isinstance(priors, dict):
        priors = priors.get(law)
    return priors if priors is not None and priors.law == law else load_priors(law)


def fit_curves(
    runs: RunSet,
    *,
    law: str = AUTO,
    priors: PriorSet | dict[str, PriorSet] | None = None,
    seed: int = 0,
    chains: int = 2,
    num_warmup: int = 400,
    num_samples: int = 1000,
    progress: bool = False,
) -> CurveFit | CurveMixture:
    """Fit a curve law to every usable run with NUTS; ``law="auto"`` lets the data choose.

    The chains start at the MAP point (L-BFGS from several starts), so warmup only has to adapt
    the step size and a dense mass matrix. Chains run in parallel when JAX has one device per
    chain (the CLI asks for that), else one after another.

    With ``law="auto"`` every law is calibrated on the same held-out curves and weighed by
    stacking of their held-out predictive densities (`lrplan.curve.lawchoice`); the laws with a
    weight of at least `lrplan.curve.lawchoice.MIN_WEIGHT` are sampled and returned as a
    `CurveMixture`. ``priors`` is one law's `PriorSet` (the other laws take their defaults)
    or a dict by law.
    """
    draws = chains * num_samples
    if law != AUTO:
        # a law's own prior set goes as given: `_prepare` refuses one for another law
        own = priors if isinstance(priors, PriorSet) else _priors_of(law, priors)
        prep = _prepare(runs, law, own, seed=seed, draws=draws)
        return _sample(prep, runs, seed=seed, chains=chains, num_warmup=num_warmup,
                       num_samples=num_samples, progress=progress)
    preps = [_prepare(runs, name, _priors_of(name, priors), seed=seed, draws=draws) for name in LAWS]
    lpd = np.stack([p.cal["scores"] for p in preps])
    scores = law_scores(list(LAWS), lpd, stacking_weights(lpd))
    log.info("law weights: %s", ", ".join(f"{s.law} {s.weight:.2f}" for s in scores))
    fits = tuple(_sample(p, runs, seed=seed, chains=chains, num_warmup=num_warmup,
                         num_samples=num_samples, progress=progress)
                 for p, s in zip(preps, scores, strict=True) if s.sampled)
    w = np.array([s.weight for s in scores if s.sampled])
    return CurveMixture(fits=fits, weights=tuple((w / w.sum()).tolist()), scores=scores)


def inference_data(fit: CurveFit | CurveMixture):
    """The fit as ArviZ ``InferenceData``: the draws as the posterior, the fitted points as data.

    A `CurveMixture` keeps each law's draws under ``<law>__<site>`` (`LAW_SEP`). The fitted
    points are the observed ``loss`` and the constant ``run``, ``step`` and ``group`` of each
    ``point``.
    """
    import arviz as az

    mixture = isinstance(fit, CurveMixture)
    fits = fit.fits if mixture else (fit,)
    samples = ({f"{f.law}{LAW_SEP}{k}": v for f in fits for k, v in f.samples.items()}
               if mixture else fit.samples)
    obs = {k: (v.astype(str) if v.dtype == object else v) for k, v in fit.observed.items()}
    return az.from_dict(
        posterior=samples,
        observed_data={"loss": obs["loss"]},
        constant_data={"run": obs["run"], "step": obs["step"], "group": obs["group"]},
        dims={"loss": ["point"], "run": ["point"], "step": ["point"], "group": ["point"]},
    )
