"""GAN losses on raw discriminator logits: bce (non-saturating), lsgan, hinge, wgan-gp."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from pipeline.train.models import quarter


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


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor, gamma: float) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): gamma/2 x E[|grad_x D(x)|^2] over real images `real` (which require grad).

    Penalising D's slope at the real data keeps D from growing steep around it, where an
    unregularised GAN oscillates instead of converging. Summed in float32 whatever the autocast dtype.
    """
    grad, = torch.autograd.grad(real_logits.float().sum(), real, create_graph=True)
    return 0.5 * gamma * grad.float().square().sum(dim=(1, 2, 3)).mean()


def lecam_penalty(real_logits: torch.Tensor, fake_logits: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """LeCam regulariser (Tseng et al. 2021, "Regularizing GANs under limited data").

    Pulls D's real logits no higher than the moving average of its fake ones and its fake
    logits no lower than that of its real ones (`anchors`: [mean real, mean fake], an EMA), so D
    cannot grow confident by memorising a small training set.
    """
    return F.relu(real_logits - anchors[1]).pow(2).mean() + F.relu(anchors[0] - fake_logits).pow(2).mean()


def recon_loss(real: torch.Tensor, whole: torch.Tensor, part_image: torch.Tensor, part: int) -> torch.Tensor:
    """FastGAN's reconstruction loss on D's decoders (L1 here; the paper's LPIPS needs downloaded weights):
    the whole real image and its quarter `part`, each area-resized to what its decoder draws."""
    real = real.detach().float()
    target_whole = F.interpolate(real, size=whole.shape[-2:], mode="area")
    target_part = F.interpolate(quarter(real, part), size=part_image.shape[-2:], mode="area")
    return (whole.float() - target_whole).abs().mean() + (part_image.float() - target_part).abs().mean()
