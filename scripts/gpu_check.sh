#!/usr/bin/env bash
# `make gpu-check`: the checks that need an NVIDIA GPU, as one prepared run inside a deadline (default 8 minutes).
#   1. the environment (GPU, PyTorch/CUDA, ONNX Runtime providers, TensorRT if any)
#   2. the quick checkpoint at 28 px (carried in $CKPT, else trained here on the GPU)
#   3. export with AOTInductor packages (fp16, bf16, fp32 on CUDA; their build times land in the manifest)
#   4. parity of every variant on the GPU over the real test set
#   5. bench at 28 px, batches 1, 8 and 64: our GPU paths against PyTorch eager, end-to-end and compute-only; then
#      at batch 1 against torch.compile max-autotune fp16 (compiling takes minutes per shape: its own run)
#   6. every test marked `gpu` (CUDA training, one-process NCCL DDP, the torch CUDA backend with graphs, an AOTI
#      CUDA package, TensorRT where installed), on the checkpoint and export above rather than new ones
#   7. the same at 96 px (a 2-epoch checkpoint trained here: a speed stand-in), batches 1, 8 and 64
# Steps run in that order, each inside what is left of the deadline; one that cannot fit is skipped and logged.
# What comes back lands in $OUT, at most 8 files: bench28/bench96 (JSON, PNG), bench28c.json, parity28.json, gpu-check.log
# (everything printed) and results.tar.gz (CSV, every step's output, manifests and sidecars).
# DEVICE=cpu rehearses steps 2-5 and 7 on a machine without a GPU.
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
  for f in bench28.json bench28.png bench28c.json bench96.json bench96.png; do
    [ -f "$WORK/$f" ] && cp "$WORK/$f" "$OUT/"
  done
  [ -f "$WORK/parity28.json" ] && cp "$WORK/parity28.json" "$OUT/"
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
for name in ("tensorrt", "openvino"):
    try:
        print(name, __import__(name).__version__)
    except ImportError:
        print(name + ": not installed")
PYEOF
} 2>&1 | tee "$WORK/env.txt"

CLI=("$PY" -m resnet_edge)
if [ ! -f "$CKPT" ]; then
  CKPT="$WORK/ckpt28/best.pt"
  run train28 60 300 "${CLI[@]}" train --preset quick --device "$DEVICE" --out "$WORK/ckpt28" || exit
fi
run export28 60 240 "${CLI[@]}" export "$CKPT" --out "$WORK/art28" --aoti --no-cpu-int8 --calib-size 256 || exit
run parity28 20 220 "${CLI[@]}" parity "$WORK/art28" --device "$DEVICE" --json "$WORK/parity28.json"
BENCH=(bench --device "$DEVICE" --backend torch,aoti --rounds 3 --duration 1.5s --peers)
run bench28 60 200 "${CLI[@]}" "${BENCH[@]}" --batch 1,8,64 --compile-peer none "$WORK/art28" \
  --json "$WORK/bench28.json" --csv "$WORK/bench28.csv" --plot "$WORK/bench28.png"
# torch.compile max-autotune compiles for minutes per shape: its own interleaved run, at batch 1 (the headline row)
[ "$DEVICE" = cuda ] && run bench28c 90 140 "${CLI[@]}" "${BENCH[@]}" --batch 1 --compile-peer fp16 \
  --accuracy-images 0 "$WORK/art28" --json "$WORK/bench28c.json" --csv "$WORK/bench28c.csv"

if [ "$DEVICE" = cuda ]; then
  RESNET_EDGE_TEST_CHECKPOINT="$PWD/$CKPT" RESNET_EDGE_TEST_ARTIFACTS="$PWD/$WORK/art28" \
    run gpu-tests 60 60 "$PY" -m pytest -m gpu -v -p no:cacheprovider -o addopts="" -rs \
      tests/train/test_cuda.py tests/train/test_engine.py tests/runtime/test_backends.py tests/export/test_aoti.py \
      tests/export/test_tensorrt.py
fi

# shellcheck disable=SC2086  # TRAIN96 holds several words (the CPU rehearsal trains on a few images)
run train96 20 40 "${CLI[@]}" train --preset quick --image-size 96 ${TRAIN96:---epochs 2} --device "$DEVICE" \
  --out "$WORK/ckpt96" || exit
run export96 30 15 "${CLI[@]}" export "$WORK/ckpt96/best.pt" --out "$WORK/art96" --aoti --precision fp32,fp16 \
  --limit 2000 || exit
run bench96 15 0 "${CLI[@]}" "${BENCH[@]}" --batch 1,8,64 --compile-peer none --accuracy-images 2000 "$WORK/art96" \
  --json "$WORK/bench96.json" --csv "$WORK/bench96.csv" --plot "$WORK/bench96.png"
exit "$rc"
