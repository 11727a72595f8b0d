"""A server process on a free loopback port, for the benchmarks and the tests that need real HTTP.

with running_server({"S4_WEIGHTS": "weights/s4net.safetensors"}) as server:
    httpx.get(server.url + "/ready")
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
# uvicorn's own access log is off: the app logs each request once, as JSON (app.metrics).
UVICORN_APP = (sys.executable, "-m", "uvicorn", "app.main:app", "--no-access-log")
STARTUP_TIMEOUT_S = 120


@dataclass(frozen=True)
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path
    grpc_address: str = ""  # host:port of the gRPC service, when S4_GRPC is on (ours only)

    def pids(self) -> list[str]:
        """The server's process and every process below it (workers, and theirs)."""
        return [str(pid) for pid in process_tree(self.process.pid)]

    def rss_mib(self) -> float:
        """Resident memory of the server and its worker processes, from /proc (Linux)."""
        total_kib = 0
        for pid in self.pids():
            status = Path(f"/proc/{pid}/status")
            for line in status.read_text().splitlines() if status.exists() else []:
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        return total_kib / 1024.0

    def worker_cpu_seconds(self) -> list[float]:
        """CPU time (user + system) of each worker process (the server's children but
        multiprocessing's resource tracker), from /proc; empty for a single-process server."""
        workers = []
        for pid in self.pids()[1:]:
            cmdline = Path(f"/proc/{pid}/cmdline")
            if cmdline.exists() and b"resource_tracker" not in cmdline.read_bytes():
                workers.append(process_cpu_seconds(pid))
        return workers

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server and its worker processes have used, from /proc.

        Per request, it is the figure a shared machine's drifting speed disturbs least.
        """
        return sum(process_cpu_seconds(pid) for pid in self.pids())

    def main_thread_cpu_seconds(self) -> float:
        """CPU time of the main threads of the server and its worker processes alone: in an
        asyncio server, its event loops (the rest is their other threads: ours, the forward
        pass)."""
        return sum(process_cpu_seconds(pid, thread=pid) for pid in self.pids())


def process_cpu_seconds(pid: str, thread: str | None = None) -> float:
    """One process's CPU time (user + system) from /proc, or one of its threads'; 0 once it has
    gone."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    if not stat.exists():
        return 0.0
    fields = stat.read_text().rsplit(")", 1)[1].split()  # utime and stime: the 12th and 13th
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it, from /proc (Linux); [root] if it has none."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # the fields after the command name: state, then the parent's pid
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # gone since the listing
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_server(
    env: dict[str, str],
    command: Sequence[str] = UVICORN_APP,
    ready_path: str = "/ready",
    ready_status: int = 200,
    cwd: Path = REPO_ROOT,
) -> Iterator[Server]:
    """``command`` (by default `uvicorn app.main:app`) on 127.0.0.1, run in ``cwd``, ``env``
    added to its environment, the port given as S4_PORT (``python -m app``) and UVICORN_PORT
    (uvicorn's CLI), and another free one as S4_GRPC_PORT (never the default 8001 another server
    may hold).

    Yields once ``ready_path`` answers ``ready_status`` (503 for a server meant to refuse its
    weights). Any other answer fails at once: the app loads its model before it takes requests,
    so waiting would not change it. Stopped with SIGTERM, as an orchestrator would (SIGKILL after
    15 s). RuntimeError, with the server's log, if it exits early or dies while in use; the log is
    kept then, and removed after a clean run.
    """
    port, grpc_port = str(free_port()), str(free_port())
    ports = {"S4_HOST": "127.0.0.1", "S4_PORT": port, "UVICORN_PORT": port}
    ports["S4_GRPC_PORT"] = grpc_port
    with tempfile.NamedTemporaryFile(prefix="s4-server-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env={**os.environ, **ports, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path, f"127.0.0.1:{grpc_port}")
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{log_path.read_text()}")
            try:
                status = httpx.get(server.url + ready_path, timeout=2).status_code
            except httpx.TransportError:
                status = None
            if status == ready_status:
                break
            if status is not None:
                raise RuntimeError(f"{ready_path} answered {status}:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready in {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield server
        if process.poll() is not None:  # a crash the caller's own checks may have missed
            raise RuntimeError(f"the server died (exit {process.returncode}); log: {log_path}")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log_path.unlink()
