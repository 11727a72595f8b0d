"""Fuzz POST /predict and /v2 infer: every answer a 200 or a 4xx with a JSON reason, never a 5xx.

    .venv/bin/python -m bench.fuzz --cases 100000             # the whole app, in process
    .venv/bin/python -m bench.fuzz --cases 5000 --server      # a real uvicorn on loopback
    .venv/bin/python -m bench.fuzz --cases 20000 --routes v2  # the Open Inference Protocol only

Hypothesis draws a corpus of requests from the strategies below (tests/test_fuzz_predict.py runs
the same ones at CI size): random bytes behind image magic numbers; real PNG/JPEG/GIF/TIFF/BMP/WebP
images in every colour mode (1-bit, palette, 16-bit, float, CMYK...), some animated, some
truncated or with bytes flipped or spliced in; hand-made headers declaring huge or zero
dimensions in a few dozen bytes; arbitrary Content-Types; multipart bodies with wrong, missing or
unclosed boundaries, garbage, odd field names, and thousands of parts; for /v2, inference requests
with wrong names, datatypes, shapes, data and parameters, binary tensors of the wrong size, bad
Inference-Header-Content-Length values, and real or damaged images as BYTES. Drawing costs about
5 ms a request, so past the corpus every case is a mutant of one of its requests (cut, flipped,
spliced, repeated), which costs microseconds. A failure does not stop the run: each is counted
and the first few are printed. Prints one JSON object: cases, seconds, answers by kind of request
and status, failures, and whether the service is still ready. Exit status 1 on any failure.
"""

import argparse
import base64
import dataclasses
import json
import logging
import random
import string
import struct
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO

import httpx
import numpy as np
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, assume, given, seed, settings
from hypothesis import strategies as st
from PIL import Image

from app.main import create_app
from app.protocols.open_inference_rest import HEADER_LENGTH
from app.settings import Settings
from bench.load import COMMITTED_WEIGHTS, SERVICE_ENV
from bench.servers import running_server

IMAGE_FORMATS = ["PNG", "JPEG", "GIF", "TIFF", "BMP", "WEBP"]
ANIMATED_FORMATS = {"PNG", "GIF", "WEBP", "TIFF"}  # save_all writes several frames
COLOUR_MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]
MAGIC_NUMBERS = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF89a",
    b"GIF87a",
    b"II*\x00",
    b"MM\x00*",
    b"BM",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"",
]
CONTENT_TYPES = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/tiff",
    "image/",
    "application/octet-stream",
    "application/x-www-form-urlencoded",
    "application/json",
    "text/plain",
    "multipart/mixed; boundary=x",
    "",
]
# Header values an HTTP client will send: printable ASCII, no CR/LF to split headers with, and no
# whitespace at either end (h11 refuses to send that, so it would fail the client, not the server).
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(
    str.strip
)
BOUNDARY_ALPHABET = string.ascii_letters + string.digits + "'()+_,-./:=?"


@dataclass(frozen=True)
class PredictRequest:
    kind: str  # which strategy made it, for the per-kind counts
    content_type: str | None  # None: no Content-Type header at all
    body: bytes

    def send(self, client: httpx.Client, path: str = "/predict") -> httpx.Response:
        """Post it to ``path``: /predict, or /read, which takes the same bodies."""
        headers = {} if self.content_type is None else {"content-type": self.content_type}
        return client.post(path, content=self.body, headers=headers)

    def violation(self, response: httpx.Response) -> str | None:
        return contract_violation(response)


@dataclass(frozen=True)
class V2Request:
    """A request to the Open Inference Protocol's infer route."""

    kind: str
    path: str
    header_length: str | None  # Inference-Header-Content-Length, if sent
    body: bytes

    def send(self, client: httpx.Client) -> httpx.Response:
        headers = {} if self.header_length is None else {HEADER_LENGTH: self.header_length}
        return client.post(self.path, content=self.body, headers=headers)

    def violation(self, response: httpx.Response) -> str | None:
        return v2_contract_violation(response)


# Images ------------------------------------------------------------------------------------


