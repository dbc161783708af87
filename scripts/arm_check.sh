#!/usr/bin/env bash
# `make arm-check`: golden-set parity (and predict on a few PNGs) of every torch-free format inside an emulated
# aarch64 Debian, written to reports/arm/parity.json. Emulated timings mean nothing; only parity is reported.
#
# Needs root (or sudo), Debian's qemu-user-static and debootstrap, and the registries this project reaches (Debian's
# arm64 packages, PyPI's aarch64 wheels of onnxruntime, ai-edge-litert and ncnn). The root is built once and kept in
# $ARM_ROOT (default .arm-root/, ignored by git); later runs reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
ARTIFACTS=${ARTIFACTS:-artifacts}
ARM_ROOT=${ARM_ROOT:-$PWD/.arm-root}
LIMIT_FP=${ARM_LIMIT_FP:-100}     # golden images for the float formats (emulation is slow)
LIMIT_INT8=${ARM_LIMIT_INT8:-1000} # and for INT8: its 0.5 pt accuracy bound is one image in 200, so all 1,000
# OpenVINO is opt-in (ARM_BACKENDS="onnxruntime litert ncnn openvino"): under qemu-user its CPU plugin does not
# start. `openvino.Core()` spun at 100% of a core for 25 min without returning (2026-12-03, openvino 2026.4.1),
# and again for 7 min with a fake MIDR_EL1 sysfs entry for the xbyak_aarch64 probe that complains about it.
BACKENDS=${ARM_BACKENDS:-"onnxruntime litert ncnn"}
OUT=reports/arm
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

[ -f "$ARTIFACTS/manifest.json" ] || { echo "No $ARTIFACTS/manifest.json: run 'make export' first." >&2; exit 2; }

if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
  echo "installing qemu-user-static and debootstrap"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq qemu-user-static debootstrap >/dev/null
fi

# The aarch64 binfmt entry qemu-user-static ships, registered where no systemd does it (containers).
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  [ -e /proc/sys/fs/binfmt_misc/register ] || $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  conf=/usr/lib/binfmt.d/qemu-aarch64-static.conf
  [ -f "$conf" ] || conf=/usr/lib/binfmt.d/qemu-aarch64.conf
  grep -v '^#' "$conf" | $SUDO tee /proc/sys/fs/binfmt_misc/register >/dev/null
fi

if [ ! -x "$ARM_ROOT/venv/bin/python" ]; then
  echo "building an arm64 Debian bookworm in $ARM_ROOT (once; about 10 minutes under emulation)"
  $SUDO debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$ARM_ROOT" http://deb.debian.org/debian >/dev/null
fi
# The host's name servers and CA bundle (a proxy's certificate may sit in it), so that pip in the root reaches PyPI.
$SUDO cp /etc/resolv.conf "$ARM_ROOT/etc/resolv.conf"
$SUDO mkdir -p "$ARM_ROOT/etc/ssl/certs" && $SUDO cp /etc/ssl/certs/ca-certificates.crt "$ARM_ROOT/etc/ssl/certs/"
PIPENV="PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1"
if [ ! -x "$ARM_ROOT/venv/bin/python" ]; then
  $SUDO chroot "$ARM_ROOT" python3 -m venv /venv
fi

# The base install (torch-free) plus the runtimes of the torch-free edge formats, from this checkout.
# Earlier runs' parity files are kept for the backends this run does not take (ARM_BACKENDS=openvino adds
# OpenVINO to an earlier run's report), but only while the artifacts are the same ones.
sum=$(sha256sum "$ARTIFACTS/manifest.json" | cut -d' ' -f1)
[ "$(cat "$ARM_ROOT/out/manifest.sha256" 2>/dev/null)" = "$sum" ] || $SUDO rm -rf "$ARM_ROOT/out"
for backend in $BACKENDS; do $SUDO rm -f "$ARM_ROOT/out/parity_${backend}_"*.json; done
$SUDO rm -rf "$ARM_ROOT/src" "$ARM_ROOT/arts" && $SUDO mkdir -p "$ARM_ROOT/src" "$ARM_ROOT/out/png"
echo "$sum" | $SUDO tee "$ARM_ROOT/out/manifest.sha256" >/dev/null
git ls-files -z | tar --null -T - -cf - | $SUDO tar -xf - -C "$ARM_ROOT/src"
$SUDO cp -r "$ARTIFACTS" "$ARM_ROOT/arts"
$SUDO rm -rf "$ARM_ROOT/arts/triton"
$SUDO chroot "$ARM_ROOT" /usr/bin/env $PIPENV /venv/bin/pip install -q '/src[openvino,litert,ncnn]'
$SUDO chroot "$ARM_ROOT" /venv/bin/python -c \
  "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
  || { echo "torch was installed in the arm64 root: the edge install must not pull it" >&2; exit 1; }

