import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import lrplan
from lrplan.cli import cli
from lrplan.evaluate.simulate import simulate_curves
from lrplan.files import atomic_write


def _partial_then_ctrl_c(tmp):
    Path(tmp).write_bytes(b"half a file")
    raise KeyboardInterrupt


def test_ctrl_c_while_writing_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "fit.nc"
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, _partial_then_ctrl_c)
    assert list(tmp_path.iterdir()) == []
    target.write_text("earlier fit")
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, _partial_then_ctrl_c)
    assert target.read_text() == "earlier fit" and list(tmp_path.iterdir()) == [target]


def test_ctrl_c_during_a_fit_leaves_no_file(tmp_path, monkeypatch):
    runs, meta = simulate_curves("annealing", dict(L0=2.9, A=0.9, alpha=0.5, C=0.25), {"a": "constant"},
                                 steps=1000, peak_lr=1e-3, warmup_steps=10, every=100, seed=0)
    runs.to_csv(tmp_path / "runs.csv", index=False)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    import lrplan.curve.fit

    monkeypatch.setattr(lrplan.curve.fit, "fit_curves", interrupted)
    res = CliRunner().invoke(cli, ["fit", str(tmp_path / "runs.csv"), "-o", str(tmp_path / "fit.nc")])
    assert res.exit_code != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv"]


WRITES = re.compile(r"\.(to_netcdf|to_csv|to_parquet|write_text|write_bytes|savefig)\(|open\([^)]*['\"]w")


def test_every_writer_goes_through_atomic_write():
    """Each file lrplan writes is written to the temporary of `atomic_write` (or to a memory buffer)."""
    for path in Path(lrplan.__file__).parent.glob("*.py"):
        for no, line in enumerate(path.read_text().splitlines(), start=1):
            if WRITES.search(line) and path.name != "files.py":
                assert "tmp" in line or "buf" in line, f"{path.name}:{no}: {line.strip()}"
