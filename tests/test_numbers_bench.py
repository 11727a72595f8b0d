"""bench/numbers.py's fast subset: numbers of MNIST test digits read with floors on accuracy.

The floors sit below what the full bench measures (docs/numbers.md), so they catch a
segmentation that breaks, not noise; the figures themselves come from `python -m bench.numbers`.
"""

import pytest

from bench.numbers import committed_forward, evaluate, samples

pytestmark = pytest.mark.slow

# Exact whole numbers, all lengths 1-10, by gap; and digits in numbers of the right length.
FLOORS = {"wide": 0.85, "normal": 0.85, "touching": 0.4, "overlap 2px": 0.15}
DIGIT_FLOOR = 0.97


def test_composed_numbers_are_read_above_the_floors():
    result = evaluate(samples("test", count_per_cell=3, seed=1), committed_forward())
    for gap, floor in FLOORS.items():
        tally = result["by_gap"][gap]
        assert tally.right / tally.total >= floor, (gap, str(tally))
    digits = result["digits"]
    assert digits.right / digits.total >= DIGIT_FLOOR, str(digits)
