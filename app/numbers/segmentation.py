"""Reading a whole number: a picture of several digits -> the digits, left to right, with boxes.

Three steps, so that all the net's work for a picture is one batched forward pass:

1. ``segment(gray)`` (pure): ink found as /predict finds it (``app.pipeline.ink_levels``),
   connected components (OpenCV), specks and stray strokes dropped, pieces of one digit merged.
   What is left is over-segmented on purpose: each piece may be cut where digits touch (straight
   cuts along the writing's slant, and drop-fall paths that follow the gap between strokes), and
   two narrow neighbours may also be read as one digit. Every candidate digit (a span between
   two positions) is brought to MNIST form exactly as /predict brings one
   (``app.pipeline.ink_to_mnist_form``) and gets a width prior from the writing's own digits.
2. The caller runs the net on every candidate at once (the service: its shared batcher).
3. ``choose(segmentation, probabilities)`` (pure): the best left-to-right path of candidates by
   dynamic programming over the net's log-probabilities plus the width priors; the number's
   ``probability`` is calibrated (``CALIBRATION``) and ``needs_review`` set below REVIEW_BELOW.

``read_number(gray, forward)`` does all three with a plain forward function (offline use).
All thresholds are relative to the writing's size (its typical digit height), never fixed pixel
counts; they and the calibration were tuned on numbers composed from the MNIST training set's
last 5,000 images (``python -m bench.numbers --source holdout --calibrate``), never on test
digits. The design and its figures: docs/decisions.md.
"""

from collections.abc import Callable, Sequence
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
# ...and the vertical gap between them is at most this share of the writing's height...
MERGE_GAP = 0.35
# ...unless together they are taller than this share of it (a digit and a stroke under it)...
MAX_MERGED_HEIGHT = 1.3
# ...or both are this tall (of the writing's height): two digits side by side, not one in pieces.
DIGIT_SIZED = 0.6
# A mark shorter than this share of the writing's height is not a digit (a dash, an underline).
MIN_DIGIT_HEIGHT = 0.4
# A mark whose height overlaps the line of writing by less than this share of the smaller of its
# height and the writing's is off the line: a stray stroke, not a digit.
ON_LINE = 0.25
# A piece wider than this many times the writing's typical digit width may be touching digits...
SPLIT_WIDTH = 1.25
# ...and so may one wider than NECK_WIDTH of it whose column profile dips under NECK of its peak.
NECK_WIDTH = 0.8
NECK = 0.12
# Two neighbouring pieces narrower together than this many typical widths, one of them not
# DIGIT_SIZED, may be one digit.
JOIN_WIDTH = 1.3
# A digit cut from a piece is at least this narrow and at most this wide (of the height)...
MIN_CUT_WIDTH = 0.12
MAX_CUT_WIDTH = 1.0
# ...and its ink at least this share of the writing's height tall (else: a fragment).
MIN_CUT_HEIGHT = 0.55
# Bits of a cut span with less than this share of its ink are a neighbour's strokes: dropped.
FRAGMENT_MASS = 0.12
# Ink at or above this level is a stroke, for the drop-fall cuts.
STROKE_LEVEL = 0.35
# Cuts follow the writing's slant, up to this many columns per row.
MAX_SLANT = 0.5
# Straight cuts are tried every CUT_STEP of the writing's height, and at profile minima.
CUT_STEP = 0.1
# The width prior: a candidate wider than WIDE_OK typical widths costs WIDTH_PRIOR per square of
# the excess, in log-probability (a piece twice as wide as the others is probably two digits).
WIDE_OK = 1.1
WIDTH_PRIOR = 1.0
# The shape prior: a candidate read as digit d whose ink's width over height is ``aspect`` costs
# ASPECT_WEIGHT * ((aspect - ASPECT_MEAN[d]) / ASPECT_SPREAD[d]) ** 2 / 2 in log-probability
# (the mean and spread of the MNIST training digits d, at ink levels >= 0.2): a sliver of a wider
# digit is not a 7, and a 1 touching a 4 is not one wide 4.
ASPECT_MEAN = (0.9, 0.4, 0.95, 0.8, 0.8, 0.95, 0.7, 0.8, 0.8, 0.7)
ASPECT_SPREAD = (0.17, 0.2, 0.21, 0.16, 0.16, 0.24, 0.16, 0.17, 0.17, 0.14)
ASPECT_WEIGHT = 0.25
# Each digit read costs this much log-probability: one confident digit beats two shaky halves.
DIGIT_COST = 1.0
# The typical digit's width, as a share of its height, when no lone digit shows it, and the
# bounds on what the lone digits show (two narrow digits touching may look like one).
TYPICAL_ASPECT = 0.7
MIN_ASPECT, MAX_ASPECT = 0.5, 1.0
# A path whose digit count differs from the best's by at least this score is no rival.
MAX_MARGIN = 12.0
# Calibration: probability = sigmoid(a + b * log(-sum of log p(digit)) + c * log(margin) + d *
# the oddest digit's shape cost), the margin being to the best path with another digit count;
# fitted on the holdout (bench/numbers.py --calibrate, fit_calibration); flagged below REVIEW_BELOW.
CALIBRATION = (-1.237, -0.6795, 0.7717, -0.08912)
REVIEW_BELOW = 0.9661
# Bounds on the work one picture may ask for.
MAX_GROUPS = 40
MAX_PIECES = 4 * MAX_GROUPS  # before pieces are merged
MAX_SPANS_PER_PIECE = 300


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
    positions: int


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
    probability: float  # calibrated: the chance the whole number is read right
    needs_review: bool  # probability < REVIEW_BELOW: a person should look
    digits: list[ReadDigit]
    features: np.ndarray  # what the calibration reads (see CALIBRATION)


