"""MNIST digits rendered the ways people send digits: each rendering is encoded file bytes.

Every rendering takes one MNIST digit (uint8 [28, 28], white ink on black) and a numpy Generator
(so a run is seeded and deterministic) and returns the bytes a user would upload: a PNG, or a
JPEG for a phone photo. bench/robustness.py reads them through the service's own path.

The MNIST-C rows are simple numpy/Pillow versions of the corruptions of Mu & Gilmer, "MNIST-C: A
Robustness Benchmark for Computer Vision" (2019, arXiv:1906.02337), those that an upload can
plausibly show: shot and impulse noise, glass and motion blur, fog, spatter, dotted line, zigzag
and canny edges. They follow the paper's recipes at one fixed, moderate severity; they are not
the paper's exact code or images (which use scipy, skimage and Wand).
"""

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Render = Callable[[np.ndarray, np.random.Generator], bytes]


@dataclass(frozen=True)
class Rendering:
    name: str
    render: Render
    mnist_c: bool = False  # one of the MNIST-C corruptions (reported as their own group)


# Encoding and small helpers ---------------------------------------------------------------------


def png(pixels: np.ndarray | Image.Image) -> bytes:
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def to_uint8(levels: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(levels), 0, 255).astype(np.uint8)


def ink_crop(pixels: np.ndarray) -> Image.Image:
    """The digit cropped to its ink's bounding box."""
    rows, cols = np.flatnonzero(pixels.any(axis=1)), np.flatnonzero(pixels.any(axis=0))
    return Image.fromarray(pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])


def fit(image: Image.Image, longer_side: int, resample=Image.Resampling.LANCZOS) -> Image.Image:
    """Resized so its longer side is ``longer_side``, aspect kept."""
    scale = longer_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, resample)


