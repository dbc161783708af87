import pytest
import torch
from torch import nn

from export.fold import conv_bn_pairs, count_modules, fold_batchnorm
from export.parity import TOLERANCES, compare
from resnet_edge.errors import InvalidInput
from train.checkpoint import load_model
from train.evaluate import predict
from train.model import resnet18, resnet50

FOLD_RTOL = TOLERANCES["fp32"].max_rel  # folding must be exact up to float32 rounding


def _randomised(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.2, 3.0)
                m.weight.uniform_(0.3, 1.7)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("stem", ["imagenet", "small"])
def test_folded_matches_original_and_has_no_bn(stem):
    model = _randomised(resnet18(stem=stem))
    folded = fold_batchnorm(model)
    x = torch.randn(8, 1, 28, 28)
    ref, out = model(x), folded(x)
    assert (out - ref).abs().max() <= FOLD_RTOL * ref.abs().max()
    assert count_modules(folded, nn.BatchNorm2d) == 0
    assert count_modules(folded, nn.Conv2d) == 20
    assert all(c.bias is not None for c in folded.modules() if isinstance(c, nn.Conv2d))
    assert count_modules(model, nn.BatchNorm2d) == 20  # the original is untouched
    assert not folded.training


def test_shortcut_projection_is_folded():
    model = _randomised(resnet18())
    folded = fold_batchnorm(model)
    sc, ref_sc = folded.layer3[0].downsample, model.layer3[0].downsample
    assert isinstance(sc[1], nn.Identity) and sc[0].bias is not None
    x = torch.randn(2, 128, 4, 4)
    assert torch.allclose(sc(x), ref_sc(x), atol=1e-5)


def test_bottleneck_blocks_fold_all_four_bns_by_structure():
    model = _randomised(resnet50(in_channels=3, num_classes=7))
    assert len(conv_bn_pairs(model)) == 53  # the stem, 16 blocks x 3, and 4 downsample projections
    folded = fold_batchnorm(model)
    x = torch.randn(2, 3, 64, 64)
    ref, out = model(x), folded(x)
    assert count_modules(folded, nn.BatchNorm2d) == 0
    assert (out - ref).abs().max() <= FOLD_RTOL * ref.abs().max()


def test_pairs_come_from_the_graph_not_the_names():
    class Odd(nn.Module):  # names that no pattern would pair, and a BN registered before its conv
        def __init__(self):
            super().__init__()
            self.norm = nn.BatchNorm2d(4)
            self.first = nn.Conv2d(1, 4, 3, bias=False)

        def forward(self, x):
            return self.norm(self.first(x))

    model = _randomised(Odd())
    assert conv_bn_pairs(model) == [("first", "norm")]
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(fold_batchnorm(model)(x), model(x), atol=1e-5)


def test_fold_is_computed_in_float64():
    conv = nn.Conv2d(1, 1, 1, bias=False)
    bn = nn.BatchNorm2d(1, eps=1e-5).eval()
    with torch.no_grad():
        conv.weight.fill_(1.0)
        bn.running_var.fill_(1e-7)  # tiny variance: large scale, where float32 would lose digits
        bn.running_mean.fill_(1e-3)
    model = nn.Module()
    model.conv1, model.bn1 = conv, bn
    model.forward = lambda x: model.bn1(model.conv1(x))
    folded = fold_batchnorm(model.eval())
    expected = (1.0 / (1e-7 + 1e-5) ** 0.5)
    assert folded.conv1.weight.item() == pytest.approx(expected, rel=1e-7)


def test_training_mode_is_refused():
    with pytest.raises(InvalidInput, match="eval mode"):
        fold_batchnorm(resnet18().train())


def test_orphan_bn_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)).eval()
    with pytest.raises(InvalidInput, match="BatchNorm '2' follows no conv"):
        fold_batchnorm(model)


def test_folding_on_real_test_images(trained_ckpt, fmnist):
    model = load_model(trained_ckpt)
    cfg = model.config
    kw = dict(mean=cfg.mean, std=cfg.std, image_size=cfg.image_size)
    test = fmnist.test.subset(3000)  # export itself checks the fold on every evaluation image (manifest "fold")
    stats = compare(predict(model, test, **kw).numpy(), predict(fold_batchnorm(model), test, **kw).numpy(),
                    labels=test.labels.numpy())
    assert stats.max_rel <= FOLD_RTOL
    assert stats.top1_agreement == 1.0 and stats.n == 3000
