"""Numbers composed from real MNIST digits: the pictures /read is measured on and learns from.

``compose`` (clean) and ``compose_realistic`` put ``length`` digits side by side with a chosen gap
between their inks (GAPS; negative: they overlap). Two styles:

- clean: each digit scaled by +-15 % and moved up or down by +-15 % of its height, the number
  slanted slightly, half black ink on white paper and half white on black, given as gray levels;
- realistic: the number drawn 1-2.5x MNIST's size, digit heights varying +-25 % within it, sat
  on a baseline that wanders by up to a third of a digit, rotated up to +-6 degrees, then put on
  paper as a phone or scanner would see it (dark ink on grey paper with uneven light and noise,
  pencil-grey ink, or blue ink on white), saved as JPEG at quality 70-90 and decoded as the
  service decodes uploads (app.pipeline.decode).

A few numbers get a stray pen stroke above or below the digits. Each Sample also says which
digit each pixel's ink came from (``owners``), so a candidate digit can be checked against the
truth. bench/numbers.py composes from MNIST *test* digits (the figures) or the holdout (tuning);
training/digit_check.py from the training digits before the holdout.
"""

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from app.pipeline.decode import decode
from app.pipeline.mnist_form import crop_to_ink

GAPS = {"wide": 8, "normal": 3, "touching": 0, "overlap 2px": -2}  # px between inks, at 28 px
STYLES = ("clean", "realistic")
LENGTHS = range(1, 11)
JITTER = 0.15  # clean: size and baseline, of the digit's height
MAX_SLANT = 0.15  # clean: horizontal shear, px per px of height (about 8.5 degrees)
HEIGHT_SPREAD = 0.25  # realistic: digit heights within a number, +-
BASELINE_WANDER = 1 / 3  # realistic: the baseline's rise and fall, of the digits' height
MAX_ROTATION = 6.0  # realistic: degrees, either way
STRAY_MARK_SHARE = 0.1  # of the numbers get a stray pen mark
MARGIN = 12  # px of background around the number, at MNIST's size
HOLDOUT = 5000  # the training set's last images: tuning only, never trained on
MAX_PIXELS = 10_000_000
OWNED_LEVEL = 64  # a digit owns the pixels where its ink is at least this level (of 255)
STRAY_OWNER = 255  # the owner of a stray mark's pixels


@dataclass(frozen=True)
class Sample:
    picture: np.ndarray  # uint8 gray levels, as the service sees the upload
    text: str
    gap: str
    style: str
    stray_mark: bool
    owners: np.ndarray  # uint8, the picture's shape: 1 + the index of the digit whose ink
    # covers the pixel most, STRAY_OWNER on a stray mark, 0 elsewhere (after the same geometry)
    upload: bytes | None = None  # the file a user would send (realistic); None: the gray levels


def resized(ink: np.ndarray, scale: float) -> np.ndarray:
    size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
    return np.asarray(Image.fromarray(ink).resize(size, Image.Resampling.BILINEAR))


def compose(
    images: np.ndarray,
    labels: np.ndarray,
    length: int,
    gap: str,
    rng: np.random.Generator,
    stray_mark: bool = False,
) -> Sample:
    """One clean number: ``length`` random digits of ``images`` side by side, white ink on black,
    then slanted, marked and (half the time) turned into black ink on white paper."""
    picks = rng.integers(0, len(images), size=length)
    digits = [
        resized(crop_to_ink(images[index]), 1.0 + rng.uniform(-JITTER, JITTER)) for index in picks
    ]
    shifts = [round(rng.uniform(-JITTER, JITTER) * digit.shape[0]) for digit in digits]
    height = max(d.shape[0] + 2 * abs(s) for d, s in zip(digits, shifts, strict=True))
    tops = [(height - d.shape[0]) // 2 + s for d, s in zip(digits, shifts, strict=True)]
    canvas, owners = side_by_side(digits, tops, height, GAPS[gap], MARGIN)
    if stray_mark:
        add_stray_mark(canvas, owners, rng, MARGIN, 1.0)
    slant = rng.uniform(-MAX_SLANT, MAX_SLANT)
    shear = (1, slant, -slant * canvas.shape[0] / 2, 0, 1, 0)
    size = canvas.shape[::-1]
    picture = Image.fromarray(canvas).transform(
        size, Image.Transform.AFFINE, shear, Image.Resampling.BILINEAR
    )
    owners = Image.fromarray(owners).transform(
        size, Image.Transform.AFFINE, shear, Image.Resampling.NEAREST
    )
    pixels = np.asarray(picture)
    if rng.random() < 0.5:
        pixels = 255 - pixels
    return Sample(pixels, text_of(labels, picks), gap, "clean", stray_mark, np.asarray(owners))


def compose_realistic(
    images: np.ndarray,
    labels: np.ndarray,
    length: int,
    gap: str,
    rng: np.random.Generator,
    stray_mark: bool = False,
) -> Sample:
    """One realistic number: digits of unequal height on a wandering baseline, rotated, on paper
    (``on_paper``), saved as JPEG and decoded as the service decodes it."""
    picks = rng.integers(0, len(images), size=length)
    scale = rng.uniform(1.0, 2.5)
    heights = scale * (1.0 + rng.uniform(-HEIGHT_SPREAD, HEIGHT_SPREAD, size=length))
    digits = [
        resized(crop_to_ink(images[index]), h) for index, h in zip(picks, heights, strict=True)
    ]
    tall = 20 * scale  # MNIST's ink is 20 px tall
    # The baseline: a slow wave whose rise and fall spans up to BASELINE_WANDER of a digit.
    wander = rng.uniform(0, BASELINE_WANDER) * tall / 2
    phase, pace = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.5)
    baselines = [wander * np.sin(phase + pace * i) for i in range(length)]
    bottom = max(d.shape[0] for d in digits) + wander
    tops = [round(bottom + b - d.shape[0]) for d, b in zip(digits, baselines, strict=True)]
    lowest = min(tops)
    tops = [top - lowest for top in tops]
    height = max(top + d.shape[0] for top, d in zip(tops, digits, strict=True))
    margin = round(MARGIN * scale)
    canvas, owners = side_by_side(digits, tops, height, round(GAPS[gap] * scale), margin)
    if stray_mark:
        add_stray_mark(canvas, owners, rng, margin, scale)
    angle = rng.uniform(-MAX_ROTATION, MAX_ROTATION)
    ink = np.asarray(Image.fromarray(canvas).rotate(angle, Image.Resampling.BICUBIC, expand=True))
    owners = Image.fromarray(owners).rotate(angle, Image.Resampling.NEAREST, expand=True)
    upload = on_paper(ink, rng)
    return Sample(decode(upload, MAX_PIXELS), text_of(labels, picks), gap, "realistic",
                  stray_mark, np.asarray(owners), upload)  # fmt: skip


