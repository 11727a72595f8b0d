"""Step 1a of reading a number: the marks on the picture that can be digits.

Connected components of the ink (OpenCV), the writing's height and line, specks and strokes off
the line told apart from digits (a flat one too), pieces of one digit merged by their overlap.
Every threshold is a share of the writing's own height, never a pixel count.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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


# A mark shorter than this share of the writing's height is not a digit (a dash, an underline)...
MIN_DIGIT_HEIGHT = 0.4


# ...unless it is at least this share of it and as wide as a digit (DIGIT_SIZED): a flat digit,
# such as a 5 written wide and low.
FLAT_DIGIT_HEIGHT = 0.25


# A flat mark sharing more than this share of its columns with a taller one is not a digit.
FLAT_ALONE = 0.25


# Two pieces both shorter than MIN_DIGIT_HEIGHT and at most this far apart side by side (of the
# writing's height) are one digit in pieces: a flat 5 and its bar.
SHORT_PIECES_GAP = 0.1


# A mark whose height overlaps the line of writing by less than this share of the smaller of its
# height and the writing's is off the line: a stray stroke, not a digit.
ON_LINE = 0.25


# The typical digit's width, as a share of its height, when no lone digit shows it, and the
# bounds on what the lone digits show (two narrow digits touching may look like one).
TYPICAL_ASPECT = 0.7


MIN_ASPECT, MAX_ASPECT = 0.5, 1.0


@dataclass(frozen=True)
class Piece:
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


def components(levels: np.ndarray) -> tuple[np.ndarray, list[Piece]]:
    """The 8-connected components of the ink (OpenCV): the label image and one piece each."""
    # OpenCV is imported on the first /read, not at start-up (docs/decisions.md).
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        (levels > 0).view(np.uint8), connectivity=8, ltype=cv2.CV_32S
    )
    mass = np.bincount(labels.ravel(), weights=levels.ravel(), minlength=count)
    pieces = [
        Piece([label], int(y), int(y + h), int(x), int(x + w), float(mass[label]))
        for label, (x, y, w, h, _) in enumerate(stats[1:].tolist(), start=1)
    ]
    return labels, pieces


def writing_height(pieces: list[Piece]) -> float:
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


def writing_line(pieces: list[Piece], height: float) -> Line:
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


def on_line(piece: Piece, line: Line, height: float) -> bool:
    """Whether ``piece``'s height overlaps the line of writing (else: a stray mark)."""
    top, bottom = line.band(piece.middle[0])
    overlap = min(piece.bottom, bottom) - max(piece.top, top)
    return overlap >= ON_LINE * min(piece.height, height)


def merge_by_overlap(pieces: list[Piece], height: float) -> list[Piece]:
    """Pieces of one digit put together: the ones that overlap horizontally (by MERGE_OVERLAP of
    the narrower; two short ones, by SHORT_PIECES_GAP of the writing's height apart or less; a
    stroke under FLAT_DIGIT_HEIGHT, such as a 5's bar written apart, by any column) and lie
    within MERGE_GAP of the writing's height of each other vertically, unless both are
    digit-sized (two digits, one above the other's tail) or together too tall. A stroke that
    is not the digit's own is left out again by the digit check (add_group's candidates)."""
    groups = sorted(pieces, key=lambda piece: piece.left)
    reach = SHORT_PIECES_GAP * height
    a = 0
    while a < len(groups):
        first, b = groups[a], a + 1
        while b < len(groups) and groups[b].left < first.right + reach:  # sorted by left
            second = groups[b]
            overlap = min(first.right, second.right) - second.left
            gap = max(first.top, second.top) - min(first.bottom, second.bottom)
            merged_height = max(first.bottom, second.bottom) - min(first.top, second.top)
            both_short = max(first.height, second.height) < MIN_DIGIT_HEIGHT * height
            bar = min(first.height, second.height) < FLAT_DIGIT_HEIGHT * height
            if (
                (
                    overlap >= MERGE_OVERLAP * min(first.width, second.width)
                    or (both_short and overlap >= -reach)
                    or (bar and overlap > 0)
                )
                and gap <= MERGE_GAP * height
                and merged_height <= MAX_MERGED_HEIGHT * height
                and min(first.height, second.height) < DIGIT_SIZED * height
            ):
                first = groups[a] = Piece(
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


def digit_marks(groups: list[Piece], line: Line, height: float) -> list[Piece]:
    """The (merged) marks that can be digits: on the line of writing, and tall enough
    (MIN_DIGIT_HEIGHT), or flat but as wide as a digit (FLAT_DIGIT_HEIGHT, DIGIT_SIZED), reaching
    below the line's middle and standing alone, not over or under a taller mark, as a digit
    written wide and low does (a 5's bar that came loose sits high, on its 5: it stays out)."""
    on = [group for group in groups if on_line(group, line, height)]
    tall = [group for group in on if group.height >= MIN_DIGIT_HEIGHT * height]
    return tall + [
        group
        for group in on
        if FLAT_DIGIT_HEIGHT * height <= group.height < MIN_DIGIT_HEIGHT * height
        and group.width >= DIGIT_SIZED * height
        and group.bottom > sum(line.band(group.middle[0])) / 2
        and all(shared_columns(group, other) <= FLAT_ALONE * group.width for other in tall)
    ]


def shared_columns(first: Piece, second: Piece) -> int:
    """How many columns the two marks share."""
    return max(0, min(first.right, second.right) - max(first.left, second.left))


def typical_digit_width(groups: list[Piece], height: float) -> float:
    """The median width of the groups that look like one digit (no wider than tall, not a thin
    1), else a typical digit's for this height."""
    lone = [g.width for g in groups if 0.35 * g.height <= g.width <= g.height]
    if not lone:
        return TYPICAL_ASPECT * height
    return float(np.clip(np.median(lone), MIN_ASPECT * height, MAX_ASPECT * height))
