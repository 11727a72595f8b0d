"""CPU time per /predict (or v2 infer) request inside one worker, without HTTP or a load generator.

    .venv/bin/python -m bench.inprocess                      # 20,000 requests, 16 at a time
    .venv/bin/python -m bench.inprocess --requests 5000 --concurrency 1
    .venv/bin/python -m bench.inprocess --route v2-uint8
    .venv/bin/python -m bench.inprocess --upload stretched   # a digit not in MNIST form

Builds the service as `python -m app` would (default settings, the committed weights), runs its
lifespan, then sends the first MNIST test digit as bench.serve's routes do (by default /predict:
a multipart upload as httpx writes it) straight into the ASGI app on uvloop, as uvicorn would
after parsing the HTTP request, and checks every answer's status. It prints the process's CPU time
per request, split into the event loop's thread and the others (the forward thread, mostly).
With no wrk and no sockets sharing the cores, it moves far less with the machine's drift than
bench/serve.py, so it is the quicker way to compare two versions of the request path;
bench/serve.py remains the end-to-end figure.
"""

import argparse
import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path

import orjson
import uvloop

from app.main import create_app
from app.metrics import REQUEST_LOG
from app.settings import Settings
from bench.serve import (
    COMMITTED_WEIGHTS,
    MNIST_DIR,
    ROUTE_NAMES,
    TEST_IMAGES,
    UPLOADS,
    Route,
    make_routes,
    prepare_digit,
    read_idx,
)


def asgi_request(
    path: str, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[dict, list[dict]]:
    """The scope and the one body message uvicorn would hand the app for this request: a POST
    with ``body`` and its Content-Length, or a GET without one; ``headers`` are added."""
    sent_headers = [(b"host", b"127.0.0.1:8000"), *(headers or [])]
    if body:
        sent_headers.append((b"content-length", b"%d" % len(body)))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST" if body else "GET",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": sent_headers,
        "state": {},
    }
    return scope, [{"type": "http.request", "body": body, "more_body": False}]


def silence_request_log(devnull) -> None:
    """The request log goes to ``devnull``: writing it is part of the cost, a terminal's speed
    isn't."""
    for handler in REQUEST_LOG.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(devnull)


async def post(app, route: Route, digit: int) -> None:
    """One request through the ASGI interface, its answer checked."""
    headers = [(b"content-type", route.content_type.encode("latin-1"))]
    if route.header_length is not None:
        headers.append((b"inference-header-content-length", b"%d" % route.header_length))
    scope, messages = asgi_request(route.path, route.body, headers)
    sent = []

    async def receive() -> dict:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client stays connected until the answer is sent

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status, answer = sent[0]["status"], sent[1]["body"]
    if route.answer == "json":
        right = status == 200 and orjson.loads(answer)["predictions"][0]["digit"] == digit
    else:
        right = status == 200 and answer[-8:] == bytes([digit]) + bytes(7)
    if not right:
        raise SystemExit(f"unexpected answer: {status} {answer[:300]!r}")


async def measure(requests: int, concurrency: int, route: Route, digit: int) -> None:
    app = create_app(Settings(weights=COMMITTED_WEIGHTS))
    with open(os.devnull, "w") as devnull:
        silence_request_log(devnull)
        async with app.router.lifespan_context(app):
            for _ in range(200):  # warm-up: first passes of each batch size, caches
                await post(app, route, digit)
            slots = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with slots:
                    await post(app, route, digit)

            wall, cpu, loop_cpu = time.perf_counter(), time.process_time(), time.thread_time()
            await asyncio.gather(*(one() for _ in range(requests)))
            wall = time.perf_counter() - wall
            cpu, loop_cpu = time.process_time() - cpu, time.thread_time() - loop_cpu
    print(f"{requests:,} requests, {concurrency} at a time: {requests / wall:,.0f} req/s")
    print(f"CPU per request: {cpu / requests * 1e6:.1f} µs (event loop thread "
          f"{loop_cpu / requests * 1e6:.1f} µs, other threads "
          f"{(cpu - loop_cpu) / requests * 1e6:.1f} µs)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--route", choices=ROUTE_NAMES, default="predict")
    parser.add_argument("--upload", choices=UPLOADS, default="mnist", help="the digit's PNG")
    args = parser.parse_args()
    if not COMMITTED_WEIGHTS.exists():
        raise SystemExit(f"{COMMITTED_WEIGHTS} is missing: train first (make train)")
    with tempfile.TemporaryDirectory() as scratch:
        image, digit = prepare_digit(Path(scratch), args.upload)
        pixels = read_idx(MNIST_DIR / TEST_IMAGES.name, TEST_IMAGES)[0].numpy()
        route = make_routes(image.read_bytes(), pixels)[args.route]
    uvloop.run(measure(args.requests, args.concurrency, route, digit))


if __name__ == "__main__":
    main()
