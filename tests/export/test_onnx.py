import json

import numpy as np
import onnx
import pytest
import torch

from export.fold import fold_batchnorm
from export.onnx import export_onnx, op_counts, read_metadata
from export.parity import TOLERANCES, ort_logits
from resnet_edge.atomic import sha256_file
from resnet_edge.errors import InvalidInput
from train.checkpoint import load_model


@pytest.fixture(scope="module")
def fp32(trained_ckpt, tmp_path_factory):
    return export_onnx(trained_ckpt, tmp_path_factory.mktemp("onnx") / "m.onnx")


def test_graph_is_valid_self_contained_and_bn_free(fp32):
    proto = onnx.load(str(fp32))
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    ops = op_counts(proto)
    assert ops.get("BatchNormalization", 0) == 0
    assert ops["Conv"] == 20
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer)
    assert [p.name for p in fp32.parent.iterdir()] == ["m.onnx"]  # no side files, no temporaries


def test_io_names_and_dynamic_batch_dimension(fp32):
    proto = onnx.load(str(fp32))
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "images" and out.name == "logits"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]
    assert out.type.tensor_type.shape.dim[0].dim_param == dims[0].dim_param


def test_batch_sizes_1_3_64_give_the_same_per_sample_logits(fp32, trained_ckpt):
    x = np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)
    full = ort_logits(fp32, x, batch_size=64)
    for b in (1, 3):
        assert np.allclose(ort_logits(fp32, x, batch_size=b), full, atol=1e-5)
    ref = fold_batchnorm(load_model(trained_ckpt))(torch.from_numpy(x)).detach().numpy()
    assert np.abs(full - ref).max() <= TOLERANCES["fp32"].max_rel * np.abs(ref).max()


def test_same_checkpoint_gives_a_byte_identical_file(fp32, trained_ckpt, tmp_path):
    again = export_onnx(trained_ckpt, tmp_path / "again.onnx")
    assert sha256_file(again) == sha256_file(fp32)


def test_metadata_carries_provenance(fp32, trained_ckpt):
    meta = read_metadata(fp32)
    cfg = load_model(trained_ckpt).config
    assert json.loads(meta["class_names"])[9] == "Ankle boot"
    assert json.loads(meta["mean"]) == [cfg.mean] and json.loads(meta["std"]) == [cfg.std]
    assert meta["image_size"] == "28" and meta["precision"] == "fp32"
    assert meta["source_checkpoint_sha256"] == sha256_file(trained_ckpt)
    assert 0.5 < float(meta["test_accuracy"]) <= 1.0
    assert meta["toolkit_version"]


@pytest.mark.parametrize("opset", [11, 99])
def test_unsupported_opset(trained_ckpt, tmp_path, opset):
    with pytest.raises(InvalidInput, match=f"opset {opset} is not supported"):
        export_onnx(trained_ckpt, tmp_path / "x.onnx", opset=opset)
    assert not list(tmp_path.iterdir())


def test_other_supported_opset(trained_ckpt, tmp_path):
    proto = onnx.load(str(export_onnx(trained_ckpt, tmp_path / "x.onnx", opset=21)))
    assert {o.domain: o.version for o in proto.opset_import}[""] == 21
