"""`python -m app` with two workers: one listening socket per worker (SO_REUSEPORT), so the kernel
spreads connections over them, and a worker that dies is replaced on its own socket."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT

SEVEN = REPO_ROOT / "docs" / "seven.png"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening_inodes(port: int) -> set[str]:
    """Inodes of the TCP sockets listening on ``port`` (state 0A in /proc/net/tcp)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
            inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def workers(server: subprocess.Popen) -> list[int]:
    children = subprocess.run(
        ["pgrep", "-P", str(server.pid)], capture_output=True, text=True
    ).stdout.split()
    return [
        int(pid)
        for pid in children
        if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def wait_until(condition, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def predicts_seven(url: str) -> bool:
    try:
        response = httpx.post(
            url + "/predict", content=SEVEN.read_bytes(), headers={"content-type": "image/png"}
        )
    except httpx.TransportError:
        return False
    return response.status_code == 200 and response.json()["predictions"][0]["digit"] == 7


@pytest.mark.slow
def test_each_worker_listens_on_its_own_socket_and_is_replaced_on_it(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("S4_")}
    env.update(S4_HOST="127.0.0.1", S4_PORT=str(port), WEB_CONCURRENCY="2", S4_CPU_THREADS="1")
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=REPO_ROOT, env=env, stdout=log, stderr=log
        )
    try:
        wait_until(lambda: predicts_seven(url), f"not serving:\n{log_path.read_text()}")
        listening = listening_inodes(port)
        assert len(listening) == 2, "one listening socket per worker"
        held = {pid: socket_inodes(pid) & listening for pid in workers(server)}
        assert len(held) == 2 and all(len(inodes) == 1 for inodes in held.values()), held
        assert set.union(*held.values()) == listening, "each worker on a socket of its own"

        victim, victims_socket = next(iter(held.items()))
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: victim not in workers(server) and len(workers(server)) == 2,
            "the dead worker was not replaced",
        )
        successor = next(pid for pid in workers(server) if pid not in held)
        wait_until(lambda: socket_inodes(successor) & listening, "successor has no socket")
        assert socket_inodes(successor) & listening == victims_socket, "it took over the socket"
        assert listening_inodes(port) == listening
        for _ in range(20):  # connections hashed to either socket are answered
            assert predicts_seven(url)

        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
        assert not listening_inodes(port), "nothing listens once stopped"
    finally:
        if server.poll() is None:
            server.kill()
