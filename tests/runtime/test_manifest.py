"""A manifest that is valid JSON but malformed is refused by every command that reads it, in one sentence naming
the field, with no traceback."""

import json
import shutil
import subprocess
import sys

import pytest

from resnet_edge.errors import ArtifactMismatch
from runtime.manifest import check_manifest, read_manifest


def _broken(export_dir, tmp_path, edit):
    out = tmp_path / "arts"
    shutil.copytree(export_dir, out, ignore=shutil.ignore_patterns("triton"))
    doc = json.loads((out / "manifest.json").read_text())
    edit(doc)
    (out / "manifest.json").write_text(json.dumps(doc))
    return out


@pytest.mark.parametrize(("edit", "named"), [
    (lambda d: d["io"]["input"].pop("name"), "it lacks 'io.input.name'"),
    (lambda d: d["artifacts"][0].pop("sha256"), "it lacks 'artifacts[0].sha256'"),
    (lambda d: d["model"].update(num_classes="10"), "'model.num_classes' is str, not an integer"),
    (lambda d: d.pop("preprocessing"), "it lacks 'preprocessing'"),
    (lambda d: d["golden"].pop("path"), "it lacks 'golden.path'"),
])
def test_every_command_refuses_a_malformed_manifest_naming_the_field(export_dir, tmp_path, edit, named):
    out = _broken(export_dir, tmp_path, edit)
    with pytest.raises(ArtifactMismatch, match=named.replace("[", r"\[").replace("]", r"\]")):
        read_manifest(out)
    commands = [["parity", str(out)], ["predict", str(out), str(out / "manifest.json")], ["serve", str(out)],
                ["bench", str(out), "--duration", "0.1s"]]
    for args in commands if "io.input" in named else commands[:1]:
        res = subprocess.run([sys.executable, "-m", "resnet_edge", *args], capture_output=True, text=True, timeout=120)
        assert res.returncode != 0 and "Traceback" not in res.stderr, (args, res.stderr[-2000:])
        assert named in res.stderr and "malformed" in res.stderr, (args, res.stderr[-2000:])


def test_the_exported_manifest_is_well_formed(export_dir):
    assert check_manifest(read_manifest(export_dir)) is None