@st.composite
def real_images(draw) -> bytes:
    """A real image file: noise, a stroke on a flat background, or blank; maybe animated."""
    width, height = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    mode, file_format = draw(st.sampled_from(COLOUR_MODES)), draw(st.sampled_from(IMAGE_FORMATS))
    frames = draw(st.integers(1, 3)) if file_format in ANIMATED_FORMATS else 1
    pattern = draw(st.sampled_from(["noise", "stroke", "flat"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pictures = []
    for _ in range(frames):
        if pattern == "noise":
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        else:
            pixels = np.full((height, width, 3), rng.integers(0, 256), dtype=np.uint8)
            if pattern == "stroke":
                pixels[:, rng.integers(0, width)] = 255 - pixels[0, 0]
        pictures.append(Image.fromarray(pixels).convert(mode))
    buffer = BytesIO()
    try:
        pictures[0].save(buffer, file_format, save_all=frames > 1, append_images=pictures[1:])
    except (OSError, ValueError, KeyError, TypeError):
        assume(False)  # Pillow cannot write this mode in this format
    return buffer.getvalue()


@st.composite
def damaged(draw, images: st.SearchStrategy[bytes]) -> bytes:
    """A file truncated, with bytes flipped, or with random bytes spliced in."""
    data = bytearray(draw(images))
    assume(data)
    damage = draw(st.sampled_from(["truncate", "flip", "splice"]))
    if damage == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if damage == "flip":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        return bytes(data)
    at = draw(st.integers(0, len(data)))
    return bytes(data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:])


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def declared_png(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def declared_gif(width: int, height: int) -> bytes:
    screen = struct.pack("<HHBBB", width, height, 0, 0, 0)
    image = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return b"GIF89a" + screen + image + b"\x08\x02\x4c\x01\x00;"


def declared_bmp(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 16, 0, 0, 54) + info + b"\0" * 16


def declared_jpeg(width: int, height: int) -> bytes:
    frame = struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(frame) + 2) + frame + b"\xff\xd9"


def declared_tiff(width: int, height: int) -> bytes:
    tags = [  # (tag, type, count, value): LONG = 4, SHORT = 3
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 8 + 2 + 12 * 8 + 4),
        (278, 4, 1, height),
        (279, 4, 1, 16),
    ]
    entries = b"".join(struct.pack("<HHII", *tag) for tag in tags)
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(tags)) + entries + b"\0" * 20


# (maker, largest dimension the format can declare)
DECLARED_HEADERS = [
    (declared_png, 2**31 - 1),
    (declared_gif, 2**16 - 1),
    (declared_bmp, 2**31 - 1),
    (declared_jpeg, 2**16 - 1),
    (declared_tiff, 2**32 - 1),
]


@st.composite
def declared_dimensions(draw) -> bytes:
    """A few dozen bytes whose header declares huge (or zero) dimensions: a decompression bomb."""
    maker, largest = draw(st.sampled_from(DECLARED_HEADERS))
    dimension = st.one_of(st.just(0), st.integers(1, largest), st.just(largest))
    return maker(draw(dimension), draw(dimension))


def image_bytes() -> st.SearchStrategy[bytes]:
    return st.one_of(
        real_images(),
        damaged(real_images()),
        declared_dimensions(),
        st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGIC_NUMBERS), st.binary()),
    )


# Requests ----------------------------------------------------------------------------------


def raw_bodies() -> st.SearchStrategy[PredictRequest]:
    content_type = st.one_of(st.none(), st.sampled_from(CONTENT_TYPES), HEADER_TEXT)
    return st.builds(PredictRequest, st.just("raw"), content_type, image_bytes())


@st.composite
def multipart_part(draw) -> bytes:
    name = draw(st.sampled_from(["file", "files", "image", ""]))
    filename = draw(st.one_of(st.none(), st.text(max_size=20)))
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    headers = f"Content-Disposition: {disposition}\r\n"
    if draw(st.booleans()):
        headers += f"Content-Type: {draw(st.sampled_from(CONTENT_TYPES))}\r\n"
    if draw(st.integers(0, 9)) == 0:
        headers = draw(HEADER_TEXT) + "\r\n"  # a broken header line instead
    return headers.encode() + b"\r\n" + draw(image_bytes())


