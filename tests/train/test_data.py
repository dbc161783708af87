import gzip

import numpy as np
import pytest
import torch

from resnet_edge.errors import DataError
from resnet_edge.fmnist import CLASS_NAMES, candidate_dirs, locate, read_idx
from tests.conftest import write_idx
from train.data import Augment, Split, augment_batch, iterate_batches, load_fashion_mnist, to_input


@pytest.mark.parametrize("name", ["imgs-idx3-ubyte", "imgs-idx3-ubyte.gz"])
def test_idx_round_trip_raw_and_gzip(tmp_path, name):
    arr = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    got = read_idx(write_idx(tmp_path / name, arr))
    assert got.dtype == np.uint8 and np.array_equal(got, arr)


def test_idx_bad_magic(tmp_path):
    (tmp_path / "x").write_bytes(b"\x12\x34\x08\x01" + b"\0" * 8)
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "x")


def test_idx_truncated_payload(tmp_path):
    arr = np.zeros((4, 28, 28), np.uint8)
    path = write_idx(tmp_path / "t", arr)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"needs 3136"):
        read_idx(path)


def test_idx_truncated_gzip(tmp_path):
    path = write_idx(tmp_path / "t.gz", np.zeros((50, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match="Cannot read IDX file"):
        read_idx(path)


def test_idx_unsupported_dtype(tmp_path):
    (tmp_path / "f").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01" + b"\0" * 4)
    with pytest.raises(DataError, match="unsupported IDX type 0x0d"):
        read_idx(tmp_path / "f")


def _write_dataset(d, n_train=60_000, n_test=10_000, n_train_labels=None):
    rng = np.random.default_rng(1)
    write_idx(d / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8))
    write_idx(d / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, (n_train_labels or n_train,), dtype=np.uint8))
    write_idx(d / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8))
    write_idx(d / "t10k-labels-idx1-ubyte", rng.integers(0, 10, (n_test,), dtype=np.uint8))


def test_load_from_user_directory_mixing_gzip_and_raw(tmp_path):
    _write_dataset(tmp_path)
    ds = load_fashion_mnist(tmp_path)
    assert ds.train.images.shape == (60_000, 28, 28) and ds.train.images.dtype == torch.uint8
    assert ds.test.labels.dtype == torch.int64 and len(ds.test) == 10_000
    assert ds.class_names == CLASS_NAMES and len(ds.sha256) == 64


def test_counts_that_do_not_belong_together(tmp_path):
    _write_dataset(tmp_path, n_train=60_000, n_train_labels=59_999)
    with pytest.raises(DataError, match="do not belong together"):
        load_fashion_mnist(tmp_path)


def test_wrong_count_is_rejected(tmp_path):
    _write_dataset(tmp_path, n_train=600)
    with pytest.raises(DataError, match="Fashion-MNIST has 60000"):
        load_fashion_mnist(tmp_path)


def test_missing_dataset_names_every_path_tried(tmp_path, monkeypatch):
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("resnet_edge.fmnist.SYSTEM_DIR", tmp_path / "nowhere")
    with pytest.raises(DataError) as info:
        locate()
    msg = str(info.value)
    for part in ("data/fashion-mnist", "data/FashionMNIST/raw", "nowhere", "apt-get install dataset-fashion-mnist"):
        assert part in msg
    assert "\n" not in msg


def test_search_order_env_then_local_then_torchvision(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    assert [str(d) for d in candidate_dirs()[:2]] == ["data/fashion-mnist", "data/FashionMNIST/raw"]
    tv = tmp_path / "data" / "FashionMNIST" / "raw"
    tv.mkdir(parents=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tv / stem).write_bytes(b"")
    assert locate()["train_images"].parent.resolve() == tv.resolve()
    env = tmp_path / "env"
    env.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (env / (stem + ".gz")).write_bytes(b"")
    monkeypatch.setenv("FASHION_MNIST_DIR", str(env))
    assert locate()["test_labels"] == env / "t10k-labels-idx1-ubyte.gz"
    assert candidate_dirs() == [env]


def test_corrupt_gzip_in_dataset_dir(tmp_path):
    _write_dataset(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"garbage")[:-4])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        load_fashion_mnist(tmp_path)