@dataclass(frozen=True)
class _Piece:
    labels: list[int]  # component labels (1-based) making up this piece
    top: int
    bottom: int  # exclusive
    left: int
    right: int  # exclusive
    mass: float

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def middle(self) -> tuple[float, float]:
        return (self.left + self.right) / 2, (self.top + self.bottom) / 2


def segment(gray: np.ndarray) -> Segmentation:
    """uint8 gray levels -> candidate digits; raises BlankImage like /predict, or TooManyMarks."""
    levels = ink_levels(gray)
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
    groups = [
        group
        for group in merge_by_overlap(pieces, height)
        if group.height >= MIN_DIGIT_HEIGHT * height and on_line(group, line, height)
    ]
    if len(groups) > MAX_GROUPS:
        raise TooManyMarks(
            f"holds {len(groups)} separate marks; send a picture of one number (at most "
            f"{MAX_GROUPS} digits)"
        )
    groups.sort(key=lambda group: group.middle[0])
    typical = typical_digit_width(groups, height)
    builder = _Builder(labels, levels, height, typical)
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
    return Segmentation(
        (gray.shape[1], gray.shape[0]),
        builder.candidates,
        builder.boxes,
        builder.spans,
        builder.widths,
        builder.aspects,
        builder.position + 1,
    )


class _Builder:
    """Collects the candidates of one picture, group by group, left to right."""

    def __init__(self, labels: np.ndarray, levels: np.ndarray, height: float, typical: float):
        self.labels, self.levels, self.height, self.typical = labels, levels, height, typical
        self.candidates: list[PreparedImage] = []
        self.boxes: list[Box] = []
        self.spans: list[tuple[int, int]] = []
        self.widths: list[float] = []
        self.aspects: list[float] = []
        self.position = 0  # where the next group starts

    def ink_of(self, group: _Piece) -> np.ndarray:
        area = (slice(group.top, group.bottom), slice(group.left, group.right))
        return np.where(np.isin(self.labels[area], group.labels), self.levels[area], 0.0)

    def add_candidate(self, ink, left, top, start, end, width_ratio) -> None:
        rows = np.flatnonzero(ink.any(axis=1))
        cols = np.flatnonzero(ink.any(axis=0))
        ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        self.candidates.append(
            PreparedImage(input_size=ink.shape[::-1], pixels=ink_to_mnist_form(ink))
        )
        self.boxes.append((left + int(cols[0]), top + int(rows[0]), ink.shape[1], ink.shape[0]))
        self.spans.append((start, end))
        self.widths.append(width_ratio)
        self.aspects.append(ink.shape[1] / ink.shape[0])

    def add_group(self, group: _Piece) -> None:
        ink = self.ink_of(group)
        start = self.position
        if not may_hold_several(ink, self.typical):
            self.add_candidate(
                ink, group.left, group.top, start, start + 1, group.width / self.typical
            )
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

    def add_join(self, group: _Piece, following: _Piece, start: int, end: int) -> None:
        """Two neighbours narrow enough together to be one digit in pieces, one of them shorter
        than a digit: also read as one, from ``group``'s start to ``following``'s end."""
        left, right = min(group.left, following.left), max(group.right, following.right)
        if (
            right - left > JOIN_WIDTH * self.typical
            or min(group.height, following.height) >= DIGIT_SIZED * self.height
        ):
            return
        joined = _Piece(
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


def may_hold_several(ink: np.ndarray, typical: float) -> bool:
    """Whether a piece may be touching digits: wider than SPLIT_WIDTH typical digits, or wider
    than one with a neck (a column of little ink between two parts, as where a 1 touches a 4)."""
    width = ink.shape[1]
    if width > SPLIT_WIDTH * typical:
        return True
    if width <= NECK_WIDTH * typical:
        return False
    profile = ink.sum(axis=0)
    middle = profile[round(0.2 * width) : round(0.8 * width) + 1]
    return bool(middle.size) and middle.min() <= NECK * profile.max()


def components(levels: np.ndarray) -> tuple[np.ndarray, list[_Piece]]:
    """The 8-connected components of the ink (OpenCV): the label image and one piece each."""
    # OpenCV is imported on the first /read, not at start-up (docs/decisions.md).
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        (levels > 0).view(np.uint8), connectivity=8, ltype=cv2.CV_32S
    )
    mass = np.bincount(labels.ravel(), weights=levels.ravel(), minlength=count)
    pieces = [
        _Piece([label], int(y), int(y + h), int(x), int(x + w), float(mass[label]))
        for label, (x, y, w, h, _) in enumerate(stats[1:].tolist(), start=1)
    ]
    return labels, pieces