@st.composite
def multipart_bodies(draw) -> PredictRequest:
    """A multipart body, well formed or broken in one of the ways clients and attackers break it."""
    boundary = draw(st.text(BOUNDARY_ALPHABET, min_size=1, max_size=70))
    parts = draw(st.lists(multipart_part(), max_size=4))
    delimiter = b"--" + boundary.encode()
    body = b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts) + delimiter + b"--\r\n"
    breakage = draw(
        st.sampled_from(["none", "no-closing", "truncated", "garbage", "other-boundary", "bare"])
    )
    content_type = f"multipart/form-data; boundary={boundary}"
    if breakage == "no-closing":
        body = body[: body.rindex(delimiter)]
    elif breakage == "truncated":
        body = body[: draw(st.integers(0, len(body)))]
    elif breakage == "garbage":
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.binary(min_size=1, max_size=200)) + body[at:]
    elif breakage == "other-boundary":
        content_type = f'multipart/form-data; boundary="{boundary}x"'
    elif breakage == "bare":
        content_type = "multipart/form-data"  # no boundary parameter at all
    return PredictRequest(f"multipart-{breakage}", content_type, body)


@st.composite
def many_parts(draw) -> PredictRequest:
    """Up to thousands of tiny parts: refused at S4_MAX_IMAGES without decoding the rest."""
    count = draw(st.integers(1, 5000))
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n'
    part += draw(st.binary(max_size=16)) + b"\r\n"
    return PredictRequest(
        "many-parts", "multipart/form-data; boundary=b", part * count + b"--b--\r\n"
    )


def predict_requests() -> st.SearchStrategy[PredictRequest]:
    return st.one_of(raw_bodies(), multipart_bodies(), many_parts())


V2_PATHS = [
    "/v2/models/s4net/infer",
    "/v2/models/s4net/versions/0/infer",
    "/v2/models/mnist/infer",
]
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8)
)
ANY_JSON = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


def bytes_elements(files: list[bytes]) -> bytes:
    """BYTES elements in the binary tensor data form: a 4-byte little-endian length, then data."""
    return b"".join(struct.pack("<I", len(file)) + file for file in files)


@st.composite
def v2_tensors(draw) -> tuple[dict, bytes]:
    """An input tensor and the binary data it brings (if any): a well-formed one with none to
    three of its fields broken (name, datatype, shape, data, parameters)."""
    count = draw(st.integers(1, 3))
    if draw(st.booleans()):
        tensor: dict = {"name": "images", "datatype": "UINT8", "shape": [count, 28, 28]}
        pixels = draw(st.binary(min_size=784 * count, max_size=784 * count))
        as_json = draw(st.booleans())
        data: object = list(pixels) if as_json else None
        binary = b"" if as_json else pixels
    else:
        tensor = {"name": "image_bytes", "datatype": "BYTES", "shape": [count]}
        files = draw(st.lists(image_bytes(), min_size=count, max_size=count))
        as_json = draw(st.integers(0, 3)) == 0
        data = [base64.b64encode(file).decode() for file in files] if as_json else None
        binary = b"" if as_json else bytes_elements(files)
        if as_json:
            tensor["parameters"] = {"content_type": "base64"}
    if not as_json:
        tensor["parameters"] = {"binary_data_size": len(binary)}
    for breakage in draw(st.lists(st.sampled_from(V2_BREAKAGES), max_size=3)):
        if breakage == "name":
            tensor["name"] = draw(st.sampled_from(["images", "image_bytes", "pixels", ""]))
        elif breakage == "datatype":
            tensor["datatype"] = draw(st.sampled_from(["UINT8", "BYTES", "FP32", "uint8", ""]))
        elif breakage == "shape":
            tensor["shape"] = draw(
                st.sampled_from([[count, 784], [count, 28, 28, 1], [], [0, 28, 28], [65, 28, 28]])
                | st.lists(st.integers(-(2**64), 2**64) | st.booleans(), max_size=4)
            )
        elif breakage == "data":
            data = draw(ANY_JSON)
        elif breakage == "nested" and isinstance(data, list):
            data = [data]
        elif breakage == "binary":
            binary = draw(st.binary(max_size=3000))
        elif breakage == "binary_data_size":
            size = draw(st.sampled_from([len(binary) + 1, -1, 0, "12", None]))
            tensor["parameters"] = {"binary_data_size": size}
        elif breakage == "parameters":
            tensor["parameters"] = draw(ANY_JSON)
    if data is not None:
        tensor["data"] = data
    return tensor, binary


