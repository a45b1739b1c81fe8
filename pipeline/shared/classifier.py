"""The fixed evaluation classifier: a small CNN and a deterministic train/test loop on uint8 tensors.

It is the yardstick of `augment evaluate`, so it never changes with the data being judged:
three strided conv blocks (5x5 to 32 channels, then 3x3 to 64 and 128, each stride 2 with
batch norm and ReLU), global average pooling to a 128-d feature vector (the penultimate layer, used for the
Fréchet distance and precision/recall) and one linear layer to the K logits. It is trained
with AdamW (linear warm-up, cosine decay) for a fixed number of steps, whatever
the size of the training set, so runs on sets of the same size cost the same and are
comparable. Images are uint8 N x C x H x W; the data order and initial weights come from
the seed alone, so the same inputs and seed give the same accuracy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

FEATURE_DIM = 128


class SmallCNN(nn.Module):
    def __init__(self, channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width]

        def block(cin: int, cout: int, k: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, k, 2, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        # Strided convolutions instead of conv + max-pool: about 4x cheaper on a CPU, at
        # 32 x 32 within a point of accuracy.
        self.body = nn.Sequential(block(channels, widths[0], 5), block(widths[0], widths[1], 3),
                                  block(widths[1], widths[2], 3))
        self.head = nn.Linear(widths[2], num_classes)
        self.feature_dim = widths[2]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer: one feature_dim vector per image."""
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    width: int = 32
    seed: int = 0
    precision: str = "fp32"   # "bf16": autocast in training (batch norm, the loss and AdamW stay fp32)


def _prep(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 -> float in [-1, 1], the GAN's own range."""
    return batch.to(device).float().div_(127.5).sub_(1.0).contiguous(memory_format=torch.channels_last)


def train_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: TrainConfig,
                     device: torch.device = torch.device("cpu")) -> SmallCNN:
    """Train the fixed CNN for cfg.steps steps on uint8 images (N x C x H x W) and labels."""
    if len(images) == 0:
        raise ValueError("cannot train the evaluation classifier on an empty set")
    torch.manual_seed(cfg.seed)
    model = SmallCNN(images.shape[1], num_classes, cfg.width).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, cfg.steps // 5)  # linear warm-up over a fifth of the steps, then cosine decay to 0
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else
                                              0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, cfg.steps - warm))))
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    batch = min(cfg.batch_size, len(images))
    order = torch.empty(0, dtype=torch.long)
    model.train()
    for _ in range(cfg.steps):
        if len(order) < batch:  # a fresh permutation each pass, drawn from the seed
            order = torch.cat([order, torch.randperm(len(images), generator=gen)])
        idx, order = order[:batch], order[batch:]
        with torch.autocast(device.type, torch.bfloat16, enabled=cfg.precision == "bf16"):
            logits = model(_prep(images[idx], device))
        loss = F.cross_entropy(logits.float(), labels[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def predict(model: SmallCNN, images: torch.Tensor, batch_size: int = 1000,
            device: torch.device = torch.device("cpu")) -> np.ndarray:
    """Predicted class of each image."""
    out = [model(_prep(images[i:i + batch_size], device)).argmax(1).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy() if out else np.empty(0, np.int64)


@torch.no_grad()
def features(model: SmallCNN, images: torch.Tensor, batch_size: int = 1000,
             device: torch.device = torch.device("cpu")) -> np.ndarray:
    """Penultimate-layer features (N x feature_dim, float64) of uint8 images."""
    out = [model.features(_prep(images[i:i + batch_size], device)).double().cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy() if out else np.empty((0, model.feature_dim))


def accuracy(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[float, list[float]]:
    """Overall accuracy and per-class accuracy (recall of each class; NaN for a class with no test image)."""
    labels = np.asarray(labels)
    overall = float((pred == labels).mean()) if len(labels) else float("nan")
    per_class = [float((pred[labels == c] == c).mean()) if (labels == c).any() else float("nan")
                 for c in range(num_classes)]
    return overall, per_class


def fit_and_test(images: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: TrainConfig,
                 test_images: torch.Tensor, test_labels: np.ndarray, keep_state: bool = False, threads: int = 0,
                 device: torch.device = torch.device("cpu")) -> tuple[float, list[float], dict | None]:
    """Train the fixed CNN and test it: (accuracy, per-class accuracy, its weights when `keep_state`).

    Runs in evaluate's worker processes too (hence plain arguments and results); `threads` > 0
    sets this process's torch threads first.
    """
    if threads:
        torch.set_num_threads(threads)
    model = train_classifier(images, labels, num_classes, cfg, device)
    acc, per_class = accuracy(predict(model, test_images, device=device), test_labels, num_classes)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()} if keep_state else None
    return acc, per_class, state


# --- the label judge: a classifier of the real training split, kept with the GAN ---------------


def judge_state(model: SmallCNN, cfg: TrainConfig) -> dict:
    """What a checkpoint keeps of a judge: tensors and plain numbers only (weights_only loading)."""
    return {"state": model.state_dict(), "channels": model.body[0][0].in_channels,
            "num_classes": model.head.out_features, "width": cfg.width, "steps": cfg.steps, "seed": cfg.seed,
            "batch_size": cfg.batch_size}


def load_judge(saved: dict, device: torch.device = torch.device("cpu")) -> SmallCNN:
    model = SmallCNN(int(saved["channels"]), int(saved["num_classes"]), int(saved["width"]))
    model.load_state_dict(saved["state"])
    return model.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)


@torch.no_grad()
def confidence(model: SmallCNN, images: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """P(label | image) under `model` for generated float images in [-1, 1].

    Images are first rounded to the uint8 grid they will be saved on, so a kept image is judged
    exactly as a user will read it back.
    """
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().div_(127.5).sub_(1.0)
    probs = torch.softmax(model(x.contiguous(memory_format=torch.channels_last)).float(), dim=1)
    return probs.gather(1, labels.view(-1, 1).to(probs.device)).squeeze(1).cpu().numpy()
