"""Hostile servers on 127.0.0.1 (never the internet): bad or negative Content-Length, a
drip of one byte at a time past the deadline, redirects to ftp://, stale .part files."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from coarsegrad.data import download as dl
from coarsegrad.data.download import DownloadError, FileSum, download
from coarsegrad.errors import ConfigError

Respond = Callable[[http.server.BaseHTTPRequestHandler], None]


@pytest.fixture
def serve():
    """serve(respond) -> base URL of a server calling ``respond(handler)`` for every GET."""
    servers = []

    def start(respond: Respond) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                try:
                    respond(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(dl, "CHECKSUMS", {**dl.CHECKSUMS, "mnist": {s: FileSum(100, md5="0" * 32) for s in dl.FILE_STEMS}})


def _headers(length: str) -> Respond:
    def respond(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", length)
        h.end_headers()
        h.wfile.write(b"x" * 10)
    return respond


def _no_dot_files(folder: Path) -> bool:
    return not folder.exists() or not [p for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("length, message", [("abc", "invalid Content-Length"), ("-5", "invalid Content-Length"),
                                             ("1e3", "invalid Content-Length"), ("9" * 400, "announces")])
def test_bad_content_length_is_a_download_error(serve, tiny, tmp_path, length, message):
    url = serve(_headers(length))
    with pytest.raises(DownloadError, match=message):
        download("mnist", tmp_path / "d", url, progress=False, timeout=5)
    assert _no_dot_files(tmp_path / "d")


def test_drip_feed_hits_the_deadline(serve, tiny, tmp_path):
    def drip(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "100")
        h.end_headers()
        for _ in range(100):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.1)

    url = serve(drip)
    started = time.monotonic()
    with pytest.raises(DownloadError, match="deadline of 0.5 s"):
        download("mnist", tmp_path / "d", url, progress=False, timeout=2, deadline=0.5)
    assert time.monotonic() - started < 5
    assert _no_dot_files(tmp_path / "d")


def test_stall_timeout(serve, tiny, tmp_path):
    def stall(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "100")
        h.end_headers()
        h.wfile.flush()
        time.sleep(3)

    url = serve(stall)
    with pytest.raises(DownloadError, match="timed out"):
        download("mnist", tmp_path / "d", url, progress=False, timeout=0.3)


def test_redirect_to_ftp_is_refused(serve, tiny, tmp_path):
    def redirect(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", "ftp://127.0.0.1:9/file.gz")
        h.send_header("Content-Length", "0")
        h.end_headers()

    url = serve(redirect)
    with pytest.raises(DownloadError, match="redirect to 'ftp://127.0.0.1:9/file.gz' refused"):
        download("mnist", tmp_path / "d", url, progress=False, timeout=5)


def test_stale_part_files_are_removed_and_failures_leave_none(serve, tiny, tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    stale = folder / ".train-images-idx3-ubyte.gz.abc123.part"
    stale.write_bytes(b"half a download")
    other = folder / ".notes.part"  # not ours: kept
    other.write_bytes(b"")
    url = serve(_headers("abc"))
    with pytest.raises(DownloadError):
        download("mnist", folder, url, progress=False, timeout=5)
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in folder.iterdir()) == [".notes.part"]


@pytest.mark.parametrize("kwargs", [{"timeout": 0}, {"deadline": float("nan")}, {"timeout": True}])
def test_limits_are_validated(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        download("mnist", tmp_path / "d", "http://127.0.0.1:9/", progress=False, **kwargs)


def test_check_file_unreadable_is_a_mismatch(tmp_path, monkeypatch):
    path = tmp_path / "f.gz"
    path.write_bytes(b"\x1f\x8b")

    def deny(*args: object, **kwargs: object) -> bool:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(dl, "is_gzip", deny)
    check = dl.check_file(path, FileSum(4, gz_md5="0" * 32))
    assert check.status == "mismatch" and "Permission denied" in check.detail
