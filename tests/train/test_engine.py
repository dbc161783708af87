import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from resnet_edge.errors import CheckpointError, InvalidInput
from train.checkpoint import Checkpoint, load_model
from train.config import PRESETS, TrainConfig, preset
from train.engine import lr_at, train

# Small but real: the first 1,024 training and 500 test images of Fashion-MNIST.
TINY = replace(PRESETS["quick"], epochs=2, batch_size=128, limit_train=1024, limit_test=500,
               amp="none", channels_last=False, threads=2, lr=0.1)
# Resuming is about state, not learning: three batches an epoch are enough to tell a wrong resume from a right one.
STEPS = replace(TINY, batch_size=32, limit_train=96, limit_test=64)


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


def test_short_training_lowers_the_loss_and_writes_checkpoints(fmnist, tmp_path, monkeypatch):
    import numpy as np

    import train.engine as engine

    evaluated = []  # which split each evaluation read: the test set only once, after training
    real_predict = engine.predict

    def predict(model, split, **kw):
        evaluated.append("test" if torch.equal(split.labels, fmnist.test.labels[:500]) else "other")
        return real_predict(model, split, **kw)

    monkeypatch.setattr(engine, "predict", predict)
    # 2,048 images (48 steps): on 1,024, epoch-3 validation accuracy ranged from 44% to 63% over seeds and over
    # float rounding alone (BN's running statistics are young); on 2,048 it lands at 75-80%.
    result = train(replace(TINY, epochs=3, limit_train=2048), tmp_path, data=fmnist)
    assert evaluated == ["other", "other", "other", "test"]
    losses = [e.train_loss for e in result.history]
    assert losses[-1] < losses[0] * 0.8
    assert result.history[-1].val_acc > 0.6  # far above the 10% of chance
    best, last = Checkpoint.read(tmp_path / "best.pt"), Checkpoint.read(tmp_path / "last.pt")
    assert last.epoch == 3 and best.metrics.val_acc == result.best_acc
    assert best.epoch == result.best_epoch == 1 + max(range(3), key=lambda i: result.history[i].val_acc)
    assert best.metrics.test_acc == result.test_acc and best.metrics.test_images == 500
    assert last.history == tuple(result.history) and best.history == tuple(result.history[:best.epoch])
    # The validation split is recorded, carved from the training images, and never trained on.
    split = best.split
    val = np.array(split["validation"]["indices"])
    assert split["validation"]["n"] == len(val) == 5000 and split["seed"] == TINY.seed
    assert split["evaluation"]["source"] == "the Fashion-MNIST test set (t10k)"
    carved = fmnist.with_validation(5000, TINY.seed)  # what training read: the rest, in order
    assert len(carved.train) == 55_000 and torch.equal(carved.validation.images, fmnist.train.images[val])
    assert torch.equal(carved.train.images[:5], fmnist.train.images[np.setdiff1d(np.arange(60_000), val)[:5]])
    assert best.data_sha256 == fmnist.sha256
    # Normalisation comes from the images it trained on: the 55,000 left after the validation split.
    assert best.config.mean == pytest.approx(carved.stats()[0])
    assert best.config.mean != pytest.approx(fmnist.stats()[0], abs=1e-6)
    assert last.metrics.train_img_per_s > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]
    model = load_model(tmp_path / "best.pt")
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def _interrupt_after_first_epoch(ep):
    if ep.epoch == 1:
        raise KeyboardInterrupt


def _same_weights(a, b):
    a, b = Checkpoint.read(a).state_dict, Checkpoint.read(b).state_dict
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("settings", ["amp-none", "quick-preset"])
def test_resume_ends_with_the_same_weights(fmnist, tmp_path, monkeypatch, settings):
    import train.amp as amp

    cfg = STEPS
    if settings == "quick-preset":  # the quick preset's own amp and memory format, as `make train` runs it
        q = PRESETS["quick"]
        cfg = replace(STEPS, amp=q.amp, channels_last=q.channels_last)
        # The amp probe times real steps; make it answer bf16 once and fp32 after, so a resumed run
        # that probed again would switch precision half-way.
        answers = iter([True] + [False] * 10)
        monkeypatch.setattr(amp, "_bf16_faster_on_cpu", lambda *a: next(answers))
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, part, data=fmnist, on_epoch_end=_interrupt_after_first_epoch)
    assert Checkpoint.read(part / "last.pt").epoch == 1
    resumed = train(cfg, part, data=fmnist, resume=True)
    if settings == "quick-preset":
        answers = iter([True] + [False] * 10)
        assert resumed.amp == "bfloat16"
    full = train(cfg, tmp_path / "full", data=fmnist)
    assert full.amp == resumed.amp
    assert _same_weights(tmp_path / "full" / "last.pt", part / "last.pt")


