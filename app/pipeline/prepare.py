"""Prepare: an Upload -> a PreparedImage (decode, then MNIST form), naming the upload on refusal."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.pipeline.decode import decode
from app.pipeline.errors import ImageRejected
from app.pipeline.mnist_form import to_mnist_form
from app.pipeline.uploads import Upload


@dataclass(frozen=True)
class PreparedImage:
    input_size: tuple[int, int]  # (width, height) as uploaded
    pixels: np.ndarray  # uint8 [28, 28], MNIST form: 0 = background, 255 = ink


def prepare(upload: Upload, max_pixels: int) -> PreparedImage:
    """Decode an upload and bring it to MNIST form; ImageRejected & kin name the upload."""
    try:
        gray = decode(upload.data, max_pixels)
        return PreparedImage((gray.shape[1], gray.shape[0]), to_mnist_form(gray))
    except ImageRejected as exc:
        raise naming(upload, exc) from None


def naming(upload: Upload, exc: ImageRejected) -> ImageRejected:
    """``exc`` (same class), its message naming ``upload`` as every refusal of one image does."""
    return type(exc)(f"{upload.label} {exc}")


def prepare_all(uploads: Sequence[Upload], max_pixels: int) -> list[PreparedImage]:
    """``prepare`` each upload, in order; the first that cannot be read fails them all."""
    return [prepare(upload, max_pixels) for upload in uploads]
