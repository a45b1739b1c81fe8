"""Class-conditional DCGAN: the architecture only, sized from the image side (32, 64, 96, 128).

G is conditioned through class-conditional batch norm (a per-class gain and bias after
each normalisation), D through a projection head (Miyato & Koyama 2018). With one class or
none both reduce to the plain DCGAN.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils import spectral_norm as _sn

from pipeline.shared.config import SUPPORTED_SIZES


@dataclass(frozen=True)
class ModelConfig:
    size: int = 32
    channels: int = 1
    num_classes: int = 0          # 0 = unconditional
    z_dim: int = 64
    g_channels: int = 64
    d_channels: int = 64
    embed_dim: int = 32
    d_norm: str = "spectral"      # spectral | batch | none
    mbstd_group: int = 4          # minibatch-std group size in D (0 = off)
    g_upsample: str = "transposed"  # transposed (4x4 stride-2 transposed convolutions) | resize (nearest x2, then 3x3)
    g_skip: bool = False          # StyleGAN2's skip output: an RGB image at every side, upsampled and summed
    g_z_norm: bool = False        # BigGAN: z (besides the class) sets every batch norm's gain and bias
    g_sle: bool = False           # FastGAN: skip-layer excitation, each side's channels gated by the side 4x smaller
    d_recon: bool = False         # FastGAN: decoders on D's features redraw the real image (self-supervised)

    def __post_init__(self) -> None:
        if self.size not in SUPPORTED_SIZES:
            raise ValueError(f"size {self.size} is not one of {SUPPORTED_SIZES}")
        if self.d_norm not in ("spectral", "batch", "none"):
            raise ValueError(f"d_norm {self.d_norm!r} is not one of spectral, batch, none")
        if self.g_upsample not in ("transposed", "resize"):
            raise ValueError(f"g_upsample {self.g_upsample!r} is not one of transposed, resize")

    @property
    def base(self) -> int:
        """Side of the first feature map: 96 = 3 * 2^5, the rest are 4 * 2^k."""
        return 3 if self.size == 96 else 4

    @property
    def n_up(self) -> int:
        return (self.size // self.base).bit_length() - 1

    def to_dict(self) -> dict:
        return asdict(self)


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose batch statistics can span all torchrun ranks (also on CPU/Gloo).

    torch's SyncBatchNorm only runs on GPUs; this computes the global mean and variance
    with a differentiable all-reduce, so an N-rank run matches a single-process run with the
    same global batch. Off (plain BatchNorm2d) unless `sync` is set and a group exists.
    """

    sync = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.sync and self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        # Sums in float32 whatever the autocast dtype: in bf16, E[x^2] - E[x]^2 cancels to
        # noise (or below zero) as soon as the mean is large against the spread.
        dtype, x = x.dtype, x.float()
        c = x.shape[1]
        count = torch.tensor([x.numel() / c], device=x.device, dtype=torch.float32)
        stats = all_reduce(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0.0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean.detach(), m)
            self.running_var.lerp_(var.detach() * n / (n - 1), m)
        out = (x - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out.to(dtype)


def sync_batchnorm(module: nn.Module, on: bool = True) -> nn.Module:
    """Make every batch statistic in `module` (BatchNorm2d, MinibatchStd) span all ranks."""
    for m in module.modules():
        if isinstance(m, (BatchNorm2d, MinibatchStd)):
            m.sync = on
    return module


class CondBatchNorm2d(nn.Module):
    """BatchNorm whose gain and bias come from the class label (plain affine BN without classes), and
    with `z_dim` also from the latent (BigGAN's conditional batch norm on [class, z])."""

    def __init__(self, channels: int, num_classes: int, z_dim: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.bn = BatchNorm2d(channels, affine=num_classes == 0)
        if num_classes:
            self.gain = nn.Embedding(num_classes, channels)
            self.bias = nn.Embedding(num_classes, channels)
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)
        # One linear map of z per layer: every position of a feature map gets the same z-set gain
        # and bias, so a global property of the image (its background colour) is set once.
        self.z_gain = nn.Linear(z_dim, channels, bias=False) if z_dim else None
        self.z_bias = nn.Linear(z_dim, channels, bias=False) if z_dim else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None, z: torch.Tensor | None = None) -> torch.Tensor:
        x = self.bn(x)
        if self.num_classes:
            x = x * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]
        if self.z_gain is not None and z is not None:
            x = x * (1 + self.z_gain(z))[:, :, None, None] + self.z_bias(z)[:, :, None, None]
        return x


