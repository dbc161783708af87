"""Export stage: BN folding, ONNX in FP32/FP16/INT8, TensorRT engines, manifest, Triton repository.

May import ``train``; never ``runtime``.
"""

DEFAULT_OPSET = 18  # accepted by ONNX Runtime, TensorRT 10/11 and OpenVINO alike
