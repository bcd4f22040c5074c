"""The curve model: loss curves of training runs under any LR schedule.

Modules, in the order they import each other:

- `lrplan.curve.model`: the NumPyro program (groups, size law, Student-t noise) and the
  pieces predictions reuse (`group_law`, `size_law_level`, `law_mean`, `noise_draws`).
- `lrplan.curve.prepare`: from runs to model inputs (runs, points, groups, reference units).
- `lrplan.curve.pointfit`: the MAP point by L-BFGS, and the law at the fitted points.
- `lrplan.curve.calibrate`: the held-out discrepancy (its rates' model and draws), misfit checks.
- `lrplan.curve.lawchoice`: stacking weights of the laws' held-out scores.
- `lrplan.curve.fit`: `fit_curves` (NUTS) and its results `CurveFit`, `CurveMixture`.
- `lrplan.curve.io`: `save_fit` / `load_fit` (NetCDF with provenance).
- `lrplan.curve.predict`: `predict_curve` and `replicate_runs`.
"""

__all__: list[str] = []
