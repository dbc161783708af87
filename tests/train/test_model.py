import pytest
import torch
from torch import nn

from resnet_edge.errors import InvalidInput
from train.model import STAGES, BasicBlock, ModelConfig, ResNet, resnet18, resnet34


def test_resnet18_parameter_count_is_pinned():
    # torchvision's resnet18 (11,689,512) less 2 input channels of conv1 and a 10-class head.
    assert sum(p.numel() for p in resnet18(in_channels=1, num_classes=10).parameters()) == 11_175_370


def test_resnet34_parameter_count():
    assert sum(p.numel() for p in resnet34(in_channels=1, num_classes=10).parameters()) == 21_283_530


def test_stage_shapes_at_96px():
    feats = resnet18(image_size=96).forward_features(torch.zeros(2, 1, 96, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 24, 24), (128, 12, 12), (256, 6, 6), (512, 3, 3)]


def test_stage_shapes_at_28px_and_small_stem():
    assert [tuple(f.shape[1:]) for f in resnet18().eval().forward_features(torch.zeros(1, 1, 28, 28))] == [
        (64, 7, 7), (128, 4, 4), (256, 2, 2), (512, 1, 1)]
    small = resnet18(stem="small").eval().forward_features(torch.zeros(1, 1, 28, 28))
    assert [tuple(f.shape[1:]) for f in small] == [(64, 28, 28), (128, 14, 14), (256, 7, 7), (512, 4, 4)]


def test_logits_shape_and_stem_layout():
    m = resnet18().eval()
    assert m(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert (m.conv1.kernel_size, m.conv1.stride, m.conv1.out_channels) == ((7, 7), (2, 2), 64)
    assert isinstance(m.maxpool, nn.MaxPool2d) and m.maxpool.kernel_size == 3 and m.maxpool.stride == 2


def test_architecture_follows_the_stage_table():
    m = resnet18()
    for (blocks, width), stage in zip(STAGES[18], m.stages()):
        assert len(stage) == blocks
        assert all(isinstance(b, BasicBlock) and b.conv2.out_channels == width for b in stage)
    # Only the first block of stages 2-4 downsamples, with a 1x1 conv + BN shortcut.
    projections = [name for name, mod in m.named_modules() if name.endswith("shortcut") and not isinstance(mod, nn.Identity)]
    assert projections == ["layer2.0.shortcut", "layer3.0.shortcut", "layer4.0.shortcut"]
    assert m.layer2[0].shortcut.conv.kernel_size == (1, 1) and m.layer2[0].shortcut.conv.stride == (2, 2)


def test_every_conv_feeds_a_named_bn_without_bias():
    m = resnet18()
    convs = {n: c for n, c in m.named_modules() if isinstance(c, nn.Conv2d)}
    assert len(convs) == 20
    for name, conv in convs.items():
        assert conv.bias is None
        bn_name = name[:-len("conv")] + "bn" if name.endswith("shortcut.conv") else name.replace("conv", "bn")
        bn = m.get_submodule(bn_name)
        assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels


def test_config_round_trip_and_bad_depth():
    cfg = ModelConfig(depth=34, stem="small", image_size=96, class_names=("a", "b"), num_classes=2)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(InvalidInput, match="depth 50"):
        ResNet(ModelConfig(depth=50))
