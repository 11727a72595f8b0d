"""End to end in headless Chromium: draw digits, upload an MNIST image, see errors, use a phone.

The page runs against the real app and the committed weights, so "draws a 7, reads a 7" checks the
whole path: pointer events, the canvas PNG, POST /predict, preprocessing, the net, the rendering.
"""

import base64
import math
import os
import shutil
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Page, expect

# Each test starts a browser page and waits for real inference.
pytestmark = pytest.mark.slow

Point = tuple[float, float]  # a fraction of the canvas's width and height, from its top left


def _ellipse(center: Point, radii: Point, segments: int = 24) -> list[Point]:
    # Start at the top and go anticlockwise, the way most people write a 0.
    return [
        (
            center[0] - radii[0] * math.sin(2 * math.pi * step / segments),
            center[1] - radii[1] * math.cos(2 * math.pi * step / segments),
        )
        for step in range(segments + 1)
    ]


# Each digit as the strokes a person would draw, one polyline per stroke.
DIGIT_STROKES: dict[int, list[list[Point]]] = {
    1: [[(0.52, 0.15), (0.47, 0.85)]],
    0: [_ellipse(center=(0.5, 0.5), radii=(0.22, 0.33))],
    7: [[(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)], [(0.42, 0.52), (0.68, 0.52)]],
}

PHONE = {"width": 390, "height": 844}  # CSS pixels
MNIST_SECOND_TEST_IMAGE = 1  # a 2: a digit none of the drawing tests draws


def _on_canvas(page: Page, point: Point, canvas: str = "#drawing") -> Point:
    box = page.locator(canvas).bounding_box()
    return box["x"] + point[0] * box["width"], box["y"] + point[1] * box["height"]


def draw_with_mouse(page: Page, strokes: list[list[Point]], canvas: str = "#drawing") -> None:
    for stroke in strokes:
        page.mouse.move(*_on_canvas(page, stroke[0], canvas))
        page.mouse.down()
        for point in stroke[1:]:
            page.mouse.move(*_on_canvas(page, point, canvas), steps=5)
        page.mouse.up()


def draw_with_finger(page: Page, strokes: list[list[Point]]) -> None:
    # Playwright's touchscreen only taps; the DevTools protocol can drag a finger.
    devtools = page.context.new_cdp_session(page)

    def touch(kind: str, points: list[Point]) -> None:
        on_page = [_on_canvas(page, point) for point in points]
        touch_points = [{"x": x, "y": y} for x, y in on_page]
        devtools.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": touch_points})

    for stroke in strokes:
        touch("touchStart", stroke[:1])
        for point in stroke[1:]:
            touch("touchMove", [point])
        touch("touchEnd", [])


def drop_on_zone(page: Page, path: Path) -> None:
    """Drop a file on the drop zone, as the browser does when one is dragged in from the desktop."""
    transfer = page.evaluate_handle(
        """([name, base64]) => {
            const bytes = Uint8Array.from(atob(base64), (char) => char.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/png" }));
            return transfer;
        }""",
        [path.name, base64.b64encode(path.read_bytes()).decode()],
    )
    page.locator("#drop-zone").dispatch_event("drop", {"dataTransfer": transfer})


def choose_file(page: Page, path: Path) -> None:
    page.locator("#file").set_input_files(path)


def wait_for_reading(page: Page) -> None:
    """Until the newest request's answer (or error) is on the page."""
    expect(page.locator("#status")).not_to_have_text("Reading…")
    expect(page.locator("#reading")).to_have_attribute("aria-busy", "false")


def shown_probabilities(page: Page) -> list[float]:
    values = page.locator("#bars .bar-value").all_inner_texts()
    return [float(value.rstrip("%")) / 100 for value in values]


def canvas_gray_pixels(page: Page, selector: str) -> list[int]:
    """The canvas's pixels as gray levels (its red channel), row by row."""
    return page.locator(selector).evaluate(
        """canvas => Array.from(
            canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data
        ).filter((_, index) => index % 4 === 0)"""
    )


def assert_shows_digit(page: Page, digit: int) -> None:
    expect(page.locator("#message")).to_be_hidden()
    expect(page.locator("#digit")).to_have_text(str(digit))
    expect(page.locator("#bars li")).to_have_count(10)
    expect(page.locator("#bars li.top")).to_have_count(1)
    expect(page.locator("#bars li").nth(digit)).to_have_class("top")
    probabilities = shown_probabilities(page)
    assert max(probabilities) == probabilities[digit]
    assert sum(probabilities) == pytest.approx(1, abs=0.01)  # each is rounded to 0.1%
    assert max(canvas_gray_pixels(page, "#model-input")) > 0