V2_BREAKAGES = [
    "name", "datatype", "shape", "data", "nested", "binary", "binary_data_size", "parameters",
]  # fmt: skip


@st.composite
def v2_requests(draw) -> V2Request:
    """An infer request: a JSON header, maybe binary data, and a header length that may lie."""
    one = st.lists(v2_tensors(), min_size=1, max_size=1)
    tensors = draw(one if draw(st.integers(0, 9)) else st.lists(v2_tensors(), max_size=3))
    request: dict = {"inputs": [tensor for tensor, _ in tensors]}
    flags = st.booleans() if draw(st.integers(0, 9)) else ANY_JSON
    if draw(st.booleans()):
        outputs = st.permutations(["probabilities", "digit"]).flatmap(
            lambda names: st.tuples(*(st.fixed_dictionaries(
                {"name": st.just(name)}, optional={"parameters": st.fixed_dictionaries(
                    {"binary_data": flags})}) for name in names))
        ).map(list)  # fmt: skip
        request["outputs"] = draw(outputs.map(lambda o: o[: len(o) - 1] or o) | outputs)
        if not draw(st.integers(0, 9)):
            request["outputs"] = draw(ANY_JSON | st.just([{"name": "logits"}]))
    if draw(st.booleans()):
        request["parameters"] = {"binary_data_output": draw(flags)}
    if draw(st.booleans()):
        request["id"] = draw(st.text(max_size=10) if draw(st.integers(0, 9)) else ANY_JSON)
    if draw(st.integers(0, 19)) == 0:
        request = draw(ANY_JSON)
    header = json.dumps(request).encode()
    binary = b"".join(data for _, data in tensors)
    length = None
    if binary or draw(st.integers(0, 5)) == 0:
        lengths = [str(len(header)), str(len(header) - 1), str(len(header) + 1), "-1"]
        length = (
            str(len(header))
            if draw(st.integers(0, 3))
            else draw(st.sampled_from(lengths) | HEADER_TEXT)
        )
    path = V2_PATHS[0] if draw(st.integers(0, 5)) else draw(st.sampled_from(V2_PATHS))
    return V2Request("v2", path, length, header + binary)


def v2_contract_violation(response: httpx.Response) -> str | None:
    """Why an infer answer breaks the contract (200, or 4xx with a JSON string error), or None."""
    if response.status_code == 200:
        length = response.headers.get(HEADER_LENGTH)
        header = response.content[: int(length)] if length else response.content
        return None if "outputs" in json.loads(header) else "200 without outputs"
    return error_violation(response, "error")


def contract_violation(response: httpx.Response) -> str | None:
    """Why an answer breaks the contract (200, or 4xx with a JSON string detail), or None."""
    if response.status_code == 200:
        answer = response.json()  # /predict's predictions, or /read's numbers
        return None if "predictions" in answer or "numbers" in answer else "200 without an answer"
    return error_violation(response, "detail")


def error_violation(response: httpx.Response, key: str) -> str | None:
    """Why an error answer is not a 4xx whose JSON body has a string ``key``, or None."""
    if not 400 <= response.status_code < 500:
        return f"status {response.status_code}: {response.text[:300]}"
    try:
        reason = response.json()[key]
    except (ValueError, KeyError, TypeError):
        return f"status {response.status_code} without a JSON {key}: {response.text[:300]}"
    return None if isinstance(reason, str) else f"{key} is not a string: {reason!r}"


# The long run ------------------------------------------------------------------------------


