"""D's calibration and per-class floors: fitted on held-out real images and generated calibration samples.

D~ comes from a 1-D calibration of the raw logit fitted on held-out real images (the crop
output's test split, at most half of it, chosen by seed) and as many generated ones (seeds
`generate.seed + 2**40 + j`, disjoint from any candidate): `logistic` (Platt scaling,
a*logit + b) or `isotonic` (pool-adjacent-violators). The rules of pipeline.generate.ranking use it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from pipeline.shared.config import GenerateParams
from pipeline.shared.data import load_split, to_float
from pipeline.shared.device import autocast
from pipeline.shared.errors import PipelineError

log = logging.getLogger(__name__)
CALIBRATION_SEED_OFFSET = 2 ** 40   # generated calibration samples use seeds past any candidate's
DRS_EPS = 1e-6


class RankingError(PipelineError):
    """Ranking cannot run (no held-out real images to calibrate against, ...)."""


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def fit_logistic(real: np.ndarray, fake: np.ndarray, iters: int = 50, l2: float = 1e-4) -> tuple[float, float]:
    """Platt scaling: (a, b) maximising the likelihood of P(real | s) = sigmoid(a s + b), classes weighted equally."""
    s = np.concatenate([real, fake]).astype(np.float64)
    t = np.concatenate([np.ones(len(real)), np.zeros(len(fake))])
    w = np.concatenate([np.full(len(real), 0.5 / len(real)), np.full(len(fake), 0.5 / len(fake))])
    X = np.stack([s, np.ones_like(s)], 1)
    theta = np.zeros(2)
    for _ in range(iters):  # Newton's method on a 2-parameter convex problem
        p = 1 / (1 + np.exp(-(X @ theta)))
        grad = X.T @ (w * (p - t)) + l2 * theta
        hess = (X * (w * p * (1 - p))[:, None]).T @ X + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(theta[0]), float(theta[1])


def fit_isotonic(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pool-adjacent-violators: knots (score, P(real)) of the non-decreasing fit, classes weighted equally."""
    s = np.concatenate([real, fake]).astype(np.float64)
    t = np.concatenate([np.ones(len(real)), np.zeros(len(fake))])
    w = np.concatenate([np.full(len(real), 0.5 / len(real)), np.full(len(fake), 0.5 / len(fake))])
    order = np.argsort(s, kind="stable")
    s, t, w = s[order], t[order], w[order]
    vals, wts, xs = [], [], []  # one block per entry: mean target, weight, weighted mean score
    for si, ti, wi in zip(s, t, w):
        vals.append(ti), wts.append(wi), xs.append(si)
        while len(vals) > 1 and vals[-2] >= vals[-1]:
            v, wt, x = vals.pop(), wts.pop(), xs.pop()
            tot = wts[-1] + wt
            vals[-1] = (vals[-1] * wts[-1] + v * wt) / tot
            xs[-1] = (xs[-1] * wts[-1] + x * wt) / tot
            wts[-1] = tot
    return np.array(xs), np.array(vals)


@dataclass(frozen=True)
class Calibration:
    """A monotone map from D's raw logit to a calibrated logit log(P(real) / P(fake))."""

    kind: str
    a: float = 1.0
    b: float = 0.0
    knots_x: tuple[float, ...] = ()
    knots_p: tuple[float, ...] = ()
    clip: float = 1e-3
    max_fake: float = float("inf")   # D*_M: largest calibrated logit of the held-out generated samples
    gamma: float = 0.0               # DRS shift actually used
    real_mean: float = 0.0           # mean raw logit of the held-out real / generated samples
    fake_mean: float = 0.0

    def logit(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float64)
        if self.kind == "logistic":
            return self.a * raw + self.b
        p = np.interp(raw, self.knots_x, self.knots_p)
        return _logit(np.clip(p, self.clip, 1 - self.clip))

    def drs_f(self, raw: np.ndarray) -> np.ndarray:
        """Azadi et al.'s F(x) = D~(x) - D*_M - log(1 - exp(D~(x) - D*_M - eps)), without gamma."""
        d = self.logit(raw)
        over = np.minimum(d - self.max_fake, 0.0)  # candidates above D*_M are treated as at D*_M
        return d - self.max_fake - np.log1p(-np.exp(over - DRS_EPS))

    def drs_accept_prob(self, raw: np.ndarray) -> np.ndarray:
        return 0.5 * (1 + np.tanh((self.drs_f(raw) - self.gamma) / 2))  # sigmoid, without overflow

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "max_fake_logit": round(self.max_fake, 4), "drs_gamma": round(self.gamma, 4),
               "real_mean_raw": round(self.real_mean, 4), "fake_mean_raw": round(self.fake_mean, 4)}
        if self.kind == "logistic":
            out.update(a=round(self.a, 6), b=round(self.b, 6))
        else:
            out["knots"] = len(self.knots_x)
        return out


