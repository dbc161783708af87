"""The edge formats (OpenVINO IR, LiteRT, ncnn, ExecuTorch): exported by the shared export, each verified on its own
runtime against the PyTorch logits with the one tolerance table, hashed with its weights, refused in one sentence when
corrupt, and summarised by ``bench --summary``."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from runtime.contract import read_manifest
from runtime.formats import FORMATS
from runtime.spec import load_artifacts

EDGE = {("openvino", "fp32"), ("openvino", "int8"), ("litert", "fp32"), ("litert", "int8"), ("ncnn", "fp32"),
        ("ncnn", "fp16"), ("executorch", "fp32"), ("executorch", "int8")}


@pytest.fixture(scope="module")
def manifest(export_dir):
    return read_manifest(export_dir)


def _row(manifest, fmt, precision):
    (row,) = [a for a in manifest.artifacts if (a.format, a.precision.value) == (fmt, precision)]
    return row


def test_every_edge_format_is_exported_and_passes_its_precisions_row(manifest):
    built = {(a.format, a.precision.value) for a in manifest.artifacts}
    assert built >= EDGE
    for fmt, precision in EDGE:
        row = _row(manifest, fmt, precision)
        assert row.status == "ok" and not row.failures, (fmt, precision, row.failures)
        assert row.path.endswith(FORMATS[fmt].suffix)
        assert row.parity.accuracy == row.test_accuracy and row.size_bytes > 1e6
    # Formats without a precision say so, with the reason, rather than skipping it silently.
    reasons = {(s.format, s.reason.split(":")[0]) for s in manifest.skipped}
    assert {("ncnn", "int8"), ("litert", "fp16"), ("executorch", "fp16"), ("openvino", "fp16")} <= reasons


def test_litert_int8_computes_its_convolutions_in_int8(manifest):
    d = _row(manifest, "litert", "int8").details
    assert d["conv_ops"] >= 20 and d["conv_types"] == ["int8xint8->int8"] and d["float_ops"] == [], d  # full-integer
    assert _row(manifest, "litert", "fp32").details["conv_types"] == ["float32xfloat32->float32"]


def test_executorch_delegates_the_convolutions_to_xnnpack(manifest):
    for precision in ("fp32", "int8"):
        d = _row(manifest, "executorch", precision).details["delegation"]
        convs = d["by_operator"]["aten_convolution_default"]
        assert d["subgraphs"] >= 1 and convs["delegated"] >= 20 and convs["not_delegated"] == 0, d


def test_openvino_int8_records_which_quantizer_the_held_out_split_chose(manifest):
    decision = manifest.decisions.openvino_int8_quantizer
    assert decision.chosen in ("ort", "nncf") and "held-out" in decision.rule
    assert None not in (decision.ort_heldout_top1_agreement, decision.nncf_heldout_top1_agreement)
    assert _row(manifest, "openvino", "int8").details["quantizer"] == decision.chosen


def test_weights_beside_a_param_or_xml_are_hashed_with_it(export_dir, tmp_path):
    from resnet_edge.errors import ArtifactMismatch

    for fmt in ("ncnn", "openvino"):
        copy = tmp_path / fmt
        shutil.copytree(export_dir, copy, ignore=shutil.ignore_patterns("triton"))
        row = _row(read_manifest(copy), fmt, "fp32")
        with open(copy / row.sidecar, "r+b") as fh:  # one weight changed; the .param / .xml untouched
            fh.seek(4096)
            byte = fh.read(1)
            fh.seek(4096)
            fh.write(bytes([byte[0] ^ 0xFF]))
        with pytest.raises(ArtifactMismatch, match=f"{row.sidecar} does not match the sha256"):
            load_artifacts(copy)


def _parity(root, backend, *extra):
    return subprocess.run([sys.executable, "-m", "resnet_edge", "parity", str(root), "--backend", backend,
                           "--reference", "golden", *extra], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("fmt", ["litert", "ncnn", "executorch"])
def test_a_file_that_matches_its_hash_but_does_not_load_is_one_sentence_naming_the_runtime(export_dir, tmp_path, fmt):
    from resnet_edge.atomic import sha256_file

    copy = tmp_path / "arts"
    shutil.copytree(export_dir, copy, ignore=shutil.ignore_patterns("triton"))
    doc = json.loads((copy / "manifest.json").read_text())
    row = next(a for a in doc["artifacts"] if a["format"] == fmt and a["precision"] == "fp32")
    path = copy / row["path"]
    path.write_bytes(path.read_bytes()[:300])  # truncated, and the manifest told: the hash matches
    row["sha256"] = sha256_file(path)
    doc["artifacts"] = [row]
    (copy / "manifest.json").write_text(json.dumps(doc))
    res = _parity(copy, FORMATS[fmt].backends[0])
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: The {FORMATS[fmt].backends[0]} backend could not load"), lines


def test_a_truncated_edge_file_is_refused_by_its_hash(export_dir, tmp_path):
    copy = tmp_path / "arts"
    shutil.copytree(export_dir, copy, ignore=shutil.ignore_patterns("triton"))
    row = _row(read_manifest(copy), "litert", "int8")
    (copy / row.path).write_bytes((copy / row.path).read_bytes()[:1000])
    res = _parity(copy, "litert")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert f"{row.path} does not match the sha256" in res.stderr


def test_ncnn_gives_the_same_logits_with_torch_loaded_first_as_alone(export_dir):
    """ncnn's wheel carries its own libgomp; a process that loaded torch first must still compute ncnn's logits
    right (the backend's own process isolation is what export uses; this holds the in-process path to it)."""
    from runtime import backends
    from runtime.isolated import run_isolated

    arts = load_artifacts(export_dir)
    art = arts.find("ncnn", "fp32")
    x = arts.golden_run().images[:64]
    from resnet_edge.images import to_input

    x = to_input(x, arts.spec.mean, arts.spec.std, arts.spec.image_size)
    alone = run_isolated("ncnn", art.path, "fp32", arts.spec, x)
    import torch  # noqa: F401  (loaded before ncnn runs here)

    with backends.create("ncnn", arts.spec, art.path, precision="fp32") as b:
        here = b.infer(x)
    np.testing.assert_allclose(here, alone, rtol=0, atol=1e-5)


def test_export_formats_option_is_checked_in_one_sentence(trained_ckpt, tmp_path):
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "export", str(trained_ckpt), "--out", str(tmp_path),
                          "--formats", "onnx,coreml"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Unknown format 'coreml' for --formats" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "manifest.json").exists()


def test_bench_summary_has_a_proven_row_per_artifact_and_its_own_runtimes_defaults(export_dir, tmp_path):
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "bench", str(export_dir), "--summary", "--summary-dir",
                          str(tmp_path), "--batch", "1,2", "--duration", "0.05s", "--warmup", "0.02s", "--rounds", "1",
                          "--accuracy-images", "0", "--precision", "fp32,int8", "--backend",
                          "onnxruntime,openvino,litert,ncnn,executorch"],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert {p.name for p in tmp_path.iterdir()} >= {"summary.md", "summary.csv", "summary.json", "summary.png"}
    rows = json.loads((tmp_path / "summary.json").read_text())["rows"]
    ran = {(r["format"], r["precision"]): r for r in rows if r["p50_ms_batch1"] is not None}
    assert {("litert", "int8"), ("litert", "fp32"), ("ncnn", "fp32"), ("openvino", "int8"), ("executorch", "int8"),
            ("onnx", "fp32")} <= set(ran)
    exported = {a.path: a.test_accuracy for a in read_manifest(export_dir).artifacts}
    for r in ran.values():
        assert r["status"] == "passed parity" and r["size_mb"] > 1 and r["ips_largest_batch"] > 0, r
        # --accuracy-images 0: the accuracy export measured, on the images PyTorch's accuracy came from, so the
        # difference is the export gate's own (test_bench holds bench's accuracy column on labelled images)
        assert r["accuracy"] == exported[r["artifact"]] and abs(r["delta_acc_pt"]) <= 0.5, r
    assert ran[("litert", "fp32")]["peer"] == "peer: LiteRT defaults"
    assert ran[("litert", "int8")]["peer"] == "peer: OpenVINO + NNCF INT8"
    assert ran[("ncnn", "fp32")]["peer"] is None  # ncnn's defaults compute in fp16: held against the fp16 file
    skipped = [r for r in rows if r["status"].startswith("export skipped")]
    assert any(r["format"] == "ncnn" and "int8" in r["status"] for r in skipped)
    md = (tmp_path / "summary.md").read_text()
    assert md.count("\n") == len(rows) + 2 and "| litert | int8 | passed parity |" in md
