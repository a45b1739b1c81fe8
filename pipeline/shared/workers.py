"""CPU cores and worker processes: one policy for every stage (no torch import: crawl and crop stay light).

`usable_cores` is the affinity mask, not the machine's core count: a container or taskset may allow
fewer. `process_pool` is the only place a worker process is started, and it always uses spawn.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context


def usable_cores() -> int:
    """Cores this process may run on: the affinity mask (a container or taskset may allow fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def process_pool(workers: int) -> ProcessPoolExecutor:
    """The one way this package starts worker processes: a pool started with spawn.

    Spawn rather than fork: the CLI's progress bar runs a thread and torch starts OpenMP
    threads, and forking a threaded process can deadlock the child on a lock held at fork time.
    Workers therefore import what they run; keep their functions in light modules (pipeline.shared.io).
    """
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
