import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from export.parity import TOLERANCES
from resnet_edge.atomic import sha256_file
from resnet_edge.errors import ArtifactMismatch
from runtime.contract import Evaluation, read_manifest


def test_manifest_names_verified_artifacts(export_dir, trained_ckpt):
    manifest = read_manifest(export_dir)  # verifies every sha256
    arts = manifest.artifacts
    assert {(a.format, a.precision) for a in arts} >= {("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8")}
    for a in arts:
        assert (export_dir / a.path).is_file()
        assert a.sha256 == sha256_file(export_dir / a.path)
        assert a.size_bytes == sum((export_dir / f).stat().st_size for f in a.files)  # weights beside a .param too
        assert {"torch", "onnx", "onnxruntime"} <= set(a.tools)
        if a.status == "built":  # a TensorRT-RTX engine where no GPU runs it: no parity claimed (test_tensorrt_rtx)
            assert a.format == "tensorrt_rtx" and a.parity is None and not a.details["verification"]["ran"]
            continue
        # every artifact on every image export evaluated (all 10,000 by default; `make test` exports with --limit)
        assert a.status == "ok" and a.parity.n == manifest.evaluation.test_images == (manifest.evaluation.limit or 10_000)
    io = manifest.io  # once for every artifact (schema version 1 repeated it in each row)
    assert (io.input.name, io.input.dtype, io.input.shape) == ("images", "float32", (-1, 1, 28, 28))
    assert io.output.shape == (-1, 10)
    assert manifest.source.sha256 == sha256_file(trained_ckpt)
    assert manifest.preprocessing.image_size == 28 and len(manifest.preprocessing.mean) == 1
    assert manifest.model.name == "resnet18" and len(manifest.model.class_names) == 10
    assert not [p for p in export_dir.iterdir() if p.name.startswith(".")]  # no staging left


def test_every_variant_meets_the_tolerance_table_on_the_real_test_set(export_dir):
    manifest = read_manifest(export_dir)
    ref = manifest.source.test_accuracy
    assert ref > 0.88  # a trained model: the suite's 2-epoch quick preset (89.9%; `make train`'s 4 epochs: 91%)
    for a in (a for a in manifest.artifacts if a.status != "built"):  # every row that ran
        tol, p = TOLERANCES[a.precision], a.parity
        assert (ref - a.test_accuracy) * 100 <= tol.max_acc_drop_pt, a.path
        if tol.max_rel is not None:
            assert p.max_rel <= tol.max_rel, a.path
        if tol.min_top1 is not None:  # INT8: the product's bound, not a looser one for tests
            assert p.top1_agreement >= tol.min_top1, a.path


def test_cpu_int8_decision_is_taken_on_held_out_training_images(export_dir):
    from export.parity import ParityResult
    from export.steps import u8_variant_decision

    manifest = read_manifest(export_dir)
    d = manifest.decisions.int8_cpu_u8_variant
    kept = any(a.target == "cpu" for a in manifest.artifacts)
    assert d.kept == kept and (export_dir / "resnet18_int8_cpu.onnx").exists() == kept
    # Decided on the validation split the checkpoint records: never trained on, never the test set.
    assert d.split == "2000 images of the validation split the checkpoint records (never trained on)"
    assert "test" not in d.rule

    def stats(acc, agree):
        return ParityResult(0, 0, 1, agree, acc, 0.9, 2000)

    recomputed, _ = u8_variant_decision(d.s8_ms_batch64, d.u8_ms_batch64, stats(d.s8_heldout_accuracy, 1.0),
                                        stats(d.u8_heldout_accuracy, d.u8_heldout_top1_agreement))
    assert recomputed == kept  # the recorded numbers alone justify the recorded decision


def test_u8_variant_rule():
    from export.parity import ParityResult
    from export.steps import u8_variant_decision

    def s(acc, agree=0.995):
        return ParityResult(0, 0, 1, agree, acc, 0.9, 2000)

    assert u8_variant_decision(10.0, 9.4, s(0.9), s(0.9))[0]  # 6% faster
    assert not u8_variant_decision(10.0, 9.8, s(0.9), s(0.9))[0]  # 2% faster: noise
    assert u8_variant_decision(10.0, 10.5, s(0.900), s(0.9012))[0]  # 0.12 pt more accurate
    assert not u8_variant_decision(10.0, 5.0, s(0.9), s(0.9, agree=0.985))[0]  # misses the parity bound


