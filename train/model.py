"""The ResNet family of He et al. (2015) with torchvision's exact module layout, the architecture given as data.

``resnet18(in_channels=1, num_classes=10)`` is the seed network of DEVELOPERS.md: a 7x7/2 stem with 64 channels,
BN, ReLU and a 3x3/2 max-pool, four stages of two basic blocks (64/128/256/512 channels), global average pooling
and a linear head. ResNet-34 has basic blocks too; ResNet-50/101/152 have bottleneck blocks, with the stride on
the 3x3 conv. Module names are torchvision's (``conv1``, ``bn1``, ``layer{1..4}.{i}.conv1/bn1/conv2/bn2[/conv3/
bn3]``, ``downsample.0/.1``, ``fc``), so a torchvision ``state_dict`` loads with no renaming. Every conv that feeds
a BatchNorm has ``bias=False``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from resnet_edge.errors import InvalidInput

# depth: (block, blocks per stage); the stages are 64/128/256/512 wide (x4 at a Bottleneck's output).
STAGES: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    10: ("basic", (1, 1, 1, 1)),  # the shallow student `resnet-edge compress --depth 10` distils
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
WIDTHS = (64, 128, 256, 512)
# Checkpoints written before the module names followed torchvision's: old prefix -> new prefix.
LEGACY_NAMES = ((".shortcut.conv.", ".downsample.0."), (".shortcut.bn.", ".downsample.1."))


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
    mean: float | tuple[float, ...] = 0.0  # one value for every channel, or one per channel
    std: float | tuple[float, ...] = 1.0
    resize: str = "bilinear"
    source_size: int = 28  # the images the data is stored as; ``image_size`` is reached from them by ``resize``
    source_resize: int | None = None  # None: stretch any image to source_size; else shorter side, then centre crop
    # Channel widths, as data: a compressed (channel-pruned) network has its own (``resnet-edge compress``).
    stem_width: int = 64
    widths: tuple[int, ...] = WIDTHS  # each stage's block width (x4 at a Bottleneck's output)
    block_widths: tuple[tuple[int, ...], ...] = ()  # the inner width of each block of each stage; () = its stage's

    @property
    def mean_per_channel(self) -> tuple[float, ...]:
        return _per_channel(self.mean, self.in_channels)

    @property
    def std_per_channel(self) -> tuple[float, ...]:
        return _per_channel(self.std, self.in_channels)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        for key in ("mean", "std"):
            d[key] = list(d[key]) if isinstance(d[key], tuple) else d[key]
        d["widths"] = list(self.widths)
        d["block_widths"] = [list(b) for b in self.block_widths]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["class_names"] = tuple(known.get("class_names", ()))
        for key in ("mean", "std"):
            if isinstance(known.get(key), list):
                known[key] = tuple(float(v) for v in known[key])
        if "widths" in known:
            known["widths"] = tuple(int(w) for w in known["widths"])
        if "block_widths" in known:
            known["block_widths"] = tuple(tuple(int(w) for w in b) for b in known["block_widths"])
        return cls(**known)

    @property
    def compressed(self) -> bool:
        return (self.stem_width, tuple(self.widths), self.block_widths) != (64, WIDTHS, ())


def _per_channel(value: float | tuple[float, ...], channels: int) -> tuple[float, ...]:
    values = tuple(value) if isinstance(value, (tuple, list)) else (float(value),) * channels
    if len(values) != channels:
        raise InvalidInput(f"{len(values)} mean/std values for {channels} channels.")
    return values


def _downsample(in_ch: int, out_ch: int, stride: int) -> nn.Sequential | None:
    """1x1 projection + BN on the shortcut of a block that changes shape (torchvision's ``downsample``)."""
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))


