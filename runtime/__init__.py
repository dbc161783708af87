"""Runtime stage: inference backends, parity checks, benchmarking and serving.

May import ``train`` and ``export``. Heavy optional packages (tensorrt, openvino, the
server stack) are imported inside the functions that need them, never at import time.
"""
