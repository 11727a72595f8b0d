"""The digit-reading pipeline: one upload from the request body to the JSON answer.

    read_uploads   request body -> one Upload per image (multipart `file` parts, or the raw body)
    prepare        Upload -> PreparedImage: decode (libspng or Pillow) -> to_mnist_form
    MicroBatcher   the forward thread: prepare, then batch -> forward (the net) -> unbatch
    encode         Upload + PreparedImage + probabilities -> the answer's JSON

Every step is a plain typed function (the batcher a class), callable by any route that reads
digits. Refusals are domain errors (``PipelineError`` and its subclasses) whose message says what
to fix; only the HTTP layer (``app.routers.predict``) maps them to status codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import re
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from io import BytesIO
from typing import TYPE_CHECKING

import numpy as np
from imagecodecs import spng_decode
from PIL import Image, ImageOps
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

if TYPE_CHECKING:  # the pipeline itself needs neither torch nor prometheus
    from app.inference import Predictor
    from app.metrics import Metrics

# Errors ------------------------------------------------------------------------------------------


class PipelineError(Exception):
    """The pipeline cannot answer this request; the message says why and what to do."""


class UploadRejected(PipelineError):
    """The request holds no image, or a part that is not one."""


class MalformedBody(UploadRejected):
    """The multipart body cannot be parsed."""


class UnsupportedMediaType(UploadRejected):
    """The request's Content-Type is neither multipart/form-data nor an image."""


class UploadTooLarge(UploadRejected):
    """Too many images, or more bytes than allowed."""


class ImageRejected(PipelineError):
    """This image cannot be read as a digit."""


class UnsupportedImage(ImageRejected):
    """The bytes are not an image in any format Pillow can read."""


class ImageTooLarge(ImageRejected):
    """The image decodes to more pixels than allowed (a decompression bomb, or just too big)."""


class BlankImage(ImageRejected):
    """There is no ink to read: answering with a digit would be a guess."""


class ModelNotReady(PipelineError):
    """No verified weights are loaded (yet)."""


class Overloaded(PipelineError):
    """Too many images are already waiting for a forward pass; retry shortly."""


# Data --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    index: int  # position in the request; answers come back in this order
    filename: str | None
    data: bytes

    @property
    def label(self) -> str:
        """How error messages name this image, e.g. ``image 2 (seven.png)``."""
        return f"image {self.index}" + (f" ({self.filename})" if self.filename else "")


@dataclass(frozen=True)
class PreparedImage:
    input_size: tuple[int, int]  # (width, height) as uploaded
    pixels: np.ndarray  # uint8 [28, 28], MNIST form: 0 = background, 255 = ink


@dataclass(frozen=True)
class BatchResult:
    probabilities: np.ndarray  # float32 [n, 10], one row per submitted image, in order
    weights_sha256: str  # the weights that computed them (a reload may swap them mid-flight)
    inference_ms: float  # how long the forward pass holding these images took on the device


# Read: the request body -> uploads ---------------------------------------------------------------

IMAGE_FIELDS = {"file", "files"}
# Bodies that are the image itself. curl --data-binary sends form-urlencoded unless told otherwise,
# so that is read as image bytes too; whether they really are an image is decided by decoding.
RAW_BODY_TYPES = {"application/octet-stream", "application/x-www-form-urlencoded"}
# Room for a part's boundary and headers (python-multipart allows 8 headers of 4224 bytes).
PART_OVERHEAD_BYTES = 40_000
# Multipart bodies up to this size (by their Content-Length) are read whole (split_whole_body).
WHOLE_BODY_BYTES = 65_536
# A header line split_whole_body takes: an RFC 7230 token (python-multipart's header-name
# characters), a colon, spaces (which python-multipart skips too), then a value without a CR.
SIMPLE_HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+): *([^\r]*)")
# Fewer and shorter than python-multipart's limits (8 headers per part, 4,224 bytes per line).
SIMPLE_HEADERS_PER_PART = 8
SIMPLE_HEADER_BYTES = 4096

