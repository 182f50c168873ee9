"""CPU thread policy for torch training: one intra-op thread per spare core, never more; and
how many fold processes the container's CPU and memory limits leave room for.

Measured on a shared 2-core machine (load ~4): a CNN epoch took 35 s with 2 intra-op threads and
6.3 s with 1. Spinning OpenMP workers that wait for a core held by another process cost far more
than the parallelism gains, so small machines train on one thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")
MAX_THREADS = 4


def usable_cores() -> int:
    """Cores this process may run on: CPU affinity, capped by a cgroup v2 CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota visible: affinity is the limit
    return max(1, cores)


# What one more fold worker may add at most, on the full shared file (docs/accuracy.md: the
# recipe with two workers peaked at 2.75 GB in all), so a pod's memory limit is respected.
WORKER_MEMORY_BYTES = 2 * 2**30


def memory_workers() -> int | None:
    """How many fold processes the cgroup v2 memory limit leaves room for (at least 1); None
    when no limit is visible. A trainer pod on a 16-core node with the default 4Gi limit
    trains 2 folds at once, not 4 (OOMKilled)."""
    try:
        limit = CGROUP_MEMORY_MAX.read_text().strip()
    except OSError:
        return None
    if not limit.isdigit():
        return None  # "max": no limit
    return max(1, int(limit) // WORKER_MEMORY_BYTES)


def training_threads() -> int:
    """OMP_NUM_THREADS when set, else usable cores minus one (1 on <= 2 cores, at most 4)."""
    explicit = os.environ.get("OMP_NUM_THREADS", "").strip()
    if explicit.isdigit() and int(explicit) > 0:
        return int(explicit)
    return max(1, min(MAX_THREADS, usable_cores() - 1))


@contextmanager
def torch_threads(torch: Any, threads: int) -> Iterator[None]:
    """Run the block with `threads` intra-op threads, then restore the process setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
