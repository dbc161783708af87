"""Export as a list of steps: each builds artifacts into the staging directory and verifies them into manifest rows.

``plan_steps`` decides, before anything runs, which steps this export takes (the progress bar's total is their
count); each step takes the ``Build`` (the loaded source, the staging directory, the rows so far) and adds rows,
skipped formats or decisions to it. Builders take the folded model or a file and return a file; verification is
``ExportSource.row``, against the reference logits, for every format alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from export import quantize, tensorrt
from export.parity import TOLERANCES, compare, interleaved_latency_ms, ort_logits
from export.source import ExportSource, artifact_row, timed
from runtime.contract import ArtifactRow, Skipped, U8Decision
from runtime.outputs import run_batched


@dataclass
class Build:
    cfg: Any  # export.pipeline.ExportConfig
    src: ExportSource
    staging: Path
    rows: list[ArtifactRow] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    decisions: dict[str, Any] = field(default_factory=dict)
    onnx: dict[str, Path] = field(default_factory=dict)  # precision -> staged ONNX file (what engines are built from)

    def file(self, stem: str) -> Path:
        return self.staging / f"{self.src.name}_{stem}"

    def onnx_row(self, path: Path, precision: str, build_s: float, **extra: Any) -> ArtifactRow:
        logits, eval_s = timed(ort_logits, path, self.src.test_x)
        row = self.src.row(path, precision, logits, build_s, eval_s, opset=self.cfg.opset, **extra)
        self.rows.append(row)
        return row


Step = tuple[str, Callable[[Build], None]]


def onnx_fp32(b: Build) -> None:
    from export.onnx import model_metadata, onnx_from_model

    src = b.src
    meta = model_metadata(src.state, src.sha256, src.fold.ref_accuracy)
    path, seconds = timed(onnx_from_model, src.folded, b.file("fp32.onnx"), metadata=meta, opset=b.cfg.opset)
    b.onnx["fp32"] = path
    b.onnx_row(path, "fp32", seconds)


def torch_program(b: Build) -> None:
    """The folded model as a ``torch.export`` program: what the torch backend runs (fp32, and bf16 or fp16)."""
    from export.program import load_program, save_program
    from export.source import reference_logits

    src = b.src
    path, seconds = timed(save_program, src.folded, b.file("folded.pt2"), src.chw)
    logits, eval_s = timed(reference_logits, load_program(path), src.test_x, src.config.num_classes)
    b.rows.append(src.row(path, "fp32", logits, seconds, eval_s, fmt="torch"))


def onnx_fp16(b: Build) -> None:
    path, seconds = timed(quantize.to_fp16, b.onnx["fp32"], b.file("fp16.onnx"))
    b.onnx["fp16"] = path
    b.onnx_row(path, "fp16", seconds)


def _int8_opts(b: Build) -> quantize.Int8Options:
    return quantize.Int8Options(calibration=b.cfg.calib_method)


def _int8_extra(b: Build, opts: quantize.Int8Options, path: Path) -> dict[str, Any]:
    return {"activations": opts.activations.value, "calibration": opts.calibration.value,
            "calibration_images": len(b.src.calib_x), "weight_bits": 7 if opts.reduce_range else 8,
            "details": {"float_nodes": quantize.float_nodes(path)}}


def onnx_int8(b: Build) -> None:
    opts = _int8_opts(b)
    path, seconds = timed(quantize.to_int8, b.onnx["fp32"], b.file("int8.onnx"), b.src.calib_x, opts)
    b.onnx["int8"] = path
    b.onnx_row(path, "int8", seconds, **_int8_extra(b, opts, path))


def onnx_int8_cpu(b: Build) -> None:
    """Keep the asymmetric-uint8 variant only if measurably faster or more accurate on ORT CPU.

    Decided on a held-out split of the training images (never the test set) and on repeated, interleaved timings,
    so that the same checkpoint gives the same decision."""
    src = b.src
    if not len(src.heldout_x):
        b.decisions["int8_cpu_u8_variant"] = U8Decision(False, "not tried: no held-out images to decide on")
        return
    opts = replace(_int8_opts(b), activations=quantize.Activations.U8)
    s8_path = b.onnx["int8"]
    u8_path, seconds = timed(quantize.to_int8, b.onnx["fp32"], b.file("int8_cpu.onnx"), src.calib_x, opts)
    u8 = b.onnx_row(u8_path, "int8", seconds, target="cpu", **_int8_extra(b, opts, u8_path))
    s8_ms, u8_ms = interleaved_latency_ms([s8_path, u8_path], src.heldout_x[:64])
    s8_held = compare(src.heldout_ref, ort_logits(s8_path, src.heldout_x), "int8", src.heldout_labels)
    u8_held = compare(src.heldout_ref, ort_logits(u8_path, src.heldout_x), "int8", src.heldout_labels)
    keep, rule = u8_variant_decision(s8_ms, u8_ms, s8_held, u8_held)
    keep = keep and u8.status == "ok"
    b.decisions["int8_cpu_u8_variant"] = U8Decision(
        keep, rule, b.decisions.get("heldout_images", f"{len(src.heldout_x)} held-out images"), round(s8_ms, 3),
        round(u8_ms, 3), s8_held.accuracy, u8_held.accuracy, u8_held.top1_agreement)
    if not keep:
        b.rows.remove(u8)
        u8_path.unlink()


def u8_variant_decision(s8_ms: float, u8_ms: float, s8, u8) -> tuple[bool, str]:
    """Keep the uint8 CPU variant if it is >= 5% faster or >= 0.1 pt more accurate, and meets the runtime's INT8
    parity bound; all measured on held-out training images."""
    min_top1 = TOLERANCES["int8"].min_top1
    rule = ("kept if >= 5% faster at batch 64 on ONNX Runtime CPU (median of interleaved rounds) or >= 0.1 pt more "
            f"accurate on the held-out split, and its top-1 agreement with PyTorch there is >= {min_top1:.0%}")
    better = u8_ms <= 0.95 * s8_ms or u8.accuracy >= s8.accuracy + 0.001
    return bool(better and u8.top1_agreement >= min_top1), rule


def engine(precision: str, lib: tensorrt.Library = tensorrt.TENSORRT) -> Callable[[Build], None]:
    """One engine of ``lib`` from the ONNX file of its precision (strongly typed: the precision comes from the FP16 or
    QDQ graph; TensorRT 10 adds flags), held to the tolerance table where it can run here. A TensorRT-RTX engine
    built where no GPU runs it is a ``built`` row whose details say what was checked and what was not."""

    def build(b: Build) -> None:
        rtx = lib is tensorrt.TENSORRT_RTX
        out = b.file(f"{precision}{'.rtx' if rtx else ''}.engine")
        _, seconds = timed(tensorrt.build_engine, b.onnx[precision], out, precision=precision,
                           input_name=b.src.io().input.name, chw=b.src.chw, profile=b.cfg.trt_profile,
                           workspace_mb=b.cfg.workspace_mb, lib=lib, capabilities=b.cfg.rtx_capabilities,
                           timing_cache=None if rtx else b.cfg.out / "trt.timing.cache")
        side = tensorrt.read_sidecar(out)
        if rtx:
            b.decisions["triton_tensorrt_rtx"] = (
                "TensorRT-RTX engines are not put in the Triton repository: Triton's TensorRT backend loads plans of "
                "the full TensorRT, not TensorRT-RTX; serve them with 'resnet-edge serve --backend tensorrt_rtx'.")
        why_not = tensorrt.engine_unavailable_reason(out, lib)
        checked = {"parser_errors": side["parser_errors"], "network_layers": side["network_layers"],
                   "targets": side.get("compute_capabilities") or [side.get("compute_capability")]}
        if why_not is None:
            logits, eval_s = timed(tensorrt.engine_logits, out, b.src.test_x, b.cfg.trt_profile.max_batch)
            b.rows.append(b.src.row(out, precision, logits, seconds, eval_s, fmt=lib.fmt, sidecar=side_name(out),
                                    details={"verification": {"checked": checked, "ran": True}}))
            return
        verification = {"checked": checked, "ran": False, "not_checked": f"numerics: not run here ({why_not})"}
        b.rows.append(artifact_row(out, precision, None, seconds, 0.0, fmt=lib.fmt, tools=b.src.tools,
                                   sidecar=side_name(out), details={"verification": verification}))
    return build


def side_name(engine: Path) -> str:
    return tensorrt.sidecar_path(engine).name


def aoti_package(precision: str, device: str) -> Callable[[Build], None]:
    """One AOTInductor package, held to the tolerance table on the test set through the runtime's ``aoti`` backend
    (CUDA graphs on a GPU)."""

    def build(b: Build) -> None:
        from export import aoti
        from runtime.backends.aoti_backend import AotiBackend

        src, max_batch = b.src, b.cfg.max_batch_size
        out = b.staging / f"{src.name}_{precision}_{device}.pt2"
        _, seconds = timed(aoti.build_package, src.folded, out, precision=precision, device=device, chw=src.chw,
                           max_batch=max_batch)

        def run():
            with AotiBackend(src.spec(), out, precision=precision, max_batch=max_batch) as backend:
                return run_batched(backend.infer, src.test_x, max_batch)

        logits, eval_s = timed(run)
        b.rows.append(src.row(out, precision, logits, seconds, eval_s, fmt="aoti", target=device,
                              sidecar=aoti.sidecar_path(out).name))
        b.decisions["triton_aoti"] = ("AOTI packages are not put in the Triton repository: Triton's PyTorch backend "
                                      "loads TorchScript models (or a Python model.py), not AOTInductor .pt2 packages.")
    return build


def plan_steps(cfg, skipped: list[Skipped]) -> list[Step]:
    """The steps this export takes, in order; each format not built here is added to ``skipped`` with its reason."""
    steps: list[Step] = [("ONNX FP32 export + evaluation", onnx_fp32), ("torch.export program (folded)", torch_program)]
    if "fp16" in cfg.precisions:
        steps.append(("ONNX FP16 + evaluation", onnx_fp16))
    if "int8" in cfg.precisions:
        steps.append((f"INT8 QDQ ({cfg.calib_method.value}, {cfg.calib_size} images)", onnx_int8))
        if cfg.cpu_int8_variant:
            steps.append(("INT8 uint8-activation CPU variant", onnx_int8_cpu))
    from export import edge_steps

    steps += edge_steps.plan(cfg, skipped)
    for lib, wanted, flag in ((tensorrt.TENSORRT, cfg.trt, "--no-trt"), (tensorrt.TENSORRT_RTX, cfg.trt_rtx, "--no-trt-rtx")):
        if wanted is False:
            skipped.append(Skipped(lib.fmt, f"{flag} was given."))
        elif (reason := tensorrt.unavailable_reason(lib)) is not None:
            skipped.append(Skipped(lib.fmt, reason))
        else:
            steps += [(f"{lib.title} {p} engine", engine(p, lib)) for p in cfg.precisions]
    aoti_plan = _aoti_plan(cfg, skipped)
    if aoti_plan:
        device, precisions = aoti_plan
        steps += [(f"AOTInductor {p} package ({device})", aoti_package(p, device)) for p in precisions]
    return steps


def _aoti_plan(cfg, skipped: list[Skipped]) -> tuple[str, tuple[str, ...]] | None:
    """(device, precisions) of the AOTI packages to build, or None (the reason goes to ``skipped``)."""
    from export import aoti
    from runtime.formats import FORMATS

    if cfg.aoti is False:
        skipped.append(Skipped("aoti", "--no-aoti was given."))
        return None
    reason = aoti.unavailable_reason()
    row = FORMATS["aoti"]
    if reason is None:
        return "cuda", tuple(p.value for p in row.precisions if p.value in cfg.precisions or p.value == "bf16")
    if cfg.aoti and "no CUDA GPU" in reason:
        return "cpu", aoti.CPU_PRECISIONS
    skipped.append(Skipped("aoti", reason))
    return None
