"""A Triton model repository from the manifest: one model per artifact.

``DIR/<name>/config.pbtxt``, ``DIR/<name>/1/model.onnx`` (or ``model.plan``) and
``DIR/<name>/labels.txt``. The same repository serves on Triton or KServe.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from resnet_edge.atomic import atomic_path, atomic_write_text

PLATFORMS = {"onnx": ("onnxruntime_onnx", "model.onnx"), "tensorrt": ("tensorrt_plan", "model.plan")}
# Written into every model folder an export makes: a later export of the same model removes only folders that
# carry it with that model's name, so other models in a shared repository (another ResNet's, anyone's) stay.
MARKER = "resnet_edge.json"


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
        atomic_write_text(model_dir / MARKER, json.dumps({"written_by": "resnet-edge export", "model": base,
                                                          "artifact": art["path"], "sha256": art["sha256"]}, indent=2))
        written.append(model_dir)
    for stale in sorted(p for p in repo.iterdir() if p.is_dir() and p not in written and _ours(p, base)):
        shutil.rmtree(stale)  # this model's folder from an earlier export, for a variant this one did not make
    return written


def _ours(model_dir: Path, base: str) -> bool:
    """Whether an earlier export of model ``base`` wrote this folder (its marker says so)."""
    try:
        doc = json.loads((model_dir / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("written_by") == "resnet-edge export" and doc.get("model") == base