def upsample(kind: str, cin: int, cout: int, bias: bool) -> nn.Module:
    """Double the side: DCGAN's 4x4 stride-2 transposed convolution, or nearest-neighbour x2 and a 3x3
    convolution (Odena et al. 2016), which cannot draw the transposed kernel's checkerboard of uneven overlaps."""
    if kind == "resize":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=bias))
    return nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias)


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = [cfg.g_channels * 2 ** (cfg.n_up - 1 - i) for i in range(cfg.n_up)]
        in_dim = cfg.z_dim + (cfg.embed_dim if cfg.num_classes else 0)
        self.embed = nn.Embedding(cfg.num_classes, cfg.embed_dim) if cfg.num_classes else None
        self.project = nn.Linear(in_dim, ch[0] * cfg.base * cfg.base, bias=False)
        self.norms = nn.ModuleList([CondBatchNorm2d(c, cfg.num_classes, cfg.z_dim if cfg.g_z_norm else 0) for c in ch])
        self.ups = nn.ModuleList([upsample(cfg.g_upsample, ch[i], ch[i + 1], bias=False) for i in range(cfg.n_up - 1)])
        self.to_image = upsample(cfg.g_upsample, ch[-1], cfg.channels, bias=True)
        # Skip output (Karras et al. 2020, StyleGAN2): each side also draws an RGB image with a 1x1
        # convolution, and the sides' images are upsampled (bilinear) and summed, so the coarse
        # layers set the flat colour fields and the fine ones only add to them.
        self.to_rgb = nn.ModuleList([nn.Conv2d(c, cfg.channels, 1) for c in ch]) if cfg.g_skip else None
        # Skip-layer excitation (Liu et al. 2021, FastGAN): a side's feature map, pooled to 4x4, sets a
        # gain per channel of the side two doublings larger, so the coarse layout reaches the fine
        # layers without passing through every layer between (a short gradient path for small data).
        self.sle = nn.ModuleList([_excite(ch[i], ch[i + 2]) for i in range(cfg.n_up - 2)]) if cfg.g_sle else None

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        y = y if self.cfg.num_classes else None
        h = z if self.embed is None else torch.cat([z, self.embed(y)], dim=1)
        h = self.project(h).view(z.shape[0], -1, self.cfg.base, self.cfg.base)
        zn = z if self.cfg.g_z_norm else None
        h = torch.relu(self.norms[0](h, y, zn))
        rgb = self.to_rgb[0](h) if self.to_rgb is not None else None
        sides = [h]
        for i, (up, norm) in enumerate(zip(self.ups, self.norms[1:]), start=1):
            h = torch.relu(norm(up(h), y, zn))
            if self.sle is not None and i >= 2:
                h = h * self.sle[i - 2](sides[i - 2])
            sides.append(h)
            if rgb is not None:
                rgb = _double(rgb) + self.to_rgb[i](h)
        out = self.to_image(h)
        return torch.tanh(out if rgb is None else out + _double(rgb))


