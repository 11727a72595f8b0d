"""From uploaded bytes to the 28x28 image the S4 net reads, the way MNIST itself was made.

MNIST digits are white ink on black, fitted into a 20x20 box keeping their aspect ratio (which
antialiases them) and placed in a 28x28 frame so that their centre of mass sits at the centre. An
image already in that form goes straight in, unchanged, so MNIST's own images give exactly the
predictions of the tensor path. Anything else (black ink on white paper, a phone photo, a large
drawing, a transparent canvas) is brought to that form by the small pure functions below, each
testable on its own:

    decode_gray (decode_gray_png, or decode_image -> to_grayscale), then -> to_mnist_form
    (ink_levels -> ink_to_mnist_form: crop_to_ink -> scale_to_box -> center_by_mass)

Most uploads are plain 8-bit grayscale PNGs (what Pillow, OpenCV and numpy-based clients write
for a digit). libspng, through imagecodecs, decodes those (decode_gray_png) to the very levels
Pillow gives, in 7 µs against Pillow's 59 for a 28x28 digit: Pillow reads PNG chunks in Python,
and that was the largest single cost of a /predict request. Any other image goes through Pillow.
"""

import struct
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from imagecodecs import spng_decode
from PIL import Image, ImageOps

MNIST_SIZE = 28  # the frame, in pixels
MNIST_BOX = 20  # the longer side of the digit inside the frame
MNIST_CENTER = 14.0  # where MNIST puts the centre of mass (row and column, in pixel indices)

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


class ImageRejected(Exception):
    """This image cannot be read as a digit; the message says why and what to send instead."""

    status_code = 422


class UnsupportedImage(ImageRejected):
    """The bytes are not an image in any format Pillow can read."""

    status_code = 415


class ImageTooLarge(ImageRejected):
    """The image decodes to more pixels than allowed (a decompression bomb, or just too big)."""

    status_code = 413


class BlankImage(ImageRejected):
    """There is no ink to read: answering with a digit would be a guess."""


@dataclass(frozen=True)
class PreparedImage:
    input_size: tuple[int, int]  # (width, height) as uploaded
    pixels: np.ndarray  # uint8 [28, 28], MNIST form: 0 = background, 255 = ink


def prepare_image(data: bytes, max_pixels: int) -> PreparedImage:
    """Decode an upload and bring it to MNIST form; raises an ImageRejected subclass if it can't."""
    gray = decode_gray(data, max_pixels)
    return PreparedImage(input_size=(gray.shape[1], gray.shape[0]), pixels=to_mnist_form(gray))


def decode_gray(data: bytes, max_pixels: int) -> np.ndarray:
    """An upload's uint8 gray levels [height, width], upright; raises an ImageRejected subclass."""
    gray = decode_gray_png(data, max_pixels)
    return to_grayscale(decode_image(data, max_pixels)) if gray is None else gray


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


def median_level(levels: np.ndarray) -> float:
    """``np.median`` of an image's levels, from a partial sort that places the middle two only.

    The same value (the mean of the two middle levels when their count is even) in a fifth of
    the time on a 28x28 image, and every uploaded image needs one.
    """
    flat = levels.ravel()
    lower, upper = (flat.size - 1) // 2, flat.size // 2
    middle = np.partition(flat, (lower, upper))
    return (float(middle[lower]) + float(middle[upper])) / 2.0


def is_light_background(median: float) -> bool:
    """Whether a picture's median level (``median_level``) is light paper. Ink covers less than
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
        # Inverting the levels inverts their median: no second partial sort (megapixel photos).
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


def to_mnist_form(gray: np.ndarray) -> np.ndarray:
    """uint8 gray levels of any size -> uint8 [28, 28] MNIST form; raises BlankImage if no ink.

    28x28 light ink on a dark background is MNIST's own form and is used as it is (after the
    same blank check): the common case of a client sending MNIST-style images costs one median.
    """
    if gray.shape == (MNIST_SIZE, MNIST_SIZE):
        background = median_level(gray)
        if not is_light_background(background):
            check_ink(gray, background, float(gray.max()) - background)
            return gray
    return ink_to_mnist_form(ink_levels(gray))


def ink_to_mnist_form(levels: np.ndarray) -> np.ndarray:
    """Ink levels (``ink_levels``'s, with some ink) -> uint8 [28, 28]: crop, scale, centre."""
    return center_by_mass(scale_to_box(crop_to_ink(levels)))
