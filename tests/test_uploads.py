"""Multipart bodies (app.pipeline): split_whole_body stands in for python-multipart on the bodies
HTTP clients write, so on every body it accepts, the two must read exactly the same images."""

import string

import httpx
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser

from app.pipeline.errors import PipelineError
from app.pipeline.uploads import ImagePartCollector, split_whole_body

MAX_IMAGES = 3
MAX_IMAGE_BYTES = 48


def read_with_python_multipart(body: bytes, boundary: bytes) -> tuple:
    collector = ImagePartCollector(MAX_IMAGES, MAX_IMAGE_BYTES)
    return outcome(collector, lambda: MultipartParser(boundary, collector.callbacks()).write(body))


def read_with_split(parts: list) -> tuple:
    collector = ImagePartCollector(MAX_IMAGES, MAX_IMAGE_BYTES)
    return outcome(collector, lambda: collector.collect(parts))


def outcome(collector: ImagePartCollector, parse) -> tuple:
    """What the request would get: its images, or the refusal (status and message)."""
    try:
        parse()
    except PipelineError as exc:
        return ("refused", type(exc), str(exc))
    except FormParserError:
        return ("malformed",)
    uploads = [(upload.index, upload.filename, upload.data) for upload in collector.uploads]
    return ("read", collector.finished, uploads)


def client_body(files: list[tuple[str, tuple[str, bytes, str]]]) -> tuple[bytes, bytes]:
    """A multipart body exactly as httpx writes it, and its boundary."""
    request = httpx.Request("POST", "http://s4.test/predict", files=files)
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    return request.read(), boundary


def test_bodies_that_clients_write_are_split_as_python_multipart_reads_them():
    for files in [
        [("file", ("seven.png", b"\x89PNG\r\n\x1a\n...", "image/png"))],
        [("file", (f"{i}.png", bytes([i]) * 40, "image/png")) for i in range(3)],
        [("files", ("photo.jpg", b"\xff\xd8\r\n\r\n--not a boundary\r\n", "image/jpeg"))],
        [("file", ("", b"", "application/octet-stream"))],
        [("file", ("a.png", b"x" * 49, "image/png"))],  # over the byte limit: refused alike
        [("file", ("a.png", b"1", "image/png"))] * 4,  # over the image limit: refused alike
        [("caption", ("c.txt", b"hello", "text/plain"))],  # not an image field: refused alike
    ]:
        body, boundary = client_body(files)
        parts = split_whole_body(body, boundary)
        assert parts is not None, body
        assert read_with_split(parts) == read_with_python_multipart(body, boundary)


def test_the_benchmarks_body_is_split():
    boundary = b"s4benchboundary"
    body = (
        b"--s4benchboundary\r\n"
        b'Content-Disposition: form-data; name="file"; filename="digit.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + b"\x89PNG" + b"\r\n--s4benchboundary--\r\n"
    )
    parts = split_whole_body(body, boundary)
    assert parts is not None
    assert read_with_split(parts) == ("read", True, [(0, "digit.png", b"\x89PNG")])


# What clients use: 1 to 70 characters (RFC 2046), chosen so as not to occur in the data.
BOUNDARIES = st.text(string.ascii_letters + string.digits + "'()+_,-./:=?", min_size=1, max_size=20)
# Mostly what clients send, now and then something python-multipart refuses or reads differently.
HEADER_NAMES = st.sampled_from(
    [b"Content-Disposition"] * 12
    + [b"content-disposition", b"Content-Type", b"X-Note", b"Bad Name", b"", b"\xff"]
)
SEPARATORS = st.sampled_from([b": "] * 12 + [b":", b":   ", b" : ", b"\t: "])
VALUES_CLIENTS_SEND = st.sampled_from(
    [b'form-data; name="file"; filename="a.png"'] * 4
    + [
        b'form-data; name="files"',
        b"form-data",
        b"form-data; name=file; filename=b.png",
        b'form-data; name="caption"',
        b"image/png",
        b"form-data; name=\"file\"; filename*=UTF-8''%E2%82%AC.png",
        b"",
    ]
)
HEADER_VALUES = st.one_of(VALUES_CLIENTS_SEND, VALUES_CLIENTS_SEND, st.binary(max_size=12))
CHANGES = st.sampled_from(["none"] * 6 + ["preamble", "epilogue", "padding", "truncated", "lf"])


@st.composite
def multipart_bodies(draw, as_clients_write: bool) -> tuple[bytes, bytes]:
    """Bodies in the layout clients write, with random boundaries, headers and data; unless
    ``as_clients_write``, also odd headers, data that holds the boundary, and now and then a
    preamble, an epilogue, padding or a lost line ending, and the empty boundary."""
    boundaries = BOUNDARIES if as_clients_write else st.one_of(BOUNDARIES, st.just(""))
    boundary = draw(boundaries).encode()
    delimiter = b"--" + boundary
    near_boundary = st.sampled_from(
        [
            start + delimiter + tail
            for start in (b"\r\n", b"")
            for tail in (b"\r\n", b"--", b"x", b" ", b"--\r\n", b"\r")
        ]
    )
    if as_clients_write:
        names = st.sampled_from([b"Content-Disposition", b"content-disposition", b"X-Note"])
        separators, values = st.just(b": "), VALUES_CLIENTS_SEND
        header_counts, data = st.integers(1, 3), st.binary(max_size=60)
    else:
        names, separators, values = HEADER_NAMES, SEPARATORS, HEADER_VALUES
        header_counts = st.sampled_from([1, 1, 2, 2, 3, 0, 9])
        data = st.one_of(st.binary(max_size=60), near_boundary, st.binary(max_size=60))
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        headers = [
            draw(names) + draw(separators) + draw(values) for _ in range(draw(header_counts))
        ]
        chunks = draw(st.lists(data, max_size=2))
        if as_clients_write:
            assume(delimiter not in b"".join(chunks))
        parts.append(b"\r\n".join(headers) + b"\r\n\r\n" + b"".join(chunks))
    body = delimiter + b"\r\n" + (b"\r\n" + delimiter + b"\r\n").join(parts)
    body += b"\r\n" + delimiter + b"--\r\n"
    change = "none" if as_clients_write else draw(CHANGES)
    if change == "preamble":
        body = b"preamble\r\n" + body
    elif change == "epilogue":
        body += b"epilogue"
    elif change == "padding":
        body = body.replace(delimiter + b"\r\n", delimiter + b"  \r\n", 1)
    elif change == "truncated":
        body = body[: draw(st.integers(0, len(body)))]
    elif change == "lf":
        body = body.replace(b"\r\n", b"\n", 1)
    return body, boundary


@settings(max_examples=500, deadline=None)
@given(multipart_bodies(as_clients_write=True))
def test_bodies_as_clients_write_them_are_split_and_read_alike(case):
    body, boundary = case
    parts = split_whole_body(body, boundary)
    assert parts is not None
    assert read_with_split(parts) == read_with_python_multipart(body, boundary)


@settings(max_examples=1500, deadline=None)
@given(multipart_bodies(as_clients_write=False))
def test_whatever_split_whole_body_accepts_python_multipart_reads_the_same(case):
    body, boundary = case
    parts = split_whole_body(body, boundary)
    if parts is not None:
        assert read_with_split(parts) == read_with_python_multipart(body, boundary)
