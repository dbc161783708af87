import pytest
import torch
from torch import nn

from resnet_edge.errors import InvalidInput
from train.model import (
    STAGES,
    WIDTHS,
    BasicBlock,
    Bottleneck,
    ModelConfig,
    ResNet,
    conv_in_training,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
)


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_resnet18_parameter_count_is_pinned():
    # torchvision's resnet18 (11,689,512) less 2 input channels of conv1 and a 10-class head.
    assert _params(resnet18(in_channels=1, num_classes=10)) == 11_175_370


@pytest.mark.parametrize(("build", "count"), [(resnet18, 11_689_512), (resnet34, 21_797_672), (resnet50, 25_557_032),
                                              (resnet101, 44_549_160), (resnet152, 60_192_808)])
def test_the_family_matches_torchvisions_published_parameter_counts(build, count):
    assert _params(build(in_channels=3, num_classes=1000)) == count


def test_torchvision_module_names_and_the_bottleneck_stride_on_the_3x3():
    m = resnet50(in_channels=3, num_classes=1000)
    keys = set(m.state_dict())
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.conv3.weight", "layer1.0.bn3.num_batches_tracked",
                "layer1.0.downsample.0.weight", "layer1.0.downsample.1.bias", "layer4.2.conv2.weight", "fc.bias"):
        assert key in keys
    assert not any("shortcut" in k for k in keys)
    block = m.layer2[0]
    assert isinstance(block, Bottleneck) and block.conv2.stride == (2, 2) and block.conv1.stride == (1, 1)
    assert block.downsample[0].stride == (2, 2) and m.fc.in_features == 2048
    assert m(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


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
    kind, counts = STAGES[18]
    assert kind == "basic"
    for blocks, width, stage in zip(counts, WIDTHS, m.stages()):
        assert len(stage) == blocks
        assert all(isinstance(b, BasicBlock) and b.conv2.out_channels == width for b in stage)
    # Only the first block of stages 2-4 downsamples, with a 1x1 conv + BN shortcut.
    projections = [name for name, mod in m.named_modules() if name.endswith("downsample") and mod is not None]
    assert projections == ["layer2.0.downsample", "layer3.0.downsample", "layer4.0.downsample"]
    assert m.layer2[0].downsample[0].kernel_size == (1, 1) and m.layer2[0].downsample[0].stride == (2, 2)


def test_every_conv_feeds_a_bn_without_bias():
    m = resnet18()
    convs = {n: c for n, c in m.named_modules() if isinstance(c, nn.Conv2d)}
    assert len(convs) == 20
    for name, conv in convs.items():
        assert conv.bias is None
        bn_name = name[:-1] + "1" if name.endswith("downsample.0") else name.replace("conv", "bn")
        bn = m.get_submodule(bn_name)
        assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels


def test_config_round_trip_and_bad_depth():
    cfg = ModelConfig(depth=34, stem="small", image_size=96, class_names=("a", "b"), num_classes=2)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(InvalidInput, match="depth 26"):
        ResNet(ModelConfig(depth=26))


@pytest.mark.parametrize(("size", "stride"), [(1, 1), (2, 2), (2, 1), (4, 2)])
def test_training_convs_skip_only_taps_that_meet_padding(size, stride, monkeypatch):
    """Same output and gradients as the plain conv, in training mode, whether or not the cropped kernel is used:
    on 1x1 (stride 1) and 2x2 (stride 2) inputs only the taps over the image run; elsewhere the conv runs as is."""
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 48, 3, stride=stride, padding=1, bias=False).train()
    x = torch.randn(8, 32, size, size, requires_grad=True)
    calls = []
    monkeypatch.setattr(nn.Conv2d, "forward", lambda self, t, f=nn.Conv2d.forward: calls.append(1) or f(self, t))
    ours = conv_in_training(conv, x)
    cropped = not calls
    (g_x, g_w) = torch.autograd.grad(ours.square().sum(), (x, conv.weight))
    plain = nn.functional.conv2d(x, conv.weight, stride=stride, padding=1)
    (p_x, p_w) = torch.autograd.grad(plain.square().sum(), (x, conv.weight))
    assert cropped == ((size, stride) in {(1, 1), (2, 2)})
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_x, p_x, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(g_w, p_w, rtol=1e-5, atol=1e-4)
    if cropped:  # the taps over padding get exactly the zero gradient they get from the padded conv
        over_image = torch.zeros(3, 3, dtype=torch.bool)
        over_image[1:1 + size, 1:1 + size] = True
        assert torch.count_nonzero(g_w[:, :, ~over_image]) == 0 == torch.count_nonzero(p_w[:, :, ~over_image])
    calls.clear()
    conv.eval()
    conv_in_training(conv, x)
    assert calls  # eval mode, what export traces and folds, runs the module itself
