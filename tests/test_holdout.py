import numpy as np
import pandas as pd
import pytest

from lrplan.data import runs_from_frame
from lrplan.errors import DataError
from lrplan.evaluate.holdout import holdout_folds, parse_holdout, run_attributes


def _items():
    return pd.DataFrame({"name": ["a_cos", "a_wsd", "b_cos", "b_wsd", "c_cos"],
                         "params": [1e8, 1e8, 3e8, 3e8, 1e9],
                         "steps": [1000.0, 4000.0, 1000.0, 4000.0, 2000.0],
                         "tokens": [1e9, 4e9, 1e9, 4e9, 2e10]})


def _predicted(spec):
    items = _items()
    return [tuple(items["name"][test]) for _, _, test in
            holdout_folds(parse_holdout(spec), items)]


def test_holdout_specs():
    assert _predicted("schedule:a_wsd,c_cos") == [("a_wsd", "c_cos")]
    assert _predicted("schedule:*_wsd") == [("a_wsd", "b_wsd")]
    assert _predicted("horizon:2000") == [("a_wsd", "b_wsd")]
    assert _predicted("horizon:tokens=3e9") == [("a_wsd", "b_wsd", "c_cos")]
    assert _predicted("horizon:ratio=15") == [("a_wsd", "c_cos")]  # tokens per parameter
    assert _predicted("size:3e8") == [("c_cos",)]
    assert _predicted("size:1e8;horizon:2000") == [("a_wsd", "b_cos", "b_wsd", "c_cos")]
    assert _predicted("size:rolling") == [("c_cos",)]  # one cutoff: 3e8 (fits >= 2 sizes)


@pytest.mark.parametrize("spec, match", [
    ("bogus:1", "unknown kind"), ("size:", "no argument"), ("size:-3", "> 0"),
    ("horizon:flops=3", "unknown horizon unit"), ("schedule:zzz", "no run matches"),
    ("size:1e12", "holds out no"), ("size:1", "holds out every"),
    ("size:rolling;horizon:10", "cannot be combined"),
])
def test_bad_holdout_specs(spec, match):
    with pytest.raises(DataError, match=match):
        holdout_folds(parse_holdout(spec), _items())


def test_run_attributes_of_runs_with_and_without_a_batch():
    df = pd.DataFrame({"run": ["a", "a", "b"], "step": [100, 200, 300], "loss": [3.0, 2.9, 3.1],
                       "params": [1e8, 1e8, np.nan], "tokens_per_step": [1e6, 1e6, np.nan]})
    attrs = run_attributes(list(runs_from_frame(df, source="t")))
    assert list(attrs["name"]) == ["a", "b"]
    assert list(attrs["steps"]) == [200.0, 300.0]
    assert attrs["tokens"][0] == 2e8 and np.isnan(attrs["tokens"][1])
    assert attrs["params"][0] == 1e8 and np.isnan(attrs["params"][1])
    # a hold-out that needs what a run lacks says so
    with pytest.raises(DataError, match="every run needs params"):
        holdout_folds(parse_holdout("size:5e7"), attrs)
