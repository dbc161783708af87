"""ExecuTorch (``.pte``) from the BN-folded model, lowered to the XNNPACK delegate: FP32, and INT8 by PT2E with
ExecuTorch's XNNPACK quantizer (symmetric, per-channel weights, static int8 activations), calibrated on the same
training images as the ONNX INT8. The batch dimension is dynamic up to the export's largest batch.

What XNNPACK took and what fell back to ExecuTorch's portable kernels is recorded per operator in the manifest
(``delegation``), from ExecuTorch's own ``get_delegation_info``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from resnet_edge.atomic import atomic_open
from resnet_edge.errors import ArtifactMismatch
from resnet_edge.quiet import quiet

CALIBRATION_BATCH = 32


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("executorch") is None:
        return "the ExecuTorch exporter needs 'executorch' (pip install 'resnet-edge[edge]')."
    return None


def build(folded, out: Path, *, chw: tuple[int, int, int], precision: str, calibration: np.ndarray | None = None,
          max_batch: int = 64) -> dict[str, Any]:
    """Lower ``folded`` into ``out``; returns the delegation summary and how it was made."""
    import importlib.metadata

    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    sample = (torch.zeros(max_batch, *chw),)  # ExecuTorch plans memory for the example's batch as the bound
    dynamic = ({0: torch.export.Dim("batch", min=1, max=max_batch)},)
    model = folded.eval()
    details: dict[str, Any] = {"exporter": f"executorch {importlib.metadata.version('executorch')}"}
    with quiet(), torch.no_grad():
        if precision == "int8":
            if calibration is None or not len(calibration):
                raise ArtifactMismatch("ExecuTorch INT8 needs calibration images.")
            model = _quantized(model, sample, dynamic, calibration)
            details.update(quantizer="XNNPACKQuantizer, symmetric, per-channel weights, static int8 activations",
                           calibration_images=len(calibration))
        elif precision != "fp32":
            raise ArtifactMismatch(f"ExecuTorch is exported in fp32 and int8, not {precision}.")
        program = torch.export.export(model, sample, dynamic_shapes=dynamic)
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        info = get_delegation_info(edge.exported_program().graph_module)
        et = edge.to_executorch()
    with atomic_open(out) as fh:
        fh.write(et.buffer)
    by_op = {op: {"delegated": b.delegated, "not_delegated": b.non_delegated}
             for op, b in sorted(info.delegation_by_operator.items())}
    details["delegation"] = {"subgraphs": info.num_delegated_subgraphs, "delegated_nodes": info.num_delegated_nodes,
                             "not_delegated_nodes": info.num_non_delegated_nodes, "by_operator": by_op}
    return details


def _quantized(model, sample, dynamic, calibration: np.ndarray):
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph = prepare_pt2e(torch.export.export(model, sample, dynamic_shapes=dynamic).module(), quantizer)
    for i in range(0, len(calibration), CALIBRATION_BATCH):
        graph(torch.from_numpy(calibration[i:i + CALIBRATION_BATCH]))
    return convert_pt2e(graph)
