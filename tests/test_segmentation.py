"""app.numbers.segmentation: pictures of several digits -> candidate digits -> the number.

The pure steps are tested on drawn shapes; read_number on real MNIST test digits with the
committed weights (bench/numbers.py composes them; tests/test_numbers_bench.py runs its subset).
"""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from app.api.predict import status_code_of
from app.artifacts.weights import load_weights
from app.numbers.segmentation import (
    MAX_CUT_WIDTH,
    MAX_GROUPS,
    MIN_CUT_WIDTH,
    Group,
    Segmentation,
    TooManyMarks,
    choose,
    read_number,
    segment,
)
from app.pipeline.errors import BlankImage
from app.pipeline.mnist_form import ink_levels, ink_to_mnist_form
from app.runtime.runtimes import OnnxRuntime
from bench.numbers import compose


def paper(width: int, height: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("L", (width, height), 255)
    return image, ImageDraw.Draw(image)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.uint8)


def ring(draw: ImageDraw.ImageDraw, left: int, top: int, width: int = 40, height: int = 60):
    draw.ellipse((left, top, left + width, top + height), outline=0, width=6)


def bar(draw: ImageDraw.ImageDraw, x: int, top: int, height: int = 60):
    draw.line((x, top, x, top + height), fill=0, width=6)


def lone_spans(segmentation: Segmentation) -> list[tuple[int, int, int, int]]:
    """The box of each group's whole candidate (groups that were not cut)."""
    return [segmentation.boxes[group.spans[(0, 1)]] for group in segmentation.groups]


def test_separate_digits_are_groups_left_to_right_with_boxes_in_picture_pixels():
    image, draw = paper(300, 100)
    ring(draw, 200, 20)
    bar(draw, 40, 20)
    ring(draw, 100, 20)
    segmentation = segment(pixels(image))
    boxes = lone_spans(segmentation)
    assert [x for x, *_ in boxes] == sorted(x for x, *_ in boxes)
    assert len(boxes) == 3
    for (x, y, _, height), left in zip(boxes, (37, 100, 200), strict=True):
        assert abs(x - left) <= 3 and 17 <= y <= 20 and 55 <= height <= 67
    assert all(len(group.cuts) == 2 for group in segmentation.groups)  # nothing to cut


def test_ink_is_found_as_predict_finds_it_light_or_dark_background():
    image, draw = paper(300, 100)
    ring(draw, 20, 20)
    ring(draw, 120, 20)
    on_paper = segment(pixels(image))
    on_black = segment(255 - pixels(image))
    assert on_paper.boxes == on_black.boxes
    # Each candidate is prepared exactly as /predict prepares one digit.
    alone = ink_levels(pixels(image))[:, :100]
    assert np.array_equal(on_paper.candidates[0].pixels, ink_to_mnist_form(alone))


def test_a_blank_picture_is_refused_as_predict_refuses_it():
    with pytest.raises(BlankImage):
        segment(np.full((100, 300), 255, dtype=np.uint8))


@pytest.mark.parametrize("scale", [1, 4])
def test_specks_are_dropped_relative_to_the_writings_size(scale: int):
    image, draw = paper(300 * scale, 100 * scale)
    ring(draw, 20 * scale, 20 * scale, 40 * scale, 60 * scale)
    ring(draw, 120 * scale, 20 * scale, 40 * scale, 60 * scale)
    for x, y in [(80, 50), (180, 30), (250, 60)]:  # dust, 4 px across at scale 1
        draw.ellipse((x * scale, y * scale, (x + 4) * scale, (y + 4) * scale), fill=0)
    assert len(segment(pixels(image)).groups) == 2


def test_pieces_of_one_digit_are_merged_by_horizontal_overlap():
    image, draw = paper(300, 120)
    # A 5 whose bar floats: the bar overlaps the body horizontally, a few pixels above it.
    draw.line((40, 25, 75, 25), fill=0, width=6)
    draw.line((42, 33, 40, 60), fill=0, width=6)
    draw.arc((35, 50, 80, 95), start=-120, end=140, fill=0, width=6)
    # A 4 in two strokes: the down stroke crosses the open part's bar.
    draw.line((150, 20, 135, 65, 175, 65), fill=0, width=6)
    draw.line((165, 40, 165, 100), fill=0, width=6)
    segmentation = segment(pixels(image))
    assert len(segmentation.groups) == 2


