"""The page's "Wrong? Tell us what it says" in headless Chromium: the right digit (or number)
goes to POST /feedback with the picture that was read, and a thank-you says it was stored."""

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_number_page import write_number
from tests.browser.test_page_browser import DIGIT_STROKES, draw_with_mouse, wait_for_reading

pytestmark = pytest.mark.slow


def confusion(live_server: str) -> list[list[int]]:
    return httpx.get(f"{live_server}/feedback/stats").json()["confusion"]


def test_a_misread_digit_is_corrected_from_the_page(page: Page, live_server: str):
    before = confusion(live_server)[1][7]
    draw_with_mouse(page, DIGIT_STROKES[7])
    wait_for_reading(page)
    expect(page.locator("#digit")).to_have_text("7")
    expect(page.locator("#digit-picker")).to_be_hidden()

    page.get_by_role("button", name="Wrong? Tell us what it says").click()
    expect(page.locator("#digit-picker button")).to_have_count(10)
    with page.expect_response("**/feedback") as answer:
        page.get_by_role("button", name="It is a 1").click()
    assert answer.value.status == 201
    assert answer.value.json()["label"] == "1" and answer.value.json()["read"] == "7"
    expect(page.locator("#thanks")).to_have_text("Thank you: stored as 1.")
    expect(page.locator("#digit-picker")).to_be_hidden()
    assert confusion(live_server)[1][7] == before + 1  # meant 1, read 7

    # A new reading puts the question back.
    page.get_by_role("button", name="Reset all").click()
    draw_with_mouse(page, DIGIT_STROKES[0])
    wait_for_reading(page)
    expect(page.locator("#thanks")).to_be_hidden()


def test_a_misread_number_is_corrected_from_the_page(page: Page, live_server: str):
    before = confusion(live_server)[8][7]
    write_number(page)
    expect(page.locator("#number-text")).to_have_text("107")
    page.locator("#number-wrong").click()
    field = page.get_by_label("The right number")
    expect(field).to_have_value("107")  # the reading, to edit
    field.fill("108")
    with page.expect_response("**/feedback") as answer:
        page.get_by_role("button", name="Send").click()
    assert answer.value.status == 201
    expect(page.locator("#number-thanks")).to_have_text("Thank you: stored as 108.")
    assert confusion(live_server)[8][7] == before + 1


def test_a_refused_correction_says_why(page: Page, live_server: str):
    write_number(page)
    page.locator("#number-wrong").click()
    page.get_by_label("The right number").fill("10")  # two digits for a three-digit drawing
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#number-thanks")).to_contain_text("finds 3 digits")
    expect(page.locator("#number-thanks")).to_have_class("thanks failed")
