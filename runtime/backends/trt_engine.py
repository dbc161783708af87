"""Running serialized TensorRT engines (TensorRT 10 and 11 named-tensor API): the runtime's half of TensorRT.

Export builds engines (``export.tensorrt``) and verifies them with the same :class:`EngineRunner` the runtime
backend serves with. Everything known about an engine lives in its JSON sidecar, which is checked against the
running TensorRT and GPU before the plan is deserialized. ``tensorrt`` (and torch, whose CUDA tensors are the
buffers) are imported lazily: without them the caller gets one sentence naming what to install.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from resnet_edge.errors import ArtifactMismatch, InvalidInput, MissingDependency

INSTALL_HINT = "pip install 'resnet-edge[gpu]' on a machine with an NVIDIA GPU"


def unavailable_reason() -> str | None:
    """None when engines can be built here; otherwise why not, as one sentence."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return f"TensorRT is not installed ({INSTALL_HINT})."
    import torch

    if not torch.cuda.is_available():
        return "TensorRT is installed but PyTorch sees no CUDA GPU."
    return None


def _trt():
    reason = unavailable_reason()
    if reason:
        raise MissingDependency(reason)
    import tensorrt as trt

    return trt


def trt_major(trt_module: Any) -> int:
    return int(str(trt_module.__version__).split(".")[0])


def device_identity() -> dict[str, str]:
    import torch

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}"}


def sidecar_path(engine: Path) -> Path:
    return engine.with_suffix(engine.suffix + ".json")


def check_compatible(engine: Path) -> dict[str, Any]:
    """Refuse an engine built by another TensorRT version or for another GPU, with one sentence."""
    trt = _trt()
    side = sidecar_path(engine)
    if not side.is_file():
        raise ArtifactMismatch(f"{engine} has no sidecar {side.name}; rebuild it with 'resnet-edge export --trt'.")
    meta = json.loads(side.read_text())
    here = {"tensorrt_version": str(trt.__version__), **device_identity()}
    for key, label in (("tensorrt_version", "TensorRT"), ("gpu", "GPU"), ("compute_capability", "compute capability")):
        if meta.get(key) != here[key]:
            raise ArtifactMismatch(f"{engine} was built for {label} {meta.get(key)} but this machine has "
                                   f"{here[key]}; rebuild it here with 'resnet-edge export --trt'.")
    return meta


def load_engine(engine: Path):
    """Deserialize a compatible engine (checked against its sidecar first)."""
    trt = _trt()
    check_compatible(engine)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    cuda_engine = runtime.deserialize_cuda_engine(engine.read_bytes())
    if cuda_engine is None:
        raise ArtifactMismatch(f"TensorRT could not deserialize {engine}.")
    return cuda_engine


class EngineRunner:
    """The one way an engine runs here (export verifies with it, the runtime backend serves with it):
    named tensors, torch CUDA tensors as buffers, copy-in, execute and copy-out on one stream."""

    def __init__(self, engine: Path) -> None:
        import tensorrt as trt
        import torch

        self.path = Path(engine)
        self.engine = load_engine(self.path)  # checks the sidecar against this TensorRT and GPU first
        self.meta = json.loads(sidecar_path(self.path).read_text())
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.max_batch = int(self.meta["profile"]["max_batch"])
        self.stream = torch.cuda.Stream()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.cuda.stream(self.stream):
            xb = torch.from_numpy(np.ascontiguousarray(x)).pin_memory().to("cuda", non_blocking=True)
            if not self.context.set_input_shape(self.input_name, tuple(xb.shape)):
                p = self.meta["profile"]
                raise InvalidInput(f"Batch {xb.shape[0]} is outside the optimization profile of {self.path.name} "
                                   f"({p['min_batch']}..{p['max_batch']}); rebuild it with a wider --trt-batch.")
            yb = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(self.input_name, xb.data_ptr())
            self.context.set_tensor_address(self.output_name, yb.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise ArtifactMismatch(f"TensorRT failed to run {self.path}.")
            out = yb.to("cpu", non_blocking=True)
        self.stream.synchronize()
        return out.numpy()

    def close(self) -> None:
        del self.context, self.engine


def engine_max_batch(engine: Path) -> int:
    """The largest batch the engine's optimization profile accepts, from its sidecar (no GPU needed)."""
    side = sidecar_path(Path(engine))
    try:
        return int(json.loads(side.read_text())["profile"]["max_batch"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ArtifactMismatch(f"{engine} has no readable sidecar {side.name}; rebuild it with 'resnet-edge export "
                               "--trt'.") from None
