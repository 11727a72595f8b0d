"""app.numbers.segmentation: pictures of several digits -> candidate digits -> the number.

The rules are tested on numbers written with real MNIST test digits (placed by the test, so each
picture shows exactly the case it names) and read with the committed weights; the pure steps on
drawn shapes. bench/numbers.py measures the rates; tests/test_numbers_bench.py runs its subset.
"""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from app.api.predict import status_code_of
from app.artifacts.weights import load_weights
from app.numbers.check import load_check
from app.numbers.marks import components
from app.numbers.reading import REVIEW_BELOW, calibrated, choose, read_number
from app.numbers.segmentation import (
    MAX_GROUPS,
    Segmentation,
    TooManyMarks,
    contested,
    segment,
)
from app.pipeline.errors import BlankImage
from app.pipeline.mnist_form import crop_to_ink, ink_levels, ink_to_mnist_form
from app.runtime.runtimes import OnnxRuntime
from bench.serve import COMMITTED_CHECK
from training.numbers import compose


@pytest.fixture(scope="module")
def forward(reading_weights):
    return OnnxRuntime(load_weights(reading_weights).tensors, threads=1)


@pytest.fixture(scope="module")
def check():
    return load_check(COMMITTED_CHECK)


@pytest.fixture(scope="module")
def digits(mnist_test_set) -> dict[int, list[np.ndarray]]:
    """The first MNIST test images of each digit, cropped to their ink (white on black)."""
    images, labels = mnist_test_set
    return {
        d: [crop_to_ink(images[i]) for i in np.flatnonzero(labels == d)[:20]] for d in range(10)
    }


def write(
    inks: list[np.ndarray],
    gaps: list[int],
    raise_by: list[int] | None = None,
    scale: list[float] | None = None,
) -> np.ndarray:
    """Black-on-white picture of ``inks`` side by side: ``gaps`` px between neighbours' ink
    (negative: they overlap), each digit's bottom ``raise_by`` px above the baseline, each
    scaled by ``scale`` (2x MNIST's size to start with)."""
    raise_by = raise_by or [0] * len(inks)
    scale = scale or [1.0] * len(inks)
    sized = [
        np.asarray(Image.fromarray(ink).resize(
            (max(1, round(ink.shape[1] * 2 * s)), round(ink.shape[0] * 2 * s)),
            Image.Resampling.BILINEAR,
        ))
        for ink, s in zip(inks, scale, strict=True)
    ]  # fmt: skip
    tallest = max(ink.shape[0] + r for ink, r in zip(sized, raise_by, strict=True))
    width = sum(ink.shape[1] for ink in sized) + sum(gaps) + 60
    canvas = np.zeros((tallest + 60, width), dtype=np.uint8)
    x = 30
    for ink, up, gap in zip(sized, raise_by, [*gaps, 0], strict=True):
        top = 30 + tallest - ink.shape[0] - up
        region = canvas[top : top + ink.shape[0], x : x + ink.shape[1]]
        np.maximum(region, ink, out=region)
        x += ink.shape[1] + gap
    return 255 - canvas


def thinnest(inks: list[np.ndarray]) -> np.ndarray:
    return min(inks, key=lambda ink: ink.shape[1] / ink.shape[0])


# Never drop a digit ---------------------------------------------------------------------------


def test_a_thin_1_between_wider_digits_is_a_digit(digits, forward, check):
    one = thinnest(digits[1])
    assert one.shape[1] <= 0.25 * one.shape[0]  # a single stroke
    picture = write([digits[5][0], one, digits[9][0], digits[8][0]], [6, 6, 6])
    assert read_number(picture, forward, check).text == "5198"


def test_a_digit_0_6x_the_height_of_the_tallest_is_a_digit(digits, forward, check):
    picture = write(
        [digits[9][1], digits[3][0], digits[3][1], digits[9][2]], [6, 6, 6],
        scale=[1.0, 1.0, 1.0, 0.6],
    )  # fmt: skip
    assert read_number(picture, forward, check).text == "9339"


