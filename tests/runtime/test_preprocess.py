import io

import numpy as np
import pytest
from PIL import Image

from resnet_edge.errors import InvalidInput
from runtime import backends
from runtime.preprocess import decode, load_image_files, preprocess
from train.data import to_input


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


@pytest.mark.parametrize("size", [28, 96, 20])
def test_numpy_preprocessing_agrees_with_the_torch_path_used_in_training(fmnist, size):
    import torch

    from resnet_edge.images import to_input as to_input_np
    from train.data import to_input_torch

    images = fmnist.test.images[:2000]
    ours = to_input_np(images.numpy(), 0.2860, 0.3530, size)
    theirs = to_input_torch(images, 0.2860, 0.3530, size).numpy()
    assert ours.shape == theirs.shape == (2000, 1, size, size) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() <= 1e-6
    assert torch.equal(to_input(images, 0.2860, 0.3530, size), torch.from_numpy(ours))  # training's eval path is it


def test_invert_auto_judges_the_background(arts, fmnist, tmp_path):
    from runtime.preprocess import check_invert, needs_inversion, to_source

    img = fmnist.test.images[0].numpy()
    photo = 255 - img  # a dark garment on a light background, as a product photo
    assert not needs_inversion(img) and needs_inversion(photo)
    assert np.array_equal(to_source(photo, arts.spec, "auto"), img)
    assert np.array_equal(to_source(img, arts.spec, "auto"), img)
    assert np.array_equal(to_source(photo, arts.spec, "yes"), img)
    assert np.array_equal(to_source(photo, arts.spec, "no"), photo)
    assert np.array_equal(preprocess([photo], arts.spec, "auto"), preprocess([img], arts.spec))
    with pytest.raises(InvalidInput, match="--invert must be one of auto, yes, no"):
        check_invert("maybe")


def test_only_the_documented_formats_are_opened_and_their_pixels_come_out_right():
    """Issue 35: EPS (Ghostscript) and every other format Pillow knows is refused; 16-bit samples are scaled, not
    clipped; EXIF orientation is applied; an .npy header is checked before its data is read; a text chunk that
    inflates past Pillow's limit is one sentence."""
    import io

    from PIL import Image, PngImagePlugin

    for fmt in ("GIF", "BMP", "TIFF", "PPM"):
        buf = io.BytesIO()
        Image.new("L", (8, 8)).save(buf, format=fmt)
        with pytest.raises(InvalidInput, match="not a PNG, JPEG, WebP or .npy file"):
            decode(buf.getvalue(), "upload")
    with pytest.raises(InvalidInput, match="not a PNG, JPEG, WebP or .npy file"):
        decode(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n", "upload")
    ramp = np.linspace(0, 65535, 1024).reshape(4, 256).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")
    out = decode(buf.getvalue(), "ramp")
    assert out.shape == (4, 256) and (out == 255).mean() < 0.01  # clipped, 99.6% of it was 255
    np.testing.assert_allclose(out.astype(float), ramp / 257, atol=0.51)
    tall = Image.new("L", (2, 4), 0)
    tall.putpixel((0, 0), 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the stored 2x4 image is shown 4x2
    buf = io.BytesIO()
    tall.save(buf, format="JPEG", exif=exif, quality=100)
    assert decode(buf.getvalue(), "rotated").shape == (2, 4)
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
    with pytest.raises(InvalidInput, match=r"declares shape \[1000000, 1000000\]"):
        decode(head.getvalue() + b"\0" * 16, "huge.npy")
    strings = io.BytesIO()
    np.save(strings, np.array([["a"] * 28] * 28))
    for channels in (1, 3):
        with pytest.raises(InvalidInput, match="expected numbers"):
            decode(strings.getvalue(), "strings.npy", channels)
    text = PngImagePlugin.PngInfo()
    text.add_text("comment", "0" * (4 << 20), zip=True)
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG", pnginfo=text)
    with pytest.raises(InvalidInput, match="cannot be decoded as an image"):
        decode(buf.getvalue(), "text.png")


def test_transparent_pixels_become_the_models_background_not_their_hidden_colour(arts, fmnist):
    """Issue 35, item 9: a cutout is composited on the background the model was trained on (Fashion-MNIST's black,
    after any inversion), whatever colour its transparent pixels hold, in every mode Pillow writes alpha in."""
    import dataclasses
    import io

    from PIL import Image

    from runtime.preprocess import to_source

    img = fmnist.test.images[0].numpy()
    mask = img > 0  # the garment; Fashion-MNIST's background is exactly 0
    alpha = np.where(mask, 255, 0).astype(np.uint8)

    def png(gray: np.ndarray, hidden: int, mode: str) -> bytes:
        color = np.where(mask, gray, hidden).astype(np.uint8)
        im = Image.fromarray(np.dstack([color, color, color, alpha]), "RGBA")
        buf = io.BytesIO()
        (im.convert("LA") if mode == "LA" else im).save(buf, format="PNG" if mode != "WEBP" else "WEBP",
                                                        **({"lossless": True} if mode == "WEBP" else {}))
        return buf.getvalue()

    for mode in ("RGBA", "LA", "WEBP"):
        for hidden in (255, 128):  # white or grey under the transparent pixels: neither may reach the model
            assert np.array_equal(to_source(decode(png(img, hidden, mode)), arts.spec, "no"), img), (mode, hidden)
        # a garment cut out of a product photo (Fashion-MNIST's images are inverted product photos): auto judges it
        # on a white page, inverts it, and its background still comes out black
        assert np.array_equal(to_source(decode(png(255 - img, 255, mode)), arts.spec, "auto"), img), mode
        assert np.array_equal(to_source(decode(png(255 - img, 0, mode)), arts.spec, "yes"), img), mode
    # a palette PNG with a transparent index
    pal = Image.fromarray(np.where(mask, img, 255).astype(np.uint8), "L").convert("P")
    pal.info["transparency"] = pal.getpixel((0, 0))
    buf = io.BytesIO()
    pal.save(buf, format="PNG", transparency=pal.getpixel((0, 0)))
    assert (to_source(decode(buf.getvalue()), arts.spec, "no")[~mask] == 0).all()
    # half transparency blends; an RGB model's background is its mean colour (zero after normalisation)
    half = Image.new("RGBA", (28, 28), (255, 255, 255, 128))
    buf = io.BytesIO()
    half.save(buf, format="PNG")
    assert (to_source(decode(buf.getvalue()), arts.spec, "no") == 128).all()
    rgb = dataclasses.replace(arts.spec, channels=3, mean=(0.5, 0.25, 0.0), std=(0.2, 0.2, 0.2))
    clear = Image.new("RGBA", (28, 28), (255, 255, 255, 0))
    buf = io.BytesIO()
    clear.save(buf, format="PNG")
    assert (to_source(decode(buf.getvalue(), channels=3), rgb, "no") == np.array([128, 64, 0])).all()
