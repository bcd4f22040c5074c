"""The report's Diagnostics section: sampler checks, posterior tables, priors against posteriors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lrplan.report.document import Body, Section, draw_figure, fixed

__all__ = ["CURVE_LEGEND", "TRANSFER_SHOWN", "diagnostics_section", "prior_panels"]


#: What the curve fit's shared parameters mean (LR in units of the fit's largest peak LR,
#: areas in thousands of steps at it; see models/*.toml for their priors).
CURVE_LEGEND = {
    "L0": "the loss the law tends to as the LR area grows, before any LR decay's reduction",
    "A": "amplitude of the power law in the LR area",
    "alpha": "exponent of the power law in the LR area",
    "B": "loss reduction per unit of LR decay",
    "C": "rate at which an LR decay pays off (annealing: weight of the momentum area)",
    "beta": "saturation exponent of an LR decay's payoff",
    "gamma": "exponent of the LR in an LR decay's payoff",
    "half_life": "LR area after which an LR decay has paid half its reduction",
    "E": "the size law's floor, L0(N) = E + A_N (N / N_ref)^-a_N",
    "A_N": "the size law's amplitude at the reference size N_ref",
    "a_N": "the size law's exponent",
    "L_ref": "L0 at the reference size N_ref (E + A_N), what two or more sizes pin down",
    "tau": "spread of the groups' log parameters around the shared ones",
}


def _param_rows(samples: dict[str, np.ndarray]) -> list[list]:
    import arviz as az

    rows = []
    for name, x in samples.items():
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            continue
        flat = x.reshape(-1)
        lo, hi = np.quantile(flat, [0.025, 0.975])
        varies = x.shape[1] >= 4 and np.ptp(flat) > 0  # R-hat and ESS are undefined otherwise
        r_hat = float(az.rhat(x, method="rank")) if varies and x.shape[0] >= 2 else float("nan")
        ess = float(az.ess(x, method="bulk")) if varies else float("nan")
        rows.append([name, flat.mean(), flat.std(), lo, hi, fixed(r_hat, 3), fixed(ess, 0)])
    return rows


#: Transfer-fit parameters whose prior and posterior the report draws (those the fit has).
TRANSFER_SHOWN = ("c_n", "c_d", "c_b", "c_nn", "a", "b", "kappa", "asym")


def prior_panels(priors, samples: dict[str, np.ndarray], names: Sequence[str] | None = None) -> list[tuple]:
    """(name, grid, prior density, posterior draws, log) per scalar parameter with a prior.

    ``names`` restricts (and orders) the parameters shown; default: every one with a prior.
    A positive parameter whose prior spans more than a factor 30 is shown on log10 scale.
    """
    import jax
    import jax.numpy as jnp

    from lrplan.bayes import prior_distribution

    panels = []
    for i, name in enumerate(names or priors.params):
        prior = priors.params.get(name)
        x = samples.get(name)
        if prior is None:
            continue
        if x is None or np.ndim(x) != 2:
            continue
        post = np.asarray(x, dtype=np.float64).reshape(-1)
        d = prior_distribution(prior)
        pdraws = np.asarray(d.sample(jax.random.PRNGKey(i), (4000,)), dtype=np.float64)
        plo, phi = np.quantile(pdraws, [0.01, 0.99])
        log = bool(plo > 0 and post.min() > 0 and phi / plo > 30)
        if log:
            pdraws, post = np.log10(pdraws), np.log10(post)
            plo, phi = np.quantile(pdraws, [0.01, 0.99])
        lo = min(plo, np.quantile(post, 0.002))
        hi = max(phi, np.quantile(post, 0.998))
        grid = np.linspace(lo, hi, 300)
        x_grid = 10**grid if log else grid
        # a grid point outside the prior's support (a rate of exactly 0) has density 0
        inside = np.asarray(d.support(jnp.asarray(x_grid)), dtype=bool)
        dens = np.zeros_like(x_grid)
        dens[inside] = np.exp(np.asarray(d.log_prob(jnp.asarray(x_grid[inside])), dtype=np.float64))
        if log:  # density of log10(x)
            dens = dens * x_grid * np.log(10.0)
        panels.append((name, grid, np.nan_to_num(dens), post, log))
    return panels


def diagnostics_section(fits: Sequence[tuple[str, object]], loo=None) -> Section:
    """The Diagnostics section of ``fits``, (label, fit) pairs, and the transfer fit's ``loo`` table.

    A fit is a curve fit (label "curve fit...") or a transfer fit ("transfer fit"); with both
    kinds, each fit's tables get a subheading.
    """
    from lrplan.report import plots

    b = Body()
    both = len({label.split()[0] for label, _ in fits}) > 1
    b.table(["fit", "R-hat max", "bulk ESS min", "divergences", "status"],
            [[label, fixed(f.diagnostics.r_hat_max, 3), fixed(f.diagnostics.ess_bulk_min, 0),
              str(f.diagnostics.divergences),
              "ok" if f.diagnostics.ok else "FAILED: " + "; ".join(f.diagnostics.problems())]
             for label, f in fits],
            caption="Thresholds: R-hat ≤ 1.01, bulk ESS ≥ 200, no divergent transition")
    for label, f in fits:
        if both:
            b.h(label.capitalize())
        slug = label.split()[0]
        b.table(["parameter", "mean", "sd", "2.5%", "97.5%", "R-hat", "bulk ESS"], _param_rows(f.samples),
                caption=f"Posterior of the {label}'s scalar parameters")
        b.items([f"{n}: {CURVE_LEGEND[n]}" for n in CURVE_LEGEND if slug == "curve" and n in f.samples])
        panels = prior_panels(f.priors, f.samples, TRANSFER_SHOWN if slug == "transfer" else None)
        if panels:
            what = "exponents and bowl" if slug == "transfer" else "parameters"
            b.figure(draw_figure(f"prior_posterior_{slug}",
                                 f"Prior (orange) and posterior (blue) of the {label}'s {what}, in the "
                                 "model's normalised units: a posterior no narrower than its "
                                 "prior means the data did not inform that parameter.",
                                 plots.prior_posterior, panels))
    if loo is not None:
        cols = [c for c in ("rank", "elpd_loo", "p_loo", "elpd_diff", "weight", "se", "dse", "warning")
                if c in loo.columns]
        rows = zip(loo.index, loo[cols].itertuples(index=False), strict=True)
        b.table(["model", *cols], [[str(i), *(v if isinstance(v, float) else str(v) for v in row)]
                                   for i, row in rows],
                caption="Transfer model variants compared by PSIS-LOO over runs (higher elpd_loo is "
                        "better)")
    else:
        b.p("No LOO model comparison in these fits (`lrplan plan --variants compare` ranks the transfer "
            "model's variants).")
    return b.section("Diagnostics", "diagnostics")

