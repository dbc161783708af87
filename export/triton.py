"""A Triton model repository from the manifest: one model per artifact.

``DIR/<name>/config.pbtxt``, ``DIR/<name>/1/model.onnx`` (or ``model.plan``) and
``DIR/<name>/labels.txt``. The same repository serves on Triton or KServe.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from resnet_edge.atomic import atomic_path, atomic_write_text
from runtime.contract import ArtifactRow, Manifest
from runtime.formats import FORMATS

# Written into every model folder an export makes: a later export of the same model removes only folders that
# carry it with that model's name, so other models in a shared repository (another ResNet's, anyone's) stay.
MARKER = "resnet_edge.json"


def model_name(art: ArtifactRow, base: str) -> str:
    variant = art.precision.value + (f"_{art.target}" if art.target != "any" else "")
    return f"{base}_{variant}_{FORMATS[art.format].triton.tag}"


def config_pbtxt(name: str, art: ArtifactRow, manifest: Manifest, max_batch_size: int, queue_delay_us: int) -> str:
    triton = FORMATS[art.format].triton
    inp, out = manifest.io.input, manifest.io.output
    dims_in = ", ".join(str(d) for d in inp.shape[1:])
    dims_out = ", ".join(str(d) for d in out.shape[1:])
    preferred = ", ".join(str(b) for b in sorted({max(1, max_batch_size // 4), max_batch_size // 2, max_batch_size}) if b)
    return f'''name: "{name}"
platform: "{triton.platform}"
default_model_filename: "{triton.filename}"
max_batch_size: {max_batch_size}
input [
  {{
    name: "{inp.name}"
    data_type: TYPE_FP32
    dims: [ {dims_in} ]
  }}
]
output [
  {{
    name: "{out.name}"
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
    kind: {triton.kind}
  }}
]
version_policy: {{ latest: {{ num_versions: 1 }} }}
'''


def write_triton_repo(manifest: Manifest, artifacts_dir: Path, repo: Path, *,
                      max_batch_size: int = 64, queue_delay_us: int = 100) -> list[Path]:
    """Write one Triton model per artifact of a format Triton loads (the formats table says which); returns the
    model directories."""
    base = manifest.model.name
    labels = "\n".join(manifest.model.class_names) + "\n"
    written = []
    for art in manifest.artifacts:
        triton = FORMATS[art.format].triton if art.format in FORMATS else None
        if triton is None:
            continue
        name = model_name(art, base)
        model_dir = repo / name
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        with atomic_path(model_dir / "1" / triton.filename) as tmp:
            shutil.copyfile(artifacts_dir / art.path, tmp)
        atomic_write_text(model_dir / "labels.txt", labels)
        atomic_write_text(model_dir / "config.pbtxt",
                          config_pbtxt(name, art, manifest, max_batch_size, queue_delay_us))
        atomic_write_text(model_dir / MARKER, json.dumps({"written_by": "resnet-edge export", "model": base,
                                                          "artifact": art.path, "sha256": art.sha256}, indent=2))
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
