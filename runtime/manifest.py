"""``manifest.json``: the one file the runtime trusts about the exported artifacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from resnet_edge.atomic import atomic_write_text, sha256_file
from resnet_edge.errors import ArtifactMismatch

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
GOLDEN_FILE = "golden.npz"  # real test images (uint8), labels and PyTorch FP32 logits: parity without torch


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write atomically, after checking that every artifact it names exists with its hash."""
    for art in manifest["artifacts"] + ([manifest["golden"]] if manifest.get("golden") else []):
        path = out_dir / art["path"]
        if not path.is_file() or sha256_file(path) != art["sha256"]:
            raise ArtifactMismatch(f"Refusing to write a manifest naming {art['path']}, which is missing or changed.")
    return atomic_write_text(out_dir / MANIFEST, json.dumps({"schema_version": SCHEMA_VERSION, **manifest}, indent=2))


_NUMBER = (int, float)
# The fields every reader relies on: dotted path -> type. "[]" checks each element of a list.
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "model": dict, "model.name": str, "model.num_classes": int, "model.class_names": list, "model.class_names[]": str,
    "preprocessing": dict, "preprocessing.image_size": int, "preprocessing.channels": int,
    "preprocessing.mean": list, "preprocessing.mean[]": _NUMBER, "preprocessing.std": list,
    "preprocessing.std[]": _NUMBER,
    "io": dict, "io.input": dict, "io.input.name": str, "io.output": dict, "io.output.name": str,
    "source": dict, "source.checkpoint": str, "source.sha256": str, "source.test_accuracy": _NUMBER,
    "artifacts": list, "artifacts[]": dict, "artifacts[].path": str, "artifacts[].format": str,
    "artifacts[].precision": str, "artifacts[].sha256": str, "artifacts[].test_accuracy": _NUMBER,
    "golden.path": str, "golden.sha256": str,  # where there is a golden set
}
OPTIONAL = {"golden": dict, "preprocessing.source_size": int,
            "preprocessing.source_resize": (int, type(None))}
_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", _NUMBER: "a number",
               (int, type(None)): "an integer or null"}


def check_manifest(manifest: dict[str, Any]) -> str | None:
    """None if every field the readers use is there with its type; else a phrase naming the first that is not."""
    for table, required in ((REQUIRED, True), (OPTIONAL, False)):
        for key, kind in table.items():
            for where, value in _values(manifest, key):
                if value is _MISSING:
                    if required:
                        return f"it lacks '{where}'"
                    continue
                if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, _NUMBER)):
                    return f"'{where}' is {type(value).__name__}, not {_TYPE_NAMES.get(kind, kind)}"
    return None


_MISSING = object()


def _values(doc: Any, key: str):
    """(concrete dotted path, value or _MISSING) for a dotted key with "[]" over list elements; a parent that is
    missing or of the wrong type yields nothing (its own row reports it)."""
    nodes = [("", doc)]
    for part in key.split("."):
        each = part.endswith("[]")
        name = part[:-2] if each else part
        nxt = []
        for where, node in nodes:
            if not isinstance(node, dict):
                continue
            here = f"{where}.{name}" if where else name
            value = node.get(name, _MISSING)
            if each:
                if isinstance(value, list):
                    nxt += [(f"{here}[{i}]", v) for i, v in enumerate(value)]
            else:
                nxt.append((here, value))
        nodes = nxt if part == key.split(".")[-1] else [(w, v) for w, v in nxt if v is not _MISSING]
    return nodes


def read_manifest(out_dir: Path, *, verify: bool = True) -> dict[str, Any]:
    """Load ``out_dir/manifest.json``; with ``verify``, check every artifact's sha256."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise ArtifactMismatch(f"{path} does not exist; run 'resnet-edge export' (or 'make export') first.")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactMismatch(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        version = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise ArtifactMismatch(f"{path} has schema version {version}; this resnet-edge reads version {SCHEMA_VERSION}.")
    problem = check_manifest(manifest)
    if problem:
        raise ArtifactMismatch(f"{path} is malformed: {problem}; re-run the export.")
    if verify:
        for art in manifest.get("artifacts", []) + ([manifest["golden"]] if manifest.get("golden") else []):
            file = Path(out_dir) / art["path"]
            if not file.is_file():
                raise ArtifactMismatch(f"{path} names {art['path']}, which does not exist.")
            if sha256_file(file) != art["sha256"]:
                raise ArtifactMismatch(f"{file} does not match the sha256 in {path}; re-run the export.")
    return manifest
