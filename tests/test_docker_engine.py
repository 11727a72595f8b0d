"""The CPU image built and run on a real Docker engine, as a user would.

Needs a Docker daemon and a base image with Python 3.11 that needs no registry: `.ci/run` starts
Debian's dockerd (vfs storage, no bridge) and makes the base by debootstrap, then runs this file
with S4_DOCKER_BASE_TARBALL set (DOCKER_HOST too, if its socket is not the default). Without
them every test here skips and says why.

One image, one container for the whole module: build (legacy builder, as Debian's docker.io
does by default), run with host networking, /ready, a real digit, healthy, uid 10001, then
`docker stop` under load: exit 0 and no more than a few connections reset.
"""

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.stop_under_load import CLIENTS, PAUSE_S, SEVEN, LoadDuringStop, few_resets

BASE_TARBALL = os.environ.get("S4_DOCKER_BASE_TARBALL", "")
BASE_IMAGE = "s4digits-ci/bookworm-python:3.11"
IMAGE = "s4digits:docker-engine-test"
BUILD_TIMEOUT_S = 900
# Ready time is a benchmark figure (docs/performance.md), not a test target: this bounds a hang.
READY_TIMEOUT_S = 120

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not BASE_TARBALL,
        reason="no Docker engine test base: .ci/run starts dockerd and sets S4_DOCKER_BASE_TARBALL"
        + (
            f" ({os.environ['S4_DOCKER_UNAVAILABLE']})"
            if "S4_DOCKER_UNAVAILABLE" in os.environ
            else ""
        ),
    ),
]


def docker(*args: str, timeout: float = 120, check: bool = True, **env: str):
    done = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def image() -> str:
    assert shutil.which("docker"), "no docker client on PATH"
    docker("version")  # the daemon answers
    docker("import", BASE_TARBALL, BASE_IMAGE, timeout=300)
    started = time.monotonic()
    docker(
        "build",
        "--network", "host",
        "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}",
        "-t", IMAGE,
        str(REPO_ROOT),
        timeout=BUILD_TIMEOUT_S,
        DOCKER_BUILDKIT="0",  # the legacy builder: what `docker build` is without BuildKit
    )  # fmt: skip
    size = int(docker("image", "inspect", "-f", "{{.Size}}", IMAGE).stdout)
    print(f"built {IMAGE} in {time.monotonic() - started:.0f} s, {size / 1e6:.0f} MB")
    return IMAGE


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[tuple[str, int, float]]:
    """The image's own CMD and HEALTHCHECK (checked every 2 s instead of 30), host network."""
    port = free_port()
    name = f"s4digits-test-{port}"
    started = time.monotonic()
    docker(
        "run", "-d", "--name", name, "--network", "host",
        "-e", f"S4_PORT={port}", "-e", "WEB_CONCURRENCY=2",
        "--health-interval", "2s", "--health-start-period", "5s",
        image,
    )  # fmt: skip
    try:
        deadline = started + READY_TIMEOUT_S
        while True:
            state = json.loads(docker("inspect", "-f", "{{json .State}}", name).stdout)
            assert state["Running"], docker("logs", name).stderr
            assert time.monotonic() < deadline, docker("logs", name).stderr
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        ready_s = time.monotonic() - started
        print(f"ready {ready_s:.2f} s after `docker run`")
        yield name, port, ready_s
    finally:
        docker("rm", "-f", name, check=False)


def test_the_image_holds_no_torch(image):
    probe = "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('onnxruntime'))"
    out = docker("run", "--rm", "--network", "none", image, "python", "-c", probe).stdout.split()
    assert out[0] == "None" and out[1] != "None"


def test_the_worker_count_follows_the_cpu_quota(image):
    """--cpus 1: one worker, on cgroup v1 hosts as on v2."""
    probe = "from app.settings import get_settings; print(get_settings().workers)"
    out = docker("run", "--rm", "--network", "none", "--cpus", "1", image, "python", "-c", probe)
    assert out.stdout.strip() == "1"


def test_it_serves_a_real_digit_and_turns_healthy_as_uid_10001(container):
    name, port, _ = container
    answer = httpx.post(
        f"http://127.0.0.1:{port}/predict",
        files={"file": ("seven.png", SEVEN.read_bytes(), "image/png")},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["digit"] == 7
    deadline = time.monotonic() + 60
    while (health := docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()) != (
        "healthy"
    ):
        assert health == "starting" and time.monotonic() < deadline, health
        time.sleep(1)
    uid = "import os; print(os.stat('/proc/1').st_uid, os.getuid())"
    assert docker("exec", name, "python", "-c", uid).stdout.split() == ["10001", "10001"]
    logs = docker("logs", name)
    assert "telemetry" not in logs.stdout + logs.stderr  # onnxruntime can keep its id: quiet


def test_docker_stop_under_load_exits_0_resetting_at_most_a_few(container):
    """See tests/test_graceful_stop.py for what may still be reset, and why."""
    name, port, _ = container
    with LoadDuringStop("127.0.0.1", port, CLIENTS, PAUSE_S) as load:
        time.sleep(2)
        started = time.monotonic()
        docker("stop", name, timeout=30)
        stopped_s = time.monotonic() - started
        time.sleep(0.5)
    print(f"docker stop took {stopped_s:.1f} s; outcomes {dict(load.outcomes)}")
    assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
    assert load.outcomes["200"] > 0, load.outcomes
    assert few_resets(load), load.outcomes
