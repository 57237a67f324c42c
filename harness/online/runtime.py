"""The process settings a fast online step depends on, in one place: what each one does and why.

None of these changes a result (float rounding aside, they change which kernels run, not what
they compute); they change how long a step takes and how much memory it holds.

- `keep_freed_memory`: glibc's mmap and trim thresholds raised once per process. A batch-1 online
  step allocates and frees the same few MB-sized tensors every step (gradients and EMAs of the
  320-channel convs are 1.2 MB each). glibc serves blocks above its mmap threshold with fresh
  mappings and returns freed memory at the heap's top to the kernel, so every step touched new
  pages: ~500-1,000 page faults per FSNet step (measured with untrained weights, where they cost
  ~12% of the step). Raising both thresholds makes the heap reuse the blocks instead.
- `fast_kernels`: the block a trial's steps run in: the allocator setting above plus
  `fsnet_models.kernels.native_eltwise` (aten's own elementwise kernels instead of oneDNN's, which
  cost ~4x more per call at batch-1 sizes; the module docstring there has the figures).
- `rss_mb` / `peak_rss_mb`: resident memory, read by the runner at 10% of the stream and at the end.
- `pick_device` and `set_threads`: the one place a device name and a thread count are checked.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import torch

from fsnet_models.kernels import native_eltwise

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's maximum on 64-bit
TRIM_THRESHOLD_BYTES = 256 * 2**20

_done = False


class DeviceError(ValueError):
    """A device that cannot be used here (e.g. --device cuda without CUDA)."""


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once per process; returns whether they were set."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mmap_set = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    _done = mmap_set and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return _done


@contextmanager
def fast_kernels() -> Iterator[None]:
    """The block a trial's warm-up and online steps run in (see the module docstring)."""
    keep_freed_memory()
    with native_eltwise():
        yield


def rss_mb() -> float:
    """This process's resident set size now, in MiB."""
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pick_device(name: str = "auto") -> str:
    """'auto' -> 'cuda' when CUDA is available, else 'cpu'; any other name must be usable here.

    A Ray trial calls it with 'auto' when Ray assigned it a GPU (Ray sets CUDA_VISIBLE_DEVICES, so
    'cuda' is that GPU) and with 'cpu' otherwise. Raises DeviceError for 'cuda...' without CUDA.
    """
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: CUDA is not available on this machine")
    return name


def set_threads(threads: int | None) -> None:
    """torch's CPU threads for this process (None: leave torch's choice); at least 1."""
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))


def wait_for_device(device: torch.device) -> None:
    """Block until every kernel queued on `device` has run (CUDA); nothing on the CPU.

    The runners call it once per chunk of online steps, outside the step, so that the chunk's
    timing includes its kernels; the step itself never synchronises.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cuda_devices() -> int:
    """Number of CUDA devices torch sees on this machine."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
