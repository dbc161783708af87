"""Export stage: build -> verify -> commit. BN folding, ONNX in FP32/FP16/INT8, torch.export programs, TensorRT
engines, AOTInductor packages, the golden set, the manifest and a Triton repository.

It builds on ``train`` (the checkpoint and the model) and on the runtime (the typed contract it writes, the formats
table it plans from, and the backends it verifies artifacts with); neither imports it.
"""

DEFAULT_OPSET = 18  # accepted by ONNX Runtime, TensorRT 10/11 and OpenVINO alike
