"""The Pareto view of `bench --pareto-with`: several artifact folders in one interleaved run, each row on its
format's own runtime, every speed held against the teacher's OpenVINO + NNCF INT8."""

import json
import shutil
import subprocess
import sys

import pytest


def test_two_folders_in_one_run_with_each_ones_nncf_peer(export_dir, tmp_path):
    pytest.importorskip("nncf", reason="the NNCF INT8 peer needs nncf (pip install 'resnet-edge[nncf]')")
    other = tmp_path / "slim"
    shutil.copytree(export_dir, other, ignore=shutil.ignore_patterns("triton"))
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "bench", str(export_dir), "--pareto-with", str(other),
                          "--batch", "1,4", "--warmup", "0.01s", "--duration", "0.02s", "--rounds", "1",
                          "--accuracy-images", "200", "--summary-dir", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads((tmp_path / "r" / "pareto.json").read_text())
    rows = doc["rows"]
    teacher = export_dir.resolve().name
    assert {r["model"] for r in rows} == {teacher, "slim"}
    peers = [r for r in rows if r["peer"]]
    assert [r["model"] for r in peers] == [teacher, "slim"]  # NNCF INT8 of each model's own FP32 ONNX
    ref = next(r for r in peers if r["model"] == teacher)
    assert ref["vs_teacher_nncf_batch1"] == 1.0 and ref["vs_teacher_nncf_largest"] == 1.0
    for r in rows:  # every ratio is the teacher's NNCF p50 over the row's, from the same run
        assert r["accuracy"] is not None and r["p50_ms_batch1"] > 0 and r["vs_teacher_nncf_batch1"] > 0
    formats = {r["label"].split(" ")[0] for r in rows if not r["peer"]}
    assert {"onnxruntime", "openvino", "torch"} <= formats  # each artifact on its own runtime, not one backend
    assert (tmp_path / "r" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert "| model | variant |" in (tmp_path / "r" / "pareto.md").read_text()


def test_folders_of_another_task_or_the_same_name_are_refused(export_dir, tmp_path):
    other = tmp_path / export_dir.resolve().name
    shutil.copytree(export_dir, other, ignore=shutil.ignore_patterns("triton"))
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "bench", str(export_dir), "--pareto-with", str(other)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "must have distinct names" in res.stderr and "Traceback" not in res.stderr
