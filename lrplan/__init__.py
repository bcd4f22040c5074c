"""lrplan: plan a large training run's learning rate and loss from a few small runs.

The public API (each name is imported on first use, so that ``import lrplan`` is fast and an
entry point can choose JAX's platform and precision before JAX loads)::

    runs = lrplan.load_runs("runs.csv", meta="meta.csv")
    fit = lrplan.fit_curves(runs)                      # the curve laws, weighed by held-out data
    pred = lrplan.predict_curve(fit, lr, steps, params=1e8)
    result = lrplan.plan(sweep, params=1.2e9, tokens=2e10)   # the LR of a large run
    ranked = lrplan.next_runs(result)                    # the small sweeps worth running next
    scores = lrplan.backtest(runs, "size:rolling")

Results are typed objects with ``to_json()``; posteriors are ArviZ ``InferenceData``
(``fit.posterior``) and tables pandas frames.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lrplan")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

#: Public name -> the module that defines it.
_API = {
    "load_runs": "lrplan.data",
    "lr_schedule": "lrplan.schedules",
    "example_path": "lrplan.examples",
    "fit_curves": "lrplan.curve.fit",
    "save_fit": "lrplan.curve.io",
    "load_fit": "lrplan.curve.io",
    "predict_curve": "lrplan.curve.predict",
    "plan": "lrplan.api",
    "next_runs": "lrplan.api",
    "backtest": "lrplan.api",
    "Target": "lrplan.transfer.decide",
    "LrplanError": "lrplan.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'lrplan' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
