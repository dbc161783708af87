"""A manifest that is valid JSON but malformed is refused by every command that reads it, in one sentence naming
the field, with no traceback."""

import json
import shutil
import subprocess
import sys

import pytest

from resnet_edge.errors import ArtifactMismatch
from runtime.contract import SCHEMA_FILE, SCHEMA_VERSION, manifest_schema, parse_manifest, read_manifest


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
    (lambda d: d["artifacts"][1].update(precision="fp8"), "'artifacts[1].precision' is 'fp8', not one of 'fp32'"),
    (lambda d: d["preprocessing"]["mean"].append("0.5"), "'preprocessing.mean[1]' is str, not a number"),
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


def test_the_exported_manifest_fits_the_published_schema(export_dir):
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema == manifest_schema(), "manifest.schema.json is stale: run 'python -m runtime.contract'"
    jsonschema.Draft202012Validator.check_schema(schema)
    doc = json.loads((export_dir / "manifest.json").read_text())
    assert doc["schema_version"] == SCHEMA_VERSION == 2
    jsonschema.validate(doc, schema)
    # The schema and the reader agree on what is malformed: a row without its hash fails both.
    del doc["artifacts"][0]["sha256"]
    with pytest.raises(jsonschema.ValidationError, match="sha256"):
        jsonschema.validate(doc, schema)


def test_written_and_read_back_the_manifest_is_the_same_value(export_dir):
    manifest = read_manifest(export_dir)
    assert parse_manifest(json.loads(manifest.to_json())) == manifest


def test_a_version_1_manifest_is_read_and_upgraded(export_dir, tmp_path):
    """Version 1 (before the typed contract) repeated the tensors in every row; an export made then still loads,
    verifies and serves."""
    from runtime.spec import load_artifacts

    def to_v1(doc):
        doc["schema_version"] = 1
        doc["artifacts"] = [row for row in doc["artifacts"] if row["parity"]]  # version 1 had no built-only rows
        for row in doc["artifacts"]:
            row["inputs"] = [{"name": "images", "dtype": "float32", "shape": [-1, 1, 28, 28]}]
            row["outputs"] = [{"name": "logits", "dtype": "float32", "shape": [-1, 10]}]
            row["parity"].pop("failures")
        doc.pop("skipped")
        doc["fold"].pop("failures")

    out = _broken(export_dir, tmp_path, to_v1)
    v1, v2 = read_manifest(out), read_manifest(export_dir)
    assert v1.artifacts == tuple(a for a in v2.artifacts if a.parity) and v1.io == v2.io and v1.skipped == ()
    assert load_artifacts(out).spec == load_artifacts(export_dir).spec
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "parity", str(out), "--reference", "golden", "--backend",
                          "onnxruntime", "--precision", "fp32", "--limit", "200"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.mark.parametrize("version", [0, 3, "2", None])
def test_an_unknown_schema_version_is_one_sentence(export_dir, tmp_path, version):
    out = _broken(export_dir, tmp_path, lambda d: d.update(schema_version=version))
    with pytest.raises(ArtifactMismatch, match=f"has schema version {version}; this resnet-edge reads versions 1, 2"):
        read_manifest(out)


@pytest.mark.parametrize("where", ["../outside.onnx", "/etc/passwd", "sub/../../outside.onnx", "a\\b.onnx", "link.onnx"])
def test_a_manifest_cannot_name_a_file_outside_its_folder(export_dir, tmp_path, where):
    """Issue 35: a path that is absolute, climbs out with '..', or is a symlink leading out is refused."""
    (tmp_path / "outside.onnx").write_bytes(b"not ours")
    out = _broken(export_dir, tmp_path, lambda d: d["artifacts"][0].update(path=where))
    (out / "link.onnx").symlink_to(tmp_path / "outside.onnx")
    with pytest.raises(ArtifactMismatch, match="which is not a file inside"):
        read_manifest(out)
    with pytest.raises(ArtifactMismatch, match="which is not a file inside"):
        read_manifest(out, verify=False)  # the names are checked even when the hashes are not


def test_a_sidecar_without_a_hash_is_refused_and_a_file_changed_after_reading_is_not_loaded(export_dir, tmp_path):
    def unhash(doc):
        row = next(a for a in doc["artifacts"] if a.get("sidecar"))
        row["sidecar_sha256"] = None

    with pytest.raises(ArtifactMismatch, match="without its sha256"):
        read_manifest(_broken(export_dir, tmp_path / "a", unhash))
    from runtime.spec import load_artifacts
    from runtime.variants import plan

    out = _broken(export_dir, tmp_path / "b", lambda d: None)
    arts = load_artifacts(out)  # every hash checked here
    variant = next(v for v in plan(arts, ["onnxruntime"])[0] if v.precision == "fp32" and not v.peer)
    variant.source.write_bytes(variant.source.read_bytes() + b"\0")  # swapped between the check and the load
    with pytest.raises(ArtifactMismatch, match="changed since its manifest was read"):
        variant.create(arts).load()