def fit_calibration(kind: str, real: np.ndarray, fake: np.ndarray, drs_gamma: float = 0.0,
                    drs_percentile: float | None = None) -> Calibration:
    """Fit `kind` (logistic | isotonic) on raw logits of held-out real and generated samples."""
    if len(real) < 2 or len(fake) < 2:
        raise RankingError("calibration needs at least 2 held-out real and 2 generated samples")
    if kind == "logistic":
        a, b = fit_logistic(real, fake)
        cal = Calibration("logistic", a=a, b=b)
    elif kind == "isotonic":
        xs, ps = fit_isotonic(real, fake)
        cal = Calibration("isotonic", knots_x=tuple(xs.tolist()), knots_p=tuple(ps.tolist()),
                          clip=0.5 / min(len(real), len(fake)))
    else:
        raise ValueError(f"calibration {kind!r} is not one of logistic, isotonic")
    fake_logits = cal.logit(fake)
    cal = Calibration(**{**cal.__dict__, "max_fake": float(fake_logits.max()),
                         "real_mean": float(np.mean(real)), "fake_mean": float(np.mean(fake))})
    gamma = drs_gamma if drs_percentile is None else float(np.percentile(cal.drs_f(fake), drs_percentile))
    return Calibration(**{**cal.__dict__, "gamma": gamma})


def held_out_positions(num_test: int, requested: int, seed: int) -> np.ndarray:
    """Which test-split positions calibrate D: `requested`, at most half the split, by seed.

    `augment evaluate` leaves exactly these out of its test set.
    """
    n = min(requested, num_test // 2)
    return np.sort(np.random.default_rng(seed + 7717).permutation(num_test)[:n])


class _Scorer(Protocol):
    d: torch.nn.Module
    device: torch.device
    precision: str
    num_labels: int

    def images_and_scores(self, seeds: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, np.ndarray]: ...


@torch.no_grad()
def score_real(sampler: _Scorer, images: torch.Tensor, labels: np.ndarray, batch_size: int) -> np.ndarray:
    """D's raw logit of real uint8 images with their own labels."""
    out = []
    for i in range(0, len(images), batch_size):
        x = to_float(images[i:i + batch_size].to(sampler.device))
        y = torch.from_numpy(np.minimum(labels[i:i + batch_size], sampler.num_labels - 1)).to(sampler.device)
        with autocast(sampler.device, sampler.precision):
            out.append(sampler.d(x, y).float().cpu().numpy())
    return np.concatenate(out) if out else np.empty(0, np.float32)


@dataclass
class CalibrationData:
    real_scores: np.ndarray
    real_labels: np.ndarray
    fake_scores: np.ndarray
    source_split: str


def generated_scores(sampler: _Scorer, params: GenerateParams, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw D logits and labels of `n` held-out generated samples (seeds disjoint from every candidate)."""
    scores = []
    for start in range(0, n, params.batch_size):
        j = np.arange(start, min(start + params.batch_size, n), dtype=np.int64)
        scores.append(sampler.images_and_scores(params.seed + CALIBRATION_SEED_OFFSET + j, j % sampler.num_labels)[1])
    return np.concatenate(scores), np.arange(n, dtype=np.int64) % sampler.num_labels


def class_floors(sampler: _Scorer, params: GenerateParams) -> np.ndarray:
    """Per label, the `d_floor` percentile of D's logit over held-out generated samples of that label."""
    k = sampler.num_labels
    scores, labels = generated_scores(sampler, params, max(params.calibration_samples, 100 * k))
    return np.array([np.percentile(scores[labels == c], params.d_floor) for c in range(k)])


def calibration_data(sampler: _Scorer, params: GenerateParams) -> CalibrationData:
    """Raw D logits of the held-out real images and of as many generated calibration samples."""
    images, labels, _, _ = load_split(params.real, "test")
    split = "test"
    if len(images) < 4:
        log.warning("%s has no test split: calibrating D on training images it has seen, which overstates 'real'",
                    params.real)
        images, labels, _, _ = load_split(params.real, "train")
        split = "train"
        if len(images) < 4:
            raise RankingError(f"generate.real: {params.real} has too few images to calibrate the discriminator")
    pos = held_out_positions(len(images), params.calibration_samples, params.seed)
    real = score_real(sampler, images[torch.from_numpy(pos)], labels[pos], params.batch_size)
    return CalibrationData(real, labels[pos], generated_scores(sampler, params, len(pos))[0], split)


def calibrate(data: CalibrationData, params: GenerateParams) -> Calibration:
    return fit_calibration(params.calibration, data.real_scores, data.fake_scores, params.drs_gamma, params.drs_percentile)
