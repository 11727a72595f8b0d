"""POST /feedback against real `python -m app` processes on loopback, on SQLite and PostgreSQL:
two workers writing at once lose and duplicate nothing; a worker killed mid-write leaves a sound
database without a partial record; the supervisor brings the schema up to date before its
workers start, and they load SQLAlchemy only for their first correction."""

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from app.feedback.store import HEAD_REVISION, TABLE, FeedbackStore, schema_revision
from bench.servers import running_server
from tests.feedback.conftest import BACKENDS, fresh_database_url
from training.numbers import compose

PYTHON_APP = (sys.executable, "-m", "app")
CORRECTIONS = 2000
CONNECTIONS = 16

pytestmark = pytest.mark.slow


def server_env(weights, url: str, workers: int) -> dict[str, str]:
    return {
        "S4_WEIGHTS": str(weights),
        "S4_DATABASE_URL": url,
        "WEB_CONCURRENCY": str(workers),
        "S4_CPU_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
    }


async def post_all(url: str, requests: list[tuple[bytes, dict]]) -> list[int]:
    limits = httpx.Limits(max_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        gate = asyncio.Semaphore(CONNECTIONS)

        async def post(picture: bytes, data: dict) -> int:
            async with gate:
                files = {"file": ("digit.png", picture, "image/png")}
                return (await client.post("/feedback", files=files, data=data)).status_code

        return await asyncio.gather(*(post(picture, data) for picture, data in requests))


def stored_keys(url: str) -> list[tuple]:
    store = FeedbackStore(url)
    with store.engine.connect() as connection:
        keys = connection.execute(sa.select(TABLE.c.sha256, TABLE.c.position, TABLE.c.label)).all()
    store.close()
    return [tuple(key) for key in keys]


def workers_with_sqlalchemy(server) -> list[bool]:
    """For each worker (not multiprocessing's helper): whether SQLAlchemy's compiled modules are
    mapped in it, i.e. it has imported SQLAlchemy."""
    loaded = []
    for pid in server.pids()[1:]:
        if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            loaded.append("/sqlalchemy/" in Path(f"/proc/{pid}/maps").read_text())
    return loaded


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_supervisor_migrates_and_workers_load_sqlalchemy_at_their_first_correction(
    backend, tmp_path, reading_weights, mnist_test_set, encode_image
):
    images, labels = mnist_test_set
    with contextlib.contextmanager(fresh_database_url)(backend, tmp_path) as url:
        env = server_env(reading_weights, url, workers=2)
        with running_server(env, command=PYTHON_APP) as server:
            store = FeedbackStore(url)
            with store.engine.connect() as connection:
                assert schema_revision(connection) == HEAD_REVISION  # before any correction
            store.close()
            assert workers_with_sqlalchemy(server) == [False, False]
            statuses = asyncio.run(
                post_all(server.url, [(encode_image(images[0]), {"digit": str(labels[0])})])
            )
            assert statuses == [201]
            assert sorted(workers_with_sqlalchemy(server)) == [False, True]
        assert len(stored_keys(url)) == 1


def test_a_restart_on_an_up_to_date_sqlite_file_leaves_sqlalchemy_out_of_every_process(
    tmp_path, reading_weights
):
    url = f"sqlite:///{tmp_path}/feedback.db"
    env = server_env(reading_weights, url, workers=2)
    with running_server(env, command=PYTHON_APP) as first:
        assert "/sqlalchemy/" in Path(f"/proc/{first.pids()[0]}/maps").read_text()  # migrated
    with running_server(env, command=PYTHON_APP) as again:
        supervisor = Path(f"/proc/{again.pids()[0]}/maps").read_text()
        assert "/sqlalchemy/" not in supervisor and workers_with_sqlalchemy(again) == [False] * 2
        assert httpx.get(again.url + "/feedback/stats").status_code == 200  # opened at first use


def test_an_unusable_database_stops_the_start(reading_weights):
    env = {**os.environ, **server_env(reading_weights, "mysql://s4@127.0.0.1/x", workers=2)}
    env.update(S4_HOST="127.0.0.1", S4_PORT="0")
    done = subprocess.run(PYTHON_APP, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr  # uvicorn's STARTUP_FAILURE
    assert "only sqlite:///PATH and postgresql+psycopg" in done.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_workers_store_2000_concurrent_corrections_exactly_once(
    backend, tmp_path, reading_weights, mnist_test_set, encode_image
):
    images, labels = mnist_test_set
    requests = [
        (encode_image(images[i]), {"digit": str(labels[i]), "source": "concurrency"})
        for i in range(CORRECTIONS)
    ]
    repeats = requests[::10]  # sent again, interleaved: must not become new records
    with contextlib.contextmanager(fresh_database_url)(backend, tmp_path) as url:
        env = server_env(reading_weights, url, workers=2)
        with running_server(env, command=PYTHON_APP) as server:
            assert len(server.pids()) >= 3  # the supervisor and two workers (and a helper)
            statuses = asyncio.run(post_all(server.url, requests + repeats))
        assert statuses == [201] * len(statuses)
        keys = stored_keys(url)
    assert len(keys) == CORRECTIONS == len(set(keys))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_worker_killed_mid_write_leaves_whole_records_and_a_sound_database(
    backend, tmp_path, reading_weights, mnist_test_set, encode_image
):
    images, labels = mnist_test_set
    rng = np.random.default_rng(27)
    numbers = [compose(images, labels, 4, "wide", rng) for _ in range(400)]
    requests = [(encode_image(n.picture), {"text": n.text}) for n in numbers]
    with contextlib.contextmanager(fresh_database_url)(backend, tmp_path) as url:
        env = server_env(reading_weights, url, workers=1)
        killed = pytest.raises(RuntimeError, match="died")  # running_server's word for it
        with killed, running_server(env, command=PYTHON_APP) as server:
            killer = threading.Thread(target=kill_once_writing, args=(server, url))
            killer.start()
            with contextlib.suppress(httpx.HTTPError):
                asyncio.run(post_all(server.url, requests))
            killer.join()
        keys = stored_keys(url)
        assert keys, "nothing was written before the kill"
        per_picture = {}
        for sha256, position, _ in keys:
            per_picture.setdefault(sha256, set()).add(position)
        assert all(positions == {0, 1, 2, 3} for positions in per_picture.values())
        if backend == "sqlite":
            path = url.removeprefix("sqlite:///")
            with contextlib.closing(sqlite3.connect(path)) as connection:
                assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        # A new server takes over the database as it is and goes on writing.
        with running_server(env, command=PYTHON_APP) as server:
            statuses = asyncio.run(post_all(server.url, requests[-20:]))
        assert set(statuses) <= {201, 422}


def kill_once_writing(server, url: str) -> None:
    """SIGKILL the server as soon as corrections are being stored."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(stored_keys(url)) < 40:
        time.sleep(0.05)
    os.kill(server.process.pid, signal.SIGKILL)
