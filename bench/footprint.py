"""Start-up time and memory of the service: ready time, then RSS and PSS per process under load.

    .venv/bin/python -m bench.footprint                  # 2 workers (the 2-CPU default), c=32
    .venv/bin/python -m bench.footprint --workers 1 --seconds 10
    .venv/bin/python -m bench.footprint --checkout ../main   # another checkout, with its .venv

Starts `python -m app` (MALLOC_ARENA_MAX=2, as `make serve` and the image) on loopback and times
the start command to the first 200 from /ready (polled every 10 ms). Reads the memory of the
server's processes idle, then after --seconds of wrk at --connections (bench/predict.lua, the
first MNIST test digit): RSS (what each process has resident) and PSS (resident, with the pages
processes share divided among them: the tree's PSS is what the server really occupies), from
/proc/PID/smaps_rollup. Prints one table per moment; exit 1 if wrk saw a bad answer.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.serve import (
    COMMITTED_WEIGHTS,
    MNIST_DIR,
    TEST_IMAGES,
    make_routes,
    prepare_digit,
    read_idx,
    run_wrk,
)
from bench.servers import REPO_ROOT, free_port


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [pid, *(p for child in children.split() for p in process_tree(int(child)))]


def memory_mib(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of one process in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value, *_ = line.split()
        fields[key.rstrip(":")] = int(value)
    return fields["Rss"] / 1024, fields["Pss"] / 1024


def print_memory(moment: str, root: int) -> None:
    rows = [(pid, *memory_mib(pid)) for pid in process_tree(root)]
    print(f"\n{moment}: {'process':<14} {'RSS MiB':>8} {'PSS MiB':>8}")
    for pid, rss, pss in rows:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        role = (
            "manager" if pid == root and len(rows) > 1
            else "mp helper" if b"resource_tracker" in cmdline
            else "worker"
        )  # fmt: skip
        print(f"{'':<{len(moment) + 2}}{role + ' ' + str(pid):<14} {rss:>8.1f} {pss:>8.1f}")
    rss, pss = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"{'':<{len(moment) + 2}}{'tree':<14} {rss:>8.1f} {pss:>8.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=60, help="of load before the 2nd reading")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--checkout", type=Path, default=REPO_ROOT, help="serve this checkout, with its .venv"
    )
    args = parser.parse_args()

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("S4_")}
    env.update(
        S4_WEIGHTS=str(args.checkout / COMMITTED_WEIGHTS.relative_to(REPO_ROOT)),
        S4_HOST="127.0.0.1",
        S4_PORT=str(port),
        WEB_CONCURRENCY=str(args.workers),
        MALLOC_ARENA_MAX="2",
    )
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as scratch:
        image, digit = prepare_digit(Path(scratch))
        log = open(Path(scratch) / "server.log", "w")  # noqa: SIM115 - closed with the scratch dir
        started = time.perf_counter()
        server = subprocess.Popen(
            [args.checkout / ".venv" / "bin" / "python", "-m", "app"],
            cwd=args.checkout,
            env=env,
            stdout=log,
            stderr=log,
        )
        try:
            while True:
                if server.poll() is not None:
                    raise SystemExit((Path(scratch) / "server.log").read_text())
                try:
                    if httpx.get(url + "/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.01)
            ready_s = time.perf_counter() - started
            print(f"{args.workers} worker(s): /ready 200 {ready_s:.2f} s after the start command")
            time.sleep(1)
            print_memory("idle", server.pid)
            pixels = read_idx(MNIST_DIR / TEST_IMAGES.name, TEST_IMAGES)[0].numpy()
            predict = make_routes(image.read_bytes(), pixels)["predict"]
            result = run_wrk(url, args.connections, args.seconds, predict, digit, Path(scratch))
            print(f"\nwrk c={args.connections} {args.seconds} s: {result['rps']:,.0f} req/s, "
                  f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms")  # fmt: skip
            print_memory(f"after {args.seconds} s at c={args.connections}", server.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    return 1 if result["bad"] + result["socket_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
