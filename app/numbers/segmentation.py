"""Reading a whole number: a picture of several digits -> the digits, left to right, with boxes.

Three steps, so that all the net's work for a picture is one batched forward pass (this module
is step 1, with its parts in app/numbers/marks.py and cuts.py; step 3 is app/numbers/reading.py):

1. ``segment(gray, check)`` (pure): ink found as /predict finds it (``app.pipeline.ink_levels``),
   connected components (OpenCV), specks and stray strokes dropped, pieces of one digit merged.
   What is left is over-segmented on purpose: each piece may be cut where digits touch (straight
   cuts along the writing's slant, and drop-fall paths that follow the gap between strokes), and
   two narrow neighbours may also be read as one digit. Every candidate digit (a span between
   two positions) is brought to MNIST form exactly as /predict brings one
   (``app.pipeline.ink_to_mnist_form``), gets a width prior from the writing's own digits, and
   is judged in its context by the digit check (``app.numbers.check``): is it one whole digit?
2. The caller runs the net on every candidate at once (the service: its shared batcher).
3. ``choose(segmentation, probabilities)`` (pure): the best left-to-right path of candidates by
   dynamic programming over the net's log-probabilities, the check's and the priors; the number's
   ``probability`` is calibrated (``CALIBRATION``) and ``needs_review`` set below REVIEW_BELOW.

``read_number(gray, forward, check)`` does all three with a plain forward function (offline use).
All thresholds are relative to the writing's size (its typical digit height), never fixed pixel
counts; they and the calibration were tuned on numbers composed from the MNIST training set's
last 5,000 images (``python -m bench.numbers --source holdout --calibrate``), never on test
digits. The design and its figures: docs/decisions.md.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from app.numbers.check import SIDE, DigitCheck, view
from app.numbers.cuts import (
    MAX_CUT_WIDTH,
    MAX_SPANS_PER_PIECE,
    MIN_CUT_HEIGHT,
    MIN_CUT_WIDTH,
    between,
    cut_paths,
    may_hold_several,
    without_fragments,
)
from app.numbers.marks import (
    DIGIT_SIZED,
    MIN_DIGIT_HEIGHT,
    SPECK_SIZE,
    Line,
    Piece,
    components,
    digit_marks,
    merge_by_overlap,
    on_line,
    typical_digit_width,
    writing_height,
    writing_line,
)
from app.pipeline.decode import decode
from app.pipeline.errors import ImageRejected
from app.pipeline.mnist_form import ink_levels, ink_to_mnist_form
from app.pipeline.prepare import PreparedImage, naming
from app.pipeline.uploads import Upload

# x, y, width, height, in the picture's pixels.
Box = tuple[int, int, int, int]


# Two neighbouring pieces narrower together than this many typical widths, one of them not
# DIGIT_SIZED, may be one digit.
JOIN_WIDTH = 1.3


# Bounds on the work one picture may ask for.
MAX_GROUPS = 40


MAX_PIECES = 4 * MAX_GROUPS  # before pieces are merged


# Writing taller than this (px) is read from a copy scaled down to this height: as fine as
# MNIST's 20 px digits need, and the work per candidate stays bounded however large the photo.
MAX_WRITING_HEIGHT = 80


class TooManyMarks(ImageRejected):
    """The picture holds more separate marks than a number has digits (a 422, as ImageRejected)."""


@dataclass(frozen=True)
class Segmentation:
    """Candidate digits between positions 0..positions-1, left to right: candidate k reads the
    writing from position spans[k][0] to spans[k][1]."""

    input_size: tuple[int, int]  # (width, height) of the picture
    candidates: list[PreparedImage]  # every candidate digit, in MNIST form
    boxes: list[Box]  # each candidate's ink box in the picture
    spans: list[tuple[int, int]]  # each candidate's (start, end) position, start < end
    widths: list[float]  # each candidate's ink width, in the writing's typical digit widths
    aspects: list[float]  # each candidate's ink width over its height
    log_whole: np.ndarray  # float64 [N]: the digit check's log P(one whole digit); 0 where it
    # was not asked (no check, or no other candidate competes for the candidate's positions)
    positions: int
    # With keep_context: each candidate's (left, top, ink) in the ink levels read (the picture's
    # pixels unless the writing is taller than MAX_WRITING_HEIGHT), those levels, and the line of
    # writing in them.
    placed: list[tuple[int, int, np.ndarray]] = field(default_factory=list)
    levels: np.ndarray | None = None
    line: Line | None = None

    def views(self, indices: Sequence[int]) -> np.ndarray:
        """uint8 [len(indices), 2, SIDE, SIDE]: those candidates in their context (check.view)."""
        views = np.zeros((len(indices), 2, SIDE, SIDE), dtype=np.uint8)
        for row, index in enumerate(indices):
            left, top, ink = self.placed[index]
            middle = self.line.middle + self.line.slope * (left + ink.shape[1] / 2)
            views[row] = view(self.levels, ink, left, top, middle, self.line.height)
        return views


def contested(spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """bool [N]: whether another candidate covers some of the positions candidate k covers
    (only then can the check change the reading)."""
    starts, ends = np.array(spans).reshape(-1, 2).T
    overlaps = (starts[:, None] < ends[None, :]) & (starts[None, :] < ends[:, None])
    return overlaps.sum(axis=1) > 1


def segment(gray: np.ndarray, check: DigitCheck | None, keep_context: bool = False) -> Segmentation:
    """uint8 gray levels -> candidate digits, the contested ones judged by ``check`` (None: none
    judged, as when the check itself is trained); raises BlankImage like /predict, or
    TooManyMarks. ``keep_context``: keep what ``Segmentation.views`` needs (the picture's ink
    levels: a request does not hold them once its candidates are judged)."""
    levels = ink_levels(gray)
    labels, pieces = components(levels)
    height = writing_height(pieces)
    scale = min(1.0, MAX_WRITING_HEIGHT / height)
    if scale < 1.0:  # a photo of large writing: read from a smaller copy, boxes scaled back
        import cv2

        levels = cv2.resize(levels, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        labels, pieces = components(levels)
        height = writing_height(pieces)
    pieces = [piece for piece in pieces if max(piece.height, piece.width) >= SPECK_SIZE * height]
    if len(pieces) > MAX_PIECES:
        raise TooManyMarks(
            f"holds {len(pieces)} separate marks; send a picture of one number (at most "
            f"{MAX_GROUPS} digits)"
        )
    line = writing_line(pieces, height)
    # Short marks off the line (a stroke under the number) go before merging, so that they are
    # never taken for part of a digit; the pieces of a digit are then put together.
    pieces = [
        piece
        for piece in pieces
        if piece.height >= MIN_DIGIT_HEIGHT * height or on_line(piece, line, height)
    ]
    groups = digit_marks(merge_by_overlap(pieces, height), line, height)
    if len(groups) > MAX_GROUPS:
        raise TooManyMarks(
            f"holds {len(groups)} separate marks; send a picture of one number (at most "
            f"{MAX_GROUPS} digits)"
        )
    groups.sort(key=lambda group: group.middle[0])
    typical = typical_digit_width(groups, height)
    short = {piece.labels[0] for piece in pieces if piece.height < DIGIT_SIZED * height}
    builder = _Builder(labels, levels, line, typical, short)
    starts = []
    for group in groups:
        starts.append(builder.position)
        builder.add_group(group)
    for index in range(len(groups) - 1):
        end = starts[index + 2] if index + 2 < len(groups) else builder.position
        builder.add_join(groups[index], groups[index + 1], starts[index], end)
    if not builder.candidates:  # no mark looks like a digit: read all the ink as one
        builder.add_candidate(levels, 0, 0, 0, 1, 0.0)
        builder.position = 1
    found = Segmentation(
        (gray.shape[1], gray.shape[0]),
        builder.candidates,
        [_scaled_back(box, scale) for box in builder.boxes],
        builder.spans,
        builder.widths,
        builder.aspects,
        np.zeros(len(builder.candidates)),
        builder.position + 1,
        builder.placed,
        levels,
        line,
    )
    if check is not None and (judged := np.flatnonzero(contested(builder.spans))).size:
        found.log_whole[judged] = check.log_whole(found.views(judged))
    return found if keep_context else replace(found, placed=[], levels=None, line=None)


def _scaled_back(box: Box, scale: float) -> Box:
    """A box in the levels read, in the picture's pixels (``scale``: levels over picture)."""
    if scale == 1.0:
        return box
    x, y, w, h = box
    left, top = int(x / scale), int(y / scale)
    return left, top, int(np.ceil((x + w) / scale)) - left, int(np.ceil((y + h) / scale)) - top


