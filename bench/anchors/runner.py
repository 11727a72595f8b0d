"""One contender, one round: start it, check it answers the digit, time it with wrk, stop it.

Ready time runs from the server's start to its first 200 to the very request the bench posts,
with the right digit: a server that answers anything else is not timed. Idle memory is the
resident memory of the server's whole process tree once ready; CPU per request is the tree's
CPU time (user + system, from /proc) over a timed run, divided by the requests wrk completed.
"""

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.anchors.contenders import REPO_ROOT, Contender, Launch
from bench.fuzz import bytes_elements
from bench.load import multipart
from bench.serve import Route, infer_body, run_wrk
from bench.servers import Server, free_port, process_tree

READY_TIMEOUT_S = 240  # TorchServe and Triton start a JVM or a C++ server, then Python workers
POLL_S = 0.05
STOP_TIMEOUT_S = 20
NOT_YET = {404, 502, 503}  # what servers answer while their model is still loading


class ServerFailed(RuntimeError):
    """The server exited, never got ready, or answered wrongly; the message says which."""


@dataclass(frozen=True)
class Level:
    """One timed wrk run at one concurrency."""

    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float  # server CPU time per request
    bad: int  # wrong answers, other statuses and socket errors


@dataclass(frozen=True)
class Sample:
    """One contender in one round."""

    ready_s: float
    idle_mib: float
    levels: dict[int, Level]


def make_route(contender: Contender, png: bytes, digit: int) -> Route:
    """The request the contender gets, as bench/request.lua posts it and checks its answers."""
    if contender.request == "multipart":
        content_type, body = multipart([("digit.png", png)])
        header_length = None
    elif contender.request == "raw":
        content_type, body, header_length = "image/png", png, None
    elif contender.request == "v2-uint8":  # the file's bytes as a UINT8 tensor
        content_type = "application/octet-stream"
        body, header_length = infer_body("image_bytes", "UINT8", [len(png)], png)
    elif contender.request in ("v2", "v2-batched"):
        shape = [1] if contender.request == "v2" else [1, 1]  # [1, 1]: a batch of one [1]
        content_type = "application/octet-stream"
        body, header_length = infer_body("image_bytes", "BYTES", shape, bytes_elements([png]))
    else:
        raise ValueError(f"unknown request kind {contender.request!r}")
    if contender.answer == "binary":
        return Route(contender.name, contender.path, content_type, body, "binary", header_length)
    expect = contender.answer.format(digit=digit)
    return Route(contender.name, contender.path, content_type, body, "json", header_length, expect)


def answer_is_right(route: Route, body: bytes, digit: int) -> bool:
    """The check bench/request.lua makes of every answer under load, made here in Python."""
    if route.answer == "binary":  # v2 binary outputs: the digit is the body's last INT64
        return body[-8:] == digit.to_bytes(8, "little")
    return (route.expect or f'"digit":{digit}').encode() in body


def post(url: str, route: Route, timeout: float = 10.0) -> httpx.Response:
    headers = {"content-type": route.content_type}
    if route.header_length is not None:
        headers["inference-header-content-length"] = str(route.header_length)
    return httpx.post(url + route.path, content=route.body, headers=headers, timeout=timeout)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, then SIGKILL to what is left of it after the
    server exits (or STOP_TIMEOUT_S), and to any process of its tree that left the group."""
    tree = process_tree(process.pid)
    signal_group(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_TIMEOUT_S)
    signal_group(process.pid, signal.SIGKILL)
    for pid in tree[1:]:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()


def signal_group(group: int, signal_number: int) -> None:
    with suppress(ProcessLookupError):  # the whole group has exited
        os.killpg(group, signal_number)


def log_tail(path: Path, characters: int = 3000) -> str:
    return path.read_text(errors="replace")[-characters:]


@contextmanager
def running(
    contender: Contender, python: Path, workdir: Path, route: Route, digit: int, batch_wait_ms: int
) -> Iterator[tuple[Server, float]]:
    """The contender serving on a free loopback port; yields (server, ready time in seconds)."""
    launch = Launch(python, free_port(), (free_port(), free_port()), workdir, batch_wait_ms)
    if contender.setup is not None:
        contender.setup(launch)
    own = {name: value.format(workdir=workdir) for name, value in contender.env.items()}
    env = {**os.environ, **own, "PYTHONPATH": str(REPO_ROOT)}
    env |= {"S4_HOST": "127.0.0.1", "S4_PORT": str(launch.port)}
    if contender.packages:  # an anchor: its environment first, one torch thread per process
        env |= {
            "PATH": f"{python.parent}:{env.get('PATH', '')}",
            "VIRTUAL_ENV": str(python.parent.parent),
            "OMP_NUM_THREADS": "1",
            "ANCHOR_BATCH_WAIT_MS": str(batch_wait_ms),
        }
    log_path = workdir / f"{contender.slug}.log"
    url = f"http://127.0.0.1:{launch.port}"
    with log_path.open("wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(
            contender.command(launch),
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as one
        )
    try:
        ready_s = wait_ready(url, route, digit, process, started, log_path)
        yield Server(url, process, log_path), ready_s
        if process.poll() is not None:
            raise ServerFailed(
                f"died while timed (exit {process.returncode}):\n{log_tail(log_path)}"
            )
    finally:
        stop(process)


def wait_ready(
    url: str, route: Route, digit: int, process: subprocess.Popen, started: float, log: Path
) -> float:
    """Seconds from ``started`` to the first 200 to ``route``; ServerFailed if that answer is
    not the digit, the server exits, or READY_TIMEOUT_S passes."""
    while True:
        if process.poll() is not None:
            raise ServerFailed(f"exited ({process.returncode}) before ready:\n{log_tail(log)}")
        try:
            response = post(url, route, timeout=5)
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code == 200:
            ready_s = time.monotonic() - started
            if not answer_is_right(route, response.content, digit):
                raise ServerFailed(f"answered {response.content[:300]!r}, not the digit {digit}")
            return ready_s
        if response is not None and response.status_code not in NOT_YET:
            raise ServerFailed(
                f"answered {response.status_code} {response.content[:300]!r}:\n{log_tail(log)}"
            )
        if time.monotonic() - started > READY_TIMEOUT_S:
            status = "no answer" if response is None else f"{response.status_code}"
            raise ServerFailed(f"not ready in {READY_TIMEOUT_S} s ({status}):\n{log_tail(log)}")
        time.sleep(POLL_S)


def measure(
    contender: Contender,
    python: Path,
    workdir: Path,
    route: Route,
    digit: int,
    levels: list[int],
    seconds: int,
    warmup_s: int,
    batch_wait_ms: int,
) -> Sample:
    """Start the contender, check it, drive it with wrk at each level, stop it."""
    with running(contender, python, workdir, route, digit, batch_wait_ms) as (server, ready_s):
        time.sleep(0.5)  # let start-up settle before reading idle memory
        idle_mib = server.rss_mib()
        results = {}
        for level in levels:
            if warmup_s > 0:  # the first passes at a new batch size are start-up cost
                run_wrk(server.url, level, warmup_s, route, digit, workdir)
            cpu_before = server.cpu_seconds()
            r = run_wrk(server.url, level, seconds, route, digit, workdir)
            cpu_ms = (server.cpu_seconds() - cpu_before) * 1000.0 / max(r["requests"], 1)
            bad = r["bad"] + r["socket_errors"]
            results[level] = Level(r["rps"], r["p50_ms"], r["p99_ms"], cpu_ms, bad)
        return Sample(ready_s, idle_mib, results)
