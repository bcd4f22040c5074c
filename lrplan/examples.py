"""The example data bundled with lrplan (see ``examples/`` in the source tree)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from lrplan.data import RunSet, load_runs

__all__ = ["example_path", "multipower_example", "olmo_ladder_example", "sweep_example",
           "MULTIPOWER_TRAIN", "MULTIPOWER_AUTHORS_FIT"]

#: Luo et al.'s training split; the other six schedules are their test curves.
MULTIPOWER_TRAIN = ("cosine_24000", "constant_24000", "wsdcon_9")

#: Luo et al.'s own point fit of the multi-power law to that split, as released with their
#: code, in raw units (LR as logged, areas in LR x steps): L0, A, alpha, B, C, beta, gamma.
MULTIPOWER_AUTHORS_FIT = {
    "25M": (3.04045406, 0.52468604, 0.50786857, 363.78751622, 2.06560812, 0.58279013, 0.64142257),
    "100M": (2.6514477, 0.60115152, 0.45295811, 437.9464276, 2.13245612, 0.59785199, 0.65523644),
    "400M": (2.37474466, 0.65421216, 0.42878731, 523.42464371, 2.02462735, 0.59350493, 0.63472457),
}


def example_path(*parts: str) -> Path:
    """Path of a bundled example file."""
    return Path(str(resources.files("lrplan.example_data").joinpath(*parts)))


def multipower_example(size: str = "100M") -> tuple[RunSet, RunSet]:
    """Luo et al.'s curves of one model size, split into their train and test schedules."""
    runs = load_runs(example_path("multipower", "runs.csv"),
                     meta=example_path("multipower", "meta.csv"))
    prefix = f"{size}_"
    mine = [r for r in runs if r.name.startswith(prefix)]
    if not mine:
        sizes = sorted({r.name.split("_")[0] for r in runs})
        raise ValueError(f"no example runs of size {size!r}; sizes: {', '.join(sizes)}")
    train = tuple(r for r in mine if r.name[len(prefix):] in MULTIPOWER_TRAIN)
    test = tuple(r for r in mine if r.name[len(prefix):] not in MULTIPOWER_TRAIN)
    return (RunSet(runs=train, source=runs.source, excluded=()),
            RunSet(runs=test, source=runs.source, excluded=()))


def sweep_example() -> RunSet:
    """The bundled synthetic LR sweep (3 sizes x 2 horizons x 8 LRs; see examples/sweep/)."""
    return load_runs(example_path("sweep", "runs.csv"))


def olmo_ladder_example() -> RunSet:
    """AI2's OLMo ladder: cosine runs of 5 sizes (190M-3B) x 5 horizons (see examples/olmo-ladder/)."""
    return load_runs(example_path("olmo-ladder", "runs.csv"),
                     meta=example_path("olmo-ladder", "meta.csv"))
