import os
import pickle
import subprocess
import sys

import pytest
import torch

from resnet_edge.errors import CheckpointError
from train.checkpoint import Checkpoint, Metrics, load_model
from train.model import ModelConfig, resnet18


def _save(path, model=None, cfg=None, **kw):
    cfg = cfg or ModelConfig(class_names=tuple("abcdefghij"), mean=0.28, std=0.35)
    model = model or resnet18()
    return Checkpoint.of(model, cfg, epoch=3, metrics=Metrics(test_acc=0.9), **kw).write(path)


def test_round_trip_rebuilds_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = resnet18().eval()
    with torch.no_grad():  # non-trivial BN statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
    path = _save(tmp_path / "c.pt", model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    loaded = load_model(path)
    assert not loaded.training
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))
    ckpt = torch.load(path, weights_only=True)  # a plain, safe dict
    assert ckpt["config"]["mean"] == 0.28 and ckpt["config"]["class_names"][0] == "a"
    for key in ("image_size", "mean", "std", "num_classes", "class_names", "depth", "stem"):
        assert key in ckpt["config"]
    assert {"torch", "numpy", "python"} <= set(ckpt["versions"]) and ckpt["created"].endswith("+00:00")


def test_no_temporary_files_left_behind(tmp_path):
    _save(tmp_path / "c.pt")
    _save(tmp_path / "c.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_atomic_writes_honour_the_umask_without_touching_it(tmp_path, monkeypatch):
    import os

    from resnet_edge.atomic import atomic_write_text

    previous = os.umask(0o027)
    try:
        def no_umask(*_):  # another thread may create files meanwhile: the process-wide umask must stay put
            raise AssertionError("atomic writes must not change the process umask")

        monkeypatch.setattr(os, "umask", no_umask)
        path = atomic_write_text(tmp_path / "a.json", "{}")
        assert path.read_text() == "{}" and (path.stat().st_mode & 0o777) == 0o640
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    finally:
        monkeypatch.undo()
        os.umask(previous)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        Checkpoint.read(tmp_path / "x.pt")


def test_plain_state_dict_is_not_ours(tmp_path):
    torch.save(resnet18().state_dict(), tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="not a resnet-edge checkpoint"):
        Checkpoint.read(tmp_path / "sd.pt")


def test_truncated(tmp_path):
    path = _save(tmp_path / "c.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(path)


def test_other_architecture(tmp_path):
    path = _save(tmp_path / "c.pt", model=resnet18(stem="small"))  # config says imagenet stem
    with pytest.raises(CheckpointError, match="another architecture"):
        load_model(path)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"format": "resnet-edge-checkpoint", "payload": evil}, fh)
    torch.save({"format": "resnet-edge-checkpoint", "x": evil}, tmp_path / "evil_zip.pt")
    for name in ("evil.pt", "evil_zip.pt"):
        with pytest.raises(CheckpointError, match="could run code|not a PyTorch checkpoint"):
            Checkpoint.read(tmp_path / name)
    assert not marker.exists()


def test_missing(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Checkpoint.read(tmp_path / "nope.pt")


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "resnet_edge", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("content", [b"not a checkpoint", b"PK\x03\x04 truncated zip"])
def test_cli_bad_checkpoint_is_one_sentence_exit_2(tmp_path, content):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    out = tmp_path / "report.json"
    out.write_text("keep me")
    res = _cli("eval", str(bad), "--json", str(out))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and res.stderr.count("error:") == 1
    assert str(bad) in res.stderr
    assert out.read_text() == "keep me" and bad.read_bytes() == content


def test_checkpoints_from_before_torchvisions_names_still_load(tmp_path):
    torch.manual_seed(1)
    model = resnet18().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2)
    path = _save(tmp_path / "new.pt", model)
    ckpt = torch.load(path, weights_only=True)
    old = {k.replace(".downsample.0.", ".shortcut.conv.").replace(".downsample.1.", ".shortcut.bn."): v
           for k, v in ckpt["state_dict"].items()}
    assert "layer2.0.shortcut.conv.weight" in old and not any("downsample" in k for k in old)
    torch.save({**ckpt, "state_dict": old}, tmp_path / "old.pt")  # as the seed wrote them
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(load_model(tmp_path / "old.pt")(x), model(x))