def test_resume_restores_the_saved_rng_state(fmnist, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(STEPS, tmp_path, data=fmnist, on_epoch_end=_interrupt_after_first_epoch)
    ckpt = Checkpoint.read(tmp_path / "last.pt")
    saved = torch.manual_seed(4242).get_state()  # a state the run itself would never reach
    replace(ckpt, rng_state=saved).write(tmp_path / "last.pt")
    torch.manual_seed(0)
    seen = []
    train(STEPS, tmp_path, data=fmnist, resume=True, on_epoch_end=lambda ep: seen.append(torch.get_rng_state()))
    assert torch.equal(seen[0], saved)  # nothing in training draws from the global generator meanwhile


def test_resume_guards(fmnist, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        train(STEPS, tmp_path, data=fmnist, resume=True)
    with pytest.raises(KeyboardInterrupt):
        train(STEPS, tmp_path, data=fmnist, on_epoch_end=_interrupt_after_first_epoch)
    with pytest.raises(InvalidInput, match=r"other settings \(lr\)"):
        train(replace(STEPS, lr=0.5), tmp_path, data=fmnist, resume=True)
    # Another --epochs would stretch the schedule under a half-trained model: refused in one sentence.
    with pytest.raises(InvalidInput, match="follows a 2-epoch learning-rate schedule; resume with --epochs 2"):
        train(replace(STEPS, epochs=8), tmp_path, data=fmnist, resume=True)
    train(STEPS, tmp_path, data=fmnist, resume=True)
    with pytest.raises(InvalidInput, match="already finished epoch 2 of 2"):
        train(STEPS, tmp_path, data=fmnist, resume=True)


def test_cli_resume_with_other_epochs_is_one_sentence(fmnist, tmp_path):
    args = ["--out", str(tmp_path), "--limit-train", "512", "--limit-test", "200", "--batch-size", "128",
            "--amp", "none", "--threads", "2"]
    assert _cli("train", "--epochs", "1", *args).returncode == 0
    before = (tmp_path / "last.pt").read_bytes()
    res = _cli("train", "--resume", "--epochs", "3", *args)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "1-epoch learning-rate schedule" in res.stderr
    assert (tmp_path / "last.pt").read_bytes() == before


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "resnet_edge", *args], capture_output=True, text=True, **kw)


def test_cli_train_then_eval_with_plot(fmnist, tmp_path):
    res = _cli("train", "--out", str(tmp_path / "ck"), "--epochs", "1", "--limit-train", "512",
               "--limit-test", "200", "--batch-size", "128", "--amp", "none", "--threads", "2")
    assert res.returncode == 0, res.stderr
    assert "test accuracy" in res.stdout and "of best.pt (epoch 1, validation accuracy" in res.stdout
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


DDP_SCRIPT = """
import os, sys, torch
from dataclasses import replace
from train.config import PRESETS
from train.engine import train
cfg = replace(PRESETS["quick"], epochs=2, limit_train=2048, limit_test=500, batch_size=128, amp="none",
              device=sys.argv[2], channels_last=False, lr=0.1)
result = train(cfg, sys.argv[1])
rank = int(os.environ["RANK"])
params = {k: v.detach().cpu() for k, v in result.model.named_parameters()}
torch.save(params, os.path.join(sys.argv[1], f"rank{rank}.weights"))
"""


def _torchrun(tmp_path, nproc, device):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    return subprocess.run([TORCHRUN, "--nproc-per-node", str(nproc), "--standalone", str(script), str(tmp_path), device],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun is not installed beside this Python")
def test_ddp_two_processes_gloo_keeps_replicas_identical(fmnist, tmp_path):
    res = _torchrun(tmp_path, 2, "cpu")
    assert res.returncode == 0, res.stderr[-2000:]
    ckpt = Checkpoint.read(tmp_path / "last.pt")
    assert ckpt.metrics.world_size == 2 and ckpt.epoch == 2
    assert ckpt.history[1].train_loss < ckpt.history[0].train_loss
    # Each rank trains on its own shard with its own augmentation: only the gradient all-reduce
    # keeps the replicas' parameters equal after 16 optimizer steps. (BatchNorm running statistics
    # are each rank's own between DDP's broadcasts from rank 0, which writes the checkpoint.)
    w0, w1 = (torch.load(tmp_path / f"rank{r}.weights", weights_only=True) for r in (0, 1))
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    assert "cpu x2" in res.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun is not installed beside this Python")
def test_ddp_one_process_nccl_on_cuda(fmnist, tmp_path):
    res = _torchrun(tmp_path, 1, "cuda")
    assert res.returncode == 0, res.stderr[-2000:]
    assert Checkpoint.read(tmp_path / "last.pt").metrics.world_size == 1
    assert "cuda:0 x1" in res.stderr
