"""Reading a whole number: a picture of several digits -> the digits, left to right, with boxes.

Three steps, so that all the net's work for a picture is one batched forward pass:

1. ``segment(gray)`` (pure): ink found as /predict finds it (``app.pipeline.ink_levels``),
   connected components (scipy.ndimage), specks dropped, pieces of one digit merged by their
   horizontal overlap. Each resulting group is one digit or several touching ones; a group much
   wider than the writing's typical digit also gets candidate cuts along its column profile.
   Every span between two cuts is a candidate digit, brought to MNIST form exactly as /predict
   brings one (``app.pipeline.ink_to_mnist_form``).
2. The caller runs the net on every candidate at once (the service: its shared batcher).
3. ``choose(segmentation, probabilities)`` (pure) keeps, per group, the cuts whose digits the
   net is most confident about, and returns the digits left to right.

``read_number(gray, forward)`` does all three with a plain forward function (offline use).
All thresholds are relative to the writing's size (its typical digit height), never fixed pixel
counts; they were tuned on numbers composed from the MNIST training set's last 5,000 images
(bench/numbers.py --holdout), never on test digits.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.pipeline.decode import decode
from app.pipeline.errors import ImageRejected
from app.pipeline.mnist_form import ink_levels, ink_to_mnist_form
from app.pipeline.prepare import PreparedImage, naming
from app.pipeline.uploads import Upload

# x, y, width, height, in the picture's pixels.
Box = tuple[int, int, int, int]

# Components that hold at least this share of the largest one's ink set the writing's height.
SUBSTANTIAL_MASS = 0.25
# A component whose longer side is under this share of the writing's height is a speck.
SPECK_SIZE = 0.2
# Two pieces are one digit if they overlap horizontally by this share of the narrower one...
MERGE_OVERLAP = 0.5
# ...and the vertical gap between them is at most this share of the writing's height.
MERGE_GAP = 0.35
# ...unless together they are taller than this share of it (a digit and a stroke under it).
MAX_MERGED_HEIGHT = 1.2
# A group with less than this share of its height within the writing's line is a stray mark.
ON_LINE = 0.5
# A group shorter than this share of the writing's height is a stray mark, not a digit.
MIN_DIGIT_HEIGHT = 0.4
# A group wider than this many times the writing's typical digit width may be touching digits.
SPLIT_WIDTH = 1.3
# ...and at least this wide, of its height.
SPLIT_MIN_WIDTH = 1.1
# A digit cut from a group is this narrow, or this wide, at the least and the most (of height).
MIN_CUT_WIDTH = 0.15
MAX_CUT_WIDTH = 0.9
# A cut digit's ink is at least this share of the writing's height tall (else: a fragment).
MIN_CUT_HEIGHT = 0.6
# A group up to this wide (of height) may also be read whole, uncut, if the net prefers.
MAX_WHOLE_WIDTH = 1.6
# Each digit whose ink is wider than tall costs this much log-probability per unit of excess
# width-to-height ratio: handwritten digits are rarely wider than tall, merged pairs are.
WIDE_PENALTY = 1.5
# Cuts follow the writing's slant, up to this many columns per row.
MAX_SLANT = 0.5
# Candidate cuts are tried every CUT_STEP of the writing's height, and at profile minima.
CUT_STEP = 0.1
# Each cut costs this much log-probability: one confident digit beats two shaky halves.
CUT_PENALTY = 0.5
# The typical digit's width, as a share of its height, when no lone digit shows it.
TYPICAL_ASPECT = 0.7
# Bounds on the work one picture may ask for.
MAX_GROUPS = 40
MAX_PIECES = 4 * MAX_GROUPS  # before pieces are merged
MAX_SPANS_PER_GROUP = 400


class TooManyMarks(ImageRejected):
    """The picture holds more separate marks than a number has digits (a 422, as ImageRejected)."""


@dataclass(frozen=True)
class Group:
    """One stretch of ink: its candidate cuts and, per span between two of them, its candidate."""

    cuts: tuple[int, ...]  # x positions in the picture, left edge first, right edge last
    spans: dict[tuple[int, int], int]  # (i, j) cut indices -> index into Segmentation.candidates


@dataclass(frozen=True)
class Segmentation:
    input_size: tuple[int, int]  # (width, height) of the picture
    candidates: list[PreparedImage]  # every candidate digit, in MNIST form
    boxes: list[Box]  # each candidate's ink box in the picture
    groups: list[Group]  # left to right


@dataclass(frozen=True)
class ReadDigit:
    digit: int
    probability: float
    box: Box
    probabilities: np.ndarray  # float32 [10]
    candidate: int  # its index in Segmentation.candidates (its MNIST-form pixels)


@dataclass(frozen=True)
class NumberReading:
    text: str
    probability: float  # the product of the digits' probabilities
    digits: list[ReadDigit]


@dataclass(frozen=True)
class _Piece:
    labels: list[int]  # component labels (1-based) making up this piece
    top: int
    bottom: int  # exclusive
    left: int
    right: int  # exclusive

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left


def segment(gray: np.ndarray) -> Segmentation:
    """uint8 gray levels -> candidate digits; raises BlankImage like /predict, or TooManyMarks."""
    # scipy.ndimage is imported on the first /read, not at start-up: it costs every worker ~28 MB
    # and 0.25 s of CPU (docs/decisions.md), and most never read a number.
    from scipy import ndimage

    levels = ink_levels(gray)
    labels, count = ndimage.label(levels > 0, structure=np.ones((3, 3), dtype=bool))
    pieces = components(labels, count)
    line = writing_line(pieces, levels, labels)
    height = line.height
    pieces = [piece for piece in pieces if max(piece.height, piece.width) >= SPECK_SIZE * height]
    if len(pieces) > MAX_PIECES:
        raise TooManyMarks(
            f"holds {len(pieces)} separate marks; send a picture of one number (at most "
            f"{MAX_GROUPS} digits)"
        )
    groups = [
        group
        for group in merge_by_overlap(pieces, height)
        if group.height >= MIN_DIGIT_HEIGHT * height and on_line(group, line)
    ]
    if len(groups) > MAX_GROUPS:
        raise TooManyMarks(
            f"holds {len(groups)} separate marks; send a picture of one number (at most "
            f"{MAX_GROUPS} digits)"
        )
    typical_width = typical_digit_width(groups, height)
    segmentation = Segmentation((gray.shape[1], gray.shape[0]), [], [], [])
    for group in sorted(groups, key=lambda group: (group.left + group.right) / 2):
        area = (slice(group.top, group.bottom), slice(group.left, group.right))
        ink = np.where(np.isin(labels[area], group.labels), levels[area], 0.0)
        cuts, across = [0, group.width], None
        if group.width > max(SPLIT_WIDTH * typical_width, SPLIT_MIN_WIDTH * height):
            # Cut along the writing's slant, so leaning digits come apart where they touch.
            across = slanted_columns(ink.shape, writing_slant(ink))
            cuts = candidate_cuts(ink, across, height)
        spans = {}
        for i, start in enumerate(cuts):
            for j in range(i + 1, len(cuts)):
                width = cuts[j] - start
                # Uncut, the whole group is the one candidate; cut, spans must be digit-sized.
                whole = i == 0 and j == len(cuts) - 1
                if len(cuts) > 2 and not (
                    MIN_CUT_WIDTH * height <= width <= MAX_CUT_WIDTH * height
                    or (whole and width <= MAX_WHOLE_WIDTH * height)
                ):
                    continue
                span = (
                    ink
                    if across is None
                    else np.where((across >= start) & (across < cuts[j]), ink, 0.0)
                )
                rows = np.flatnonzero(span.any(axis=1))
                if len(rows) == 0 or (
                    len(cuts) > 2 and rows[-1] - rows[0] + 1 < MIN_CUT_HEIGHT * height
                ):
                    continue  # nothing, or a fragment of a stroke: not a digit on its own
                spans[(i, j)] = len(segmentation.candidates)
                segmentation.candidates.append(
                    PreparedImage(input_size=(width, group.height), pixels=ink_to_mnist_form(span))
                )
                segmentation.boxes.append(ink_box(span, group.left, group.top))
        positions = tuple(group.left + cut for cut in cuts)
        segmentation.groups.append(Group(positions, spans))
    if not segmentation.candidates:  # no mark looks like a digit: read all the ink as one
        segmentation.candidates.append(PreparedImage(gray.shape[::-1], ink_to_mnist_form(levels)))
        segmentation.boxes.append(ink_box(levels, 0, 0))
        segmentation.groups[:] = [Group((0, gray.shape[1]), {(0, 1): 0})]
    return segmentation


def segment_upload(upload: Upload, max_pixels: int) -> Segmentation:
    """Decode an upload and ``segment`` it; ImageRejected & kin name the upload, as /predict's."""
    try:
        return segment(decode(upload.data, max_pixels))
    except ImageRejected as exc:
        raise naming(upload, exc) from None


