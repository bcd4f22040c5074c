"""Write the bundled synthetic LR sweep (``runs.csv``) from a known transfer law.

No public LR sweep with a licence that allows redistribution was available, so the bundled
sweep is drawn from lrplan's own transfer law with exponents near the published ones: lr* ~
N^-0.6 D^-0.3 (Li et al. 2025; Bjorck et al. 2024), Chinchilla-like L*(N, D), a linex bowl (steep
above the optimum, gentle below), and runs that diverge about 5x above the optimum. Three sizes (20M-120M) x
two horizons x eight LRs at a batch of 0.5M tokens, cosine to 10% with 1% warmup.

    python examples/sweep/make_sweep.py   # rewrites examples/sweep/runs.csv
"""

from pathlib import Path

import numpy as np
from lrplan.simulate import simulate_sweep

TRUTH = dict(E=1.9, A=0.6, a=0.34, B=0.5, b=0.28, log_lr0=float(np.log(2e-3)), c_n=-0.6,
             c_d=-0.3, c_b=0.4, kappa=0.04, asym=0.0, skew=1.0, k_anneal=0.1, div_offset=1.6,
             div_width=0.3, sigma=0.006)
REFS = (1e8, 2e9, 5e5)
CELLS = [(n, d, 5e5) for n in (2e7, 5e7, 1.2e8) for d in (5e8, 2e9)]


def main():
    df = simulate_sweep(TRUTH, CELLS, np.exp(np.linspace(-1.6, 2.0, 8)), refs=REFS, seed=7)
    df["loss"] = df["loss"].round(5)
    df.to_csv(Path(__file__).with_name("runs.csv"), index=False, float_format="%.6g")


if __name__ == "__main__":
    main()
