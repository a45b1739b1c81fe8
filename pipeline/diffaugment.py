"""DiffAugment (Zhao et al. 2020): the same random, differentiable augmentations on every image D sees.

With a few hundred to a few thousand images D memorises the real set and its logits run away
(the 64 px anime faces: D(real) +5, D(fake) -5 after 20 epochs). Augmenting real *and*
generated images before D, in D's step and in G's, keeps D from memorising while G still
learns the un-augmented distribution, because the augmentations are differentiable and
applied to both sides. The three policies are the paper's ("color,translation,cutout"),
after its reference code (github.com/mit-han-lab/data-efficient-gans, DiffAugment_pytorch.py),
with every random number drawn from a given generator so a run stays reproducible.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F



def diff_augment(x: torch.Tensor, policy: tuple[str, ...], gen: torch.Generator) -> torch.Tensor:
    """x (N x C x H x W, in [-1, 1]) with each policy applied, per image, in order.

    `policy` comes from `pipeline.config.parse_diffaugment`, which owns the allowed names.
    """
    for name in policy:
        x = _FNS[name](x, gen)
    return x


def _rand(gen: torch.Generator, x: torch.Tensor, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=gen).to(x.device, x.dtype)


def _color(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    x = x + (_rand(gen, x, n, 1, 1, 1) - 0.5)                                        # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(gen, x, n, 1, 1, 1) * 2) + mean                           # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(gen, x, n, 1, 1, 1) + 0.5) + mean                      # contrast


def _translation(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to `ratio` of its side, filling with zeros."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), generator=gen).to(x.device)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), generator=gen).to(x.device)
    b, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                               torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy + ty + 1, 0, h + 1)
    gx = torch.clamp(gx + tx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1)[b, gy, gx].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of `ratio` of the side per image, at a random place."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=gen).to(x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=gen).to(x.device)
    b, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(ch, device=x.device),
                               torch.arange(cw, device=x.device), indexing="ij")
    gy = torch.clamp(gy + oy - ch // 2, 0, h - 1)
    gx = torch.clamp(gx + ox - cw // 2, 0, w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[b, gy, gx] = 0
    return x * mask.unsqueeze(1)


_FNS = {"color": _color, "translation": _translation, "cutout": _cutout}
