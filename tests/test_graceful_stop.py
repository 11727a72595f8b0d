"""SIGTERM (docker stop) under load, one worker or several: no accepted connection is reset."""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.stop_under_load import LoadDuringStop


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_resets_no_connection(tmp_path, workers):
    """16 clients, each opening a new connection per request without pause, while the server
    gets SIGTERM: every request is answered or refused, none is reset."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("S4_")}
    env.update(S4_PORT=str(port), WEB_CONCURRENCY=str(workers), S4_CPU_THREADS="1")
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "app"], cwd=REPO_ROOT, env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "not ready in 60 s"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        with LoadDuringStop("127.0.0.1", port, clients=16) as load:
            time.sleep(2)
            server.send_signal(signal.SIGTERM)
            # One worker: uvicorn re-raises the SIGTERM once it has shut down (PID 1 in a
            # container ignores it and exits 0); the worker manager exits 0.
            assert server.wait(timeout=20) == (-signal.SIGTERM if workers == 1 else 0)
            time.sleep(0.5)
    finally:
        if server.poll() is None:
            server.kill()
    assert load.outcomes["200"] > 0, load.outcomes
    assert load.resets() == {}, (load.outcomes, (tmp_path / "server.log").read_text()[-2000:])
