"""Image-folder datasets: scanning as torchvision's ImageFolder does, the resize policy shared by training and the
runtime, evaluation equal to the IDX reader's, training and fine-tuning on an RGB folder, and its export."""

import json
import subprocess
import sys
import urllib.request
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_edge import folders
from resnet_edge.errors import DataError, InvalidInput
from resnet_edge.fmnist import CLASS_NAMES as FMNIST_CLASSES
from resnet_edge.images import fit_source
from train.checkpoint import Checkpoint
from train.config import PRESETS
from train.data import load_image_folder
from train.engine import train
from train.evaluate import predict
from train.evaluate import report as evaluate_report

CLASSES = (0, 1, 8)  # T-shirt/top, Trouser, Bag


def _write_folder(root, images, labels, *, rgb, tint_seed=None):
    rng = np.random.default_rng(tint_seed)
    for i, (img, label) in enumerate(zip(images, labels)):
        d = root / f"class_{int(label)}"
        d.mkdir(parents=True, exist_ok=True)
        if rgb and tint_seed is not None:  # a random colour cast per image: colour says nothing of the class
            tint = rng.uniform(0.5, 1.0, 3)
            Image.fromarray((img[..., None] * tint).astype(np.uint8), "RGB").save(d / f"{i:05d}.png")
        else:
            im = Image.fromarray(img)
            (im.convert("RGB") if rgb else im).save(d / f"{i:05d}.png")


@pytest.fixture(scope="module")
def rgb_folder(fmnist, tmp_path_factory):
    """Three Fashion-MNIST classes as tinted RGB PNGs, with train/ (600) and val/ (150) splits."""
    root = tmp_path_factory.mktemp("rgb")
    for split, data, n in (("train", fmnist.train, 200), ("val", fmnist.test, 50)):
        imgs, labels = data.images.numpy(), data.labels.numpy()
        keep = np.concatenate([np.flatnonzero(labels == c)[:n] for c in CLASSES])
        _write_folder(root / split, imgs[keep], labels[keep], rgb=True, tint_seed=len(split))
    return root


@pytest.fixture(scope="module")
def rgb_ckpt(rgb_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("rgb_ckpt")
    data = load_image_folder(rgb_folder, 32, 32)
    cfg = replace(PRESETS["quick"], epochs=3, batch_size=32, lr=0.05, amp="none", image_size=32, device="cpu")
    return train(cfg, out, data=data), out / "best.pt", data


def test_fashion_mnist_as_png_folders_gives_the_idx_readers_accuracy(trained_ckpt, fmnist, tmp_path):
    test = fmnist.test.subset(2000)
    _write_folder(tmp_path / "gray", test.images.numpy(), test.labels.numpy(), rgb=False)
    _write_folder(tmp_path / "rgb", test.images.numpy(), test.labels.numpy(), rgb=True)  # R = G = B
    accs = {}
    for name, extra in (("gray", ["--data", str(tmp_path / "gray")]), ("rgb", ["--data", str(tmp_path / "rgb")])):
        out = tmp_path / f"{name}.json"
        res = subprocess.run([sys.executable, "-m", "resnet_edge", "eval", str(trained_ckpt), "--device", "cpu",
                              "--json", str(out), *extra], capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
        report = json.loads(out.read_text())
        assert report["images"] == 2000
        accs[name] = report["accuracy"]
    # what `eval` computes from the IDX files, on the same 2,000 test images
    model = Checkpoint.read(trained_ckpt).model(trained_ckpt)
    cfg = model.config
    logits = predict(model, test, mean=cfg.mean, std=cfg.std, image_size=cfg.image_size)
    accs["idx"] = evaluate_report(logits, test.labels, FMNIST_CLASSES).accuracy
    assert accs["gray"] == accs["idx"] and accs["rgb"] == accs["idx"], accs


def test_scan_sorts_classes_and_refuses_bad_folders_in_one_sentence(tmp_path):
    for name in ("b", "a", "c"):
        (tmp_path / "ok" / name).mkdir(parents=True)
        Image.new("L", (8, 8)).save(tmp_path / "ok" / name / "x.png")
    (tmp_path / "ok" / "a" / "notes.txt").write_text("not an image")
    found = folders.scan(tmp_path / "ok")
    assert found.classes == ("a", "b", "c") and found.train is None and list(found.val.labels) == [0, 1, 2]
    with pytest.raises(DataError, match="is not a directory"):
        folders.scan(tmp_path / "missing")
    (tmp_path / "one" / "only").mkdir(parents=True)
    with pytest.raises(DataError, match="needs at least two"):
        folders.scan(tmp_path / "one")
    for split, classes in (("train", ("a", "b")), ("val", ("a", "z"))):
        for c in classes:
            (tmp_path / "split" / split / c).mkdir(parents=True)
            Image.new("L", (8, 8)).save(tmp_path / "split" / split / c / "x.png")
    with pytest.raises(DataError, match="val has class folder 'z'"):
        folders.scan(tmp_path / "split")
    bad = tmp_path / "ok" / "b" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png cannot be decoded"):
        folders.decode_all(folders.scan(tmp_path / "ok").val.paths, 8, None, 1)


def test_resize_policy_is_torchvisions_and_the_runtime_applies_it_as_training_did(tmp_path):
    # torchvision's Resize/CenterCrop size arithmetic, re-derived from its documentation, over Pillow's bilinear
    # filter (what torchvision calls for a PIL image); torchvision itself cannot be installed beside this torch.
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8), "RGB")  # 60 wide, 40 high
    out = fit_source(img, 28, 32)
    # Resize(32): the shorter side (40) becomes 32, the other int(32 * 60 / 40) = 48; CenterCrop(28) then
    expected = img.resize((48, 32), Image.Resampling.BILINEAR, reducing_gap=None).crop((10, 2, 38, 30))
    assert out.size == (28, 28) and np.array_equal(np.asarray(out), np.asarray(expected))
    path = tmp_path / "photo.png"
    img.save(path)
    from runtime.preprocess import decode, to_source
    from runtime.spec import ModelSpec

    spec = ModelSpec("m", "images", "logits", 3, 28, 3, ("a", "b", "c"), (0.5,) * 3, (0.25,) * 3, source_size=28,
                     source_resize=32)
    runtime_img = to_source(decode(path.read_bytes(), "photo", 3), spec)
    assert np.array_equal(runtime_img, folders.load_image(path, 28, 32, 3))
    with pytest.raises(DataError, match="cannot be centre-cropped"):
        folders.load_image(path, 48, 40, 3)  # shorter side 40 -> 40x60, smaller than 48x48


