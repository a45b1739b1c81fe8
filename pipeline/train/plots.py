"""The train stage's pictures for people: the loss curves as a PNG next to losses.csv."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.shared.io import atomic_path


def plot_losses(history: list[list[float]], path: Path) -> None:
    """Loss curves (raw and smoothed) as a PNG next to losses.csv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = np.array(history)
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    window = max(1, len(h) // 50)
    kernel = np.ones(window) / window
    for col, name in ((2, "loss_d"), (3, "loss_g")):
        ax.plot(h[:, 0], h[:, col], alpha=0.25, linewidth=0.6)
        if len(h) >= window:
            ax.plot(h[window - 1:, 0], np.convolve(h[:, col], kernel, mode="valid"), label=name, linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
