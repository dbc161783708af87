"""`resnet-edge export`."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Optional

import typer

from export import DEFAULT_OPSET
from export.quantize import CalibMethod
from export.tensorrt import Profile
from resnet_edge.cli_util import cli_errors, interrupt_on_signal, make_console
from resnet_edge.errors import InvalidInput

console = make_console()
Opt = typer.Option


@cli_errors
def export_cmd(
    ckpt: Annotated[Path, typer.Argument(help="Checkpoint to export.")] = Path("checkpoints/best.pt"),
    out: Annotated[Path, Opt("--out", help="Artifact directory (manifest.json and the files it names).")] = Path("artifacts"),
    opset: Annotated[int, Opt(help="ONNX opset (18-21).")] = DEFAULT_OPSET,
    calib_size: Annotated[int, Opt(help="Training images used to calibrate INT8.")] = 1000,
    calib_method: Annotated[str, Opt(help="INT8 calibration: minmax, entropy or percentile.")] = "percentile",
    cpu_int8: Annotated[bool, Opt("--cpu-int8/--no-cpu-int8",
                                  help="Also try uint8 activations for ORT CPU; kept only if measurably better.")] = True,
    trt: Annotated[Optional[bool], Opt("--trt/--no-trt",
                                       help="Build TensorRT engines (default: when TensorRT and a GPU exist).")] = None,
    trt_rtx: Annotated[Optional[bool], Opt("--trt-rtx/--no-trt-rtx",
                                           help="Build TensorRT-RTX engines, ahead of time, GPU or not (default: where "
                                                "tensorrt-rtx is installed).")] = None,
    trt_rtx_cc: Annotated[str, Opt(help="TensorRT-RTX target compute capabilities: 'portable' (8.0,8.6,8.9,12.0), "
                                        "'current' (this GPU) or a list such as 7.5,8.6.")] = "portable",
    trt_batch: Annotated[str, Opt(help="TensorRT and TensorRT-RTX profile batch sizes min,opt,max.")] = "1,32,64",
    precision: Annotated[str, Opt(help="Variants to build: fp32 (always), fp16, int8; comma-separated.")] = "fp32,fp16,int8",
    limit: Annotated[Optional[int], Opt(help="Evaluate on the first N test images (recorded in the manifest). "
                                                     "Below 2000, INT8's 0.5 pt accuracy gate spans under 10 images "
                                                     "and can fail by sampling alone.")] = None,
    aoti: Annotated[Optional[bool], Opt("--aoti/--no-aoti",
                                        help="AOTInductor packages (default: fp16/bf16/fp32 where CUDA exists; "
                                             "--aoti without a GPU builds a CPU fp32 one).")] = None,
    workspace_mb: Annotated[int, Opt(help="TensorRT builder workspace limit.")] = 1024,
    triton_repo: Annotated[Optional[Path], Opt(help="Also write a Triton model repository here.")] = None,
    max_batch_size: Annotated[int, Opt(help="max_batch_size of the Triton configs.")] = 64,
    queue_delay_us: Annotated[int, Opt(help="Triton dynamic batching max_queue_delay_microseconds.")] = 100,
    data_dir: Annotated[Optional[Path], Opt(help="Directory with the four Fashion-MNIST IDX files.")] = None,
    data: Annotated[Optional[Path], Opt("--data", help="An image folder for calibration (its train/ split) and the "
                                                       "accuracy gates (its val/ split, or every image).")] = None,
    formats: Annotated[str, Opt(help="Formats to build besides ONNX (always built): openvino, litert, ncnn, "
                                     "executorch, comma-separated; 'all': every one whose converter is installed; "
                                     "'onnx': none.")] = "all",
    int8_quantizer: Annotated[str, Opt(help="OpenVINO IR INT8 from our QDQ ONNX (ort), from NNCF (nncf), or both "
                                            "with the held-out split choosing (auto).")] = "auto",
    vulkan: Annotated[bool, Opt("--vulkan/--no-vulkan",
                                help="Check the ncnn files on Vulkan device 0 too, where one is here (a software "
                                     "device on its first 300 evaluation images), and record the device.")] = True,
) -> None:
    """Fold BN, export ONNX FP32/FP16/INT8, the edge formats (and TensorRT engines), verify each on the test set,
    write the manifest."""
    from export.pipeline import ExportConfig, run_export

    if calib_method not in {m.value for m in CalibMethod}:
        raise InvalidInput(f"--calib-method must be one of minmax, entropy, percentile, not '{calib_method}'.")
    try:
        mn, op, mx = (int(v) for v in trt_batch.split(","))
    except ValueError:
        raise InvalidInput(f"--trt-batch must be three integers min,opt,max, not '{trt_batch}'.") from None
    from export.edge_steps import parse_formats
    from export.openvino_ir import INT8_QUANTIZERS
    from export.tensorrt import parse_capabilities

    if int8_quantizer not in INT8_QUANTIZERS:
        raise InvalidInput(f"--int8-quantizer must be one of {', '.join(INT8_QUANTIZERS)}, not '{int8_quantizer}'.")
    cfg = ExportConfig(checkpoint=ckpt, out=out, opset=opset, calib_size=calib_size,
                       calib_method=CalibMethod(calib_method), cpu_int8_variant=cpu_int8, trt=trt, aoti=aoti,
                       precisions=tuple(p.strip() for p in precision.split(",") if p.strip()), limit=limit,
                       trt_profile=Profile(mn, op, mx).validate(), workspace_mb=workspace_mb, trt_rtx=trt_rtx,
                       rtx_capabilities=parse_capabilities(trt_rtx_cc),
                       triton_repo=triton_repo, max_batch_size=max_batch_size, queue_delay_us=queue_delay_us,
                       data_dir=data_dir, data=data, formats=parse_formats(formats), int8_quantizer=int8_quantizer,
                       vulkan=vulkan)
    previous = {sig: signal.signal(sig, interrupt_on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        manifest = run_export(cfg, console)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for a in manifest.artifacts:
        check = a.details.get("vulkan") if isinstance(a.details, dict) else None
        if check and check.get("checked"):
            p, dev = check["parity"], check["device"]
            verdict = "[green]pass[/]" if check["passed"] else f"[red]FAIL[/] {'; '.join(p['failures'])}"
            console.print(f"{a.path} on Vulkan ({dev['name']}, {dev['kind']}): {check['images']} images, max rel "
                          f"{p['max_rel']:.2e}, top-1 agreement {p['top1_agreement']:.2%}: {verdict}", highlight=False)
        elif check:
            console.print(f"{a.path}: not checked on Vulkan: {check['reason']}", highlight=False)
    built = sum(a.status == "built" for a in manifest.artifacts)
    also = f", {built} built and checked without running them" if built else ""
    console.print(f"[bold green]{len(manifest.artifacts) - built} artifacts verified[/]{also}; manifest: "
                  f"{out / 'manifest.json'}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
