"""The PyTorch reference plug-in the runtime loads by entry point (``runtime.reference``): the runtime may not
import ``train`` or ``export``, and this stage sits above both."""

from __future__ import annotations

from pathlib import Path


def load_model(checkpoint: Path, *, folded: bool = False):
    from export.fold import fold_batchnorm
    from train.checkpoint import load_model as load

    model = load(checkpoint)
    return fold_batchnorm(model) if folded else model


def build_model(manifest):
    """An untrained network of the shape a ``runtime.contract.Manifest`` describes."""
    from train.model import ModelConfig
    from train.model import build_model as build

    m, pre = manifest.model, manifest.preprocessing
    return build(ModelConfig(depth=m.depth, stem=m.stem, in_channels=pre.channels, num_classes=m.num_classes,
                             image_size=pre.image_size)).eval()
