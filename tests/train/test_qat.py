"""Quantization-aware fine-tuning: the rounding simulated in the loop is ONNX Runtime's, and leaves no trace in the
checkpoint."""

import numpy as np
import pytest
import torch

from train import qat
from train.model import resnet18


def test_weight_rounding_is_onnx_runtimes_reduced_range_symmetric_int8():
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data

    w = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    ours = qat.fake_quant_weight(w)
    for c in range(w.shape[0]):
        _zero, scale, q = quantize_data(w[c].flatten().numpy(), TensorProto.INT8, True, reduce_range=True)
        assert np.abs(q).max() <= 64  # 7-bit: export's reduce_range
        np.testing.assert_allclose(ours[c].flatten().numpy(), q.astype(np.float32) * scale, rtol=0, atol=1e-7)


def test_rounding_is_straight_through():
    w = torch.randn(4, 2, 3, 3, requires_grad=True)
    (qat.fake_quant_weight(w) * torch.arange(4.0).view(4, 1, 1, 1)).sum().backward()
    assert torch.equal(w.grad, torch.arange(4.0).view(4, 1, 1, 1).expand_as(w))  # the gradient passes unchanged


def test_install_rounds_the_quantized_convs_and_remove_restores_the_float_network():
    torch.manual_seed(0)
    model = resnet18().eval()
    with torch.no_grad():  # a trained network's BNs (a fresh one zeroes each block's last BN: nothing to round)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    x = torch.randn(8, 1, 28, 28)
    keys = list(model.state_dict())
    with torch.no_grad():
        ref = model(x)
        quants = qat.install(model)
        assert model.conv1 not in qat.quantized_convs(model) and len(qat.quantized_convs(model)) == 19  # 16 + 3 shortcuts
        qat.calibrate(quants, model, [x])
        rounded = model(x)
        assert list(model.state_dict()) == keys  # nothing added to the checkpoint's tensors
        assert len(quants) == 19 + 19 + 1 and all(q.bound > 0 for q in quants)  # inputs, outputs, fc's input
        qat.remove(model)
        assert torch.equal(model(x), ref)
    assert not torch.equal(rounded, ref)
    assert torch.nn.functional.cosine_similarity(rounded.flatten(), ref.flatten(), dim=0) > 0.99


def test_calibrated_range_is_the_percentile_of_the_magnitudes():
    act = qat.ActivationQuant()
    act.calibrating = True
    x = torch.linspace(-1, 1, 200_001)
    act(x)
    act.settle()
    assert act.bound == pytest.approx(torch.quantile(x.abs(), qat.PERCENTILE / 100).item(), rel=1e-6)
    y = act(torch.tensor([0.5, 2.0]))  # beyond the range: clipped to it
    assert y[1] == pytest.approx(act.bound.item(), rel=1e-6)
    assert (y[0] - 0.5).abs() <= act.bound / qat.ACTIVATION_LEVEL / 2 + 1e-7
