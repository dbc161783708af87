"""loadtest's inputs: real images where they can be had, else synthetic ones of the model's shape and range."""

from __future__ import annotations

import numpy as np

from resnet_edge.errors import InvalidInput


def request_images(meta: dict, artifacts: str | None, data_dir: str | None, n: int,
                   synthetic: bool = False) -> tuple[np.ndarray, str]:
    """``n`` inputs for the model its metadata describes, float32 [n, C, H, W], and a phrase saying what they are:
    the artifacts' golden set (``artifacts``), Fashion-MNIST's test set for a model that reads it, or, as
    perf_analyzer does, synthetic inputs of the right shape and value range from the metadata alone (random images
    through the model's own preprocessing; on a server without it, standard-normal values: what normalised images
    look like)."""
    from resnet_edge.errors import DataError
    from resnet_edge.images import to_input

    (inp,) = meta["inputs"]
    shape = inp.get("shape", [])
    if inp.get("datatype") != "FP32" or len(shape) != 4 or not all(isinstance(d, int) for d in shape) \
            or min(shape[1:]) < 1:
        raise InvalidInput(f"The model's input is {inp.get('datatype')} {shape}; loadtest sends FP32 [N, C, H, W] "
                           "tensors.")
    pre = (meta.get("parameters") or {}).get("preprocessing")
    pre = pre if isinstance(pre, dict) else None
    rng = np.random.default_rng(0)
    images, source = None, ""
    if artifacts is not None:
        from runtime.spec import load_artifacts

        images, source = load_artifacts(artifacts).golden()[0], f"the golden set of {artifacts}"
    elif synthetic or pre is None:
        pass
    elif (pre["channels"], pre["source_size"], pre.get("source_resize")) == (1, 28, None):
        from resnet_edge import fmnist

        try:
            images, source = fmnist.load_arrays(data_dir).test_images, "Fashion-MNIST's test set"
        except DataError:
            pass  # no dataset here: synthetic inputs, and the report says so
    if images is None:
        if pre is None:  # not a resnet-edge server: its metadata gives the shape, not the preprocessing
            x = rng.standard_normal((max(n, 1), *shape[1:]), dtype=np.float32)
            return x, f"synthetic: standard-normal FP32 {shape[1:]} (the server's metadata has no preprocessing)"
        size, channels = pre["source_size"], pre["channels"]
        images = rng.integers(0, 256, (max(n, 1), size, size) + ((3,) if channels == 3 else ()), dtype=np.uint8)
        source = (f"synthetic: random {channels}-channel {size} px images through the model's preprocessing "
                  "(pass --artifacts DIR for real ones)")
    channels = 3 if images.ndim == 4 else 1
    if pre is None or channels != pre["channels"] or images.shape[1] != pre["source_size"]:
        got = f"{channels}-channel {images.shape[1]} px"
        raise InvalidInput(f"The images are {got}; the model reads " + (
            f"{pre['channels']}-channel {pre['source_size']} px images (other artifacts?)." if pre else
            f"{shape[1:]} tensors and its metadata gives no preprocessing to prepare images with."))
    images = np.resize(images, (max(n, 1), *images.shape[1:])) if len(images) < n else images[:n]
    x = to_input(images, pre["mean"], pre["std"], pre["image_size"])
    if list(x.shape[1:]) != shape[1:]:
        raise InvalidInput(f"Prepared images are {list(x.shape[1:])}, the model's input is {shape[1:]}.")
    return x, source
