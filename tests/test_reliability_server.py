"""Reliability against a real uvicorn process on loopback: slow clients, load, reloads, faults.

bench/load.py and bench/fuzz.py run the same at length (docs/reliability.md); these are their
CI-sized versions.
"""

import shutil
import socket
import threading
import time

import httpx
import pytest
import torch
from hypothesis import HealthCheck, given, settings

from app.artifacts.weights import card_path_for, save_weights
from app.model import S4Net
from bench.fuzz import contract_violation, predict_requests
from bench.load import load_cases, run_load
from bench.servers import running_server
from tests.test_reliability import AUTH, TOKEN, card_sha, tamper

REQUEST_TIMEOUT_S = 2


@pytest.fixture(scope="module")
def weights_pair(reading_weights, tmp_path_factory):
    """(the reading weights, copied; another valid random net), each with its card."""
    directory = tmp_path_factory.mktemp("weights")
    served = directory / "served" / "s4net.safetensors"
    served.parent.mkdir()
    shutil.copy(reading_weights, served)
    shutil.copy(card_path_for(reading_weights), card_path_for(served))
    torch.manual_seed(1)
    other = directory / "other" / "s4net.safetensors"
    save_weights(S4Net(), other, {"note": "the other weights"})
    return served, other


@pytest.fixture(scope="module")
def server(weights_pair):
    env = {
        "S4_WEIGHTS": str(weights_pair[0]),
        "S4_ADMIN_TOKEN": TOKEN,
        "S4_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
        "S4_CPU_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
    }
    with running_server(env) as server:
        yield server


def test_a_client_sending_its_body_byte_by_byte_is_cut_off(server):
    """Slowloris: one byte every 50 ms of a 10 kB body. 408 at the limit, then the socket closes."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
            b"Content-Length: 10000\r\n\r\n"
        )
        connection.setblocking(False)
        started, reply = time.monotonic(), b""
        while time.monotonic() - started < 3 * REQUEST_TIMEOUT_S:
            try:
                connection.send(b"x")
                chunk = connection.recv(65_536)
            except BlockingIOError:
                time.sleep(0.05)
                continue
            except OSError:  # the server closed the connection under our feet
                break
            if not chunk:
                break
            reply += chunk
        elapsed = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"S4_REQUEST_TIMEOUT_S" in reply
    assert REQUEST_TIMEOUT_S <= elapsed < 3 * REQUEST_TIMEOUT_S  # closed, not left open


def test_a_short_load_run_answers_every_request_as_expected(server, mnist_test_set):
    report = run_load(server, load_cases(*mnist_test_set), seconds=8, clients=8, warmup_s=2)
    assert report["unexpected"] == 0, report["first_unexpected"]
    assert report["requests"] > 100 and report["server_alive"]
    assert report["rss_end_mib"] - report["rss_start_mib"] < 64, report


def test_reloads_under_load_fail_no_request(server, weights_pair, mnist_test_set, encode_image):
    """Clients predict without pause while the weights are swapped back and forth 10 times and
    a tampered file is offered: every request succeeds, each with one of the two SHA-256s."""
    served, other = weights_pair
    digit = encode_image(mnist_test_set[0][0])
    stop, failures, seen = threading.Event(), [], set()

    def predict_until_stopped() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                response = client.post(
                    "/predict", content=digit, headers={"content-type": "image/png"}
                )
                if response.status_code != 200:
                    failures.append(response.text)
                else:
                    seen.add(response.json()["weights_sha256"])

    threads = [threading.Thread(target=predict_until_stopped) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as admin:
            for round_ in range(10):
                path = (other, served)[round_ % 2]
                response = admin.post("/admin/reload", json={"weights": str(path)})
                assert response.json()["sha256"] == card_sha(path)
            broken = other.with_name("broken.safetensors")
            shutil.copy(other, broken)
            shutil.copy(card_path_for(other), card_path_for(broken))
            tamper(broken)
            refused = admin.post("/admin/reload", json={"weights": str(broken)})
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert refused.status_code == 422 and str(broken) in refused.json()["detail"]
    assert not failures, failures[:3]
    assert seen == {card_sha(served), card_sha(other)}
    assert httpx.get(f"{server.url}/model").json()["weights"]["sha256"] == card_sha(served)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(request=predict_requests())
def test_fuzzed_requests_over_http(server, request):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = request.send(client)
    assert contract_violation(response) is None, contract_violation(response)


def test_tampered_weights_keep_a_real_process_alive_and_unready(weights_pair, tmp_path):
    weights = tmp_path / "s4net.safetensors"
    shutil.copy(weights_pair[0], weights)
    shutil.copy(card_path_for(weights_pair[0]), card_path_for(weights))
    tamper(weights)
    with running_server({"S4_WEIGHTS": str(weights)}, ready_status=503) as server:
        assert httpx.get(f"{server.url}/health").status_code == 200
        detail = httpx.get(f"{server.url}/ready").json()["detail"]
        predict = httpx.post(f"{server.url}/predict", content=b"x")
    assert str(weights) in detail and "truncated, corrupted or was replaced" in detail
    assert predict.status_code == 503
