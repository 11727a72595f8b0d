"""Decode: an image file's bytes -> uint8 gray levels [height, width].

Plain 8-bit grayscale PNGs (the common upload) are decoded by OpenCV (libpng); everything else by
Pillow, which refuses oversized and corrupt files with an ImageRejected that names the problem.
"""

import struct
from io import BytesIO

import cv2
import numpy as np
from PIL import Image, ImageOps

from app.pipeline.errors import ImageRejected, ImageTooLarge, UnsupportedImage

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_HEADER_BYTES = 33  # the signature, then the IHDR chunk: length, type, 13 bytes of data, CRC
# Chunks that do not change how Pillow reads an 8-bit grayscale PNG's pixels. Left out, so such a
# PNG goes to Pillow: tRNS (transparency), eXIf and the text chunks (Pillow may take an EXIF
# orientation from either), and anything unknown.
PLAIN_PNG_CHUNKS = {b"IHDR", b"IDAT", b"IEND", b"pHYs", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT"}

# 16-bit grayscale modes: Pillow's own conversion to "L" clips them, so they are scaled instead.
SIXTEEN_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}


def decode_gray_png(data: bytes, max_pixels: int) -> np.ndarray | None:
    """The gray levels of a plain 8-bit grayscale PNG, decoded by OpenCV; None for anything else.

    Plain: colour type 0 at 8 bits, not interlaced, within both pixel limits (ours and Pillow's
    bomb check), only PLAIN_PNG_CHUNKS, and nothing after IEND. For such a PNG, Pillow's mode "L"
    image holds the same levels (tests/test_preprocess.py holds the two to that, on generated
    and on damaged files). Anything else, a file OpenCV refuses included, is None, never a
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
    gray = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)  # None if refused
    ok = gray is not None and gray.shape == (height, width) and gray.dtype == np.uint8
    return gray if ok else None


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


def decode(data: bytes, max_pixels: int) -> np.ndarray:
    """An image file's bytes -> uint8 gray levels [height, width]; raises ImageRejected & kin."""
    gray = decode_gray_png(data, max_pixels)
    return gray if gray is not None else to_grayscale(decode_image(data, max_pixels))
