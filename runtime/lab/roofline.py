"""The roofline: FLOPs per image from the network's layer shapes, and the measured (not datasheet) GEMM peak of
each precision on this machine, so that bench can say how close each variant gets."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from resnet_edge.errors import MissingDependency
from runtime.spec import Artifacts


@dataclass(frozen=True)
class Flops:
    """FLOPs of one image's forward pass (multiply-adds x 2, convs and the linear head).

    ``nominal`` counts every kernel tap, as FLOP counters do; ``real`` leaves out taps that land on
    zero padding, which no kernel needs to multiply. They differ where maps are small: at 28 px the
    last stage runs 3x3 convs on 1x1 maps, where 8 of 9 taps are padding."""

    nominal: float
    real: float


def conv_flops(cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
               size_in: tuple[int, int], groups: int = 1) -> Flops:
    """Nominal and real FLOPs of one Conv2d on one image."""
    taps, outs = [], []
    for k, s, p, n in zip(kernel, stride, padding, size_in):
        out = (n + 2 * p - k) // s + 1
        outs.append(out)
        # taps of output position o that fall inside the input: offsets j with 0 <= o*s - p + j < n
        taps.append(sum(sum(1 for j in range(k) if 0 <= o * s - p + j < n) for o in range(out)))
    per_tap = 2.0 * (cin // groups) * cout
    return Flops(per_tap * kernel[0] * kernel[1] * outs[0] * outs[1], per_tap * taps[0] * taps[1])


def model_flops(arts: Artifacts) -> Flops:
    """FLOPs per image, from the convolutions and linear layers of the reference program's graph, with the shapes
    they see on one image (``torch.fx``'s shape propagation)."""
    import torch
    from torch.fx.passes.shape_prop import ShapeProp

    from runtime import reference
    from runtime.backends.torch_backend import load_program

    module = load_program(reference.require(arts))
    with torch.inference_mode():
        ShapeProp(module).propagate(torch.zeros(1, *arts.spec.chw))
    nominal = real = 0.0
    for node in module.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target == torch.ops.aten.conv2d.default:
            x, w = node.args[0].meta["tensor_meta"].shape, node.args[1].meta["tensor_meta"].shape
            stride, padding = (list(node.args[i]) if len(node.args) > i else d for i, d in ((3, [1, 1]), (4, [0, 0])))
            groups = node.args[6] if len(node.args) > 6 else 1
            f = conv_flops(w[1] * groups, w[0], tuple(w[2:]), tuple(stride), tuple(padding), tuple(x[-2:]), groups)
            nominal, real = nominal + f.nominal, real + f.real
        elif node.target == torch.ops.aten.linear.default:
            w = node.args[1].meta["tensor_meta"].shape
            nominal += 2.0 * w[0] * w[1]
            real += 2.0 * w[0] * w[1]
    return Flops(nominal, real)


def gemm_peak_gflops(precision: str, device: str = "cpu", sizes: tuple[int, ...] = (1024, 2048),
                     seconds: float = 0.5) -> tuple[float, str] | None:
    """Measured (not datasheet) GEMM throughput: the best n x n x n product over sizes and libraries,
    and which library reached it. On a CPU the candidates include ONNX Runtime's MLAS and OpenVINO's
    oneDNN kernels, which dispatch to the widest FMA units present (AVX-512 here); PyTorch's MKL and
    numpy's OpenBLAS may not. None where the device has no native GEMM for that precision (fp16 on a CPU)."""
    from runtime import reference

    if not reference.torch_installed():
        raise MissingDependency(f"--roofline measures GEMM peaks with PyTorch, which this install lacks ({reference.HINT}).")
    import torch

    dev = torch.device(device)
    if precision == "fp16" and dev.type == "cpu":
        return None
    best, who = 0.0, ""
    for n in sizes:
        for name, fn in _gemm_candidates(precision, n, dev):
            try:
                rate = 2.0 * n**3 / _best_time(fn, dev, seconds / len(sizes)) / 1e9
            except (RuntimeError, NotImplementedError, ImportError):
                continue
            if rate > best:
                best, who = rate, name
    return (best, who) if best else None


def _gemm_candidates(precision: str, n: int, dev):
    import torch

    if precision == "int8":
        a = torch.randint(-128, 127, (n, n), dtype=torch.int8, device=dev)
        b = torch.randint(-128, 127, (n, n), dtype=torch.int8, device=dev)
        found = [("torch._int_mm", lambda: torch._int_mm(a, b))]
        if dev.type == "cpu":
            found += _ort_gemm(n, "int8") + _openvino_gemm(n, "int8")
        return found
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    found = [("torch.mm", lambda: a @ b)]
    if dev.type == "cpu":
        if precision == "fp32":
            an, bn = a.numpy(), b.numpy()
            found += [("numpy", lambda: an @ bn)] + _ort_gemm(n, "fp32")
        found += _openvino_gemm(n, precision)
    return found


def _ort_gemm(n: int, precision: str):
    """ONNX Runtime MLAS: MatMul in fp32, MatMulInteger (uint8 x int8, VNNI where present) in int8."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    if precision == "fp32":
        node, ta, tb = helper.make_node("MatMul", ["A", "B"], ["C"]), TensorProto.FLOAT, TensorProto.FLOAT
        feeds = {"A": rng.standard_normal((n, n), np.float32), "B": rng.standard_normal((n, n), np.float32)}
        tc = TensorProto.FLOAT
    else:
        node, ta, tb, tc = helper.make_node("MatMulInteger", ["A", "B"], ["C"]), TensorProto.UINT8, TensorProto.INT8, \
            TensorProto.INT32
        feeds = {"A": rng.integers(0, 255, (n, n), dtype=np.uint8), "B": rng.integers(-128, 127, (n, n), dtype=np.int8)}
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("A", ta, [n, n]),
                                              helper.make_tensor_value_info("B", tb, [n, n])],
                              [helper.make_tensor_value_info("C", tc, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [("onnxruntime MLAS", lambda: sess.run(None, feeds))]


def _openvino_gemm(n: int, precision: str):
    """OpenVINO's CPU plugin (oneDNN JIT kernels) on one MatMul, in the precision asked for."""
    try:
        import openvino as ov
        from openvino import opset13 as ops
    except ImportError:
        return []
    rng = np.random.default_rng(0)
    a_np, b_np = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    a, b = ops.parameter([n, n], np.float32), ops.parameter([n, n], np.float32)
    if precision == "int8":  # fake-quantized inputs: the plugin runs an int8 GEMM
        fq = [ops.fake_quantize(p, -4.0, 4.0, -4.0, 4.0, 256) for p in (a, b)]
        model, config = ov.Model([ops.matmul(fq[0], fq[1], False, False)], [a, b]), {}
    else:
        model = ov.Model([ops.matmul(a, b, False, False)], [a, b])
        config = {"INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision]}
    request = ov.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", **config}).create_infer_request()
    return [("openvino oneDNN", lambda: request.infer({0: a_np, 1: b_np}))]


def _best_time(fn, dev, seconds: float) -> float:
    import torch

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    fn()
    sync()
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end or best == float("inf"):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_peak(result, precision: str) -> None:
    if precision not in result.peaks:
        found = gemm_peak_gflops(precision)
        result.peaks[precision] = found[0] if found else None
        if found:
            result.peak_sources[precision] = found[1]