def components(labels: np.ndarray, count: int) -> list[_Piece]:
    """One piece per connected component of ``labels`` (scipy.ndimage.label's)."""
    from scipy import ndimage  # see segment()

    return [
        _Piece([label], rows.start, rows.stop, cols.start, cols.stop)
        for label, (rows, cols) in enumerate(ndimage.find_objects(labels, count), start=1)
    ]


def writing_line(pieces: list[_Piece], levels: np.ndarray, labels: np.ndarray) -> _Piece:
    """Where the writing runs: the ink-weighted median top and bottom of the pieces holding
    substantial ink (the writing's height is this line's), across the whole picture."""
    mass = np.bincount(labels.ravel(), weights=levels.ravel())[1:]  # each component's ink
    main = mass >= SUBSTANTIAL_MASS * mass.max()
    top = weighted_median([piece.top for piece in pieces], mass * main)
    bottom = weighted_median([piece.bottom for piece in pieces], mass * main)
    return _Piece([], top, max(bottom, top + 1), 0, levels.shape[1])


def weighted_median(values: list[int], weights: np.ndarray) -> int:
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    return int(np.asarray(values)[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def on_line(group: _Piece, line: _Piece) -> bool:
    """Whether most of ``group``'s height lies within the writing's line (else: a stray mark)."""
    overlap = min(group.bottom, line.bottom) - max(group.top, line.top)
    return overlap >= ON_LINE * group.height


def merge_by_overlap(pieces: list[_Piece], height: float) -> list[_Piece]:
    """Pieces of one digit put together: the ones that overlap horizontally (by MERGE_OVERLAP of
    the narrower) and lie within MERGE_GAP of the writing's height of each other vertically."""
    groups = sorted(pieces, key=lambda piece: piece.left)
    a = 0
    while a < len(groups):
        first, b = groups[a], a + 1
        while b < len(groups) and groups[b].left < first.right:  # sorted: later ones start later
            second = groups[b]
            overlap = min(first.right, second.right) - second.left
            gap = max(first.top, second.top) - min(first.bottom, second.bottom)
            merged_height = max(first.bottom, second.bottom) - min(first.top, second.top)
            if (
                overlap >= MERGE_OVERLAP * min(first.width, second.width)
                and gap <= MERGE_GAP * height
                and merged_height <= MAX_MERGED_HEIGHT * height
            ):
                first = groups[a] = _Piece(
                    first.labels + second.labels,
                    min(first.top, second.top),
                    max(first.bottom, second.bottom),
                    first.left,
                    max(first.right, second.right),
                )
                del groups[b]
                b = a + 1  # the wider group may now overlap pieces it skipped
            else:
                b += 1
        a += 1
    return groups


def typical_digit_width(groups: list[_Piece], height: float) -> float:
    """The median width of the groups that look like one digit (no wider than tall), else a
    typical digit's for this height."""
    lone = [group.width for group in groups if group.width <= height]
    return max(float(np.median(lone)), TYPICAL_ASPECT * height) if lone else TYPICAL_ASPECT * height


def writing_slant(ink: np.ndarray) -> float:
    """How far the strokes lean: columns per row, from the ink's second moments (as MNIST's
    deslanting measures it), within +-MAX_SLANT."""
    rows, cols = np.indices(ink.shape)
    total = ink.sum()
    row_mean, col_mean = (rows * ink).sum() / total, (cols * ink).sum() / total
    spread = ((rows - row_mean) ** 2 * ink).sum()
    if spread <= 0:
        return 0.0
    slant = ((rows - row_mean) * (cols - col_mean) * ink).sum() / spread
    return float(np.clip(slant, -MAX_SLANT, MAX_SLANT))


def slanted_columns(shape: tuple[int, int], slant: float) -> np.ndarray:
    """Each pixel's position across the writing, measured along its slant: the column where a
    line through the pixel, leaning ``slant`` columns per row, crosses the middle row."""
    rows, cols = np.indices(shape)
    return cols - slant * (rows - (shape[0] - 1) / 2)


def candidate_cuts(ink: np.ndarray, across: np.ndarray, height: float) -> list[int]:
    """Where a group of touching digits may be cut (positions in ``across``, slanted_columns'):
    the slanted column profile's local minima, and a regular grid as a fallback where strokes
    overlap; both ends of the ink included."""
    inked = ink > 0
    start, end = int(np.floor(across[inked].min())), int(np.ceil(across[inked].max())) + 1
    width = end - start
    bins = np.clip(np.floor(across[inked] - start).astype(int), 0, width - 1)
    profile = np.bincount(bins, weights=ink[inked], minlength=width)
    step = max(1, round(CUT_STEP * height))
    while True:
        grid = set(range(step, width, step))
        reach = max(1, step // 2)
        minima = {
            x
            for x in range(1, width)
            if profile[x] <= profile[max(0, x - reach) : x + reach + 1].min()
        }
        cuts = sorted({0, width, *grid, *minima})
        spans_per_cut = MAX_CUT_WIDTH * height / step
        if len(cuts) * spans_per_cut <= MAX_SPANS_PER_GROUP or step >= width:
            return [start + cut for cut in cuts]
        step *= 2


def ink_box(span: np.ndarray, left: int, top: int) -> Box:
    rows = np.flatnonzero(span.any(axis=1))
    cols = np.flatnonzero(span.any(axis=0))
    return (
        left + int(cols[0]),
        top + int(rows[0]),
        int(cols[-1] - cols[0] + 1),
        int(rows[-1] - rows[0] + 1),
    )


def choose(segmentation: Segmentation, probabilities: np.ndarray) -> NumberReading:
    """The reading the net is most confident about: per group, the cuts maximising the sum of
    the digits' log-probabilities (less CUT_PENALTY per cut); digits left to right."""
    aspect = np.array([width / height for _, _, width, height in segmentation.boxes])
    confidence = np.log(np.maximum(probabilities.max(axis=1), 1e-12)) - WIDE_PENALTY * np.maximum(
        aspect - 1.0, 0.0
    )
    digits = []
    for group in segmentation.groups:
        best: dict[int, tuple[float, list[int]]] = {0: (0.0, [])}
        for j in range(1, len(group.cuts)):
            options = [
                (best[i][0] + confidence[index] - CUT_PENALTY, [*best[i][1], index])
                for (i, end), index in group.spans.items()
                if end == j and i in best
            ]
            if options:
                best[j] = max(options, key=lambda option: option[0])
        last = len(group.cuts) - 1
        for index in best[last][1] if last in best else []:
            row = probabilities[index]
            digit = int(row.argmax())
            box = segmentation.boxes[index]
            digits.append(ReadDigit(digit, float(row[digit]), box, row, index))
    return NumberReading(
        text="".join(str(digit.digit) for digit in digits),
        probability=float(np.prod([digit.probability for digit in digits])),
        digits=digits,
    )


def read_number(gray: np.ndarray, forward: Callable[[np.ndarray], np.ndarray]) -> NumberReading:
    """Read the number in ``gray`` (uint8 levels) with ``forward``: uint8 [N, 28, 28] -> float
    probabilities [N, 10], e.g. ``Predictor.forward(...).probabilities`` or a Runtime."""
    segmentation = segment(gray)
    pixels = np.stack([candidate.pixels for candidate in segmentation.candidates])
    return choose(segmentation, forward(pixels))


def encode_number(upload: Upload, reading: NumberReading, size: tuple[int, int]) -> dict:
    """One picture's answer, shaped as ``app.api.schemas.NumberReading``."""
    return {
        "index": upload.index,
        "filename": upload.filename,
        "text": reading.text,
        "probability": reading.probability,
        "digits": [
            {
                "digit": digit.digit,
                "probability": digit.probability,
                "box": digit.box,
                "probabilities": digit.probabilities.tolist(),
            }
            for digit in reading.digits
        ],
        "input_size": size,
    }
