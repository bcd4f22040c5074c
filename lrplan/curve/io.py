"""Curve fits on disk: ArviZ InferenceData NetCDF with the fit's provenance inside.

`save_fit` writes a `CurveFit` or `CurveMixture` atomically: the draws as the posterior, the
fitted points as observed and constant data, and in the attributes the lrplan version, each
law's config, priors and diagnostics (and a mixture's weights and scores). `load_fit` reads
it back and refuses a file of another kind or of another release.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lrplan import __version__
from lrplan.bayes import Diagnostics
from lrplan.curve.fit import LAW_SEP, CurveFit, CurveMixture, FitConfig, inference_data
from lrplan.curve.lawchoice import LawScore
from lrplan.curve.model import GroupKey
from lrplan.errors import FitError
from lrplan.files import atomic_write
from lrplan.priors import priors_from_toml

__all__ = ["load_fit", "save_fit"]


def _config_to_json(config: FitConfig) -> str:
    d = asdict(config)
    return json.dumps(d)


def _config_from_json(text: str) -> FitConfig:
    d = json.loads(text)
    d["groups"] = tuple(GroupKey(**g) for g in d["groups"])
    d["notes"] = tuple(d["notes"])
    return FitConfig(**d)


def _law_attrs(fit: CurveFit) -> dict:
    return {"law": fit.law, "config": _config_to_json(fit.config), "priors": fit.priors.to_toml(),
            "diagnostics": json.dumps(asdict(fit.diagnostics))}


def save_fit(fit: CurveFit | CurveMixture, path: str | Path) -> None:
    """Write the fit as ArviZ InferenceData NetCDF, atomically, with its provenance inside.

    A `CurveMixture` keeps each law's draws under ``<law>__<site>`` and, in the attributes,
    each law's config, priors and diagnostics, the weights and every law's held-out score.
    """
    mixture = isinstance(fit, CurveMixture)
    fits = fit.fits if mixture else (fit,)
    idata = inference_data(fit)
    attrs = {"lrplan_version": fit.version, "lrplan_kind": "curve_mixture" if mixture else "curve"}
    if mixture:
        attrs.update(law="auto", laws=json.dumps({f.law: _law_attrs(f) for f in fits}),
                     weights=json.dumps(dict(zip((f.law for f in fits), fit.weights, strict=True))),
                     scores=json.dumps([s.to_json() for s in fit.scores]))
    else:
        attrs.update(_law_attrs(fit))
    idata.posterior.attrs.update(attrs)
    atomic_write(path, lambda tmp: idata.to_netcdf(tmp, engine="h5netcdf"))


def _release(version: str) -> tuple[str, ...]:
    """The part of a version that fit files must share.

    The major, and before 1.0 the minor too: 0.x releases may change a law (0.2 added the
    warmup's term to the multi-power law).
    """
    parts = version.split(".") + ["0"]
    return tuple(parts[:2]) if parts[0] == "0" else (parts[0],)


def _diagnostics_from_json(text: str) -> Diagnostics:
    d = json.loads(text)
    return Diagnostics(**{**d, "misfit": tuple(d.get("misfit", ()))})


def load_fit(path: str | Path) -> CurveFit | CurveMixture:
    """Read a fit written by `save_fit`; a file of another kind or version raises FitError."""
    import arviz as az

    path = Path(path)
    if not path.exists():
        raise FitError(f"{path}: no such fit file; make one with `lrplan fit RUNS -o {path}`")
    try:
        idata = az.from_netcdf(str(path), engine="h5netcdf")
    except Exception as e:  # noqa: BLE001 - any reader failure means "not a fit file"
        raise FitError(f"{path}: not an lrplan fit file ({type(e).__name__})") from None
    attrs = idata.posterior.attrs
    kind = attrs.get("lrplan_kind")
    if kind not in ("curve", "curve_mixture") or ("config" not in attrs and "laws" not in attrs):
        raise FitError(f"{path}: not an lrplan curve fit (no lrplan provenance inside)")
    if _release(str(attrs.get("lrplan_version", "0"))) != _release(__version__):
        raise FitError(f"{path}: written by lrplan {attrs['lrplan_version']}, this is "
                       f"{__version__}; refit with this version")
    post = idata.posterior
    cd = idata.constant_data
    observed = {"run": np.asarray(cd["run"].values).astype(object),
                "step": np.asarray(cd["step"].values),
                "loss": np.asarray(idata.observed_data["loss"].values),
                "group": np.asarray(cd["group"].values)}

    def one(a: dict, samples: dict) -> CurveFit:
        return CurveFit(config=_config_from_json(a["config"]),
                        priors=priors_from_toml(a["priors"], source=str(path)), samples=samples,
                        diagnostics=_diagnostics_from_json(a["diagnostics"]), observed=observed,
                        version=str(attrs["lrplan_version"]))

    if kind == "curve":
        return one(attrs, {k: np.asarray(post[k].values) for k in post.data_vars})
    fits = []
    for law, a in json.loads(attrs["laws"]).items():
        prefix = f"{law}{LAW_SEP}"
        fits.append(one(a, {k[len(prefix):]: np.asarray(post[k].values)
                            for k in post.data_vars if k.startswith(prefix)}))
    weights = json.loads(attrs["weights"])
    return CurveMixture(fits=tuple(fits), weights=tuple(float(weights[f.law]) for f in fits),
                        scores=tuple(LawScore(**s) for s in json.loads(attrs["scores"])))
