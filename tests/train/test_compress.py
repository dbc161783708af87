"""`resnet-edge compress`: Torch-Pruning's channel pruning and distillation, a checkpoint in and an ordinary
checkpoint out that every later stage takes unchanged."""

import subprocess
import sys

import pytest
import torch

from resnet_edge.errors import CheckpointError, InvalidInput
from train.checkpoint import Checkpoint, load_model
from train.model import ModelConfig, resnet18

pytest.importorskip("torch_pruning", reason="compress needs Torch-Pruning (pip install 'resnet-edge[compress]')")


def test_pruned_widths_are_the_config_and_the_rebuilt_network_computes_the_same():
    from train.compress import count_macs_params, prune

    torch.manual_seed(0)
    pruned_in_place = resnet18()
    for m in pruned_in_place.modules():  # a trained-looking network: BN statistics and scales not at their init
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            m.running_var.uniform_(0.5, 2.0)
    rebuilt = prune(pruned_in_place, 0.5)
    c = rebuilt.config
    assert (c.stem_width, c.widths) == (32, (32, 64, 128, 256)) and c.compressed
    assert c.block_widths == ((32, 32), (64, 64), (128, 128), (256, 256)) and rebuilt.fc.out_features == 10
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(rebuilt.eval()(x), pruned_in_place.eval()(x))
    macs, params = count_macs_params(rebuilt, (1, 28, 28))
    t_macs, t_params = count_macs_params(resnet18(), (1, 28, 28))
    assert params <= t_params / 3 and macs <= t_macs / 3  # 2.80M of 11.18M parameters, 8.5M of 33.1M MACs
    assert ModelConfig.from_dict(c.to_dict()) == c


def test_the_resnet10_student_starts_from_the_teachers_first_blocks():
    from train.compress import CompressConfig, make_student

    teacher = resnet18().eval()
    student = make_student(teacher, CompressConfig(ratio=0.0, depth=10))
    assert student.config.depth == 10 and [len(s) for s in student.stages()] == [1, 1, 1, 1]
    for name, w in student.state_dict().items():
        assert torch.equal(w, teacher.state_dict()[name]), name
    smaller = make_student(teacher, CompressConfig(ratio=0.5, depth=10))
    assert smaller.config.widths == (32, 64, 128, 256)


def test_a_ratio_that_leaves_too_few_channels_is_refused():
    from train.compress import CompressConfig, prune

    with pytest.raises(InvalidInput, match="leaves the narrowest layer with 6.4 channels; keep at least 8"):
        prune(resnet18(), 0.9)
    for bad in (1.0, 1.5, -0.1):
        with pytest.raises(InvalidInput, match="--ratio must be in"):
            CompressConfig(ratio=bad).validate()


def test_widths_that_disagree_with_the_weights_and_a_malformed_teacher_hash_are_refused(tmp_path):
    from train.compress import prune

    model = prune(resnet18(), 0.5)
    wrong = ModelConfig(stem_width=32, widths=(32, 64, 128, 248), block_widths=model.config.block_widths)
    path = Checkpoint.of(model, wrong, epoch=1).write(tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="holds weights of another architecture than its config"):
        load_model(path)
    state = torch.load(Checkpoint.of(model, model.config, epoch=1).write(tmp_path / "h.pt"), weights_only=True)
    record = {"teacher": "t.pt", "teacher_sha256": "not-a-hash", "ratio": 0.5, "depth": 18, "params": 1, "macs": 1,
              "teacher_params": 4, "teacher_macs": 4}
    torch.save({**state, "compression": record}, tmp_path / "h.pt")
    with pytest.raises(CheckpointError, match="'teacher_sha256' is not a sha256"):
        Checkpoint.read(tmp_path / "h.pt")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "resnet_edge", "compress", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize(("args", "match"), [
    (["--ratio", "1.5"], "--ratio must be in (0, 1)"),
    (["--ratio", "0"], "--ratio 0 prunes nothing"),
    (["--ratio", "abc"], "--ratio takes numbers in (0, 1)"),
    (["--ratio", "0.95"], "leaves the narrowest layer with 3.2 channels"),
    (["--depth", "34"], "--depth takes 10"),
])
def test_bad_input_is_one_sentence_and_nothing_is_written(trained_ckpt, tmp_path, args, match):
    res = _cli(trained_ckpt, "--out", tmp_path / "o", "--limit-train", "512", *args)
    assert res.returncode == 2 and "Traceback" not in res.stderr and res.stderr.count("error:") == 1, res.stderr
    assert match in " ".join(res.stderr.split())
    assert not (tmp_path / "o" / "best.pt").exists()


def test_a_checkpoint_that_is_not_ours_or_not_a_basic_block_resnet_is_refused(tmp_path):
    from train.model import resnet50

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    res = _cli(tmp_path / "junk.pt", "--out", tmp_path / "o")
    assert res.returncode == 2 and "not a PyTorch checkpoint" in res.stderr and "Traceback" not in res.stderr
    m = resnet50()
    path = Checkpoint.of(m, m.config, epoch=1).write(tmp_path / "r50.pt")
    res = _cli(path, "--out", tmp_path / "o")
    assert res.returncode == 2 and "compress prunes the basic-block ResNets" in " ".join(res.stderr.split())


@pytest.mark.slow
def test_compress_distils_an_ordinary_checkpoint_that_exports(trained_ckpt, tmp_path):
    """The suite's 2-epoch model at ratio 0.5, distilled for one epoch on 4,096 of its training images, then one epoch
    of quantization-aware fine-tuning: best.pt loads with weights_only, records its teacher and the QAT, keeps the
    distilled student beside it, and exports to ONNX FP32 and FP16 within the tolerance table. (INT8 is not asserted:
    on this host the QAT'd student's INT8 agreed on 99.19% of the 10k test images, too close to the row's 99% for a
    model each host trains afresh; scripts/qat_ablation.py measures it.)"""
    from export.pipeline import ExportConfig, run_export
    from resnet_edge.atomic import sha256_file

    out = tmp_path / "slim"
    res = _cli(trained_ckpt, "--ratio", "0.5", "--out", out, "--epochs", "1", "--limit-train", "4096")
    assert res.returncode == 0, res.stderr[-2000:]
    ckpt = Checkpoint.read(out / "best.pt")  # torch.load(weights_only=True): no pickled modules
    rec, teacher = ckpt.compression, Checkpoint.read(trained_ckpt)
    assert rec.teacher_sha256 == sha256_file(trained_ckpt) and rec.ratio == 0.5 and rec.depth == 18
    assert rec.params * 3 <= rec.teacher_params and rec.teacher_test_accuracy == teacher.metrics.test_acc
    assert rec.qat_epochs == 1 and 0.9 < rec.int8_simulated_agreement <= 1 and rec.int8_simulated_agreement_after
    distilled = Checkpoint.read(out / "distilled.pt")  # the student before QAT, kept
    assert distilled.compression.qat_epochs == 0 and distilled.config == ckpt.config
    assert ckpt.split["validation"]["sha256"] == teacher.split["validation"]["sha256"]  # the teacher's split
    model = ckpt.model()
    assert model.config.widths == (32, 64, 128, 256)
    assert ckpt.metrics.test_acc > 0.80  # one short epoch from a pruned 2-epoch teacher (about 86%)
    manifest = run_export(ExportConfig(checkpoint=out / "best.pt", out=tmp_path / "arts", precisions=("fp32", "fp16"),
                                       formats=(), limit=1000, trt_rtx=False))
    assert manifest.model.compression == rec  # the record, typed, handed on unchanged
    assert {a.status for a in manifest.artifacts} == {"ok"}
