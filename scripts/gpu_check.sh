#!/usr/bin/env bash
# `make gpu-check`: the checks that need an NVIDIA GPU, as one prepared run inside a deadline ($BUDGET_S, 8 minutes).
# Stages ($STAGES, default "28 tests 96"), in this order:
#   28     the quick checkpoint at 28 px (carried in $CKPT, else trained here on the GPU: 35 s on an H200); export
#          with AOTInductor packages (fp16, bf16, fp32; their build times land in the manifest: 132 s in all, 81 s of
#          it the first package's cold compile); parity of every variant on the GPU over the 10,000 test images
#          (60 s); ncnn's Vulkan path where the driver exposes Vulkan; bench at batches 1, 8 and 64 against PyTorch eager and torch.compile max-autotune fp16 (which
#          compiles for about 30 s per batch size), end-to-end and compute-only
#   tests  every test marked `gpu` (CUDA training, one-process NCCL DDP, the torch CUDA backend with graphs, an AOTI
#          CUDA package, TensorRT where installed) on stage 28's checkpoint and export when they are there (116 s)
#   96     a 2-epoch 96 px checkpoint trained here (a speed stand-in), its export and bench at batches 1, 8 and 64
# All three take about 11 minutes on an H200, more than one device call or the 8-minute budget: on a lease, run
# STAGES=28 and then STAGES="tests 96" on the same warm machine (build/ stays between calls). Each step runs inside
# what is left of the deadline; one that cannot fit is skipped and logged.
# What comes back lands in $OUT, at most 9 files: bench28/bench96 (JSON, PNG), parity28.json, vulkan28.json, gpu-check.log
# (everything printed) and results.tar.gz (CSV, every step's output, manifests and sidecars).
# DEVICE=cpu rehearses stages 28 and 96 on a machine without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-reports/gpu}"
DEVICE="${DEVICE:-cuda}"
CKPT="${CKPT:-checkpoints/best.pt}"
BUDGET_S="${BUDGET_S:-480}"
WORK="${WORK:-build/gpu-check}"
PY="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR="$PWD/$WORK/inductor-cache"
mkdir -p "$OUT" "$WORK"
OUT="$(cd "$OUT" && pwd)"
END=$(( $(date +%s) + BUDGET_S ))
rc=0
exec > >(tee -a "$OUT/gpu-check.log") 2>&1

left() { echo $(( END - $(date +%s) )); }
step() { echo "== $1 ($(date +%T), $(left) s left)"; }
# run NAME MIN_S RESERVE_S CMD...: run CMD if MIN_S seconds fit, leaving RESERVE_S for the later steps.
run() {
  local name=$1 need=$2 reserve=$3; shift 3
  local t=$(( $(left) - reserve ))
  if [ "$t" -lt "$need" ]; then
    echo "SKIPPED $name: $t s left for it, it needs about $need" | tee -a "$WORK/skipped.txt"; rc=1; return 1
  fi
  step "$name"
  local t0; t0=$(date +%s)
  timeout --kill-after=10 "$t" "$@" 2>&1 | tee "$WORK/$name.txt"
  local code=${PIPESTATUS[0]}
  echo "$name: exit $code after $(( $(date +%s) - t0 )) s" | tee -a "$WORK/steps.txt"
  [ "$code" -eq 0 ] || rc=1
  return "$code"
}

pack() {
  step "packing"
  for f in bench28.json bench28.png bench96.json bench96.png parity28.json vulkan28.json; do
    [ -f "$WORK/$f" ] && cp "$WORK/$f" "$OUT/"
  done
  (cd "$WORK" && tar czf "$OUT/results.tar.gz" --exclude='*.onnx' --exclude='*.pt2' --exclude='*.pt' \
     --exclude=inductor-cache --exclude='triton' --exclude='*.npz' . 2>/dev/null)
  echo "== done: rc=$rc ($(left) s left)"
}
trap pack EXIT

if ! "$PY" -c "import importlib.metadata as m, sys; sys.exit(not m.entry_points(group='resnet_edge.torch_reference'))" 2>/dev/null; then
  step "installing this checkout (no dependencies, no network)"
  "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . \
    || echo "not installed: runs from the checkout (the PyTorch reference is found there)"
