"""FD and KID through torchmetrics against their definitions, and the Inception input mapping its weights expect."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.evaluate.fidelity import frechet_distance, kernel_inception_distance


def frechet_by_definition(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), all symmetric (eigh): the replaced code."""
    def sqrt_psd(m: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh((m + m.T) / 2)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    r = sqrt_psd(s1)
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)).sum()
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def test_frechet_of_a_set_with_itself_is_zero_and_a_mean_shift_adds_its_square() -> None:
    x = np.random.default_rng(0).normal(size=(400, 16))
    mu = np.linspace(-1, 1, 16)
    assert frechet_distance(x, x.copy()) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(x, x + mu) == pytest.approx(mu @ mu, rel=1e-9)   # same covariance: only the means differ


def test_frechet_matches_the_definition_with_fewer_points_than_dimensions() -> None:
    # Inception features with a small feature_samples: singular covariances, where torchmetrics'
    # eigenvalues of the non-symmetric S_a S_b must still give the symmetric form's trace.
    rng = np.random.default_rng(1)
    a, b = np.maximum(rng.normal(size=(60, 256)), 0), np.maximum(rng.normal(0.2, 1, size=(60, 256)), 0)
    assert frechet_distance(a, b) == pytest.approx(frechet_by_definition(a, b), rel=1e-6)


def test_kid_over_subsets_holding_every_point_is_the_unbiased_mmd() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(120, 8)), rng.normal(0.5, 1, size=(120, 8))
    n, d = len(x), x.shape[1]
    kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (n * (n - 1)) - 2 * kxy.mean()
    assert kernel_inception_distance(x, y, subsets=3, subset_size=1000) == pytest.approx(mmd, rel=1e-9)


def test_kid_is_unbiased_near_zero_for_one_distribution() -> None:
    rng = np.random.default_rng(3)
    same = [kernel_inception_distance(rng.normal(size=(150, 8)), rng.normal(size=(150, 8)), subset_size=100, seed=s)
            for s in range(5)]
    assert abs(np.mean(same)) < 0.01 and min(same) < 0 < max(same)   # unbiased: it straddles 0, unlike the biased MMD


def test_inception_sees_imagenet_normalised_input_as_the_minus_one_to_one_its_weights_were_trained_on(
        tmp_path: Path) -> None:
    from torchvision.models import inception_v3

    from pipeline.evaluate.fidelity import load_inception

    torch.manual_seed(0)
    bare = inception_v3(weights=None, aux_logits=True, init_weights=False).eval()
    torch.save(bare.state_dict(), tmp_path / "inc.pt")
    model = load_inception(tmp_path / "inc.pt")
    bare.fc = torch.nn.Identity()
    pixels = torch.rand(1, 3, 299, 299)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ours, expected = model((pixels - mean) / std), bare(pixels * 2 - 1)
    assert model.transform_input is True
    # Relative to the features' size (about 1e-6 with these random weights); without the flag it is about 1.
    assert ((ours - expected).norm() / expected.norm()).item() < 1e-4
