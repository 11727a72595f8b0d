"""A real `uvicorn app.main:app` on loopback: real sockets, real curl, a real streamed upload."""

import re
import shlex
import shutil
import socket
import subprocess

import httpx
import pytest

from bench.servers import running_server
from tests.conftest import REPO_ROOT

MAX_IMAGE_BYTES = 100_000


@pytest.fixture(scope="module")
def server(reading_weights):
    """Base URL of a uvicorn process serving the reading weights."""
    env = {
        "S4_WEIGHTS": str(reading_weights),
        "S4_CPU_THREADS": "1",
        "S4_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
    }
    with running_server(env) as server:
        yield server.url


@pytest.fixture
def digit_png(tmp_path, mnist_test_set, encode_image):
    """(path of an MNIST test digit saved as PNG, its label)."""
    images, labels = mnist_test_set
    path = tmp_path / "digit.png"
    path.write_bytes(encode_image(images[0]))
    return path, int(labels[0])


def test_multipart_and_raw_uploads(server, digit_png):
    path, label = digit_png
    data = path.read_bytes()
    multipart = httpx.post(f"{server}/predict", files={"file": ("digit.png", data, "image/png")})
    raw = httpx.post(f"{server}/predict", content=data, headers={"content-type": "image/png"})
    for response in (multipart, raw):
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["digit"] == label


DOCUMENTED_URL = "http://127.0.0.1:8000"
# The README and the docs site's pages: what users copy commands from.
DOCUMENTATION = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
# The example images the documented curl commands upload, and the digit each shows.
EXAMPLE_DIGITS = {"docs/seven.png": 7, "docs/two-on-paper.jpg": 2}


def documented_commands(route: str) -> list[str]:
    """Every `curl ... <route>` line of the README and the docs, exactly as written there."""
    return [
        line
        for page in DOCUMENTATION
        for line in page.read_text().splitlines()
        if re.match(rf"curl .*{route}\b", line)
    ]


def test_readme_and_docs_have_predict_examples():
    readme = (REPO_ROOT / "README.md").read_text().splitlines()
    assert any(re.match(r"curl .*/predict\b", line) for line in readme)
    commands = documented_commands("/predict")
    assert len(commands) >= 4
    assert any("--data-binary" in command for command in commands)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("command", documented_commands("/predict"))
def test_documented_curl_examples_work_as_written(server, command):
    """Run from the repo root against the test server; each example image reads as its digit."""
    predictions = run_documented_command(server, command)["predictions"]
    uploaded = re.findall(r"@(\S+)", command)
    assert [p["digit"] for p in predictions] == [EXAMPLE_DIGITS[path] for path in uploaded]


def run_documented_command(server: str, command: str) -> dict:
    """A documented curl line, run from the repo root against the test server; its JSON answer."""
    arguments = shlex.split(command.replace(DOCUMENTED_URL, server), comments=True)
    completed = subprocess.run(
        [arguments[0], "-sS", "--fail-with-body", *arguments[1:]],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=30,
        check=True,
    )
    return httpx.Response(200, content=completed.stdout).json()


# The pictures the documented curl commands for /read upload, and the number each shows.
EXAMPLE_NUMBERS = {"docs/number.png": "7210"}


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("command", documented_commands("/read"))
def test_documented_read_examples_work_as_written(server, command):
    """Run from the repo root against the test server; each example picture reads as its number."""
    numbers = run_documented_command(server, command)["numbers"]
    uploaded = re.findall(r"@(\S+)", command)
    assert [number["text"] for number in numbers] == [EXAMPLE_NUMBERS[path] for path in uploaded]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("command", documented_commands("/feedback"))
def test_documented_feedback_examples_work_as_written(server, command):
    """Run from the repo root against the test server: a correction is stored (its label as sent),
    and the stats count corrections."""
    answer = run_documented_command(server, command)
    if "-F" in command:
        label = re.search(r"-F (?:digit|text)=(\S+)", command).group(1)
        assert answer["label"] == label and len(answer["ids"]) == len(label), answer
    else:
        assert answer["corrections"] >= 0 and len(answer["confusion"]) == 10, answer


def test_oversized_upload_is_refused_before_it_is_all_sent(server):
    """Chunked (no Content-Length): the 413 arrives while most of the body is still unsent."""
    host, port = server.removeprefix("http://").split(":")
    chunk = b"\0" * 65_536
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(2):  # 128 KiB of a body that would go on for megabytes
            connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        reply = read_response(connection)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"S4_MAX_IMAGE_BYTES" in reply


def read_response(connection: socket.socket) -> bytes:
    """Status line, headers and (Content-Length) body of one HTTP response."""
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += connection.recv(65_536)
    head, body = reply.split(b"\r\n\r\n", 1)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += connection.recv(65_536)
    return head + b"\r\n\r\n" + body


def test_metrics_and_readiness_over_http(server):
    assert httpx.get(f"{server}/ready").json()["ready"] is True
    metrics = httpx.get(f"{server}/metrics")
    assert metrics.status_code == 200 and "s4_model_load_seconds" in metrics.text
