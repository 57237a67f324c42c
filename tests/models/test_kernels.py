"""CPU kernel choices of the fast path: same numbers as the plain operators, settings restored."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from fsnet_models.adaptive import layers_of, normalize_over_inputs
from fsnet_models.kernels import ATEN_CONV_MAX_BATCH, conv1d, native_eltwise
from harness.online.runtime import keep_freed_memory


@pytest.mark.parametrize("batch", [1, ATEN_CONV_MAX_BATCH + 1])  # aten's conv, then oneDNN's
@pytest.mark.parametrize("dilation", [1, 4, 32])
def test_conv1d_equals_f_conv1d_with_gradients(dilation: int, batch: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(batch, 64, 48, requires_grad=True)
    weight = torch.randn(32, 64, 3, requires_grad=True)
    bias = torch.randn(32, requires_grad=True)
    ours = conv1d(x, weight, bias, dilation, dilation)
    reference = F.conv1d(x, weight, bias, padding=dilation, dilation=dilation)
    assert torch.allclose(ours, reference, atol=1e-5)
    grads = torch.autograd.grad(ours.square().sum(), (x, weight, bias))
    ref_grads = torch.autograd.grad(reference.square().sum(), (x, weight, bias))
    for got, want in zip(grads, ref_grads, strict=True):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)


def test_native_eltwise_switches_onednn_off_and_restores_it_after_an_error() -> None:
    before = torch.backends.mkldnn.enabled
    with pytest.raises(RuntimeError):
        with native_eltwise():
            assert torch.backends.mkldnn.enabled is False
            raise RuntimeError("inside")
    assert torch.backends.mkldnn.enabled == before


def test_normalize_over_inputs_equals_f_normalize_including_zero_rows() -> None:
    grad = torch.randn(3, 8, 4, 3)
    grad[1, 2, :, 0] = 0.0
    ours = normalize_over_inputs(grad)
    assert torch.allclose(ours, F.normalize(grad, dim=2), atol=1e-6)
    assert not ours[1, 2, :, 0].any()


def test_layers_of_is_a_view_for_one_layer_and_unbinds_several() -> None:
    one = torch.randn(1, 4, 5)
    assert layers_of(one)[0].data_ptr() == one.data_ptr() and layers_of(one)[0].shape == (4, 5)
    several = layers_of(torch.randn(3, 4, 5))
    assert len(several) == 3 and several[2].shape == (4, 5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_sets_glibc_thresholds_once() -> None:
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True