# One part of a multipart body: its (name, value) header lines, and its data.
Part = tuple[list[tuple[bytes, bytes]], bytes]

SEND_IMAGES_HINT = (
    "send multipart/form-data with one `file` field per image, or the raw image bytes with "
    "Content-Type image/png (or another image/* type)"
)


async def read_uploads(request: Request, max_images: int, max_image_bytes: int) -> list[Upload]:
    """Every image in the request body, in order, with the limits enforced as it streams in.

    Sizes are counted chunk by chunk, so an oversized upload is refused as soon as it crosses the
    limit; Content-Length is only trusted to refuse early. Raises UploadRejected (and kin).
    """
    content_type, params = parse_options_header(request.headers.get("content-type"))
    media_type = content_type.decode("latin-1")
    if media_type == "multipart/form-data":
        uploads = await _read_multipart(request, params, max_images, max_image_bytes)
    elif media_type.startswith("image/") or media_type in RAW_BODY_TYPES or not media_type:
        too_large = partial(_too_large, "image 0", max_image_bytes)
        body = await read_body(request, max_image_bytes, too_large)
        uploads = [Upload(0, None, body)] if body else []
    else:
        raise UnsupportedMediaType(f"Content-Type {media_type} is not accepted: {SEND_IMAGES_HINT}")
    if not uploads:
        raise UploadRejected(f"the request holds no image: {SEND_IMAGES_HINT}")
    return uploads


def _too_large(label: str, max_image_bytes: int) -> UploadTooLarge:
    return UploadTooLarge(
        f"{label} is larger than the {max_image_bytes:,}-byte limit (S4_MAX_IMAGE_BYTES); "
        "send a smaller or more compressed image"
    )


def split_whole_body(body: bytes, boundary: bytes) -> list[Part] | None:
    """The parts of a whole multipart body laid out as HTTP clients write it, else None.

    That layout: ``--BOUNDARY`` CRLF, parts separated by CRLF ``--BOUNDARY`` CRLF, and CRLF
    ``--BOUNDARY--`` CRLF at the very end; each part one to eight simple header lines, a blank
    line, then its data, with the boundary nowhere inside. python-multipart reads such a body as
    exactly these parts (tests/test_uploads.py holds the two to that on generated bodies).
    Anything else (a preamble or epilogue, padding after a boundary, a part without headers, the
    boundary inside data, an odd header line) is None: python-multipart's to parse, or to refuse.
    """
    pieces = (b"\r\n" + body).split(b"\r\n--" + boundary)
    if len(pieces) < 3 or pieces[0] or pieces[-1] != b"--\r\n":
        return None
    parts = []
    for piece in pieces[1:-1]:
        if not piece.startswith(b"\r\n"):
            return None
        head, blank_line, data = piece[2:].partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        if not blank_line or len(lines) > SIMPLE_HEADERS_PER_PART:
            return None
        headers = []
        for line in lines:
            header = SIMPLE_HEADER.fullmatch(line)
            if header is None or len(line) > SIMPLE_HEADER_BYTES:
                return None
            headers.append(header.groups())
        parts.append((headers, data))
    return parts


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


async def read_body(request: Request, limit: int, too_large: Callable[[], Exception]) -> bytes:
    """The whole body, refused with ``too_large()`` as soon as it is known to exceed ``limit``
    bytes: by its Content-Length, else as it streams in."""
    declared = _declared_length(request)
    if declared is not None and declared > limit:
        raise too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large()
    return bytes(body)


