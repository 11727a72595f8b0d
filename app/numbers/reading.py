"""Step 3 of reading a number: the best reading of the candidates the net has read.

``choose`` finds the best left-to-right path by dynamic programming over the net's
log-probabilities, the digit check's log P(one whole digit), width and shape priors and a bonus
per digit, calibrates the number's probability and sets ``needs_review``; ``read_number`` runs
all three steps offline; ``encode_number`` is the answer.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from app.numbers.check import DigitCheck
from app.numbers.segmentation import Box, Segmentation, contested, segment
from app.pipeline.uploads import Upload

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


# The digit check's log P(one whole digit) counts this much against the net's log-probability.
CHECK_WEIGHT = 0.5


# Each digit of a path earns this much. Without it a path through fewer candidates sums fewer
# negative terms, so two overlapping digits read as one confident digit beat the two cut apart.
# Tuned on the holdout (docs/decisions.md has the figures).
DIGIT_BONUS = 0.5


# A path whose digit count differs from the best's by at least this score is no rival.
MAX_MARGIN = 12.0


# Calibration: probability = sigmoid(a + b * log(-sum of log p(digit)) + c * log(margin) + d *
# the oddest digit's shape cost + e * log(-sum of the check's log P(whole)) + f * contested), the
# margin being to the best path with another digit count, and contested 1 when a digit of the
# path had a rival candidate (so the check judged it), else 0: a reading the check never judged
# has its check term at the floor and must not count as one the check was all but sure of.
# Fitted on 4-digit numbers of the holdout (bench/numbers.py --source holdout --lengths 4
# --per-cell 250 --calibrate, fit_calibration); flagged below REVIEW_BELOW. Figures:
# docs/decisions.md.
CALIBRATION = (-3.11, -0.7835, 0.3618, -0.08998, -0.2518, 1.495)


REVIEW_BELOW = 0.980883


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


def choose(segmentation: Segmentation, probabilities: np.ndarray) -> NumberReading:
    """The reading with the best score: the path of candidates from the first position to the
    last maximising the sum of the digits' log-probabilities, the check's, the priors and
    DIGIT_BONUS per digit (dynamic programming); its calibrated probability and whether a person
    should review it."""
    confidence = np.log(np.maximum(probabilities.max(axis=1), 1e-12))
    read = probabilities.argmax(axis=1)
    aspects = np.asarray(segmentation.aspects)
    odd_shape = (
        (aspects - np.asarray(ASPECT_MEAN)[read]) / np.asarray(ASPECT_SPREAD)[read]
    ) ** 2 / 2
    score = (
        confidence
        + CHECK_WEIGHT * segmentation.log_whole
        - WIDTH_PRIOR * np.maximum(0.0, np.asarray(segmentation.widths) - WIDE_OK) ** 2
        - ASPECT_WEIGHT * odd_shape
        + DIGIT_BONUS
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
            float(np.log(1e-3 - segmentation.log_whole[list(path)].sum())),
            float(contested(segmentation.spans)[list(path)].any()),
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
    lowest threshold whose numbers above it are 99.5 % exact: the target for unflagged numbers)
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
    good = np.flatnonzero(exact_above >= 0.995)
    threshold = float(stated[order][good[-1]]) if len(good) else 1.0
    return f"CALIBRATION = ({', '.join(f'{v:.4g}' for v in w)})\nREVIEW_BELOW = {threshold:.6g}"


def read_number(
    gray: np.ndarray, forward: Callable[[np.ndarray], np.ndarray], check: DigitCheck
) -> NumberReading:
    """Read the number in ``gray`` (uint8 levels) with ``forward``: uint8 [N, 28, 28] -> float
    probabilities [N, 10], e.g. ``Predictor.forward(...).probabilities`` or a Runtime; and the
    digit ``check`` (``app.numbers.check.load_check``)."""
    segmentation = segment(gray, check)
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
