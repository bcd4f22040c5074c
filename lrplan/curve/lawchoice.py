"""Choosing the curve law by the data: stacking weights of the laws' held-out scores.

Every law is calibrated on the same held-out curves (leave-one-run-out, prefix and horizon
forecasts, `lrplan.curve.calibrate`), and each curve's log predictive density under each
law's calibrated predictive distribution is its held-out score. The laws are weighed by
stacking of predictive distributions (Yao et al. 2018, "Using stacking to average Bayesian
predictive distributions", Bayesian Analysis 13(3)): the weights maximise the held-out log
score of the weighted mixture. `lrplan.curve.fit.fit_curves` samples the laws that carry
weight into a `lrplan.curve.fit.CurveMixture`, and predictions draw from that mixture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AUTO", "MIN_WEIGHT", "LawScore", "law_scores", "stacking_weights"]

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
