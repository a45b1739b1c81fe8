"""Training: runs, writes its outputs, and resumes to exactly the uninterrupted state."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from pipeline.shared.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pipeline.shared.config import TrainParams
from pipeline.train import dataset, ema, train

TINY = dict(batch_size=16, z_dim=8, g_channels=8, d_channels=8, embed_dim=4, threads=1, ema_start=2, grid_per_class=4,
            judge_steps=10)


def metrics_ok(path: Path) -> bool:
    return 0 <= json.loads(path.read_text())["judge_train_accuracy"] <= 1


def test_class_grouped_epoch_order_is_a_shuffle_of_one_class_runs() -> None:
    labels = torch.tensor([0] * 10 + [1] * 7 + [2] * 9)
    order = dataset.epoch_order(len(labels), 3, 1, labels, 4)
    runs = labels[order].view(-1, 4)
    assert (runs == runs[:, :1]).all() and len(set(order.tolist())) == len(order) == 8 + 4 + 8
    assert torch.equal(order, dataset.epoch_order(len(labels), 3, 1, labels, 4))
    assert not torch.equal(order, dataset.epoch_order(len(labels), 3, 2, labels, 4))


def params(tmp: Path, crop_dir: Path, name: str, **kw: object) -> TrainParams:
    return TrainParams(input=crop_dir, out=tmp / name, metrics=tmp / f"{name}.json", **{**TINY, **kw})


def test_train_writes_checkpoint_grids_losses_and_metrics(tmp_path: Path, crop_dir: Path) -> None:
    summary = train.run(params(tmp_path, crop_dir, "run", epochs=2))
    out = tmp_path / "run"
    from pipeline.shared.manifest import read_manifest

    counts = Counter(r.label_id for r in read_manifest(crop_dir / "manifest.jsonl") if r.split == "train")
    assert summary.finished and summary.steps == 2 * (sum(c // 4 * 4 for c in counts.values()) // 16)
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["judge"]["num_classes"] == 3 and metrics_ok(tmp_path / "run.json")
    assert state["classes"] == ["bar", "disc", "square"] and state["model_config"]["num_classes"] == 3
    assert (out / "samples" / "epoch-001.png").exists() and (out / "samples" / "epoch-002.png").exists()
    assert (out / "losses.png").stat().st_size > 1000
    lines = (out / "losses.csv").read_text().splitlines()
    assert lines[0] == "step,epoch,loss_d,loss_g,d_real,d_fake" and len(lines) == summary.steps + 1
    metrics = json.loads((tmp_path / "run.json").read_text())
    assert metrics["steps"] == summary.steps and metrics["classes"] == 3


def test_a_fractional_epoch_count_trains_that_share_of_an_epoch_and_draws_its_end(tmp_path: Path, crop_dir: Path) -> None:
    whole = train.run(params(tmp_path, crop_dir, "one", epochs=1, judge_steps=0))
    half = train.run(params(tmp_path, crop_dir, "half", epochs=1.5, judge_steps=0))
    spe = whole.steps
    assert half.finished and half.steps == round(1.5 * spe) and half.epochs == round(half.steps / spe, 2)
    # The last, partial epoch still gets its grid: the one that shows what training ended with.
    assert (tmp_path / "half" / "samples" / "epoch-002.png").exists()
    assert not (tmp_path / "one" / "samples" / "epoch-002.png").exists()
    metrics = json.loads((tmp_path / "half.json").read_text())
    assert metrics["epochs"] == half.epochs and metrics["steps"] == half.steps


@pytest.mark.parametrize("loss", ["bce", "lsgan", "hinge", "wgan-gp"])
def test_every_loss_trains_without_nans(tmp_path: Path, crop_dir: Path, loss: str) -> None:
    summary = train.run(params(tmp_path, crop_dir, loss, loss=loss, max_steps=3))
    assert summary.steps == 3
    for key in ("loss_d", "loss_g"):
        assert torch.isfinite(torch.tensor(summary.metrics[key]))


def test_resume_reaches_the_uninterrupted_state(tmp_path: Path, crop_dir: Path) -> None:
    full = params(tmp_path, crop_dir, "full", epochs=2, checkpoint_every=2)
    train.run(full)
    # "Interrupt" after 4 steps (mid-epoch, right after a checkpoint), then resume to the end.
    part = params(tmp_path, crop_dir, "part", epochs=2, checkpoint_every=2, max_steps=4)
    stopped = train.run(part)
    assert stopped.steps == 4 and not stopped.finished
    resumed = train.run(params(tmp_path, crop_dir, "part", epochs=2, checkpoint_every=2), resume=True)
    assert resumed.resumed_from == 4 and resumed.finished
    a, b = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert a["step"] == b["step"]
    for key in ("g", "d", "g_ema"):
        for name, tensor in a[key].items():
            assert torch.allclose(tensor.float(), b[key][name].float(), atol=1e-6), f"{key}.{name} differs after resume"
    assert torch.allclose(a["history"], b["history"], atol=1e-6)


def test_resume_without_checkpoint_and_bad_checkpoint(tmp_path: Path, crop_dir: Path) -> None:
    with pytest.raises(dataset.TrainError, match="no checkpoint"):
        train.run(params(tmp_path, crop_dir, "none"), resume=True)
    bad = tmp_path / "bad" / "checkpoint.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        train.run(params(tmp_path, crop_dir, "bad"), resume=True)


def test_checkpoint_refuses_pickled_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):  # noqa: D105 - runs on unpickling
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "x": Evil()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_the_same_state_saves_to_the_same_bytes(tmp_path: Path) -> None:
    """Reproducible outputs: two saves of one state (atomic temp files of random names) are identical files."""
    state = {"g": {"w": torch.arange(6.0).view(2, 3)}, "step": 7, "classes": ["a", "b"]}
    save_checkpoint(tmp_path / "a" / "checkpoint.pt", state)
    save_checkpoint(tmp_path / "b" / "checkpoint.pt", state)
    assert (tmp_path / "a" / "checkpoint.pt").read_bytes() == (tmp_path / "b" / "checkpoint.pt").read_bytes()
    assert torch.equal(load_checkpoint(tmp_path / "a" / "checkpoint.pt")["g"]["w"], state["g"]["w"])


def test_batch_larger_than_data_is_a_clear_error(tmp_path: Path, crop_dir: Path) -> None:
    with pytest.raises(dataset.TrainError, match="batch_size: 512 is larger than the 96"):
        train.run(params(tmp_path, crop_dir, "big", batch_size=512))


def test_ema_of_a_short_run_forgets_the_generator_it_started_from() -> None:
    """The weight the EMA still gives the G copied at ema_start, after 490 more steps (a small anime run)."""
    def weight_of_start(rampup: float | None, steps: int) -> float:
        w = 1.0
        for step in range(201, 201 + steps):
            w *= ema.ema_decay_at(step, 0.999, 200, rampup)
        return w

    assert ema.ema_decay_at(199, 0.999, 200, 0.25) == 0.0      # a copy before ema_start
    assert weight_of_start(None, 490) > 0.6                      # 0.999 from the start: mostly the old G
    assert weight_of_start(0.25, 490) < 0.01                     # half-life capped at 0.25 x 490 steps
    assert ema.ema_decay_at(200 + 10_000, 0.999, 200, 0.25) == 0.999   # long runs reach the set decay
    # a Fashion-MNIST run of 4,685 steps (81cabef's default): the ramp-up leaves the final EMA almost as it was
    assert weight_of_start(0.25, 4485) < 0.01 and weight_of_start(None, 4485) < 0.02


def test_diffaugment_is_differentiable_reproducible_and_changes_what_d_sees() -> None:
    from pipeline.shared.config import parse_diffaugment as parse_policy
    from pipeline.train.diffaugment import diff_augment

    x = torch.linspace(-1, 1, 2 * 3 * 16 * 16).view(2, 3, 16, 16).requires_grad_(True)
    policy = parse_policy("color, translation,cutout")
    out = diff_augment(x, policy, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    assert torch.equal(out, diff_augment(x, policy, torch.Generator().manual_seed(0)))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0          # G learns through the augmentation
    cut = diff_augment(torch.ones(4, 1, 16, 16), ("cutout",), torch.Generator().manual_seed(1))
    assert ((cut == 0).flatten(1).sum(1) > 0).all()               # a square zeroed in every image
    with pytest.raises(ValueError, match="'flip'.*color, translation, cutout"):
        parse_policy("color,flip")


def test_grouped_diffaugment_augments_a_group_alike_so_minibatch_std_still_sees_copies() -> None:
    from pipeline.train.diffaugment import diff_augment

    policy = ("color", "translation", "cutout")
    face = torch.rand(1, 3, 16, 16) * 2 - 1
    copies = face.repeat(8, 1, 1, 1)               # a collapsed G: one image for every z
    per_image = diff_augment(copies, policy, torch.Generator().manual_seed(0))
    grouped = diff_augment(copies, policy, torch.Generator().manual_seed(0), group=4).reshape(2, 4, 3, 16, 16)
    assert per_image.reshape(2, 4, -1).std(dim=1).mean() > 0.1      # per-image draws make copies look varied
    assert grouped.std(dim=1).max() == 0 and not torch.equal(grouped[0], grouped[1])   # one draw per group
    # group 1 draws exactly the numbers of the per-image policy (runs made before the option are unchanged)
    assert torch.equal(diff_augment(copies, policy, torch.Generator().manual_seed(0), group=1), per_image)


def test_diffaugment_trains_and_resumes(tmp_path: Path, crop_dir: Path) -> None:
    params = TrainParams(input=crop_dir, out=tmp_path / "run", metrics=tmp_path / "m.json", batch_size=8, z_dim=8,
                         g_channels=8, d_channels=8, embed_dim=4, max_steps=3, threads=1, judge_steps=0,
                         diffaugment="translation,cutout")
    train.run(params)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["params"]["diffaugment"] == "translation,cutout" and "augment" in state["rng"]
    summary = train.run(params.model_copy(update={"max_steps": 5}), resume=True)
    assert summary.steps == 5
    with pytest.raises(Exception, match="diffaugment"):
        TrainParams(diffaugment="colour")


def test_g_step_skips_d_weight_gradients_and_trains_exactly_as_before(crop_dir: Path) -> None:
    """G's step freezes D's weights (their gradients were thrown away): the same losses and weights, D trainable after."""
    from pipeline.shared.config import TrainParams
    from pipeline.train.dataset import load_training_data
    from pipeline.train.train import Trainer

    params = TrainParams(input=crop_dir, batch_size=16, z_dim=8, g_channels=8, d_channels=8, embed_dim=4, threads=1)
    data = load_training_data(crop_dir, torch.device("cpu"))
    frozen, plain = (Trainer(params, data, torch.device("cpu"), "fp32") for _ in range(2))
    plain.d.requires_grad_ = lambda requires_grad=True: plain.d   # type: ignore[method-assign]  # the old step
    seen: list[bool] = []
    frozen.d.register_forward_hook(lambda m, i, o: seen.append(any(p.requires_grad for p in m.parameters())))
    order = torch.arange(len(data.images))
    rows = [(frozen.train_step(order[i * 16:(i + 1) * 16]), plain.train_step(order[i * 16:(i + 1) * 16])) for i in range(3)]
    assert all(a == b for a, b in rows)
    for a, b in zip(frozen.g.state_dict().values(), plain.g.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(frozen.d.state_dict().values(), plain.d.state_dict().values()):
        assert torch.equal(a, b)
    assert seen == [True, True, False] * 3     # D on real, on fake (trainable), then in G's step (frozen)
    assert all(p.requires_grad for p in frozen.d.parameters())


@pytest.mark.parametrize("d_steps", [1, 2])
def test_g_step_reuses_the_fakes_d_just_judged_so_g_runs_once_less(crop_dir: Path, d_steps: int) -> None:
    """reuse_fake: G's step feeds D the very images of the last D step (the DCGAN example's way), so G runs
    d_steps forwards a step instead of d_steps + 1, and G still learns; reuse_fake false draws fresh ones."""
    from pipeline.shared.config import TrainParams
    from pipeline.train.dataset import load_training_data
    from pipeline.train.train import Trainer

    data = load_training_data(crop_dir, torch.device("cpu"))
    order = torch.arange(len(data.images))
    for reuse in (True, False):
        params = TrainParams(input=crop_dir, batch_size=16, z_dim=8, g_channels=8, d_channels=8, embed_dim=4, threads=1,
                             d_steps=d_steps, reuse_fake=reuse)
        trainer = Trainer(params, data, torch.device("cpu"), "fp32")
        g_calls: list[int] = []
        d_inputs: list[torch.Tensor] = []
        trainer.g.register_forward_hook(lambda m, i, o: g_calls.append(1))
        trainer.d.register_forward_hook(lambda m, i, o: d_inputs.append(i[0].detach().clone()))
        before = [p.detach().clone() for p in trainer.g.parameters()]
        rows = [trainer.train_step(order[i * 16:(i + 1) * 16]) for i in range(2)]
        assert all(torch.isfinite(torch.tensor(r)).all() for r in rows)
        assert len(g_calls) == 2 * (d_steps + (0 if reuse else 1))
        last_fake, g_step_input = d_inputs[2 * d_steps - 1], d_inputs[2 * d_steps]   # step 1: D's last fake, G's step
        assert torch.equal(last_fake, g_step_input) == reuse
        assert any(not torch.equal(a, b) for a, b in zip(before, trainer.g.parameters()))


def test_r1_flattens_d_at_the_real_images_and_runs_on_every_nth_step(crop_dir: Path) -> None:
    """`r1_gamma` penalises D's slope at real images (lazily, every `r1_every`-th step); 0 leaves the step as it was."""
    from pipeline.shared.data import to_float
    from pipeline.train.dataset import load_training_data
    from pipeline.train.train import Trainer

    params = TrainParams(input=crop_dir, batch_size=16, z_dim=8, g_channels=8, d_channels=8, embed_dim=4, threads=1,
                         lr_d=0.005)
    data = load_training_data(crop_dir, torch.device("cpu"))
    plain = Trainer(params, data, torch.device("cpu"), "fp32")
    r1 = Trainer(params.model_copy(update={"r1_gamma": 10.0, "r1_every": 2}), data, torch.device("cpu"), "fp32")
    order = torch.arange(len(data.images))
    plain.step = r1.step = 1                                 # not an R1 step: exactly the plain step
    assert plain.train_step(order[:16]) == r1.train_step(order[:16])
    plain.step = r1.step = 2                                 # an R1 step: the penalty is in D's loss
    a, b = plain.train_step(order[16:32]), r1.train_step(order[16:32])
    assert b[0] > a[0] and a[2:] == b[2:]                    # same logits (same D before the step), larger loss
    for step in range(3, 14):
        plain.step = r1.step = step
        batch = order[(step % 4) * 16:(step % 4 + 1) * 16]
        plain.train_step(batch), r1.train_step(batch)

    def slope(t: Trainer) -> float:
        x = to_float(data.images[:32]).requires_grad_(True)
        grad, = torch.autograd.grad(t.d(x, data.labels[:32]).sum(), x)
        return float(grad.square().sum(dim=(1, 2, 3)).mean())
    assert slope(r1) < 0.5 * slope(plain)


