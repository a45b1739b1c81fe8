"""GAN losses on raw discriminator logits: bce (non-saturating), lsgan, hinge, wgan-gp."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss (without the gradient penalty, which needs D itself)."""
    if kind == "bce":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "lsgan":
        return 0.5 * ((real - 1).pow(2).mean() + fake.pow(2).mean())
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if kind == "wgan-gp":
        return fake.mean() - real.mean()
    raise ValueError(f"loss {kind!r} is not one of bce, lsgan, hinge, wgan-gp")


def g_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    if kind == "bce":
        return F.softplus(-fake).mean()
    if kind == "lsgan":
        return 0.5 * (fake - 1).pow(2).mean()
    if kind in ("hinge", "wgan-gp"):
        return -fake.mean()
    raise ValueError(f"loss {kind!r} is not one of bce, lsgan, hinge, wgan-gp")


def gradient_penalty(d: Callable[..., torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     y: torch.Tensor | None, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): (||grad D(x_hat)|| - 1)^2 on interpolates.

    `alpha` (N x 1 x 1 x 1 in [0, 1]) is passed in so the caller decides where it is drawn.
    """
    if alpha is None:
        alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = d(mixed, y)
    (grad,) = torch.autograd.grad(out.sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def mode_seeking(fake: torch.Tensor, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """MSGAN's regulariser (Mao et al. 2019): 1 / (mean |G(z1) - G(z2)| / mean |z1 - z2|).

    Over consecutive pairs of the batch (0-1, 2-3, ...) that share a class; small when G's
    output moves with z, large when G ignores it. Zero when no pair shares a class.
    """
    n = fake.shape[0] // 2 * 2
    same = torch.ones(n // 2, dtype=torch.bool, device=fake.device) if y is None else y[0:n:2] == y[1:n:2]
    if not bool(same.any()):
        return fake.new_zeros(())
    images = (fake[0:n:2] - fake[1:n:2]).abs().flatten(1).mean(dim=1)[same].mean()
    latents = (z[0:n:2] - z[1:n:2]).abs().mean(dim=1)[same].mean()
    return 1.0 / (images / latents + 1e-5)