class ImagePartCollector:
    """python-multipart callbacks that keep image parts and stop at the first broken limit."""

    def __init__(self, max_images: int, max_image_bytes: int):
        self.max_images = max_images
        self.max_image_bytes = max_image_bytes
        self.uploads: list[Upload] = []
        self.finished = False
        self._headers: dict[str, bytes] = {}
        self._header_name = b""
        self._header_value = b""
        self._filename: str | None = None
        self._data = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self._headers, self._filename, self._data = {}, None, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.decode("latin-1").lower()] = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition"))
        field = options.get(b"name", b"").decode("utf-8", "replace")
        if field not in IMAGE_FIELDS:
            raise UploadRejected(
                f"unexpected form field {field!r}: put each image in a `file` field"
            )
        self._filename = options.get(b"filename", b"").decode("utf-8", "replace") or None
        if len(self.uploads) >= self.max_images:
            raise UploadTooLarge(
                f"more than {self.max_images} images in one request (S4_MAX_IMAGES); "
                "split them over several requests"
            )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._data += data[start:end]
        if len(self._data) > self.max_image_bytes:
            label = Upload(len(self.uploads), self._filename, b"").label
            raise _too_large(label, self.max_image_bytes)

    def on_part_end(self) -> None:
        self.uploads.append(Upload(len(self.uploads), self._filename, bytes(self._data)))

    def on_end(self) -> None:
        self.finished = True

    def collect(self, parts: list[Part]) -> None:
        """For ``parts`` (split_whole_body's), the calls python-multipart makes as it parses."""
        for headers, data in parts:
            self.on_part_begin()
            for name, value in headers:
                self.on_header_field(name, 0, len(name))
                self.on_header_value(value, 0, len(value))
                self.on_header_end()
            self.on_headers_finished()
            self.on_part_data(data, 0, len(data))
            self.on_part_end()
        self.on_end()


async def _read_multipart(
    request: Request, params: dict[bytes, bytes], max_images: int, max_image_bytes: int
) -> list[Upload]:
    max_body_bytes = max_images * (max_image_bytes + PART_OVERHEAD_BYTES)
    declared = _declared_length(request)
    if declared is not None and declared > max_body_bytes:
        raise UploadTooLarge(
            f"the request body ({declared:,} bytes) is larger than {max_images} images of "
            f"{max_image_bytes:,} bytes (S4_MAX_IMAGES, S4_MAX_IMAGE_BYTES); send fewer or "
            "smaller images"
        )
    if b"boundary" not in params:
        raise MalformedBody("multipart/form-data without a boundary parameter")
    boundary = params[b"boundary"]
    collector = ImagePartCollector(max_images, max_image_bytes)
    try:
        if declared is not None and declared <= WHOLE_BODY_BYTES:
            body = await request.body()
            parts = split_whole_body(body, boundary)
            if parts is None:
                MultipartParser(boundary, collector.callbacks()).write(body)
            else:
                collector.collect(parts)
        else:
            parser = MultipartParser(boundary, collector.callbacks())
            received = 0
            async for chunk in request.stream():
                received += len(chunk)
                if received > max_body_bytes:
                    raise UploadTooLarge(
                        f"the request body is larger than {max_body_bytes:,} bytes"
                    )
                parser.write(chunk)
    except FormParserError as exc:
        raise MalformedBody(f"malformed multipart/form-data body: {exc}") from None
    if not collector.finished:
        raise MalformedBody("the multipart/form-data body ends before its closing boundary")
    return collector.uploads


# Decode and bring to MNIST form: bytes -> uint8 [28, 28] -----------------------------------------
#
# MNIST digits are white ink on black, fitted into a 20x20 box keeping their aspect ratio (which
# antialiases them) and placed in a 28x28 frame so that their centre of mass sits at the centre.
# An image already in that form (is_mnist_form, measured on MNIST) goes straight in, unchanged;
# anything else (a 28x28 digit cropped tight or stretched included) is brought to it:
#     decode (decode_gray_png, else decode_image -> to_grayscale) -> to_mnist_form
#     (ink_levels -> ink_to_mnist_form: crop_to_ink -> scale_to_box -> center_by_mass)

MNIST_SIZE = 28  # the frame, in pixels
MNIST_BOX = 20  # the longer side of the digit inside the frame
MNIST_CENTER = 14.0  # where MNIST puts the centre of mass (row and column, in pixel indices)
# Measured on all 70,000 MNIST images: the ink's longer side is 19 or 20 pixels, and the centre
# of mass is within 0.52 px of MNIST_CENTER on both axes. A 28x28 upload within these bounds (the
# tolerance a little wider) is taken as already in MNIST form.
MNIST_MIN_SIDE = 19
MNIST_CENTER_TOLERANCE = 1.0

