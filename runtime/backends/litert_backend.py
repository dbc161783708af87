"""LiteRT (formerly TensorFlow Lite) through ``ai-edge-litert``'s interpreter (the `litert` extra, torch-free).

The interpreter runs on XNNPACK, LiteRT's default CPU delegate. Where
the converter made the input or output integer, it is quantized and dequantized here with the model's own scale and
zero point, so callers always pass float32 images and get float32 logits.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from resnet_edge.errors import ArtifactMismatch
from resnet_edge.quiet import quiet
from runtime.backends.base import Backend


def interpreter(path: str, threads: int | None = None):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=path, num_threads=threads or None)


def tensor_types(path: str) -> dict[str, Any]:
    """What the file computes in: the types of every convolution's input, weights and output, and the model's
    input and output types (a full-integer INT8 model has int8 throughout its convolutions)."""
    it = interpreter(path)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    convs = [op for op in it._get_ops_details() if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]

    def dtype(i: int) -> str:
        return np.dtype(tensors[i]["dtype"]).name

    conv_types = sorted({f"{dtype(op['inputs'][0])}x{dtype(op['inputs'][1])}->{dtype(op['outputs'][0])}"
                         for op in convs})
    ops = sorted({op["op_name"] for op in it._get_ops_details()})
    # Ops that compute in float: none in a full-integer file (a DEQUANTIZE -> ADD -> QUANTIZE island is not one)
    float_ops = sorted({op["op_name"] for op in it._get_ops_details() if op["op_name"] != "DELEGATE"
                        and any(dtype(o) == "float32" for o in op["outputs"])})
    return {"conv_ops": len(convs), "conv_types": conv_types, "ops": ops, "float_ops": float_ops,
            "input_type": np.dtype(it.get_input_details()[0]["dtype"]).name,
            "output_type": np.dtype(it.get_output_details()[0]["dtype"]).name}


class _Quantized:
    """Float <-> the integer type of one input or output, by its (scale, zero point)."""

    def __init__(self, detail: dict[str, Any]) -> None:
        self.dtype = np.dtype(detail["dtype"])
        self.scale, self.zero = detail["quantization"]
        self.integer = self.dtype.kind in "iu" and self.scale != 0

    def quantize(self, x: np.ndarray) -> np.ndarray:
        if not self.integer:
            return x
        info = np.iinfo(self.dtype)
        return np.clip(np.round(x / self.scale) + self.zero, info.min, info.max).astype(self.dtype)

    def dequantize(self, y: np.ndarray) -> np.ndarray:
        if not self.integer:
            return np.asarray(y, np.float32)
        return ((y.astype(np.float32) - self.zero) * self.scale).astype(np.float32)


class LiteRtBackend(Backend):
    """``source`` is a ``.tflite`` file. Options: ``threads`` (0: every core), ``defaults`` (the interpreter as
    LiteRT's documentation shows it, threads left to it, which is one: the peer baseline).

    A file with a dynamic batch (``shape_signature`` -1) gets one interpreter per batch bucket, resized at load
    (``static_shapes``); a file made for one image (export's) runs a batch as one invoke per image."""

    name = "litert"

    def _load(self) -> None:
        # The Python interpreter's own default is one thread; ours uses every core unless told otherwise.
        threads = None if self.options.get("defaults") else int(self.options.get("threads") or 0) or os.cpu_count()
        first = interpreter(str(self.source), threads)
        detail = first.get_input_details()[0]
        if tuple(detail["shape"][1:]) != self.spec.chw:
            raise ArtifactMismatch(f"{self.source.name} takes {list(detail['shape'])}, not [N, "
                                   f"{', '.join(map(str, self.spec.chw))}].")
        self.per_image = int(detail["shape_signature"][0]) != -1
        self.static_shapes = not self.per_image
        sizes = self.buckets if self.static_shapes else (int(detail["shape"][0]),)
        self.interpreters = {b: self._prepare(first if i == 0 else interpreter(str(self.source), threads), b)
                             for i, b in enumerate(sizes)}
        self._in = _Quantized(first.get_input_details()[0])
        self._out = _Quantized(first.get_output_details()[0])
        # get_*_details() builds its dicts on every call: the indices once (every interpreter of a file shares them)
        self._in_index = int(first.get_input_details()[0]["index"])
        self._out_index = int(first.get_output_details()[0]["index"])

    def _prepare(self, it, batch: int):
        detail = it.get_input_details()[0]
        if int(detail["shape"][0]) != batch:
            it.resize_tensor_input(detail["index"], [batch, *self.spec.chw], strict=True)
        with quiet():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.", from C++, as the delegate applies
            it.allocate_tensors()
        return it

    def _run(self, it, x: np.ndarray) -> np.ndarray:
        it.set_tensor(self._in_index, self._in.quantize(x))
        it.invoke()
        return self._out.dequantize(it.get_tensor(self._out_index))

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if not self.per_image:
            return self._run(self.interpreters[batch.shape[0]], batch)
        (it,) = self.interpreters.values()
        return np.concatenate([self._run(it, batch[i:i + 1]) for i in range(batch.shape[0])])

    def describe(self) -> str:
        mode = "defaults" if self.options.get("defaults") else "XNNPACK"
        return f"litert {self.precision} ({mode}{', one image per invoke' if self.per_image else ''})"

    def _close(self) -> None:
        self.interpreters.clear()
