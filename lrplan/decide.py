"""Decisions at a target run: the recommended peak LR, its band, the cost of other LRs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .predict import CurvePrediction

__all__ = ["PlanResult", "Target"]


@dataclass(frozen=True)
class Target:
    """The run being planned: size, tokens, batch, schedule."""

    params: float
    tokens: float
    tokens_per_step: float
    schedule: str
    steps: int
    warmup_steps: int


@dataclass(frozen=True)
class PlanResult:
    """Everything a plan decided, with the draws behind it (draws share one index ``s``).

    ``loss_grid[s, g]`` is draw s of the target's final loss at peak LR ``lr_grid[g]``;
    ``lr_star[s]`` the optimal LR; ``final_loss[s]`` the final loss at ``recommended_lr``;
    ``compare`` maps a user-named LR to its draws of excess loss over the recommended LR;
    ``curves`` maps a schedule spec to the target's predicted curve at ``recommended_lr``.
    """

    target: Target
    fit: object
    lr_grid: np.ndarray
    loss_grid: np.ndarray
    recommended_lr: float
    lr_star: np.ndarray
    band: tuple[float, float]
    final_loss: np.ndarray
    compare: dict[float, np.ndarray] = field(default_factory=dict)
    curves: dict[str, CurvePrediction] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