# A few PNGs from the golden set, for predict.
$SUDO chroot "$ARM_ROOT" /venv/bin/python - <<'EOF'
import numpy as np
from PIL import Image
with np.load("/arts/golden.npz") as z:
    for i, img in enumerate(z["images"][:8]):
        Image.fromarray(img).save(f"/out/png/{i}.png")
EOF

echo "parity under emulation: float formats on $LIMIT_FP golden images, INT8 on $LIMIT_INT8, one backend at a time"
run() { $SUDO chroot "$ARM_ROOT" /usr/bin/env -i PATH=/venv/bin:/usr/bin:/bin HOME=/root /venv/bin/"$@"; }
for backend in $BACKENDS; do
  # A failed variant (exit 1) is in its JSON and fails the report below; 2: no variant of that precision (ncnn INT8).
  run resnet-edge parity /arts --reference golden --backend "$backend" --precision fp32,fp16 --limit "$LIMIT_FP" \
    --json "/out/parity_${backend}_fp.json" || [ $? = 1 ]
  run resnet-edge parity /arts --reference golden --backend "$backend" --precision int8 --limit "$LIMIT_INT8" \
    --json "/out/parity_${backend}_int8.json" || [ $? -le 2 ]
done
run resnet-edge predict /arts '/out/png/*.png' --backend litert --json /out/predict_litert.json
run resnet-edge predict /arts '/out/png/*.png' --backend ncnn --json /out/predict_ncnn.json

mkdir -p "$OUT"
python3 - "$ARM_ROOT" "$OUT" <<'EOF'
import json, platform, subprocess, sys
root, out = sys.argv[1], sys.argv[2]
def chroot(*cmd):
    return subprocess.run(["chroot", root, *cmd], capture_output=True, text=True).stdout.strip()
import glob
files = sorted(glob.glob(f"{root}/out/parity_*_*.json"))
runs = [json.load(open(f)) for f in files]
qemu = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "qemu-user-static"], capture_output=True, text=True)
machine = {"emulated": f"aarch64 under Debian's qemu-user-static {qemu.stdout.strip() or '(version unknown)'}",
           "libc": chroot("/usr/bin/env", "bash", "-c", "dpkg-query -W -f='${Version}' libc6 || true"),
           "uname_m": chroot("uname", "-m"), "debian": chroot("cat", "/etc/debian_version"),
           "python": chroot("/venv/bin/python", "-c", "import platform; print(platform.platform())"),
           "host": platform.processor() or platform.machine(),
           "packages": chroot("/venv/bin/pip", "list", "--format=freeze").splitlines()}
preds = {b: json.load(open(f"{root}/out/predict_{b}.json")) for b in ("litert", "ncnn")}
not_run = sorted({"onnxruntime", "litert", "ncnn", "openvino"} - {f.rsplit("/", 1)[1].split("_")[1] for f in files})
WHY_NOT = {"openvino": "not in ARM_BACKENDS by default: its CPU plugin does not start under qemu-user "
                       "(openvino.Core() spins without returning; see scripts/arm_check.sh)"}
report = {"machine": machine, "timings": "none: emulated timings mean nothing, so none are reported",
          "images": {f.rsplit("/", 1)[1].removeprefix("parity_").removesuffix(".json"): r["n_real"]
                     for f, r in zip(files, runs)},  # golden images per backend and precision class
          "passed": bool(runs) and all(r["passed"] for r in runs), "rows": [row for r in runs for row in r["rows"]],
          "skipped": sorted({line for r in runs for line in r.get("skipped", [])}),
          "not_run": not_run, "why_not_run": {b: why for b, why in WHY_NOT.items() if b in not_run},
          "predict": {b: r["predictions"] for b, r in preds.items()}}
json.dump(report, open(f"{out}/parity.json", "w"), indent=2)
for r in report["rows"]:
    print(f"{r['variant']:<32} {'passed' if r['passed'] else 'FAILED'}  max|d| {r['real']['max_abs']:.2e}  "
          f"max rel {r['real']['max_rel']:.2e}  top-1 agreement {r['real']['top1_agreement']:.2%}  "
          f"Δacc {r['real']['delta_acc_pt']:+.2f} pt")
print(f"wrote {out}/parity.json ({'passed' if report['passed'] else 'FAILED'}; {machine['uname_m']}, emulated)")
sys.exit(0 if report["passed"] else 1)
EOF
