import pytest

from lrplan.curve.model import LAWS, law_parameters
from lrplan.errors import PriorError
from lrplan.priors import load_priors, priors_from_toml


@pytest.mark.parametrize("law", LAWS)
def test_every_parameter_has_a_justified_prior(law):
    p = load_priors(law)
    needed = set(law_parameters(law)) - ({"C"} if law == "multipower" else set())
    assert needed <= set(p.params)
    assert all(len(pr.why) > 20 for pr in p.params.values())
    assert priors_from_toml(p.to_toml()) == p


def test_override_by_name(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[params.alpha]\ndist = "normal"\nloc = 0.3\nscale = 0.05\nwhy = "mine"\n')
    p = load_priors("multipower", f)
    assert p["alpha"].dist == "normal" and p["alpha"].args == {"loc": 0.3, "scale": 0.05}
    assert p["beta"] == load_priors("multipower")["beta"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[params.nope]\ndist = "normal"\nloc = 0\nscale = 1\n', "unknown parameter"),
        ('[params.alpha]\ndist = "cauchy"\n', "unknown dist 'cauchy'"),
        ('[params.alpha]\ndist = "normal"\nloc = 0\n', "missing scale"),
        ('[params.alpha]\ndist = "normal"\nloc = 0\nscale = -1\n', "scale must be > 0"),
        ('[params.alpha]\ndist = "bernoulli"\nprobs = 1.5\n', "probs must lie in"),
        ('law = "annealing"\n', "priors are for law 'annealing'"),
        ("[params.alpha\n", "not valid TOML"),
    ],
)
def test_bad_override_files(tmp_path, text, match):
    f = tmp_path / "p.toml"
    f.write_text(text)
    with pytest.raises(PriorError, match=match):
        load_priors("multipower", f)
