"""HTTP throughput and latency of the service, against a tutorial-style baseline, over loopback.

    .venv/bin/python -m bench.serve                     # ours (defaults) vs baseline, c=1,8,32
    .venv/bin/python -m bench.serve --configs 1x1,2x1,1x2 --connections 16   # workers x threads
    .venv/bin/python -m bench.serve --routes predict,v2-uint8 --no-baseline
    .venv/bin/python -m bench.serve --routes read --no-baseline    # /read: a 4-digit 400x100 PNG
    .venv/bin/python -m bench.serve --upload stretched --versus ../main --routes predict

Each server is started as its own process on 127.0.0.1, and they take turns being driven by wrk
(Debian's `wrk`, bench/request.lua) posting the first MNIST test digit (`--upload stretched`: the
same digit cropped to its ink and stretched to 26x26, not in MNIST form, so every preparation step
runs); every response is checked for status 200 and the right digit. Ours is driven on each route
in turn: /predict (the PNG as multipart), and the Open Inference Protocol's
/v2/models/s4net/infer as tritonclient sends it, binary tensors with binary outputs, one image
per request: `v2-uint8` (the 28x28 pixels as
UINT8 `images`) and `v2-png` (the PNG as BYTES `image_bytes`); asked for, `read` posts a 400x100
PNG of the first four test digits to /read, and checks the number. The baseline has /predict only.
wrk runs on the same cores as the server, as a client on the same box would. Besides req/s and
latency, each row has the server's CPU time (all its processes, user + system) per request: on a
shared machine whose speed drifts, the figure to compare two versions of the service by:
`--versus PATH` serves another checkout (with its own .venv) beside this one, taking turns. The
`workers` column is each worker process's share of the server's CPU over the run (a worker left
without connections shows as 0); `loop ms` is the part of the CPU per request spent on the
processes' main threads, where an asyncio server runs its event loop (ours: HTTP, the routes and
the middleware; its forward thread decodes, prepares and runs the net).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.fuzz import bytes_elements
from bench.load import multipart
from bench.renderings import as_is, stretched
from bench.servers import running_server
from training.mnist import TEST_IMAGES, TEST_LABELS, read_idx

REPO_ROOT = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(os.environ.get("S4_DATA_DIR", REPO_ROOT.parent / "shared" / "data" / "mnist"))
COMMITTED_WEIGHTS = REPO_ROOT / "weights" / "s4net.safetensors"
COMMITTED_CHECK = REPO_ROOT / "weights" / "digit-check.safetensors"


@dataclass(frozen=True)
class Contender:
    name: str
    command: tuple[str, ...]
    env: dict[str, str]  # added to the environment
    ready_path: str  # answers 200 once the model is loaded
    routes: tuple[str, ...] = ("predict",)  # what it can be driven on (ROUTES' names)
    checkout: Path = REPO_ROOT  # where it runs


@dataclass(frozen=True)
class Route:
    label: str  # as the table prints it
    path: str
    content_type: str
    body: bytes
    answer: str  # "json" (/predict's answer) or "binary" (v2 binary outputs): request.lua
    header_length: int | None = None  # Inference-Header-Content-Length
    expect: str | None = None  # text every JSON answer must hold, instead of "digit":N


ROUTE_NAMES = ("predict", "v2-uint8", "v2-png")  # the default; "read" when asked for


def infer_body(name: str, datatype: str, shape: list[int], data: bytes) -> tuple[bytes, int]:
    """A v2 infer request as tritonclient sends one: the JSON header, then the binary tensor;
    all outputs asked for in binary. Returns (body, header length)."""
    tensor = {"name": name, "datatype": datatype, "shape": shape}
    request = {
        "inputs": [{**tensor, "parameters": {"binary_data_size": len(data)}}],
        "parameters": {"binary_data_output": True},
    }
    header = json.dumps(request).encode()
    return header + data, len(header)


def make_routes(png: bytes, pixels: np.ndarray) -> dict[str, Route]:
    content_type, body = multipart([("digit.png", png)])
    uint8, uint8_header = infer_body("images", "UINT8", [1, 28, 28], pixels.tobytes())
    encoded, encoded_header = infer_body("image_bytes", "BYTES", [1], bytes_elements([png]))
    infer, octets = "/v2/models/s4net/infer", "application/octet-stream"
    return {
        "predict": Route("/predict", "/predict", content_type, body, "json"),
        "v2-uint8": Route("v2 UINT8", infer, octets, uint8, "binary", uint8_header),
        "v2-png": Route("v2 BYTES png", infer, octets, encoded, "binary", encoded_header),
    }


def ours(workers: int | None = None, threads: int | None = None) -> Contender:
    # MALLOC_ARENA_MAX=2 as `make serve` and the image set it.
    env = {"S4_WEIGHTS": str(COMMITTED_WEIGHTS), "MALLOC_ARENA_MAX": "2"}
    if workers is not None:
        env["WEB_CONCURRENCY"] = str(workers)
    if threads is not None:
        env["S4_CPU_THREADS"] = str(threads)
    name = "s4digits" if workers is None else f"s4digits {workers}x{threads}"
    return Contender(name, (sys.executable, "-m", "app"), env, "/ready", (*ROUTE_NAMES, "read"))


def other_checkout(path: Path) -> Contender:
    """The service as another checkout has it (its own .venv and weights), defaults as ours."""
    path = path.resolve()
    env = {"S4_WEIGHTS": str(path / "weights" / "s4net.safetensors"), "MALLOC_ARENA_MAX": "2"}
    python = str(path / ".venv" / "bin" / "python")
    return Contender(path.name, (python, "-m", "app"), env, "/ready", (*ROUTE_NAMES, "read"), path)


BASELINE = Contender(
    "baseline",
    (sys.executable, "-m", "uvicorn", "bench.baseline_server:app"),
    {"S4_WEIGHTS": str(COMMITTED_WEIGHTS)},
    "/docs",
)


def run_wrk(
    url: str, connections: int, seconds: int, route: Route, digit: int, scratch: Path
) -> dict:
    body = scratch / "body.bin"
    body.write_bytes(route.body)
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s",
               str(REPO_ROOT / "bench" / "request.lua"), url + route.path]  # fmt: skip
    env = {**os.environ, "BENCH_BODY": str(body), "BENCH_DIGIT": str(digit),
           "BENCH_CONTENT_TYPE": route.content_type, "BENCH_ANSWER": route.answer}  # fmt: skip
    if route.header_length is not None:
        env["BENCH_HEADER_LENGTH"] = str(route.header_length)
    if route.expect is not None:
        env["BENCH_EXPECT"] = route.expect
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.split("RESULT", 1)[1])
    result["rps"] = result["requests"] / result["seconds"]
    return result


UPLOADS = {"mnist": as_is, "stretched": stretched}  # how the digit is drawn (bench.renderings)


def prepare_digit(scratch: Path, upload: str = "mnist") -> tuple[Path, int]:
    """The first MNIST test image as a PNG, drawn as UPLOADS[upload] draws it, and its label."""
    image = read_idx(MNIST_DIR / TEST_IMAGES.name, TEST_IMAGES)[0].numpy()
    label = int(read_idx(MNIST_DIR / TEST_LABELS.name, TEST_LABELS)[0])
    path = scratch / "digit.png"
    path.write_bytes(UPLOADS[upload](image, np.random.default_rng(0)))
    return path, label


def read_route(scratch: Path) -> Route:
    """/read with a 400x100 PNG of the first four MNIST test digits (7210), each drawn 84 px
    tall, side by side on black; answers must read the number."""
    images = read_idx(MNIST_DIR / TEST_IMAGES.name, TEST_IMAGES)[:4].numpy()
    labels = read_idx(MNIST_DIR / TEST_LABELS.name, TEST_LABELS)[:4].tolist()
    picture = Image.new("L", (400, 100))
    for index, digit in enumerate(images):
        picture.paste(Image.fromarray(digit).resize((84, 84), Image.Resampling.BILINEAR),
                      (20 + 92 * index, 8))  # fmt: skip
    path = scratch / "number.png"
    picture.save(path)
    content_type, body = multipart([("number.png", path.read_bytes())])
    number = "".join(map(str, labels))
    return Route("/read", "/read", content_type, body, "json", expect=f'"text":"{number}"')


def worker_shares(before: list[float], after: list[float]) -> str:
    """Each worker's share of the workers' CPU time between two readings, e.g. "52/48" (%)."""
    used = [b - a for a, b in zip(before, after, strict=False)]
    return "/".join(f"{100 * u / sum(used):.0f}" for u in used) if len(used) > 1 else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="per server and level")
    parser.add_argument("--connections", default="1,8,32", help="concurrency levels")
    parser.add_argument(
        "--configs", help="instead of ours vs baseline: WORKERSxTHREADS of ours, e.g. 1x1,2x1"
    )
    parser.add_argument(
        "--routes",
        default=",".join(ROUTE_NAMES),
        help="ours' routes, from predict, v2-uint8, v2-png, read",
    )
    parser.add_argument("--no-baseline", action="store_true", help="ours only")
    parser.add_argument("--upload", choices=UPLOADS, default="mnist", help="the digit's PNG")
    parser.add_argument(
        "--versus", type=Path, action="append", default=[], help="also serve this checkout"
    )
    args = parser.parse_args()

    if args.configs:
        servers = [ours(*map(int, config.split("x"))) for config in args.configs.split(",")]
    else:
        servers = [ours()] if args.no_baseline else [ours(), BASELINE]
    servers += [other_checkout(path) for path in args.versus]
    levels = [int(level) for level in args.connections.split(",")]
    chosen = args.routes.split(",")

    with tempfile.TemporaryDirectory() as scratch:
        image, digit = prepare_digit(Path(scratch), args.upload)
        pixels = read_idx(MNIST_DIR / TEST_IMAGES.name, TEST_IMAGES)[0].numpy()
        routes = make_routes(image.read_bytes(), pixels) | {"read": read_route(Path(scratch))}
        if not COMMITTED_WEIGHTS.exists():
            raise SystemExit(f"{COMMITTED_WEIGHTS} is missing: train first (make train)")
        print(f"{len(os.sched_getaffinity(0))} CPUs, wrk -t1, {args.seconds} s per level")
        print(f"{'server':<18} {'route':<13} {'conns':>5} {'req/s':>7} {'p50 ms':>7} "
              f"{'p99 ms':>7} {'bad':>4} {'CPU ms/req':>10} {'loop ms':>7} {'RSS MiB':>7} "
              "workers")  # fmt: skip
        rates: dict[tuple[str, str, int], float] = {}
        # All servers run side by side (an idle one costs no CPU) and take turns at each level
        # and route, so a drift in this shared machine's speed hits every contender alike.
        with ExitStack() as stack:
            running = [
                stack.enter_context(
                    running_server(
                        server.env, server.command, server.ready_path, cwd=server.checkout
                    )
                )
                for server in servers
            ]
            for level in levels:
                for server, process in zip(servers, running, strict=True):
                    for name in [name for name in chosen if name in server.routes]:
                        route = routes[name]
                        # Unmeasured warm-up at this concurrency: the first forward pass of each
                        # new batch size builds its kernels, which is start-up cost.
                        run_wrk(process.url, level, 2, route, digit, Path(scratch))
                        cpu_before = process.cpu_seconds()
                        loop_before = process.main_thread_cpu_seconds()
                        workers_before = process.worker_cpu_seconds()
                        r = run_wrk(process.url, level, args.seconds, route, digit, Path(scratch))
                        cpu_ms = (process.cpu_seconds() - cpu_before) * 1000.0 / r["requests"]
                        loop_ms = (
                            (process.main_thread_cpu_seconds() - loop_before) * 1000.0
                            / r["requests"]
                        )  # fmt: skip
                        shares = worker_shares(workers_before, process.worker_cpu_seconds())
                        rates[server.name, name, level] = r["rps"]
                        print(f"{server.name:<18} {route.label:<13} {level:>5} {r['rps']:>7,.0f} "
                              f"{r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
                              f"{r['bad'] + r['socket_errors']:>4} {cpu_ms:>10.3f} "
                              f"{loop_ms:>7.3f} {process.rss_mib():>7.0f} {shares}")  # fmt: skip
        for level in levels:
            ours_predict = rates.get(("s4digits", "predict", level))
            if ours_predict and ("baseline", "predict", level) in rates:
                ratio = ours_predict / rates["baseline", "predict", level]
                print(f"ours / baseline (/predict) at c={level}: {ratio:.1f}x")
            if ours_predict and ("s4digits", "v2-uint8", level) in rates:
                ratio = rates["s4digits", "v2-uint8", level] / ours_predict
                print(f"v2 UINT8 / /predict at c={level}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