# Pixels whose ink level (0 = background, 1 = the darkest ink) stays under this are background:
# paper texture, JPEG ringing, uneven light. Above it, levels are kept, so strokes stay antialiased.
NOISE_FLOOR = 0.2
# Less difference than this (of 255) between background and the strongest ink means no digit.
MIN_INK_CONTRAST = 32
# A digit has at least this many pixels at half its ink level or more; fewer is a speck, not ink.
MIN_INK_PIXELS = 4

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_HEADER_BYTES = 33  # the signature, then the IHDR chunk: length, type, 13 bytes of data, CRC
# Chunks that do not change how Pillow reads an 8-bit grayscale PNG's pixels. Left out, so such a
# PNG goes to Pillow: tRNS (transparency), eXIf and the text chunks (Pillow may take an EXIF
# orientation from either), and anything unknown.
PLAIN_PNG_CHUNKS = {b"IHDR", b"IDAT", b"IEND", b"pHYs", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT"}

# 16-bit grayscale modes: Pillow's own conversion to "L" clips them, so they are scaled instead.
SIXTEEN_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}


def decode_gray_png(data: bytes, max_pixels: int) -> np.ndarray | None:
    """The gray levels of a plain 8-bit grayscale PNG, decoded by libspng; None for anything else.

    Plain: colour type 0 at 8 bits, not interlaced, within both pixel limits (ours and Pillow's
    bomb check), only PLAIN_PNG_CHUNKS, and nothing after IEND. For such a PNG, Pillow's mode "L"
    image holds the same levels (tests/test_preprocess.py holds the two to that, on generated
    and on damaged files). Anything else, a file libspng refuses included, is None, never a
    rejection: decode_image then reads it, or says what is wrong with it.
    """
    if len(data) < PNG_HEADER_BYTES or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height, *layout = struct.unpack_from(">IIBBBBB", data, 16)
    pixels = width * height
    # Bit depth 8, colour type 0 (gray), compression and filter method 0 (PNG defines no other),
    # interlace method 0 (none).
    if layout != [8, 0, 0, 0, 0] or pixels > min(max_pixels, Image.MAX_IMAGE_PIXELS or pixels):
        return None
    offset, kind = len(PNG_SIGNATURE), b""
    while kind != b"IEND" and offset + 8 <= len(data):  # each chunk: length, type, data, CRC
        length, kind = struct.unpack_from(">I4s", data, offset)
        if kind not in PLAIN_PNG_CHUNKS:
            return None
        offset += 12 + length
    if kind != b"IEND" or offset != len(data):  # IEND must be the last chunk, where the file ends
        return None
    try:
        gray = spng_decode(data)
    except Exception:  # libspng's errors, and imagecodecs' own on bytes it cannot make sense of
        return None
    return gray if gray.shape == (height, width) and gray.dtype == np.uint8 else None


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode the first frame of any format Pillow reads, refusing oversized images before decoding.

    The pixel count is checked from the header, so a small file that would decode to gigabytes
    (a decompression bomb) costs nothing. Pillow has its own, larger bomb limit; it is reported the
    same way. Pillow's decoders raise many exception types on corrupt input, so every failure
    becomes a rejection that names the problem rather than a server error.
    """
    if not data:
        raise ImageRejected("is empty (0 bytes); send the image file's contents")
    try:
        image = Image.open(BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"has too many pixels to decode safely ({exc})") from None
    except Exception:
        raise UnsupportedImage(
            "is not an image this service can read; send PNG, JPEG, BMP, GIF, WebP or TIFF"
        ) from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"is {width}x{height} = {width * height:,} pixels, more than the {max_pixels:,}-pixel "
            "limit (S4_MAX_PIXELS); send a smaller image"
        )
    try:
        image.load()
        # Phone photos are stored sideways with an EXIF note on how to turn them upright.
        ImageOps.exif_transpose(image, in_place=True)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"has too many pixels to decode safely ({exc})") from None
    except Exception as exc:
        raise ImageRejected(
            f"could not be decoded as {image.format} ({exc}); the file may be truncated or corrupt"
        ) from None
    return image


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> uint8 [height, width] gray levels (0 black, 255 white).

    Transparency is composited on white, as a browser shows it: a digit drawn on a transparent
    canvas is ink on white paper. 16-bit grayscale is scaled down to 8 bits, not clipped.
    """
    if image.mode == "L" and not image.has_transparency_data:
        return np.asarray(image, dtype=np.uint8)  # already 8-bit gray, as MNIST uploads are
    if image.mode in SIXTEEN_BIT_MODES:
        wide = np.asarray(image, dtype=np.float64)
        return np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
    if image.mode == "LAB":  # CIELAB (TIFF): Pillow cannot convert it, but L is the lightness
        return np.asarray(image.getchannel("L"), dtype=np.uint8)
    try:
        if image.has_transparency_data:
            on_white = Image.new("RGBA", image.size, "white")
            image = Image.alpha_composite(on_white, image.convert("RGBA"))
        return np.asarray(image.convert("L"), dtype=np.uint8)
    except ValueError:  # Pillow's word for "no conversion between these modes"
        raise UnsupportedImage(
            f"has colour mode {image.mode}, which cannot be read as grayscale; send an RGB or "
            "grayscale image"
        ) from None


