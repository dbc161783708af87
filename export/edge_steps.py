"""The edge formats' export steps (OpenVINO IR, LiteRT, ncnn, ExecuTorch): each calls its builder, then verifies
the file on the runtime backend the formats table names, over the same evaluation images and against the same
reference logits as the ONNX files, into a manifest row.

``plan`` lists the steps for the formats asked for (default: every one whose converter is installed); a format
whose converter is missing, or a precision a format does not have, is a ``Skipped`` line with its reason.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from export.source import timed
from resnet_edge.errors import MissingDependency
from runtime.contract import Precision, QuantizerDecision, Skipped
from runtime.formats import FORMATS
from runtime.outputs import run_batched


def parse_formats(text: str) -> tuple[str, ...] | None:
    """'all' (None: every format whose converter is installed), 'onnx' (none besides it), or a list."""
    from resnet_edge.errors import InvalidInput

    if text.strip() == "all":
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in ("onnx", *EDGE_FORMATS)]
    if bad or not names:
        raise InvalidInput(f"Unknown format '{','.join(bad) or text}' for --formats; choose from onnx, "
                           f"{', '.join(EDGE_FORMATS)} or all (TensorRT and AOTInductor have --trt and --aoti).")
    return tuple(n for n in names if n != "onnx")


def converter_missing(fmt: str) -> str | None:
    return importlib.import_module(FORMATS[fmt].builder).unavailable_reason()


def check_requested(formats: tuple[str, ...] | None) -> None:
    """Formats named with ``--formats`` must be buildable here: one sentence naming the extra if not."""
    for fmt in formats or ():
        if fmt in EDGE_FORMATS and (reason := converter_missing(fmt)):
            raise MissingDependency(f"--formats {fmt} was asked for, but {reason}")


def logits(b, fmt: str, path: Path, precision: str, x=None, options: dict[str, Any] | None = None):
    """``path`` on its format's runtime backend over ``x`` (default: the evaluation images), with the options the
    runtime will read from the row's ``details`` (ncnn's winograd choice)."""
    from runtime import backends
    from runtime.isolated import run_isolated

    backend, spec, mb = FORMATS[fmt].backends[0], b.src.spec(), b.cfg.max_batch_size
    x = b.src.test_x if x is None else x
    opts = {"winograd": options["winograd"]} if options and "winograd" in options else {}
    if FORMATS[fmt].verify_apart:
        return run_isolated(backend, path, precision, spec, x, max_batch=mb, options=opts)
    with backends.create(backend, spec, path, precision=precision, max_batch=mb, **opts) as runner:
        return run_batched(runner.infer, x, mb)


def verify(b, fmt: str, path: Path, precision: str, build_s: float, details: dict[str, Any], **extra: Any) -> None:
    out, eval_s = timed(logits, b, fmt, path, precision, options=details)
    b.rows.append(b.src.row(path, precision, out, build_s, eval_s, fmt=fmt, details=details, **extra))


def litert(precision: str) -> Callable:
    def step(b) -> None:
        from export import litert as builder

        out = b.file(f"{precision}.tflite")
        calib = b.src.calib_x if precision == "int8" else None
        details, seconds = timed(builder.build, b.src.folded, out, chw=b.src.chw, precision=precision,
                                 calibration=calib)
        verify(b, "litert", out, precision, seconds, details)
    return step


def ncnn(precision: str) -> Callable:
    def step(b) -> None:
        from export import ncnn as builder
        from runtime.backends.ncnn_backend import weights_path

        out = b.file(f"{precision}.ncnn.param")
        details, seconds = timed(builder.build, b.src.folded, out, chw=b.src.chw, precision=precision)
        x = b.src.heldout_x if len(b.src.heldout_x) else b.src.calib_x  # export loads a few for this at least
        details.update(builder.winograd_decision(out, precision, b.src.spec(), x[:builder.WINOGRAD_IMAGES]))
        if getattr(b.cfg, "vulkan", True):
            details["vulkan"] = vulkan_check(b, out, precision)
        verify(b, "ncnn", out, precision, seconds, details, sidecar=weights_path(out).name)
    return step


VULKAN_SOFTWARE_IMAGES = 300  # a software device (llvmpipe) runs ~30 ms an image: a sample of the evaluation images


def vulkan_check(b, path: Path, precision: str) -> dict[str, Any]:
    """The ncnn file on Vulkan device 0 where one is here, held to the same tolerance row as on the CPU: on every
    evaluation image for a GPU, on the first 300 for a software device (whose timings mean nothing, but whose
    compute shaders are real). The row's own result stays the CPU's; this records the device, its driver and
    what the device computed (or why nothing was run)."""
    from runtime import vulkan
    from runtime.isolated import run_isolated
    from runtime.tolerances import compare

    reason = vulkan.unavailable_reason()
    if reason:
        return {"checked": False, "reason": reason}
    dev = vulkan.device(0)
    if precision == "fp16" and not dev.fp16_storage:
        return {"checked": False, "device": dev.record(), "reason": f"{dev.describe()} has no fp16 storage"}
    n = min(len(b.src.test_x), VULKAN_SOFTWARE_IMAGES) if dev.software else len(b.src.test_x)
    out, seconds = timed(run_isolated, "ncnn", path, precision, b.src.spec(), b.src.test_x[:n],
                         max_batch=b.cfg.max_batch_size, options={"device": "vulkan", "gpu_index": dev.index})
    result = compare(b.src.ref[:n], out, precision, b.src.labels[:n])
    return {"checked": True, "device": dev.record(), "images": n, "seconds": round(seconds, 3),
            "passed": bool(result), "parity": result.to_dict(),
            "kept": "the CPU result" + (" (a software device)" if dev.software else "")}


def executorch(precision: str) -> Callable:
    def step(b) -> None:
        from export import executorch as builder

        out = b.file(f"{precision}.pte")
        calib = b.src.calib_x if precision == "int8" else None
        details, seconds = timed(builder.build, b.src.folded, out, chw=b.src.chw, precision=precision,
                                 calibration=calib, max_batch=b.cfg.max_batch_size)
        verify(b, "executorch", out, precision, seconds, details)
    return step


def openvino(precision: str) -> Callable:
    def step(b) -> None:
        from export import openvino_ir as builder

        out = b.file(f"{precision}.xml")
        if precision == "fp32":
            details, seconds = timed(builder.from_onnx, b.onnx["fp32"], out)
        else:
            details, seconds = _openvino_int8(b, out)
        verify(b, "openvino", out, precision, seconds, details, sidecar=builder.weights_path(out).name)
    return step


def _openvino_int8(b, out: Path) -> tuple[dict[str, Any], float]:
    """INT8 IR from the quantizer ``--int8-quantizer`` names; ``auto``: both, the held-out split choosing."""
    from export import openvino_ir as builder
    from runtime.tolerances import compare

    wanted = b.cfg.int8_quantizer
    if wanted == "auto" and (why := builder.nncf_unavailable()):
        b.decisions["openvino_int8_quantizer"] = QuantizerDecision("ort", f"NNCF not tried: {why}")
        wanted = "ort"
    if wanted == "auto" and not len(b.src.heldout_x):
        b.decisions["openvino_int8_quantizer"] = QuantizerDecision("ort", "not tried: no held-out images")
        wanted = "ort"
    candidates = ("ort", "nncf") if wanted == "auto" else (wanted,)
    built: dict[str, tuple[Path, dict[str, Any], float]] = {}
    for q in candidates:
        path = out if len(candidates) == 1 else out.with_name(f"{out.stem}.{q}.xml")
        if q == "ort":
            details, seconds = timed(builder.from_onnx, b.onnx["int8"], path)
        else:
            details, seconds = timed(builder.nncf_int8, b.onnx["fp32"], path, b.src.calib_x)
        built[q] = (path, {**details, "quantizer": q}, seconds)
    if len(candidates) == 1:
        return built[candidates[0]][1:]
    src = b.src
    held = {q: compare(src.heldout_ref, logits(b, "openvino", path, "int8", src.heldout_x), "int8",
                       src.heldout_labels) for q, (path, _, _) in built.items()}
    chosen, rule = builder.choose(held)
    b.decisions["openvino_int8_quantizer"] = QuantizerDecision(
        chosen, rule, b.decisions.get("heldout_images", f"{len(src.heldout_x)} held-out"),
        **{f"{q}_heldout_accuracy": r.accuracy for q, r in held.items()},
        **{f"{q}_heldout_top1_agreement": r.top1_agreement for q, r in held.items()})
    for q, (path, _, _) in built.items():
        weights = builder.weights_path(path)
        if q == chosen:
            path.replace(out)
            weights.replace(builder.weights_path(out))
        else:
            path.unlink()
            weights.unlink()
    return built[chosen][1], sum(s for _, _, s in built.values())


def _guarded(fmt: str, precision: str, step: Callable) -> Callable:
    """A converter or runtime that fails on this model fails that one artifact, not the export: it becomes a
    ``Skipped`` line saying "export failed" with the library's own reason, and the other formats go on."""

    def run(b) -> None:
        try:
            step(b)
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # a converter's own error: one line of it, not its traceback
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300].rstrip(".")
            for leftover in b.staging.glob(f"{b.src.name}_{precision}*"):
                if leftover.name not in {n for r in b.rows for n in r.files} and leftover not in b.onnx.values():
                    leftover.unlink()
            b.skipped.append(Skipped(fmt, f"{precision}: export failed: {first}."))
    return run


STEPS = {"openvino": openvino, "litert": litert, "ncnn": ncnn, "executorch": executorch}
EDGE_FORMATS = tuple(STEPS)  # in export order


def plan(cfg, skipped: list[Skipped]) -> list[tuple[str, Callable]]:
    steps = []
    for fmt in EDGE_FORMATS:
        if cfg.formats is not None and fmt not in cfg.formats:
            continue
        if reason := converter_missing(fmt):
            skipped.append(Skipped(fmt, reason[0].upper() + reason[1:]))
            continue
        row = FORMATS[fmt]
        for p in cfg.precisions:
            if Precision(p) in row.precisions:
                steps.append((f"{row.title} {p} + evaluation", _guarded(fmt, p, STEPS[fmt](p))))
            else:
                skipped.append(Skipped(fmt, f"{p}: {row.why_not.get(p, 'not a precision of this format')}."))
    return steps
