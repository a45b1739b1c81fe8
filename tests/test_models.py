"""Architectures for every size, and every loss."""
from __future__ import annotations

import pytest
import torch

from pipeline.train.losses import d_loss, g_loss, gradient_penalty
from pipeline.train.models import ModelConfig, build


@pytest.mark.parametrize("size", [32, 64, 96, 128])
@pytest.mark.parametrize("num_classes,channels,d_norm,up", [(0, 3, "spectral", "transposed"), (5, 1, "batch", "transposed"),
                                                            (5, 3, "none", "transposed"), (5, 3, "batch", "resize")])
def test_shapes(size: int, num_classes: int, channels: int, d_norm: str, up: str) -> None:
    cfg = ModelConfig(size=size, channels=channels, num_classes=num_classes, z_dim=16, g_channels=8, d_channels=8,
                      d_norm=d_norm, g_upsample=up)
    g, d = build(cfg)
    z = torch.randn(3, 16)
    y = torch.tensor([0, 1, 2]) if num_classes else None
    x = g(z, y)
    assert x.shape == (3, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1
    assert d(x, y).shape == (3,)


def test_labels_change_the_output() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(size=32, channels=1, num_classes=4, z_dim=8, g_channels=8, d_channels=8)
    g, d = build(cfg)
    with torch.no_grad():
        for m in g.modules():  # give the class gains some spread, as training would
            if hasattr(m, "gain"):
                m.gain.weight.normal_(1, 0.5)
    g.eval()
    z = torch.randn(2, 8)
    a, b = g(z, torch.tensor([0, 0])), g(z, torch.tensor([1, 1]))
    assert not torch.allclose(a, b)
    x = torch.randn(2, 1, 32, 32)
    assert not torch.allclose(d(x, torch.tensor([0, 0])), d(x, torch.tensor([3, 3])))


def test_bad_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="size 48"):
        ModelConfig(size=48)
    with pytest.raises(ValueError, match="g_upsample 'bilinear' is not one of transposed, resize"):
        ModelConfig(g_upsample="bilinear")


def test_resize_g_upsamples_by_nearest_neighbour_then_convolves() -> None:
    """resize: every layer that doubles the side is nearest x2 + a 3x3 convolution, and no transposed kernel is left;
    checkpoints written before the setting existed (no g_upsample in their model_config) build the transposed G."""
    cfg = ModelConfig(size=64, channels=3, num_classes=3, z_dim=8, g_channels=8, d_channels=8, g_upsample="resize")
    g, _ = build(cfg)
    ups = [m for m in g.modules() if isinstance(m, torch.nn.Upsample)]
    convs = [m for m in g.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(ups) == len(convs) == cfg.n_up and all(m.kernel_size == (3, 3) for m in convs)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in g.modules())
    old = {k: v for k, v in cfg.to_dict().items() if k != "g_upsample"}
    g_old, _ = build(ModelConfig(**old))
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in g_old.modules()) == cfg.n_up


def test_skip_g_sums_an_rgb_image_from_every_side() -> None:
    """g_skip: each side's 1x1 RGB convolution reaches the output (zeroing the coarsest one changes the
    image, smoothly: a 4x4 image upsampled bilinearly), and checkpoints without the key build the plain G."""
    torch.manual_seed(0)
    cfg = ModelConfig(size=64, channels=3, num_classes=3, z_dim=8, g_channels=8, d_channels=8, g_skip=True)
    g, _ = build(cfg)
    assert [m.out_channels for m in g.to_rgb] == [3] * cfg.n_up
    g.eval()
    z, y = torch.randn(2, 8), torch.tensor([0, 2])
    with torch.no_grad():
        before = g(z, y)
        g.to_rgb[0].weight.zero_()
        g.to_rgb[0].bias.fill_(0.5)   # a flat colour at 4 x 4 becomes a flat colour at 64 x 64
        after = g(z, y)
    shift = torch.atanh(after.clamp(-0.999, 0.999)) - torch.atanh(before.clamp(-0.999, 0.999))
    assert shift.abs().mean() > 0.1
    assert shift[..., 8:-8, 8:-8].std() < shift.abs().mean()   # one flat offset, not a pattern
    old = {k: v for k, v in cfg.to_dict().items() if k != "g_skip"}
    assert build(ModelConfig(**old))[0].to_rgb is None