def test_a_tiny_image_that_a_resize_would_blow_up_is_refused_before_pillow_allocates(tmp_path, monkeypatch):
    """A 1x20,000 PNG is a few hundred bytes; its shorter side resized to 256 would be 256x5,120,000 pixels."""
    path = tmp_path / "sliver.png"
    Image.new("L", (1, 20_000), 128).save(path)
    assert path.stat().st_size < 2000
    allocated = []
    real_resize = Image.Image.resize

    def resize(self, size, *args, **kwargs):
        allocated.append(size)
        return real_resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", resize)
    with pytest.raises(DataError, match=r"would be 256x5120000 .* over the 40,000,000-pixel limit"):
        folders.load_image(path, 224, 256, 3)
    from runtime.preprocess import decode, to_source
    from runtime.spec import ModelSpec

    spec = ModelSpec("m", "images", "logits", 3, 224, 3, ("a", "b", "c"), (0.5,) * 3, (0.25,) * 3, source_size=224,
                     source_resize=256)
    with pytest.raises(InvalidInput, match="The image is 1x20000 and would be 256x5120000"):
        to_source(decode(path.read_bytes(), "sliver", 3), spec)
    assert allocated == []  # refused before any resize ran


def test_training_on_a_small_rgb_folder_lowers_the_loss(rgb_ckpt):
    result, ckpt, data = rgb_ckpt
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.best_acc > 0.6  # three classes: chance is 33%
    from train.checkpoint import load_model

    cfg = load_model(ckpt).config
    assert (cfg.in_channels, cfg.num_classes, cfg.source_size, cfg.source_resize) == (3, 3, 32, 32)
    assert cfg.class_names == ("class_0", "class_1", "class_8") and len(set(cfg.mean)) == 3  # per-channel stats
    assert cfg.mean == pytest.approx(data.stats()[0])


def test_init_keeps_the_body_replaces_a_different_head_and_refuses_other_channels(rgb_ckpt, rgb_folder, tmp_path):
    from train.checkpoint import load_model
    from train.model import ModelConfig, build_model
    from train.resume import initialise as _initialise

    _, ckpt, _ = rgb_ckpt
    source = load_model(ckpt)
    logged = []

    class Console:
        def print(self, text):
            logged.append(text)

    model = build_model(replace(source.config, num_classes=5, class_names=()))
    _initialise(model, model.config, ckpt, Console())
    assert torch.equal(model.conv1.weight, source.conv1.weight) and model.fc.out_features == 5
    assert "3-class head is replaced by a new 5-class head" in logged[0]
    gray = build_model(ModelConfig(in_channels=1, num_classes=3))
    with pytest.raises(InvalidInput, match="for 3-channel images, but this run trains .* on 1-channel images"):
        _initialise(gray, gray.config, ckpt, None)
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "train", "--data", str(rgb_folder), "--image-size",
                          "32", "--epochs", "1", "--batch-size", "32", "--limit-train", "64", "--init", str(ckpt),
                          "--out", str(tmp_path / "ft"), "--device", "cpu", "--amp", "none"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    said = " ".join((res.stderr + res.stdout).split())  # rich wraps lines
    assert "every layer, the head included, starts from the checkpoint" in said
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "train", "--data", str(rgb_folder), "--image-size", "32",
                          "--resize", "20", "--out", str(tmp_path / "no")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--resize 20 is smaller than the image size 32" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "no" / "last.pt").exists()


