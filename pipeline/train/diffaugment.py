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



def diff_augment(x: torch.Tensor, policy: tuple[str, ...], gen: torch.Generator, group: int = 1) -> torch.Tensor:
    """x (N x C x H x W, in [-1, 1]) with each policy applied, in order.

    `policy` comes from `pipeline.shared.config.parse_diffaugment`, which owns the allowed names.
    With `group` > 1 each run of `group` consecutive images shares one draw of every random
    parameter, so the differences inside a minibatch-std group are the images' own, not the
    augmentations' (with a draw per image, four copies of one face differ as much as four faces).
    """
    if x.shape[0] % group:
        group = 1
    for name in policy:
        x = _FNS[name](x, _Draws(gen, group))
    return x


class _Draws:
    """Random numbers for one augmentation: one draw per run of `group` images, repeated over the run."""

    def __init__(self, gen: torch.Generator, group: int) -> None:
        self.gen, self.group = gen, group

    def rand(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return self._spread(torch.rand(n // self.group, 1, 1, 1, generator=self.gen)).to(x.device, x.dtype)

    def randint(self, x: torch.Tensor, low: int, high: int, n: int) -> torch.Tensor:
        return self._spread(torch.randint(low, high, (n // self.group, 1, 1), generator=self.gen)).to(x.device)

    def _spread(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.group == 1 else t.repeat_interleave(self.group, dim=0)


def _color(x: torch.Tensor, draws: _Draws) -> torch.Tensor:
    n = x.shape[0]
    x = x + (draws.rand(x, n) - 0.5)                                                  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (draws.rand(x, n) * 2) + mean                                     # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (draws.rand(x, n) + 0.5) + mean                                # contrast


def _translation(x: torch.Tensor, draws: _Draws, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to `ratio` of its side, filling with zeros."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = draws.randint(x, -sh, sh + 1, n)
    tx = draws.randint(x, -sw, sw + 1, n)
    b, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                               torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy + ty + 1, 0, h + 1)
    gx = torch.clamp(gx + tx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1)[b, gy, gx].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, draws: _Draws, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of `ratio` of the side per image, at a random place."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = draws.randint(x, 0, h + (1 - ch % 2), n)
    ox = draws.randint(x, 0, w + (1 - cw % 2), n)
    b, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(ch, device=x.device),
                               torch.arange(cw, device=x.device), indexing="ij")
    gy = torch.clamp(gy + oy - ch // 2, 0, h - 1)
    gx = torch.clamp(gx + ox - cw // 2, 0, w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[b, gy, gx] = 0
    return x * mask.unsqueeze(1)


_FNS = {"color": _color, "translation": _translation, "cutout": _cutout}
