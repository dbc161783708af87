import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from train.checkpoint import load_checkpoint, load_model
from train.config import PRESETS, TrainConfig, preset
from train.engine import lr_at, train
from train.errors import CheckpointError, InvalidInput

# Small but real: the first 1,024 training and 500 test images of Fashion-MNIST.
TINY = replace(PRESETS["quick"], epochs=2, batch_size=128, limit_train=1024, limit_test=500,
               amp="none", channels_last=False, threads=2, lr=0.1)


def test_presets_and_overrides():
    assert preset("quick").image_size == 28 and preset("full").image_size == 96
    assert preset("quick", epochs=9, lr=None).epochs == 9
    with pytest.raises(InvalidInput, match="Unknown preset 'fast'"):
        preset("fast")
    with pytest.raises(InvalidInput, match="--schedule must be one of onecycle, cosine"):
        preset("quick", schedule="step")
    with pytest.raises(InvalidInput, match="--epochs"):
        preset("quick", epochs=0)


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_lr_schedule_warms_up_peaks_and_anneals(schedule):
    cfg = TrainConfig(lr=0.4, schedule=schedule)
    lrs = [lr_at(s, 1000, cfg) for s in range(1000)]
    assert max(lrs) == pytest.approx(0.4, rel=1e-2)
    assert lrs[0] < 0.4 / 10 and lrs[-1] < 1e-3
    peak = lrs.index(max(lrs))
    assert all(a <= b + 1e-12 for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a >= b - 1e-12 for a, b in zip(lrs[peak:], lrs[peak + 1:]))


def test_short_training_lowers_the_loss_and_writes_checkpoints(fmnist, tmp_path):
    result = train(replace(TINY, epochs=3), tmp_path, data=fmnist)
    losses = [e.train_loss for e in result.history]
    assert losses[-1] < losses[0] * 0.8
    assert result.history[-1].test_acc > 0.5  # far above the 10% of chance
    best, last = load_checkpoint(tmp_path / "best.pt"), load_checkpoint(tmp_path / "last.pt")
    assert last["epoch"] == 3 and best["metrics"]["test_acc"] == result.best_acc
    assert best["data_sha256"] == fmnist.sha256
    assert best["config"]["mean"] == pytest.approx(fmnist.stats()[0])
    assert last["metrics"]["train_img_per_s"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]
    model = load_model(tmp_path / "best.pt")
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_resume_ends_with_the_same_weights(fmnist, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    train(TINY, full, data=fmnist)

    def interrupt(ep):
        if ep.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TINY, part, data=fmnist, on_epoch_end=interrupt)
    assert load_checkpoint(part / "last.pt")["epoch"] == 1
    train(TINY, part, data=fmnist, resume=True)
    a, b = load_checkpoint(full / "last.pt")["state_dict"], load_checkpoint(part / "last.pt")["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_guards(fmnist, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        train(TINY, tmp_path, data=fmnist, resume=True)
    train(replace(TINY, epochs=1), tmp_path, data=fmnist)
    with pytest.raises(InvalidInput, match="other settings"):
        train(replace(TINY, lr=0.5), tmp_path, data=fmnist, resume=True)
    with pytest.raises(InvalidInput, match="already finished epoch 1 of 1"):
        train(replace(TINY, epochs=1), tmp_path, data=fmnist, resume=True)


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "resnet_edge", *args], capture_output=True, text=True, **kw)


def test_cli_train_then_eval_with_plot(fmnist, tmp_path):
    res = _cli("train", "--out", str(tmp_path / "ck"), "--epochs", "1", "--limit-train", "512",
               "--limit-test", "200", "--batch-size", "128", "--amp", "none", "--threads", "2")
    assert res.returncode == 0, res.stderr
    assert "best test accuracy" in res.stdout
    res = _cli("eval", str(tmp_path / "ck" / "best.pt"), "--plot", str(tmp_path / "cm.png"),
               "--json", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr
    assert "confusion matrix" in res.stdout and "Ankle boot" in res.stdout
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import json
    report = json.loads((tmp_path / "r.json").read_text())
    assert sum(map(sum, report["confusion"])) == 10_000


def test_cli_missing_dataset_is_one_sentence(tmp_path):
    res = _cli("train", "--out", str(tmp_path / "ck"), "--data-dir", str(tmp_path / "nothing"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "Fashion-MNIST not found" in res.stderr and "dataset-fashion-mnist" in res.stderr
    assert not (tmp_path / "ck" / "last.pt").exists()


def test_cli_corrupt_last_checkpoint_is_not_overwritten_on_resume(tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "last.pt").write_bytes(b"\x00garbage")
    res = _cli("train", "--out", str(ck), "--resume")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "not a PyTorch checkpoint" in res.stderr
    assert (ck / "last.pt").read_bytes() == b"\x00garbage"


TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")


@pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun is not installed beside this Python")
def test_ddp_two_processes_gloo(fmnist, tmp_path):
    torchrun = TORCHRUN
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [torchrun, "--nproc-per-node", "2", "--standalone", "-m", "resnet_edge", "train", "--out", str(tmp_path),
         "--epochs", "2", "--limit-train", "2048", "--limit-test", "500", "--batch-size", "128", "--amp", "none",
         "--device", "cpu", "--no-channels-last", "--lr", "0.1"],
        capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["metrics"]["world_size"] == 2 and ckpt["epoch"] == 2
    history = ckpt["history"]
    assert history[1]["train_loss"] < history[0]["train_loss"]  # both ranks' gradients were averaged and applied
    assert ckpt["metrics"]["test_acc"] > 0.3
    assert "cpu x2" in res.stderr
