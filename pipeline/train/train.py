"""The train stage: a (conditional) DCGAN over the crop stage's shards, with EMA, checkpoints, grids and the label judge.

The whole training split lives in memory as one uint8 tensor on the device (dataset.py) and is
normalised per batch, so no DataLoader decodes images each epoch. Every random choice
(weights, data order, noise) comes from the seed, and the checkpoint holds all the state a
resumed run needs to continue exactly as an uninterrupted one would.
"""
from __future__ import annotations

import contextlib
import csv
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from pipeline import __version__
from pipeline.shared.checkpoint import load_checkpoint, save_checkpoint
from pipeline.shared.config import TrainParams, parse_diffaugment, to_jsonable
from pipeline.shared.data import to_float, to_uint8
from pipeline.shared.device import autocast, resolve_device, resolve_precision, set_threads
from pipeline.shared.distributed import Dist, from_env, shutdown
from pipeline.shared.errors import PipelineError
from pipeline.shared.io import atomic_path, image_grid, save_png, write_json
from pipeline.shared.ownership import adopt_unmarked, claim_out, drop_unrewritten
from pipeline.shared.progress import SILENT, Progress
from pipeline.shared.variety import COLLAPSE_RATIO, ClassVariety, class_variety, collapsed
from pipeline.train.dataset import TrainError, TrainingData, epoch_order, label_weights, load_training_data
from pipeline.train.diffaugment import diff_augment
from pipeline.train.ema import ema_decay_at, update_ema
from pipeline.train.losses import d_loss, g_loss, gradient_penalty, lecam_penalty, r1_penalty, recon_loss
from pipeline.train.models import Generator, ModelConfig, build, standing_stats, sync_batchnorm
from pipeline.train.plots import plot_losses

log = logging.getLogger(__name__)
HISTORY_COLUMNS = ("step", "epoch", "loss_d", "loss_g", "d_real", "d_fake")
CHECKPOINT_NAME = "checkpoint.pt"
GRID_STAT_BATCHES = 4   # x 256 samples: batch-norm statistics for the epoch grids (generate uses 16)
LECAM_DECAY = 0.99   # the LeCam anchors' EMA, as in the paper's code
# Params that --resume may change: how long to run, where to write, how fast to compute.
# Every other train param shapes the run itself (a changed batch size skips or repeats data).
RESUMABLE_CHANGES = frozenset({"epochs", "max_steps", "checkpoint_every", "device", "precision", "threads", "compile",
                               "grid_per_class", "input", "out", "metrics", "judge_steps", "judge_batch_size"})


class Interrupted(PipelineError):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint."""

    exit_code = 130


@dataclass
class TrainSummary:
    out: Path
    steps: int = 0
    epochs: float = 0.0
    images_seen: int = 0
    seconds: float = 0.0
    resumed_from: int | None = None
    finished: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> dict[str, Any]:
        return {"output": str(self.out), "steps": self.steps, "epochs": self.epochs,
                "resumed from step": self.resumed_from if self.resumed_from is not None else "-",
                "finished": self.finished, **self.metrics}


def model_config(params: TrainParams, data: TrainingData) -> ModelConfig:
    conditional = {"yes": True, "no": False, "auto": len(data.classes) >= 2}[params.conditional]
    if conditional and len(data.classes) < 2:
        raise TrainError(f"train.conditional: 'yes' needs 2+ classes, the data has {len(data.classes)}")
    d_norm = "none" if params.loss == "wgan-gp" else ("spectral" if params.spectral_norm else "batch")
    return ModelConfig(size=data.images.shape[-1], channels=data.images.shape[1],
                       num_classes=len(data.classes) if conditional else 0, z_dim=params.z_dim,
                       g_channels=params.g_channels, d_channels=params.d_channels,
                       embed_dim=params.embed_dim, d_norm=d_norm, mbstd_group=params.mbstd_group,
                       g_upsample=params.g_upsample, g_skip=params.g_skip, g_z_norm=params.g_z_norm, g_sle=params.g_sle,
                       d_recon=params.d_recon_weight > 0)


def fixed_grid_inputs(cfg: ModelConfig, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Fixed noise for the epoch grids: one row per class (8 x 8 when unconditional)."""
    rows = cfg.num_classes or 8
    cols = per_class if cfg.num_classes else 8
    gen = torch.Generator().manual_seed(seed + 7919)
    z = torch.randn(rows * cols, cfg.z_dim, generator=gen)
    y = torch.arange(rows).repeat_interleave(cols) if cfg.num_classes else torch.zeros(rows * cols, dtype=torch.long)
    return z, y, cols


