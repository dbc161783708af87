"""The formats table is the one place format knowledge lives: every row's modules exist, and the planners, the
Triton repository and the README all follow it."""

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from resnet_edge.errors import InvalidInput
from runtime.contract import Precision
from runtime.formats import BACKENDS, EXPORT_PRECISIONS, FORMATS, markdown_table, parse_precisions
from runtime.vulkan import DEVICES

ROOT = Path(__file__).resolve().parents[2]


def test_every_row_names_modules_that_exist():
    for fmt in FORMATS.values():
        assert fmt.suffix.startswith(".") and fmt.precisions and set(fmt.devices) <= set(DEVICES)
        assert importlib.util.find_spec(fmt.builder) is not None, fmt.builder
        for name in fmt.backends:
            assert name in BACKENDS, (fmt.name, name)
    for b in BACKENDS.values():
        path = ROOT / "runtime" / "backends" / f"{b.module}.py"
        assert re.search(rf"^class {b.cls}\((Backend|TorchBackend|TensorRTBackend)\):", path.read_text(), re.M), (b.name, path)
        assert b.name in {n for f in FORMATS.values() for n in f.backends}, f"{b.name} runs no format"


def test_the_backend_registry_and_the_variant_planner_follow_the_table():
    from runtime import backends
    from runtime.formats import backends_for

    assert tuple(BACKENDS) == backends.REGISTRY
    assert backends_for("onnx") == ("onnxruntime", "openvino") and backends_for("no-such-format") == ()
    with pytest.raises(InvalidInput, match="Unknown backend 'tflite'; choose from torch, onnxruntime"):
        backends.unavailable_reason("tflite")


def test_triton_platforms_come_from_the_table(arts):
    """The exported Triton repository: one model per row of a format Triton loads, named by the row and holding the
    table's platform and file name."""
    from export.triton import model_name

    assert {f.name for f in FORMATS.values() if f.triton} == {"onnx", "tensorrt"}
    repo = arts.root / "triton"
    served = [a for a in arts.manifest.artifacts if FORMATS[a.format].triton]
    assert served
    for row in served:
        t = FORMATS[row.format].triton
        name = model_name(row, arts.spec.name)
        assert name.startswith(f"{arts.spec.name}_{row.precision.value}") and name.endswith(f"_{t.tag}")
        assert f'platform: "{t.platform}"' in (repo / name / "config.pbtxt").read_text()
        assert (repo / name / "1" / t.filename).is_file()


def test_precision_vocabulary_and_parsing():
    assert EXPORT_PRECISIONS == ("fp32", "fp16", "int8")
    assert {p.value for p in Precision} == {"fp32", "fp16", "bf16", "int8"}
    assert f"{Precision.INT8}" == str(Precision.INT8) == "int8" and Precision.INT8 == "int8"
    assert parse_precisions("all") == () and parse_precisions("int8-cpu,fp32") == ("int8-cpu", "fp32")
    with pytest.raises(InvalidInput, match="Unknown precision 'fp8'"):
        parse_precisions("fp32,fp8")


def test_the_readme_formats_table_is_the_table():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- formats-table:[^>]*-->\n(.*?)\n<!-- end formats-table -->", readme, re.S)
    assert block, "README.md lost its generated formats table"
    assert block[1] == markdown_table(), "README's formats table is stale: paste runtime.formats.markdown_table()"


def test_where_a_format_runs_drives_what_a_device_plans(arts):
    """The table's ``devices`` decide what runs on Vulkan: ncnn's rows and nothing else."""
    from runtime.formats import formats_on, runs_on
    from runtime.variants import on_device

    assert formats_on("vulkan") == ("ncnn",) and runs_on("onnx", "cuda:1") and not runs_on("onnx", "vulkan")
    assert on_device(["onnxruntime", "ncnn"], "cpu") == (["onnxruntime", "ncnn"], [])
