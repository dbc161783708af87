# resnet-edge. On a fresh clone: `make export` (trains a quick model first if needed) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CKPT   ?= checkpoints/best.pt
ARTIFACTS ?= artifacts
TORCH_VERSION ?= 2.13.0
PORT ?= 8000

.PHONY: setup data vulkan train export parity bench serve test lint gpu-check arm-check clean help

help:
	@echo "make export   train (if no $(CKPT)) and export verified ONNX artifacts to $(ARTIFACTS)/"
	@echo "make test     lint, layer contract and the test suite"
	@echo "make train    train the quick preset (>=90% in <5 min on 2 CPU cores)"
	@echo "make parity   every artifact on every available backend vs the PyTorch FP32 reference"
	@echo "make bench    default latency sweep with peers: reports/bench.json and reports/bench.png"
	@echo "make serve    KServe v2 / Triton HTTP server on 127.0.0.1:$(PORT) over $(ARTIFACTS)/"
	@echo "make arm-check  golden-set parity of the torch-free formats in an emulated aarch64 Debian"
	@echo "make gpu-check  GPU tests, AOTI export, parity and bench on CUDA (needs a GPU; DEVICE=cpu rehearses)"

setup: $(STAMP) data vulkan

# torch first and pinned: an unpinned 'torch' pulls a multi-GB CUDA build. 2.13.0 is the
# CPU wheel on this project's machines; elsewhere fall back to PyTorch's CPU index. The rest is
# installed by uv where it installs (here the extras took 25 s with uv, about 3.5 minutes with pip), held to
# the torch just installed so that no resolver swaps it for another build (unheld, uv picked torch 2.9.1 with
# CUDA wheels); pip where uv is not to be had or fails.
EXTRAS := .[train,dev,openvino,nncf,edge,rtx,compress]
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==$(TORCH_VERSION) \
	  || $(BIN)/pip install -q 'torch>=2.5' --index-url https://download.pytorch.org/whl/cpu
	$(BIN)/python -c "import torch; print('torch==' + torch.__version__)" > $(VENV)/torch.txt
	{ $(BIN)/pip install -q uv 2>/dev/null && $(BIN)/uv pip install -q --python $(BIN)/python \
	    $${PIP_FIND_LINKS:+--find-links $$PIP_FIND_LINKS} -c $(VENV)/torch.txt -e '$(EXTRAS)'; } \
	  || $(BIN)/pip install -q -c $(VENV)/torch.txt -e '$(EXTRAS)'
	touch $(STAMP)

# Fashion-MNIST comes from Debian's dataset-fashion-mnist; nothing is downloaded at run time.
data: $(STAMP)
	@$(BIN)/python -c "from resnet_edge.fmnist import locate; locate()" 2>/dev/null && exit 0; \
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	if command -v apt-get >/dev/null; then \
	  echo "installing Debian's dataset-fashion-mnist"; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	fi; \
	$(BIN)/python -c "from resnet_edge.fmnist import locate; locate()" 2>/dev/null || { \
	  echo "Fashion-MNIST is missing. Install it with 'apt-get install dataset-fashion-mnist', or put"; \
	  echo "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and"; \
	  echo "t10k-labels-idx1-ubyte.gz in ./data/fashion-mnist/ (or set FASHION_MNIST_DIR=DIR)."; }

# A Vulkan device for ncnn's GPU path: Mesa's llvmpipe (a conformant Vulkan driver on the CPU) where apt is
# available and no device is found; its parity means something, its timings do not. Best effort: without it the
# Vulkan tests are skipped with the reason.
vulkan: $(STAMP)
	@$(BIN)/python -c "from runtime.vulkan import devices; devices()" 2>/dev/null && exit 0; \
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	if command -v apt-get >/dev/null; then \
	  echo "installing the Vulkan loader and Mesa's Vulkan drivers (libvulkan1, mesa-vulkan-drivers)"; \
	  { $$SUDO apt-get install -y -qq libvulkan1 mesa-vulkan-drivers >/dev/null 2>&1 || \
	    { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libvulkan1 mesa-vulkan-drivers >/dev/null; }; } || true; \
	fi; \
	$(BIN)/python -c "from runtime.vulkan import devices; print('Vulkan:', '; '.join(d.describe() for d in devices()))" \
	  2>/dev/null || echo "No Vulkan device here: the Vulkan tests will be skipped (apt-get install libvulkan1 mesa-vulkan-drivers)."

$(CKPT):
	$(MAKE) train

train: setup
	$(BIN)/resnet-edge train --preset quick --out $(dir $(CKPT))

export: setup $(CKPT)
	$(BIN)/resnet-edge export $(CKPT) --out $(ARTIFACTS) --triton-repo triton_repo

$(ARTIFACTS)/manifest.json:
	$(MAKE) export

parity: setup $(ARTIFACTS)/manifest.json
	$(BIN)/resnet-edge parity $(ARTIFACTS) --json reports/parity.json

# A default sweep that fits in about 3 minutes on 2 cores.
bench: setup $(ARTIFACTS)/manifest.json
	$(BIN)/resnet-edge bench $(ARTIFACTS) --peers --roofline --batch 1,8,64 --warmup 0.3s --duration 1s \
	  --json reports/bench.json --csv reports/bench.csv --plot reports/bench.png

# KServe v2 / Triton HTTP on 127.0.0.1:8000; the fastest backend here that passes parity.
serve: setup $(ARTIFACTS)/manifest.json
	$(BIN)/resnet-edge serve $(ARTIFACTS) --backend auto --port $(PORT)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# The suite's shared model and export are built once, first, with the product's own commands: the quick preset
# with its schedule shortened to 2 epochs, in fp32 so that the run is deterministic (~90% accurate), and an export
# of every format with a Triton repository, evaluated on the first 2,000 test images. Two pytest workers then share
# them (tests/conftest.py reads RESNET_EDGE_TEST_CHECKPOINT and RESNET_EDGE_TEST_ARTIFACTS), so that the tests that
# wait on servers, sockets and subprocesses overlap on the two cores (their OpenMP threads wait passively: see
# tests/conftest.py). --durations prints where the time went.
TEST_CACHE := .test-cache
test: lint
	rm -rf $(TEST_CACHE)
	$(BIN)/resnet-edge train --preset quick --epochs 2 --amp none --out $(TEST_CACHE)/ckpt
	$(BIN)/resnet-edge export $(TEST_CACHE)/ckpt/best.pt --out $(TEST_CACHE)/arts --calib-size 256 --limit 2000 \
	  --triton-repo $(TEST_CACHE)/arts/triton
	RESNET_EDGE_TEST_CHECKPOINT=$(CURDIR)/$(TEST_CACHE)/ckpt/best.pt RESNET_EDGE_TEST_ARTIFACTS=$(CURDIR)/$(TEST_CACHE)/arts \
	  $(BIN)/pytest -q -n 2 --durations=25

gpu-check:
	bash scripts/gpu_check.sh

# Golden-set parity of every torch-free format in an emulated aarch64 Debian: reports/arm/parity.json.
arm-check: $(ARTIFACTS)/manifest.json
	ARTIFACTS=$(ARTIFACTS) bash scripts/arm_check.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
