"""Fixtures shared by the whole suite: where the repo, the spec and MNIST live; test weights."""

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.model import S4Net
from app.settings import Settings
from app.weights import save_weights
from training.mnist import TEST_IMAGES, TEST_LABELS, read_idx

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = Path(os.environ.get("S4_SHARED_DIR", REPO_ROOT.parent / "shared"))
SPEC_PATH = SHARED_DIR / "spec" / "s4-net.md"
MNIST_DIR = Path(os.environ.get("S4_DATA_DIR", SHARED_DIR / "data" / "mnist"))
COMMITTED_WEIGHTS = REPO_ROOT / "weights" / "s4net.safetensors"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return MNIST_DIR


@pytest.fixture
def untrained_weights(tmp_path: Path) -> Path:
    """A valid weights file + card for a randomly initialised net (loads, but reads no digits)."""
    torch.manual_seed(0)
    path = tmp_path / "weights" / "s4net.safetensors"
    save_weights(S4Net(), path, {"note": "untrained, made by the test suite"})
    return path


ClientFactory = Callable[..., AbstractContextManager[TestClient]]


@pytest.fixture
def make_client() -> ClientFactory:
    """``with make_client(weights=path, ...) as client:`` runs the app's lifespan with settings."""

    @contextmanager
    def factory(**settings) -> Iterator[TestClient]:
        with TestClient(create_app(Settings(**settings))) as client:
            yield client

    return factory


@pytest.fixture(scope="session")
def mnist_test_set(mnist_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST test images (uint8 [N, 28, 28], 255 = ink) and labels, verified."""
    images = read_idx(mnist_dir / TEST_IMAGES.name, TEST_IMAGES).numpy()
    labels = read_idx(mnist_dir / TEST_LABELS.name, TEST_LABELS).numpy().astype(np.int64)
    return images, labels


@pytest.fixture(scope="session")
def reading_weights() -> Path:
    """Weights that read digits: the committed ones; a missing file fails the test, never skips.

    S4_TEST_WEIGHTS points elsewhere (e.g. a model trained on a slice of MNIST) while developing
    before the committed weights exist; the accuracy bar itself is always checked on
    COMMITTED_WEIGHTS.
    """
    path = Path(os.environ.get("S4_TEST_WEIGHTS", COMMITTED_WEIGHTS))
    if not path.exists():
        pytest.fail(f"{path} is missing: train with `python -m training` (or `make train`)")
    return path


ImageEncoder = Callable[..., bytes]


@pytest.fixture(scope="session")
def encode_image() -> ImageEncoder:
    """``encode_image(pixels_or_image, "PNG", **save_options)`` -> the image file's bytes."""

    def encode(image: np.ndarray | Image.Image, format: str = "PNG", **save_options) -> bytes:
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        buffer = io.BytesIO()
        image.save(buffer, format=format, **save_options)
        return buffer.getvalue()

    return encode


SERVER_START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_uvicorn(log_dir: Path, **env: str) -> Iterator[str]:
    """`uvicorn app.main:app` on a free loopback port, with ``env`` added to the environment.

    Yields the base URL once /ready answers 200; fails the test with the server's log if it exits
    or reports not-ready (a 503 means the weights did not load, and waiting will not change
    that). Stopped with SIGTERM, as an orchestrator would.
    """
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = log_dir / "uvicorn.log"
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--no-access-log"]
    with log.open("wb") as log_file:
        server = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"uvicorn exited with {server.returncode}:\n{log.read_text()}")
            try:
                ready = httpx.get(f"{base_url}/ready", timeout=2)
            except httpx.TransportError:
                ready = None
            if ready is not None and ready.status_code == 200:
                break
            if ready is not None:
                pytest.fail(f"the app is up but not ready: {ready.text}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"uvicorn not ready after {SERVER_START_TIMEOUT_S} s:\n{log.read_text()}"
                )
            time.sleep(0.2)
        yield base_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
