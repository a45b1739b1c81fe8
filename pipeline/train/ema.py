"""G's moving average (EMA G), the copy every sample is drawn from."""
from __future__ import annotations

import torch
from torch import nn


def ema_decay_at(step: int, decay: float, start: int, rampup: float | None) -> float:
    """The EMA decay for `step`: 0 (a copy) before `start`, then `decay`, its half-life capped at
    `rampup` x the steps since `start`.

    Without the cap, 0.999 (a 693-step half-life) kept a 690-step run's EMA at 61% G-at-step-200:
    fine for the 3,280 steps of the Fashion-MNIST default, wrong for a few hundred anime faces.
    """
    if step < start:
        return 0.0
    if rampup is None:
        return decay
    return min(decay, 0.5 ** (1.0 / (rampup * (step - start + 1))))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)
