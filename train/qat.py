"""Quantization-aware fine-tuning: the network sees, while it trains, the rounding export's INT8 file will apply.

Export quantizes with ONNX Runtime (``export.quantize.Int8Options``): weights per output channel, symmetric, 7 bits
(``reduce_range``); activations per tensor in 8 bits; the stem conv and the classifier left in float; biases in
float. ``install`` gives every other conv of a ResNet exactly that view: its weight rounded per output channel to 7
bits and its input rounded per tensor to symmetric 8 bits over a running range, both with the straight-through estimator
(the gradient passes the rounding unchanged). Per-channel symmetric rounding commutes with BatchNorm's per-channel
scale, so rounding the conv's own weight is rounding the folded one that export writes.

Nothing is added to the state_dict: ``install`` replaces the convs' ``forward`` on the instance, ``remove`` puts it
back, so a checkpoint of a model in training is an ordinary checkpoint, and export's post-training quantization of
the fine-tuned weights (recalibrated on its own images) is what is verified and shipped. PT2E's QAT left torch for
torchao with torch 2.13, and NNCF's torch QAT inserts its own quantizer scheme (8-bit weights, its own placement),
not the one the shipped file uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

WEIGHT_BITS = 7  # export's reduce_range: 7-bit weights, the same answers on every x86 CPU
ACTIVATION_LEVEL = 127  # symmetric int8 activations (export's S8): -127..127, zero point 0
PERCENTILE = 99.99  # export's calibration (Int8Options.percentile) of the activations' magnitudes
MOMENTUM = 0.01  # the running range's update per batch, as torch.ao's moving-average observers
SAMPLE = 1 << 20  # magnitudes kept from one calibration batch of one tensor
QUANTILE_LIMIT = (1 << 24) - 1  # torch.quantile's input limit


@dataclass(frozen=True)
class Int8Check:
    """The student against itself with INT8 rounding simulated, on the teacher's validation split."""

    agreement: float  # top-1 agreement of the rounded network with the float one
    accuracy_fp32: float
    accuracy_int8: float
    images: int

    @property
    def drop_pt(self) -> float:
        return (self.accuracy_fp32 - self.accuracy_int8) * 100

    def passes(self, min_top1: float, max_drop_pt: float) -> bool:
        return self.agreement >= min_top1 and self.drop_pt <= max_drop_pt


def fake_quant_weight(w: torch.Tensor, bits: int = WEIGHT_BITS) -> torch.Tensor:
    """Symmetric per-output-channel rounding to ``bits`` bits, straight-through: ONNX Runtime's reduced-range
    symmetric int8 (levels -64..64, scale = the channel's largest magnitude / 64)."""
    qmax = 2 ** (bits - 1)
    scale = w.detach().abs().amax(dim=tuple(range(1, w.ndim)), keepdim=True).clamp_min(1e-12) / qmax
    return w + ((w / scale).round().clamp(-qmax, qmax) * scale - w).detach()


class ActivationQuant(nn.Module):
    """Per-tensor symmetric int8 rounding (export's S8 activations: zero point 0, levels -127..127). Its range:
    while training, a running mean of each batch's largest magnitude; calibrated, the ``PERCENTILE`` of the
    magnitudes over every calibration image, as ONNX Runtime's percentile calibrator takes it."""

    def __init__(self) -> None:
        super().__init__()
        self.bound: torch.Tensor | None = None
        self.calibrating = False
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            flat = x.detach().abs().flatten().float()
            self.seen.append(flat[torch.randperm(flat.numel())[:SAMPLE]] if flat.numel() > SAMPLE else flat)
            return x
        if self.training or self.bound is None:
            peak = x.detach().abs().amax().float()
            self.bound = peak if self.bound is None else self.bound + MOMENTUM * (peak - self.bound)
        scale = (self.bound / ACTIVATION_LEVEL).clamp_min(1e-12)
        return x + ((x / scale).round().clamp(-ACTIVATION_LEVEL, ACTIVATION_LEVEL) * scale - x).detach()

    def settle(self) -> None:
        """End a calibration: the range is the percentile of everything seen."""
        if self.seen:
            seen = torch.cat(self.seen)
            seen = seen[torch.randperm(seen.numel())[:QUANTILE_LIMIT]] if seen.numel() > QUANTILE_LIMIT else seen
            self.bound = torch.quantile(seen, PERCENTILE / 100)
        self.seen, self.calibrating = [], False