def test_z_norm_sets_batch_norm_gains_from_z_the_same_at_every_position() -> None:
    """g_z_norm: z reaches every batch norm as a per-channel gain and bias (one value for the whole map),
    and checkpoints without the key build the G without it."""
    torch.manual_seed(0)
    cfg = ModelConfig(size=32, channels=1, num_classes=3, z_dim=8, g_channels=8, d_channels=8, g_z_norm=True)
    g, _ = build(cfg)
    norm = g.norms[1]
    assert norm.z_gain.in_features == norm.z_bias.in_features == 8
    x, y = torch.randn(2, norm.bn.num_features, 4, 4), torch.tensor([1, 1])
    norm.eval()
    z = torch.randn(2, 8)
    with torch.no_grad():
        plain, modulated = norm(x, y), norm(x, y, z)
        norm.z_bias.weight.zero_()
        gain_only = norm(x, y, z)
    ratio = gain_only / plain   # the same per-channel factor at all 16 positions
    assert not torch.allclose(plain, modulated)
    assert torch.allclose(ratio, ratio[..., :1, :1].expand_as(ratio), rtol=1e-4, atol=1e-5)
    assert torch.allclose(ratio[..., 0, 0], 1 + norm.z_gain(z), atol=1e-5)
    old = {k: v for k, v in cfg.to_dict().items() if k != "g_z_norm"}
    assert build(ModelConfig(**old))[0].norms[0].z_gain is None


@pytest.mark.parametrize("kind", ["bce", "lsgan", "hinge", "wgan-gp"])
def test_losses_prefer_the_right_answer(kind: str) -> None:
    good_real, good_fake = torch.full((8,), 3.0), torch.full((8,), -3.0)
    assert d_loss(kind, good_real, good_fake) < d_loss(kind, good_fake, good_real)
    assert g_loss(kind, good_real) < g_loss(kind, good_fake)
    logits = torch.zeros(8, requires_grad=True)
    g_loss(kind, logits).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_unknown_loss() -> None:
    with pytest.raises(ValueError, match="not one of"):
        d_loss("l1", torch.zeros(1), torch.zeros(1))


def test_gradient_penalty_is_zero_for_unit_gradient_critic() -> None:
    # D(x) = sum(x) / sqrt(numel) has gradient norm exactly 1 everywhere.
    def critic(x: torch.Tensor, y: object) -> torch.Tensor:
        return x.flatten(1).sum(1) / x[0].numel() ** 0.5

    real, fake = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    assert gradient_penalty(critic, real, fake, None).item() == pytest.approx(0.0, abs=1e-8)
    assert gradient_penalty(lambda x, y: 3 * critic(x, y), real, fake, None).item() == pytest.approx(4.0, rel=1e-5)


def test_sle_gates_the_fine_sides_channels_from_a_coarse_side() -> None:
    """g_sle: each gate is one value per channel (pooled from a side two doublings smaller) in (0, 1), and
    it reaches the output; checkpoints without the key build the G without gates."""
    torch.manual_seed(0)
    cfg = ModelConfig(size=64, channels=3, num_classes=3, z_dim=8, g_channels=8, d_channels=8, g_sle=True)
    g, _ = build(cfg)
    assert len(g.sle) == cfg.n_up - 2
    z, y = torch.randn(4, 8), torch.tensor([0, 2, 1, 1])   # train mode: batch statistics, as in training
    gate = g.sle[0](torch.randn(2, g.ups[0].in_channels, 4, 4))
    assert gate.shape == (2, g.ups[1].out_channels, 1, 1) and bool(((gate > 0) & (gate < 1)).all())
    with torch.no_grad():
        before = g(z, y)
        g.sle[-1][-2].weight.fill_(-10.0)   # the last side's gates pushed far from the ~0.5 they start at
        after = g(z, y)
    assert (after - before).abs().mean() > 0.01
    old = {k: v for k, v in cfg.to_dict().items() if k != "g_sle"}
    assert build(ModelConfig(**old))[0].sle is None


@pytest.mark.parametrize("size", [32, 64, 96])
def test_d_recon_decoders_redraw_the_image_and_a_quarter_of_it(size: int) -> None:
    """d_recon: D's decoders draw the whole image and quarter `part` from its features, the logits are those
    of the plain forward, and the L1 reconstruction loss trains the decoders and D's features alike."""
    from pipeline.train.losses import recon_loss
    from pipeline.train.models import quarter

    torch.manual_seed(0)
    cfg = ModelConfig(size=size, channels=3, num_classes=3, z_dim=8, g_channels=8, d_channels=8, d_norm="batch",
                      d_recon=True)
    _, d = build(cfg)
    x, y = torch.rand(8, 3, size, size) * 2 - 1, torch.randint(3, (8,))
    logits, whole, part_image = d(x, y, 3)
    assert torch.allclose(logits, d(x, y), atol=1e-5)
    assert whole.shape == part_image.shape and whole.shape[1] == 3 and whole.shape[-1] >= size // 4
    assert torch.equal(quarter(x, 3), x[..., size // 2:, size // 2:])
    recon_loss(x, whole, part_image, 3).backward()
    assert d.decode_whole[1].weight.grad.abs().sum() > 0 and d.decode_part[1].weight.grad.abs().sum() > 0
    assert d.features[0].weight.grad.abs().sum() > 0
    assert d.head.weight.grad is None
