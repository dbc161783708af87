import io

import numpy as np
import pytest
from PIL import Image

from runtime import backends
from runtime.preprocess import decode, load_image_files, preprocess
from train.data import to_input
from train.errors import InvalidInput


def _png(arr, mode="L"):
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def test_test_image_saved_as_png_classifies_as_in_training(arts, fmnist, tmp_path):
    spec = arts.spec
    idx = range(0, 10_000, 500)
    paths = []
    for i in idx:
        p = tmp_path / f"{i}.png"
        p.write_bytes(_png(fmnist.test.images[i].numpy()))
        paths.append(p)
    via_files = load_image_files(paths, spec)
    via_training = to_input(fmnist.test.images[list(idx)], spec.mean[0], spec.std[0], spec.image_size).numpy()
    assert np.array_equal(via_files, via_training)  # lossless PNG: bit-identical input
    with backends.create("onnxruntime", spec, arts.find("onnx", "fp32").path, max_batch=64) as b:
        assert (b.infer(via_files).argmax(1) == b.infer(via_training).argmax(1)).all()


def test_rgb_jpeg_and_other_sizes_become_model_input(arts, fmnist):
    idx = list(range(0, 10_000, 1000))
    decoded = []
    for i in idx:
        big = Image.fromarray(fmnist.test.images[i].numpy()).resize((112, 112), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        big.convert("RGB").save(buf, format="JPEG", quality=95)
        decoded.append(decode(buf.getvalue()))
    x = preprocess(decoded, arts.spec)
    ref = to_input(fmnist.test.images[idx], arts.spec.mean[0], arts.spec.std[0], 28).numpy()
    assert x.shape == (10, 1, 28, 28) and x.dtype == np.float32
    assert np.abs(x - ref).mean() < 0.25  # a resampled, JPEG-compressed copy of the same images
    assert np.corrcoef(x.ravel(), ref.ravel())[0, 1] > 0.95


def test_rgb_and_rgba_png_of_a_gray_image_are_bit_identical(arts, fmnist):
    img = fmnist.test.images[3].numpy()
    gray = preprocess([decode(_png(img))], arts.spec)
    for mode in ("RGB", "RGBA"):
        assert np.array_equal(preprocess([decode(_png(img, mode))], arts.spec), gray)


def test_npy_inputs(arts):
    gray = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    for arr in (gray, gray[None], gray.astype(np.float32) / 255.0, np.stack([gray] * 3, -1)):
        buf = io.BytesIO()
        np.save(buf, arr)
        decoded = decode(buf.getvalue())
        assert decoded.shape == (28, 28) and decoded.dtype == np.uint8
        assert np.abs(decoded.astype(int) - gray).max() <= 1


@pytest.mark.parametrize("data", [b"not an image", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR broken", b""])
def test_undecodable_bytes_are_one_sentence(data):
    with pytest.raises(InvalidInput, match="cannot be decoded"):
        decode(data, "upload")


def test_npy_with_wrong_rank_or_nan():
    for arr, match in ((np.zeros((2, 3, 4, 5)), "expected"), (np.full((4, 4), np.nan), "NaN")):
        buf = io.BytesIO()
        np.save(buf, arr)
        with pytest.raises(InvalidInput, match=match):
            decode(buf.getvalue())
