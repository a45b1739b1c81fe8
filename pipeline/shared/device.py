"""Device, precision and torch threads for train, generate and evaluate."""
from __future__ import annotations

import contextlib
import logging
from typing import ContextManager

import torch

from pipeline.shared.errors import PipelineError
from pipeline.shared.workers import usable_cores


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PipelineError("device 'cuda' was asked for but no CUDA device is available (allowed: auto, cpu, cuda)")
    return torch.device(name)


_log = logging.getLogger(__name__)
_said_no_bf16 = False


def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (AVX512-BF16 or AMX), so autocast can pay."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:   # a torch without the probes: assume not
        return False


def resolve_precision(name: str, device: torch.device, cpu_auto: str = "fp32") -> str:
    """auto: bf16 on CUDA; on CPU `cpu_auto`, where "bf16" means bf16 if the CPU has it natively, else fp32.

    The GAN, its label judge and evaluate's classifiers pass bf16 (bench_levers: 1.12-1.9x per
    step; the GAN 1.26x with D frozen in G's step); generation passes fp32. A CPU without native
    bf16 falls back to fp32, and says so once per process.
    """
    global _said_no_bf16
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16"
    if cpu_auto == "bf16":
        if cpu_has_bf16():
            return "bf16"
        if not _said_no_bf16:
            _log.info("this CPU has no native bf16 (AVX512-BF16/AMX): training runs in fp32")
            _said_no_bf16 = True
    return "fp32"


def autocast(device: torch.device, precision: str) -> ContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_threads(threads: int) -> int:
    """torch's intra-op threads: `threads`, or 0 for every usable core."""
    n = threads or usable_cores()
    torch.set_num_threads(n)
    return n


class HeapTrimmer:
    """Hand freed heap memory back to the OS every `every` calls during long streaming loops.

    glibc raises its mmap threshold each time a large block is freed, after which per-batch
    buffers come from the heap and fragment it: peak RSS of a scores-only generate grew from
    893 to 1,452 MiB between 100,000 and 400,000 candidates. Fixing the threshold instead
    (mallopt) kept RSS flat but cost 30% speed in page faults; `malloc_trim` every few batches
    keeps both. No-op off glibc.
    """

    def __init__(self, every: int = 5) -> None:
        import ctypes
        import ctypes.util

        self.every, self.calls = every, 0
        name = ctypes.util.find_library("c")
        try:
            self._trim = ctypes.CDLL(name).malloc_trim if name else None
        except (OSError, AttributeError):
            self._trim = None

    def __call__(self) -> None:
        self.calls += 1
        if self._trim is not None and self.calls % self.every == 0:
            self._trim(0)
