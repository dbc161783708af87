"""`make export`: checkpoint in; verified ONNX (FP32/FP16/INT8), engines, manifest and Triton repo out.

Everything is built in a staging directory and evaluated on the full test set before
anything in the output directory changes. The commit removes the old manifest first and
writes the new one last, so an interrupted export never leaves a manifest that names a
missing or different file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from export import quantize, tensorrt
from export.fold import fold_batchnorm
from export.onnx import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, _check_opset, export_onnx
from export.parity import TOLERANCES, ParityStats, interleaved_latency_ms, ort_logits, parity
from resnet_edge import __version__
from resnet_edge.atomic import sha256_file
from resnet_edge.errors import AccuracyRegression, ArtifactMismatch, InvalidInput, MissingDependency
from resnet_edge.images import eval_batch, policy_text, to_input
from runtime.manifest import GOLDEN_FILE, MANIFEST, write_manifest
from train.checkpoint import load_checkpoint, model_from_checkpoint
from train.evaluate import predict
from train.heldout import evaluation_data

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ExportConfig:
    checkpoint: Path = Path("checkpoints/best.pt")
    out: Path = Path("artifacts")
    opset: int = DEFAULT_OPSET
    calib_size: int = 1000
    calib_method: quantize.CalibMethod = quantize.CalibMethod.PERCENTILE
    cpu_int8_variant: bool = True  # also try asymmetric uint8 activations; kept only if measurably better
    trt: bool | None = None  # None: build engines where possible, else skip with a notice
    trt_profile: tensorrt.Profile = field(default_factory=tensorrt.Profile)
    aoti: bool | None = None  # None: AOTInductor packages where CUDA is present; True: also a CPU one without it
    precisions: tuple[str, ...] = PRECISIONS  # the variants to build; fp32 always (the others are made from it)
    limit: int | None = None  # evaluate on the first N test images only (recorded in the manifest)
    workspace_mb: int = 1024
    triton_repo: Path | None = None
    max_batch_size: int = 64
    queue_delay_us: int = 100
    data_dir: Path | None = None
    data: Path | None = None  # an image folder: calibration from its train/ split, gates on its val/ (or every image)
    seed: int = 0
    heldout_size: int = 2000  # training images, disjoint from calibration, that decide optional variants


GOLDEN_N = 1000  # enough for INT8's 99% top-1 agreement bound to be resolved (one image is 0.1%)


def tool_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import onnxscript

    return {"resnet_edge": __version__, "torch": str(torch.__version__), "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "onnxscript": onnxscript.__version__}


def _check_output_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe-"):
            pass
    except OSError as exc:
        raise InvalidInput(f"Output directory {out} is not writable ({exc.strerror}).") from None


def _validate(cfg: ExportConfig) -> None:
    _check_opset(cfg.opset)
    if cfg.calib_size < quantize.MIN_CALIBRATION:
        raise InvalidInput(f"A calibration set of {cfg.calib_size} images is too small; use at least "
                           f"{quantize.MIN_CALIBRATION} (default 1000).")
    if cfg.calib_size + cfg.heldout_size > 60_000:
        raise InvalidInput(f"--calib-size {cfg.calib_size} leaves fewer than {cfg.heldout_size} of the 60000 training "
                           f"images for the held-out split; use at most {60_000 - cfg.heldout_size}.")
    if cfg.max_batch_size < 1:
        raise InvalidInput("--max-batch-size must be at least 1.")
    unknown = [p for p in cfg.precisions if p not in PRECISIONS]
    if unknown or "fp32" not in cfg.precisions:
        raise InvalidInput(f"--precision takes fp32, fp16 and int8, and always fp32 (the others are made from it); "
                           f"not '{','.join(cfg.precisions)}'.")
    if cfg.limit is not None and not 1 <= cfg.limit <= 10_000:
        raise InvalidInput("--limit must be between 1 and 10000 test images.")
    engines = cfg.trt or (cfg.trt is None and tensorrt.unavailable_reason() is None)
    if engines and cfg.max_batch_size > cfg.trt_profile.max_batch:
        raise InvalidInput(f"--max-batch-size {cfg.max_batch_size} exceeds the TensorRT profile's largest batch "
                           f"{cfg.trt_profile.max_batch}; raise --trt-batch or pass --no-trt.")
    if cfg.trt:
        reason = tensorrt.unavailable_reason()
        if reason:
            raise MissingDependency(f"--trt was asked for, but: {reason}")
    _check_output_dir(cfg.out)


class _Exporter:
    """One export run: reference logits, staged artifacts and their evaluation rows."""

    def __init__(self, cfg: ExportConfig, console: Console) -> None:
        self.cfg, self.console = cfg, console
        self.state = load_checkpoint(cfg.checkpoint)
        self.model = model_from_checkpoint(self.state, cfg.checkpoint)
        self.mcfg = self.model.config
        self.name = f"resnet{self.mcfg.depth}"
        self.rows: list[dict[str, Any]] = []
        self.skipped: list[dict[str, str]] = []
        self.decisions: dict[str, Any] = {}

    def load_data(self, console=None) -> None:
        """Evaluation images, and training images for calibration and export's decisions, by the split the
        checkpoint recorded (``train.heldout``): never an image it evaluates on, never one it trained on for
        the decisions."""
        m, cfg = self.mcfg, self.cfg
        int8 = "int8" in cfg.precisions
        data = evaluation_data(m, self.state.get("split"), data_dir=cfg.data_dir, folder=cfg.data, limit=cfg.limit,
                               calib_size=cfg.calib_size if int8 else 0,
                               heldout_size=cfg.heldout_size if int8 and cfg.cpu_int8_variant else 0,
                               seed=cfg.seed, console=console)
        if int8 and len(data.calibration) < quantize.MIN_CALIBRATION:
            raise InvalidInput(f"{cfg.data or 'the dataset'} has {len(data.calibration)} training images for INT8 "
                               f"calibration; it needs at least {quantize.MIN_CALIBRATION} (or pass --precision "
                               "fp32,fp16).")
        self.data, self.labels = data, data.test.labels.numpy()
        self.evaluated = data.description
        self.decisions.update({f"{k}_images": v for k, v in data.notes.items()})
        self.test_x = to_input(data.test.images.numpy(), m.mean, m.std, m.image_size)
        self.calib_x = to_input(data.calibration.images.numpy(), m.mean, m.std, m.image_size)
        self.heldout_x = to_input(data.heldout.images.numpy(), m.mean, m.std, m.image_size)
        self.heldout_labels = data.heldout.labels.numpy()

    def reference(self) -> None:
        kw = dict(mean=self.mcfg.mean, std=self.mcfg.std, image_size=self.mcfg.image_size)
        self.ref = predict(self.model, self.data.test, **kw).numpy()
        with torch.inference_mode():
            step = eval_batch(self.mcfg.image_size)
            self.heldout_ref = np.concatenate([self.model(torch.from_numpy(self.heldout_x[i:i + step])).numpy()
                                               for i in range(0, len(self.heldout_x), step)] or
                                              [np.zeros((0, self.mcfg.num_classes), np.float32)])
        folded = predict(fold_batchnorm(self.model), self.data.test, **kw).numpy()
        self.fold_stats = parity(self.ref, folded, self.labels)
        s = self.fold_stats
        bound = TOLERANCES["fp32"].max_rel  # folding must be exact up to float32 rounding
        if s.max_rel > bound or s.top1_agreement < 1.0:
            raise ArtifactMismatch(f"BN folding changed the logits: max |dlogit| {s.max_abs:.3g} ({s.max_rel:.3g} "
                                   f"of max |logit|, bound {bound}), top-1 agreement {s.top1_agreement:.2%}.")

    def golden(self, staging: Path) -> None:
        """The golden set: real test images as uint8, their labels and the PyTorch FP32 logits, so that a
        device without torch or the dataset can verify its artifacts (``resnet-edge parity``)."""
        n = min(GOLDEN_N, len(self.labels))
        path = staging / GOLDEN_FILE
        with open(path, "wb") as fh:  # the staging directory is private; the commit moves it in atomically
            np.savez_compressed(fh, images=self.data.test.images[:n].numpy(), labels=self.labels[:n].astype(np.int64),
                                logits=self.ref[:n].astype(np.float32))
        self.golden_entry = {"path": GOLDEN_FILE, "sha256": sha256_file(path), "n": n,
                             "images": f"the first {n} evaluation images of {self.evaluated}, uint8, at the source "
                                       "size",
                             "logits": "PyTorch FP32, the unfolded checkpoint, eager on the CPU"}

    def evaluate(self, path: Path, precision: str, build_s: float, **extra: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        stats = parity(self.ref, ort_logits(path, self.test_x), self.labels)
        row = _artifact_entry(path, precision, stats, build_s, time.perf_counter() - t0, self.mcfg, **extra)
        self.rows.append(row)
        return row

    def onnx_variants(self, staging: Path, step) -> dict[str, Path]:
        cfg, name = self.cfg, self.name
        step("ONNX FP32 export + evaluation")
        t0 = time.perf_counter()
        fp32 = export_onnx(cfg.checkpoint, staging / f"{name}_fp32.onnx", opset=cfg.opset,
                           test_accuracy=self.fold_stats.ref_accuracy)
        self.evaluate(fp32, "fp32", time.perf_counter() - t0, opset=cfg.opset)
        files = {"fp32": fp32}
        if "fp16" in cfg.precisions:
            step("ONNX FP16 + evaluation")
            t0 = time.perf_counter()
            files["fp16"] = quantize.to_fp16(fp32, staging / f"{name}_fp16.onnx")
            self.evaluate(files["fp16"], "fp16", time.perf_counter() - t0, opset=cfg.opset)
        if "int8" in cfg.precisions:
            files["int8"] = self.int8_variants(fp32, staging, step)
        return files

    def int8_variants(self, fp32: Path, staging: Path, step) -> Path:
        cfg, name = self.cfg, self.name
        step(f"INT8 QDQ ({cfg.calib_method.value}, {cfg.calib_size} images)")
        opts = quantize.Int8Options(calibration=cfg.calib_method)
        t0 = time.perf_counter()
        int8 = quantize.to_int8(fp32, staging / f"{name}_int8.onnx", self.calib_x, opts)
        s8 = self.evaluate(int8, "int8", time.perf_counter() - t0, opset=cfg.opset, activations="s8",
                           calibration=opts.calibration.value, calibration_images=len(self.calib_x),
                           weight_bits=7 if opts.reduce_range else 8)
        if cfg.cpu_int8_variant and not len(self.heldout_x):
            step("INT8 uint8-activation CPU variant")
            self.decisions["int8_cpu_u8_variant"] = {"kept": False, "rule": "not tried: no held-out images to decide on"}
        elif cfg.cpu_int8_variant:
            step("INT8 uint8-activation CPU variant")
            self.cpu_int8_variant(fp32, int8, staging / f"{name}_int8_cpu.onnx", opts, s8)
        return int8

    def cpu_int8_variant(self, fp32: Path, s8_path: Path, out: Path, opts, s8: dict[str, Any]) -> None:
        """Keep the asymmetric-uint8 variant only if measurably faster or more accurate on ORT CPU.

        Decided on a held-out split of the training images (never the test set) and on repeated,
        interleaved timings, so that the same checkpoint gives the same decision."""
        t0 = time.perf_counter()
        u8_path = quantize.to_int8(fp32, out, self.calib_x, replace(opts, activations=quantize.Activations.U8))
        u8 = self.evaluate(u8_path, "int8", time.perf_counter() - t0, opset=self.cfg.opset, activations="u8",
                           target="cpu", calibration=opts.calibration.value, calibration_images=len(self.calib_x),
                           weight_bits=7 if opts.reduce_range else 8)
        s8_ms, u8_ms = interleaved_latency_ms([s8_path, u8_path], self.heldout_x[:64])
        s8_held = parity(self.heldout_ref, ort_logits(s8_path, self.heldout_x), self.heldout_labels)
        u8_held = parity(self.heldout_ref, ort_logits(u8_path, self.heldout_x), self.heldout_labels)
        keep, rule = u8_variant_decision(s8_ms, u8_ms, s8_held, u8_held)
        keep = keep and u8["status"] == "ok"
        self.decisions["int8_cpu_u8_variant"] = {
            "kept": keep, "split": self.decisions.get("heldout_images", f"{len(self.heldout_x)} held-out images"),
            "s8_ms_batch64": round(s8_ms, 3), "u8_ms_batch64": round(u8_ms, 3),
            "s8_heldout_accuracy": s8_held.accuracy, "u8_heldout_accuracy": u8_held.accuracy,
            "u8_heldout_top1_agreement": u8_held.top1_agreement, "rule": rule}
        if not keep:
            self.rows.remove(u8)
            u8_path.unlink()

    def aoti_plan(self) -> tuple[str, tuple[str, ...]] | None:
        """(device, precisions) of the AOTI packages to build, or None (the reason goes to ``skipped``)."""
        from export import aoti

        if self.cfg.aoti is False:
            self.skipped.append({"format": "aoti", "reason": "--no-aoti was given."})
            return None
        reason = aoti.unavailable_reason()
        if reason is None:
            return "cuda", tuple(p for p in aoti.CUDA_PRECISIONS if p in self.cfg.precisions or p == "bf16")
        if self.cfg.aoti and "no CUDA GPU" in reason:
            return "cpu", aoti.CPU_PRECISIONS
        self.skipped.append({"format": "aoti", "reason": reason})
        return None

    def aoti_packages(self, staging: Path, plan: tuple[str, tuple[str, ...]] | None, step) -> None:
        """One AOTInductor package per precision, each held to the tolerance table on the test set through the
        runtime's ``aoti`` backend (CUDA graphs on a GPU)."""
        from export import aoti
        from runtime.backends.aoti_backend import AotiBackend
        from runtime.spec import ModelSpec

        if plan is None:
            return
        device, precisions = plan
        m, max_batch = self.mcfg, self.cfg.max_batch_size
        chw = (m.in_channels, m.image_size, m.image_size)
        spec = ModelSpec(self.name, INPUT_NAME, OUTPUT_NAME, m.in_channels, m.image_size, m.num_classes,
                         tuple(m.class_names), m.mean_per_channel, m.std_per_channel)
        folded = fold_batchnorm(self.model)
        for precision in precisions:
            step(f"AOTInductor {precision} package ({device})")
            out = staging / f"{self.name}_{precision}_{device}.pt2"
            t0 = time.perf_counter()
            aoti.build_package(folded, out, precision=precision, device=device, chw=chw, max_batch=max_batch)
            build_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            with AotiBackend(spec, out, precision=precision, max_batch=max_batch) as backend:
                logits = np.concatenate([backend.infer(self.test_x[i:i + max_batch])
                                         for i in range(0, len(self.test_x), max_batch)])
            stats = parity(self.ref, logits, self.labels)
            self.rows.append(_artifact_entry(out, precision, stats, build_s, time.perf_counter() - t0, m, fmt="aoti",
                                             target=device, sidecar=aoti.sidecar_path(out).name))
        self.decisions["triton_aoti"] = ("AOTI packages are not put in the Triton repository: Triton's PyTorch "
                                         "backend loads TorchScript models (or a Python model.py), not AOTInductor "
                                         ".pt2 packages.")

    def engines(self, staging: Path, onnx_files: dict[str, Path], step) -> None:
        if self.cfg.trt is False:
            self.skipped.append({"format": "tensorrt", "reason": "--no-trt was given."})
            return
        reason = tensorrt.unavailable_reason()
        if reason:
            self.skipped.append({"format": "tensorrt", "reason": reason})
            return
        m = self.mcfg
        for precision, src in onnx_files.items():
            step(f"TensorRT {precision} engine")
            # TensorRT 11 is strongly typed: precision comes from the FP16/QDQ ONNX; TRT 10 adds flags.
            out = staging / f"{self.name}_{precision}.engine"
            t0 = time.perf_counter()
            tensorrt.build_engine(src, out, precision=precision, input_name=INPUT_NAME,
                                  chw=(m.in_channels, m.image_size, m.image_size), profile=self.cfg.trt_profile,
                                  workspace_mb=self.cfg.workspace_mb, timing_cache=self.cfg.out / "trt.timing.cache")
            build_s = time.perf_counter() - t0
            logits = tensorrt.engine_logits(out, self.test_x, self.cfg.trt_profile.max_batch)
            stats = parity(self.ref, logits, self.labels)
            row = _artifact_entry(out, precision, stats, build_s, 0.0, m, fmt="tensorrt",
                                  sidecar=tensorrt.sidecar_path(out).name)
            self.rows.append(row)

    def manifest(self) -> dict[str, Any]:
        m, s = self.mcfg, self.state
        return {
            "model": {"name": self.name, "depth": m.depth, "stem": m.stem, "num_classes": m.num_classes,
                      "class_names": list(m.class_names)},
            "preprocessing": {"image_size": m.image_size, "channels": m.in_channels, "mean": list(m.mean_per_channel),
                              "std": list(m.std_per_channel), "scale": 1 / 255, "resize": m.resize,
                              "layout": "NCHW", "source_size": m.source_size, "source_resize": m.source_resize,
                              "policy": policy_text(m.source_size, m.source_resize),
                              "color": "RGB" if m.in_channels == 3 else "L"},
            "io": {"input": {"name": INPUT_NAME, "dtype": "float32", "shape": [-1, m.in_channels, m.image_size, m.image_size]},
                   "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [-1, m.num_classes]}},
            "source": {"checkpoint": str(self.cfg.checkpoint), "sha256": sha256_file(self.cfg.checkpoint),
                       "epoch": s["epoch"], "test_accuracy": self.fold_stats.ref_accuracy,
                       "train_reported_test_accuracy": s["metrics"].get("test_acc"),
                       "data_sha256": s.get("data_sha256", "")},
            "fold": self.fold_stats.to_dict(),
            "golden": self.golden_entry,
            "evaluation": {"data": self.evaluated, "test_images": len(self.labels), "limit": self.cfg.limit,
                           "precisions": list(self.cfg.precisions)},
            "artifacts": self.rows,
            "skipped": self.skipped,
            "decisions": self.decisions,
            "tools": tool_versions(),
        }


def run_export(cfg: ExportConfig, console: Console | None = None) -> dict[str, Any]:
    """Run the whole export; returns the manifest that was written."""
    console = console or Console(stderr=True)
    _validate(cfg)
    ex = _Exporter(cfg, console)
    engines = cfg.trt is not False and tensorrt.unavailable_reason() is None
    aoti_plan = ex.aoti_plan()
    int8 = "int8" in cfg.precisions
    total = (3 + ("fp16" in cfg.precisions) + int8 * (1 + int(cfg.cpu_int8_variant))
             + (len(cfg.precisions) if engines else 0) + (len(aoti_plan[1]) if aoti_plan else 0))
    if cfg.data is not None:  # an image folder decodes with its own progress bar, before the export's
        ex.load_data(console)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cfg.out))
    try:
        with Progress(TextColumn("[bold]{task.description:<38}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("loading Fashion-MNIST" if cfg.data is None else "loaded the image folder", total=total)

            def step(description: str) -> None:
                bar.update(task, description=description, advance=1)

            if cfg.data is None:
                ex.load_data()
            step("PyTorch FP32 reference + BN folding")
            ex.reference()
            ex.golden(staging)
            onnx_files = ex.onnx_variants(staging, step)
            ex.engines(staging, onnx_files, step)
            ex.aoti_packages(staging, aoti_plan, step)
            bar.update(task, description="done", completed=total)
        console.print(results_table(ex.rows, ex.fold_stats, cfg.out, f"{len(ex.labels):,} images of {ex.evaluated}"))
        for s in ex.skipped:
            what = {"tensorrt": "TensorRT engines", "aoti": "AOTInductor packages"}.get(s["format"], s["format"])
            console.print(f"[yellow]skipped {what}:[/] {escape(s['reason'])}")
        failures = [r for r in ex.rows if r["status"] != "ok"]
        if failures:
            detail = "; ".join(f"{r['path']}: {', '.join(r['failures'])}" for r in failures)
            raise AccuracyRegression(f"Export failed the tolerance table against PyTorch and wrote nothing: {detail}.")
        manifest = ex.manifest()
        _commit(staging, cfg.out, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if cfg.triton_repo is not None:
        from export.triton import write_triton_repo

        dirs = write_triton_repo(manifest, cfg.out, cfg.triton_repo, max_batch_size=cfg.max_batch_size,
                                 queue_delay_us=cfg.queue_delay_us)
        console.print(f"Triton model repository: {cfg.triton_repo}/ ({len(dirs)} models)")
    return manifest


def _artifact_entry(path: Path, precision: str, stats: ParityStats, build_s: float, eval_s: float, mcfg,
                    *, fmt: str = "onnx", target: str = "any", **extra: Any) -> dict[str, Any]:
    bound = TOLERANCES[precision].max_acc_drop_pt
    failures = stats.failures(precision)  # the whole row of the table: error, agreement and accuracy
    tools = tool_versions()
    if fmt == "tensorrt":
        import tensorrt as trt

        tools["tensorrt"] = str(trt.__version__)
    return {
        "path": path.name, "format": fmt, "precision": precision, "target": target,
        "sha256": sha256_file(path), "size_bytes": path.stat().st_size,
        "inputs": [{"name": INPUT_NAME, "dtype": "float32", "shape": [-1, mcfg.in_channels, mcfg.image_size, mcfg.image_size]}],
        "outputs": [{"name": OUTPUT_NAME, "dtype": "float32", "shape": [-1, mcfg.num_classes]}],
        "test_accuracy": stats.accuracy, "parity": stats.to_dict(), "max_acc_drop_pt": bound,
        "status": "fail" if failures else "ok", "failures": list(failures),
        "build_seconds": round(build_s, 3), "eval_seconds": round(eval_s, 3),
        "tools": tools, **extra,
    }


def u8_variant_decision(s8_ms: float, u8_ms: float, s8: ParityStats, u8: ParityStats) -> tuple[bool, str]:
    """Keep the uint8 CPU variant if it is >= 5% faster or >= 0.1 pt more accurate, and meets the
    runtime's INT8 parity bound; all measured on held-out training images."""
    min_top1 = TOLERANCES["int8"].min_top1
    rule = ("kept if >= 5% faster at batch 64 on ONNX Runtime CPU (median of interleaved rounds) or >= 0.1 pt more "
            f"accurate on the held-out split, and its top-1 agreement with PyTorch there is >= {min_top1:.0%}")
    better = u8_ms <= 0.95 * s8_ms or u8.accuracy >= s8.accuracy + 0.001
    return bool(better and u8.top1_agreement >= min_top1), rule


def _artifact_files(manifest: dict[str, Any]) -> set[str]:
    names = {name for art in manifest["artifacts"] for name in (art["path"], art.get("sidecar")) if name}
    return names | ({manifest["golden"]["path"]} if manifest.get("golden") else set())


def _previous_files(out: Path) -> set[str]:
    """The files the manifest already in ``out`` names: what an earlier export wrote there. An unreadable or
    malformed manifest names nothing, so nothing is removed on its word."""
    try:
        names = _artifact_files(json.loads((out / MANIFEST).read_text()))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return set()
    return {n for n in names if isinstance(n, str) and n and Path(n).name == n}  # plain names inside ``out`` only


def _commit(staging: Path, out: Path, manifest: dict[str, Any]) -> None:
    """Old manifest out first, the files it named and the new one does not out, new artifacts in, new manifest
    last (each step atomic).

    Only files an earlier export's manifest names are removed: a user's own files in ``out`` (a calib.npz,
    another model's ONNX) stay; an interruption leaves no manifest naming a missing file."""
    keep = _artifact_files(manifest)
    previous = _previous_files(out)
    (out / MANIFEST).unlink(missing_ok=True)
    for name in previous - keep:
        (out / name).unlink(missing_ok=True)
    for name in keep:
        os.replace(staging / name, out / name)
    write_manifest(out, manifest)


def results_table(rows: list[dict[str, Any]], fold: ParityStats, out: Path | None = None,
                  evaluated: str = "the 10k Fashion-MNIST test images") -> Table:
    table = Table(title=f"exported artifacts{f' in {out}/' if out else ''} ({evaluated}; ONNX "
                        "on ONNX Runtime CPU, AOTI on its own backend)")
    for col, just in (("artifact", "left"), ("precision", "left"), ("size MB", "right"), ("test acc", "right"),
                      ("Δacc vs PyTorch", "right"), ("max |Δlogit|", "right"), ("top-1 agreement", "right"),
                      ("status", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    table.add_row("PyTorch checkpoint (BN folded)", "fp32", "", f"{fold.ref_accuracy:.2%}",
                  f"{fold.delta_acc_pt:+.2f} pt", f"{fold.max_abs:.2e}", f"{fold.top1_agreement:.2%}", "reference")
    for r in rows:
        p = r["parity"]
        label = r["precision"] + (f" ({r['activations']}, {r['target']})" if r.get("activations") else "")
        status = "[green]ok[/]" if r["status"] == "ok" else f"[red]FAIL: {escape('; '.join(r['failures']))}[/]"
        table.add_row(r["path"], label, f"{r['size_bytes'] / 1e6:.1f}", f"{r['test_accuracy']:.2%}",
                      f"{p['delta_acc_pt']:+.2f} pt", f"{p['max_abs']:.2e}", f"{p['top1_agreement']:.2%}", status)
    return table
