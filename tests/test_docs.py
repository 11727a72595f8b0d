"""The documentation as users meet it: a short README whose links and Python example work as
written, and a docs site whose every page is in its nav and whose settings page lists every
setting. (`make docs` builds the site with --strict, which checks the site's own links.)"""

import importlib.util
import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from markdown.extensions.toc import slugify

from app.settings import Settings
from bench.servers import running_server
from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
README_MAX_LINES = 200
# The addresses the documented examples use, which the tests point at their own server.
DOCUMENTED_ADDRESS = "127.0.0.1:8000"
DOCUMENTED_GRPC_ADDRESS = "127.0.0.1:8001"


def test_readme_is_at_most_200_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines: it is for users, move the rest to docs/"
    )


def nav_pages(nav: list) -> list[str]:
    """Every page file named in an mkdocs.yml nav, however deeply nested."""
    pages = []
    for entry in nav:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            pages.extend(nav_pages(value) if isinstance(value, list) else [value])
    return pages


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_exists():
    nav = nav_pages(yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text())["nav"])
    pages = sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md"))
    assert sorted(nav) == pages


def anchors(markdown_file: Path) -> set[str]:
    """The heading anchors MkDocs gives a page (the toc extension's slugs)."""
    headings = re.findall(r"^#+ (.+)$", markdown_file.read_text(), flags=re.MULTILINE)
    return {slugify(re.sub(r"[`*]", "", heading), "-") for heading in headings}


def test_readme_links_point_at_files_and_headings_that_exist():
    """GitHub shows the README's links as they are; the site's --strict build never sees them."""
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert local
    for link in local:
        path, _, anchor = link.partition("#")
        assert (REPO_ROOT / path).is_file(), link
        if anchor:
            assert anchor in anchors(REPO_ROOT / path), link


def load_settings_hook():
    path = DOCS / "hooks" / "settings_page.py"
    spec = importlib.util.spec_from_file_location("settings_page", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_page_lists_every_setting_with_its_description():
    hook = load_settings_hook()
    assert hook.MARKER in (DOCS / hook.PAGE).read_text()
    rows = hook.settings_table().splitlines()
    for name, field in Settings.model_fields.items():
        variable = field.validation_alias or f"S4_{name.upper()}"
        row = next((row for row in rows if row.startswith(f"| `{variable}` |")), None)
        assert row is not None, f"{variable} is missing from the settings page"
        assert field.description, f"Settings.{name} has no description"
        assert " ".join(field.description.split()) in row.replace("\\|", "|")


def python_examples(markdown_file: Path) -> list[str]:
    """The ```python blocks of a page that talk to the documented addresses (HTTP or gRPC)."""
    blocks = re.findall(r"^```python\n(.*?)^```", markdown_file.read_text(), re.M | re.S)
    addresses = (DOCUMENTED_ADDRESS, DOCUMENTED_GRPC_ADDRESS)
    return [block for block in blocks if any(address in block for address in addresses)]


def shown_output(example: str) -> list[str]:
    """The output an example shows: the `# ...` comment lines right after each print()."""
    shown, lines = [], example.splitlines()
    for before, line in itertools.pairwise(lines):
        if before.startswith("print(") and line.startswith("# "):
            shown.append(line.removeprefix("# "))
    return shown


EXAMPLES = [
    pytest.param(example, id=f"{path.name}-{index}")
    for path in (README, DOCS / "open-inference-protocol.md")
    for index, example in enumerate(python_examples(path))
]


@pytest.fixture(scope="module")
def server(reading_weights):
    env = {"S4_WEIGHTS": str(reading_weights), "S4_CPU_THREADS": "1", "S4_GRPC": "true"}
    with running_server(env) as server:
        yield server


def test_readme_has_a_python_example():
    assert python_examples(README)


@pytest.mark.parametrize("example", EXAMPLES)
def test_python_examples_print_what_they_show(server, example):
    """Run from the repository's root, as the docs say, against a real server."""
    address = server.url.removeprefix("http://")
    example_here = example.replace(DOCUMENTED_ADDRESS, address).replace(
        DOCUMENTED_GRPC_ADDRESS, server.grpc_address
    )
    completed = subprocess.run(
        [sys.executable, "-c", example_here],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == shown_output(example)