def test_a_digit_written_half_a_digit_higher_is_a_digit(digits, forward, check):
    picture = write(
        [digits[1][0], digits[1][2], digits[9][3], digits[8][1]], [8, 8, 8],
        raise_by=[0, 0, 0, 0],
    )  # fmt: skip
    height = 2 * digits[9][3].shape[0]
    raised = write(
        [digits[1][0], digits[1][2], digits[9][3], digits[8][1]], [8, 8, 8],
        raise_by=[0, 0, height // 2, 0],
    )  # fmt: skip
    assert (
        read_number(picture, forward, check).text
        == read_number(raised, forward, check).text
        == "1198"
    )


def test_a_digit_written_wide_and_low_is_a_digit(digits, forward, check, mnist_test_set):
    """The flattest 5 of MNIST's test set, squashed to 0.6 of its height: about a third of the
    writing's height, but as wide as a digit and on the line (before: 870, at p = 0.998)."""
    images, labels = mnist_test_set
    fives = [crop_to_ink(images[i]) for i in np.flatnonzero(labels == 5)]
    flattest = min(fives, key=lambda ink: ink.shape[0] / ink.shape[1])
    width, height = flattest.shape[1], round(0.6 * flattest.shape[0])
    flat = np.asarray(Image.fromarray(flattest).resize((width, height), Image.Resampling.BILINEAR))
    picture = write([digits[8][0], flat, digits[7][0], digits[0][0]], [8, 8, 8])
    assert read_number(picture, forward, check).text == "8570"


def test_a_5s_bar_written_apart_from_its_body_stays_with_it(digits, forward, check, mnist_test_set):
    """MNIST test image 4711: a 5 whose bar is a separate stroke, overlapping its body by under
    half the body's width (before: the bar was dropped and the 5 read as 0)."""
    images, labels = mnist_test_set
    five = crop_to_ink(images[4711])
    assert labels[4711] == 5 and len(components(ink_levels(write([five], [])))[1]) == 2
    picture = write([digits[0][0], digits[6][0], digits[0][1], five], [8, 8, 8])
    assert read_number(picture, forward, check).text == "0605"


def test_a_loose_bar_high_beside_a_digit_is_not_a_digit(digits, forward, check):
    """A stroke as wide as a digit, flat, standing alone but high on the line (as a 5's bar
    that came loose does) is left out."""
    picture = write([digits[2][0], digits[0][0], digits[4][0], digits[7][0]], [8, 8, 8])
    left, top, width, height = segment(picture, check).boxes[3]
    image = Image.fromarray(picture)
    x = left + width + 4
    ImageDraw.Draw(image).line((x, top + 2, x + int(0.7 * height), top + height // 4), 0, 4)
    assert read_number(np.asarray(image), forward, check).text == "2047"


@pytest.mark.parametrize("where", ["under", "across the top"])
def test_a_stray_pen_stroke_off_the_line_is_dropped(digits, forward, where, check):
    picture = write([digits[2][0], digits[0][0], digits[4][0], digits[7][0]], [8, 8, 8])
    image = Image.fromarray(picture)
    width, height = image.size
    y = height - 18 if where == "under" else 12
    ImageDraw.Draw(image).line((40, y, width - 40, y + 4), fill=0, width=3)
    assert read_number(np.asarray(image), forward, check).text == "2047"


def test_a_short_stroke_just_over_a_digit_is_left_out_by_the_digit_check(digits, forward, check):
    """A short stroke just over a small 0, on the line of writing and close enough to be merged
    with it as a piece of the digit: the 0 without it is also a candidate, and the check
    prefers it."""
    picture = write([digits[4][0], digits[0][0], digits[7][0]], [12, 12], scale=[1, 0.7, 1])
    image = Image.fromarray(picture)
    box = segment(picture, check).boxes[1]  # the 0's ink
    x, top = box[0] + box[2] // 2, box[1]
    ImageDraw.Draw(image).line((x - 4, top - 11, x + 6, top - 6), fill=0, width=4)
    marked = np.asarray(image)
    found = segment(marked, check)
    merged = [k for k, b in enumerate(found.boxes) if b[1] < top - 3]
    assert merged, "the stroke was not merged into the 0: the test draws the wrong case"
    assert read_number(marked, forward, check).text == "407"


def test_large_writing_is_read_from_a_smaller_copy_with_boxes_in_the_pictures_pixels(
    digits, forward, check
):
    picture = write([digits[4][0], digits[0][0], digits[7][0]], [12, 12])
    large = np.asarray(
        Image.fromarray(picture).resize((picture.shape[1] * 6, picture.shape[0] * 6))
    )
    small_reading, large_reading = (
        read_number(picture, forward, check),
        read_number(large, forward, check),
    )
    assert small_reading.text == large_reading.text == "407"
    for small, big in zip(small_reading.digits, large_reading.digits, strict=True):
        assert np.allclose(np.array(big.box), 6 * np.array(small.box), atol=12), (big, small)


# Touching and overlapping digits ----------------------------------------------------------


@pytest.mark.parametrize(("gap", "case"), [(-4, "touching"), (-8, "overlapping")])
def test_touching_and_overlapping_pairs_are_split_by_recognition(digits, forward, gap, case, check):
    """A fixed draw (some pairs are still misread: bench/numbers.py measures the rate)."""
    picture = write([digits[3][0], digits[5][1], digits[2][1], digits[6][0]], [8, gap, 8])
    segmentation = segment(picture, check)
    pixels = np.stack([candidate.pixels for candidate in segmentation.candidates])
    probabilities = forward(pixels)
    reading = choose(segmentation, probabilities)
    assert reading.text == "3526", case
    # The pair is one mark: it was cut into candidates, and the net's reading chose the cut.
    assert len(segmentation.candidates) > 4
    pair = [digit.box for digit in reading.digits[1:3]]
    assert pair[0][0] < pair[1][0]


def test_choose_is_the_best_path_of_log_probabilities_plus_priors():
    """Positions 0-1-2: candidate 0 spans 0-2 (one wide mark), 1 and 2 its halves."""
    segmentation = Segmentation(
        input_size=(40, 20),
        candidates=[],
        boxes=[(0, 0, 40, 20), (0, 0, 16, 20), (20, 0, 16, 20)],
        spans=[(0, 2), (0, 1), (1, 2)],
        widths=[2.0, 0.9, 0.9],  # the whole is twice the writing's typical digit width
        aspects=[2.0, 0.8, 0.8],
        log_whole=np.zeros(3),  # the check has no say here
        positions=3,
    )
    probabilities = np.full((3, 10), 1e-4, dtype=np.float32)
    probabilities[0, 8] = probabilities[1, 3] = probabilities[2, 7] = 0.99
    assert choose(segmentation, probabilities).text == "37"  # a wide 8 is two digits
    narrow = Segmentation(**{**segmentation.__dict__, "widths": [1.0, 0.45, 0.45],
                             "aspects": [0.8, 0.35, 0.35]})  # fmt: skip
    assert choose(narrow, probabilities).text == "8"  # slivers of a digit are not a 3 and a 7


# needs_review -------------------------------------------------------------------------------


def test_a_clear_number_is_not_flagged_and_a_doubtful_one_is(digits, forward, check):
    clear = read_number(write([digits[4][0], digits[0][1], digits[7][1]], [10, 10]), forward, check)
    assert clear.text == "407" and not clear.needs_review
    assert clear.probability >= REVIEW_BELOW
    # Two digits written over each other: no reading of that is sure.
    scrawl = write([digits[4][0], digits[8][0], digits[3][0]], [10, -20])
    doubtful = read_number(scrawl, forward, check)
    assert doubtful.needs_review and doubtful.probability < clear.probability


def test_only_contested_candidates_are_judged_by_the_check(digits, check):
    # 0-1, 1-2: each alone at its positions; 2-3 and 2-4 and 3-4: a piece that may be two digits.
    assert contested([(0, 1), (1, 2), (2, 3), (2, 4), (3, 4)]).tolist() == [
        False, False, True, True, True
    ]  # fmt: skip
    apart = segment(write([digits[4][0], digits[0][0], digits[7][0]], [12, 12]), check)
    touching = segment(write([digits[3][0], digits[5][1]], [-4]), check)
    assert not apart.log_whole.any()  # three separate digits: nothing to choose between
    assert (touching.log_whole < 0).any()


def test_the_probability_grows_with_the_digits_confidence():
    # log(-sum of log p), log(margin), the oddest digit's shape cost, log(-sum of log P(whole)),
    # whether a digit had a rival candidate
    sure = np.array([np.log(0.01), np.log(12.0), 0.1, np.log(0.01), 0.0])
    unsure = np.array([np.log(2), 0.0, 2.0, np.log(2), 1.0])
    assert 0.0 <= calibrated(unsure) < calibrated(sure) <= 1.0


def test_a_contested_reading_is_less_sure_the_more_the_check_doubts_its_digits():
    sure, doubted = (
        np.array([np.log(0.01), np.log(12.0), 0.1, np.log(whole), 1.0]) for whole in (0.01, 2.0)
    )
    assert calibrated(doubted) < calibrated(sure)


# The pure steps, on drawn shapes ------------------------------------------------------------


def paper(width: int, height: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("L", (width, height), 255)
    return image, ImageDraw.Draw(image)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.uint8)


def ring(draw: ImageDraw.ImageDraw, left: int, top: int, width: int = 40, height: int = 60):
    draw.ellipse((left, top, left + width, top + height), outline=0, width=6)


def bar(draw: ImageDraw.ImageDraw, x: int, top: int, height: int = 60):
    draw.line((x, top, x, top + height), fill=0, width=6)


def test_separate_marks_are_candidates_left_to_right_with_boxes_in_picture_pixels(check):
    image, draw = paper(300, 100)
    ring(draw, 200, 20)
    bar(draw, 40, 20)
    ring(draw, 100, 20)
    segmentation = segment(pixels(image), check)
    lone = [box for box, span in zip(segmentation.boxes, segmentation.spans, strict=True)
            if span[1] == span[0] + 1]  # fmt: skip
    assert len(lone) == 3
    for (x, y, _, height), left in zip(lone, (37, 100, 200), strict=True):
        assert abs(x - left) <= 3 and 17 <= y <= 20 and 55 <= height <= 67


def test_ink_is_found_as_predict_finds_it_light_or_dark_background(check):
    image, draw = paper(300, 100)
    ring(draw, 20, 20)
    ring(draw, 120, 20)
    on_paper = segment(pixels(image), check)
    on_black = segment(255 - pixels(image), check)
    assert on_paper.boxes == on_black.boxes
    # Each candidate is prepared exactly as /predict prepares one digit.
    alone = ink_levels(pixels(image))[:, :100]
    assert np.array_equal(on_paper.candidates[0].pixels, ink_to_mnist_form(alone))


def test_a_blank_picture_is_refused_as_predict_refuses_it(check):
    with pytest.raises(BlankImage):
        segment(np.full((100, 300), 255, dtype=np.uint8), check)


@pytest.mark.parametrize("scale", [1, 4])
def test_specks_are_dropped_relative_to_the_writings_size(scale: int, check):
    image, draw = paper(300 * scale, 100 * scale)
    ring(draw, 20 * scale, 20 * scale, 40 * scale, 60 * scale)
    ring(draw, 120 * scale, 20 * scale, 40 * scale, 60 * scale)
    for x, y in [(80, 50), (180, 30), (250, 60)]:  # dust, 4 px across at scale 1
        draw.ellipse((x * scale, y * scale, (x + 4) * scale, (y + 4) * scale), fill=0)
    assert segment(pixels(image), check).positions == 3


def test_pieces_of_one_digit_are_merged_by_horizontal_overlap(check):
    image, draw = paper(300, 120)
    # A 5 whose bar floats: the bar overlaps the body horizontally, a few pixels above it.
    draw.line((40, 25, 75, 25), fill=0, width=6)
    draw.line((42, 33, 40, 60), fill=0, width=6)
    draw.arc((35, 50, 80, 95), start=-120, end=140, fill=0, width=6)
    # A 4 in two strokes: the down stroke crosses the open part's bar.
    draw.line((150, 20, 135, 65, 175, 65), fill=0, width=6)
    draw.line((165, 40, 165, 100), fill=0, width=6)
    boxes = segment(pixels(image), check).boxes
    # Each digit is one candidate holding all its pieces (bar and body; both strokes).
    assert any(x <= 40 and y <= 25 and x + w >= 78 and y + h >= 93 for x, y, w, h in boxes)
    assert any(x <= 135 and y <= 22 and x + w >= 168 and y + h >= 100 for x, y, w, h in boxes)


def test_too_many_marks_are_refused_with_what_to_send(check):
    image, draw = paper(2000, 100)
    for index in range(MAX_GROUPS + 5):
        bar(draw, 20 + 40 * index, 20)
    with pytest.raises(TooManyMarks, match="one number") as refused:
        segment(pixels(image), check)
    assert status_code_of(refused.value) == 422


@pytest.mark.parametrize("paper_style", [False, True], ids=["white-on-black", "black-on-white"])
def test_mnist_test_digits_composed_into_a_number_are_read(
    mnist_test_set, forward, paper_style, check
):
    images, labels = mnist_test_set
    rng = np.random.default_rng(7)
    sample = compose(images[:100], labels[:100], 4, "normal", rng)
    picture = sample.picture
    if (np.median(picture) > 127) != paper_style:
        picture = 255 - picture
    reading = read_number(picture, forward, check)
    assert reading.text == sample.text
    assert 0.0 <= reading.probability <= 1.0
    lefts = [digit.box[0] for digit in reading.digits]
    assert lefts == sorted(lefts)
    for digit in reading.digits:
        x, y, width, height = digit.box
        assert (
            x >= 0 and x + width <= picture.shape[1] and y >= 0 and y + height <= picture.shape[0]
        )
        assert digit.probabilities.shape == (10,)
