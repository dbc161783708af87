"""Precision variants of the FP32 ONNX: FP16 and INT8 QDQ (ONNX Runtime static quantization)."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from resnet_edge.errors import InvalidInput

if TYPE_CHECKING:
    import onnx

MIN_CALIBRATION = 64


class CalibMethod(str, Enum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class Activations(str, Enum):
    S8 = "s8"  # symmetric int8: the QDQ form TensorRT consumes
    U8 = "u8"  # asymmetric uint8: often the faster form on ONNX Runtime's CPU kernels


@dataclass(frozen=True)
class Int8Options:
    calibration: CalibMethod = CalibMethod.PERCENTILE
    activations: Activations = Activations.S8
    percentile: float = 99.99  # chosen on held-out training images: see README, "INT8 calibration"
    batch_size: int = 100
    preprocess: bool = True  # ORT's quant_pre_process (shape inference, graph optimisation) first, as documented
    # 7-bit weights (ONNX Runtime's reduce_range): x86 CPUs without VNNI (AVX2, AVX-512F) multiply uint8 by int8
    # in pairs summed into 16 bits (VPMADDUBSW), which saturates with full 8-bit weights: on an emulated Haswell
    # the s8 file agreed with FP32 on 97.8% of the golden images against 99.5% on a VNNI CPU. With 7 bits no
    # product pair overflows, so the file gives the same answers on every x86 CPU (99.6% on both); on a VNNI CPU
    # it costs 0.04 pt (s8) and 0.18 pt (u8) of agreement on the 10k test images (README, "INT8 on CPUs
    # without VNNI"; scripts/int8_no_vnni.py).
    reduce_range: bool = True
    # The stem conv and the classifier left in float (FP32 weights, no QDQ around them). On the seed checkpoint's
    # golden images the s8 file agreed with FP32 on 98.8% with every layer in int8 and on 99.6% with both ends in
    # float (held-out 99.2 -> 99.8%, 10k test images 99.10 -> 99.58%); no calibration method closed that gap
    # (percentile 99.99/99.999, entropy, min-max: 98.7-98.8%). The stem sees the normalised image (one channel,
    # a wide range), the classifier's logits decide top-1; together they are ~2% of ResNet-18's MACs at 28 px
    # (README, "INT8 calibration"; scripts/int8_calibration.py).
    float_ends: bool = True
    # Biases stay in float, by TensorRT's quantization conventions: NVIDIA's ONNX parser refuses ONNX Runtime's
    # default, an int32 bias behind a DequantizeLinear ("input has type Int32 but must have type FP8, FP4, Int4,
    # Int8, or UInt8"). ONNX Runtime fuses the same QLinearConvs either way: on the 2-epoch suite model the s8 file
    # gave bit-identical logits on the 10k test images with float and int32 biases, at the same speed (issue 39).
    # So one s8 graph serves ONNX Runtime, OpenVINO and TensorRT alike.
    quantize_bias: bool = False


def float_end_nodes(graph: onnx.GraphProto) -> tuple[str, ...]:
    """The first Conv (the stem) and the last Gemm or MatMul (the classifier) of a graph in topological order."""
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    heads = [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul")]
    return tuple(convs[:1] + heads[-1:])


def _metadata(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props if p.key != "precision"}


def to_fp16(src: Path, out: Path) -> Path:
    """FP16 weights and compute; inputs and outputs stay FP32 (Cast nodes at the edges)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from export.onnx import finalize

    proto = onnx.load(str(src))
    meta = _metadata(proto)
    with contextlib.redirect_stdout(io.StringIO()):
        half = convert_float_to_float16(proto, keep_io_types=True)
    toposort(half.graph)  # the converter appends its input Casts after the nodes that consume them
    return finalize(half, meta, out, "fp16")


