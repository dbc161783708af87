"""The output folder of an export: one export at a time, staging inside it, and a commit that a crash at any step
leaves recoverable.

``claim(out)`` takes an exclusive lock on ``out/.export.lock`` (``flock``: released by the kernel when the process
dies, ``kill -9`` included), so a second export into the folder says which process holds it; it then removes the
staging folders of exports that died (none can be alive while the lock is held) and finishes a commit one of them
left half-done. ``commit`` writes the new manifest in staging (a full disk stops it there, before anything in
the folder changes), renames the new files and then the manifest in, and only then removes the files the old
manifest named that the new one does not; a journal (``.export-journal.json``) written first names every file
the commit may leave behind, so that the next export removes exactly those the manifest then in place does not name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from resnet_edge.atomic import atomic_write_text
from resnet_edge.errors import InvalidInput, ToolkitError
from runtime.contract import MANIFEST, Manifest, parse_manifest, write_manifest

LOCK = ".export.lock"
JOURNAL = ".export-journal.json"
STAGING_PREFIX = ".staging-"


class FolderBusy(InvalidInput):
    """Another export is writing into the same folder."""


@contextlib.contextmanager
def claim(out: Path) -> Iterator[Path]:
    """Hold ``out`` for one export: the lock, stale staging removed, a half-done commit finished; yields a fresh
    staging folder inside ``out`` (removed on the way out, whatever happens)."""
    with writing(out, "prepare"):
        out.mkdir(parents=True, exist_ok=True)
        fd = _lock(out / LOCK, out)
    try:
        with writing(out, "prepare"):
            for stale in out.glob(STAGING_PREFIX + "*"):  # an export that died: nobody else holds the lock
                shutil.rmtree(stale, ignore_errors=True)
            recover(out)
            staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        with contextlib.suppress(OSError):
            (out / LOCK).unlink()  # still held: nobody can take it between the unlink and the close
        os.close(fd)  # releases the lock


def _lock(path: Path, out: Path) -> int:
    """The lock file, held exclusively; the same inode as the path after locking (an export that finished may
    have unlinked the file between our open and our lock: then lock the new one)."""
    for _ in range(5):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise FolderBusy(f"Another export (pid {holder}) is writing into {out}; wait for it to finish or export "
                             "into another --out.") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            return fd
        os.close(fd)
    raise FolderBusy(f"Could not take the export lock of {out}; another export keeps replacing it.")


@contextlib.contextmanager
def writing(out: Path, what: str) -> Iterator[None]:
    """An OSError while writing into ``out`` (a full disk, no permission) as one sentence."""
    try:
        yield
    except ToolkitError:
        raise
    except OSError as exc:
        reason = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc)).lower()
        raise InvalidInput(f"Cannot {what} the export in {out}: {reason}"
                           f"{f' ({Path(exc.filename).name})' if exc.filename else ''}; nothing named by its "
                           "manifest was changed.") from None


def named_files(out: Path) -> set[str]:
    """The files the manifest in ``out`` names (none if it is missing or unreadable: nothing is removed on its word)."""
    try:
        names = parse_manifest(json.loads((out / MANIFEST).read_text())).files
    except (OSError, ValueError, ToolkitError):
        return set()
    return {n for n in names if n and Path(n).name == n}  # plain names inside ``out`` only


def commit(staging: Path, out: Path, manifest: Manifest) -> None:
    """New files in, the new manifest, then the old manifest's files that the new one does not name out. Only files
    an export's manifest (or journal) names are ever removed: a user's own files in ``out`` stay."""
    with writing(out, "commit"):
        keep = manifest.files
        previous = named_files(out)
        write_manifest(staging, manifest)  # written (and its files checked) before anything in ``out`` changes:
        atomic_write_text(out / JOURNAL, json.dumps(sorted(previous | keep)))  # a full disk stops it here
        for name in sorted(keep):
            os.replace(staging / name, out / name)  # renames within one file system: no space needed
        os.replace(staging / MANIFEST, out / MANIFEST)
        _remove(out, previous - keep)
        (out / JOURNAL).unlink()


def recover(out: Path) -> None:
    """Finish a commit that died: of the files its journal names, remove those the manifest in place does not."""
    try:
        journal = json.loads((out / JOURNAL).read_text())
    except (OSError, ValueError):
        return
    if isinstance(journal, list):
        _remove(out, {n for n in journal if isinstance(n, str) and n and Path(n).name == n} - named_files(out))
    (out / JOURNAL).unlink(missing_ok=True)


def _remove(out: Path, names: set[str]) -> None:
    for name in names:
        (out / name).unlink(missing_ok=True)