@contextlib.contextmanager
def stop_requests() -> Iterator[dict[str, bool]]:
    """Turn SIGINT/SIGTERM into a flag the loop checks after each whole step."""
    flag = {"stop": False}

    def handler(signum: int, frame: Any) -> None:
        flag["stop"] = True

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: no handlers, no graceful stop
        yield flag
        return
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Trainer:
    """Holds the models, optimisers and counters of one run; `fit` runs the loop."""

    def __init__(self, params: TrainParams, data: TrainingData, device: torch.device, precision: str,
                 ctx: Dist = Dist()) -> None:
        self.params, self.data, self.device, self.precision, self.ctx = params, data, device, precision, ctx
        if params.batch_size % ctx.world:
            raise TrainError(f"train.batch_size: {params.batch_size} is not divisible by the {ctx.world} torchrun processes")
        torch.manual_seed(params.seed)
        self.cfg = model_config(params, data)
        self.g, self.d = build(self.cfg)
        self.g_ema = Generator(self.cfg)
        self.g_ema.load_state_dict(self.g.state_dict())
        for m in (self.g, self.d, self.g_ema):
            m.to(device, memory_format=torch.channels_last)
        self.g_ema.eval().requires_grad_(False)
        self.g_train, self.d_train = self._wrap(self.g), self._wrap(self.d)
        if params.compile:
            self.g_train, self.d_train = torch.compile(self.g_train), torch.compile(self.d_train)
        self.d_frozen = self.d if ctx.enabled else self.d_train   # D for G's step (see train_step)
        adam = dict(betas=(params.beta1, params.beta2), foreach=True)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=params.lr_g, **adam)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=params.lr_d, **adam)
        self.noise = torch.Generator().manual_seed(params.seed + 1)
        self.diffaug = parse_diffaugment(params.diffaugment)
        # Its own stream (per rank: each rank augments its own slice), so turning DiffAugment
        # on leaves the noise and data order of a run unchanged.
        self.aug_gen = torch.Generator().manual_seed(params.seed + 2 + 1009 * ctx.rank)
        self.label_weights = label_weights(data.meta.get("class_counts", []), params.label_sampling)
        self.step = 0
        self.lecam = torch.zeros(2)   # EMA of D's mean logits on real and fake images (train.lecam_weight)
        self.history: list[list[float]] = []
        self.judge: dict[str, Any] | None = None
        self.variety: list[ClassVariety] = []     # of the last epoch's grid
        self._real_variety: dict[str, tuple[float, float]] = {}   # the real images' side, the same every epoch
        self.out = Path(params.out)

    def _wrap(self, model: nn.Module) -> nn.Module:
        """DistributedDataParallel under torchrun (batch norm synced over ranks), else the model itself."""
        if not self.ctx.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        sync_batchnorm(model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        # Buffers are identical on every rank already (synced BN statistics, spectral-norm
        # vectors depend on the weights only); broadcasting them would break the 2nd forward.
        return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)

    @property
    def class_group(self) -> int:
        """Images of one class per minibatch-std group (1: batches mix classes freely)."""
        p = self.params
        grouped = p.mbstd_by_class and self.conditional and p.mbstd_group > 1
        return p.mbstd_group if grouped and (p.batch_size // self.ctx.world) % p.mbstd_group == 0 else 1

    def order(self, epoch: int) -> torch.Tensor:
        group = self.class_group
        labels = self.data.labels.cpu() if group > 1 else None
        return epoch_order(len(self.data.images), self.params.seed, epoch, labels, group)

    @property
    def steps_per_epoch(self) -> int:
        group = self.class_group
        if group == 1:
            return len(self.data.images) // self.params.batch_size
        counts = torch.bincount(self.data.labels.cpu())
        return int((counts // group * group).sum()) // self.params.batch_size

    @property
    def planned_steps(self) -> int:
        """`epochs` passes in steps, a fractional epoch rounded to a whole step (at least one)."""
        return max(1, round(self.params.epochs * self.steps_per_epoch))

    @property
    def conditional(self) -> bool:
        return self.cfg.num_classes > 0

    # --- state -----------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "version": __version__, "model_config": self.cfg.to_dict(), "classes": self.data.classes,
            "params": to_jsonable(self.params), "data_sha256": self.data.digest, "data_meta": {k: v for k, v in self.data.meta.items() if k != "params"},
            "g": self.g.state_dict(), "d": self.d.state_dict(), "g_ema": self.g_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "step": self.step,
            "rng": {"noise": self.noise.get_state(), "torch": torch.get_rng_state(), "augment": self.aug_gen.get_state()},
            "history": torch.tensor(self.history, dtype=torch.float64).reshape(-1, len(HISTORY_COLUMNS)),
            "lecam": self.lecam.clone(),
            **({"judge": self.judge} if self.judge is not None else {}),
        }

    def restore(self, state: dict[str, Any], force: bool = False) -> None:
        if state["model_config"] != self.cfg.to_dict():
            raise TrainError("train --resume: the checkpoint was made with other model settings; "
                             "start afresh without --resume or restore the old params")
        changes = resume_changes(state, self.params, self.data)
        if changes and not force:
            raise TrainError(f"train --resume: the checkpoint was made with other settings ({'; '.join(changes)}); "
                             "restore them, start afresh without --resume, or pass --force-resume to continue anyway")
        if changes:
            log.warning("resuming although %s", "; ".join(changes))
        self.g.load_state_dict(state["g"])
        self.d.load_state_dict(state["d"])
        self.g_ema.load_state_dict(state["g_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])
        self.noise.set_state(state["rng"]["noise"])
        if "augment" in state["rng"]:   # checkpoints from before DiffAugment have none
            self.aug_gen.set_state(state["rng"]["augment"])
        torch.set_rng_state(state["rng"]["torch"])
        self.history = state["history"].tolist()
        if "lecam" in state:   # checkpoints from before the LeCam term have none
            self.lecam = state["lecam"].float().clone()
        self.judge = state.get("judge")

    def save(self) -> None:
        """Checkpoint + loss table; under torchrun only rank 0 writes."""
        if self.ctx.is_main:
            save_checkpoint(self.out / CHECKPOINT_NAME, self.state())
            self.write_history()

    def write_history(self) -> None:
        with atomic_path(self.out / "losses.csv") as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(HISTORY_COLUMNS)
            writer.writerows([int(r[0]), int(r[1]), *(f"{v:.5f}" for v in r[2:])] for r in self.history)

    # --- one step ----------------------------------------------------------------
    def _local(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global-batch tensor."""
        share = t.shape[0] // self.ctx.world
        return t[self.ctx.rank * share:(self.ctx.rank + 1) * share]

    def _noise(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Noise for the whole global batch from the shared stream, sliced to this rank.

        Every rank draws the same numbers, so N ranks see exactly the noise one process would.
        """
        z = self._local(torch.randn(n, self.cfg.z_dim, generator=self.noise)).to(self.device)
        if not self.conditional:
            return z, None
        group = self.class_group   # fakes come in one-class runs too, like the real batches
        if self.label_weights is None:
            y = torch.randint(self.cfg.num_classes, (n // group,), generator=self.noise)
        else:
            y = torch.multinomial(self.label_weights, n // group, replacement=True, generator=self.noise)
        y = y.repeat_interleave(group)
        return z, self._local(y).to(self.device)

    def _d_logits(self, x: torch.Tensor, y: torch.Tensor | None, d: nn.Module | None = None) -> torch.Tensor:
        """D's logits, on DiffAugment-ed images when a policy is set (real and fake alike)."""
        return (self.d_train if d is None else d)(self._augment(x), y)

    def _d_real(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | float]:
        """D's logits on real images, and its weighted reconstruction error on the images it saw (0 when
        train.d_recon_weight is 0)."""
        if self.params.d_recon_weight == 0:
            return self._d_logits(x, y), 0.0
        x = self._augment(x)
        part = int(torch.randint(4, (1,), generator=self.noise))
        logits, whole, part_image = self.d_train(x, y, part)
        return logits, self.params.d_recon_weight * recon_loss(x, whole, part_image, part)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        if not self.diffaug:
            return x
        group = self.params.mbstd_group if self.params.diffaugment_groups and self.params.mbstd_group > 1 else 1
        return diff_augment(x, self.diffaug, self.aug_gen, group).contiguous(memory_format=torch.channels_last)

    def _mirror(self, real: torch.Tensor, n: int) -> torch.Tensor:
        """Real images with a random half flipped left-right (train.xflip), else as they are.

        The coin flips come from (seed, step) alone, drawn for the whole global batch and sliced
        to this rank, so a resumed run mirrors the same images and the other streams are untouched.
        """
        if not self.params.xflip:
            return real
        gen = torch.Generator().manual_seed(self.params.seed * 1_000_003 + self.step + 7_919)
        flip = self._local(torch.rand(n, generator=gen) < 0.5).to(real.device)
        return torch.where(flip.view(-1, 1, 1, 1), real.flip(3), real)

    def train_step(self, idx: torch.Tensor) -> list[float]:
        p = self.params
        n = idx.shape[0]
        idx = self._local(idx).to(self.data.images.device)
        real = to_float(self._mirror(self.data.images[idx], n))
        y_real = self.data.labels[idx] if self.conditional else None
        for i in range(p.d_steps):
            z, y_fake = self._noise(n)
            # With reuse_fake the last D step's fakes keep G's graph, and G's step reuses them (the
            # PyTorch DCGAN example's way): one G forward a step fewer (bench/bench_gan_step.py).
            keep_graph = p.reuse_fake and i == p.d_steps - 1
            with autocast(self.device, self.precision):
                with torch.set_grad_enabled(keep_graph):
                    fake_g = self.g_train(z, y_fake)
                fake = fake_g.detach()
                r1 = p.r1_gamma > 0 and self.step % p.r1_every == 0
                x_real = real.detach().requires_grad_(True) if r1 else real
                out_real, recon = self._d_real(x_real, y_real)
                out_fake = self._d_logits(fake, y_fake)
                loss_d = d_loss(p.loss, out_real.float(), out_fake.float()) + recon
            if p.lecam_weight > 0:
                means = torch.stack([out_real.detach().float().mean(), out_fake.detach().float().mean()]).cpu()
                self.lecam = means if self.step == 0 else self.lecam.lerp(means, 1 - LECAM_DECAY)
                loss_d = loss_d + p.lecam_weight * lecam_penalty(out_real.float(), out_fake.float(), self.lecam.to(self.device))
            if r1:
                loss_d = loss_d + p.r1_every * r1_penalty(out_real, x_real, p.r1_gamma)
            if p.loss == "wgan-gp":
                alpha = self._local(torch.rand(n, 1, 1, 1, generator=self.noise)).to(self.device)
                loss_d = loss_d + p.gp_weight * gradient_penalty(self.d_train, real, fake.float(), y_real, alpha)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
        if not p.reuse_fake:
            z, y_fake = self._noise(n)
            with autocast(self.device, self.precision):
                fake_g = self.g_train(z, y_fake)
        # G's step needs D's gradients with respect to its input only: D's weight gradients would
        # be thrown away by the next D step's zero_grad (~5% of a step: bench/bench_gan_step.py).
        # Under DDP the unwrapped D runs it (a DDP module whose weights get no gradient stalls).
        self.d.requires_grad_(False)
        try:
            with autocast(self.device, self.precision):
                out_gen = self._d_logits(fake_g, y_fake, self.d_frozen)
                loss_g = g_loss(p.loss, out_gen.float())
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
        finally:
            self.d.requires_grad_(True)
        self.opt_g.step()
        update_ema(self.g_ema, self.g, ema_decay_at(self.step, p.ema_decay, p.ema_start, p.ema_rampup))
        row = torch.stack([loss_d.detach(), loss_g.detach(), out_real.float().mean(), out_fake.float().mean()])
        return self.ctx.mean(row.tolist())

    # --- outputs -------------------------------------------------------------------
    def sample_grid(self, name: str) -> list[ClassVariety]:
        """The epoch grid of EMA G's samples (fixed noise), and its classes' variety against the real images."""
        if not self.ctx.is_main:
            return []
        # A preview, not the export: a quarter of generate's standing-stats samples, in the training
        # precision. The full estimate in fp32 cost more than the epoch's steps on the anime recipe.
        with autocast(self.device, self.precision):
            standing_stats(self.g_ema, self.cfg, self.device, batches=GRID_STAT_BATCHES)
        z, y, cols = fixed_grid_inputs(self.cfg, self.params.grid_per_class, self.params.seed)
        with torch.no_grad(), autocast(self.device, self.precision):
            images = to_uint8(self.g_ema(z.to(self.device), y.to(self.device)))
        save_png(self.out / "samples" / f"{name}.png", image_grid(images, rows=len(images) // cols, cols=cols))
        real = self.data.images.permute(0, 2, 3, 1).cpu().numpy()
        real_labels = self.data.labels.cpu().numpy() if self.conditional else np.zeros(len(real), np.int64)
        names = self.data.classes if self.conditional else ["all"]
        return class_variety(images, y.numpy(), real, real_labels, names, max_images=200, pairs=45,
                             seed=self.params.seed, real_figures=self._real_variety)

    def warn_if_collapsed(self, epoch: int, varieties: list[ClassVariety]) -> None:
        """A log warning naming the classes whose grid samples are near copies of each other."""
        low = collapsed(varieties)
        if low:
            log.warning("epoch %d: %s drew near-identical images (within-class variety %s x the real images'; "
                        "below %s x means G ignores its noise: see docs/faces.md)", epoch,
                        ", ".join(v.label for v in low), ", ".join(f"{v.ratio:.2f}" for v in low), COLLAPSE_RATIO)

    # --- the loop --------------------------------------------------------------------
    def fit(self, progress: Progress = SILENT) -> TrainSummary:
        p, spe = self.params, self.steps_per_epoch
        if spe == 0:
            raise TrainError(f"train.batch_size: {p.batch_size} is larger than the {len(self.data.images)} training images")
        planned = self.planned_steps
        total = planned if p.max_steps is None else min(planned, p.max_steps)
        summary = TrainSummary(out=self.out, resumed_from=self.step or None)
        start_step, started = self.step, time.perf_counter()
        progress.start("train", total=planned, description="train")
        progress.advance("train", self.step)
        with stop_requests() as stop:
            while self.step < total:
                epoch, batch = divmod(self.step, spe)
                order = self.order(epoch)
                for b in range(batch, spe):
                    row = self.train_step(order[b * p.batch_size:(b + 1) * p.batch_size])
                    self.history.append([self.step, epoch, *row])
                    self.step += 1
                    progress.advance("train", 1, epoch=epoch + 1, loss_d=f"{row[0]:.3f}", loss_g=f"{row[1]:.3f}")
                    # A run of a fractional number of epochs ends mid-epoch: its last grid shows the end.
                    if b == spe - 1 or self.step == planned:
                        self.variety = self.sample_grid(f"epoch-{epoch + 1:03d}")
                        self.warn_if_collapsed(epoch + 1, self.variety)
                        self.save()
                    elif self.step % p.checkpoint_every == 0:
                        self.save()
                    if self.ctx.enabled:  # every rank must stop at the same step
                        stop["stop"] = self.ctx.mean([float(stop["stop"])])[0] > 0
                    if stop["stop"] or self.step >= total:
                        break
                if stop["stop"]:
                    self.save()
                    raise Interrupted(f"stopped at step {self.step}; continue with `augment train --resume`")
        self.save()
        summary.seconds = time.perf_counter() - started
        summary.steps, summary.epochs = self.step, round(self.step / spe, 2)
        summary.images_seen = (self.step - start_step) * p.batch_size
        summary.finished = self.step >= planned
        summary.metrics = self.final_metrics(summary)
        return summary

    def train_judge(self) -> dict[str, Any]:
        """The label judge: the fixed small CNN trained on the same real training split."""
        from pipeline.shared.classifier import TrainConfig, accuracy, judge_state, predict, train_classifier

        p = self.params
        cfg = TrainConfig(steps=p.judge_steps, batch_size=p.judge_batch_size, lr=4e-3, seed=p.seed + 101,
                          precision=resolve_precision(p.precision, self.device, cpu_auto="bf16"))
        model = train_classifier(self.data.images, self.data.labels, self.cfg.num_classes, cfg, self.device)
        self.judge = judge_state(model, cfg)
        sample = slice(0, min(len(self.data.images), 5000))   # seen in training: a sanity figure, not a test
        acc, _ = accuracy(predict(model, self.data.images[sample], device=self.device),
                          self.data.labels[sample].cpu().numpy(), self.cfg.num_classes)
        return {"judge_train_accuracy": round(acc, 4), "judge_precision": cfg.precision}

    def final_metrics(self, summary: TrainSummary) -> dict[str, Any]:
        last = np.array(self.history[-self.steps_per_epoch:])[:, 2:] if self.history else np.zeros((1, 4))
        means = dict(zip(HISTORY_COLUMNS[2:], last.mean(axis=0).round(5).tolist()))
        rate = summary.images_seen / summary.seconds if summary.seconds > 0 else 0.0
        variety = {"grid_variety": {v.label: round(v.ratio, 3) for v in self.variety}} if self.variety else {}
        return {**means, **variety, "images_per_second": round(rate, 1), "train_seconds": round(summary.seconds, 1),
                "device": self.device.type, "precision": self.precision, "classes": len(self.data.classes)}


def resume_changes(state: dict[str, Any], params: TrainParams, data: TrainingData) -> list[str]:
    """What differs between a checkpoint's run and this one, beyond RESUMABLE_CHANGES."""
    before, now = state.get("params") or {}, to_jsonable(params)
    changes = [f"{key}: {before[key]!r} -> {now[key]!r}" for key in now
               if key not in RESUMABLE_CHANGES and key in before and before[key] != now[key]]
    if state.get("data_sha256") and state["data_sha256"] != data.digest:
        changes.append(f"the training data in {params.input} differs from the checkpoint's")
    return changes


def run(params: TrainParams, resume: bool = False, progress: Progress = SILENT, force: bool = False) -> TrainSummary:
    """Train (or resume); under torchrun every rank calls this and rank 0 writes the outputs.

    `force` resumes even when train params or the training data differ from the checkpoint's.
    """
    ctx, device = from_env(resolve_device(params.device))
    try:
        earlier = {}
        if ctx.is_main:
            if resume:  # a checkpoint copied in by hand is the user's to continue
                adopt_unmarked(params.out, "train")
            # Refuses a folder holding anything train did not write, before any work. An earlier run's
            # checkpoint is only ever replaced by a newer one (a full disk keeps it: docs/reliability.md).
            earlier = claim_out(params.out, "train")
        precision = resolve_precision(params.precision, device, cpu_auto="bf16")
        threads = set_threads(params.threads)
        data = load_training_data(params.input, device)
        trainer = Trainer(params, data, device, precision, ctx)
        checkpoint = Path(params.out) / CHECKPOINT_NAME
        if resume:
            if not checkpoint.exists():
                raise TrainError(f"train --resume: no checkpoint at {checkpoint}")
            trainer.restore(load_checkpoint(checkpoint, map_location=device), force=force)
        summary = trainer.fit(progress if ctx.is_main else SILENT)
        summary.metrics.update(threads=threads, processes=ctx.world)
        if ctx.is_main and trainer.conditional and params.judge_steps and trainer.judge is None:
            started = time.perf_counter()
            summary.metrics.update(trainer.train_judge(), judge_seconds=round(time.perf_counter() - started, 1))
            trainer.save()
        if ctx.is_main:
            plot_losses(trainer.history, Path(params.out) / "losses.png")
            write_json(Path(params.metrics), {"steps": summary.steps, "epochs": summary.epochs, "seed": params.seed,
                                              "loss": params.loss, **summary.metrics})
            if not resume:  # a fresh run: no epoch grid of a longer earlier run stays behind
                drop_unrewritten(params.out, earlier)
        return summary
    finally:
        shutdown(ctx)
