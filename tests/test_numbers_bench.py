"""bench/numbers.py's fast subset: numbers of MNIST test digits read with floors on accuracy.

The floors sit below what the full bench measures (docs/numbers.md), so they catch a
segmentation that breaks, not noise; the figures themselves come from `python -m bench.numbers`.
"""

import pytest

from bench.numbers import (
    committed_check,
    committed_forward,
    cut_perfectly,
    evaluate,
    review_figures,
    samples,
    tallies,
)

pytestmark = pytest.mark.slow

# Exact whole numbers, lengths 1-6, by style and gap; and digits in numbers of the right length.
FLOORS = {
    ("clean", "wide"): 0.85,
    ("clean", "normal"): 0.85,
    ("clean", "touching"): 0.7,
    ("clean", "overlap 2px"): 0.4,
    ("realistic", "normal"): 0.8,
}
DIGIT_FLOOR = 0.97
KEPT_FLOOR = 0.95  # exact share of the numbers not flagged needs_review
ALONE_FLOOR = 0.9  # exact share of the numbers whose digits are cut out with the composer's map


def test_composed_numbers_are_read_above_the_floors():
    outcomes = evaluate(
        samples("test", count_per_cell=3, seed=1, lengths=range(1, 7)),
        committed_forward(),
        committed_check(),
    )
    result = tallies(outcomes)
    for cell, floor in FLOORS.items():
        tally = result["by_cell"][cell]
        assert tally.share >= floor, (cell, str(tally))
    assert result["digits"].share >= DIGIT_FLOOR, str(result["digits"])
    review = review_figures(outcomes)
    assert review["kept"].share >= KEPT_FLOOR, str(review["kept"])
    alone = sum(outcome.alone == outcome.sample.text for outcome in outcomes) / len(outcomes)
    assert alone >= ALONE_FLOOR, alone
    assert 0.0 < review["tenth"] < 1.0
    assert review["above"]["normal"].total >= 0.8 * result["by_cell"]["clean", "normal"].total


def test_cutting_perfectly_gives_each_digit_alone_in_mnist_form():
    for case in samples("test", count_per_cell=1, seed=2, lengths=[3], styles=["realistic"]):
        digits = cut_perfectly(case)
        assert digits.shape == (3, 28, 28) and digits.dtype.name == "uint8"
        assert all(digit.max() == 255 for digit in digits)  # every digit has its ink, stretched
