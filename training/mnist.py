"""MNIST: read the four official IDX files, verify them, and download them when they are missing.

Every file is checked three ways before a single pixel is used: the IDX header (magic number,
count, image size), the length the header implies, and the SHA-256 of the decompressed bytes
against the published values. A wrong, truncated or corrupt file is refused with a MnistError
that names the file and the problem, so a bad mirror or a half-finished download can never train
(or evaluate) a model silently.

Where the files come from: an explicit directory (--data-dir or S4_DATA_DIR) is used as is; it is
never written to. Otherwise a cache directory is filled from public mirrors with httpx: each file
streams into ``<name>.part``, a dropped connection resumes with an HTTP Range request, and the
file is only renamed into place once its checksum matches.
"""

import gzip
import hashlib
import os
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch
from tqdm import tqdm

DATA_DIR_ENV = "S4_DATA_DIR"

# Tried in order; the same mirrors that public loaders (e.g. torchvision) use.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049


@dataclass(frozen=True)
class IdxFile:
    name: str
    magic: int
    count: int
    sha256: str  # of the decompressed IDX bytes (shared/data/mnist/README.md)


TRAIN_IMAGES = IdxFile(
    "train-images-idx3-ubyte.gz",
    IMAGE_MAGIC,
    60_000,
    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
)
TRAIN_LABELS = IdxFile(
    "train-labels-idx1-ubyte.gz",
    LABEL_MAGIC,
    60_000,
    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
)
TEST_IMAGES = IdxFile(
    "t10k-images-idx3-ubyte.gz",
    IMAGE_MAGIC,
    10_000,
    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
)
TEST_LABELS = IdxFile(
    "t10k-labels-idx1-ubyte.gz",
    LABEL_MAGIC,
    10_000,
    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
)
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


class MnistError(Exception):
    """An MNIST file is missing, malformed or fails its checksum; the message names the file."""


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 [N, 1, 28, 28], 0 = background, 255 = ink
    labels: torch.Tensor  # int64 [N], 0..9


@dataclass(frozen=True)
class Mnist:
    train: Split
    test: Split
    source: Path
    checksums: dict[str, str]  # file name -> SHA-256 of its decompressed bytes (all verified)


def read_idx(path: Path, spec: IdxFile) -> torch.Tensor:
    """Decompress, validate and return one IDX file as a uint8 tensor ([N, 28, 28] or [N])."""
    raw = _decompress(path)
    if len(raw) < 8:
        raise MnistError(f"{path}: truncated: {len(raw)} bytes is shorter than an IDX header")
    magic, count = struct.unpack(">II", raw[:8])
    if magic != spec.magic:
        kind = "image (idx3)" if spec.magic == IMAGE_MAGIC else "label (idx1)"
        raise MnistError(f"{path}: wrong magic number {magic}, expected {spec.magic} for {kind}")
    if count != spec.count:
        raise MnistError(f"{path}: header says {count} items, expected {spec.count}")
    if spec.magic == IMAGE_MAGIC:
        if len(raw) < 16:
            raise MnistError(f"{path}: truncated: the image header needs 16 bytes")
        rows, cols = struct.unpack(">II", raw[8:16])
        if (rows, cols) != (28, 28):
            raise MnistError(f"{path}: images are {rows}x{cols}, expected 28x28")
        header, shape = 16, (count, 28, 28)
    else:
        header, shape = 8, (count,)
    expected_len = header + count * (784 if spec.magic == IMAGE_MAGIC else 1)
    if len(raw) != expected_len:
        problem = "truncated" if len(raw) < expected_len else "has trailing bytes"
        raise MnistError(
            f"{path}: {problem}: {len(raw)} decompressed bytes, the header implies {expected_len}"
        )
    digest = hashlib.sha256(raw).hexdigest()
    if digest != spec.sha256:
        raise MnistError(
            f"{path}: corrupt: SHA-256 of the decompressed bytes is {digest}, "
            f"expected {spec.sha256}"
        )
    data = torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(shape)
    if spec.magic == LABEL_MAGIC and int(data.max()) > 9:
        raise MnistError(f"{path}: label {int(data.max())} is not a digit 0-9")
    return data