def writing_height(pieces: list[_Piece]) -> float:
    """The writing's typical digit height: the ink-weighted median height of the pieces holding
    substantial ink."""
    heaviest = max(piece.mass for piece in pieces)
    main = [piece for piece in pieces if piece.mass >= SUBSTANTIAL_MASS * heaviest]
    return float(
        max(1, weighted_median([p.height for p in main], np.array([p.mass for p in main])))
    )


def weighted_median(values: Sequence[float], weights: np.ndarray) -> float:
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    return float(np.asarray(values)[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


@dataclass(frozen=True)
class Line:
    """Where the writing runs: its middle row at column x is ``middle + slope * x``."""

    middle: float
    slope: float
    height: float

    def band(self, x: float) -> tuple[float, float]:
        centre = self.middle + self.slope * x
        return centre - self.height / 2, centre + self.height / 2


def writing_line(pieces: list[_Piece], height: float) -> Line:
    """The line through the middles of the digit-sized pieces (weighted by ink; a straight fit
    once three or more show it), so a number written uphill or on a wandering baseline is one
    line, and a digit written higher or lower than its neighbours is still on it."""
    sized = [piece for piece in pieces if piece.height >= DIGIT_SIZED * height] or pieces
    xs = np.array([piece.middle[0] for piece in sized])
    ys = np.array([piece.middle[1] for piece in sized])
    weights = np.array([piece.mass for piece in sized])
    if len(sized) >= 3 and np.ptp(xs) > height:
        slope, middle = np.polyfit(xs, ys, 1, w=np.sqrt(weights))
        return Line(float(middle), float(np.clip(slope, -0.3, 0.3)), height)
    return Line(weighted_median(ys.tolist(), weights), 0.0, height)


def on_line(piece: _Piece, line: Line, height: float) -> bool:
    """Whether ``piece``'s height overlaps the line of writing (else: a stray mark)."""
    top, bottom = line.band(piece.middle[0])
    overlap = min(piece.bottom, bottom) - max(piece.top, top)
    return overlap >= ON_LINE * min(piece.height, height)


def merge_by_overlap(pieces: list[_Piece], height: float) -> list[_Piece]:
    """Pieces of one digit put together: the ones that overlap horizontally (by MERGE_OVERLAP of
    the narrower) and lie within MERGE_GAP of the writing's height of each other vertically,
    unless both are digit-sized (two digits, one above the other's tail) or together too tall."""
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
                and min(first.height, second.height) < DIGIT_SIZED * height
            ):
                first = groups[a] = _Piece(
                    first.labels + second.labels,
                    min(first.top, second.top),
                    max(first.bottom, second.bottom),
                    first.left,
                    max(first.right, second.right),
                    first.mass + second.mass,
                )
                del groups[b]
                b = a + 1  # the wider group may now overlap pieces it skipped
            else:
                b += 1
        a += 1
    return groups


def typical_digit_width(groups: list[_Piece], height: float) -> float:
    """The median width of the groups that look like one digit (no wider than tall, not a thin
    1), else a typical digit's for this height."""
    lone = [g.width for g in groups if 0.35 * g.height <= g.width <= g.height]
    if not lone:
        return TYPICAL_ASPECT * height
    return float(np.clip(np.median(lone), MIN_ASPECT * height, MAX_ASPECT * height))


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


def cut_paths(ink: np.ndarray, height: float) -> list[np.ndarray]:
    """Where a piece of touching digits may be cut: per path, one column per row (the pixels left
    of it go left). Straight paths along the writing's slant at the slanted column profile's
    minima and on a regular grid; drop-fall paths from the top and from the bottom at the minima,
    which follow the gap between strokes. Sorted left to right, the piece's edges first and
    last."""
    rows, width = ink.shape
    slant = writing_slant(ink)
    offsets = slant * (np.arange(rows) - (rows - 1) / 2)
    across = np.arange(width)[None, :] - offsets[:, None]
    inked = ink > 0
    start = int(np.floor(across[inked].min()))
    span = int(np.ceil(across[inked].max())) + 1 - start
    bins = np.clip(np.floor(across[inked] - start).astype(int), 0, span - 1)
    profile = np.bincount(bins, weights=ink[inked], minlength=span)
    strokes = ink >= STROKE_LEVEL
    edges = [np.zeros(rows, dtype=int), np.full(rows, width, dtype=int)]
    step = max(1, round(CUT_STEP * height))
    while True:
        reach = max(1, step // 2)
        minima = [
            x
            for x in range(1, span)
            if profile[x] <= profile[max(0, x - reach) : x + reach + 1].min()
        ]
        found = {
            tuple(np.clip(np.rint(start + x + offsets), 0, width).astype(int))
            for x in sorted({*range(step, span, step), *minima})
        }
        for x in minima:
            for from_top in (True, False):
                row = 0 if from_top else rows - 1
                column = int(np.clip(round(start + x + offsets[row]), 0, width - 1))
                found.add(tuple(drop_fall(strokes, column, from_top)))
        inner = [np.array(path) for path in found]
        inner = sorted((p for p in inner if 0 < p.mean() < width), key=lambda p: p.mean())
        paths = [edges[0], *inner, edges[1]]
        means = np.array([path.mean() for path in paths])
        # Spans no wider than a digit, between any two paths: keep their count bounded.
        spans = np.count_nonzero(np.abs(means[:, None] - means[None, :]) <= MAX_CUT_WIDTH * height)
        if (spans - len(paths)) / 2 <= MAX_SPANS_PER_PIECE or step >= span:
            return paths
        step *= 2


def drop_fall(strokes: np.ndarray, column: int, from_top: bool) -> np.ndarray:
    """The drop-fall cut from ``column``: a drop falls row by row, straight down where it can,
    else to the free side below (left first), else through the stroke."""
    rows, width = strokes.shape
    order = range(rows) if from_top else range(rows - 1, -1, -1)
    path = np.empty(rows, dtype=int)
    x = column
    for index, row in enumerate(order):
        path[row] = x
        if index + 1 == rows:
            break
        below = strokes[row + 1] if from_top else strokes[row - 1]
        if not below[x]:
            continue
        if x > 0 and not below[x - 1]:
            x -= 1
        elif x + 1 < width and not below[x + 1]:
            x += 1
    return path


def between(ink: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The ink between two cut paths (each one column per row)."""
    cols = np.arange(ink.shape[1])[None, :]
    return np.where((cols >= left[:, None]) & (cols < right[:, None]), ink, 0.0)


def without_fragments(span: np.ndarray) -> np.ndarray:
    """``span`` without its small separate bits (a neighbour's stroke ends the cut took along)."""
    import cv2

    count, labels, _, _ = cv2.connectedComponentsWithStats(
        (span > 0).view(np.uint8), connectivity=8, ltype=cv2.CV_32S
    )
    if count <= 2:
        return span
    mass = np.bincount(labels.ravel(), weights=span.ravel(), minlength=count)
    mass[0] = 0
    keep = mass >= FRAGMENT_MASS * mass.sum()
    return np.where(keep[labels], span, 0.0)


def choose(segmentation: Segmentation, probabilities: np.ndarray) -> NumberReading:
    """The reading with the best score: the path of candidates from the first position to the
    last maximising the sum of the digits' log-probabilities and width priors (dynamic
    programming); its calibrated probability and whether a person should review it."""
    confidence = np.log(np.maximum(probabilities.max(axis=1), 1e-12))
    read = probabilities.argmax(axis=1)
    aspects = np.asarray(segmentation.aspects)
    odd_shape = (
        (aspects - np.asarray(ASPECT_MEAN)[read]) / np.asarray(ASPECT_SPREAD)[read]
    ) ** 2 / 2
    score = (
        confidence
        - DIGIT_COST
        - WIDTH_PRIOR * np.maximum(0.0, np.asarray(segmentation.widths) - WIDE_OK) ** 2
        - ASPECT_WEIGHT * odd_shape
    )
    # best[position][count]: the best score reaching ``position`` with ``count`` digits, and how.
    best: list[dict[int, tuple[float, tuple[int, ...]]]] = [
        {} for _ in range(segmentation.positions)
    ]
    best[0][0] = (0.0, ())
    ending = sorted(range(len(segmentation.spans)), key=lambda k: segmentation.spans[k][1])
    for k in ending:
        start, end = segmentation.spans[k]
        for count, (total, path) in list(best[start].items()):
            option = (total + score[k], (*path, k))
            if count + 1 not in best[end] or option[0] > best[end][count + 1][0]:
                best[end][count + 1] = option
    final = best[-1]
    if not final:
        return NumberReading("", 0.0, True, [], np.zeros(len(CALIBRATION) - 1))
    count = max(final, key=lambda c: final[c][0])
    top, path = final[count]
    rivals = [total for c, (total, _) in final.items() if c != count]
    margin = min(MAX_MARGIN, top - max(rivals)) if rivals else MAX_MARGIN
    digits = []
    for index in path:
        row = probabilities[index]
        digit = int(row.argmax())
        digits.append(ReadDigit(digit, float(row[digit]), segmentation.boxes[index], row, index))
    logs = confidence[list(path)]
    features = np.array(
        [
            float(np.log(1e-6 - logs.sum())),  # log of the digits' doubt, -log p(all digits)
            float(np.log(1e-3 + margin)),
            float(odd_shape[list(path)].max()),
        ]
    )
    probability = calibrated(features)
    return NumberReading(
        text="".join(str(digit.digit) for digit in digits),
        probability=probability,
        needs_review=probability < REVIEW_BELOW,
        digits=digits,
        features=features,
    )


def calibrated(features: np.ndarray, weights: Sequence[float] = CALIBRATION) -> float:
    """The calibrated probability that a reading with these features is exact."""
    z = weights[0] + float(np.dot(weights[1:], features))
    return float(1.0 / (1.0 + np.exp(-np.clip(z, -50, 50))))


def fit_calibration(features: Sequence[np.ndarray], exact: Sequence[bool]) -> str:
    """Fit CALIBRATION (logistic regression, Newton's method, a little L2) and REVIEW_BELOW (the
    lowest threshold whose numbers above it are 99.8 % exact, a margin over the 99.5 % target)
    to readings and whether each was exact; returns the two lines to paste."""
    x = np.column_stack([np.ones(len(features)), np.array(features)])
    y = np.asarray(exact, dtype=float)
    w = np.zeros(x.shape[1])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -50, 50)))
        gradient = x.T @ (y - p) - 1e-3 * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + 1e-3 * np.eye(len(w))
        w += np.linalg.solve(hessian, gradient)
    stated = np.array([calibrated(f, w) for f in features])
    order = np.argsort(-stated)
    exact_above = np.cumsum(y[order]) / np.arange(1, len(y) + 1)
    good = np.flatnonzero(exact_above >= 0.998)
    threshold = float(stated[order][good[-1]]) if len(good) else 1.0
    return f"CALIBRATION = ({', '.join(f'{v:.4g}' for v in w)})\nREVIEW_BELOW = {threshold:.4g}"


def segment_upload(upload: Upload, max_pixels: int) -> Segmentation:
    """Decode an upload and ``segment`` it; ImageRejected & kin name the upload, as /predict's."""
    try:
        return segment(decode(upload.data, max_pixels))
    except ImageRejected as exc:
        raise naming(upload, exc) from None


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
        "needs_review": reading.needs_review,
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
