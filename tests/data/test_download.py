"""Downloads from a local HTTP server on 127.0.0.1 (never the internet): success,
checksum mismatch, HTTP errors, cut transfers, mirror fallback; nothing partial is left."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

import coarsegrad as cg
from coarsegrad.cli.main import main
from coarsegrad.data import datasets
from coarsegrad.data import download as dl
from coarsegrad.data.download import DownloadError, FileSum, download, verify_dataset
from coarsegrad.errors import ConfigError

REAL_MNIST = Path("/work/shared/data/mnist")


def synthetic_files(n_train: int = 10, n_test: int = 4) -> dict[str, bytes]:
    """Decompressed IDX bytes of a small dataset, keyed by file stem."""
    rng = np.random.default_rng(0)
    files = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images_stem, labels_stem = datasets.STEMS[split]
        pixels = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8).tobytes()
        files[images_stem] = struct.pack(">IIII", 2051, n, 28, 28) + pixels
        files[labels_stem] = struct.pack(">II", 2049, n) + bytes(i % 10 for i in range(n))
    return files


def sums_of(files: dict[str, bytes], gz_only: bool = False) -> dict[str, FileSum]:
    if gz_only:
        return {s: FileSum(len(b), gz_md5=hashlib.md5(gzip.compress(b, mtime=0)).hexdigest())
                for s, b in files.items()}
    return {s: FileSum(len(b), hashlib.md5(b).hexdigest(), hashlib.sha256(b).hexdigest())
            for s, b in files.items()}


class Server:
    """Serves ``routes`` {url path: (status, body, mode)}; mode "cut" announces the full
    Content-Length but sends half the body and closes. Counts requests per path."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes, str]] = {}
        self.hits: dict[str, int] = {}
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits[self.path] = owner.hits.get(self.path, 0) + 1
                status, body, mode = owner.routes.get(self.path, (404, b"not found", "full"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if mode == "cut" else body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def serve(self, prefix: str, files: dict[str, bytes], status: int = 200, mode: str = "full") -> None:
        for stem, raw in files.items():
            self.routes[f"{prefix}{stem}.gz"] = (status, gzip.compress(raw, mtime=0), mode)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def synthetic(monkeypatch):
    """The synthetic dataset's checksums stand in for MNIST's."""
    files = synthetic_files()
    monkeypatch.setattr(dl, "CHECKSUMS", {**dl.CHECKSUMS, "mnist": sums_of(files)})
    return files


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_success_then_cached(server, synthetic, tmp_path):
    server.serve("/m/", synthetic)
    folder = download("mnist", tmp_path / "d", server.url + "/m", progress=False)
    assert leftovers(folder) == sorted(f"{s}.gz" for s in datasets.FILE_STEMS)
    assert [c.status for c in verify_dataset("mnist", folder=folder)] == ["ok"] * 4
    images, labels = cg.load_dataset("mnist", "train", folder)
    assert images.shape == (10, 28, 28) and labels.tolist() == [i % 10 for i in range(10)]
    download("mnist", folder, server.url + "/m/", progress=False)  # verified files are kept
    assert set(server.hits.values()) == {1}


def test_default_destination_is_the_cache(server, synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    server.serve("/", synthetic)
    assert download("mnist", base_url=server.url, progress=False) == tmp_path / "cache" / "coarsegrad" / "mnist"


def test_checksum_mismatch_leaves_nothing(server, synthetic, tmp_path):
    wrong = dict(synthetic, **{"t10k-images-idx3-ubyte": synthetic["t10k-images-idx3-ubyte"][:-1] + b"\x01"})
    server.serve("/", wrong)
    with pytest.raises(DownloadError, match="t10k-images-idx3-ubyte.gz: checksum mismatch"):
        download("mnist", tmp_path / "d", server.url, progress=False)
    assert "t10k-images-idx3-ubyte.gz" not in leftovers(tmp_path / "d")
    assert not [n for n in leftovers(tmp_path / "d") if n.startswith(".")]
    assert not datasets.holds_dataset(tmp_path / "d")


@pytest.mark.parametrize("status", [404, 500])
def test_http_error(server, synthetic, tmp_path, status):
    server.serve("/", synthetic, status=status)
    with pytest.raises(DownloadError, match=f"HTTP {status}"):
        download("mnist", tmp_path / "d", server.url, progress=False)
    assert leftovers(tmp_path / "d") == []


def test_cut_transfer(server, synthetic, tmp_path):
    server.serve("/", synthetic, mode="cut")
    with pytest.raises(DownloadError, match="transfer"):
        download("mnist", tmp_path / "d", server.url, progress=False)
    assert leftovers(tmp_path / "d") == []


def test_oversized_transfer_is_refused(server, monkeypatch, tmp_path):
    files = synthetic_files()
    small = {s: FileSum(4) for s in files}  # sizes far below what the server sends
    monkeypatch.setattr(dl, "CHECKSUMS", {**dl.CHECKSUMS, "mnist": small})
    server.routes["/train-images-idx3-ubyte.gz"] = (200, bytes(2 << 20), "full")
    with pytest.raises(DownloadError, match="announces"):
        download("mnist", tmp_path / "d", server.url, progress=False)
    assert leftovers(tmp_path / "d") == []


def test_mirror_fallback(server, synthetic, tmp_path, monkeypatch):
    server.serve("/good/", synthetic)
    monkeypatch.setattr(dl, "MIRRORS", {**dl.MIRRORS, "mnist": (server.url + "/bad/", server.url + "/good/")})
    folder = download("mnist", tmp_path / "d", progress=False)
    assert datasets.holds_dataset(folder)
    assert server.hits["/bad/train-images-idx3-ubyte.gz"] == 1


def test_gz_only_checksums_as_for_kmnist(server, tmp_path, monkeypatch):
    files = synthetic_files()
    monkeypatch.setattr(dl, "CHECKSUMS", {**dl.CHECKSUMS, "kmnist": sums_of(files, gz_only=True)})
    server.serve("/", files)
    folder = download("kmnist", tmp_path / "k", server.url, progress=False)
    assert [c.status for c in verify_dataset("kmnist", folder=folder)] == ["ok"] * 4
    plain = tmp_path / "plain"
    plain.mkdir()
    for stem, raw in files.items():
        (plain / stem).write_bytes(raw)
    assert {c.status for c in verify_dataset("kmnist", folder=plain)} == {"unverifiable"}


def test_unreachable_server_and_bad_url(tmp_path):
    with pytest.raises(DownloadError, match="127.0.0.1:9/"):
        download("mnist", tmp_path / "d", "http://127.0.0.1:9/", progress=False, timeout=5)
    with pytest.raises(ConfigError, match="base_url"):
        download("mnist", tmp_path / "d", "file:///etc/")


def test_real_mnist_bytes_verify(server, tmp_path):
    """The recompressed shared MNIST .gz files pass: checks are on decompressed bytes."""
    if not datasets.holds_dataset(REAL_MNIST):
        pytest.skip(f"no MNIST at {REAL_MNIST}")
    for stem in datasets.FILE_STEMS:
        server.routes[f"/mnist/{stem}.gz"] = (200, (REAL_MNIST / f"{stem}.gz").read_bytes(), "full")
    folder = download("mnist", tmp_path / "d", server.url + "/mnist/", progress=False)
    assert [c.status for c in verify_dataset("mnist", folder=folder)] == ["ok"] * 4


def test_cli_download(server, synthetic, tmp_path, capsys):
    server.serve("/", synthetic)
    assert main(["data", "download", "mnist", "--dest", str(tmp_path / "d"), "--base-url", server.url]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"mnist: {tmp_path / 'd'}"
    assert "verified" in captured.err and "Traceback" not in captured.err


def test_cli_download_failure_is_one_line_exit_1(server, synthetic, tmp_path, capsys):
    code = main(["data", "download", "mnist", "--dest", str(tmp_path / "d"), "--base-url", server.url + "/x"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and "HTTP 404" in err
    assert "Traceback" not in err
