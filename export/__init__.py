"""Export stage: BN folding, ONNX in FP32/FP16/INT8, TensorRT engines, manifest, Triton repository.

May import ``train``; never ``runtime``.
"""