@contextmanager
def fuzz_target(use_server: bool) -> Iterator[httpx.Client]:
    """The app in process (TestClient, the whole ASGI stack), or a real uvicorn on loopback."""
    if use_server:
        with (
            running_server(SERVICE_ENV) as server,
            httpx.Client(base_url=server.url, timeout=30) as client,
        ):
            yield client  # running_server raises if the process died meanwhile
        return
    app = create_app(Settings(weights=COMMITTED_WEIGHTS, cpu_threads=1))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


ROUTES = {"predict": predict_requests, "v2": v2_requests}


def seed_corpus(
    size: int, random_seed: int, routes: tuple[str, ...] = ("predict",)
) -> list[PredictRequest | V2Request]:
    """``size`` requests drawn from the strategies (drawing is the slow part: ~5 ms each)."""
    corpus: list[PredictRequest] = []

    @seed(random_seed)
    @settings(
        max_examples=size,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(request=st.one_of(*(ROUTES[route]() for route in routes)))
    def collect(request: PredictRequest | V2Request) -> None:
        corpus.append(request)

    collect()
    return corpus


def mutated(request: PredictRequest | V2Request, rng: random.Random) -> PredictRequest | V2Request:
    """The request with its body cut, flipped, spliced, repeated or holed a few times (~10 us)."""
    body = bytearray(request.body)
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(body))
        mutation = rng.choice(["truncate", "flip", "splice", "repeat", "delete"])
        if mutation == "truncate":
            del body[at:]
        elif mutation == "flip" and at < len(body):
            body[at] ^= rng.randint(1, 255)
        elif mutation == "splice":
            body[at:at] = rng.randbytes(rng.randint(1, 64))
        elif mutation == "repeat":
            body[at:at] = body[at : at + rng.randint(1, 256)] * rng.randint(2, 50)
        elif mutation == "delete":
            del body[at : at + rng.randint(1, 64)]
    return dataclasses.replace(request, body=bytes(body))


def fuzz(
    client: httpx.Client,
    cases: int,
    corpus_size: int,
    random_seed: int,
    routes: tuple[str, ...] = ("predict",),
) -> dict:
    """Send the corpus as drawn, then mutants of it, until ``cases`` requests were answered."""
    corpus = seed_corpus(min(cases, corpus_size), random_seed, routes)
    rng = random.Random(random_seed)
    answers: Counter[str] = Counter()
    failures: list[str] = []
    started = time.perf_counter()
    for number in range(cases):
        request = corpus[number % len(corpus)]
        if number >= len(corpus):
            request = mutated(request, rng)
        response = request.send(client)
        answers[f"{request.kind} {response.status_code}"] += 1
        if problem := request.violation(response):
            failures.append(f"{request!r:.200}: {problem}")
    seconds = time.perf_counter() - started
    alive = client.get("/health").status_code == 200 and client.get("/ready").status_code == 200
    return {
        "cases": cases,
        "drawn_by_hypothesis": len(corpus),
        "mutants": cases - len(corpus),
        "seconds_sending": round(seconds, 1),
        "cases_per_second": round(cases / seconds, 1),
        "answers": dict(sorted(answers.items())),
        "failures": len(failures),
        "first_failures": failures[:5],
        "ready_after": alive,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=100_000, help="requests to send")
    parser.add_argument("--corpus", type=int, default=2000, help="requests drawn by hypothesis")
    parser.add_argument("--seed", type=int, default=0, help="seed of the whole run (reproducible)")
    parser.add_argument("--server", action="store_true", help="fuzz a real uvicorn process")
    parser.add_argument(
        "--routes", default="predict,v2", help=f"comma-separated, from {', '.join(ROUTES)}"
    )
    args = parser.parse_args(argv)
    # One request log line per case (and python-multipart's warning per broken body) would bury
    # the report.
    logging.getLogger("s4.requests").setLevel(logging.WARNING)
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    with fuzz_target(args.server) as client:
        report = fuzz(client, args.cases, args.corpus, args.seed, tuple(args.routes.split(",")))
    report["target"] = "uvicorn on loopback" if args.server else "in-process app (TestClient)"
    print(json.dumps(report, indent=2))
    return 0 if report["failures"] == 0 and report["ready_after"] else 1


if __name__ == "__main__":
    sys.exit(main())