def test_rgb_model_exports_with_its_folder_and_predict_uses_its_policy(rgb_ckpt, rgb_folder, tmp_path):
    _, ckpt, _ = rgb_ckpt
    out = tmp_path / "artifacts"
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "export", str(ckpt), "--out", str(out), "--data",
                          str(rgb_folder), "--precision", "fp32,fp16", "--no-aoti", "--formats", "onnx"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    pre = manifest["preprocessing"]
    assert (pre["channels"], pre["source_size"], pre["source_resize"], pre["color"]) == (3, 32, 32, "RGB")
    assert manifest["evaluation"]["test_images"] == 150 and "image folder" in manifest["evaluation"]["data"]
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "parity", str(out), "--reference", "golden"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    from resnet_edge.images import to_input
    from runtime import load
    from runtime.preprocess import load_image_files

    photo = sorted((rgb_folder / "val" / "class_8").iterdir())[0]
    big = tmp_path / "bag.png"
    Image.open(photo).resize((96, 80)).save(big)  # any size: the manifest's policy brings it to 32x32
    predictor = load(out, backend="onnxruntime")
    x = load_image_files([big], predictor.spec)
    spec = predictor.spec
    assert x.shape == (1, 3, 32, 32)  # exactly what training's folder loader makes of the file
    assert np.array_equal(x, to_input(folders.load_image(big, 32, 32, 3)[None], spec.mean, spec.std, 32))
    top = predictor.predict(big, k=3)[0]
    assert sorted(p.label for p in top) == ["class_0", "class_1", "class_8"]
    assert np.argmax(predictor.logits(x)[0]) == top[0].index
    # the server, on a real socket, with a stock Triton client: 3-channel tensors, and photos through the policy
    import tritonclient.http as http

    from runtime.spec import load_artifacts
    from tests.runtime.test_serve import _start, _stop

    proc, port = _start(load_artifacts(out))
    try:
        client = http.InferenceServerClient(f"127.0.0.1:{port}")
        inp = http.InferInput("images", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        served = client.infer("resnet18", [inp]).as_numpy("logits")
        np.testing.assert_allclose(served, predictor.logits(x), rtol=1e-5, atol=1e-5)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/classify?k=1", data=big.read_bytes(), method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            assert json.loads(r.read())["predictions"][0]["index"] == top[0].index
        gray = np.zeros((1, 1, 32, 32), np.float32)
        bad = http.InferInput("images", list(gray.shape), "FP32")
        bad.set_data_from_numpy(gray)
        with pytest.raises(Exception, match=r"Input shape must be \[N, 3, 32, 32\]"):
            client.infer("resnet18", [bad])
        # loadtest drives any model: shape and preprocessing from the server's metadata, images from the golden set
        # (it used to send 1-channel Fashion-MNIST tensors, every one a 400 here).
        load = [sys.executable, "-m", "resnet_edge", "loadtest", f"http://127.0.0.1:{port}", "--concurrency", "2",
                "--duration", "1s"]
        res = subprocess.run(load + ["--artifacts", str(out), "--json", str(tmp_path / "l.json")],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        (level,) = json.loads((tmp_path / "l.json").read_text())["levels"]
        assert level["requests"] > 10 and level["errors"] == 0
        # Without its artifacts (Fashion-MNIST does not fit it): synthetic inputs from its metadata, said so
        res = subprocess.run(load + ["--json", str(tmp_path / "s.json")], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        report = json.loads((tmp_path / "s.json").read_text())
        assert report["inputs"].startswith("synthetic: random 3-channel") and report["levels"][0]["errors"] == 0
    finally:
        _stop(proc)


def _gray_folder(root, fmnist, layout, per_class=100):
    """Fashion-MNIST classes 0, 1, 8 as gray PNGs: layout "flat" (class folders only) or split folders."""
    imgs, labels = fmnist.train.images.numpy(), fmnist.train.labels.numpy()
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in CLASSES])
    if layout == "flat":
        _write_folder(root, imgs[keep], labels[keep], rgb=False)
    else:
        for i, split in enumerate(layout):
            part = keep[i::len(layout)]
            _write_folder(root / split, imgs[part], labels[part], rgb=False)
    return root


def test_split_folders_are_recognised_and_split_names_are_never_classes(fmnist, tmp_path):
    for layout, (evaluated, validation) in ((("train", "val"), ("val", None)), (("train", "test"), ("test", None)),
                                            (("train", "valid", "test"), ("test", "valid")),
                                            (("train", "validation"), ("validation", None))):
        found = folders.scan(_gray_folder(tmp_path / "-".join(layout), fmnist, layout, 12))
        assert found.classes == ("class_0", "class_1", "class_8") and found.val_name == evaluated
        assert found.validation_name == validation and len(found.train) > 0
    root = _gray_folder(tmp_path / "mixed", fmnist, ("train", "test"), 6)
    (root / "class_3").mkdir()
    with pytest.raises(DataError, match="a class folder 'class_3' beside its split folder"):
        folders.scan(root)
    root = _gray_folder(tmp_path / "named", fmnist, "flat", 6)
    (root / "test").mkdir()
    with pytest.raises(DataError, match="a folder 'test', a split folder name, among its class folders"):
        folders.scan(root)
    with pytest.raises(DataError, match="has train/ but no val/, valid/, validation/ or test/"):
        folders.scan(_gray_folder(tmp_path / "alone", fmnist, ("train",), 6))
    root = _gray_folder(tmp_path / "two", fmnist, ("train", "val", "valid"), 6)
    with pytest.raises(DataError, match="has both val/ and valid/"):
        folders.scan(root)


def test_eval_export_golden_set_and_calibration_follow_the_split_the_checkpoint_recorded(fmnist, tmp_path, monkeypatch):
    """A folder without split folders: training holds out a seeded 10% and carves validation from the rest;
    eval and export read exactly the held-out files, calibration only training files, and decode nothing else."""
    from train.checkpoint import Checkpoint, load_model
    from train.heldout import evaluation_data

    root = _gray_folder(tmp_path / "flat", fmnist, "flat", 40)  # 120 images
    ckpt_dir = tmp_path / "ckpt"
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "train", "--data", str(root), "--epochs", "1",
                          "--batch-size", "32", "--out", str(ckpt_dir), "--device", "cpu"],  # --amp auto: a 3-class probe
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    state = Checkpoint.read(ckpt_dir / "best.pt")
    split = state.split
    held, val = set(split["evaluation"]["files"]), set(split["validation"]["files"])
    assert len(held) == 12 and len(val) == 10 and not held & val  # 10% held out; a tenth of the other 108
    assert state.metrics.test_images == 12
    out = tmp_path / "eval.json"
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "eval", str(ckpt_dir / "best.pt"), "--data", str(root),
                          "--device", "cpu", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["images"] == 12 and "held out at training" in report["evaluated_on"]
    assert report["accuracy"] == pytest.approx(state.metrics.test_acc)
    # Only what is used is decoded: 12 evaluation, 64 calibration and 10 held-out images, not all 120.
    decoded = []
    real = folders.decode_all
    monkeypatch.setattr(folders, "decode_all", lambda paths, *a, **k: decoded.append(paths) or real(paths, *a, **k))
    cfg = load_model(ckpt_dir / "best.pt").config
    data = evaluation_data(cfg, split, folder=root, calib_size=64, heldout_size=100)
    names = [{p.relative_to(root).as_posix() for p in part} for part in decoded]
    assert [len(n) for n in names] == [12, 64, 10] and names[0] == held and names[2] == val
    assert not names[1] & (held | val) and len(data.calibration) == 64
    # A folder this small exports without INT8 (its calibration check applies to INT8 only); the golden set and
    # the evaluation are the held-out files.
    arts = tmp_path / "arts"
    res = subprocess.run([sys.executable, "-m", "resnet_edge", "export", str(ckpt_dir / "best.pt"), "--out", str(arts),
                          "--data", str(root), "--precision", "fp32,fp16", "--no-aoti", "--formats", "onnx"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = json.loads((arts / "manifest.json").read_text())
    assert manifest["evaluation"]["test_images"] == 12 and "held out at training" in manifest["evaluation"]["data"]
    with np.load(arts / "golden.npz") as z:
        golden = z["images"]
    held_images = np.stack([folders.load_image(root / f, 28, None, 1) for f in sorted(held)])
    assert len(golden) == 12 and sorted(map(bytes, golden)) == sorted(map(bytes, held_images))
