"""Choosing the curve law by the data: stacking weights and the weighted mixture of fits.

Every law is calibrated on the same held-out curves (leave-one-run-out, prefix and horizon
forecasts, `lrplan.curve.fit`), and each curve's log predictive density under each law's
calibrated predictive distribution is its held-out score. The laws are weighed by stacking
of predictive distributions (Yao et al. 2018, "Using stacking to average Bayesian predictive
distributions", Bayesian Analysis 13(3)): the weights maximise the held-out log score of the
weighted mixture. Predictions then draw from that mixture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lrplan.bayes import Diagnostics
    from lrplan.curve.fit import CurveFit

__all__ = ["AUTO", "MIN_WEIGHT", "CurveMixture", "LawScore", "stacking_weights"]

#: The law name that asks for the data to choose.
AUTO = "auto"
#: Laws weighed below this are not sampled: their share of any prediction is negligible.
MIN_WEIGHT = 0.01


def stacking_weights(lpd: np.ndarray) -> np.ndarray:
    """Stacking weights of K predictive distributions from their held-out log densities.

    ``lpd[k, c]`` is the log predictive density of held-out curve c under model k. The
    weights maximise ``sum_c log sum_k w_k exp(lpd[k, c])`` on the simplex (Yao et al. 2018,
    eq. 4), a concave problem solved in softmax coordinates.
    """
    from scipy.optimize import minimize
    from scipy.special import logsumexp, softmax

    lpd = np.asarray(lpd, dtype=np.float64)
    k = lpd.shape[0]
    if k == 1 or lpd.shape[1] == 0:
        return np.full(k, 1.0 / k)
    # Shifting each curve by its best law's score changes no weight and keeps exp() finite.
    rel = lpd - lpd.max(axis=0, keepdims=True)

    def objective(v):
        theta = np.concatenate([[0.0], v])
        logw = theta - logsumexp(theta)
        mix = logsumexp(rel + logw[:, None], axis=0)
        w = np.exp(logw)
        p = np.exp(rel + logw[:, None] - mix[None, :])  # responsibility of each law per curve
        grad = (p.sum(axis=1) - w * lpd.shape[1])[1:]
        return -mix.sum(), -grad

    res = minimize(objective, np.zeros(k - 1), jac=True, method="BFGS")
    return softmax(np.concatenate([[0.0], res.x]))


@dataclass(frozen=True)
class LawScore:
    """One law's held-out score: the sum over held-out curves of its log predictive density."""

    law: str
    weight: float
    elpd: float
    elpd_se: float
    sampled: bool

    def to_json(self) -> dict:
        """JSON form."""
        return {"law": self.law, "weight": self.weight, "elpd": self.elpd,
                "elpd_se": self.elpd_se, "sampled": self.sampled}


def law_scores(laws: list[str], lpd: np.ndarray, weights: np.ndarray) -> tuple[LawScore, ...]:
    """Per law: its weight and held-out elpd with the standard error of its sum over curves."""
    n = lpd.shape[1]
    return tuple(LawScore(law=law, weight=float(w), elpd=float(x.sum()),
                          elpd_se=float(np.sqrt(n) * x.std(ddof=1)) if n > 1 else float("nan"),
                          sampled=bool(w >= MIN_WEIGHT))
                 for law, x, w in zip(laws, lpd, weights, strict=True))


@dataclass(frozen=True)
class CurveMixture:
    """Curve fits of several laws, weighed by stacking; predictions draw from the mixture.

    ``fits`` holds the sampled laws (weight >= `MIN_WEIGHT`), ``weights`` their weights
    renormalised over them, ``scores`` every law's held-out score and stacking weight.
    Settings that do not depend on the law (groups, reference units, the data) come from the
    heaviest fit.
    """

    fits: tuple[CurveFit, ...]
    weights: tuple[float, ...]
    scores: tuple[LawScore, ...]

    law = AUTO

    @property
    def main(self) -> CurveFit:
        """The fit of the heaviest law."""
        return self.fits[int(np.argmax(self.weights))]

    @property
    def config(self):
        """The heaviest fit's config, its notes extended by the law choice's."""
        from dataclasses import replace

        return replace(self.main.config, notes=self.main.config.notes + (self.choice_note(),))

    @property
    def observed(self) -> dict[str, np.ndarray]:
        """The fitted points (the same for every law)."""
        return self.main.observed

    @property
    def priors(self):
        """The heaviest law's priors."""
        return self.main.priors

    @property
    def version(self) -> str:
        """The lrplan version that wrote the fits."""
        return self.main.version

    @property
    def diagnostics(self) -> Diagnostics:
        """The worst of the sampled fits' diagnostics."""
        from lrplan.bayes import Diagnostics

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
