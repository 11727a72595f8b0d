"""HTTP throughput and latency of the service, against a tutorial-style baseline, over loopback.

    .venv/bin/python -m bench.serve                     # ours (defaults) vs baseline, c=1,8,32
    .venv/bin/python -m bench.serve --configs 1x1,2x1,1x2 --connections 16   # workers x threads
    .venv/bin/python -m bench.serve --route read        # /read: a 4-digit 400x100 PNG, c=1,8,32

Each server is started as its own process on 127.0.0.1, and they take turns being driven by wrk
(Debian's `wrk`, bench/predict.lua) posting the first MNIST test digit to /predict; every response
is checked for status 200 and the right digit. wrk runs on the same cores as the server, as a
client on the same box would. Besides req/s and latency, each row has the server's CPU time
(all its processes, user + system) per request: on a shared machine whose speed drifts, the
figure to compare two versions of the service by, run alternately from a checkout of each.
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

from PIL import Image

from bench.servers import running_server
from training.mnist import TEST_IMAGES, TEST_LABELS, read_idx

REPO_ROOT = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(os.environ.get("S4_DATA_DIR", REPO_ROOT.parent / "shared" / "data" / "mnist"))
COMMITTED_WEIGHTS = REPO_ROOT / "weights" / "s4net.safetensors"


@dataclass(frozen=True)
class Contender:
    name: str
    command: tuple[str, ...]
    env: dict[str, str]  # added to the environment
    ready_path: str  # answers 200 once the model is loaded


def ours(workers: int | None = None, threads: int | None = None) -> Contender:
    # MALLOC_ARENA_MAX=2 as `make serve` and the image set it.
    env = {"S4_WEIGHTS": str(COMMITTED_WEIGHTS), "MALLOC_ARENA_MAX": "2"}
    if workers is not None:
        env["WEB_CONCURRENCY"] = str(workers)
    if threads is not None:
        env["S4_CPU_THREADS"] = str(threads)
    name = "s4digits" if workers is None else f"s4digits {workers}x{threads}"
    return Contender(name, (sys.executable, "-m", "app"), env, "/ready")


BASELINE = Contender(
    "baseline",
    (sys.executable, "-m", "uvicorn", "bench.baseline_server:app"),
    {"S4_WEIGHTS": str(COMMITTED_WEIGHTS)},
    "/docs",
)


@dataclass(frozen=True)
class Workload:
    path: str  # the route wrk posts to
    image: Path  # the PNG it posts
    expect: str  # what every answer must hold
    label: str  # what the picture shows: the digit, or the number


def run_wrk(url: str, connections: int, seconds: int, work: Workload) -> dict:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s",
               str(REPO_ROOT / "bench" / "predict.lua"), url + work.path]  # fmt: skip
    env = {**os.environ, "BENCH_IMAGE": str(work.image), "BENCH_EXPECT": work.expect}
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.split("RESULT", 1)[1])
    result["rps"] = result["requests"] / result["seconds"]
    return result


def prepare_digit(scratch: Path) -> Workload:
    """/predict with the first MNIST test image as a PNG; answers must name its label."""
    image = read_idx(MNIST_DIR / TEST_IMAGES.name, TEST_IMAGES)[0]
    label = int(read_idx(MNIST_DIR / TEST_LABELS.name, TEST_LABELS)[0])
    path = scratch / "digit.png"
    Image.fromarray(image.numpy()).save(path)
    return Workload("/predict", path, f'"digit":{label}', str(label))


def prepare_number(scratch: Path) -> Workload:
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
    number = "".join(map(str, labels))
    return Workload("/read", path, f'"text":"{number}"', number)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="per server and level")
    parser.add_argument("--connections", default="1,8,32", help="concurrency levels")
    parser.add_argument(
        "--configs", help="instead of ours vs baseline: WORKERSxTHREADS of ours, e.g. 1x1,2x1"
    )
    parser.add_argument(
        "--route",
        choices=["predict", "read"],
        default="predict",
        help="predict: one MNIST digit; read: a 4-digit 400x100 number (ours only)",
    )
    args = parser.parse_args()

    if args.configs:
        servers = [ours(*map(int, config.split("x"))) for config in args.configs.split(",")]
    elif args.route == "read":
        servers = [ours()]  # the baseline has no /read
    else:
        servers = [ours(), BASELINE]
    levels = [int(level) for level in args.connections.split(",")]

    with tempfile.TemporaryDirectory() as scratch:
        work = (prepare_number if args.route == "read" else prepare_digit)(Path(scratch))
        if not COMMITTED_WEIGHTS.exists():
            raise SystemExit(f"{COMMITTED_WEIGHTS} is missing: train first (make train)")
        print(f"{len(os.sched_getaffinity(0))} CPUs, wrk -t1, {args.seconds} s per level")
        print(f"{'server':<18} {'conns':>5} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'bad':>4} {'CPU ms/req':>10} {'RSS MiB':>7}")  # fmt: skip
        rates: dict[tuple[str, int], float] = {}
        # All servers run side by side (an idle one costs no CPU) and take turns at each level,
        # so a drift in this shared machine's speed hits every contender alike.
        with ExitStack() as stack:
            running = [
                stack.enter_context(running_server(server.env, server.command, server.ready_path))
                for server in servers
            ]
            for level in levels:
                for server, process in zip(servers, running, strict=True):
                    # Unmeasured warm-up at this concurrency: the first forward pass of each new
                    # batch size builds its kernels, which is start-up cost, not throughput.
                    run_wrk(process.url, level, 2, work)
                    cpu_before = process.cpu_seconds()
                    r = run_wrk(process.url, level, args.seconds, work)
                    cpu_ms = (process.cpu_seconds() - cpu_before) * 1000.0 / r["requests"]
                    rates[server.name, level] = r["rps"]
                    print(f"{server.name:<18} {level:>5} {r['rps']:>7,.0f} {r['p50_ms']:>7.2f} "
                          f"{r['p99_ms']:>7.2f} {r['bad'] + r['socket_errors']:>4} "
                          f"{cpu_ms:>10.3f} {process.rss_mib():>7.0f}")  # fmt: skip
        if len(servers) == 2:
            for level in levels:
                ratio = rates["s4digits", level] / rates["baseline", level]
                print(f"ours / baseline at c={level}: {ratio:.1f}x")


if __name__ == "__main__":
    main()
