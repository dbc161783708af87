"""Native TensorRT and TensorRT-RTX engines through the named-tensor API they share.

The engine runs through the one ``EngineRunner`` (``runtime.backends.trt_engine``, which export verifies with
too): torch CUDA tensors as buffers, no pycuda, ``execute_async_v3`` on one stream. Its sidecar is checked
against the running TensorRT and GPU, and the batch limit against the engine's optimization profile.
"""

from __future__ import annotations

import numpy as np

from resnet_edge.errors import InvalidInput
from runtime.backends.base import Backend, Offer


class TensorRTBackend(Backend):
    name = "tensorrt"

    @classmethod
    def offers(cls, art, device, threads, gpu_index=0, skipped=None) -> list[Offer]:
        return [Offer(art.precision, f"{cls.name} {art.tag}", {})]  # an engine has no CPU threads to set

    def _load(self) -> None:
        from runtime.backends.trt_engine import LIBRARIES, EngineRunner, EngineSidecar

        lib = LIBRARIES[self.name]
        side = EngineSidecar.read(self.source)  # once: the runner checks and uses the same reading
        if side.lib is not lib:
            raise InvalidInput(f"{self.source.name} is not a {lib.title} engine; run it with the "
                               f"{side.lib.fmt} backend.")
        profile_max = side.max_batch
        if self.max_batch > profile_max:
            raise InvalidInput(f"A batch limit of {self.max_batch} exceeds the largest batch {profile_max} of "
                               f"{self.source.name}'s optimization profile; lower --max-batch-size or rebuild "
                               "with a larger --trt-batch.")
        self.runner = EngineRunner(self.source, lib, side)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self.runner(batch)

    @property
    def device(self) -> str:
        return "cuda"

    def _close(self) -> None:
        self.runner.close()


class TensorRTRtxBackend(TensorRTBackend):
    """TensorRT-RTX engines: built ahead of time for a set of compute capabilities; its JIT's runtime cache is kept
    beside the engine."""

    name = "tensorrt_rtx"
