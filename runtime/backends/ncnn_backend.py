"""ncnn through its Python package (the `ncnn` extra, torch-free): ``.ncnn.param`` with its ``.ncnn.bin`` beside it.

ncnn runs one image per extractor (its blobs have no batch dimension), so a batch is a loop over its images on
one ``Net``. Precision is the net's options: fp32 turns every reduced-precision path off (ncnn otherwise picks
fp16 or bf16 storage by itself where the CPU has it); fp16 is fp16 storage and packing, with fp32 arithmetic.

``device="vulkan"`` (with ``gpu_index``) runs the net's compute shaders on a Vulkan device (``runtime.vulkan``):
fp32 with every fp16 path off, fp16 with fp16 storage and packing and fp32 arithmetic. fp16 arithmetic too
(``fp16_arithmetic=True``, where the device has it) missed the fp16 row on 1,000 test images (0.2 pt of accuracy
against 0.1 on llvmpipe; storage alone: 0.1 pt, 99.9% top-1 agreement), so it is asked for, never chosen. ncnn
falls back to the CPU without a word where the device cannot be used; ``fell_back`` says so after loading.

ncnn's wheel carries its own OpenMP runtime (``ncnn.libs/libgomp-*.so``); a process that has imported PyTorch holds
PyTorch's libgomp as well. Measured here (docs/measurements.md), both loaded at once give the same logits as an
ncnn-only process, even with PyTorch computing in another thread; export still verifies ncnn files in a process
of their own (``runtime.isolated``), and a test holds the in-process path to the isolated one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from resnet_edge.errors import ArtifactMismatch, InvalidInput
from resnet_edge.quiet import captured_stderr
from runtime.backends.base import Backend, Offer


@dataclass(frozen=True)
class NcnnDetails:
    """What export records in an ncnn row's ``details`` that the runtime follows: whether winograd convolution is
    the faster here (export times both)."""

    winograd: bool = True

    @classmethod
    def of(cls, details: Mapping[str, Any]) -> NcnnDetails:
        winograd = details.get("winograd", True)
        if not isinstance(winograd, bool):
            raise ArtifactMismatch(f"An ncnn row's details.winograd must be true or false, not {winograd!r}.")
        return cls(winograd)


def weights_path(param: Path) -> Path:
    """model.ncnn.param -> model.ncnn.bin."""
    return Path(param).with_suffix(".bin")


def blob_names(param: Path) -> tuple[str, str]:
    """The input blob (the Input layer's) and the output blob (the top no layer reads) of an ncnn .param file."""
    lines = Path(param).read_text().split("\n")
    if not lines or lines[0].strip() != "7767517":
        raise ArtifactMismatch(f"{Path(param).name} is not an ncnn .param file (its magic number is missing).")
    inputs, bottoms, tops = [], set(), []
    for line in lines[2:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        kind, n_in, n_out = fields[0], int(fields[2]), int(fields[3])
        ins, outs = fields[4:4 + n_in], fields[4 + n_in:4 + n_in + n_out]
        bottoms.update(ins)
        tops += outs
        if kind == "Input":
            inputs += outs
    outputs = [t for t in tops if t not in bottoms]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ArtifactMismatch(f"{Path(param).name} has {len(inputs)} inputs and {len(outputs)} outputs; "
                               "resnet-edge runs one of each.")
    return inputs[0], outputs[0]


class NcnnBackend(Backend):
    """``source`` is the ``.ncnn.param`` file. Options: ``threads`` (0: every core), ``winograd`` (default on, as
    ncnn's; export records which is faster for the model in the row's ``details``), ``defaults`` (ncnn's own option
    defaults, which choose fp16 storage where the CPU has it: the peer baseline), ``device`` (``cpu`` or
    ``vulkan``) and ``gpu_index``."""

    name = "ncnn"
    vulkan = None  # the runtime.vulkan.VulkanDevice the net computes on, for device="vulkan"
    fell_back = False  # asked for Vulkan, computed on the CPU

    @classmethod
    def offers(cls, art, device, threads, gpu_index=0, skipped=None) -> list[Offer]:
        """On the CPU: the file with the winograd choice export recorded. On Vulkan device ``gpu_index``: the file
        on the device (an fp16 file only where the device has fp16 storage)."""
        if device == "vulkan":
            from runtime import vulkan

            dev = vulkan.device(gpu_index)
            if art.precision == "fp16" and not dev.fp16_storage:
                if skipped is not None:
                    skipped.append(f"{dev.describe()} has no fp16 storage: the fp16 ncnn file is not run on it.")
                return []
            return [Offer(art.precision, f"{cls.name} {art.tag} vulkan:{gpu_index}",
                          {"threads": threads, "device": "vulkan", "gpu_index": gpu_index})]
        winograd = NcnnDetails.of(art.row.details or {}).winograd
        return [Offer(art.precision, f"{cls.name} {art.tag}", {"threads": threads, "winograd": winograd})]

    def _load(self) -> None:
        import ncnn

        if self.precision not in ("fp32", "fp16"):
            raise InvalidInput(f"ncnn runs fp32 and fp16 files, not {self.precision}.")
        weights = weights_path(self.source)
        if not weights.is_file():
            raise InvalidInput(f"ncnn: {self.source.name} needs its weights {weights.name} beside it.")
        self.input_blob, self.output_blob = blob_names(self.source)
        net = ncnn.Net()
        threads = int(self.options.get("threads") or 0) or os.cpu_count() or 1
        net.opt.num_threads = threads
        device = self.options.get("device") or "cpu"
        if device == "vulkan":
            self._on_vulkan(net)
        elif device != "cpu":
            raise InvalidInput(f"ncnn runs on the CPU or on a Vulkan device, not on '{device}'.")
        elif not self.options.get("defaults"):
            fp16 = self.precision == "fp16"
            net.opt.use_fp16_storage = fp16
            net.opt.use_fp16_packed = fp16
            net.opt.use_fp16_arithmetic = False
            net.opt.use_bf16_storage = False
            # Winograd pays on large maps; at 28 px the deep stages run 3x3 convs on 1x1 and 2x2 maps, where its
            # tiles multiply the work (7.8 against 1.7 ms here). Export measures both and records the faster.
            net.opt.use_winograd_convolution = bool(self.options.get("winograd", True))
        with captured_stderr() as said:
            failed = net.load_param(str(self.source)) != 0 or net.load_model(str(weights)) != 0
        if failed:
            why = next((line.strip() for line in said[0].splitlines() if line.strip()), "no reason given")
            raise ArtifactMismatch(f"The ncnn backend could not load {self.source.name} with {weights.name}: {why}.")
        self.net, self.ncnn = net, ncnn
        self.fell_back = device == "vulkan" and (not net.opt.use_vulkan_compute or net.vulkan_device() is None)

    def _on_vulkan(self, net) -> None:
        """The net's options for a Vulkan device: one sentence where there is none, or no fp16 for an fp16 run."""
        from runtime import vulkan

        dev = vulkan.device(int(self.options.get("gpu_index") or 0))
        fp16 = self.precision == "fp16"
        if fp16 and not dev.fp16_storage:
            raise InvalidInput(f"{dev.describe()} has no fp16 storage; run the fp32 file on it.")
        net.opt.use_vulkan_compute = True
        net.set_vulkan_device(dev.index)
        net.opt.use_fp16_storage = net.opt.use_fp16_packed = fp16
        arithmetic = bool(self.options.get("fp16_arithmetic"))
        if arithmetic and not (fp16 and dev.fp16_arithmetic):
            raise InvalidInput(f"fp16 arithmetic needs the fp16 file and a device with it; {dev.describe()} "
                               f"{'has it' if dev.fp16_arithmetic else 'has none'}.")
        net.opt.use_fp16_arithmetic = arithmetic
        net.opt.use_bf16_storage = False
        net.opt.use_winograd_convolution = False  # fp32 exact; at 28 px its tiles only add work (see below)
        self.vulkan = dev

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        out = np.empty((batch.shape[0], self.spec.num_classes), np.float32)
        for i, image in enumerate(batch):
            with self.net.create_extractor() as ex:
                ex.input(self.input_blob, self.ncnn.Mat(np.ascontiguousarray(image)))
                ret, logits = ex.extract(self.output_blob)
                if ret != 0:
                    raise ArtifactMismatch(f"ncnn could not compute {self.output_blob} (error {ret}).")
                out[i] = np.array(logits).reshape(-1)
        return out

    def describe(self) -> str:
        if self.vulkan is not None:
            where = "the CPU, having fallen back from " if self.fell_back else ""
            return f"ncnn {self.precision} on {where}{self.vulkan.describe()}"
        return f"ncnn {self.precision} ({'defaults' if self.options.get('defaults') else 'explicit precision'})"

    @property
    def effective_precision(self) -> str:
        """ncnn's defaults store activations and weights in fp16 where the CPU converts them in hardware (x86
        with AVX, F16C beside it; ARM with fp16 arithmetic): measured here, 2.7e-5 relative error on FP32 weights."""
        if not self.options.get("defaults") or not getattr(self, "net", None) or not self.net.opt.use_fp16_storage:
            return self.precision
        return "fp16" if self.ncnn.cpu_support_x86_avx() or self.ncnn.cpu_support_arm_asimdhp() else self.precision

    def _close(self) -> None:
        self.net.clear()
