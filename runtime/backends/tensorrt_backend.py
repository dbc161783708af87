"""Native TensorRT engines through the TensorRT 10/11 named-tensor API.

Device buffers are torch CUDA tensors (no pycuda); execution is stream-ordered with
``execute_async_v3``; the engine's sidecar is checked against the running TensorRT and GPU.
"""

from __future__ import annotations

import numpy as np

from runtime.backends.base import Backend
from train.errors import ArtifactMismatch


class TensorRTBackend(Backend):
    name = "tensorrt"

    def _load(self) -> None:
        import tensorrt as trt
        import torch

        from export.tensorrt import load_engine

        self.engine = load_engine(self.source)  # checks the sidecar first
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.stream = torch.cuda.Stream()

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.cuda.stream(self.stream):
            x = torch.from_numpy(batch).pin_memory().to("cuda", non_blocking=True)
            self.context.set_input_shape(self.input_name, tuple(x.shape))
            y = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(self.input_name, x.data_ptr())
            self.context.set_tensor_address(self.output_name, y.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise ArtifactMismatch(f"TensorRT failed to execute {self.source}.")
            out = y.to("cpu", non_blocking=True)
        self.stream.synchronize()
        return out.numpy()

    @property
    def device(self) -> str:
        return "cuda"

    def _close(self) -> None:
        del self.context, self.engine