def median_level(gray: np.ndarray) -> float:
    """The median of ``gray``'s levels (at least one), equal to ``np.median(gray)``, from one
    ``np.partition`` without np.median's argument handling (docs/decisions.md)."""
    flat = gray.ravel()
    middle = (flat.size - 1) // 2
    if flat.size % 2:
        return float(np.partition(flat, middle)[middle])
    low, high = np.partition(flat, (middle, middle + 1))[middle : middle + 2]
    return (float(low) + float(high)) / 2.0


def is_light_background(median: float) -> bool:
    """Whether a picture's median level is light paper. Ink covers less than
    half of a digit picture, so the median pixel is background."""
    return median > 127.5


def ink_levels(gray: np.ndarray) -> np.ndarray:
    """Gray levels -> float ink levels in [0, 1]: 0 for background, 1 for the strongest ink.

    A light background is inverted first (black ink on white paper). The background level (the
    median) maps to 0 and the strongest ink to 1, which evens out grey paper and faint pencil;
    levels under NOISE_FLOOR become 0. Raises BlankImage when nothing stands out as ink.
    """
    ink = gray.astype(np.float32)
    background = median_level(gray)
    if is_light_background(background):
        # Inverting the levels inverts their median: no second median (megapixel photos).
        ink, background = 255.0 - ink, 255.0 - background
    contrast = float(ink.max()) - background
    check_ink(ink, background, contrast)
    levels = np.clip((ink - background) / contrast, 0.0, 1.0)
    levels[levels < NOISE_FLOOR] = 0.0
    return levels


def check_ink(ink: np.ndarray, background: float, contrast: float) -> None:
    """Raise BlankImage unless some ink stands out: enough contrast, more than a speck of it."""
    if contrast < MIN_INK_CONTRAST:
        raise BlankImage(
            f"is blank: no ink stands out from the background (contrast {contrast:.0f} of 255); "
            "send a picture of one digit, dark on light or light on dark"
        )
    if np.count_nonzero(ink >= background + 0.5 * contrast) < MIN_INK_PIXELS:
        raise BlankImage(
            "is nearly blank: only a speck of ink; send a picture of one digit, dark on light or "
            "light on dark"
        )


