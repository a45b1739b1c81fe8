"""Device, precision and thread choices shared by train and generate."""
from __future__ import annotations

import contextlib
import os
from typing import ContextManager

import torch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA device is available (allowed: auto, cpu, cuda)")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """auto means bf16 on CUDA and fp32 on CPU (bf16 on CPU is opt-in)."""
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return name


def autocast(device: torch.device, precision: str) -> ContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_threads(threads: int) -> int:
    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n