def conv_in_training(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``; in training, a conv with one output pixel whose window covers the whole input (a 3x3 conv on
    stage 4's 1x1 maps at 28 px, or its stride-2 3x3 on 2x2) runs on the kernel taps that meet the image only.

    The taps it drops only ever meet zero padding, so the output is the same sum and their gradient is the zero it
    would be anyway; oneDNN's backward for the padded 3x3 shape is about 20x slower than for the cropped one (225
    against 13 ms at 256x512x1x1 on a 2-core AVX2 CPU), and those three convs were half of a training step. In eval
    mode (what export traces and folds) the conv runs as it is.
    """
    h, w = x.shape[-2:]
    (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
    if (not conv.training or not isinstance(conv.padding, tuple) or conv.groups != 1 or conv.dilation != (1, 1)
            or conv.padding_mode != "zeros"):
        return conv(x)
    ph, pw = conv.padding
    one_pixel = h + 2 * ph - kh < sh and w + 2 * pw - kw < sw
    if not (one_pixel and h + ph <= kh and w + pw <= kw):
        return conv(x)
    return F.conv2d(x, conv.weight[:, :, ph:ph + h, pw:pw + w], conv.bias)


class BasicBlock(nn.Module):
    """ReLU(F(x) + shortcut(x)) with F = conv3x3-BN-ReLU-conv3x3-BN (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1, inner: int | None = None) -> None:
        super().__init__()
        inner = inner or width
        self.conv1 = nn.Conv2d(in_ch, inner, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(inner, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = _downsample(in_ch, width, stride)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(conv_in_training(self.conv1, x)))
        out = self.bn2(conv_in_training(self.conv2, out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ReLU(F(x) + shortcut(x)) with F = conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1-BN (ResNet-50/101/152). The
    stride sits on the 3x3 conv, as in torchvision ("ResNet V1.5")."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1, inner: int | None = None) -> None:
        super().__init__()
        if inner not in (None, width):
            raise InvalidInput("Bottleneck blocks take no separate inner width; compress supports basic blocks.")
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_ch, out_ch, stride)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(conv_in_training(self.conv2, out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.depth not in STAGES:
            raise InvalidInput(f"ResNet depth {config.depth} is not supported; choose one of {sorted(STAGES)}.")
        stem = Stem(config.stem)
        self.config = config
        kind, counts = STAGES[config.depth]
        inner = config.block_widths or tuple((w,) * n for w, n in zip(config.widths, counts))
        if len(config.widths) != 4 or [len(b) for b in inner] != list(counts) or \
                min((config.stem_width, *config.widths, *(w for b in inner for w in b))) < 1:
            raise InvalidInput(f"The widths {config.widths} / {inner} do not describe a ResNet-{config.depth} "
                               f"({', '.join(map(str, counts))} blocks a stage).")
        c0 = config.stem_width
        if stem is Stem.IMAGENET:
            self.conv1 = nn.Conv2d(config.in_channels, c0, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(config.in_channels, c0, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(c0)
        self.relu = nn.ReLU(inplace=True)
        block = BLOCKS[kind]
        in_ch = c0
        for i, (width, inner_widths) in enumerate(zip(config.widths, inner), start=1):
            layers = []
            for j, w in enumerate(inner_widths):
                layers.append(block(in_ch, width, 2 if i > 1 and j == 0 else 1,
                                    None if config.block_widths == () else w))
                in_ch = width * block.expansion
            self.add_module(f"layer{i}", nn.Sequential(*layers))
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
            if isinstance(m, (BasicBlock, Bottleneck)):
                nn.init.zeros_(m.last_bn.weight)

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


def resnet50(in_channels: int = 1, num_classes: int = 10, **kwargs) -> ResNet:
    return _resnet(50, in_channels=in_channels, num_classes=num_classes, **kwargs)


def resnet101(in_channels: int = 1, num_classes: int = 10, **kwargs) -> ResNet:
    return _resnet(101, in_channels=in_channels, num_classes=num_classes, **kwargs)


def resnet152(in_channels: int = 1, num_classes: int = 10, **kwargs) -> ResNet:
    return _resnet(152, in_channels=in_channels, num_classes=num_classes, **kwargs)


def upgrade_state_dict(state_dict: dict) -> dict:
    """A state_dict with the module names of checkpoints written before torchvision's layout mapped to it."""
    out = {}
    for key, value in state_dict.items():
        for old, new in LEGACY_NAMES:
            key = key.replace(old, new)
        out[key] = value
    return out


def build_model(config: ModelConfig) -> ResNet:
    return ResNet(config)
