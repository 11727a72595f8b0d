"""Corrections as MNIST's own file format (IDX), so any MNIST reader takes them."""

import struct
from pathlib import Path

import numpy as np

from app.artifacts.weights import atomic_write_bytes
from app.feedback.store import StoredDigit

IMAGES_FILE = "feedback-images-idx3-ubyte"
LABELS_FILE = "feedback-labels-idx1-ubyte"


def idx_images(digits: list[StoredDigit]) -> bytes:
    """IDX3: magic 2051, count, 28, 28, then each digit's 784 bytes (uint8, MNIST form)."""
    return struct.pack(">IIII", 2051, len(digits), 28, 28) + b"".join(d.pixels for d in digits)


def idx_labels(digits: list[StoredDigit]) -> bytes:
    """IDX1: magic 2049, count, then one byte per label."""
    return struct.pack(">II", 2049, len(digits)) + bytes(d.label for d in digits)


def write_idx(directory: Path, digits: list[StoredDigit]) -> list[Path]:
    """Write both files into ``directory`` (each whole or not at all); their paths."""
    paths = [directory / IMAGES_FILE, directory / LABELS_FILE]
    for path, data in zip(paths, (idx_images(digits), idx_labels(digits)), strict=True):
        atomic_write_bytes(path, data)
    return paths


def read_idx_pair(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """The files write_idx wrote: (uint8 [N, 28, 28] images, uint8 [N] labels)."""
    images = (directory / IMAGES_FILE).read_bytes()
    labels = (directory / LABELS_FILE).read_bytes()
    magic, count, rows, cols = struct.unpack(">IIII", images[:16])
    label_magic, label_count = struct.unpack(">II", labels[:8])
    if (magic, rows, cols, label_magic) != (2051, 28, 28, 2049) or count != label_count:
        raise ValueError(f"{directory} does not hold a matching IDX3/IDX1 pair of 28x28 digits")
    pixels = np.frombuffer(images, np.uint8, offset=16).reshape(count, 28, 28)
    return pixels, np.frombuffer(labels, np.uint8, offset=8)
