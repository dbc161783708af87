import pytest

from export.triton import model_name
from runtime.contract import read_manifest

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="tritonclient[grpc] (dev extra) carries Triton's model-config schema")
from google.protobuf import text_format  # noqa: E402


def test_every_artifact_has_a_parseable_triton_config(export_dir):
    manifest = read_manifest(export_dir)
    repo = export_dir / "triton"
    from runtime.formats import FORMATS

    served = [a for a in manifest.artifacts if FORMATS[a.format].triton]  # the formats table says which Triton loads
    assert len(list(repo.iterdir())) == len(served) and len(served) < len(manifest.artifacts)
    for art in served:
        name = model_name(art, "resnet18")
        cfg = text_format.Parse((repo / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert cfg.name == name
        assert cfg.platform == ("onnxruntime_onnx" if art.format == "onnx" else "tensorrt_plan")
        assert cfg.max_batch_size == 64
        assert cfg.dynamic_batching.max_queue_delay_microseconds == 100
        (inp,), (out,) = cfg.input, cfg.output
        assert inp.name == "images" and list(inp.dims) == [1, 28, 28]
        assert inp.data_type == model_config_pb2.TYPE_FP32
        assert out.name == "logits" and list(out.dims) == [10] and out.label_filename == "labels.txt"
        labels = (repo / name / "labels.txt").read_text().splitlines()
        assert tuple(labels) == manifest.model.class_names
        model_file = repo / name / "1" / cfg.default_model_filename
        assert model_file.read_bytes() == (export_dir / art.path).read_bytes()
