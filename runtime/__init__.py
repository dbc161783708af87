"""Runtime stage. Its core is the bottom layer that gets deployed: the typed contract (``runtime.contract``), the
formats table, numpy/Pillow preprocessing, the backends, parity, predict and serving. The benchmark lab
(``runtime.lab``: bench, peers, roofline, reports, loadtest) sits above the core, which never imports it.

It imports neither ``train`` nor ``export`` and needs no torch (the import-linter contracts in ``pyproject.toml``
hold it to that); only the backends that are torch by nature (torch, AOTI) import torch, lazily. Heavy optional
packages (tensorrt, openvino) are imported inside the functions that need them.

    import runtime
    with runtime.load("artifacts") as model:
        print(model.predict("shoe.png", k=3))
"""

from __future__ import annotations

__all__ = ["Prediction", "Predictor", "load"]


def __getattr__(name: str):  # the predict API, imported on first use so that `import runtime` stays light
    if name in __all__:
        from runtime import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
