"""The page's number mode in headless Chromium: write digits side by side, read them via /read.

The same real app and committed weights as tests/browser/test_page_browser.py.
"""

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_page_browser import (
    DIGIT_STROKES,
    Point,
    canvas_gray_pixels,
    draw_with_mouse,
)

pytestmark = pytest.mark.slow

NUMBER = (1, 0, 7)


def in_slot(strokes: list[list[Point]], slot: int, slots: int) -> list[list[Point]]:
    """A digit's strokes (fractions of a square) moved into one of ``slots`` side-by-side places
    on the wide canvas (fractions of its width)."""
    return [[((slot + x) / slots, y) for x, y in stroke] for stroke in strokes]


def write_number(page: Page) -> None:
    page.get_by_role("button", name="A whole number").click()
    expect(page.locator("#number-mode")).to_be_visible()
    expect(page.locator("#digit-mode")).to_be_hidden()
    for slot, digit in enumerate(NUMBER):
        # Each digit in a square as tall as the canvas, centred in a third of it (3:1 canvas).
        draw_with_mouse(page, in_slot(DIGIT_STROKES[digit], slot, len(NUMBER)), "#number-drawing")
    expect(page.locator("#number-status")).not_to_have_text("Reading…")
    expect(page.locator("#number-mode")).to_have_attribute("aria-busy", "false")


def test_a_written_number_is_read_with_boxes_and_probabilities(page: Page, tmp_path):
    with page.expect_response("**/read") as answer:
        write_number(page)
    # Every stroke sends a request; wait for the last one's answer to be on the page.
    expect(page.locator("#number-text")).to_have_text("107")
    expect(page.locator("#number-message")).to_be_hidden()
    expect(page.locator("#number-status")).to_contain_text("Read your drawing as 107")
    digits = page.locator("#number-digits button")
    expect(digits).to_have_count(3)
    assert answer.value.status == 200
    assert max(canvas_gray_pixels(page, "#number-boxes")) > 0, "the boxes are drawn"

    # Hovering over the second digit's box shows that digit's ten probabilities.
    box = page.locator("#number-drawing").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    expect(page.locator("#digit-detail")).to_be_visible()
    expect(page.locator("#digit-detail-heading")).to_contain_text("Digit 2 of 3: 0")
    expect(page.locator("#number-bars li")).to_have_count(10)
    expect(page.locator("#number-bars li").nth(0)).to_have_class("top")

    # Tapping a digit below the drawing does the same.
    digits.nth(2).click()
    expect(page.locator("#digit-detail-heading")).to_contain_text("Digit 3 of 3: 7")
    expect(page.locator("#number-bars li").nth(7)).to_have_class("top")
    page.screenshot(path=tmp_path / "page-number-107.png", full_page=True)


def test_clear_number_and_back_to_one_digit(page: Page):
    write_number(page)
    expect(page.locator("#number-result")).to_be_visible()
    page.get_by_role("button", name="Clear number").click()
    expect(page.locator("#number-result")).to_be_hidden()
    expect(page.locator("#number-status")).to_have_text("No number yet.")
    assert max(canvas_gray_pixels(page, "#number-drawing")) == 0
    assert max(canvas_gray_pixels(page, "#number-boxes")) == 0

    page.get_by_role("button", name="One digit").click()
    expect(page.locator("#digit-mode")).to_be_visible()
    expect(page.locator("#number-mode")).to_be_hidden()
