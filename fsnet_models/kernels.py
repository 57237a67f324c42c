"""Which CPU kernels the models run on; exactness is unaffected (float rounding only).

Batch-1 online steps are dominated by per-operator overhead. Two measured choices:
- the full-length convs (dilation 1 on the fast path: see backbone's needed positions) go
  through aten's own conv (`F.conv1d` with oneDNN off) for a batch of one or two, and through
  oneDNN's convolution directly for larger batches (`conv1d`). Measured on one thread for a
  [B, 64, n] input and a [64, 64, 3] weight, forward / forward+backward in us: B = 1: aten
  15-19 / 53-75 against oneDNN's 42-50 / 88-141; B = 32, n = 48: aten 3,250 / 4,750 against
  oneDNN's 235 / 1,640; the two cross between B = 2 and 4;
- everything else runs with oneDNN switched off (`native_eltwise`): aten's GELU hands
  contiguous float tensors to oneDNN, which costs ~15 us per call at these sizes against ~4 us
  for aten's own vectorised kernel (22 GELUs forward and 22 backward per step).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

ONEDNN = torch.backends.mkldnn.is_available()
ATEN_CONV_MAX_BATCH = 2  # up to this batch size aten's own conv is the faster one on CPU


def conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
           dilation: int, groups: int = 1) -> torch.Tensor:
    """F.conv1d(x, weight, bias, padding=padding, dilation=dilation, groups=groups):
    x [B, groups * in, T], weight [groups * out, in, k] -> [B, groups * out, T'].

    On CPU (float32) with B > ATEN_CONV_MAX_BATCH through oneDNN's convolution directly,
    whatever the global oneDNN flag; otherwise F.conv1d. (`groups` > 1: trial groups, one
    group of channels per member.)
    """
    if ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32 and x.shape[0] > ATEN_CONV_MAX_BATCH:
        return torch.mkldnn_convolution(x, weight, bias, [padding], [1], [dilation], groups)
    if groups == 1:
        return F.conv1d(x, weight, bias, padding=padding, dilation=dilation)
    return F.conv1d(x, weight, bias, padding=padding, dilation=dilation, groups=groups)


@contextmanager
def native_eltwise() -> Iterator[None]:
    """Within the block, aten's own kernels instead of oneDNN's for elementwise ops (restored after)."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before