def test_calibration_images_are_recorded_never_validation_and_the_peers_use_exactly_them(export_dir, trained_ckpt):
    """Export records the training images INT8 calibration drew: as many as asked, none of them a validation image
    of the checkpoint's split, and bench's INT8 peers calibrate on exactly those images (issue 37: they used to draw
    their own, ignoring the split and the seed)."""
    from resnet_edge import fmnist
    from resnet_edge.images import to_input
    from runtime.preprocess import load_calibration_inputs
    from runtime.spec import load_artifacts
    from train.checkpoint import Checkpoint

    arts = load_artifacts(export_dir)
    drawn = arts.manifest.evaluation.calibration_indices
    assert len(drawn) == 256 and len(set(drawn)) == 256  # the suite's export: --calib-size 256
    validation = (Checkpoint.read(trained_ckpt).split or {}).get("validation", {}).get("indices", [])
    assert validation and not set(drawn) & set(validation)
    x = load_calibration_inputs(arts.spec, drawn, n=100)
    train = fmnist.load_arrays().train_images
    np.testing.assert_array_equal(x, to_input(train[list(drawn[:100])], arts.spec.mean, arts.spec.std,
                                              arts.spec.image_size))
    with pytest.raises(Exception, match="records no calibration images"):
        load_calibration_inputs(arts.spec, ())


def test_engines_skipped_with_a_reason_without_tensorrt(export_dir):
    manifest = read_manifest(export_dir)
    if any(a.format == "tensorrt" for a in manifest.artifacts):
        pytest.skip("TensorRT is present here; engines were built")
    trt = next(s for s in manifest.skipped if s.format == "tensorrt")
    assert trt.reason.startswith("TensorRT is not installed") and "pip install 'resnet-edge[gpu]'" in trt.reason


def test_tampered_artifact_is_detected(export_dir, tmp_path):
    import shutil

    copy = tmp_path / "a"
    shutil.copytree(export_dir, copy, ignore=shutil.ignore_patterns("triton"))
    name = read_manifest(copy).artifacts[0].path
    with open(copy / name, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ArtifactMismatch, match="does not match the sha256"):
        read_manifest(copy)


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "resnet_edge", "export", *args], capture_output=True, text=True, **kw)


def _one_sentence(res):
    assert res.returncode != 0
    assert "Traceback" not in res.stderr and res.stderr.count("error:") == 1, res.stderr


def test_cli_missing_checkpoint(tmp_path):
    res = _cli(str(tmp_path / "none.pt"), "--out", str(tmp_path / "a"))
    _one_sentence(res)
    assert "does not exist" in res.stderr


def test_cli_corrupt_checkpoint(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"\x80\x04garbage")
    res = _cli(str(tmp_path / "bad.pt"), "--out", str(tmp_path / "a"))
    _one_sentence(res)
    assert "not a PyTorch checkpoint" in res.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--opset", "7"], "opset 7 is not supported"),
    (["--calib-size", "8"], "8 images is too small"),
    (["--calib-method", "magic"], "--calib-method must be one of"),
    (["--trt-batch", "1,2"], "--trt-batch must be three integers"),
    (["--out", "{blocker}/sub"], "is not writable"),
])
def test_cli_bad_options_are_one_sentence(trained_ckpt, tmp_path, args, message):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    args = [a.format(blocker=blocker) for a in args]
    res = _cli(str(trained_ckpt), "--out", str(tmp_path / "a"), *args)
    _one_sentence(res)
    assert message in res.stderr
    assert not (tmp_path / "a" / "manifest.json").exists()


def test_cli_trt_without_tensorrt_is_one_sentence(trained_ckpt, tmp_path):
    from export.tensorrt import unavailable_reason

    if unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are present")
    res = _cli(str(trained_ckpt), "--out", str(tmp_path / "a"), "--trt")
    _one_sentence(res)
    assert "--trt was asked for" in res.stderr and "resnet-edge[gpu]" in res.stderr
    assert not (tmp_path / "a" / "manifest.json").exists()