def test_the_typed_checkpoint_round_trips_its_record(tmp_path):
    from resnet_edge.compression import Compression
    from train.checkpoint import EpochResult
    from train.config import TrainConfig

    cfg = ModelConfig(class_names=tuple("abcdefghij"), mean=0.28, std=0.35)
    history = (EpochResult(1, 0.5, 0.8, 0.45, 0.84, 900.0, 12.0), EpochResult(2, 0.4, 0.86, 0.41, 0.87, 910.0, 11.5))
    record = Compression(teacher="t.pt", teacher_sha256="ab" * 32, ratio=0.5, depth=18, params=10, macs=20,
                         teacher_params=40, teacher_macs=80, teacher_test_accuracy=0.9, qat_epochs=1,
                         int8_simulated_agreement=0.995)
    path = Checkpoint.of(resnet18(), cfg, epoch=2, metrics=Metrics(test_acc=0.91, best_epoch=2), history=history,
                         compression=record, train_config=TrainConfig(epochs=2), split={"seed": 0}).write(tmp_path / "c.pt")
    back = Checkpoint.read(path)
    assert (back.config, back.epoch, back.history, back.compression) == (cfg, 2, history, record)
    assert back.metrics.test_acc == 0.91 and back.metrics.best_epoch == 2 and back.train_config.epochs == 2
    assert back.split == {"seed": 0} and back.imported_from is None
    raw = torch.load(path, weights_only=True)  # on disk: plain data, no pickled classes
    assert raw["compression"]["teacher_sha256"] == "ab" * 32 and raw["history"][1]["val_acc"] == 0.87
    assert raw["metrics"]["test_acc"] == 0.91 and raw["train_config"]["epochs"] == 2


@pytest.mark.parametrize(("record", "match"), [
    ({"teacher": "t.pt", "teacher_sha256": "ab" * 32, "ratio": 0.5}, "lacks 'compression.depth'"),
    ({"teacher": "t.pt", "teacher_sha256": "AB" * 32, "ratio": 0.5, "depth": 18, "params": 1, "macs": 1,
      "teacher_params": 4, "teacher_macs": 4}, "'teacher_sha256' is not a sha256"),
    ({"teacher": "t.pt", "teacher_sha256": "ab" * 32, "ratio": 1.5, "depth": 18, "params": 1, "macs": 1,
      "teacher_params": 4, "teacher_macs": 4}, "ratio 1.5 or parameter counts are out of range"),
    ("a string", "malformed compression record"),
])
def test_a_malformed_compression_record_is_refused_in_one_sentence(tmp_path, record, match):
    raw = torch.load(_save(tmp_path / "c.pt"), weights_only=True)
    torch.save({**raw, "compression": record}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=match):
        Checkpoint.read(tmp_path / "bad.pt")


def test_an_older_history_still_exports_but_is_not_resumed(tmp_path):
    raw = torch.load(_save(tmp_path / "c.pt"), weights_only=True)
    torch.save({**raw, "history": [{"epoch": 1, "test_acc": 0.9}]}, tmp_path / "old.pt")  # chose its epoch on test
    old = Checkpoint.read(tmp_path / "old.pt")
    assert old.history is None and old.model() is not None


def test_a_version_that_is_not_an_integer_is_one_sentence(tmp_path):
    raw = torch.load(_save(tmp_path / "c.pt"), weights_only=True)
    for version in ("1", 1.0, None):
        torch.save({**raw, "version": version}, tmp_path / "v.pt")
        with pytest.raises(CheckpointError, match="version that is not an integer"):
            Checkpoint.read(tmp_path / "v.pt")
    res = _cli("eval", str(tmp_path / "v.pt"))
    assert res.returncode == 2 and "not an integer" in res.stderr and "Traceback" not in res.stderr
