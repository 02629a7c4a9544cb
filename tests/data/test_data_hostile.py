"""Unusable data gives one clear DataError, never a traceback or a huge allocation:
folders that cannot be searched, unreadable files, constant pixels, lying headers."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from coarsegrad.cli.main import main
from coarsegrad.data import datasets, idx
from coarsegrad.data import download as dl
from coarsegrad.data.splits import prepare_dataset
from coarsegrad.errors import DataError


def write_constant(folder: Path, value: int, n: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        images_stem, labels_stem = datasets.STEMS[split]
        pixels = np.full((n, 28, 28), value, dtype=np.uint8).tobytes()
        (folder / f"{images_stem}.gz").write_bytes(gzip.compress(struct.pack(">IIII", 2051, n, 28, 28) + pixels))
        (folder / f"{labels_stem}.gz").write_bytes(gzip.compress(struct.pack(">II", 2049, n) + bytes(range(n))))
    return folder


@pytest.mark.parametrize("value", [0, 255])
def test_constant_pixels_are_a_clear_data_error(tmp_path, value):
    folder = write_constant(tmp_path / "mnist", value)
    with pytest.raises(DataError, match=r"all pixels are equal \(std 0"):
        prepare_dataset("mnist", folder)


def test_train_on_constant_pixels_is_one_line_exit_2(tmp_path, capsys):
    folder = write_constant(tmp_path / "mnist", 0)
    code = main(["train", "--data", "mnist", "--data-dir", str(folder), "--steps", "1", "--quiet",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "std 0" in err


def test_header_count_above_the_limit_is_refused_before_reading(tmp_path, monkeypatch):
    """1,369,000 all-zero images compress to 2.6 MB; the count alone refuses them."""
    path = tmp_path / "big.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(struct.pack(">IIII", 2051, idx.MAX_COUNT + 1, 28, 28))
        handle.write(bytes(1 << 16))  # far less than promised: the count is refused first

    def no_allocation(*args: object) -> None:
        raise AssertionError("allocated from a refused header")

    monkeypatch.setattr(idx, "bytearray", no_allocation, raising=False)
    with pytest.raises(DataError, match=f"more than the limit of {idx.MAX_COUNT}"):
        idx.read_idx_images(path)
    with pytest.raises(DataError, match="more than the limit"):
        labels = tmp_path / "labels"
        labels.write_bytes(struct.pack(">II", 2049, idx.MAX_COUNT + 1) + bytes(idx.MAX_COUNT + 1))
        idx.read_idx_labels(labels)


def test_count_at_the_limit_is_accepted():
    head = struct.pack(">IIII", 2051, idx.MAX_COUNT, 28, 28)
    assert idx._parse_header(Path("x"), head, idx.IMAGES_MAGIC) == (idx.MAX_COUNT, 28, 28)


def test_data_dir_that_cannot_be_searched(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "locked"
    folder.mkdir()
    real = Path.is_file

    def is_file(self: Path) -> bool:
        if self.parent == folder:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "is_file", is_file)
    with pytest.raises(DataError, match="cannot be searched"):
        datasets.find_dataset("mnist", folder)
    assert main(["data", "list", "--data-dir", str(folder)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Permission denied" in err


def test_data_dir_that_is_a_file(tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("x")
    assert main(["data", "list", "--data-dir", str(file)]) == 2
    assert main(["data", "list", "--data-dir", str(tmp_path / ("n" * 5000))]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 2 and "Traceback" not in err


def test_data_list_with_one_unreadable_file(tmp_path, monkeypatch, capsys):
    folder = write_constant(tmp_path / "mnist", 7)
    real_open = open
    target = folder / "t10k-labels-idx1-ubyte.gz"

    def guarded_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if Path(file) == target:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded_open)
    monkeypatch.setattr(dl, "CHECKSUMS", {**dl.CHECKSUMS, "mnist": {s: dl.FileSum(10, gz_md5="0" * 32)
                                                                      for s in dl.FILE_STEMS}})
    checks = dl.verify_dataset("mnist", folder=folder)
    assert checks[-1].status == "mismatch" and "Permission denied" in checks[-1].detail
    monkeypatch.setenv("COARSEGRAD_DATA", str(tmp_path / "none"))
    assert main(["data", "list", "--data-dir", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "Permission denied" in out
