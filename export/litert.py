"""LiteRT (``.tflite``) from the BN-folded model with ``litert-torch``: FP32 as converted, and full-integer INT8.

INT8 is PT2E static quantization with litert-torch's own quantizer (symmetric int8 weights per output channel,
int8 activations), calibrated on the same training images as the ONNX INT8, then converted: the file computes its
convolutions and residual adds in int8, no op in float (``runtime.backends.litert_backend.tensor_types`` checks, and
the manifest says what it found).
The file takes one image, as edge deployments run it: litert-torch keeps a dynamic batch only at the input (the
graph inside is specialised to the example's batch, so a resized interpreter fails), and the runtime runs a batch as
one invoke per image on one interpreter.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from resnet_edge.errors import ArtifactMismatch
from resnet_edge.quiet import quiet


def unavailable_reason() -> str | None:
    for package in ("litert_torch", "ai_edge_litert"):
        if importlib.util.find_spec(package) is None:
            return f"the LiteRT converter needs '{package}' (pip install 'resnet-edge[edge]')."
    return None


def build(folded, out: Path, *, chw: tuple[int, int, int], precision: str, calibration: np.ndarray | None = None,
          ) -> dict[str, Any]:
    """Convert ``folded`` into ``out``; returns what the file computes in (``tensor_types``) and how it was made."""
    import torch

    from runtime.backends.litert_backend import tensor_types

    with quiet():
        import litert_torch

    model = folded.eval()
    sample = (torch.zeros(1, *chw),)
    details: dict[str, Any] = {"converter": f"litert-torch {litert_torch.__version__}", "batch": 1}
    with quiet(), torch.no_grad():
        if precision == "fp32":
            edge = litert_torch.convert(model, sample)
        elif precision == "int8":
            if calibration is None or not len(calibration):
                raise ArtifactMismatch("LiteRT INT8 needs calibration images.")
            graph, config = _quantized(model, sample, calibration)
            edge = litert_torch.convert(graph, sample, quant_config=config)
            details.update(quantizer="litert-torch PT2EQuantizer, symmetric, per-channel weights, static int8 "
                                     "activations", calibration_images=len(calibration))
        else:
            raise ArtifactMismatch(f"LiteRT is exported in fp32 and int8, not {precision}.")
        edge.export(str(out))
    details.update(tensor_types(str(out)))
    if precision == "int8" and (any(not t.startswith("int8xint8") for t in details["conv_types"])
                                or details["float_ops"]):
        raise ArtifactMismatch(f"The LiteRT INT8 file is not full-integer: convolutions {details['conv_types']}, "
                               f"float ops {details['float_ops'] or 'none'}.")
    return details


def _quantized(model, sample, calibration: np.ndarray):
    """PT2E: export, annotate with litert-torch's quantizer, observe the calibration images, convert."""
    import torch
    from litert_torch.quantize import pt2e_quantizer as pq
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = pq.PT2EQuantizer().set_global(pq.get_symmetric_quantization_config(is_per_channel=True,
                                                                                   is_dynamic=False))
    # strict: only a strict export records the source functions (operator.add) the quantizer's add annotator
    # matches; a non-strict one leaves the residual adds unannotated, and the file computes them in float between
    # a DEQUANTIZE and a QUANTIZE
    graph = prepare_pt2e(torch.export.export(model, sample, strict=True).module(), quantizer)
    for image in calibration:  # the graph has the file's batch of one
        graph(torch.from_numpy(image[None]))
    graph = convert_pt2e(graph, fold_quantize=False)
    return graph, QuantConfig(pt2e_quantizer=quantizer)
