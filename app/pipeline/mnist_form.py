"""MNIST form: uint8 gray levels of any size -> a uint8 [28, 28] digit as MNIST was made.

MNIST digits are white ink on black, fitted into a 20x20 box keeping their aspect ratio (which
antialiases them) and placed in a 28x28 frame so that their centre of mass sits at the centre.
An image already in that form (is_mnist_form, measured on MNIST) goes straight in, unchanged;
anything else (a 28x28 digit cropped tight or stretched included) is brought to it:
    decode (decode_gray_png, else decode_image -> to_grayscale) -> to_mnist_form
    (ink_levels -> ink_to_mnist_form: crop_to_ink -> scale_to_box -> center_by_mass)
"""

import math

import cv2
import numpy as np
from PIL import Image

from app.pipeline.errors import BlankImage

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


def level_counts(gray: np.ndarray) -> np.ndarray:
    """How many pixels of uint8 ``gray`` have each level: int64 [256]. The median, the strongest
    ink and the ink check all come from these counts, in one pass over the image."""
    return np.bincount(gray.ravel(), minlength=256)


def median_level(counts: np.ndarray) -> float:
    """The median level of the pixels ``counts`` counts (at least one): ``np.median`` of them."""
    cumulative = counts.cumsum()
    middle = (int(cumulative[-1]) - 1) // 2
    low = int(cumulative.searchsorted(middle, "right"))  # the level of the middle-th pixel
    if cumulative[-1] % 2:
        return float(low)
    return (low + int(cumulative.searchsorted(middle + 1, "right"))) / 2.0


def is_light_background(median: float) -> bool:
    """Whether a picture's median level is light paper. Ink covers less than
    half of a digit picture, so the median pixel is background."""
    return median > 127.5


_LEVELS = np.arange(256, dtype=np.float32)


def ink_levels(gray: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    """Gray levels -> float32 ink levels in [0, 1]: 0 for background, 1 for the strongest ink.

    A light background is inverted first (black ink on white paper). The background level (the
    median) maps to 0 and the strongest ink to 1, which evens out grey paper and faint pencil;
    levels under NOISE_FLOOR become 0. Raises BlankImage when nothing stands out as ink.
    ``counts`` is ``level_counts(gray)``, when the caller has it already. Every pixel of a level
    gets the same ink level, so they are worked out once per level and looked up (cv2.LUT).
    """
    counts = level_counts(gray) if counts is None else counts
    background = median_level(counts)
    ink_counts = counts
    if is_light_background(background):
        # Ink is 255 - gray: the counts reversed, the median inverted.
        ink_counts, background = counts[::-1], 255.0 - background
    contrast = float(ink_counts.nonzero()[0][-1]) - background
    check_ink(ink_counts, background, contrast)
    levels = ((_LEVELS - background) / contrast).clip(0.0, 1.0)
    levels[levels < NOISE_FLOOR] = 0.0
    lookup = levels[::-1].copy() if ink_counts is not counts else levels  # by gray level
    return cv2.LUT(np.ascontiguousarray(gray), lookup).reshape(gray.shape)


def check_ink(ink_counts: np.ndarray, background: float, contrast: float) -> None:
    """Raise BlankImage unless some ink stands out: enough contrast, more than a speck of it.
    ``ink_counts``: how many pixels have each ink level (0..255)."""
    if contrast < MIN_INK_CONTRAST:
        raise BlankImage(
            f"is blank: no ink stands out from the background (contrast {contrast:.0f} of 255); "
            "send a picture of one digit, dark on light or light on dark"
        )
    # Pixels at half the ink level or more; the threshold is a multiple of 0.25.
    if int(ink_counts[math.ceil(background + 0.5 * contrast) :].sum()) < MIN_INK_PIXELS:
        raise BlankImage(
            "is nearly blank: only a speck of ink; send a picture of one digit, dark on light or "
            "light on dark"
        )


def crop_to_ink(levels: np.ndarray) -> np.ndarray:
    """The smallest rectangle holding every non-zero level (the ink's bounding box)."""
    left, top, width, height = cv2.boundingRect((levels != 0).view(np.uint8))
    return levels[top : top + height, left : left + width]


def scale_to_box(levels: np.ndarray, box: int = MNIST_BOX) -> np.ndarray:
    """Resize so the longer side is ``box`` pixels, keeping the aspect ratio; uint8 ink 0..255.

    Lanczos resampling antialiases when shrinking, as MNIST's normalisation did. Shrinking thin
    strokes greys them out, so the result is stretched back to full-strength ink (MNIST digits
    all reach 255). The resampling is Pillow's, on float32 (OpenCV's Lanczos is another filter).
    """
    height, width = levels.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    floats = np.ascontiguousarray(levels, dtype=np.float32)
    image = Image.frombuffer("F", (width, height), floats, "raw", "F", 0, 1)
    resized = image.resize(size, Image.Resampling.LANCZOS)
    scaled = np.maximum(np.frombuffer(resized.tobytes(), np.float32), 0.0).reshape(size[::-1])
    peak = scaled.max()
    scaled *= 255.0
    scaled /= peak
    return np.rint(scaled, out=scaled).astype(np.uint8)


def center_by_mass(digit: np.ndarray, size: int = MNIST_SIZE) -> np.ndarray:
    """Place uint8 ``digit`` in a size x size black frame with its centre of mass at MNIST's
    centre.

    The shift is a whole number of pixels, as in MNIST, and clamped so no ink leaves the frame.
    """
    height, width = digit.shape
    moments = cv2.moments(digit)  # integer sums for uint8 pixels: exact
    center_row = moments["m01"] / moments["m00"]
    center_col = moments["m10"] / moments["m00"]
    top = min(max(round(MNIST_CENTER - center_row), 0), size - height)
    left = min(max(round(MNIST_CENTER - center_col), 0), size - width)
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
    if background is None:
        background = median_level(level_counts(gray))
    if is_light_background(background):
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
    counts = level_counts(gray)
    if gray.shape == (MNIST_SIZE, MNIST_SIZE):
        background = median_level(counts)
        if is_mnist_form(gray, background):
            check_ink(counts, background, float(counts.nonzero()[0][-1]) - background)
            return gray
    return ink_to_mnist_form(ink_levels(gray, counts))


def ink_to_mnist_form(levels: np.ndarray) -> np.ndarray:
    """Ink levels (``ink_levels``'s, with some ink) -> uint8 [28, 28]: crop, scale, centre."""
    return center_by_mass(scale_to_box(crop_to_ink(levels)))
