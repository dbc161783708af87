"""A Triton model repository from the manifest: one model per artifact.

``DIR/<name>/config.pbtxt``, ``DIR/<name>/1/model.onnx`` (or ``model.plan``) and
``DIR/<name>/labels.txt``. The same repository serves on Triton or KServe.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from resnet_edge.atomic import atomic_path, atomic_write_text

PLATFORMS = {"onnx": ("onnxruntime_onnx", "model.onnx"), "tensorrt": ("tensorrt_plan", "model.plan")}
# The folders model_name() makes, for any ResNet, precision and format: other models in a shared
# repository are never touched.
OURS = re.compile(r"resnet\d+_(fp32|fp16|bf16|int8)(_[a-z0-9]+)?_(onnx|trt)")


def model_name(art: dict[str, Any], base: str) -> str:
    suffix = {"onnx": "onnx", "tensorrt": "trt"}[art["format"]]
    variant = art["precision"] + (f"_{art['target']}" if art.get("target", "any") != "any" else "")
    return f"{base}_{variant}_{suffix}"


def config_pbtxt(name: str, art: dict[str, Any], manifest: dict[str, Any], max_batch_size: int,
                 queue_delay_us: int) -> str:
    platform, filename = PLATFORMS[art["format"]]
    inp, out = manifest["io"]["input"], manifest["io"]["output"]
    dims_in = ", ".join(str(d) for d in inp["shape"][1:])
    dims_out = ", ".join(str(d) for d in out["shape"][1:])
    preferred = ", ".join(str(b) for b in sorted({max(1, max_batch_size // 4), max_batch_size // 2, max_batch_size}) if b)
    return f'''name: "{name}"
platform: "{platform}"
default_model_filename: "{filename}"
max_batch_size: {max_batch_size}
input [
  {{
    name: "{inp['name']}"
    data_type: TYPE_FP32
    dims: [ {dims_in} ]
  }}
]
output [
  {{
    name: "{out['name']}"
    data_type: TYPE_FP32
    dims: [ {dims_out} ]
    label_filename: "labels.txt"
  }}
]
dynamic_batching {{
  preferred_batch_size: [ {preferred} ]
  max_queue_delay_microseconds: {queue_delay_us}
}}
instance_group [
  {{
    count: 1
    kind: {"KIND_GPU" if art["format"] == "tensorrt" else "KIND_AUTO"}
  }}
]
version_policy: {{ latest: {{ num_versions: 1 }} }}
'''


def write_triton_repo(manifest: dict[str, Any], artifacts_dir: Path, repo: Path, *,
                      max_batch_size: int = 64, queue_delay_us: int = 100) -> list[Path]:
    """Write one Triton model per artifact; returns the model directories."""
    base = manifest["model"]["name"]
    labels = "\n".join(manifest["model"]["class_names"]) + "\n"
    written = []
    for art in manifest["artifacts"]:
        if art["format"] not in PLATFORMS:  # AOTI packages: Triton's PyTorch backend does not load them
            continue
        name = model_name(art, base)
        model_dir = repo / name
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        _, filename = PLATFORMS[art["format"]]
        with atomic_path(model_dir / "1" / filename) as tmp:
            shutil.copyfile(artifacts_dir / art["path"], tmp)
        atomic_write_text(model_dir / "labels.txt", labels)
        atomic_write_text(model_dir / "config.pbtxt",
                          config_pbtxt(name, art, manifest, max_batch_size, queue_delay_us))
        written.append(model_dir)
    for stale in sorted(p for p in repo.iterdir() if p.is_dir() and OURS.fullmatch(p.name) and p not in written):
        shutil.rmtree(stale)  # a model an earlier export wrote and this one did not
    return written