def test_a_stray_mark_off_the_line_is_not_a_digit():
    image, draw = paper(300, 160)
    ring(draw, 20, 50)
    ring(draw, 120, 50)
    draw.line((200, 10, 230, 20), fill=0, width=4)  # a pen slip far above the writing
    assert len(segment(pixels(image)).groups) == 2


def test_touching_digits_get_candidate_cuts_and_lone_ones_do_not():
    image, draw = paper(300, 100)
    ring(draw, 20, 20)
    ring(draw, 57, 20)  # touches the first
    ring(draw, 180, 20)
    segmentation = segment(pixels(image))
    touching, lone = segmentation.groups
    assert len(touching.cuts) > 2 and len(lone.cuts) == 2
    # Every span between two cuts is digit-sized; the pair is also read whole, to compare.
    height = 66
    last = len(touching.cuts) - 1
    for (i, j), index in touching.spans.items():
        width = touching.cuts[j] - touching.cuts[i]
        assert (i, j) == (0, last) or MIN_CUT_WIDTH * height <= width <= MAX_CUT_WIDTH * height
        assert segmentation.boxes[index][3] >= 0.6 * height
    assert (0, last) in touching.spans


def test_too_many_marks_are_refused_with_what_to_send():
    image, draw = paper(2000, 100)
    for index in range(MAX_GROUPS + 5):
        bar(draw, 20 + 40 * index, 20)
    with pytest.raises(TooManyMarks, match="one number") as refused:
        segment(pixels(image))
    assert status_code_of(refused.value) == 422


def test_choose_keeps_the_cuts_the_net_is_most_confident_about():
    box = (0, 0, 10, 10)
    # One group, cuts at 0, 10, 20: read whole (candidate 0), or as two digits (1, 2).
    segmentation = Segmentation(
        input_size=(20, 10),
        candidates=[],
        boxes=[box] * 3,
        groups=[Group((0, 10, 20), {(0, 2): 0, (0, 1): 1, (1, 2): 2})],
    )
    confident_pair = np.full((3, 10), 0.0, dtype=np.float32)
    confident_pair[0, 8] = 0.55  # the whole reads as a shaky 8
    confident_pair[1, 1] = confident_pair[2, 7] = 0.999
    reading = choose(segmentation, confident_pair)
    assert reading.text == "17"
    assert reading.probability == pytest.approx(0.999 * 0.999)
    confident_whole = confident_pair.copy()
    confident_whole[0, 8], confident_whole[1, 1], confident_whole[2, 7] = 0.999, 0.6, 0.6
    assert choose(segmentation, confident_whole).text == "8"


@pytest.fixture(scope="module")
def forward(reading_weights):
    return OnnxRuntime(load_weights(reading_weights).tensors, threads=1)


@pytest.mark.parametrize("paper_style", [False, True], ids=["white-on-black", "black-on-white"])
def test_mnist_test_digits_composed_into_a_number_are_read(mnist_test_set, forward, paper_style):
    images, labels = mnist_test_set
    rng = np.random.default_rng(7)
    sample = compose(images[:100], labels[:100], 4, "normal", rng)
    picture = sample.picture
    if (np.median(picture) > 127) != paper_style:
        picture = 255 - picture
    reading = read_number(picture, forward)
    assert reading.text == sample.text
    assert reading.probability == pytest.approx(np.prod([d.probability for d in reading.digits]))
    lefts = [digit.box[0] for digit in reading.digits]
    assert lefts == sorted(lefts)
    for digit in reading.digits:
        x, y, width, height = digit.box
        assert (
            x >= 0 and x + width <= picture.shape[1] and y >= 0 and y + height <= picture.shape[0]
        )
        assert digit.probabilities.shape == (10,)
