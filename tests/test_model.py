import jax
import numpy as np
from numpyro import handlers
from numpyro.infer import Predictive

from lrplan.curve.model import curve_data, curve_model
from lrplan.priors import load_priors
from lrplan.schedules import lr_schedule


def data(law, groups=1, sizes=None, with_loss=True):
    curves = []
    for g in range(groups):
        for spec in ("cosine:final=0.1", "constant"):
            lr = lr_schedule(spec, steps=2000, peak_lr=1e-3 * (g + 1), warmup_steps=100)
            steps = np.arange(100, 2001, 100)
            curves.append((lr, steps, np.full(steps.size, 3.0) if with_loss else None, 100, g))
    log_n = np.zeros(groups) if sizes is None else np.log(np.asarray(sizes) / np.exp(np.mean(np.log(sizes))))
    return curve_data(law, curves, lr_ref=2e-3, group_log_n=log_n, size_law=sizes is not None)


def test_single_group_sites():
    d = data("multipower")
    tr = handlers.trace(handlers.seed(curve_model, 0)).get_trace(d, priors=load_priors("multipower"), obs=d.log_loss)
    sites = {k for k, v in tr.items() if v["type"] == "sample" and not v["is_observed"]}
    assert sites == {"L0", "A", "alpha", "B", "beta", "half_life", "gamma", "sigma"}
    assert tr["log_loss"]["value"].shape == (d.n_points,)


def test_groups_pool_and_sizes_use_size_law():
    d = data("annealing", groups=2, sizes=[1e8, 4e8])
    for centred, groups in ((False, {"z_A", "z_alpha", "z_C", "z_L0"}),
                            (True, {"log_A", "log_alpha", "log_C", "L0_offset"})):
        tr = handlers.trace(handlers.seed(curve_model, 1)).get_trace(
            d, priors=load_priors("annealing"), obs=d.log_loss, centred=centred)
        assert groups | {"tau", "L_ref", "E", "A_N", "a_N"} <= set(tr)
        assert "L0" not in tr and tr["L0_group"]["value"].shape == (2,)


def test_fixed_scale_removes_sigma_and_prior_predictive_is_finite():
    d = data("multipower", with_loss=False)
    draws = Predictive(curve_model, num_samples=50)(jax.random.PRNGKey(0), d, priors=load_priors("multipower"), scale=0.01)
    assert "sigma" not in draws
    assert draws["log_loss"].shape == (50, d.n_points)
    assert np.isfinite(np.asarray(draws["log_loss"])).mean() > 0.9


def test_padding_leaves_the_density_and_the_law_unchanged():
    from numpyro.infer.util import log_density

    from lrplan.bayes import bucket
    from lrplan.curve.model import law_mean

    for law in ("multipower", "annealing"):
        d = data(law, groups=2)
        d = d.__class__(**{**d.__dict__, "log_loss": d.log_loss + 0.01 * np.arange(d.n_points) / d.n_points})
        pairs = getattr(d.features, "point", None)
        p = d.padded(bucket(d.n_points + 1), None if pairs is None else bucket(pairs.size + 1))
        assert p.n_points > d.n_points and not p.valid[d.n_points:].any()
        priors = load_priors(law)
        tr = handlers.trace(handlers.seed(curve_model, 3)).get_trace(d, priors=priors, obs=d.log_loss)
        params = {k: v["value"] for k, v in tr.items() if v["type"] == "sample" and not v["is_observed"]}
        seen = np.arange(d.n_points) % 3 > 0
        dens = [log_density(curve_model, (), dict(data=x, priors=priors, obs=x.log_loss, seen=s), params)[0]
                for x, s in ((d, seen), (p, np.concatenate([seen, np.ones(p.n_points - d.n_points, bool)])))]
        assert np.isfinite(dens[0])
        np.testing.assert_allclose(dens[1], dens[0], rtol=1e-12)
        values = {k: np.full(2, v) for k, v in dict(L0=2.5, A=0.8, alpha=0.4, B=0.5, C=2.0, beta=0.6,
                                                     gamma=0.6).items()}
        np.testing.assert_allclose(np.asarray(law_mean(p, values))[:d.n_points],
                                   np.asarray(law_mean(d, values)), rtol=1e-12)
    assert [bucket(n) for n in (1, 16, 17, 20, 21, 33, 100)] == [16, 16, 20, 20, 24, 40, 112]
