import numpy as np
import pandas as pd
import pytest

from lrplan.errors import FitError
from lrplan.evaluate import lr_baselines

TRUE = {"log_c": np.log(1.79), "params": -0.713, "tokens": 0.307}


def _lr_star(n, d):
    return np.exp(TRUE["log_c"] + TRUE["params"] * np.log(n) + TRUE["tokens"] * np.log(d))


def _sweep(centred: bool) -> pd.DataFrame:
    """Final losses of a quadratic bowl in log LR around a known power law lr*(N, D)."""
    rows = []
    for n in (1e8, 3e8, 1e9, 3e9):
        for d in (2e9, 8e9, 3.2e10):
            star = _lr_star(n, d)
            grid = star * 2.0 ** (np.arange(-4, 5) / 4) if centred else 1e-4 * 2.0 ** np.arange(6)
            for lr in grid:
                loss = 2.0 + 50 / n**0.3 + 0.05 * np.log(lr / star) ** 2
                rows.append({"params": n, "tokens": d, "tokens_per_step": 1e6, "lr": lr,
                             "loss": loss, "diverged": False})
    return pd.DataFrame(rows)


def test_cell_optima_recover_quadratic_vertices():
    df = _sweep(centred=False)
    cells = lr_baselines.cell_optima(df)
    assert list(cells.columns) == ["params", "tokens", "tokens_per_step", "lr_opt", "best_loss",
                                   "n_lrs", "vertex"]
    assert len(cells) == 12 and (cells["n_lrs"] == 6).all()
    inside = cells["vertex"].to_numpy()
    truth = _lr_star(cells["params"], cells["tokens"]).to_numpy()
    assert inside.sum() >= 6
    np.testing.assert_allclose(cells["lr_opt"][inside], truth[inside], rtol=1e-8)
    # an optimum outside the swept range falls back to the best observed LR
    assert (~inside).any()
    assert np.all(np.isin(cells["lr_opt"][~inside], df["lr"]))


def test_cell_optima_fall_back_and_skip_diverged():
    df = pd.DataFrame({
        "params": [1e8] * 5 + [2e8] * 2 + [3e8] * 3,
        "tokens": 1e9, "tokens_per_step": 1e6,
        "lr": [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 1e-3, 2e-3, 1e-3, 2e-3, 4e-3],
        "loss": [3.3, 3.1, 3.05, 3.2, np.nan, 3.0, 2.9, 3.0, 3.2, 3.1],  # last cell curves down
        "diverged": [False, False, False, False, True, False, False, False, False, False],
    })
    cells = lr_baselines.cell_optima(df).set_index("params")
    assert cells.loc[1e8, "vertex"] and cells.loc[1e8, "n_lrs"] == 4
    assert 2e-3 < cells.loc[1e8, "lr_opt"] < 8e-3
    assert not cells.loc[2e8, "vertex"] and cells.loc[2e8, "lr_opt"] == 2e-3  # only 2 LRs
    assert not cells.loc[3e8, "vertex"] and cells.loc[3e8, "lr_opt"] == 1e-3  # downward curvature
    assert cells.loc[3e8, "best_loss"] == 3.0


def test_step_law_recovers_known_exponents():
    rule = lr_baselines.step_law_fit(_sweep(centred=True))
    assert set(rule.coef) == {"log_c", "params", "tokens"}  # the batch does not vary
    for k, v in TRUE.items():
        assert rule.coef[k] == pytest.approx(v, abs=1e-8)
    np.testing.assert_allclose(rule.predict([5e8, 2e9], 1e10, 1e6), _lr_star(np.array([5e8, 2e9]), 1e10),
                               rtol=1e-8)


def test_bjorck_recovers_known_exponents():
    df = _sweep(centred=True)
    rule = lr_baselines.bjorck_fit(df)
    for k, v in TRUE.items():
        assert rule.coef[k] == pytest.approx(v, abs=1e-8)


def test_step_law_uses_batch_when_it_varies():
    df = _sweep(centred=True)
    other = df.copy()
    other["tokens_per_step"] = 4e6
    other["lr"] *= 2.0  # lr* doubles when the batch quadruples: exponent 0.5
    rule = lr_baselines.step_law_fit(pd.concat([df, other]))
    assert rule.coef["tokens_per_step"] == pytest.approx(0.5, abs=1e-8)


def test_nearest_lr_takes_the_nearest_cell():
    rule = lr_baselines.nearest_lr_fit(_sweep(centred=True))
    got = rule.predict(3.2e9, 3e10, 1e6)
    assert got == pytest.approx(_lr_star(3e9, 3.2e10), rel=1e-8)


def test_sweep_table_needs_its_columns():
    with pytest.raises(FitError, match="diverged"):
        lr_baselines.cell_optima(pd.DataFrame({"params": [1.0], "tokens": [1.0], "tokens_per_step": [1.0],
                                            "lr": [1.0], "loss": [1.0]}))


# ------------------------------------------------------------------ curve laws