@pytest.mark.parametrize("digit", sorted(DIGIT_STROKES), ids=lambda digit: f"draws-{digit}")
def test_drawn_digit_is_read(page: Page, digit: int, tmp_path: Path):
    draw_with_mouse(page, DIGIT_STROKES[digit])
    wait_for_reading(page)

    assert_shows_digit(page, digit)
    expect(page.locator("#status")).to_contain_text(f"Read your drawing as {digit}")
    screenshot = tmp_path / f"page-after-drawing-{digit}.png"
    page.screenshot(path=screenshot, full_page=True)
    # `make screenshot` sets this to refresh the README's picture from a real run.
    readme_copy = os.environ.get("S4_README_SCREENSHOT")
    if readme_copy and digit == 7:
        shutil.copyfile(screenshot, readme_copy)


@pytest.mark.parametrize(
    "give_image",
    [choose_file, drop_on_zone],
    ids=["file-picker", "drop-zone"],
)
def test_mnist_test_image_is_read(page: Page, mnist_test_set, tmp_path: Path, give_image):
    images, labels = mnist_test_set
    label = int(labels[MNIST_SECOND_TEST_IMAGE])
    image = tmp_path / "mnist-test-1.png"
    Image.fromarray(images[MNIST_SECOND_TEST_IMAGE]).save(image)

    with page.expect_response("**/predict?**") as answer:
        give_image(page, image)
    wait_for_reading(page)

    assert_shows_digit(page, label)
    expect(page.locator("#status")).to_contain_text(f"Read {image.name} as {label}")
    # The small canvas shows exactly the 28x28 image the model saw, pixel for pixel.
    model_input = answer.value.json()["predictions"][0]["model_input"]
    assert canvas_gray_pixels(page, "#model-input") == [gray for row in model_input for gray in row]
    page.screenshot(path=tmp_path / "page-after-upload.png", full_page=True)


def _blank_png(folder: Path) -> Path:
    path = folder / "blank.png"
    Image.new("L", (28, 28), 0).save(path)
    return path


def _text_file(folder: Path) -> Path:
    path = folder / "notes.png"  # named like an image, so only its bytes give it away
    path.write_text("this is not an image")
    return path


@pytest.mark.parametrize(
    ("make_file", "status"),
    [(_blank_png, 422), (_text_file, 415)],
    ids=["blank-image", "not-an-image"],
)
def test_api_errors_are_shown(page: Page, tmp_path: Path, make_file, status: int):
    # A reading first, to check that an error replaces it rather than sitting beside it.
    draw_with_mouse(page, DIGIT_STROKES[1])
    wait_for_reading(page)
    upload = make_file(tmp_path)

    with page.expect_response("**/predict?**") as answer:
        choose_file(page, upload)
    wait_for_reading(page)

    assert answer.value.status == status
    expect(page.locator("#message")).to_be_visible()
    expect(page.locator("#message")).to_have_text(answer.value.json()["detail"])
    expect(page.locator("#result")).to_be_hidden()
    page.screenshot(path=tmp_path / f"page-error-{status}.png", full_page=True)


def test_clear_and_reset_from_the_keyboard(page: Page):
    draw_with_mouse(page, DIGIT_STROKES[7])
    wait_for_reading(page)

    def tab_to(button_id: str) -> None:
        for _ in range(10):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == button_id:
                return
        pytest.fail(f"#{button_id} cannot be reached with the Tab key")

    tab_to("clear")
    outline = page.locator("#clear").evaluate("button => getComputedStyle(button).outlineStyle")
    assert outline != "none", "a focused button must show where the focus is"
    page.keyboard.press("Enter")
    assert max(canvas_gray_pixels(page, "#drawing")) == 0
    expect(page.locator("#result")).to_be_visible()  # Clear only wipes the drawing

    tab_to("reset")
    page.keyboard.press("Space")
    expect(page.locator("#result")).to_be_hidden()
    expect(page.locator("#status")).to_have_text("No digit yet.")


def test_model_panel_and_docs_link(page: Page, live_server: str):
    weights = httpx.get(f"{live_server}/model").json()["weights"]
    facts = page.locator("#model-facts")

    expect(facts).to_contain_text("19,570")
    assert 99 < weights["test_accuracy"] <= 100, "/model gives the card's accuracy in percent"
    expect(facts).to_contain_text(f"{weights['test_accuracy']:.2f}%")
    expect(facts).to_contain_text(weights["sha256"][:12])
    docs = page.get_by_role("link", name="API docs")
    assert docs.get_attribute("href") == "docs"
    docs.click()
    # Swagger UI is served by the app itself, so the docs render with no internet access.
    expect(page.locator(".opblock-summary-path", has_text="/predict")).to_be_visible()


def test_phone_finger_drawing(open_page, tmp_path: Path):
    phone = open_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    canvas = phone.locator("#drawing").bounding_box()
    page_width = phone.evaluate("document.documentElement.scrollWidth")
    assert page_width <= PHONE["width"], "the page scrolls sideways on a phone"
    assert 0.75 * PHONE["width"] <= canvas["width"] <= PHONE["width"]

    draw_with_finger(phone, DIGIT_STROKES[7])
    wait_for_reading(phone)

    assert_shows_digit(phone, 7)
    phone.screenshot(path=tmp_path / "phone-after-drawing-7.png", full_page=True)
