"""HTTP throughput and latency of the service, against a tutorial-style baseline, over loopback.

    .venv/bin/python bench/serve.py                     # ours (defaults) vs baseline, c=1,8,32
    .venv/bin/python bench/serve.py --configs 1x1,2x1,1x2 --connections 16   # workers x threads

Each server is started as its own process on 127.0.0.1 and driven by wrk (Debian's `wrk`,
bench/predict.lua) posting the first MNIST test digit to /predict; every response is checked for
status 200 and the right digit. wrk runs on the same cores as the server, as a client on the same
box would.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

from training.mnist import TEST_IMAGES, TEST_LABELS, read_idx

REPO_ROOT = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(os.environ.get("S4_DATA_DIR", REPO_ROOT.parent / "shared" / "data" / "mnist"))
COMMITTED_WEIGHTS = REPO_ROOT / "weights" / "s4net.safetensors"


@dataclass(frozen=True)
class Server:
    name: str
    command: list[str]
    env: dict[str, str]  # added to the environment
    ready_path: str  # answers 200 once the model is loaded


def ours(workers: int | None = None, threads: int | None = None) -> Server:
    env = {"S4_HOST": "127.0.0.1"}
    if workers is not None:
        env["WEB_CONCURRENCY"] = str(workers)
    if threads is not None:
        env["S4_CPU_THREADS"] = str(threads)
    name = "s4digits" if workers is None else f"s4digits {workers}x{threads}"
    return Server(name, [sys.executable, "-m", "app"], env, "/ready")


BASELINE = Server(
    "baseline",
    [sys.executable, "-m", "uvicorn", "bench.baseline_server:app", "--host", "127.0.0.1"],
    {},
    "/docs",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (uvicorn workers), in MiB."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    total_kib = 0
    for each in [str(pid), *children.split()]:
        status = Path(f"/proc/{each}/status")
        for line in status.read_text().splitlines() if status.exists() else []:
            if line.startswith("VmRSS:"):
                total_kib += int(line.split()[1])
    return total_kib / 1024


class Running:
    """A server process on a free loopback port, ready when the context is entered."""

    def __init__(self, server: Server, weights: Path):
        self.server, self.weights, self.port = server, weights, free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Running":
        # S4_PORT for `python -m app`, UVICORN_PORT for the uvicorn command line.
        port = str(self.port)
        env = {**os.environ, **self.server.env, "S4_PORT": port, "UVICORN_PORT": port}
        env["S4_WEIGHTS"] = str(self.weights)
        self.process = subprocess.Popen(
            self.server.command,
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while not self._ready():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"{self.server.name} never became ready")
            time.sleep(0.2)
        return self

    def _ready(self) -> bool:
        try:
            return httpx.get(self.url + self.server.ready_path).status_code == 200
        except httpx.TransportError:
            return False

    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


def run_wrk(url: str, connections: int, seconds: int, image: Path, digit: int) -> dict:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s",
               str(REPO_ROOT / "bench" / "predict.lua"), url + "/predict"]  # fmt: skip
    env = {**os.environ, "BENCH_IMAGE": str(image), "BENCH_DIGIT": str(digit)}
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.split("RESULT", 1)[1])
    result["rps"] = result["requests"] / result["seconds"]
    return result


def prepare_digit(scratch: Path) -> tuple[Path, int]:
    """The first MNIST test image as a PNG, and its label."""
    image = read_idx(MNIST_DIR / TEST_IMAGES.name, TEST_IMAGES)[0]
    label = int(read_idx(MNIST_DIR / TEST_LABELS.name, TEST_LABELS)[0])
    path = scratch / "digit.png"
    Image.fromarray(image.numpy()).save(path)
    return path, label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="per server and level")
    parser.add_argument("--connections", default="1,8,32", help="concurrency levels")
    parser.add_argument(
        "--configs", help="instead of ours vs baseline: WORKERSxTHREADS of ours, e.g. 1x1,2x1"
    )
    args = parser.parse_args()

    if args.configs:
        servers = [ours(*map(int, config.split("x"))) for config in args.configs.split(",")]
    else:
        servers = [ours(), BASELINE]
    levels = [int(level) for level in args.connections.split(",")]

    with tempfile.TemporaryDirectory() as scratch:
        image, digit = prepare_digit(Path(scratch))
        weights = COMMITTED_WEIGHTS
        if not weights.exists():
            raise SystemExit(f"{weights} is missing: train first (make train)")
        print(f"{len(os.sched_getaffinity(0))} CPUs, wrk -t1, {args.seconds} s per level")
        print(f"{'server':<18} {'conns':>5} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'bad':>4} {'RSS MiB':>7}")  # fmt: skip
        rates: dict[tuple[str, int], float] = {}
        for server in servers:
            with Running(server, weights) as running:
                for level in levels:
                    # Unmeasured warm-up at this concurrency: the first forward pass of each new
                    # batch size builds its kernels, which is start-up cost, not throughput.
                    run_wrk(running.url, level, 2, image, digit)
                    r = run_wrk(running.url, level, args.seconds, image, digit)
                    rates[server.name, level] = r["rps"]
                    print(f"{server.name:<18} {level:>5} {r['rps']:>7,.0f} {r['p50_ms']:>7.2f} "
                          f"{r['p99_ms']:>7.2f} {r['bad'] + r['socket_errors']:>4} "
                          f"{tree_rss_mib(running.process.pid):>7.0f}")  # fmt: skip
        if not args.configs:
            for level in levels:
                ratio = rates["s4digits", level] / rates["baseline", level]
                print(f"ours / baseline at c={level}: {ratio:.1f}x")


if __name__ == "__main__":
    main()
