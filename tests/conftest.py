"""Fixtures shared by the whole suite: where the repo, the spec and MNIST live; test weights."""

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.model import S4Net
from app.settings import Settings
from app.weights import save_weights

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
