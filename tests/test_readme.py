"""The README's Python example runs as written (a newcomer's first notebook cannot rot)."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no Python example"
    scope: dict = {}
    exec(compile(blocks[0], str(README), "exec"), scope)
    fit, pred, result, ranked = scope["fit"], scope["pred"], scope["result"], scope["ranked"]
    # the stacking weights are a distribution over the laws
    assert abs(sum(s.weight for s in fit.scores) - 1) < 1e-9
    assert set(scope["posterior"].posterior.data_vars) >= {f"{f.law}__L0" for f in fit.fits} or \
        "L0" in scope["posterior"].posterior.data_vars
    # a held-out schedule's final loss within 2% of the prediction, inside a sane interval
    run = scope["run"]
    assert abs(pred.mean[-1] / run.loss[-1] - 1) < 0.02
    assert scope["low"] < pred.mean[-1] < scope["high"]
    # the plan recommends an LR inside its own 95% interval of lr*, and ranks candidates
    q = result.to_json()["lr"]["optimum"]["quantiles"]
    assert q["0.025"] < result.recommended_lr < q["0.975"]
    assert len(ranked.table) >= 3 and np.all(np.isfinite(ranked.table.iloc[:, 0]))
    out = capsys.readouterr().out
    assert "peak LR" in out and run.name in out