def test_interrupted_export_leaves_previous_manifest_consistent(export_dir, trained_ckpt, tmp_path):
    import shutil

    out = tmp_path / "a"
    shutil.copytree(export_dir, out, ignore=shutil.ignore_patterns("triton"))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = subprocess.Popen([sys.executable, "-m", "resnet_edge", "export", str(trained_ckpt), "--out", str(out),
                             "--calib-size", "256", "--limit", "500"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    # The FP32 ONNX has just been staged: evaluation, FP16 and INT8 still lie ahead, so the commit has not begun.
    while time.time() < deadline and not list(out.glob(".staging-*/resnet18_fp32.onnx")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in err
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "staging files left behind"
    read_manifest(out)  # the previous manifest, every hash intact
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_export_removes_only_what_an_earlier_export_of_the_model_wrote(trained_ckpt, export_dir, tmp_path):
    import json
    import shutil

    out, repo = tmp_path / "a", tmp_path / "triton"
    shutil.copytree(export_dir, out, ignore=shutil.ignore_patterns("triton"))
    shutil.copytree(export_dir / "triton", repo)
    before = read_manifest(out)
    assert "resnet18_int8.onnx" in {a.path for a in before.artifacts}
    # The user's files beside ours, another model's artifacts and Triton folders, and someone else's model.
    for name in ("calib.npz", "resnet34_fp32.onnx", "resnet18_fp32.engine"):
        (out / name).write_bytes(b"not ours")
    (out / "notes.txt").write_text("mine")
    for name, marker in (("resnet34_fp16_onnx", {"written_by": "resnet-edge export", "model": "resnet34"}),
                         ("resnet18_int8_trt", None), ("someone_elses_model", None)):
        (repo / name / "1").mkdir(parents=True, exist_ok=True)
        if marker:
            (repo / name / "resnet_edge.json").write_text(json.dumps(marker))
    # ncnn too: an export without INT8 loads no calibration images, and ncnn's winograd timing still needs a few
    res = _cli(str(trained_ckpt), "--out", str(out), "--precision", "fp32,fp16", "--triton-repo", str(repo), "--formats",
               "onnx,ncnn", "--limit", "500")
    assert res.returncode == 0, res.stderr
    for col in ("artifact", "precision", "size MB", "test acc", "top-1", "status", "resnet18_fp16.onnx"):
        assert col in res.stdout
    manifest = read_manifest(out)
    assert [a.precision for a in manifest.artifacts if a.format == "onnx"] == ["fp32", "fp16"]
    ncnn = [a for a in manifest.artifacts if a.format == "ncnn"]
    assert [a.precision for a in ncnn] == ["fp32", "fp16"] and all("winograd" in a.details for a in ncnn)
    # INT8 (named by the earlier manifest, not by this one) is gone; nothing else was touched.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [a.path for a in manifest.artifacts] + [a.sidecar for a in manifest.artifacts if a.sidecar]
        + ["golden.npz", "resnet18_reference.pt2", "manifest.json", "notes.txt", "calib.npz", "resnet34_fp32.onnx",
           "resnet18_fp32.engine"])
    assert (out / "calib.npz").read_bytes() == b"not ours"
    assert sorted(p.name for p in repo.iterdir()) == ["resnet18_fp16_onnx", "resnet18_fp32_onnx", "resnet18_int8_trt",
                                                      "resnet34_fp16_onnx", "someone_elses_model"]
    assert json.loads((repo / "resnet18_fp16_onnx" / "resnet_edge.json").read_text())["model"] == "resnet18"


def test_export_gates_every_bound_of_the_table():
    from export.source import artifact_row
    from runtime.tolerances import compare

    ref = np.eye(10, dtype=np.float32)[np.arange(1000) % 10] * 5
    labels = np.arange(1000) % 10

    def row(precision, *, max_rel=0.0, flip=0):
        out = ref.copy()
        out[0, 0] += max_rel * 5
        out[1:1 + flip] = np.roll(out[1:1 + flip], 1, axis=1)  # top-1 moves to a wrong class on ``flip`` images
        path = Path(__file__)  # any existing file stands in for the artifact
        return artifact_row(path, precision, compare(ref, out, precision, labels), 0, 0)

    assert row("int8", flip=4).status == "ok"  # 99.6% agreement, 0.4 pt below: within both bounds
    low = row("int8", flip=15)
    assert low.status == "fail" and "top-1 agreement 98.50% < 99%" in low.failures[0]
    assert row("fp32", max_rel=2e-4).failures == ("max relative error 2.00e-04 > 1e-04",)
    assert any("0.20 pt below" in f for f in row("fp16", flip=2).failures)


def test_precision_and_limit_pick_the_variants_and_the_evaluation_images(trained_ckpt, tmp_path):
    # 2,000 evaluation images, as `make test`'s export: on 500, the int8 row's 0.5 pt bound is 2.5 images, and 7.7% of
    # 500-image windows of the test set missed it for INT8 files whose drop on all 10k was 0.01-0.12 pt, 128
    # calibration images or 1,000; no 2,000-image window did (scripts/int8_gate_sample.py, issue 34).
    out = tmp_path / "small"
    res = _cli(str(trained_ckpt), "--out", str(out), "--precision", "fp32,int8", "--no-cpu-int8", "--formats", "onnx",
               "--limit", "2000", "--calib-size", "128", "--no-trt-rtx")
    assert res.returncode == 0, res.stderr
    manifest = read_manifest(out)
    expected = [("onnx", "fp32"), ("torch", "fp32"), ("onnx", "int8")]
    assert [(a.format, a.precision) for a in manifest.artifacts] == expected
    drawn = manifest.evaluation.calibration_indices
    assert len(drawn) == 128  # --calib-size, recorded for the INT8 peers
    assert manifest.evaluation == Evaluation("the Fashion-MNIST test set", 2000, 2000, ("fp32", "int8"), drawn)
    assert ("tensorrt_rtx", "--no-trt-rtx was given.") in {(s.format, s.reason) for s in manifest.skipped}
    assert all(a.parity.n == 2000 for a in manifest.artifacts) and manifest.golden.n == 1000  # GOLDEN_N
    assert sorted(p.name for p in out.iterdir()) == ["golden.npz", "manifest.json", "resnet18_folded.pt2",
                                                     "resnet18_fp32.onnx", "resnet18_int8.onnx", "resnet18_reference.pt2"]
    for args, match in ((["--precision", "fp16,int8"], "always fp32"), (["--precision", "fp32,int4"], "int4"),
                        (["--limit", "0"], "--limit must be between 1 and 10000")):
        res = _cli(str(trained_ckpt), "--out", str(tmp_path / "bad"), *args)
        _one_sentence(res)
        assert match in res.stderr
