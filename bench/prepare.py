"""Time to prepare one upload (decode, then MNIST form), per kind of image, without the service.

    .venv/bin/python -m bench.prepare                  # best of 7 timings of 2,000 calls each
    .venv/bin/python -m bench.prepare --number 500 --repeat 5

Images: the first MNIST test digit as a PNG (in MNIST form: used as it is), the same digit
stretched to 26x26 (bench.serve's `--upload stretched`: not in MNIST form, so it is cropped,
scaled and centred), docs/two-on-paper.jpg (a phone photo of a digit on paper), and that photo
enlarged to 2000x1500 as a grayscale PNG. Prints the best time per call of decode alone, MNIST
form alone and both (`app.pipeline.prepare.prepare`).
"""

import argparse
import io
import timeit
from pathlib import Path

import numpy as np
from PIL import Image

from app.pipeline.decode import decode
from app.pipeline.mnist_form import to_mnist_form
from app.pipeline.prepare import prepare
from app.pipeline.uploads import Upload
from app.settings import Settings
from bench.serve import MNIST_DIR, TEST_IMAGES, UPLOADS, read_idx

DOCS = Path(__file__).resolve().parent.parent / "docs"


def images() -> dict[str, bytes]:
    digit = read_idx(MNIST_DIR / TEST_IMAGES.name, TEST_IMAGES)[0].numpy()
    photo = Image.open(DOCS / "two-on-paper.jpg").convert("L").resize((2000, 1500))
    large = io.BytesIO()
    photo.save(large, "PNG")
    return {
        "MNIST digit PNG": UPLOADS["mnist"](digit, np.random.default_rng(0)),
        "stretched PNG": UPLOADS["stretched"](digit, np.random.default_rng(0)),
        "two-on-paper.jpg": (DOCS / "two-on-paper.jpg").read_bytes(),
        "2000x1500 PNG": large.getvalue(),
    }


def best_us(call, number: int, repeat: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=2000, help="calls per timing")
    parser.add_argument("--repeat", type=int, default=7, help="timings; the best is printed")
    args = parser.parse_args()
    max_pixels = Settings().max_pixels
    print(f"{'image':<18} {'bytes':>8} {'decode µs':>10} {'form µs':>9} {'prepare µs':>10}")
    for name, data in images().items():
        upload = Upload(0, name, data)
        gray = decode(data, max_pixels)
        # Large images: fewer calls, so that a run stays within seconds.
        number = max(1, args.number * 784 // max(784, gray.size // 100))
        calls = [
            lambda data=data: decode(data, max_pixels),
            lambda gray=gray: to_mnist_form(gray),
            lambda upload=upload: prepare(upload, max_pixels),
        ]
        timings = [best_us(call, number, args.repeat) for call in calls]
        print(f"{name:<18} {len(data):>8,} " + " ".join(f"{t:>9.1f}" for t in timings))


if __name__ == "__main__":
    main()
