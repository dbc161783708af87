"""The ResNet family of He et al. (2015), with the architecture given as data.

``resnet18(in_channels=1, num_classes=10)`` is the seed network of DEVELOPERS.md:
a 7x7/2 stem with 64 channels, BN, ReLU and a 3x3/2 max-pool, four stages of two
basic blocks (64/128/256/512 channels), global average pooling and a linear head.
Every conv that feeds a BatchNorm has ``bias=False`` and a named partner
(``conv1``/``bn1``, ``conv2``/``bn2``, ``shortcut.conv``/``shortcut.bn``), so that
BN folding in the export stage is a walk over known pairs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum

import torch
from torch import nn

from resnet_edge.errors import InvalidInput

STAGES: dict[int, tuple[tuple[int, int], ...]] = {
    18: ((2, 64), (2, 128), (2, 256), (2, 512)),
    34: ((3, 64), (4, 128), (6, 256), (3, 512)),
}


class Stem(str, Enum):
    IMAGENET = "imagenet"  # 7x7 stride-2 conv + 3x3 stride-2 max-pool
    SMALL = "small"  # 3x3 stride-1 conv, no pool, for low-resolution inputs


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network and feed it; stored in checkpoints."""

    depth: int = 18
    stem: str = Stem.IMAGENET.value
    in_channels: int = 1
    num_classes: int = 10
    image_size: int = 28
    class_names: tuple[str, ...] = field(default_factory=tuple)
    mean: float = 0.0
    std: float = 1.0
    resize: str = "bilinear"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["class_names"] = tuple(known.get("class_names", ()))
        return cls(**known)


class Shortcut(nn.Module):
    """1x1 projection + BN on the shortcut of a block that changes shape."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class BasicBlock(nn.Module):
    """ReLU(F(x) + shortcut(x)) with F = conv3x3-BN-ReLU-conv3x3-BN."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        needs_projection = stride != 1 or in_ch != out_ch
        self.shortcut: nn.Module = Shortcut(in_ch, out_ch, stride) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.depth not in STAGES:
            raise InvalidInput(f"ResNet depth {config.depth} is not supported; choose one of {sorted(STAGES)}.")
        stem = Stem(config.stem)
        self.config = config
        if stem is Stem.IMAGENET:
            self.conv1 = nn.Conv2d(config.in_channels, 64, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(config.in_channels, 64, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        in_ch = 64
        for i, (blocks, width) in enumerate(STAGES[config.depth], start=1):
            stride = 1 if i == 1 else 2
            layers = [BasicBlock(in_ch, width, stride)] + [BasicBlock(width, width) for _ in range(blocks - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*layers))
            in_ch = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each residual branch, so each block starts as identity.
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the four stages, for inspection and tests."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for stage in self.stages():
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)[-1]
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _resnet(depth: int, **kwargs) -> ResNet:
    return ResNet(ModelConfig(depth=depth, **kwargs))


def resnet18(in_channels: int = 1, num_classes: int = 10, **kwargs) -> ResNet:
    return _resnet(18, in_channels=in_channels, num_classes=num_classes, **kwargs)


def resnet34(in_channels: int = 1, num_classes: int = 10, **kwargs) -> ResNet:
    return _resnet(34, in_channels=in_channels, num_classes=num_classes, **kwargs)


def build_model(config: ModelConfig) -> ResNet:
    return ResNet(config)