def quantized_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The convs export quantizes: every conv but the stem (``conv1``), which stays in float."""
    return [m for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and name != "conv1"]


def conv_outputs(model: nn.Module) -> list[nn.Module]:
    """The BatchNorms after the quantized convs: export folds each into its conv, whose output (before the ReLU or
    the residual Add) it rounds to 8 bits over that output's own range. The stem's (``bn1``) stays in float."""
    return [m for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and name != "bn1"]


def install(model: nn.Module) -> list[ActivationQuant]:
    """Simulate export's INT8 rounding in ``model`` (the quantized convs' weights, inputs and outputs); returns the
    activation quantizers. ``remove`` undoes it."""
    quants, handles = [], []
    for conv in quantized_convs(model):
        act = ActivationQuant()

        def forward(x: torch.Tensor, conv: nn.Conv2d = conv, act: ActivationQuant = act) -> torch.Tensor:
            act.training = conv.training
            return conv._conv_forward(act(x), fake_quant_weight(conv.weight), conv.bias)

        conv.forward = forward  # an instance attribute: the state_dict and the module tree are untouched
        quants.append(act)
    for bn in conv_outputs(model):
        act = ActivationQuant()

        def rounded(module: nn.Module, _inputs, output: torch.Tensor, act: ActivationQuant = act) -> torch.Tensor:
            act.training = module.training
            return act(output)

        handles.append(bn.register_forward_hook(rounded))
        quants.append(act)
    head = getattr(model, "fc", None)
    if isinstance(head, nn.Linear):  # the classifier stays in float, but reads the pooled features from int8
        act = ActivationQuant()

        def pooled(module: nn.Module, inputs: tuple[torch.Tensor], act: ActivationQuant = act) -> tuple[torch.Tensor]:
            act.training = module.training
            return (act(inputs[0]),)

        handles.append(head.register_forward_pre_hook(pooled))
        quants.append(act)
    model.__dict__["_qat_handles"] = handles
    return quants


def remove(model: nn.Module) -> None:
    for conv in quantized_convs(model):
        conv.__dict__.pop("forward", None)
    for handle in model.__dict__.pop("_qat_handles", ()):
        handle.remove()


@torch.no_grad()
def calibrate(quants: list[ActivationQuant], model: nn.Module, batches) -> None:
    """Set the activation ranges from ``batches`` (normalised inputs), the network in eval mode."""
    model.eval()
    for q in quants:
        q.calibrating = True
    for x in batches:
        model(x)
    for q in quants:
        q.settle()


def check(model: nn.Module, calibration, validation, *, calibration_images: int = 1000) -> Int8Check:
    """``model`` with export's INT8 rounding simulated against itself in float, on ``validation`` (never the test
    set), its activation ranges calibrated on the first images of ``calibration`` (training images)."""
    from train.data import iterate_batches
    from train.evaluate import predict

    cfg = model.config
    kw = dict(mean=cfg.mean, std=cfg.std, image_size=cfg.image_size)
    ref = predict(model, validation, **kw)
    quants = install(model)
    try:
        calibrate(quants, model, (x for x, _ in iterate_batches(calibration.subset(calibration_images), 256, **kw)))
        out = predict(model, validation, **kw)
    finally:
        remove(model)
    labels = validation.labels

    def acc(logits: torch.Tensor) -> float:
        return float((logits.argmax(1) == labels).float().mean())

    return Int8Check(float((out.argmax(1) == ref.argmax(1)).float().mean()), acc(ref), acc(out), len(labels))
