import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from export.onnx import op_counts
from export.quantize import to_int8
from resnet_edge.errors import InvalidInput
from runtime.contract import read_manifest


def _art(export_dir, precision, target="any"):
    manifest = read_manifest(export_dir)
    return next(a for a in manifest.artifacts if a.precision == precision and a.target == target)


def test_fp16_weights_with_fp32_io(export_dir):
    proto = onnx.load(str(export_dir / _art(export_dir, "fp16").path))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    conv_weights = {n.input[1] for n in proto.graph.node if n.op_type == "Conv"}
    inits = {i.name: i for i in proto.graph.initializer}
    assert conv_weights and all(inits[w].data_type == onnx.TensorProto.FLOAT16 for w in conv_weights)
    assert op_counts(proto)["Cast"] >= 2


def test_int8_is_qdq_per_channel_symmetric_with_the_stem_and_classifier_in_float(export_dir):
    row = _art(export_dir, "int8")
    proto = onnx.load(str(export_dir / row.path))
    ops = op_counts(proto)
    assert ops["QuantizeLinear"] >= 19 and ops["DequantizeLinear"] >= 38 and ops["Conv"] == 20
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    produced = {o: n for n in proto.graph.node for o in n.output}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    gemm = next(n for n in proto.graph.node if n.op_type == "Gemm")
    # both ends in float, with FP32 weights straight from the initializers, and the row names them
    assert row.details["float_nodes"] == [convs[0].name, gemm.name]
    assert all(inits[n.input[1]].dtype == np.float32 for n in (convs[0], gemm))
    assert convs[0].input[0] == proto.graph.input[0].name  # the image straight in, not through a QuantizeLinear
    for conv in convs[1:]:
        w_dq = produced[conv.input[1]]
        assert w_dq.op_type == "DequantizeLinear"
        scale, zp = inits[w_dq.input[1]], inits[w_dq.input[2]]
        assert scale.ndim == 1 and scale.shape[0] > 1  # per output channel
        assert zp.dtype == np.int8 and not zp.any()  # symmetric int8 weights
    for q in (n for n in proto.graph.node if n.op_type == "QuantizeLinear"):
        zp = inits[q.input[2]]
        assert zp.dtype == np.int8 and not zp.any()  # symmetric int8 activations: the form TensorRT consumes


def test_int8_metadata_names_calibration(export_dir):
    proto = onnx.load(str(export_dir / _art(export_dir, "int8").path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["precision"] == "int8" and meta["calibration"] == "percentile:256" and meta["activations"] == "s8"


def test_calibration_set_too_small(export_dir, tmp_path):
    src = export_dir / _art(export_dir, "fp32").path
    with pytest.raises(InvalidInput, match="calibration set of 10 images is too small"):
        to_int8(src, tmp_path / "q.onnx", np.zeros((10, 1, 28, 28), np.float32))
    assert not (tmp_path / "q.onnx").exists()


def test_calibration_runs_in_fixed_batches_with_a_short_last_one(export_dir, tmp_path, monkeypatch):
    import onnxruntime as ort

    from export.quantize import Int8Options, calibration_batches

    assert [b.stop - b.start for b in calibration_batches(131, 100)] == [100, 31]
    seen = []
    run = ort.InferenceSession.run

    def spy(self, output_names, feed, *args, **kwargs):
        seen.extend(len(v) for v in feed.values())
        return run(self, output_names, feed, *args, **kwargs)

    monkeypatch.setattr(ort.InferenceSession, "run", spy)
    x = np.random.default_rng(0).standard_normal((131, 1, 28, 28)).astype(np.float32)
    src = export_dir / _art(export_dir, "fp32").path
    for method in ("percentile", "minmax"):  # histogram and min-max calibrators alike
        seen.clear()
        to_int8(src, tmp_path / f"{method}.onnx", x, Int8Options(calibration=method))
        assert sorted(seen) == [31, 100]  # not 131 calls of batch 1 (131 is prime)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "minmax.onnx")).metadata_props}
    assert meta["calibration"] == "minmax:131" and meta["quant_pre_process"] == "true" and meta["weight_bits"] == "7"


def test_int8_weights_fit_in_7_bits_so_cpus_without_vnni_do_not_saturate(export_dir):
    """x86 CPUs without VNNI sum pairs of uint8 x int8 products in 16 bits (VPMADDUBSW): 255 x 127 x 2 overflows,
    255 x 64 x 2 does not. Every INT8 file of the export (the s8 one and the CPU variant) keeps its weights in
    [-64, 64], and its row says so."""
    rows = [a for a in read_manifest(export_dir).artifacts if a.format == "onnx" and a.precision == "int8"]
    assert rows
    for row in rows:
        assert row.weight_bits == 7
        graph = onnx.load(str(export_dir / row.path)).graph
        consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        weights = [consts[n.input[0]] for n in graph.node
                   if n.op_type == "DequantizeLinear" and consts.get(n.input[0]) is not None
                   and consts[n.input[0]].dtype == np.int8 and consts[n.input[0]].ndim == 4]
        assert len(weights) == 19  # every conv of ResNet-18 but the stem
        assert max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64
