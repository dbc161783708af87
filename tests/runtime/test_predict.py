"""Predict: the Python API (runtime.load -> Predictor) and `resnet-edge predict` on real test images."""

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import runtime
from resnet_edge.errors import InvalidInput
from resnet_edge.images import to_input
from runtime.predict import Prediction, softmax, top_k

N = 300


@pytest.fixture(scope="module")
def pngs(fmnist, tmp_path_factory):
    """The first N real test images as PNG files, and their labels."""
    out = tmp_path_factory.mktemp("pngs")
    for i in range(N):
        Image.fromarray(fmnist.test.images[i].numpy()).save(out / f"{i:05d}.png")
    return out, fmnist.test.labels[:N].numpy()


def _ort_fp32(arts, images):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(arts.find("onnx", "fp32").path), providers=["CPUExecutionProvider"])
    x = to_input(images, arts.spec.mean, arts.spec.std, arts.spec.image_size)
    return sess.run(None, {arts.spec.input_name: x})[0]


def test_predictor_on_paths_pil_and_arrays_equals_the_onnx_model(arts, fmnist, pngs):
    folder, labels = pngs
    images = fmnist.test.images[:N].numpy()
    expected = _ort_fp32(arts, images).argmax(1)
    with runtime.load(arts.root, backend="onnxruntime", precision="fp32", max_batch=64) as model:
        paths = sorted(folder.glob("*.png"))
        via_paths = model.predict(paths, k=3)  # 300 images: batched 64 at a time
        assert len(via_paths) == N and all(len(top) == 3 for top in via_paths)
        assert [top[0].index for top in via_paths] == expected.tolist()
        assert all(isinstance(p, Prediction) and p.label == arts.spec.class_names[p.index] for p in via_paths[0])
        probs = [p.probability for p in via_paths[0]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-9
        pil = [Image.open(p) for p in paths[:10]]
        assert [t[0].index for t in model.predict(pil)] == expected[:10].tolist()
        rgb = [np.stack([im] * 3, -1) for im in images[:10]]  # H x W x 3 uint8
        assert [t[0].index for t in model.predict(rgb)] == expected[:10].tolist()
        assert model.predict(images[0])[0][0].index == expected[0]  # one H x W array: one result
        logits = model.logits(to_input(images[:70], arts.spec.mean, arts.spec.std, arts.spec.image_size))
        assert logits.shape == (70, 10) and (logits.argmax(1) == expected[:70]).all()
    # An independent reference: the golden set's PyTorch FP32 logits of the same test images, within the fp32 row.
    from runtime.tolerances import TOLERANCES

    golden_images, golden_labels, golden_logits = arts.golden()
    assert np.array_equal(golden_images[:N], images) and np.array_equal(golden_labels[:N], labels)
    ref = golden_logits[:N]
    assert [top[0].index for top in via_paths] == ref.argmax(1).tolist()
    assert np.abs(logits - ref[:70]).max() <= TOLERANCES["fp32"].max_rel * np.abs(ref[:70]).max()
    assert float((np.array([top[0].index for top in via_paths]) == labels).mean()) == float((ref.argmax(1) == labels).mean())


def test_predict_decodes_at_most_a_few_batches_ahead_of_inference():
    """``Executor.map`` would submit all 10,000 decodes at once; the window keeps ``ahead`` in flight."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from runtime.predict_cli import decode_ahead

    started, taken, lead = [], [0], []
    lock = threading.Lock()

    def decode(i):
        with lock:
            started.append(i)
            lead.append(len(started) - taken[0])
        return i

    with ThreadPoolExecutor(2) as pool:
        out = []
        for value in decode_ahead(pool, decode, range(10_000), ahead=128):
            out.append(value)
            taken[0] += 1
    assert out == list(range(10_000)) and max(lead) <= 129


def test_predictor_refuses_bad_input_in_one_sentence(arts):
    with runtime.load(arts.root, backend="onnxruntime", precision="fp32") as model:
        for bad, match in ((np.zeros((2, 3, 28, 28), np.float32), r"shape must be \[N, 1, 28, 28\]"),
                           (np.zeros((2, 1, 28, 28), np.float64), "float32")):
            with pytest.raises(InvalidInput, match=match):
                model.logits(bad)
        with pytest.raises(InvalidInput, match="k must be in 1..10"):
            model.predict(np.zeros((28, 28), np.uint8), k=11)
        with pytest.raises(InvalidInput, match="Cannot classify a dict"):
            model.predict({"not": "an image"})
        with pytest.raises(InvalidInput, match="does not exist"):
            model.predict("/no/such/image.png")


def test_top_k_and_softmax():
    logits = np.array([[0.0, 2.0, 1.0], [5.0, 5.0, -1.0]], np.float32)
    assert np.allclose(softmax(logits).sum(1), 1.0)
    top = top_k(logits, 2, ("a", "b", "c"))
    assert [p.label for p in top[0]] == ["b", "c"] and [p.index for p in top[1]] == [0, 1]  # ties: lower index
    with pytest.raises(InvalidInput):
        top_k(logits, 4, ("a", "b", "c"))


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "resnet_edge", "predict", *map(str, args)], capture_output=True,
                          text=True, timeout=300, **kw)


def test_predict_cli_on_a_directory_with_json(arts, fmnist, pngs, tmp_path):
    folder, labels = pngs
    out = tmp_path / "pred.json"
    res = _cli(arts.root, folder, "-k", "3", "--json", out, "--backend", "onnxruntime", "--precision", "fp32")
    assert res.returncode == 0, res.stderr
    assert "300 classified with onnxruntime fp32" in res.stdout and "Traceback" not in res.stderr
    doc = json.loads(out.read_text())
    assert len(doc["predictions"]) == N and not doc["failures"]
    top1 = np.array([p["top"][0]["index"] for p in doc["predictions"]])
    assert (top1 == _ort_fp32(arts, fmnist.test.images[:N].numpy()).argmax(1)).all()


def test_predict_cli_carries_on_past_bad_files_and_exits_non_zero(arts, fmnist, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(fmnist.test.images[0].numpy()).save(good)
    photo = tmp_path / "photo.png"  # the same garment, dark on light: --invert auto turns it back
    Image.fromarray(255 - fmnist.test.images[0].numpy()).save(photo)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    bomb = tmp_path / "bomb.png"
    buf = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buf, format="PNG")  # 48 Mpixel: over the limit, refused before decoding
    bomb.write_bytes(buf.getvalue())
    empty = tmp_path / "empty"
    empty.mkdir()
    before = (tmp_path / "out.json").exists()
    res = _cli(arts.root, good, photo, text, bomb, empty, tmp_path / "missing.png", "--backend", "onnxruntime",
               "--json", tmp_path / "out.json")
    assert res.returncode == 1 and "Traceback" not in res.stderr and not before
    for sentence in ("notes.png cannot be decoded as an image", "bomb.png is 8000x6000; images over 40,000,000",
                     "empty is a directory with no images", "missing.png does not exist"):
        assert sentence in res.stderr.replace("\n", " "), res.stderr
    doc = json.loads((tmp_path / "out.json").read_text())
    assert [p["file"] for p in doc["predictions"]] == [str(good), str(photo)] and len(doc["failures"]) == 4
    assert doc["predictions"][1]["top"][0]["index"] == doc["predictions"][0]["top"][0]["index"]  # inverted back


def test_predict_cli_with_nothing_to_classify(arts, tmp_path):
    res = _cli(arts.root, tmp_path / "*.png")
    assert res.returncode == 2 and "No file matches" in res.stderr and "Nothing to classify" in res.stderr
    assert "Traceback" not in res.stderr