def test_lecam_penalises_only_logits_past_the_other_sides_anchor() -> None:
    from pipeline.train.losses import lecam_penalty

    anchors = torch.tensor([1.0, -1.0])   # D's mean logit on real, on fake
    assert lecam_penalty(torch.tensor([-2.0, -1.0]), torch.tensor([1.0, 2.0]), anchors).item() == 0
    assert lecam_penalty(torch.tensor([0.0]), torch.tensor([0.0]), anchors).item() == pytest.approx(2.0)


def test_lecam_anchors_are_checkpointed_so_a_resumed_run_matches(tmp_path: Path, crop_dir: Path) -> None:
    kw = dict(epochs=1, checkpoint_every=2, lecam_weight=0.5, judge_steps=0)
    train.run(params(tmp_path, crop_dir, "full", **kw))
    train.run(params(tmp_path, crop_dir, "part", **kw, max_steps=3))
    train.run(params(tmp_path, crop_dir, "part", **kw), resume=True)
    a, b = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert a["lecam"].abs().sum() > 0 and torch.equal(a["lecam"], b["lecam"])
    for name, tensor in a["g"].items():
        assert torch.allclose(tensor.float(), b["g"][name].float(), atol=1e-6), f"g.{name} differs after resume"


def test_d_recon_teaches_d_to_redraw_real_images_and_generate_loads_its_checkpoint(tmp_path: Path, crop_dir: Path) -> None:
    """`d_recon_weight` adds the decoders' L1 error on real images to D's loss: after a few steps they redraw
    the real images far better than at initialisation, and the checkpoint (decoders included) loads for scoring."""
    from pipeline.generate.sampling import Sampler
    from pipeline.shared.data import to_float
    from pipeline.train.dataset import load_training_data
    from pipeline.train.losses import recon_loss
    from pipeline.train.train import Trainer

    p = params(tmp_path, crop_dir, "recon", epochs=1, d_recon_weight=1.0, lr_d=0.002, judge_steps=0)
    data = load_training_data(crop_dir, torch.device("cpu"))
    trainer = Trainer(p, data, torch.device("cpu"), "fp32")
    order = torch.arange(len(data.images))
    x, y = to_float(data.images[:32]), data.labels[:32]

    def error() -> float:
        with torch.no_grad():
            return float(recon_loss(x, *trainer.d(x, y, 1)[1:], 1))
    before = error()
    for step in range(16):
        trainer.step = step
        trainer.train_step(order[(step % 4) * 16:(step % 4 + 1) * 16])
    assert error() < 0.6 * before
    train.run(p)
    sampler = Sampler.from_checkpoint(tmp_path / "recon" / "checkpoint.pt", torch.device("cpu"), "fp32")
    assert sampler.d.cfg.d_recon and hasattr(sampler.d, "decode_part")


