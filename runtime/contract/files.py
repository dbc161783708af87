"""Reading and writing ``manifest.json``: every name it holds confined to its folder, every hash checked."""

from __future__ import annotations

import json
from pathlib import Path

from resnet_edge.atomic import atomic_write_text, sha256_file
from resnet_edge.errors import ArtifactMismatch
from runtime.contract.manifest import MANIFEST, Manifest, parse_manifest


def read_manifest(out_dir: Path, *, verify: bool = True) -> Manifest:
    """Load ``out_dir/manifest.json``; with ``verify``, check every file it names against its sha256."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise ArtifactMismatch(f"{path} does not exist; run 'resnet-edge export' (or 'make export') first.")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactMismatch(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactMismatch(f"{path} cannot be read ({exc}).") from None
    manifest = parse_manifest(doc, str(path))
    check_names(manifest, Path(out_dir), str(path))
    if verify:
        for name, sha in _hashed(manifest):
            file = Path(out_dir) / name
            if not file.is_file():
                raise ArtifactMismatch(f"{path} names {name}, which does not exist.")
            if sha256_file(file) != sha:
                raise ArtifactMismatch(f"{file} does not match the sha256 in {path}; re-run the export.")
    return manifest


def check_names(manifest: Manifest, out_dir: Path, where: str = MANIFEST) -> None:
    """Every file a manifest names is a plain relative name inside its folder (no absolute path, no '..', no
    symlink leading out of it), and carries a sha256: an artifact folder cannot point a loader at another file."""
    root = Path(out_dir).resolve()
    for art in manifest.artifacts:
        if art.sidecar and not art.sidecar_sha256:
            raise ArtifactMismatch(f"{where} names the sidecar {art.sidecar!r} without its sha256; re-run the export.")
    for name in manifest.files:
        plain = name and "\\" not in name and "\0" not in name and not Path(name).is_absolute() \
            and ".." not in Path(name).parts
        if not plain or not (root / name).resolve().is_relative_to(root):
            raise ArtifactMismatch(f"{where} names {name[:200]!r}, which is not a file inside {out_dir}; an artifact "
                                   "folder may only name files within itself.")


def write_manifest(out_dir: Path, manifest: Manifest) -> Path:
    """Write atomically, after checking that every file it names exists with its hash."""
    check_names(manifest, Path(out_dir))
    for name, sha in _hashed(manifest):
        file = Path(out_dir) / name
        if not file.is_file() or sha256_file(file) != sha:
            raise ArtifactMismatch(f"Refusing to write a manifest naming {name}, which is missing or changed.")
    return atomic_write_text(Path(out_dir) / MANIFEST, manifest.to_json())


def _hashed(manifest: Manifest) -> list[tuple[str, str]]:
    return [(a.path, a.sha256) for a in manifest.artifacts] + \
        [(a.sidecar, a.sidecar_sha256) for a in manifest.artifacts if a.sidecar and a.sidecar_sha256] + \
        [(entry.path, entry.sha256) for entry in (manifest.golden, manifest.reference) if entry]
