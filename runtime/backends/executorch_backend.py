"""ExecuTorch through ``executorch.runtime`` (the `executorch` extra): a ``.pte`` program, its XNNPACK-delegated
parts run by XNNPACK, the rest by ExecuTorch's portable kernels. Its Python runtime takes and returns torch
tensors, so this backend needs torch (the formats table says so); the C++ runtime on a device does not.

The program is exported with a dynamic batch dimension up to the export's largest batch, so one method serves every
batch size.
"""

from __future__ import annotations

import numpy as np

from resnet_edge.errors import ArtifactMismatch
from resnet_edge.quiet import quiet
from runtime.backends.base import Backend


class ExecuTorchBackend(Backend):
    """``source`` is a ``.pte`` file. Options: ``threads`` (0: ExecuTorch's own choice)."""

    name = "executorch"

    def _load(self) -> None:
        import torch

        with quiet():  # torchao, which it imports, reports its missing CUDA kernels on stderr
            from executorch.runtime import Runtime
        if self.options.get("threads"):
            torch.set_num_threads(int(self.options["threads"]))
        with quiet():  # ExecuTorch's C++ logs its CPU probing to stderr
            runtime = Runtime.get()
            if not runtime.backend_registry.is_available("XnnpackBackend"):
                raise ArtifactMismatch("This ExecuTorch build has no XNNPACK backend, which the program is lowered to.")
            self.program = runtime.load_program(self.source)
            self.method = self.program.load_method("forward")
        if self.method is None:
            raise ArtifactMismatch(f"{self.source.name} has no forward method.")
        self.torch = torch

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self.method.execute((self.torch.from_numpy(batch),))
        return out.numpy().copy()

    def describe(self) -> str:
        return f"executorch {self.precision} (XNNPACK)"

    def _close(self) -> None:
        self.method = self.program = None
