"""Step 1b of reading a number: where a piece may be cut into several digits.

Straight cuts along the writing's slant and drop-fall paths that follow the gap between strokes;
the ink between two cuts, with a neighbour's stray fragments removed, is a candidate digit.
"""

import numpy as np

# A piece wider than this many times the writing's typical digit width may be touching digits...
SPLIT_WIDTH = 1.25


# ...and so may one wider than NECK_WIDTH of it whose column profile dips under NECK of its peak.
NECK_WIDTH = 0.8


NECK = 0.12


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


# Bound on the work one piece may ask for: candidate spans cut from it.
MAX_SPANS_PER_PIECE = 600


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
