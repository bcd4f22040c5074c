"""Reader of TensorBoard event files (needs the tensorboard package: ``lrplan[import]``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lrplan.errors import DataError
from lrplan.importers.raw import RawRun, Series

__all__ = ["read_tensorboard"]

def _event_dirs(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    found = sorted({f.parent for f in root.rglob("*tfevents*") if f.is_file()})
    return found


def read_tensorboard(path: str | os.PathLike[str]) -> list[RawRun]:
    """Read TensorBoard event files: a file, a run's folder, or a folder of run folders.

    Every scalar is kept (``size_guidance`` 0). Scalars written as tensors (TF2's
    ``tf.summary.scalar``) are read too.
    """
    try:
        from tensorboard.backend.event_processing import event_accumulator as ea
        from tensorboard.util import tensor_util
    except ImportError:
        raise DataError(f"{path}: reading TensorBoard logs needs the tensorboard package; "
                        "install it with pip install 'lrplan[import]'") from None
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: no such file or folder; check the path")
    dirs = _event_dirs(root)
    if not dirs:
        raise DataError(f"{root}: no TensorBoard event files (events.out.tfevents.*) in it; "
                        "point at a run's log folder")
    runs = []
    for d in dirs:
        name = (d.parent.name if d.is_file() else
                (root.name if d == root else str(d.relative_to(root)).replace(os.sep, "/")))
        acc = ea.EventAccumulator(str(d), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
        try:
            acc.Reload()
        except Exception as e:  # the reader's own errors (corrupt records, bad protos)
            raise DataError(f"{d}: TensorBoard cannot read these event files "
                            f"({type(e).__name__}); check that they are whole") from None
        tags = acc.Tags()
        series: dict[str, Series] = {}
        for tag in tags.get(ea.SCALARS, []):
            ev = acc.Scalars(tag)
            series[tag] = Series(np.array([e.step for e in ev], dtype=object),
                                 np.array([e.value for e in ev], dtype=object),
                                 tuple(f"step {e.step}" for e in ev))
        for tag in tags.get(ea.TENSORS, []):
            ev = acc.Tensors(tag)
            vals = []
            for e in ev:
                arr = tensor_util.make_ndarray(e.tensor_proto)
                vals.append(arr.item() if arr.size == 1 else f"a tensor of shape {arr.shape}")
            series.setdefault(tag, Series(np.array([e.step for e in ev], dtype=object),
                                          np.array(vals, dtype=object),
                                          tuple(f"step {e.step}" for e in ev)))
        runs.append(RawRun(name, str(d), "tensorboard", series))
    return runs


