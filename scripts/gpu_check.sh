#!/usr/bin/env bash
# `make gpu-check`: the checks that need an NVIDIA GPU, as one prepared run.
#   1. the environment (GPU, PyTorch/CUDA, ONNX Runtime providers, TensorRT if any)
#   2. every test marked `gpu` (CUDA training, ORT CUDA EP, TensorRT engines)
#   3. the `full` training preset on CUDA, then `eval` of its best checkpoint
# Logs go to $OUT (default reports/gpu); checkpoints to $CKPT_DIR (default /tmp/resnet-edge-full).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-reports/gpu}"
CKPT_DIR="${CKPT_DIR:-/tmp/resnet-edge-full}"
PY="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"

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

"$PY" -m pytest -m gpu -v -p no:cacheprovider -o addopts="" -rs tests 2>&1 | tee "$OUT/gpu-tests.txt"
tests_rc=${PIPESTATUS[0]}

start=$(date +%s)
timeout "${FULL_TIMEOUT:-480}" "$PY" -m resnet_edge train --preset full --out "$CKPT_DIR" ${FULL_ARGS:-} 2>&1 \
  | tee "$OUT/full-train.txt"
echo "full preset wall time: $(( $(date +%s) - start )) s" | tee -a "$OUT/full-train.txt"
"$PY" -m resnet_edge eval "$CKPT_DIR/best.pt" --device cuda --plot "$OUT/full-confusion.png" \
  --json "$OUT/full-eval.json" 2>&1 | tee "$OUT/full-eval.txt"
if [ -n "${SAVE_CHUNKS:-}" ] && [ -f "$CKPT_DIR/best.pt" ]; then
  # Bring the full checkpoint home through a size-limited channel: weights only, in 15 MB pieces
  # (reassemble with: cat full.pt.part* > best.pt).
  "$PY" - "$CKPT_DIR/best.pt" "$CKPT_DIR/weights.pt" <<'PYEOF'
import sys, torch
ckpt = torch.load(sys.argv[1], weights_only=True)
ckpt["optimizer"] = None
torch.save(ckpt, sys.argv[2])
PYEOF
  split -b 15M "$CKPT_DIR/weights.pt" "$OUT/full.pt.part"
fi
exit "$tests_rc"