def toposort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` in place so that every node comes after the producers of its inputs."""
    import onnx

    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise InvalidInput(f"The ONNX graph has a cycle or a dangling input at node '{pending[0].name}'.")
        for n in ready:
            ordered.append(n)
            available.update(n.output)
        pending = [n for n in pending if all(n is not r for r in ready)]
    copies = [onnx.NodeProto.FromString(n.SerializeToString()) for n in ordered]
    del graph.node[:]
    graph.node.extend(copies)


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization advises on the root logger; our table says what matters."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def calibration_batches(n: int, batch_size: int) -> list[slice]:
    """Row slices of ``batch_size`` and a short last one (never batches of 1 for an awkward ``n``)."""
    if n < 1 or batch_size < 1:
        raise InvalidInput("A calibration set and its batch size must both be at least 1.")
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def float_nodes(path: Path) -> list[str]:
    """The nodes an INT8 file of ours left in float, as its metadata records them."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return [n for n in meta.get("float_nodes", "").split(",") if n]


def to_int8(src: Path, out: Path, calibration: np.ndarray, options: Int8Options = Int8Options()) -> Path:
    """Static QDQ quantization: per-channel symmetric int8 weights; int8 (symmetric) or uint8 activations."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationDataReader

    from export.onnx import finalize

    if calibration.ndim != 4 or calibration.dtype != np.float32:
        raise InvalidInput("The calibration set must be float32 images [N, C, H, W].")
    if len(calibration) < MIN_CALIBRATION:
        raise InvalidInput(f"A calibration set of {len(calibration)} images is too small; "
                           f"use at least {MIN_CALIBRATION} (default 1000).")
    proto = onnx.load(str(src))
    meta = _metadata(proto)
    name = proto.graph.input[0].name
    from resnet_edge.images import eval_batch

    # ORT's calibrator keeps every intermediate tensor of a batch: fewer images a batch as the input grows
    batches = calibration_batches(len(calibration), min(options.batch_size, max(1, eval_batch(calibration.shape[-1]) // 4)))

    class Reader(CalibrationDataReader):  # onnxruntime is imported lazily, so the class is made here
        """Fixed-size batches and a short last one. ORT's histogram calibrators stack what one
        collect_data call sees, so quantize_static is told (CalibStridedMinMax=1) to collect batch by
        batch and merge the histograms, which lets the last batch be short."""

        def __init__(self) -> None:
            self.set_range(0, len(batches))

        def __len__(self) -> int:
            return len(batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._batches = iter(batches[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            rows = next(self._batches, None)
            return None if rows is None else {name: calibration[rows]}

    reader = Reader()
    method = {CalibMethod.MINMAX: CalibrationMethod.MinMax, CalibMethod.ENTROPY: CalibrationMethod.Entropy,
              CalibMethod.PERCENTILE: CalibrationMethod.Percentile}[CalibMethod(options.calibration)]
    symmetric = Activations(options.activations) is Activations.S8
    extra = {"ActivationSymmetric": symmetric, "WeightSymmetric": True, "CalibStridedMinMax": 1,
             "QuantizeBias": options.quantize_bias}
    if method is CalibrationMethod.Percentile:
        extra["CalibPercentile"] = options.percentile
    with tempfile.TemporaryDirectory(prefix="resnet-edge-q-") as tmp, _quiet_root_logger():
        tmp_out, model_in = Path(tmp) / "q.onnx", str(src)
        with contextlib.redirect_stdout(io.StringIO()):
            if options.preprocess:
                from onnxruntime.quantization.shape_inference import quant_pre_process

                model_in = str(Path(tmp) / "pre.onnx")
                quant_pre_process(str(src), model_in)
            keep = float_end_nodes(onnx.load(model_in).graph) if options.float_ends else ()
            quantize_static(
                model_in, str(tmp_out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=method, extra_options=extra,
                reduce_range=options.reduce_range, nodes_to_exclude=list(keep),
                calibration_cache_path=None,
            )
        quantized = onnx.load(str(tmp_out))
    meta.update(calibration=f"{CalibMethod(options.calibration).value}:{len(calibration)}",
                activations=Activations(options.activations).value,
                weight_bits="7" if options.reduce_range else "8",
                quant_pre_process=str(options.preprocess).lower(), float_nodes=",".join(keep),
                bias="int32" if options.quantize_bias else "float")
    return finalize(quantized, meta, out, "int8")
