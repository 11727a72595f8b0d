"""bench/anchors: its table, its check of every server's answer, its CPU and process-tree
accounting, and its environments' pins. The whole run is a benchmark (python -m bench.anchors),
not a test: nothing here needs an anchor's environment, only ours, served for real."""

import os
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

import pytest

from bench.anchors.__main__ import choose
from bench.anchors.contenders import ANCHORS, CONTENDERS, OURS, OURS_V2, Contender
from bench.anchors.environments import TORCH, requirements, service_pins
from bench.anchors.report import format_table
from bench.anchors.runner import (
    Level,
    Sample,
    ServerFailed,
    answer_is_right,
    make_route,
    running,
)
from bench.servers import Server, process_tree

SEVEN = Path(__file__).resolve().parent.parent / "docs" / "seven.png"


def sample(rps: float, cpu_ms: float, bad: int = 0) -> Sample:
    levels = {1: Level(rps / 4, 0.5, 1.0, cpu_ms * 2, 0), 32: Level(rps, 7.25, 15.5, cpu_ms, bad)}
    return Sample(ready_s=1.25, idle_mib=210.4, levels=levels)


def test_table_has_the_medians_over_the_rounds_and_says_why_a_server_failed():
    results = {"ours": [sample(4000, 0.3), sample(5000, 0.5), sample(4500, 0.4)]}
    results["slow"] = [sample(900, 1.2, bad=3)]
    table = format_table(results, {"broken": "exited (1) before ready:\nTraceback"}, [1, 32])
    lines = table.splitlines()
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == [
        "server", "req/s c=1", "req/s c=32", "p50 ms c=32", "p99 ms c=32", "CPU ms/req c=1",
        "CPU ms/req c=32", "idle MiB", "ready s",
    ]  # fmt: skip
    ours = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert ours == ["ours", "1,125", "4,500", "7.2", "15.5", "0.80", "0.40", "210", "1.2"]
    assert lines[3].startswith("| slow (3 bad answers) ")
    assert lines[4] == "| broken" + " " * (len("slow (3 bad answers)") - 6) + " | failed: " + (
        "exited (1) before ready: |"
    )
    assert len({len(line) for line in lines[:4]}) == 1  # the figures' columns line up


def test_answers_are_checked_as_wrk_checks_them():
    png = SEVEN.read_bytes()
    text = make_route(OURS, png, 7)
    assert text.expect == '"digit":7'
    assert answer_is_right(text, b'{"predictions":[{"digit":7,"confidence":0.99}]}', 7)
    assert not answer_is_right(text, b'{"predictions":[{"digit":1}],"ms":7}', 7)
    binary = make_route(OURS_V2, png, 7)
    assert binary.answer == "binary" and binary.header_length is not None
    assert binary.body.endswith(png)  # the PNG itself, as one BYTES element
    assert answer_is_right(binary, b"header" + (7).to_bytes(8, "little"), 7)
    assert not answer_is_right(binary, b"header" + (1).to_bytes(8, "little"), 7)
    raw = make_route(next(a for a in ANCHORS if a.request == "raw"), png, 7)
    assert raw.body == png and raw.content_type == "image/png"


def test_ours_is_ready_only_once_it_answers_the_digit(tmp_path):
    route = make_route(OURS, SEVEN.read_bytes(), 7)
    with running(OURS, Path(sys.executable), tmp_path, route, 7, 2) as (server, ready_s):
        assert 0 < ready_s < 60
        assert server.rss_mib() > 50
    with (
        pytest.raises(ServerFailed, match="not the digit 3"),
        running(
            OURS, Path(sys.executable), tmp_path, make_route(OURS, SEVEN.read_bytes(), 3), 3, 2
        ),
    ):
        pass


def test_cpu_and_memory_count_the_whole_process_tree():
    # A parent whose child's child burns CPU: the tree's CPU time must hold the grandchild's.
    burn = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\n"
    burn += "print('burnt', flush=True)\ntime.sleep(30)"
    spawn = "import subprocess, sys; subprocess.run([sys.executable, '-c', {!r}])"
    command = [sys.executable, "-c", spawn.format(spawn.format(burn))]
    parent = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "burnt"
        server = Server("http://unused", parent, Path("unused.log"))
        assert len(process_tree(parent.pid)) == 3
        assert server.cpu_seconds() >= 0.5
        assert server.rss_mib() > 3 * 5  # three Python interpreters
    finally:
        for pid in process_tree(parent.pid):
            with suppress(ProcessLookupError):  # a parent may exit when its child is killed
                os.kill(pid, signal.SIGKILL)
        parent.wait(timeout=10)


def test_environments_are_pinned():
    pins = service_pins()
    assert pins["numpy"].startswith("numpy==")
    for anchor in ANCHORS:
        wanted = requirements(anchor)
        assert TORCH == "torch==2.13.0" and TORCH in wanted
        assert all("==" in requirement for requirement in wanted), wanted
    own_numpy = Contender("x", ("numpy==1.26.4",), OURS.command, "raw", "/", "{digit}", "")
    assert [r for r in requirements(own_numpy) if r.startswith("numpy")] == ["numpy==1.26.4"]


def test_only_picks_contenders_by_name():
    assert [c.name for c in choose("mosec,S4digits")] == ["s4digits", "Mosec"]
    assert choose(None) == list(CONTENDERS)
    with pytest.raises(SystemExit, match="unknown --only nope"):
        choose("nope")


def test_main_thread_cpu_counts_the_main_threads_alone():
    # The main thread waits while another thread burns: the process's CPU holds the burn, its
    # main thread's (an event loop's, in a server) does not.
    burn = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\n"
    script = (
        f"import threading, time\nthread = threading.Thread(target=exec, args=({burn!r},))\n"
        "thread.start(); thread.join()\nprint('burnt', flush=True)\ntime.sleep(30)"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "burnt"
        server = Server("http://unused", process, Path("unused.log"))
        assert server.cpu_seconds() >= 0.5
        assert server.main_thread_cpu_seconds() < 0.3
    finally:
        process.kill()
        process.wait(timeout=10)