def side_by_side(
    digits: list[np.ndarray], tops: list[int], height: int, gap: int, margin: int
) -> tuple[np.ndarray, np.ndarray]:
    """White-on-black digits left to right, ``gap`` px between inks, each at its top row; and
    the owners (1 + the digit's index where its ink is the stronger, else 0)."""
    width = sum(d.shape[1] for d in digits) + gap * (len(digits) - 1) + 2 * margin
    canvas = np.zeros((height + 2 * margin, max(width, 1)), dtype=np.uint8)
    owners = np.zeros_like(canvas)
    x = margin
    for index, (digit, top) in enumerate(zip(digits, tops, strict=True)):
        area = (slice(margin + top, margin + top + digit.shape[0]), slice(x, x + digit.shape[1]))
        stronger = digit > np.maximum(canvas[area], OWNED_LEVEL - 1)
        owners[area][stronger] = index + 1
        np.maximum(canvas[area], digit, out=canvas[area])
        x += digit.shape[1] + gap
    return canvas, owners


def text_of(labels: np.ndarray, picks: np.ndarray) -> str:
    return "".join(str(int(labels[i])) for i in picks)


def on_paper(ink: np.ndarray, rng: np.random.Generator) -> bytes:
    """White-on-black ink levels -> a JPEG (quality 70-90) of one of three kinds of writing:
    dark ink on grey paper lit unevenly, with sensor noise; pencil-grey ink with grain; or blue
    ink on white paper (RGB)."""
    level = ink.astype(np.float64)[..., None] / 255.0
    h, w = ink.shape
    ys, xs = np.mgrid[0:h, 0:w]
    kind = rng.integers(3)
    if kind == 0:  # dark ink, grey paper, light falling off across the picture, noise
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * xs / w + np.sin(angle) * ys / h + 1) / 2
        light = (1.0 - rng.uniform(0.1, 0.3) * ramp)[..., None]
        paper = rng.uniform(185, 225) * light * np.ones(3)
        pen = rng.uniform(20, 60) * light * np.ones(3)
        noise = rng.normal(0.0, rng.uniform(2, 6), size=(h, w, 3))
    elif kind == 1:  # pencil: grey, grainy strokes on white paper
        level = level * rng.uniform(0.6, 1.0, size=level.shape)
        paper = rng.uniform(225, 250) * np.ones((h, w, 3))
        pen = rng.uniform(90, 140) * np.ones(3)
        noise = rng.normal(0.0, 2.0, size=(h, w, 3))
    else:  # blue ballpoint on white paper
        paper = np.full((h, w, 3), rng.uniform(235, 252))
        pen = np.array([rng.uniform(20, 50), rng.uniform(30, 70), rng.uniform(120, 170)])
        noise = rng.normal(0.0, 2.0, size=(h, w, 3))
    rgb = paper + level * (pen - paper) + noise
    out = io.BytesIO()
    picture = Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")
    picture.save(out, format="JPEG", quality=int(rng.integers(70, 91)))
    return out.getvalue()


def add_stray_mark(
    canvas: np.ndarray, owners: np.ndarray, rng: np.random.Generator, margin: int, scale: float
) -> None:
    """A short, thin, straight stroke in the margin above or below the digits (its owner:
    STRAY_OWNER)."""
    length = rng.uniform(6, 12) * scale
    angle = rng.uniform(0, np.pi)
    cx = rng.uniform(margin, canvas.shape[1] - margin)
    cy = rng.choice([margin * 0.8, canvas.shape[0] - margin * 0.8])
    thick = max(2, round(2 * scale))
    for t in np.linspace(-0.5, 0.5, 40):
        x, y = cx + t * length * np.cos(angle), cy + t * length * np.sin(angle) * 0.5
        canvas[int(y) : int(y) + thick, int(x) : int(x) + thick] = 255
        owners[int(y) : int(y) + thick, int(x) : int(x) + thick] = STRAY_OWNER


COMPOSERS = {"clean": compose, "realistic": compose_realistic}