def crop_to_ink(levels: np.ndarray) -> np.ndarray:
    """The smallest rectangle holding every non-zero level (the ink's bounding box)."""
    rows = np.flatnonzero(levels.any(axis=1))
    cols = np.flatnonzero(levels.any(axis=0))
    return levels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def scale_to_box(levels: np.ndarray, box: int = MNIST_BOX) -> np.ndarray:
    """Resize so the longer side is ``box`` pixels, keeping the aspect ratio; uint8 ink 0..255.

    Lanczos resampling antialiases when shrinking, as MNIST's normalisation did. Shrinking thin
    strokes greys them out, so the result is stretched back to full-strength ink (MNIST digits
    all reach 255).
    """
    height, width = levels.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(levels.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    scaled = np.clip(np.asarray(resized), 0.0, None)
    return np.rint(255.0 * scaled / scaled.max()).astype(np.uint8)


def center_by_mass(digit: np.ndarray, size: int = MNIST_SIZE) -> np.ndarray:
    """Place ``digit`` in a size x size black frame with its centre of mass at MNIST's centre.

    The shift is a whole number of pixels, as in MNIST, and clamped so no ink leaves the frame.
    """
    height, width = digit.shape
    mass = digit.astype(np.float64)
    total = mass.sum()
    rows, cols = np.indices(digit.shape)
    center_row = (rows * mass).sum() / total
    center_col = (cols * mass).sum() / total
    top = int(np.clip(round(MNIST_CENTER - center_row), 0, size - height))
    left = int(np.clip(round(MNIST_CENTER - center_col), 0, size - width))
    frame = np.zeros((size, size), dtype=np.uint8)
    frame[top : top + height, left : left + width] = digit
    return frame


def is_mnist_form(gray: np.ndarray, background: float | None = None) -> bool:
    """Whether a 28x28 image already is a digit in MNIST form, to be read as it is.

    MNIST form: light ink on a dark background whose every non-zero pixel lies in a box of at
    most MNIST_BOX x MNIST_BOX, with the longer side at least MNIST_MIN_SIDE, and whose centre of
    mass lies within MNIST_CENTER_TOLERANCE pixels of MNIST_CENTER on both axes. All 70,000
    MNIST images pass (tests/test_preprocess.py); a digit cropped tight to its ink, stretched to
    fill the frame, small or off-centre does not, and is brought to MNIST form instead.
    ``background`` is the image's median level, when the caller has it already.
    """
    if gray.shape != (MNIST_SIZE, MNIST_SIZE):
        return False
    if is_light_background(median_level(gray) if background is None else background):
        return False
    # Levels are never negative, so a row or column holds ink exactly when its sum is not 0.
    row_mass = gray.sum(axis=1, dtype=np.int64)
    col_mass = gray.sum(axis=0, dtype=np.int64)
    (rows,), (cols,) = row_mass.nonzero(), col_mass.nonzero()
    if rows.size == 0:
        return False
    longer_side = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    if not MNIST_MIN_SIDE <= longer_side <= MNIST_BOX:
        return False
    total = float(row_mass.sum())
    center_row = float(row_mass @ _MNIST_INDICES) / total
    center_col = float(col_mass @ _MNIST_INDICES) / total
    offset = max(abs(center_row - MNIST_CENTER), abs(center_col - MNIST_CENTER))
    return offset <= MNIST_CENTER_TOLERANCE


_MNIST_INDICES = np.arange(MNIST_SIZE, dtype=np.int64)


def to_mnist_form(gray: np.ndarray) -> np.ndarray:
    """uint8 gray levels of any size -> uint8 [28, 28] MNIST form; raises BlankImage if no ink.

    An image already in MNIST form (is_mnist_form) is used as it is, after the same blank check,
    so MNIST's own images give exactly the predictions of the tensor path; every other image is
    cropped to its ink, scaled into the 20x20 box and centred by mass, as MNIST was made.
    """
    if gray.shape == (MNIST_SIZE, MNIST_SIZE):
        background = median_level(gray)
        if is_mnist_form(gray, background):
            check_ink(gray, background, float(gray.max()) - background)
            return gray
    return ink_to_mnist_form(ink_levels(gray))


def ink_to_mnist_form(levels: np.ndarray) -> np.ndarray:
    """Ink levels (``ink_levels``'s, with some ink) -> uint8 [28, 28]: crop, scale, centre."""
    return center_by_mass(scale_to_box(crop_to_ink(levels)))


def decode(data: bytes, max_pixels: int) -> np.ndarray:
    """An image file's bytes -> uint8 gray levels [height, width]; raises ImageRejected & kin."""
    gray = decode_gray_png(data, max_pixels)
    return gray if gray is not None else to_grayscale(decode_image(data, max_pixels))


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


# Batch -> forward -> unbatch: concurrent requests share one forward pass -------------------------


def batch(submissions: Sequence[Sequence[PreparedImage]]) -> np.ndarray:
    """The pixels of every submission's images, in order: uint8 [N, 28, 28]."""
    return np.stack([image.pixels for images in submissions for image in images])


def unbatch(probabilities: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Split one forward pass's rows back into consecutive runs of ``sizes`` rows."""
    ends = list(itertools.accumulate(sizes))
    return [probabilities[end - size : end] for size, end in zip(sizes, ends, strict=True)]


# Makes one request's prepared images; run on the forward thread (see MicroBatcher).
Prepare = Callable[[], Sequence[PreparedImage]]


@dataclass(frozen=True)
class _Job:
    prepare: Prepare
    size: int  # images the job holds, counted against the queue and batch limits
    future: asyncio.Future


class MicroBatcher:
    """Runs every forward pass on one thread, over whatever prepared images are waiting.

    Preparing images (decoding them, bringing them to MNIST form) can run on that thread too
    (``prepare_and_predict``): small images cost a few microseconds there, and on the event loop
    they would contend with the forward thread for the GIL. A request that arrives while the
    service is idle is taken at once (or after ``max_wait_s``);
    under load, the requests that queue up during one pass form the next, up to ``max_images``
    (one larger request runs alone). Past ``max_queued_images`` waiting images, ``predict``
    raises Overloaded at once instead of letting every request's latency grow.
    """

    def __init__(
        self,
        predictor: Predictor,
        metrics: Metrics,
        max_images: int,
        max_wait_s: float,
        max_queued_images: int,
    ):
        self.predictor = predictor
        self.metrics = metrics
        self.max_images = max_images
        self.max_wait_s = max_wait_s
        self.max_queued_images = max_queued_images
        # Jobs for the forward thread, in arrival order; None tells it to stop.
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        # Images put in _jobs and not yet taken: requests add, the forward thread takes away.
        self._queued_images = 0
        self._queued_lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="s4-forward", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    async def stop(self) -> None:
        """Finish the pass under way, then refuse what is still waiting (it is cancelled)."""
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)
        with contextlib.suppress(queue.Empty):
            while True:
                job = self._jobs.get_nowait()
                if job is not None:
                    job.future.cancel()

    async def predict(self, images: Sequence[PreparedImage]) -> BatchResult:
        """The probabilities of ``images`` (one request's), read together with other requests'."""
        return await self.prepare_and_predict(len(images), lambda: images)

    async def prepare_and_predict(self, size: int, prepare: Prepare) -> BatchResult:
        """``predict(prepare())``, with ``prepare`` (``size`` images) run on the forward thread;
        what it raises (e.g. ImageRejected) fails this request alone."""
        with self._queued_lock:
            if self._queued_images + size > self.max_queued_images:
                raise Overloaded(
                    f"{self._queued_images} images are already waiting for the model "
                    f"(S4_BATCH_QUEUE_IMAGES={self.max_queued_images}); retry in a moment"
                )
            self._queued_images += size
        job = _Job(prepare, size, self._loop.create_future())
        self._jobs.put(job)
        return await job.future

    # The forward thread ------------------------------------------------------------------------

    def _serve(self) -> None:
        """Take a batch, run it, hand the answers back to the event loop; until told to stop."""
        left_over: _Job | None = None  # taken from the queue, but did not fit in the last batch
        while (first := left_over or self._jobs.get()) is not None:
            jobs, left_over = self._gather(first)
            jobs = [job for job in jobs if not job.future.cancelled()]  # callers that gave up
            if not jobs:
                continue
            outcomes = self._run(jobs)
            self._loop.call_soon_threadsafe(self._hand_back, jobs, outcomes)

    def _gather(self, first: _Job) -> tuple[list[_Job], _Job | None]:
        """``first`` and whole jobs behind it up to max_images, waiting up to max_wait_s for more
        unless the batch is full. Also returns the job it took that did not fit, if any."""
        jobs, images, left_over = [first], first.size, None
        deadline = time.monotonic() + self.max_wait_s
        while images < self.max_images:
            remaining = deadline - time.monotonic()
            try:
                job = (
                    self._jobs.get(timeout=remaining) if remaining > 0 else self._jobs.get_nowait()
                )
            except queue.Empty:
                break
            if job is None:  # stop: after this batch
                self._jobs.put(None)
                break
            if images + job.size > self.max_images:
                left_over = job
                break
            jobs.append(job)
            images += job.size
        with self._queued_lock:
            self._queued_images -= images
        return jobs, left_over

    def _run(self, jobs: list[_Job]) -> list[BatchResult | Exception]:
        """Prepare each job's images, then one forward pass over all that could be prepared."""
        prepared: list[Sequence[PreparedImage] | Exception] = []
        for job in jobs:
            try:
                prepared.append(job.prepare())
            except Exception as exc:  # this request's images are unreadable: fail it alone
                prepared.append(exc)
        readable = [images for images in prepared if not isinstance(images, Exception)]
        if not readable:
            return prepared  # type: ignore[return-value]  # every entry is an exception
        try:
            results = iter(self._forward(readable))
        except Exception as exc:  # the forward pass itself failed: every job in it fails
            return [exc] * len(jobs)
        return [
            outcome if isinstance(outcome, Exception) else next(results) for outcome in prepared
        ]

    def _forward(self, submissions: list[Sequence[PreparedImage]]) -> list[BatchResult]:
        """One forward pass over every submission's images; each gets its own rows."""
        pixels = batch(submissions)
        started = time.perf_counter()
        forward = self.predictor.forward(pixels)
        milliseconds = (time.perf_counter() - started) * 1000.0
        self.metrics.forward_batch_images.observe(len(pixels))
        self.metrics.forward_seconds.observe(milliseconds / 1000.0)
        rows = unbatch(forward.probabilities, [len(images) for images in submissions])
        return [BatchResult(part, forward.weights_sha256, milliseconds) for part in rows]

    def _hand_back(self, jobs: list[_Job], outcomes: list[BatchResult | Exception]) -> None:
        """On the event loop: each job's own answer, or its own error."""
        for job, outcome in zip(jobs, outcomes, strict=True):
            if job.future.done():  # cancelled while its pass ran
                continue
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)