def test_batches_cover_every_sample_once_and_shard_by_rank():
    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1).expand(100, 28, 28).contiguous()
    split = Split(images, torch.arange(100))
    seen = torch.cat([y for _, y in iterate_batches(split, 32, mean=0, std=1, shuffle=True, seed=3)])
    assert sorted(seen.tolist()) == list(range(100))
    shards = [torch.cat([y for _, y in iterate_batches(split, 16, mean=0, std=1, shuffle=True, seed=3,
                                                       rank=r, world_size=2)]) for r in (0, 1)]
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
    assert len(shards[0]) + len(shards[1]) == 100


def test_each_rank_draws_its_own_augmentation():
    # Every image is the same left-heavy picture, so a batch shows exactly which images were flipped.
    img = torch.zeros(28, 28, dtype=torch.uint8)
    img[:, :5] = 255
    split = Split(img.expand(256, 28, 28).contiguous(), torch.arange(256))
    aug = Augment(crop_padding=0, hflip=True)

    def flips(rank):
        return torch.cat([(x[:, 0, 0, 0] < x[:, 0, 0, -1]) for x, _ in iterate_batches(
            split, 64, mean=0, std=1, shuffle=True, seed=7, augment=aug, rank=rank, world_size=2)])

    a, b = flips(0), flips(1)
    assert 0 < a.sum() < len(a) and 0 < b.sum() < len(b)  # both ranks flip about half
    assert not torch.equal(a, b)  # but not the same half
    assert torch.equal(a, flips(0))  # and each rank is reproducible


def test_same_seed_same_batches_other_seed_other_order():
    split = Split(torch.randint(0, 255, (64, 28, 28), dtype=torch.uint8), torch.arange(64))
    def run(seed):
        return [x for x, _ in iterate_batches(split, 16, mean=0.3, std=0.3, shuffle=True, seed=seed, augment=Augment())]
    assert all(torch.equal(a, b) for a, b in zip(run(5), run(5)))
    assert not all(torch.equal(a, b) for a, b in zip(run(5), run(6)))


def test_augment_crop_is_a_shift_and_flip_mirrors():
    img = torch.zeros(1, 28, 28, dtype=torch.uint8)
    img[0, 10, 12] = 255
    gen = torch.Generator().manual_seed(0)
    outs = torch.cat([augment_batch(img, Augment(crop_padding=2, hflip=True), gen) for _ in range(200)])
    ys, xs = (outs == 255).nonzero()[:, 1], (outs == 255).nonzero()[:, 2]
    assert len(ys) == 200  # the pixel is never lost with padding 2
    assert set(ys.tolist()) == set(range(8, 13))
    assert set(xs.tolist()) == set(range(10, 15)) | {27 - x for x in range(10, 15)}


def test_random_erasing_blanks_a_rectangle():
    imgs = torch.full((64, 28, 28), 200, dtype=torch.uint8)
    out = augment_batch(imgs, Augment(crop_padding=0, hflip=False, erase_prob=1.0), torch.Generator().manual_seed(1))
    zero = out == 0
    for mask in zero:  # exactly one filled axis-aligned rectangle of 2-25% of the image (up to rounding)
        rows, cols = mask.any(1), mask.any(0)
        assert torch.equal(mask, rows[:, None] & cols[None, :])
        r, c = rows.nonzero().flatten(), cols.nonzero().flatten()
        assert torch.equal(r, torch.arange(r[0], r[-1] + 1)) and torch.equal(c, torch.arange(c[0], c[-1] + 1))
        assert 0.01 * 784 <= mask.sum() <= 0.3 * 784
    assert (out[~zero] == 200).all()  # nothing else touched
    kept = augment_batch(imgs, Augment(crop_padding=0, hflip=False, erase_prob=0.0), torch.Generator().manual_seed(1))
    assert torch.equal(kept, imgs)


def test_to_input_normalises_and_resizes():
    imgs = torch.full((2, 28, 28), 255, dtype=torch.uint8)
    x = to_input(imgs, mean=0.5, std=0.25, image_size=96)
    assert x.shape == (2, 1, 96, 96) and x.dtype == torch.float32
    assert torch.allclose(x, torch.full_like(x, 2.0))


def test_real_fashion_mnist(fmnist):
    assert len(fmnist.train) == 60_000 and len(fmnist.test) == 10_000
    assert torch.bincount(fmnist.test.labels).tolist() == [1000] * 10
    mean, std = fmnist.stats()
    assert 0.28 < mean < 0.29 and 0.35 < std < 0.36
