"""The benchmark scripts that need no outside data, run with tiny settings so they cannot rot."""

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_benchmark_curves_prints_a_row_per_law(capsys):
    module = runpy.run_path(str(EXAMPLES / "benchmark_curves.py"))
    module["main"](["--sizes", "100M", "--laws", "annealing", "--warmup", "50", "--samples", "50"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    authors, annealing = rows
    assert authors[:2] == ["100M", "authors"] and float(authors[2]) == pytest.approx(0.00142, abs=2e-5)
    assert annealing[:2] == ["100M", "annealing"]
    mean_err, train_err, cov95 = float(annealing[2]), float(annealing[4]), float(annealing[6])
    assert 0 < train_err < mean_err < 0.01 and 0.5 < cov95 <= 1
