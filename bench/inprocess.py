"""CPU time per /predict request inside one worker, without HTTP or a load generator.

    .venv/bin/python -m bench.inprocess                      # 20,000 requests, 16 at a time
    .venv/bin/python -m bench.inprocess --requests 5000 --concurrency 1

Builds the service as `python -m app` would (default settings, the committed weights), runs its
lifespan, then sends multipart uploads of the first MNIST test digit (as httpx writes them)
straight into the ASGI app on uvloop, as uvicorn would after parsing the HTTP request, and
checks every answer. It prints the process's CPU time per request, split into the event loop's
thread and the others (the forward thread, mostly). With no wrk and no sockets sharing the
cores, it moves far less with the machine's drift than bench/serve.py, so it is the quicker way
to compare two versions of the request path; bench/serve.py remains the end-to-end figure.
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
from bench.load import multipart
from bench.serve import COMMITTED_WEIGHTS, prepare_digit


async def post(app, content_type: str, body: bytes, digit: int) -> None:
    """One /predict request through the ASGI interface, its answer checked."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", content_type.encode("latin-1")),
            (b"content-length", str(len(body)).encode()),
        ],
        "state": {},
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent = []

    async def receive() -> dict:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client stays connected until the answer is sent

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status, answer = sent[0]["status"], orjson.loads(sent[1]["body"])
    if status != 200 or answer["predictions"][0]["digit"] != digit:
        raise SystemExit(f"unexpected answer: {status} {answer}")


async def measure(
    requests: int, concurrency: int, content_type: str, body: bytes, digit: int
) -> None:
    app = create_app(Settings(weights=COMMITTED_WEIGHTS))
    # The request log goes to /dev/null: writing it is part of the cost, a terminal's speed isn't.
    with open(os.devnull, "w") as devnull:
        for handler in REQUEST_LOG.handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(devnull)
        async with app.router.lifespan_context(app):
            for _ in range(200):  # warm-up: first passes of each batch size, caches
                await post(app, content_type, body, digit)
            slots = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with slots:
                    await post(app, content_type, body, digit)

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
    args = parser.parse_args()
    if not COMMITTED_WEIGHTS.exists():
        raise SystemExit(f"{COMMITTED_WEIGHTS} is missing: train first (make train)")
    with tempfile.TemporaryDirectory() as scratch:
        work = prepare_digit(Path(scratch))
        content_type, body = multipart([("digit.png", work.image.read_bytes())])
    uvloop.run(measure(args.requests, args.concurrency, content_type, body, int(work.label)))


if __name__ == "__main__":
    main()
