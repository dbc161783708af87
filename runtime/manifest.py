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


def read_manifest(out_dir: Path, *, verify: bool = True) -> dict[str, Any]:
    """Load ``out_dir/manifest.json``; with ``verify``, check every artifact's sha256."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise ArtifactMismatch(f"{path} does not exist; run 'resnet-edge export' (or 'make export') first.")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactMismatch(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactMismatch(f"{path} has schema version {manifest.get('schema_version')}; "
                               f"this resnet-edge reads version {SCHEMA_VERSION}.")
    if verify:
        for art in manifest.get("artifacts", []) + ([manifest["golden"]] if manifest.get("golden") else []):
            file = Path(out_dir) / art["path"]
            if not file.is_file():
                raise ArtifactMismatch(f"{path} names {art['path']}, which does not exist.")
            if sha256_file(file) != art["sha256"]:
                raise ArtifactMismatch(f"{file} does not match the sha256 in {path}; re-run the export.")
    return manifest
