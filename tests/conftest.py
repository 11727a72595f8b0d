"""Fixtures shared by the whole suite: where the repo, the spec and MNIST live; test weights."""

import io
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.artifacts.weights import save_weights
from app.main import create_app
from app.model import S4Net
from app.settings import Settings
from training.mnist import TEST_IMAGES, TEST_LABELS, read_idx

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = Path(os.environ.get("S4_SHARED_DIR", REPO_ROOT.parent / "shared"))
SPEC_PATH = SHARED_DIR / "spec" / "s4-net.md"
MNIST_DIR = Path(os.environ.get("S4_DATA_DIR", SHARED_DIR / "data" / "mnist"))
COMMITTED_WEIGHTS = REPO_ROOT / "weights" / "s4net.safetensors"
# The suite's apps (in-process, and the servers it starts, which inherit the environment) serve
# no gRPC unless a test asks for it: none of them would hold port 8001 then.
os.environ.setdefault("S4_GRPC", "false")
# Every app and server the tests start keeps its corrections (POST /feedback) in a throw-away
# SQLite file, not in the checkout's data/; tests of the database itself choose their own.
os.environ.setdefault(
    "S4_DATABASE_URL", f"sqlite:///{tempfile.mkdtemp(prefix='s4-feedback-')}/feedback.db"
)


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