def place(digit: Image.Image, canvas: int, top_left: tuple[int, int] | None = None) -> np.ndarray:
    """``digit`` (white on black) on a black square canvas, centred unless ``top_left`` is given."""
    frame = Image.new("L", (canvas, canvas))
    if top_left is None:
        top_left = ((canvas - digit.width) // 2, (canvas - digit.height) // 2)
    frame.paste(digit, top_left)
    return np.asarray(frame)


def on_paper(ink: np.ndarray, rng: np.random.Generator, paper: float = 235.0) -> np.ndarray:
    """White-on-black ink levels -> a grayscale scan: dark ink on slightly noisy white paper."""
    level = ink.astype(np.float64) / 255.0
    background = paper + rng.normal(0.0, 4.0, size=ink.shape)
    return to_uint8(background + level * (30.0 - background))


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field in [0, 1]: random values on a coarse grid, bicubically upsampled."""
    coarse = Image.fromarray(rng.random((cells, cells)).astype(np.float32))
    field = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64)
    field -= field.min()
    return field / max(field.max(), 1e-9)


def shifted(levels: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``levels`` moved by (dy, dx) pixels, zeros coming in at the edges."""
    out = np.zeros_like(levels)
    h, w = levels.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = levels[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


# How people send digits -------------------------------------------------------------------------


def as_is(pixels, rng):
    return png(pixels)


def black_on_white(pixels, rng):
    return png(255 - pixels)


def tight_crop(pixels, rng):
    """Cropped to the ink, 26 px tall with its aspect kept, centred in 28x28 (not by mass)."""
    digit = ink_crop(pixels)
    width = min(28, max(1, round(digit.width * 26 / digit.height)))
    return png(place(digit.resize((width, 26), Image.Resampling.LANCZOS), 28))


def stretched(pixels, rng):
    """Cropped to the ink and stretched to fill 26x26 (aspect lost), in 28x28."""
    return png(place(ink_crop(pixels).resize((26, 26), Image.Resampling.LANCZOS), 28))


def scan(size: int) -> Render:
    """Black ink on white paper, the digit ~70 % of a size x size scan, a little off-centre."""

    def render(pixels, rng):
        digit = fit(ink_crop(pixels), round(0.7 * size), Image.Resampling.BICUBIC)
        slack = size - max(digit.size)
        jitter = rng.integers(-slack // 4, slack // 4 + 1, size=2)
        top_left = ((size - digit.width) // 2 + jitter[0], (size - digit.height) // 2 + jitter[1])
        return png(on_paper(place(digit, size, tuple(int(v) for v in top_left)), rng))

    return render


def low_resolution(side: int) -> Render:
    """The digit at ``side`` px on its longer side (area-averaged), then enlarged 4x again."""

    def render(pixels, rng):
        small = fit(ink_crop(pixels), side, Image.Resampling.BOX)
        big = small.resize((small.width * 4, small.height * 4), Image.Resampling.BILINEAR)
        return png(place(big, side * 4 + 8))

    return render


def thick_marker(pixels, rng):
    """Strokes about 2 px wider: a 3x3 max filter (grey dilation)."""
    return png(Image.fromarray(pixels).filter(ImageFilter.MaxFilter(3)))


def thin_pen(pixels, rng):
    """Strokes about 1.3 px narrower: enlarged 3x, then a 5x5 min filter (grey erosion)."""
    big = Image.fromarray(pixels).resize((84, 84), Image.Resampling.BICUBIC)
    return png(big.filter(ImageFilter.MinFilter(5)))


def rotated(degrees: float) -> Render:
    """Turned by ``degrees`` one way or the other (seeded), on an enlarged canvas."""

    def render(pixels, rng):
        image = Image.fromarray(pixels)
        return png(image.rotate(degrees * sign(rng), Image.Resampling.BICUBIC, expand=True))

    return render


def sheared(pixels, rng):
    """Slanted: horizontal shear of 0.3 (about 17 degrees) either way, on a wider canvas."""
    shear = 0.3 * sign(rng)
    wide = place(Image.fromarray(pixels), 40)
    # Image.transform maps output (x, y) to input (x + shear * (y - 20), y).
    matrix = (1.0, shear, -shear * 20, 0.0, 1.0, 0.0)
    return png(
        Image.fromarray(wide).transform(
            (40, 40), Image.Transform.AFFINE, matrix, Image.Resampling.BICUBIC
        )
    )


def blurred(pixels, rng):
    """Out of focus: a Gaussian blur of radius 1.2 px at MNIST's scale."""
    return png(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(1.2)))


def off_centre(pixels, rng):
    """A 56-px digit somewhere on a 200x200 black canvas (a drawing pad)."""
    digit = Image.fromarray(pixels).resize((56, 56), Image.Resampling.BICUBIC)
    top_left = tuple(int(v) for v in rng.integers(0, 200 - 56, size=2))
    return png(place(digit, 200, top_left))


def phone_photo(pixels, rng):
    """A phone photo of ink on paper: RGB, tinted paper with texture and light falling off across
    the frame, sensor noise, the digit a little off-centre, saved as JPEG quality 50."""
    size = 160
    digit = Image.fromarray(pixels).resize((96, 96), Image.Resampling.BICUBIC)
    top_left = tuple(int(v) for v in rng.integers(16, size - 96 - 16, size=2))
    ink = place(digit, size, top_left).astype(np.float64) / 255.0
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:size, 0:size] / size
    light = 1.0 - 0.35 * (np.cos(angle) * xs + np.sin(angle) * ys + 1) / 2
    texture = 1.0 + 0.06 * (smooth_noise(rng, size, 12) - 0.5)
    paper = np.array([232.0, 226.0, 212.0]) * (light * texture)[..., None]
    pen = np.array([35.0, 38.0, 60.0]) * light[..., None]
    rgb = paper + ink[..., None] * (pen - paper) + rng.normal(0.0, 6.0, size=(size, size, 3))
    return jpeg(Image.fromarray(to_uint8(rgb), "RGB"), quality=50)


# MNIST-C (Mu & Gilmer, 2019), on the 28x28 digit -----------------------------------------------


def shot_noise(pixels, rng):
    """Poisson photon noise: each level drawn as Poisson(level * 12) / 12."""
    return png(to_uint8(rng.poisson(pixels / 255.0 * 12.0) / 12.0 * 255.0))


def impulse_noise(pixels, rng):
    """Salt-and-pepper noise on 4 % of the pixels."""
    out = pixels.copy()
    hit = rng.random(pixels.shape)
    out[hit < 0.02] = 0
    out[hit > 0.98] = 255
    return png(out)


def glass_blur(pixels, rng):
    """Gaussian blur (sigma 0.7), each pixel swapped with a random neighbour, blurred again."""
    blur = ImageFilter.GaussianBlur(0.7)
    levels = np.asarray(Image.fromarray(pixels).filter(blur))
    dy, dx = rng.integers(-1, 2, size=(2, 28, 28))
    rows, cols = np.indices((28, 28))
    swapped = levels[np.clip(rows + dy, 0, 27), np.clip(cols + dx, 0, 27)]
    return png(Image.fromarray(swapped).filter(blur))


def motion_blur(pixels, rng):
    """A 7-px straight camera shake at a random angle: the mean of shifted copies along it."""
    angle = rng.uniform(0, np.pi)
    levels = pixels.astype(np.float64)
    steps = np.arange(-3, 4)
    copies = [shifted(levels, round(s * np.sin(angle)), round(s * np.cos(angle))) for s in steps]
    return png(to_uint8(np.mean(copies, axis=0)))


def fog(pixels, rng):
    """A smooth grey haze added (a sum of random fields at 3 scales), levels rescaled to 255."""
    haze = sum(smooth_noise(rng, 28, cells) / 2**octave for octave, cells in enumerate((3, 6, 12)))
    levels = pixels / 255.0 + 0.5 * haze / 1.75
    return png(to_uint8(levels / levels.max() * 255.0))


def spatter(pixels, rng):
    """Splashes: a few grey blobs where a smooth random field peaks."""
    field = smooth_noise(rng, 28, 9)
    blobs = np.clip((field - 0.8) / 0.2, 0.0, 1.0) * 0.7
    return png(to_uint8(np.maximum(pixels / 255.0, blobs) * 255.0))


def dotted_line(pixels, rng):
    """A dotted line (a white dot every 3 px) drawn across the image between two random edges."""
    image = Image.fromarray(pixels)
    start, end = rng.uniform(0, 27, size=(2, 2))
    start[rng.integers(2)], end[rng.integers(2)] = 0.0, 27.0
    length = np.hypot(*(end - start))
    draw = ImageDraw.Draw(image)
    for t in np.arange(0.0, 1.0, 3.0 / max(length, 1.0)):
        x, y = start + t * (end - start)
        draw.point((round(x), round(y)), fill=255)
    return png(image)


def zigzag(pixels, rng):
    """A 1-px zigzag (4 segments) scribbled across the image."""
    image = Image.fromarray(pixels)
    xs = np.linspace(rng.uniform(0, 6), rng.uniform(21, 27), 5)
    ys = rng.uniform(2, 25, size=5)
    ImageDraw.Draw(image).line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=200, width=1)
    return png(image)


def canny_edges(pixels, rng):
    """Only the outlines of the strokes: the 1-px ring just outside the binarised ink."""
    ink = pixels > 127
    grown = np.asarray(Image.fromarray(ink.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(3)))
    return png(((grown > 0) & ~ink).astype(np.uint8) * 255)


RENDERINGS = (
    Rendering("MNIST as is", as_is),
    Rendering("28x28 black on white", black_on_white),
    Rendering("tight crop 28x28, aspect kept", tight_crop),
    Rendering("stretched to 26x26 (aspect lost)", stretched),
    Rendering("scan, black on white, 64 px", scan(64)),
    Rendering("scan, black on white, 300 px", scan(300)),
    Rendering("low resolution 8 px, enlarged", low_resolution(8)),
    Rendering("low resolution 12 px, enlarged", low_resolution(12)),
    Rendering("thick marker (dilated)", thick_marker),
    Rendering("thin pen (eroded)", thin_pen),
    Rendering("rotated ±15°", rotated(15)),
    Rendering("rotated ±25°", rotated(25)),
    Rendering("sheared ±0.3", sheared),
    Rendering("phone photo of paper, JPEG 50", phone_photo),
    Rendering("blurred (Gaussian 1.2 px)", blurred),
    Rendering("off-centre on a 200x200 canvas", off_centre),
    Rendering("MNIST-C shot noise", shot_noise, mnist_c=True),
    Rendering("MNIST-C impulse noise", impulse_noise, mnist_c=True),
    Rendering("MNIST-C glass blur", glass_blur, mnist_c=True),
    Rendering("MNIST-C motion blur", motion_blur, mnist_c=True),
    Rendering("MNIST-C fog", fog, mnist_c=True),
    Rendering("MNIST-C spatter", spatter, mnist_c=True),
    Rendering("MNIST-C dotted line", dotted_line, mnist_c=True),
    Rendering("MNIST-C zigzag", zigzag, mnist_c=True),
    Rendering("MNIST-C canny edges", canny_edges, mnist_c=True),
)
