"""Native TensorRT engines through the TensorRT 10/11 named-tensor API.

The engine runs through the one ``EngineRunner`` (``runtime.backends.trt_engine``, which export verifies with
too): torch CUDA tensors as buffers, no pycuda, ``execute_async_v3`` on one stream. Its sidecar is checked
against the running TensorRT and GPU, and the batch limit against the engine's optimization profile.
"""

from __future__ import annotations

import numpy as np

from resnet_edge.errors import InvalidInput
from runtime.backends.base import Backend


class TensorRTBackend(Backend):
    name = "tensorrt"

    def _load(self) -> None:
        from runtime.backends.trt_engine import EngineRunner, engine_max_batch

        profile_max = engine_max_batch(self.source)
        if self.max_batch > profile_max:
            raise InvalidInput(f"A batch limit of {self.max_batch} exceeds the largest batch {profile_max} of "
                               f"{self.source.name}'s optimization profile; lower --max-batch-size or rebuild "
                               "with a larger --trt-batch.")
        self.runner = EngineRunner(self.source)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self.runner(batch)

    @property
    def device(self) -> str:
        return "cuda"

    def _close(self) -> None:
        self.runner.close()
