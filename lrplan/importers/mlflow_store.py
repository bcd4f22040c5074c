"""Readers of MLflow runs: a file store read directly, a tracking URI with ``MlflowClient``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lrplan.errors import DataError
from lrplan.importers.raw import RawRun, Series, import_error, read_text, show_value

__all__ = ["read_mlflow", "read_mlflow_client"]

def _mlflow_runs(root: Path) -> list[Path]:
    if (root / "metrics").is_dir():
        return [root]
    out = []
    for meta in sorted(root.rglob("meta.yaml")):
        d = meta.parent
        if (d / "metrics").is_dir() and ".trash" not in d.parts:
            out.append(d)
    return out


def read_mlflow(path: str | os.PathLike[str]) -> list[RawRun]:
    """Read runs of an MLflow file store (``mlruns``, an experiment's folder, or a run's).

    Reads the store's documented layout directly (MLflow 3 refuses to open a file store with
    its client unless told to): ``metrics/<key>`` lines ``timestamp value step``, the run name
    from ``tags/mlflow.runName``, the config from ``params/<key>``.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; point at an MLflow file store (mlruns) or a run "
                        "folder in it")
    dirs = _mlflow_runs(root)
    if not dirs:
        raise DataError(f"{root}: no MLflow runs (folders with metrics/) in it; point at the "
                        "mlruns folder")
    runs = []
    for d in dirs:
        tag = d / "tags" / "mlflow.runName"
        name = read_text(tag).strip() if tag.is_file() else d.name
        series: dict[str, Series] = {}
        mdir = d / "metrics"
        for f in sorted(p for p in mdir.rglob("*") if p.is_file()):
            key = str(f.relative_to(mdir)).replace(os.sep, "/")
            st, vals, where = [], [], []
            for lineno, line in enumerate(read_text(f).splitlines(), start=1):
                if not line.strip():
                    continue
                parts = line.split()
                if len(parts) not in (2, 3):
                    raise import_error(str(f), key, name or d.name, f"line {lineno}",
                                       f"{show_value(line)} is not 'timestamp value step'",
                                       "check that the metric file is whole")
                vals.append(parts[1])
                st.append(parts[2] if len(parts) == 3 else "0")
                where.append(f"line {lineno}")
            series[key] = Series(np.array(st, dtype=object), np.array(vals, dtype=object),
                                 tuple(where), str(f))
        pdir = d / "params"
        cfg = ({str(p.relative_to(pdir)).replace(os.sep, "/"): read_text(p).strip()
                for p in sorted(pdir.rglob("*")) if p.is_file()} if pdir.is_dir() else {})
        runs.append(RawRun(name or d.name, str(mdir), "mlflow", series, cfg, str(pdir)))
    return runs


def read_mlflow_client(uri: str) -> list[RawRun]:
    """Read every run of an MLflow tracking server or database with ``MlflowClient``.

    ``uri`` is a tracking URI (``sqlite:///mlflow.db``, ``http://host:5000``, ...); each
    metric's history comes from ``get_metric_history``, the config from the run's params.
    Needs the mlflow (or mlflow-skinny) package.
    """
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise DataError(f"{uri}: reading an MLflow tracking URI needs the mlflow package; install "
                        "it (pip install mlflow-skinny), or point at an mlruns folder") from None
    runs = []
    try:
        client = MlflowClient(tracking_uri=uri)
        experiments = client.search_experiments()
        for exp in sorted(experiments, key=lambda e: str(e.experiment_id)):
            token = None
            while True:
                page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token,
                                          order_by=["attributes.start_time ASC"])
                for run in page:
                    rid = run.info.run_id
                    series = {}
                    for key in sorted(run.data.metrics):
                        hist = client.get_metric_history(rid, key)
                        series[key] = Series(np.array([m.step for m in hist], dtype=object),
                                             np.array([m.value for m in hist], dtype=object),
                                             tuple(f"point {i + 1}" for i in range(len(hist))))
                    runs.append(RawRun(run.info.run_name or rid, f"{uri} run {rid}", "mlflow",
                                       series, dict(run.data.params), f"{uri} run {rid}"))
                token = page.token
                if not token:
                    break
    except MlflowException as e:
        first = str(e.message if hasattr(e, "message") else e).strip().splitlines()
        raise DataError(f"{uri}: MLflow cannot read it ({first[0] if first else type(e).__name__})"
                        "; check the tracking URI") from None
    if not runs:
        raise DataError(f"{uri}: no MLflow runs there; check the tracking URI")
    return runs


