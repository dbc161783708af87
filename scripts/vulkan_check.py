"""ncnn's Vulkan path on every Vulkan device here: parity of the fp32 and fp16 files, and whether several
extractors in flight pay (issue 36, item 6). Run by `make gpu-check` on the lent GPU and by hand on the CPU's
software device (llvmpipe: its parity means something, its timings do not).

Usage: python scripts/vulkan_check.py ARTIFACTS [--images 1000] [--json reports/vulkan.json]

Where no Vulkan device is to be had it says why (for a GPU machine: whether its driver exposes Vulkan) and exits 0,
so that the GPU check goes on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resnet_edge.atomic import atomic_write_text  # noqa: E402
from resnet_edge.errors import ToolkitError  # noqa: E402
from runtime import vulkan  # noqa: E402
from runtime.parity import choose_reference, run_parity  # noqa: E402
from runtime.spec import load_artifacts  # noqa: E402
from runtime.variants import plan  # noqa: E402

IN_FLIGHT = (1, 2, 4)


def in_flight(backend, x: np.ndarray, rounds: int = 3) -> dict[int, float]:
    """Images per second with k extractors in flight on one net (k threads, each a share of ``x``), interleaved."""
    ref = backend.infer(x)
    best: dict[int, list[float]] = {k: [] for k in IN_FLIGHT}
    for _ in range(rounds):
        for k in IN_FLIGHT:
            with ThreadPoolExecutor(k) as pool:
                t0 = time.perf_counter()
                out = np.concatenate(list(pool.map(backend.infer, np.array_split(x, k))))
                best[k].append(len(x) / (time.perf_counter() - t0))
            if not np.allclose(out, ref, rtol=0, atol=1e-3 * float(np.abs(ref).max())):
                raise SystemExit(f"{k} extractors in flight changed the logits")
    return {k: float(np.median(v)) for k, v in best.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifacts", type=Path)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--json", type=Path, default=Path("reports/vulkan.json"))
    a = ap.parse_args()
    reason = vulkan.unavailable_reason()
    if reason:
        print(f"Vulkan: not run: {reason}")
        icds = sorted(str(p) for d in ("/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d") for p in Path(d).glob("*.json"))
        print(f"Vulkan ICD files here: {', '.join(icds) or 'none (the GPU driver exposes no Vulkan)'}")
        atomic_write_text(a.json, json.dumps({"available": False, "reason": reason, "icd_files": icds}, indent=2))
        return 0
    arts = load_artifacts(a.artifacts)
    ref = choose_reference(arts, limit=a.images)
    report = {"available": True, "reference": ref.description, "devices": []}
    for dev in vulkan.devices():
        try:
            variants, skipped = plan(arts, ["ncnn"], device="vulkan", gpu_index=dev.index)
        except ToolkitError as exc:  # no ncnn files in ARTIFACTS (the converter was not installed at export)
            print(f"{dev.describe()}: not run: {exc}")
            report["devices"].append({"device": dev.record(), "skipped": [str(exc)], "parity": []})
            continue
        rows = run_parity(arts, variants, ref, n_random=0).rows
        half = [dataclasses.replace(v, label=f"{v.label} + fp16 arithmetic", options={**v.options, "fp16_arithmetic": True})
                for v in variants if v.precision == "fp16" and dev.fp16_arithmetic]
        measured = run_parity(arts, half, ref, n_random=0).rows if half else []  # reported, not the default
        fp32 = next(v for v in variants if v.precision == "fp32")
        with fp32.create(arts, max_batch=64) as backend:
            rates = in_flight(backend, np.ascontiguousarray(ref.x[:64]))
        entry = {"device": dev.record(), "skipped": skipped, "parity": [r.to_dict() for r in rows],
                 "fp16_arithmetic": [r.to_dict() for r in measured],
                 "images_per_s_by_extractors_in_flight": rates,
                 "timings_mean_nothing": dev.software}
        report["devices"].append(entry)
        print(f"{dev.describe()}, driver {dev.driver_version}" + (" (software: timings mean nothing)" if dev.software
                                                                   else ""))
        for r in rows + measured:
            print(f"  {r.variant}: {r.real.n} images, max rel {r.real.max_rel:.2e}, top-1 agreement "
                  f"{r.real.top1_agreement:.2%}, accuracy {r.real.accuracy:.2%} (reference {r.real.ref_accuracy:.2%}),"
                  f" {'pass' if r.passed else 'FAIL ' + '; '.join(r.real.failures)}")
        print("  fp32 images/s with 1, 2, 4 extractors in flight: "
              + ", ".join(f"{rates[k]:.1f}" for k in IN_FLIGHT))
    atomic_write_text(a.json, json.dumps(report, indent=2))
    return 0 if all(r["passed"] for d in report["devices"] for r in d["parity"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
