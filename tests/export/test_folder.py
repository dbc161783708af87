"""An export's output folder: one export at a time, nothing left behind by one that died, a commit that a crash at
any step leaves recoverable, and a full disk in one sentence (issue 35, item 13)."""

import dataclasses
import errno
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from export import folder
from resnet_edge.errors import InvalidInput
from runtime.contract import MANIFEST, read_manifest


def _copy(export_dir, out, link=False):
    """A copy of the export (``link``: hard links, for a test that only renames and removes files: no 500 MB
    copy per step)."""
    shutil.copytree(export_dir, out, ignore=shutil.ignore_patterns("triton"),
                    copy_function=os.link if link else shutil.copy2)
    return read_manifest(out)


def _files(out):
    return {p.name for p in out.iterdir()}


def _next_export(export_dir, tmp_path, link=False):
    """A manifest that drops the INT8 row (its file is the old export's only) and the files to commit it from."""
    old = read_manifest(export_dir)
    new = dataclasses.replace(old, artifacts=tuple(a for a in old.artifacts if a.precision != "int8"))
    staging = tmp_path / "staging"
    staging.mkdir(parents=True)
    for name in new.files:
        (os.link if link else shutil.copy)(export_dir / name, staging / name)
    return new, staging


def test_a_second_export_into_the_folder_says_who_holds_it(tmp_path):
    with folder.claim(tmp_path / "out") as staging:
        assert staging.parent == tmp_path / "out" and staging.name.startswith(".staging-")
        busy = pytest.raises(folder.FolderBusy, match=rf"Another export \(pid {os.getpid()}\) is writing")
        with busy, folder.claim(tmp_path / "out"):
            pass
    assert _files(tmp_path / "out") == set()  # staging and lock gone
    with folder.claim(tmp_path / "out"):  # free again
        pass


def test_a_commit_killed_at_any_step_is_finished_by_the_next_export(export_dir, tmp_path, monkeypatch):
    """Every rename of the commit, and the removal of the old files, as the step a kill -9 interrupts."""
    new, _ = _next_export(export_dir, tmp_path / "count", link=True)  # the commit renames and removes: links do
    steps = len(new.files) + 2  # each file renamed in, the manifest renamed in, the old files removed
    real_replace, real_remove = folder.os.replace, folder._remove
    for crash_at in range(steps):
        out = tmp_path / f"out{crash_at}"
        _copy(export_dir, out, link=True)
        (out / "mine.txt").write_text("a user's file")
        new, staging = _next_export(export_dir, tmp_path / f"s{crash_at}", link=True)
        calls = {"n": 0}

        def dying(*args, real, crash_at=crash_at, calls=calls):
            if calls["n"] == crash_at:
                raise KeyboardInterrupt  # as kill -9 at this step: nothing after it runs
            calls["n"] += 1
            return real(*args)

        monkeypatch.setattr(folder.os, "replace", lambda a, b: dying(a, b, real=real_replace))
        monkeypatch.setattr(folder, "_remove", lambda o, names: dying(o, names, real=real_remove))
        with pytest.raises(KeyboardInterrupt):
            folder.commit(staging, out, new)
        monkeypatch.setattr(folder.os, "replace", real_replace)
        monkeypatch.setattr(folder, "_remove", real_remove)
        new, staging = _next_export(export_dir, tmp_path / f"again{crash_at}", link=True)
        with folder.claim(out):  # the next export: recovers, then commits whole
            folder.commit(staging, out, new)
        read_manifest(out)  # every hash intact
        assert _files(out) == new.files | {MANIFEST, "mine.txt"}, crash_at
        for done in (out, tmp_path / f"s{crash_at}", tmp_path / f"again{crash_at}"):
            shutil.rmtree(done)
    read_manifest(export_dir)  # the shared export is untouched (every hash checked)


def test_stale_staging_and_a_journal_of_a_dead_export_are_cleaned(export_dir, tmp_path):
    out = tmp_path / "out"
    manifest = _copy(export_dir, out)
    (out / ".staging-dead").mkdir()
    (out / ".staging-dead" / "resnet18_fp32.onnx").write_bytes(b"\0" * 1000)
    (out / "orphan.onnx").write_bytes(b"staged by the dead export")
    (out / "mine.onnx").write_bytes(b"the user's: in no journal")
    (out / folder.JOURNAL).write_text('["orphan.onnx", "../escape.onnx", "resnet18_fp32.onnx"]')
    with folder.claim(out):
        pass
    assert _files(out) == manifest.files | {MANIFEST, "mine.onnx"}


def test_a_full_disk_is_one_sentence_and_changes_nothing(export_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _copy(export_dir, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    new, staging = _next_export(export_dir, tmp_path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / folder.JOURNAL))

    monkeypatch.setattr(folder, "atomic_write_text", full)
    with pytest.raises(InvalidInput, match=r"Cannot commit the export in .*: the disk is full \(.export-journal.json\)"):
        folder.commit(staging, out, new)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.slow
def test_kill_9_of_an_export_then_the_next_one_leaves_exactly_its_files(trained_ckpt, export_dir, tmp_path):
    out = tmp_path / "out"
    _copy(export_dir, out)
    cmd = [sys.executable, "-m", "resnet_edge", "export", str(trained_ckpt), "--out", str(out), "--formats", "onnx",
           "--precision", "fp32,int8", "--limit", "500", "--calib-size", "256", "--no-trt-rtx", "--no-cpu-int8"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob(".staging-*/resnet18_fp32.onnx")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert list(out.glob(".staging-*")) and (out / folder.LOCK).exists()  # what a kill -9 leaves
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _files(out) == read_manifest(out).files | {MANIFEST}
