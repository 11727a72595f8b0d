"""Load test: a real uvicorn process on loopback, saturated with good and bad uploads.

    .venv/bin/python -m bench.load --seconds 180 --clients 16

Concurrent clients (asyncio + httpx, in this process) post a weighted mix of requests to /predict
for a bounded time and count: single digits, raw bodies and batches of MNIST test digits (the
answer must be 200 with the right digits), and the errors clients make (not an image, truncated,
blank, JSON, too many images, too large, malformed multipart, a decompression bomb), each of which
must get its own 4xx. Anything else (a 5xx, another status, a wrong digit, a connection error or
timeout) is unexpected. After a warm-up, the server's resident memory is read at the start and
the end of the run. Prints one JSON object; exit status 1 on any unexpected answer or if the RSS
grew by more than --max-rss-growth-mib.
"""

import argparse
import asyncio
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.servers import Server, running_server
from training.mnist import TEST_IMAGES, TEST_LABELS, read_idx

REPO_ROOT = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(os.environ.get("S4_DATA_DIR", REPO_ROOT.parent / "shared" / "data" / "mnist"))
COMMITTED_WEIGHTS = REPO_ROOT / "weights" / "s4net.safetensors"


# Run as `make serve` and the image run it (docs/reliability.md); one CPU thread leaves the
# other core to this load generator.
SERVICE_ENV = {"S4_WEIGHTS": str(COMMITTED_WEIGHTS), "S4_CPU_THREADS": "1", "MALLOC_ARENA_MAX": "2"}


# The request mix ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadCase:
    name: str
    weight: int  # relative frequency in the mix
    content_type: str
    body: bytes
    expected_status: int
    expected_digits: list[int] | None = None  # checked on 200 answers


def png(image: Image.Image | np.ndarray, file_format: str = "PNG") -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = BytesIO()
    image.save(buffer, file_format)
    return buffer.getvalue()


