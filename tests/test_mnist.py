"""The MNIST reader refuses bad files by name; the downloader fills a cache from mirrors.

Bad files are built in tmp_path from the shared good ones. Downloads go to a threaded HTTP server
on 127.0.0.1 (port 0) that serves the shared files, and can serve a corrupt copy, answer 404, or
drop the connection halfway through a body to exercise retry + Range resume.
"""

import gzip
import re
import shutil
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from training.mnist import (
    DATA_DIR_ENV,
    FILES,
    TEST_LABELS,
    TRAIN_IMAGES,
    MnistError,
    download,
    load_mnist,
    read_idx,
    resolve_data_dir,
)

OFFICIAL_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_good_files_load_with_official_shapes_and_counts(mnist_dir: Path) -> None:
    data = load_mnist(mnist_dir)
    assert data.train.images.shape == (60_000, 1, 28, 28)
    assert data.train.images.dtype == torch.uint8
    assert data.test.images.shape == (10_000, 1, 28, 28)
    assert data.train.labels.shape == (60_000,)
    assert data.test.labels.shape == (10_000,)
    assert torch.bincount(data.train.labels).tolist() == OFFICIAL_TRAIN_COUNTS
    assert int(data.train.images.max()) == 255


def _write_gz(path: Path, raw: bytes) -> Path:
    path.write_bytes(gzip.compress(raw))
    return path


def _good_raw(mnist_dir: Path, name: str) -> bytes:
    return gzip.decompress((mnist_dir / name).read_bytes())


def test_corrupted_byte_is_refused_by_checksum(mnist_dir: Path, tmp_path: Path) -> None:
    raw = bytearray(_good_raw(mnist_dir, TEST_LABELS.name))
    raw[100] = (raw[100] + 1) % 10  # still a valid digit: only the checksum can tell
    bad = _write_gz(tmp_path / TEST_LABELS.name, bytes(raw))
    with pytest.raises(MnistError, match=r"t10k-labels-idx1-ubyte\.gz: corrupt: SHA-256"):
        read_idx(bad, TEST_LABELS)


def test_wrong_magic_is_refused(mnist_dir: Path, tmp_path: Path) -> None:
    raw = struct.pack(">I", 2051) + _good_raw(mnist_dir, TEST_LABELS.name)[4:]
    bad = _write_gz(tmp_path / TEST_LABELS.name, raw)
    with pytest.raises(MnistError, match=r"t10k-labels.*wrong magic number 2051, expected 2049"):
        read_idx(bad, TEST_LABELS)


def test_truncated_gzip_is_refused(mnist_dir: Path, tmp_path: Path) -> None:
    good = (mnist_dir / TRAIN_IMAGES.name).read_bytes()
    bad = tmp_path / TRAIN_IMAGES.name
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(MnistError, match=r"train-images-idx3-ubyte\.gz: truncated"):
        read_idx(bad, TRAIN_IMAGES)


def test_truncated_content_is_refused(mnist_dir: Path, tmp_path: Path) -> None:
    raw = _good_raw(mnist_dir, TEST_LABELS.name)[:-10]
    bad = _write_gz(tmp_path / TEST_LABELS.name, raw)
    with pytest.raises(MnistError, match=r"t10k-labels.*truncated: 9998 decompressed bytes"):
        read_idx(bad, TEST_LABELS)


def test_not_gzip_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / TEST_LABELS.name
    bad.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(MnistError, match=r"t10k-labels.*not a valid gzip file"):
        read_idx(bad, TEST_LABELS)


def test_load_names_the_bad_file_among_good_ones(mnist_dir: Path, tmp_path: Path) -> None:
    for spec in FILES:
        shutil.copy(mnist_dir / spec.name, tmp_path / spec.name)
    (tmp_path / TEST_LABELS.name).write_bytes(b"\x1f\x8b")
    with pytest.raises(MnistError, match=str(tmp_path / TEST_LABELS.name)):
        load_mnist(tmp_path)


class _Mirror(ThreadingHTTPServer):
    """Serves ``files`` (URL path -> bytes) with Range support; can cut bodies short once."""

    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), _MirrorHandler)
        self.files = files
        self.cut_once: set[str] = set()  # paths whose next body stops halfway, then disconnects
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)

    def url(self, prefix: str) -> str:
        return f"http://127.0.0.1:{self.server_port}/{prefix}/"


class _MirrorHandler(BaseHTTPRequestHandler):
    server: _Mirror

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Range")))
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        start = int(match[1]) if match else 0
        body = data[start:]
        self.send_response(206 if match else 200)
        if match:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in self.server.cut_once:
            self.server.cut_once.discard(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirror(mnist_dir: Path) -> Iterator[_Mirror]:
    files = {f"/good/{s.name}": (mnist_dir / s.name).read_bytes() for s in FILES}
    server = _Mirror(files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_download_fills_an_empty_cache(
    mirror: _Mirror, mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    cache = tmp_path / "cache"
    assert resolve_data_dir(None, cache, mirrors=[mirror.url("good")]) == cache
    for spec in FILES:
        assert (cache / spec.name).read_bytes() == (mnist_dir / spec.name).read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == sorted(s.name for s in FILES)
    assert load_mnist(cache).test.labels.shape == (10_000,)
    # A full cache is used as is: no second download.
    served = len(mirror.requests)
    resolve_data_dir(None, cache, mirrors=[mirror.url("good")])
    assert len(mirror.requests) == served


def test_corrupt_served_file_is_refused(mirror: _Mirror, mnist_dir: Path, tmp_path: Path) -> None:
    raw = bytearray(_good_raw(mnist_dir, TEST_LABELS.name))
    raw[500] = (raw[500] + 1) % 10
    mirror.files[f"/bad/{TEST_LABELS.name}"] = gzip.compress(bytes(raw))
    with pytest.raises(MnistError, match=r"t10k-labels-idx1-ubyte\.gz.*corrupt: SHA-256"):
        download(TEST_LABELS, tmp_path, mirrors=[mirror.url("bad")])
    assert list(tmp_path.iterdir()) == []  # neither the file nor its .part is left behind


def test_interrupted_download_resumes_with_range(
    mirror: _Mirror, mnist_dir: Path, tmp_path: Path
) -> None:
    path = f"/good/{TRAIN_IMAGES.name}"
    mirror.cut_once.add(path)
    target = download(TRAIN_IMAGES, tmp_path, mirrors=[mirror.url("good")])
    assert target.read_bytes() == (mnist_dir / TRAIN_IMAGES.name).read_bytes()
    ranges = [rng for p, rng in mirror.requests if p == path]
    assert len(ranges) == 2 and ranges[0] is None and ranges[1].startswith("bytes=")
    assert int(ranges[1].removeprefix("bytes=").rstrip("-")) > 0


def test_next_mirror_is_tried_when_one_fails(mirror: _Mirror, tmp_path: Path) -> None:
    target = download(TEST_LABELS, tmp_path, mirrors=[mirror.url("missing"), mirror.url("good")])
    assert read_idx(target, TEST_LABELS).shape == (10_000,)
    assert [p.split("/")[1] for p, _ in mirror.requests] == ["missing", "good"]


def test_explicit_data_dir_is_never_downloaded_into(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "from-env"))
    unreachable = ["http://127.0.0.1:9/"]
    assert resolve_data_dir(tmp_path / "flag", mirrors=unreachable) == tmp_path / "flag"
    assert resolve_data_dir(None, mirrors=unreachable) == tmp_path / "from-env"