def _decompress(path: Path) -> bytes:
    try:
        return gzip.decompress(path.read_bytes())
    except FileNotFoundError:
        raise MnistError(f"{path}: file does not exist") from None
    except EOFError:
        raise MnistError(f"{path}: truncated: the gzip stream ends early") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise MnistError(f"{path}: not a valid gzip file ({exc})") from None


def load_mnist(data_dir: Path) -> Mnist:
    """Read and verify all four files in ``data_dir``."""
    tensors = {spec.name: read_idx(data_dir / spec.name, spec) for spec in FILES}
    return Mnist(
        train=Split(tensors[TRAIN_IMAGES.name].unsqueeze(1), tensors[TRAIN_LABELS.name].long()),
        test=Split(tensors[TEST_IMAGES.name].unsqueeze(1), tensors[TEST_LABELS.name].long()),
        source=data_dir,
        checksums={spec.name: spec.sha256 for spec in FILES},
    )


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "s4digits" / "mnist"


def resolve_data_dir(
    data_dir: Path | None, cache_dir: Path | None = None, mirrors: Sequence[str] = MIRRORS
) -> Path:
    """--data-dir, then $S4_DATA_DIR, used as they are; else the cache, downloading what's missing.

    An explicit directory is never downloaded into: if it lacks a file, that is a mistake worth
    reporting, not papering over with a network fetch.
    """
    if data_dir is not None:
        return data_dir
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    cache = cache_dir or default_cache_dir()
    for spec in FILES:
        if not (cache / spec.name).exists():
            download(spec, cache, mirrors)
    return cache


def download(
    spec: IdxFile,
    dest_dir: Path,
    mirrors: Sequence[str] = MIRRORS,
    attempts: int = 4,
    timeout_s: float = 30.0,
) -> Path:
    """Fetch one file into ``dest_dir``, trying mirrors in order; verify it before it lands.

    Each mirror gets ``attempts`` tries; a broken connection resumes where it stopped (Range).
    A file that downloads completely but fails verification is deleted and the next mirror is
    tried; if none serves a good copy, MnistError lists what each mirror did.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / spec.name
    partial = dest_dir / f"{spec.name}.part"
    failures = []
    with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + spec.name
            try:
                _fetch_with_resume(client, url, partial, attempts)
                read_idx(partial, spec)
            except (httpx.HTTPError, MnistError) as exc:
                partial.unlink(missing_ok=True)
                failures.append(f"{url}: {exc}")
                continue
            os.replace(partial, target)
            return target
    raise MnistError(f"{spec.name}: no mirror served a valid copy: " + "; ".join(failures))


def _fetch_with_resume(client: httpx.Client, url: str, partial: Path, attempts: int) -> None:
    """Stream ``url`` into ``partial``; on a transient error, back off and resume with Range."""
    for attempt in range(1, attempts + 1):
        have = partial.stat().st_size if partial.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with client.stream("GET", url, headers=headers) as response:
                if response.status_code == 416:  # we already hold every byte
                    return
                response.raise_for_status()
                resumed = response.status_code == 206
                total = int(response.headers.get("Content-Length", 0)) + (have if resumed else 0)
                with (
                    partial.open("ab" if resumed else "wb") as out,
                    tqdm(
                        total=total or None,
                        initial=have if resumed else 0,
                        unit="B",
                        unit_scale=True,
                        desc=partial.name.removesuffix(".part"),
                        leave=False,
                    ) as bar,
                ):
                    for chunk in response.iter_bytes(1 << 16):
                        out.write(chunk)
                        bar.update(len(chunk))
            return
        except httpx.HTTPError as exc:
            if attempt == attempts or not _worth_retrying(exc):
                raise
            time.sleep(min(0.2 * 2**attempt, 5.0))


def _worth_retrying(exc: httpx.HTTPError) -> bool:
    """Dropped connections and server errors are transient; a 404 will not go away."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError)
