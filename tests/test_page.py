"""GET / and /static/ without a browser: the page and everything it loads come from the app.

What the page does in a browser is tested end to end in tests/browser/.
"""

import re
from html.parser import HTMLParser

import pytest

from app.api.page import STATIC_DIR


class _PageOutline(HTMLParser):
    """Collects what these tests look at: referenced assets, element ids, labels and buttons."""

    def __init__(self):
        super().__init__()
        self.assets: list[str] = []
        self.ids: dict[str, dict[str, str | None]] = {}
        self.button_ids: list[str] = []
        self.inside_label = 0
        self.inputs_inside_labels: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script" or (tag == "link" and attributes.get("rel") == "stylesheet"):
            self.assets.append(attributes.get("src") or attributes["href"])
        if "id" in attributes:
            self.ids[attributes["id"]] = {"tag": tag, **attributes}
        if tag == "button":
            self.button_ids.append(attributes.get("id"))
        if tag == "label":
            self.inside_label += 1
        if tag == "input" and self.inside_label:
            self.inputs_inside_labels.append(attributes.get("id"))

    def handle_endtag(self, tag):
        if tag == "label":
            self.inside_label -= 1


@pytest.fixture
def page_outline(make_client, untrained_weights) -> tuple[_PageOutline, dict[str, str]]:
    """The parsed page, and the content type each asset it references is served with."""
    with make_client(weights=untrained_weights) as client:
        response = client.get("/")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        outline = _PageOutline()
        outline.feed(response.text)
        content_types = {}
        for asset in outline.assets:
            served = client.get(f"/{asset}")
            assert served.status_code == 200, asset
            content_types[asset] = served.headers["content-type"]
    return outline, content_types


def test_page_serves_its_script_and_stylesheet(page_outline):
    _, content_types = page_outline
    assert {asset: kind.split(";")[0] for asset, kind in content_types.items()} == {
        "static/style.css": "text/css",
        "static/app.js": "text/javascript",
    }


def test_page_has_the_controls_the_issue_asks_for(page_outline):
    outline, _ = page_outline
    assert outline.ids["drawing"]["tag"] == "canvas"
    assert outline.ids["model-input"]["tag"] == "canvas"
    assert outline.ids["file"]["type"] == "file"
    assert "file" in outline.inputs_inside_labels, "the file input needs a label"
    assert {"clear", "reset"} <= set(outline.button_ids)
    assert outline.ids["status"]["aria-live"] == "polite"
    assert outline.ids["message"]["role"] == "alert"


def test_static_files_reference_nothing_outside_the_app():
    for path in STATIC_DIR.iterdir():
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", path.read_text()), path.name


def test_page_is_not_part_of_the_api_schema(make_client, untrained_weights):
    with make_client(weights=untrained_weights) as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths


def test_unknown_static_file_is_404(make_client, untrained_weights):
    with make_client(weights=untrained_weights) as client:
        assert client.get("/static/missing.js").status_code == 404
        assert client.get("/static/..%2Fmain.py").status_code == 404  # app/main.py, if it escaped