def _excite(cin: int, cout: int) -> nn.Sequential:
    """FastGAN's skip-layer excitation: pool to 4x4, a 4x4 convolution to one value per channel, a 1x1, a sigmoid gate."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Conv2d(cin, cout, 4, 1, 0, bias=False), nn.SiLU(),
                         nn.Conv2d(cout, cout, 1, 1, 0, bias=False), nn.Sigmoid())


def _double(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class MinibatchStd(nn.Module):
    """Append the mean feature std over groups of `group` consecutive samples as one channel.

    ProGAN's remedy for mode collapse: D sees how varied a batch is, so G cannot win by
    drawing the same image for every z. Groups are consecutive samples so that torchrun's
    contiguous per-rank slices form the same groups as one process does.
    """

    sync = False

    def __init__(self, group: int) -> None:
        super().__init__()
        self.group = group
        # In eval mode the feature is this running average, so a sample's score depends on
        # the sample alone, not on the batch it is scored in (ranking needs that).
        self.register_buffer("running_std", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if not self.training:
            return torch.cat([x, self.running_std.to(x.dtype).expand(n, 1, h, w)], dim=1)
        g = min(self.group, n)
        while n % g:
            g -= 1
        y = x.float().view(n // g, g, c, h, w)
        # Written out rather than Tensor.var(dim=1): var over a middle dim runs a slow strided
        # kernel on CPU (4x this in forward + backward, 8% of a training step at 32 px).
        std = (y - y.mean(dim=1, keepdim=True)).square().mean(dim=1).add(1e-8).sqrt()
        std = std.mean(dim=(1, 2, 3))                            # one value per group
        self._track(std.detach())
        std = std.to(x.dtype).repeat_interleave(g).view(n, 1, 1, 1).expand(n, 1, h, w)
        return torch.cat([x, std], dim=1)

    momentum: float | None = 0.1   # None: a cumulative average (re-estimating statistics, like BatchNorm2d)
    _tracked = 0

    @torch.no_grad()
    def _track(self, std: torch.Tensor) -> None:
        mean = std.mean()
        import torch.distributed as dist

        if self.sync and dist.is_available() and dist.is_initialized():
            dist.all_reduce(mean)
            mean /= dist.get_world_size()
        self._tracked += 1
        self.running_std.lerp_(mean, self.momentum if self.momentum is not None else 1.0 / self._tracked)


class Discriminator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        wrap = _sn if cfg.d_norm == "spectral" else (lambda m: m)
        ch = [cfg.d_channels * 2 ** i for i in range(cfg.n_up)]
        layers: list[nn.Module] = [wrap(nn.Conv2d(cfg.channels, ch[0], 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
        for i in range(cfg.n_up - 1):
            layers.append(wrap(nn.Conv2d(ch[i], ch[i + 1], 4, 2, 1, bias=cfg.d_norm != "batch")))
            if cfg.d_norm == "batch":
                layers.append(BatchNorm2d(ch[i + 1]))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        if cfg.mbstd_group:
            layers += [MinibatchStd(cfg.mbstd_group), wrap(nn.Conv2d(ch[-1] + 1, ch[-1], 3, 1, 1)),
                       nn.LeakyReLU(0.2, inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = wrap(nn.Linear(ch[-1], 1))
        self.project = wrap(nn.Embedding(cfg.num_classes, ch[-1])) if cfg.num_classes else None
        # FastGAN's self-supervised D (Liu et al. 2021): small decoders redraw the whole image from
        # the last feature map and a quarter of it from the one before, so D's features must keep
        # what the image looks like, not only what tells real from fake on a few thousand images.
        if cfg.d_recon:
            self.decode_whole = _decoder(ch[-1], cfg.channels, cfg.d_channels)
            self.decode_part = _decoder(ch[-2], cfg.channels, cfg.d_channels)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, part: int | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One logit per image: higher means 'more like real data of class y'. With `part` (d_recon
        only), also the decoders' images: (logits, whole image, quarter `part`)."""
        if part is not None:
            return self._forward_recon(x, y, part)
        return self._logits(self.features(x), y)

    def _logits(self, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = h.sum(dim=(2, 3))
        out = self.head(h).squeeze(1)
        if self.project is not None:
            out = out + (self.project(y) * h).sum(dim=1)
        return out

    def _forward_recon(self, x: torch.Tensor, y: torch.Tensor | None, part: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits, the whole image and its quarter `part` (0-3, row-major) redrawn: 32 x 32 each (24 x 24 at 96 px)."""
        acts = []   # the downsamplings' outputs: the last is 4x4 (3x3 at 96 px), the one before twice that
        h = x
        for layer in self.features:
            h = layer(h)
            if isinstance(layer, nn.LeakyReLU) and len(acts) < self.cfg.n_up:
                acts.append(h)
        last, before = acts[-1], acts[-2]
        return self._logits(h, y), self.decode_whole(last), self.decode_part(quarter(before, part))


def quarter(x: torch.Tensor, part: int) -> torch.Tensor:
    """Quarter `part` of an image batch, row-major: 0 top left, 1 top right, 2 bottom left, 3 bottom right."""
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    r, c = divmod(part, 2)
    return x[..., r * h:(r + 1) * h, c * w:(c + 1) * w]


def _decoder(cin: int, cout: int, width: int) -> nn.Sequential:
    """Three doublings of a 4x4 (or 3x3) feature map to an image: nearest x2, 3x3 conv, batch norm, GLU (FastGAN's up-block)."""
    widths = [cin, width * 4, width * 2, width]
    layers: list[nn.Module] = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(a, 2 * b, 3, 1, 1, bias=False),
                   BatchNorm2d(2 * b), nn.GLU(dim=1)]
    return nn.Sequential(*layers, nn.Conv2d(width, cout, 3, 1, 1), nn.Tanh())


@torch.no_grad()
def generated_statistics(d: Discriminator, g: Generator, device: torch.device, latent_scale: float = 1.0,
                         batches: int = 16, batch_size: int = 256, seed: int = 54321) -> None:
    """Re-estimate D's batch statistics on generated batches, then leave D in eval mode.

    In training D normalised each fake-only batch with that batch's statistics; its running
    averages mix real and fake batches, a state it never saw. Scoring with statistics of
    generated batches judges a candidate the way training did, while each score still depends
    on the candidate alone (eval mode), never on the batch it is scored in.
    """
    cfg = g.cfg
    gen = torch.Generator().manual_seed(seed)
    stat_layers = [m for m in d.modules() if isinstance(m, (nn.BatchNorm2d, MinibatchStd))]
    for m in stat_layers:
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
        m._tracked = 0
        m.momentum = None
    d.train()
    for _ in range(batches):
        z = (torch.randn(batch_size, cfg.z_dim, generator=gen) * latent_scale).to(device)
        y = torch.randint(max(cfg.num_classes, 1), (batch_size,), generator=gen).to(device)
        d(g(z, y), y)
    for m in stat_layers:
        m.momentum = 0.1
    d.eval()


@torch.no_grad()
def standing_stats(g: Generator, cfg: ModelConfig, device: torch.device, batches: int = 16, batch_size: int = 256) -> None:
    """Re-estimate G's batch-norm statistics from its own samples (BigGAN's 'standing stats').

    Sampling runs G in eval mode, so each image depends only on its own seed; the running
    statistics copied from the trained G do not match the EMA weights, these do.
    """
    gen = torch.Generator().manual_seed(12345)
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
    g.train()
    for _ in range(batches):
        z = torch.randn(batch_size, cfg.z_dim, generator=gen).to(device)
        y = torch.randint(max(cfg.num_classes, 1), (batch_size,), generator=gen).to(device)
        g(z, y)
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    g.eval()


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: N(0, 0.02) for convs and linears, N(1, 0.02) for BN gains."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = getattr(m, "weight_orig", m.weight)
            nn.init.normal_(weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    # D's class projection like its other weights: PyTorch's N(0, 1) default made the
    # projection term dominate the logit (|D| ~ 30 at 32 px, ~60 at 64 px). G's label
    # embeddings and conditional-BN gains keep their own init (CondBatchNorm2d).
    if isinstance(module, Discriminator) and module.project is not None:
        weight = getattr(module.project, "weight_orig", module.project.weight)
        nn.init.normal_(weight, 0.0, 0.02)


def build(cfg: ModelConfig) -> tuple[Generator, Discriminator]:
    g, d = Generator(cfg), Discriminator(cfg)
    init_weights(g)
    init_weights(d)
    return g, d