def multipart(files: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    """(Content-Type, body) of a multipart upload with one `file` part per (filename, data)."""
    request = httpx.Request(
        "POST", "http://load/predict", files=[("file", (n, d, "image/png")) for n, d in files]
    )
    return request.headers["content-type"], request.read()


def load_cases(images: np.ndarray, labels: np.ndarray) -> list[LoadCase]:
    digit, label = png(images[0]), int(labels[0])
    batch_type, batch = multipart([(f"{i}.png", png(images[i])) for i in range(16)])
    one_type, one = multipart([("digit.png", digit)])
    many_type, many = multipart([("x.png", digit)] * 65)
    photo = Image.fromarray(255 - images[1]).resize((300, 300), Image.Resampling.BILINEAR)
    bomb = png(Image.new("L", (5000, 5000)))  # 25 MP in about 25 kB
    return [
        LoadCase("one-digit", 40, one_type, one, 200, [label]),
        LoadCase("raw-digit", 15, "image/png", digit, 200, [label]),
        LoadCase("batch-16", 10, batch_type, batch, 200, labels[:16].tolist()),
        LoadCase("black-on-white-jpeg", 5, "image/jpeg", png(photo, "JPEG"), 200),
        LoadCase("not-an-image", 5, "image/png", np.random.default_rng(0).bytes(3000), 415),
        LoadCase("truncated-png", 5, "image/png", digit[: len(digit) // 2], 422),
        LoadCase("blank", 5, "image/png", png(np.full((100, 100), 255, np.uint8)), 422),
        LoadCase("json", 3, "application/json", b'{"image": "..."}', 415),
        LoadCase("65-images", 3, many_type, many, 413),
        LoadCase("oversized", 3, "image/png", b"\0" * 1_100_000, 413),
        LoadCase("unclosed-multipart", 3, one_type, one[:-10], 400),
        LoadCase("25-megapixel-bomb", 3, "image/png", bomb, 413),
    ]


def mnist_test_digits() -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(MNIST_DIR / TEST_IMAGES.name, TEST_IMAGES).numpy()
    labels = read_idx(MNIST_DIR / TEST_LABELS.name, TEST_LABELS).numpy()
    return images, labels


# The load ----------------------------------------------------------------------------------


def unexpected(case: LoadCase, response: httpx.Response) -> str | None:
    """What is wrong with this answer to this case, or None."""
    if response.status_code != case.expected_status:
        return f"{case.name}: status {response.status_code}: {response.text[:200]}"
    body = response.json()
    if response.status_code != 200:
        return None if isinstance(body.get("detail"), str) else f"{case.name}: no JSON detail"
    digits = [prediction["digit"] for prediction in body["predictions"]]
    if case.expected_digits is not None and digits != case.expected_digits:
        return f"{case.name}: digits {digits}, expected {case.expected_digits}"
    return None


async def generate_load(
    url: str, cases: list[LoadCase], seconds: float, clients: int, max_requests: int, seed: int
) -> dict:
    """``clients`` concurrent connections posting the mix until ``seconds`` or ``max_requests``."""
    rng = random.Random(seed)
    weights = [case.weight for case in cases]
    latencies: list[float] = []
    answers: Counter[str] = Counter()
    problems: list[str] = []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline and len(latencies) < max_requests:
            (case,) = rng.choices(cases, weights)
            started = time.perf_counter()
            try:
                response = await client.post(
                    "/predict", content=case.body, headers={"content-type": case.content_type}
                )
            except httpx.HTTPError as exc:
                latencies.append(time.perf_counter() - started)
                answers[f"{case.name} {type(exc).__name__}"] += 1
                problems.append(f"{case.name}: {type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - started)
            answers[f"{case.name} {response.status_code}"] += 1
            if problem := unexpected(case, response):
                problems.append(problem)

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    milliseconds = np.array(latencies) * 1000.0
    return {
        "requests": len(latencies),
        "seconds": round(elapsed, 1),
        "requests_per_second": round(len(latencies) / elapsed, 1),
        "unexpected": len(problems),
        "first_unexpected": problems[:5],
        "p50_ms": round(float(np.percentile(milliseconds, 50)), 2),
        "p99_ms": round(float(np.percentile(milliseconds, 99)), 2),
        "max_ms": round(float(milliseconds.max()), 2),
        "answers": dict(sorted(answers.items())),
    }


def run_load(
    server: Server,
    cases: list[LoadCase],
    seconds: float,
    clients: int,
    max_requests: int = 10_000_000,
    warmup_s: float = 5.0,
    seed: int = 0,
) -> dict:
    """Warm up, then load the server; the report adds its RSS at the start and the end of the
    measured run, and every tenth of it in between (growth that levels off is the allocator
    settling; growth that goes on is a leak)."""
    asyncio.run(generate_load(server.url, cases, warmup_s, clients, max_requests, seed))
    rss_start = server.rss_mib()
    samples: list[float] = []
    done = threading.Event()

    def sample_rss() -> None:
        while not done.wait(seconds / 10):
            samples.append(round(server.rss_mib(), 1))

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    try:
        report = asyncio.run(generate_load(server.url, cases, seconds, clients, max_requests, seed))
    finally:
        done.set()
        sampler.join()
    report["rss_start_mib"] = round(rss_start, 1)
    report["rss_samples_mib"] = samples
    report["rss_end_mib"] = round(server.rss_mib(), 1)
    report["server_alive"] = server.process.poll() is None
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="length of the measured run")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="stop after this many")
    parser.add_argument("--warmup-s", type=float, default=10.0, help="load before measuring RSS")
    parser.add_argument("--max-rss-growth-mib", type=float, default=32.0)
    args = parser.parse_args(argv)
    cases = load_cases(*mnist_test_digits())
    with running_server(SERVICE_ENV) as server:
        report = run_load(
            server, cases, args.seconds, args.clients, args.max_requests, args.warmup_s
        )
    growth = report["rss_end_mib"] - report["rss_start_mib"]
    report["rss_growth_bound_mib"] = args.max_rss_growth_mib
    print(json.dumps({"clients": args.clients, **report}, indent=2))
    healthy = report["unexpected"] == 0 and report["server_alive"]
    return 0 if healthy and growth <= args.max_rss_growth_mib else 1


if __name__ == "__main__":
    sys.exit(main())
