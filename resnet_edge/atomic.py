"""Atomic file writes: write a temporary file beside the target, fsync, rename.

A reader (or a crash) can then only ever see the old file or the complete new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it replaces ``target``.

    Useful for libraries that insist on writing to a path themselves (torch.save,
    onnx.save, quantizers). On any exception the temporary file is removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temp(target)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(target: Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file for writing that atomically becomes ``target`` on close."""
    with atomic_path(target) as tmp, open(tmp, mode) as fh:
        yield fh
        fh.flush()


def atomic_write_bytes(target: Path, data: bytes) -> Path:
    with atomic_open(target, "wb") as fh:
        fh.write(data)
    return Path(target)


def atomic_write_text(target: Path, text: str) -> Path:
    return atomic_write_bytes(target, text.encode("utf-8"))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _create_temp(target: Path) -> Path:
    """A new, empty file beside ``target`` with mode 0666 less the umask, like any file the user creates.

    mkstemp would make it 0600, and reading the umask means setting it, process-wide; letting the
    kernel apply the umask to os.open's mode needs neither. Artifacts are read by servers running as others.
    """
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"Could not create a temporary file beside {target}.")


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