class _Builder:
    """Collects the candidates of one picture, group by group, left to right."""

    def __init__(self, labels, levels, line: Line, typical: float, short: set[int]):
        self.labels, self.levels, self.line, self.typical = labels, levels, line, typical
        self.short = short  # labels of the components shorter than a digit
        self.height = line.height
        self.candidates: list[PreparedImage] = []
        self.boxes: list[Box] = []
        self.spans: list[tuple[int, int]] = []
        self.widths: list[float] = []
        self.aspects: list[float] = []
        self.placed: list[tuple[int, int, np.ndarray]] = []
        self.position = 0  # where the next group starts

    def ink_of(self, group: Piece) -> np.ndarray:
        area = (slice(group.top, group.bottom), slice(group.left, group.right))
        return np.where(np.isin(self.labels[area], group.labels), self.levels[area], 0.0)

    def add_candidate(self, ink, left, top, start, end, width_ratio) -> None:
        rows = np.flatnonzero(ink.any(axis=1))
        cols = np.flatnonzero(ink.any(axis=0))
        ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        left, top = left + int(cols[0]), top + int(rows[0])
        self.candidates.append(
            PreparedImage(input_size=ink.shape[::-1], pixels=ink_to_mnist_form(ink))
        )
        self.boxes.append((left, top, ink.shape[1], ink.shape[0]))
        self.placed.append((left, top, ink))
        self.spans.append((start, end))
        self.widths.append(width_ratio)
        self.aspects.append(ink.shape[1] / ink.shape[0])

    def add_group(self, group: Piece) -> None:
        ink = self.ink_of(group)
        start = self.position
        if not may_hold_several(ink, self.typical):
            self.add_candidate(
                ink, group.left, group.top, start, start + 1, group.width / self.typical
            )
            tall = [label for label in group.labels if label not in self.short]
            if tall and len(tall) < len(group.labels):  # and without its short pieces: a stroke
                # added to the digit (the check tells it from a 5's bar or a 4's broken arm)
                alone = Piece(tall, group.top, group.bottom, group.left, group.right, group.mass)
                self.add_candidate(
                    self.ink_of(alone), group.left, group.top, start, start + 1,
                    group.width / self.typical,
                )  # fmt: skip
            self.position = start + 1
            return
        paths = cut_paths(ink, self.height)
        count = 0
        for i in range(len(paths) - 1):
            for j in range(i + 1, len(paths)):
                whole = i == 0 and j == len(paths) - 1
                span = between(ink, paths[i], paths[j])
                if not whole:
                    span = without_fragments(span)
                rows = np.flatnonzero(span.any(axis=1))
                if len(rows) == 0:
                    continue
                cols = np.flatnonzero(span.any(axis=0))
                width = cols[-1] - cols[0] + 1
                if not whole and not (
                    MIN_CUT_WIDTH * self.height <= width <= MAX_CUT_WIDTH * self.height
                    and rows[-1] - rows[0] + 1 >= MIN_CUT_HEIGHT * self.height
                ):
                    continue  # not digit-sized: a fragment of a stroke, or several digits
                if count >= MAX_SPANS_PER_PIECE and not whole:
                    continue
                count += 1
                self.add_candidate(
                    span, group.left, group.top, start + i, start + j, width / self.typical
                )
        self.position = start + len(paths) - 1

    def add_join(self, group: Piece, following: Piece, start: int, end: int) -> None:
        """Two neighbours narrow enough together to be one digit in pieces, one of them shorter
        than a digit: also read as one, from ``group``'s start to ``following``'s end."""
        left, right = min(group.left, following.left), max(group.right, following.right)
        if (
            right - left > JOIN_WIDTH * self.typical
            or min(group.height, following.height) >= DIGIT_SIZED * self.height
        ):
            return
        joined = Piece(
            group.labels + following.labels,
            min(group.top, following.top),
            max(group.bottom, following.bottom),
            left,
            right,
            group.mass + following.mass,
        )
        self.add_candidate(
            self.ink_of(joined), left, joined.top, start, end, joined.width / self.typical
        )


def segment_upload(upload: Upload, max_pixels: int, check: DigitCheck) -> Segmentation:
    """Decode an upload and ``segment`` it; ImageRejected & kin name the upload, as /predict's."""
    try:
        return segment(decode(upload.data, max_pixels), check)
    except ImageRejected as exc:
        raise naming(upload, exc) from None