def check_ready(predictor: Predictor) -> None:
    """Raise ModelNotReady, saying why, unless the predictor can run forward passes."""
    if not predictor.ready:
        raise ModelNotReady(f"the model is not ready: {predictor.error}")


# Encode: probabilities -> the answer ------------------------------------------------------------


def encode_prediction(
    upload: Upload,
    image: PreparedImage,
    probabilities: np.ndarray,
    top_k: int | None = None,
    return_input: bool = False,
) -> dict:
    """One image's answer, shaped as ``app.schemas.Prediction``."""
    digit = int(probabilities.argmax())
    ranked = None
    if top_k:
        ranked = [
            {"digit": int(d), "probability": float(probabilities[d])}
            for d in np.argsort(-probabilities, kind="stable")[:top_k]
        ]
    return {
        "index": upload.index,
        "filename": upload.filename,
        "digit": digit,
        "probability": float(probabilities[digit]),
        "probabilities": probabilities.tolist(),
        "top_k": ranked,
        "input_size": image.input_size,
        "model_input": image.pixels.tolist() if return_input else None,
    }


def encode(
    uploads: Sequence[Upload],
    images: Sequence[PreparedImage],
    result: BatchResult,
    device: str,
    top_k: int | None = None,
    return_input: bool = False,
) -> dict:
    """The whole answer, shaped as ``app.schemas.PredictionResponse``."""
    return {
        "predictions": [
            encode_prediction(upload, image, probabilities, top_k, return_input)
            for upload, image, probabilities in zip(
                uploads, images, result.probabilities, strict=True
            )
        ],
        "weights_sha256": result.weights_sha256,
        "device": device,
        "inference_ms": result.inference_ms,
    }
