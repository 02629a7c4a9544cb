"""Dataset lookup, loading, normalisation and ``coarsegrad data list``; real MNIST and
Fashion-MNIST facts when the files are there (MNIST must be found if COARSEGRAD_DATA is set)."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import coarsegrad as cg
from coarsegrad.cli.main import main
from coarsegrad.data import datasets
from coarsegrad.data.download import verify_dataset
from coarsegrad.data.splits import pixel_mean_std
from coarsegrad.errors import ConfigError, DataError

FMNIST_APT_DIR = Path("/usr/share/datasets/fashion-mnist")


def write_dataset(folder: Path, tag: int, gz: bool = True, n_train: int = 12, n_test: int = 6) -> Path:
    """Four small IDX files; every label of the train split is ``tag`` (to tell copies apart)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(tag)
    for split, n in (("train", n_train), ("test", n_test)):
        images_stem, labels_stem = datasets.STEMS[split]
        pixels = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8).tobytes()
        labels = bytes([tag] * n) if split == "train" else bytes(i % 10 for i in range(n))
        for stem, blob in ((images_stem, struct.pack(">IIII", 2051, n, 28, 28) + pixels),
                           (labels_stem, struct.pack(">II", 2049, n) + labels)):
            if gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(blob, mtime=0))
            else:
                (folder / stem).write_bytes(blob)
    return folder


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No COARSEGRAD_DATA, an empty cache and an empty system folder."""
    monkeypatch.delenv("COARSEGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "SYSTEM_DIR", tmp_path / "system")
    return tmp_path


def source_tag(data_dir=None, name="kmnist") -> int:
    return int(cg.load_dataset(name, "train", data_dir)[1][0])


def test_bad_name_and_split():
    with pytest.raises(ConfigError, match="valid: mnist, fashion-mnist, kmnist"):
        cg.load_dataset("cifar10", "train")
    with pytest.raises(ConfigError, match="valid: train, test"):
        cg.load_dataset("mnist", "validation")


def test_lookup_order(isolated, monkeypatch):
    root = isolated
    write_dataset(root / "system" / "kmnist", 1)
    assert source_tag() == 1
    write_dataset(root / "cache" / "coarsegrad" / "kmnist", 2)
    assert source_tag() == 2
    write_dataset(root / "env" / "kmnist", 3)
    monkeypatch.setenv("COARSEGRAD_DATA", str(root / "env"))
    assert source_tag() == 3
    write_dataset(root / "arg" / "kmnist", 4)
    assert source_tag(root / "arg") == 4
    write_dataset(root / "arg", 5)  # files directly in data_dir beat data_dir/<name>/
    assert source_tag(root / "arg") == 5
    assert datasets.find_dataset("kmnist", root / "arg") == root / "arg"


def test_uncompressed_and_torchvision_layout(isolated):
    write_dataset(isolated / "plain", 6, gz=False)
    images, labels = cg.load_dataset("kmnist", "test", isolated / "plain")
    assert images.shape == (6, 28, 28) and labels.tolist() == [0, 1, 2, 3, 4, 5]
    write_dataset(isolated / "tv" / "FashionMNIST" / "raw", 7)
    assert source_tag(isolated / "tv", "fashion-mnist") == 7


def test_incomplete_folder_is_not_a_dataset(isolated):
    folder = write_dataset(isolated / "part", 1)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    assert datasets.find_dataset("mnist", folder) is None


def test_not_found_says_where_and_how(isolated):
    with pytest.raises(DataError) as info:
        cg.load_dataset("mnist", "train", isolated)
    message = str(info.value)
    for place in datasets.candidate_dirs("mnist", isolated):
        assert str(place) in message
    for fix in ("COARSEGRAD_DATA", "--data-dir", "coarsegrad data download mnist"):
        assert fix in message
    with pytest.raises(DataError, match="does not exist"):
        cg.load_dataset("mnist", "train", isolated / "missing")


def test_malformed_file_in_dataset_names_it(isolated):
    folder = write_dataset(isolated / "bad", 1)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(struct.pack(">II", 2049, 11) + bytes(11)))
    with pytest.raises(DataError, match="12 images but 11 labels"):
        cg.load_dataset("mnist", "train", folder)


def test_prepare_dataset_normalises_with_train_statistics(isolated):
    folder = write_dataset(isolated / "small", 3, n_train=40, n_test=10)
    splits = cg.prepare_dataset("kmnist", folder, dtype=torch.float64)
    train_u8, y_train = cg.load_dataset("kmnist", "train", folder)
    test_u8, _ = cg.load_dataset("kmnist", "test", folder)
    pixels = train_u8.numpy().astype(np.float64) / 255  # oracle: NumPy over every pixel
    assert splits.mean == pytest.approx(pixels.mean(), abs=1e-12)
    assert splits.std == pytest.approx(pixels.std(), abs=1e-12)
    assert splits.x_train.shape == (40, 784) and splits.x_train.dtype == torch.float64
    expected = (test_u8.numpy().reshape(10, 784) / 255 - splits.mean) / splits.std
    assert np.allclose(splits.x_test.numpy(), expected, atol=1e-12)
    assert float(splits.x_train.mean()) == pytest.approx(0.0, abs=1e-9)
    assert torch.equal(splits.y_train, y_train)
    view = splits.images("test")
    assert view.shape == (10, 1, 28, 28) and view.data_ptr() == splits.x_test.data_ptr()
    record = splits.record()
    assert record["n_train"] == 40 and record["source"] == str(folder) and record["std"] == splits.std


def test_pixel_mean_std_matches_numpy():
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8))
    mean, std = pixel_mean_std(images)
    ref = images.numpy().astype(np.float64) / 255
    assert mean == pytest.approx(ref.mean(), abs=1e-12) and std == pytest.approx(ref.std(), abs=1e-12)


def test_cli_data_list(isolated, monkeypatch, capsys):
    write_dataset(isolated / "env" / "mnist", 1)
    monkeypatch.setenv("COARSEGRAD_DATA", str(isolated / "env"))
    assert main(["data", "list", "--no-verify"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["mnist", str(isolated / "env" / "mnist"), "found", "(not", "verified)"]
    assert out[1].split() == ["fashion-mnist", "not", "found"]
    assert main(["data", "list"]) == 1  # synthetic files fail the real checksums
    assert "CHECKSUM MISMATCH" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["data", "list", "--data-dir", "/nonexistent/coarsegrad"],
                                  ["data", "download", "cifar10"], ["data"], ["data", "frobnicate"],
                                  ["data", "download", "mnist", "--base-url", "ftp://example.org/"]])
def test_cli_bad_input_is_one_line_exit_2(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


# --- real data ------------------------------------------------------------------------

def real_mnist() -> Path:
    folder = datasets.find_dataset("mnist")
    if folder is None:
        if os.environ.get("COARSEGRAD_DATA"):
            pytest.fail(datasets.not_found_message("mnist"))
        pytest.skip("MNIST not found (set COARSEGRAD_DATA, e.g. to /work/shared/data)")
    return folder


@pytest.fixture(scope="module")
def mnist_train():
    return cg.load_dataset("mnist", "train", real_mnist())


def test_real_mnist_train(mnist_train):
    images, labels = mnist_train
    assert images.shape == (60000, 28, 28) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert labels[-5:].tolist() == [8, 3, 5, 6, 8]
    assert torch.bincount(labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert int(images.sum(dtype=torch.int64)) == 1_567_298_545  # mean 33.3184
    assert float(images.double().mean()) == pytest.approx(33.3184, abs=5e-5)
    mean, std = pixel_mean_std(images)
    assert (round(mean, 4), round(std, 4)) == (0.1307, 0.3081)


def test_real_mnist_test_split_and_checksums():
    images, labels = cg.load_dataset("mnist", "test", real_mnist())
    assert images.shape == (10000, 28, 28)
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert [c.status for c in verify_dataset("mnist", folder=real_mnist())] == ["ok"] * 4


def test_real_fashion_mnist_from_apt():
    if not datasets.holds_dataset(FMNIST_APT_DIR):
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    splits = cg.prepare_dataset("fashion-mnist", FMNIST_APT_DIR)
    assert splits.x_train.shape == (60000, 784) and splits.x_test.shape == (10000, 784)
    assert splits.y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert splits.y_test[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert torch.bincount(splits.y_train).tolist() == [6000] * 10
    assert (round(splits.mean, 4), round(splits.std, 4)) == (0.2860, 0.3530)
    assert [c.status for c in verify_dataset("fashion-mnist", folder=FMNIST_APT_DIR)] == ["ok"] * 4
