"""Which CPU kernels the models run on; exactness is unaffected (float rounding only).

Batch-1 online steps are dominated by per-operator overhead. Two measured choices:
- the full-length dilated convs call oneDNN directly (`conv1d`): for a batch-1 dilated conv
  aten otherwise picks slow_conv_dilated2d, ~75 small copies a call;
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


def conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
           dilation: int) -> torch.Tensor:
    """F.conv1d(x, weight, bias, padding=padding, dilation=dilation): x [B, in, T] -> [B, out, T'].

    On CPU (float32) through oneDNN's convolution directly, whatever the global oneDNN flag.
    """
    if ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32:
        return torch.mkldnn_convolution(x, weight, bias, [padding], [1], [dilation], 1)
    return F.conv1d(x, weight, bias, padding=padding, dilation=dilation)


@contextmanager
def native_eltwise() -> Iterator[None]:
    """Within the block, aten's own kernels instead of oneDNN's for elementwise ops (restored after)."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before
