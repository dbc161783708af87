"""`resnet-edge import`: torchvision-layout state_dicts, plain or wrapped, become project checkpoints."""

import re
import subprocess
import sys

import pytest
import torch

from resnet_edge.errors import CheckpointError, InvalidInput
from train.checkpoint import Checkpoint, load_model
from train.importer import IMAGENET_MEAN, import_weights
from train.model import resnet50


@pytest.fixture(scope="module")
def torchvision_like():
    """A ResNet-50 state_dict with torchvision's names and shapes (3 channels, 5 classes), non-trivial BN."""
    torch.manual_seed(0)
    model = resnet50(in_channels=3, num_classes=5).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "ddp"])
def test_import_plain_wrapped_and_ddp_state_dicts(torchvision_like, tmp_path, wrap):
    model, sd = torchvision_like
    obj = {"plain": sd, "state_dict": {"state_dict": sd, "epoch": 7}, "model": {"model": sd},
           "ddp": {f"module.{k}": v for k, v in sd.items()}}[wrap]
    torch.save(obj, tmp_path / "w.pth")
    out = tmp_path / "ck" / "imported.pt"
    out.parent.mkdir()
    import_weights(tmp_path / "w.pth", arch="resnet50", num_classes=5, image_size=64, out=out)
    loaded = load_model(out)
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(loaded(x), model(x))
    ckpt = Checkpoint.read(out)
    cfg = ckpt.config
    assert cfg.mean == IMAGENET_MEAN and cfg.depth == 50 and cfg.class_names[0] == "class_0"
    assert ckpt.train_config is None and ckpt.imported_from == {"weights": str(tmp_path / "w.pth"), "arch": "resnet50"}
    # torchvision's evaluation transform by default: Resize(round(64 * 256 / 224)) then CenterCrop(64)
    assert (cfg.source_size, cfg.source_resize) == (64, 73)


def test_class_names_from_a_file_or_a_dataset_folder(torchvision_like, tmp_path):
    _, sd = torchvision_like
    torch.save(sd, tmp_path / "w.pth")
    (tmp_path / "classes.txt").write_text("cat\ndog\nfox\nowl\nyak\n")
    for c in ("yak", "cat", "owl", "dog", "fox"):
        (tmp_path / "data" / "train" / c).mkdir(parents=True)
    for kw, expected in (({"classes": tmp_path / "classes.txt"}, ["cat", "dog", "fox", "owl", "yak"]),
                         ({"data": tmp_path / "data"}, ["cat", "dog", "fox", "owl", "yak"])):
        import_weights(tmp_path / "w.pth", arch="resnet50", num_classes=5, image_size=64, out=tmp_path / "c.pt", **kw)
        assert list(Checkpoint.read(tmp_path / "c.pt").config.class_names) == expected
    with pytest.raises(InvalidInput, match="names 5 classes, but --num-classes is 4"):
        import_weights(tmp_path / "w.pth", arch="resnet50", num_classes=4, image_size=64, out=tmp_path / "x.pt",
                       classes=tmp_path / "classes.txt")


def test_mismatches_name_the_first_key_and_write_nothing(torchvision_like, tmp_path):
    _, sd = torchvision_like
    cases = {
        "missing": ({k: v for k, v in sd.items() if k != "layer3.1.conv2.weight"}, "resnet50", 5,
                    "lacks 'layer3.1.conv2.weight', which a resnet50 with 3 input channels and 5 classes needs with "
                    "shape [256, 256, 3, 3]"),
        "unexpected": ({**sd, "aux.weight": torch.zeros(3)}, "resnet50", 5, "holds 'aux.weight' (shape [3])"),
        "head": (sd, "resnet50", 10, "'fc.weight' has shape [5, 2048]"),
        "arch": (sd, "resnet18", 5, "shape"),
    }
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for name, (weights, arch, classes, match) in cases.items():
        torch.save(weights, tmp_path / f"{name}.pth")
        with pytest.raises(CheckpointError, match=re.escape(match)):
            import_weights(tmp_path / f"{name}.pth", arch=arch, num_classes=classes, image_size=64,
                           out=out_dir / f"{name}.pt")
        assert not list(out_dir.iterdir())  # nothing written, not even a temporary file


def test_cli_one_sentence_and_exit_2(torchvision_like, tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"state_dict": {"x": Evil()}}, tmp_path / "evil.pth")
    (tmp_path / "text.pth").write_text("not weights")
    for weights, match in ((tmp_path / "evil.pth", "refused unread"), (tmp_path / "text.pth", "not a"),
                           (tmp_path / "nope.pth", "does not exist")):
        res = subprocess.run([sys.executable, "-m", "resnet_edge", "import", str(weights), "--arch", "resnet50",
                              "--num-classes", "5", "--image-size", "64", "--out", str(tmp_path / "o.pt")],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and match in res.stderr and "Traceback" not in res.stderr and "ran" not in res.stdout
    assert not (tmp_path / "o.pt").exists()
