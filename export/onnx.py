"""Export the BN-folded model to one self-contained ONNX file with a dynamic batch.

Input ``images`` [N, C, H, W] float32, output ``logits`` [N, classes]. The file passes
``onnx.checker`` (full check) and shape inference, carries its provenance in
``metadata_props``, and is byte-identical for the same checkpoint.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from export import DEFAULT_OPSET
from export.fold import count_modules, fold_batchnorm
from resnet_edge import __version__
from resnet_edge.atomic import atomic_path, sha256_file
from resnet_edge.errors import ArtifactMismatch, InvalidInput
from train.checkpoint import Checkpoint

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
SUPPORTED_OPSETS = range(18, 22)
MAX_BATCH = 4096


def _check_opset(opset: int) -> None:
    if opset not in SUPPORTED_OPSETS:
        raise InvalidInput(f"ONNX opset {opset} is not supported; use {SUPPORTED_OPSETS.start}-"
                           f"{SUPPORTED_OPSETS.stop - 1} (default {DEFAULT_OPSET}).")


def model_metadata(ckpt: Checkpoint, ckpt_sha256: str, test_accuracy: float | None = None) -> dict[str, str]:
    """The provenance every artifact carries: what the runtime needs to feed the model."""
    m = ckpt.config
    acc = test_accuracy if test_accuracy is not None else ckpt.metrics.test_acc
    return {
        "model": f"resnet{m.depth}",
        "class_names": json.dumps(list(m.class_names)),
        "mean": json.dumps(list(m.mean_per_channel)),
        "std": json.dumps(list(m.std_per_channel)),
        "image_size": str(m.image_size),
        "resize": m.resize,
        "source_size": str(m.source_size),
        "source_resize": str(m.source_resize) if m.source_resize is not None else "none",
        "stem": m.stem,
        "toolkit_version": __version__,
        "source_checkpoint_sha256": ckpt_sha256,
        "test_accuracy": f"{acc if acc is not None else float('nan'):.6f}",
    }


def torch_to_onnx(model: nn.Module, in_channels: int, image_size: int, opset: int) -> onnx.ModelProto:
    """Trace ``model`` with the dynamo exporter; the batch dimension is dynamic."""
    _check_opset(opset)
    example = torch.zeros(2, in_channels, image_size, image_size)
    batch = torch.export.Dim("N", min=1, max=MAX_BATCH)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model.eval(), (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_shapes={"x": {0: batch}}, external_data=False, verbose=False,
        )
    return program.model_proto


def finalize(proto: onnx.ModelProto, metadata: dict[str, str], out: Path, precision: str) -> Path:
    """Stamp metadata, validate (full checker, shape inference) and write ``out`` atomically."""
    del proto.metadata_props[:]
    for key, value in sorted({**metadata, "precision": precision}.items()):
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name, proto.producer_version = "resnet-edge", __version__
    proto.doc_string = f"ResNet Fashion-MNIST classifier ({precision}), exported by resnet-edge"
    try:
        onnx.checker.check_model(proto, full_check=True)
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ArtifactMismatch(f"The exported {precision} ONNX graph failed validation: {str(exc).splitlines()[0]}") from None
    with atomic_path(Path(out)) as tmp:
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
    return Path(out)


def onnx_from_model(folded: nn.Module, out: Path, *, metadata: dict[str, str], opset: int = DEFAULT_OPSET) -> Path:
    """A BN-folded eval model in, its FP32 ONNX (with ``metadata`` stamped in) out."""
    _check_opset(opset)
    cfg = folded.config
    proto = torch_to_onnx(folded, cfg.in_channels, cfg.image_size, opset)
    ops = op_counts(proto)
    if ops.get("BatchNormalization", 0) or ops.get("Conv", 0) != count_modules(folded, nn.Conv2d):
        raise ArtifactMismatch(f"The ONNX graph has {ops.get('Conv', 0)} Conv and "
                               f"{ops.get('BatchNormalization', 0)} BatchNormalization nodes; expected "
                               f"{count_modules(folded, nn.Conv2d)} and 0.")
    return finalize(proto, metadata, out, "fp32")


def export_onnx(ckpt: Path, out: Path, *, opset: int = DEFAULT_OPSET, test_accuracy: float | None = None) -> Path:
    """Checkpoint in, FP32 ONNX of the BN-folded model out."""
    _check_opset(opset)
    state = Checkpoint.read(ckpt)
    folded = fold_batchnorm(state.model(ckpt))
    return onnx_from_model(folded, out, metadata=model_metadata(state, sha256_file(ckpt), test_accuracy), opset=opset)


def op_counts(proto: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def read_metadata(path: Path) -> dict[str, str]:
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}
