"""Exact BatchNorm folding: every conv -> BN pair becomes one conv with a bias.

W' = W * g / sqrt(var + eps) and b' = (b - mean) * g / sqrt(var + eps) + beta, computed
in float64 and cast back, so the folded model matches the original to float32 rounding.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from resnet_edge.errors import InvalidInput


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv equal to ``bn(conv(x))`` for an eval-mode BN."""
    if conv.out_channels != bn.num_features:
        raise InvalidInput(f"Cannot fold a BatchNorm of {bn.num_features} features into a conv of "
                           f"{conv.out_channels} output channels.")
    if bn.running_mean is None or bn.running_var is None:
        raise InvalidInput("Cannot fold a BatchNorm that tracks no running statistics.")
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                      padding_mode=conv.padding_mode)
    w = conv.weight.detach().to(torch.float64)
    b = conv.bias.detach().to(torch.float64) if conv.bias is not None else torch.zeros(conv.out_channels, dtype=torch.float64)
    gamma = bn.weight.detach().to(torch.float64) if bn.affine else torch.ones_like(b)
    beta = bn.bias.detach().to(torch.float64) if bn.affine else torch.zeros_like(b)
    scale = gamma / torch.sqrt(bn.running_var.to(torch.float64) + bn.eps)
    fused.weight.copy_((w * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
    fused.bias.copy_(((b - bn.running_mean.to(torch.float64)) * scale + beta).to(conv.weight.dtype))
    return fused.to(conv.weight.device).eval()


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv, BN) module pairs to fold, found by structure, not by name: in the graph torch.fx traces, a BN whose
    input is a conv's output that feeds nothing else. A model fx cannot trace falls back to its module tree:
    each BN pairs with the conv registered just before it under the same parent. (Export then holds the folded
    model to the unfolded one, so a pairing that changed the function could not pass unnoticed.)"""
    modules = dict(model.named_modules())
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # fx raises many kinds (TraceError, NotImplementedError, TypeError...) on untraceable code
        return _pairs_by_order(model)
    pairs = []
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), nn.modules.batchnorm._BatchNorm):
            src = node.args[0] if node.args else None
            if (isinstance(src, torch.fx.Node) and src.op == "call_module"
                    and isinstance(modules.get(src.target), nn.Conv2d) and len(src.users) == 1):
                pairs.append((str(src.target), str(node.target)))
    return pairs


def _pairs_by_order(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for parent_name, parent in model.named_modules():
        last_conv = None
        for name, child in parent.named_children():
            full = f"{parent_name}.{name}" if parent_name else name
            if isinstance(child, nn.Conv2d):
                last_conv = full
            elif isinstance(child, nn.modules.batchnorm._BatchNorm) and last_conv is not None:
                pairs.append((last_conv, full))
                last_conv = None
    return pairs


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Return a new eval-mode model in which every BatchNorm is folded into the conv that feeds it.

    Pairs come from the model's structure (:func:`conv_bn_pairs`): the stem's ``conv1``/``bn1``, each block's
    two or three conv/BN pairs and its ``downsample`` projection. Each BN is replaced by ``nn.Identity``. A BN with
    no conv to fold into, or a model in training mode (whose BN would use batch statistics), is an error.
    """
    if model.training:
        raise InvalidInput("fold_batchnorm needs a model in eval mode; call model.eval() first, "
                           "since a training-mode BatchNorm uses batch statistics and cannot be folded.")
    folded = copy.deepcopy(model)
    modules = dict(folded.named_modules())
    bns = {n for n, m in modules.items() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    paired = set()
    for conv_name, bn_name in conv_bn_pairs(folded):
        _set(folded, conv_name, fuse_conv_bn(modules[conv_name], modules[bn_name]))
        _set(folded, bn_name, nn.Identity())
        paired.add(bn_name)
    orphans = sorted(bns - paired)
    if orphans:
        raise InvalidInput(f"BatchNorm '{orphans[0]}' follows no conv it can be folded into.")
    return folded.eval()


def count_modules(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def _set(root: nn.Module, dotted: str, module: nn.Module) -> None:
    parent, _, leaf = dotted.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)
