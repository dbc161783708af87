#!/usr/bin/env bash
# `make gpu-check`: the checks that need an NVIDIA GPU, as one prepared run (at most ~8 minutes on one GPU).
#   1. the environment (GPU, PyTorch/CUDA, ONNX Runtime providers, TensorRT if any)
#   2. every test marked `gpu` (CUDA training, one-process NCCL DDP, torch CUDA backend with graphs, AOTI CUDA
#      packages, TensorRT where installed)
#   3. the quick checkpoint (carried in $CKPT, else trained here on the GPU)
#   4. export with AOTInductor packages (fp16, bf16, fp32 on CUDA), then parity of every variant on the GPU
#   5. bench on the GPU at 28 px, batches 1, 8 and 64, with peers: JSON, CSV and PNG
# Everything lands in $OUT (default reports/gpu). DEVICE=cpu rehearses steps 3-5 on a machine without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-reports/gpu}"
DEVICE="${DEVICE:-cuda}"
CKPT="${CKPT:-checkpoints/best.pt}"
PY="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
rc=0
step() { echo "== $1 ($(date +%T))" | tee -a "$OUT/steps.log"; }

step "environment"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: not found"
  "$PY" - <<'PYEOF'
import torch, onnxruntime as ort
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available() and torch.cuda.get_device_name(0))
print("onnxruntime", ort.__version__, ort.get_available_providers())
try:
    import tensorrt
    print("tensorrt", tensorrt.__version__)
except ImportError:
    print("tensorrt: not installed")
PYEOF
} 2>&1 | tee "$OUT/env.txt"

if [ "$DEVICE" = cuda ]; then
  step "gpu-marked tests"
  timeout "${TESTS_TIMEOUT:-240}" "$PY" -m pytest -m gpu -v -p no:cacheprovider -o addopts="" -rs tests 2>&1 \
    | tee "$OUT/gpu-tests.txt"
  rc=${PIPESTATUS[0]}
fi

if [ ! -f "$CKPT" ]; then
  step "quick checkpoint ($DEVICE)"
  "$PY" -m resnet_edge train --preset quick --device "$DEVICE" --out "$(dirname "$CKPT")" 2>&1 | tee "$OUT/train.txt"
fi

step "export with AOTInductor packages"
"$PY" -m resnet_edge export "$CKPT" --out "$OUT/artifacts" --aoti --no-cpu-int8 --calib-size 256 2>&1 \
  | tee "$OUT/export.txt" || rc=1

step "parity of every variant ($DEVICE)"
"$PY" -m resnet_edge parity "$OUT/artifacts" --device "$DEVICE" --json "$OUT/parity.json" 2>&1 \
  | tee "$OUT/parity.txt" || rc=1

step "bench at 28 px ($DEVICE)"
"$PY" -m resnet_edge bench "$OUT/artifacts" --device "$DEVICE" --batch 1,8,64 --peers --rounds 3 \
  --json "$OUT/bench.json" --csv "$OUT/bench.csv" --plot "$OUT/bench.png" 2>&1 | tee "$OUT/bench.txt" || rc=1
rm -f "$OUT"/artifacts/*.onnx "$OUT"/artifacts/*.pt2  # large; the manifest, sidecars and reports come back
step "done: rc=$rc"
exit "$rc"