def test_xflip_shows_d_a_random_half_of_the_real_batch_mirrored_the_same_way_on_a_rerun(crop_dir: Path) -> None:
    """train.xflip: D's real batch is the real images, some mirrored left-right (exactly), chosen anew each step
    from (seed, step), so a resumed run mirrors the same ones; off, D sees the images as they are."""
    from pipeline.shared.data import to_float
    from pipeline.train.dataset import load_training_data
    from pipeline.train.train import Trainer

    data = load_training_data(crop_dir, torch.device("cpu"))
    batch = torch.arange(32)
    real = to_float(data.images[batch])

    def d_real_input(xflip: bool, step: int) -> torch.Tensor:
        params = TrainParams(input=crop_dir, batch_size=32, z_dim=8, g_channels=8, d_channels=8, embed_dim=4,
                             threads=1, xflip=xflip)
        trainer = Trainer(params, data, torch.device("cpu"), "fp32")
        trainer.step = step
        seen: list[torch.Tensor] = []
        trainer.d.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().clone()))
        trainer.train_step(batch)
        return seen[0]                                   # D's first forward of a step: the real batch

    assert torch.equal(d_real_input(False, 5), real)
    masks = []
    for step in (5, 6):
        seen = d_real_input(True, step)
        mirrored = torch.tensor([torch.equal(s, r.flip(2)) for s, r in zip(seen, real)])
        kept = torch.tensor([torch.equal(s, r) for s, r in zip(seen, real)])
        assert (mirrored | kept).all() and 4 < int(mirrored.sum()) < 28   # every image one or the other, about half mirrored
        assert torch.equal(seen, d_real_input(True, step))                 # the same step mirrors the same images
        masks.append(mirrored & ~kept)
    assert not torch.equal(masks[0], masks[1])                             # another step, another half
