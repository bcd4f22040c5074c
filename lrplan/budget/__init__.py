"""Compute-optimal size for a FLOP budget (the Chinchilla-style loss law fitted with NUTS).

`lrplan.budget.model` holds the NumPyro models, `lrplan.budget.data` the runs -> points step,
`lrplan.budget.fit` the fits (loss law, drift) and `lrplan.budget.decide` the decision; their
public names are gathered here.
"""

from lrplan.budget.data import (
    SIX_N,
    FlopsPerToken,
    budget_groups,
    budget_points,
    has_lr_sweep,
    isoflop_vertex,
    parse_flops_per_token,
    points_from_frame,
)
from lrplan.budget.decide import (
    BudgetResult,
    caveats,
    decide_budget,
    plan_budget,
    step_law_batch,
    step_law_lr,
)
from lrplan.budget.fit import (
    Drift,
    LossLaw,
    calibrate_drift,
    drift_forecasts,
    drift_posterior,
    fit_budget,
    isoflop_curves,
    law_from_transfer,
    params_grid,
    prior_drift,
)
from lrplan.priors import load_priors

__all__ = ["SIX_N", "FlopsPerToken", "budget_groups", "budget_points", "has_lr_sweep", "isoflop_vertex",
           "parse_flops_per_token", "points_from_frame", "BudgetResult", "caveats", "decide_budget",
           "plan_budget", "step_law_batch", "step_law_lr", "Drift", "LossLaw", "calibrate_drift",
           "drift_forecasts", "drift_posterior", "fit_budget", "isoflop_curves",
           "law_from_transfer", "params_grid", "prior_drift", "load_priors"]