fi

step "environment"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || echo "nvidia-smi: not found"
  "$PY" - <<'PYEOF'
import torch, onnxruntime as ort
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available() and torch.cuda.get_device_name(0))
print("onnxruntime", ort.__version__, ort.get_available_providers())
for name in ("tensorrt", "tensorrt_rtx", "openvino"):
    try:
        print(name, __import__(name).__version__)
    except ImportError:
        print(name + ": not installed")
from runtime.backends.trt_engine import TENSORRT_RTX, run_unavailable_reason
# one sentence where this GPU cannot run TensorRT-RTX engines (Hopper: compute capability 9.0 is not a target)
print("TensorRT-RTX engines here:", run_unavailable_reason(TENSORRT_RTX) or "they run on this GPU")
PYEOF
} 2>&1 | tee "$WORK/env.txt"

CLI=("$PY" -m resnet_edge)
STAGES=" ${STAGES:-28 tests 96} "
BENCH=(bench --device "$DEVICE" --backend torch,aoti --rounds 3 --duration 1s --peers --accuracy-images 2000)
[ -f "$CKPT" ] || CKPT="$WORK/ckpt28/best.pt"

if [[ $STAGES == *" 28 "* ]]; then
  [ -f "$CKPT" ] || run train28 30 0 "${CLI[@]}" train --preset quick --device "$DEVICE" --out "$WORK/ckpt28" || exit
  run export28 60 0 "${CLI[@]}" export "$CKPT" --out "$WORK/art28" --aoti --no-cpu-int8 --calib-size 256 || exit
  run parity28 20 0 "${CLI[@]}" parity "$WORK/art28" --device "$DEVICE" --json "$WORK/parity28.json"
  # ncnn's Vulkan path on this GPU where its driver exposes Vulkan (it says so when it does not): parity of the fp32
  # and fp16 files on 1,000 test images, and images/s with 1, 2 and 4 extractors in flight
  run vulkan28 15 0 "$PY" scripts/vulkan_check.py "$WORK/art28" --json "$WORK/vulkan28.json"
  # the torch.compile max-autotune fp16 peer compiles for about 30 s per batch size (H200), reported apart
  run bench28 60 0 "${CLI[@]}" "${BENCH[@]}" --batch 1,8,64 --compile-peer fp16 "$WORK/art28" \
    --json "$WORK/bench28.json" --csv "$WORK/bench28.csv" --plot "$WORK/bench28.png"
fi

if [[ $STAGES == *" tests "* && $DEVICE == cuda ]]; then
  # on the stage-28 checkpoint and export where they exist (the same machine), else the fixtures train their own
  [ -f "$CKPT" ] && export RESNET_EDGE_TEST_CHECKPOINT="$(realpath "$CKPT")"
  [ -f "$WORK/art28/manifest.json" ] && export RESNET_EDGE_TEST_ARTIFACTS="$(realpath "$WORK/art28")"
  run gpu-tests 60 0 "$PY" -m pytest -m gpu -v -p no:cacheprovider -o addopts="" -rs \
    tests/train/test_cuda.py tests/train/test_engine.py tests/runtime/test_backends.py tests/export/test_aoti.py \
    tests/export/test_tensorrt.py tests/export/test_tensorrt_rtx.py
fi

if [[ $STAGES == *" 96 "* ]]; then
  # shellcheck disable=SC2086  # TRAIN96 holds several words (the CPU rehearsal trains on a few images)
  run train96 20 0 "${CLI[@]}" train --preset quick --image-size 96 ${TRAIN96:---epochs 2} --device "$DEVICE" \
    --out "$WORK/ckpt96" || exit
  run export96 30 0 "${CLI[@]}" export "$WORK/ckpt96/best.pt" --out "$WORK/art96" --aoti --precision fp32,fp16 \
    --limit 2000 || exit
  run bench96 15 0 "${CLI[@]}" "${BENCH[@]}" --batch 1,8,64 --compile-peer none "$WORK/art96" \
    --json "$WORK/bench96.json" --csv "$WORK/bench96.csv" --plot "$WORK/bench96.png"
fi
exit "$rc"
