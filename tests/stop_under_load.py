"""Clients that keep a server busy while it stops, and what each of their requests met.

Each client opens a new connection per request (as curl in a loop does) and records the
outcome: an HTTP status, ``refused`` (nothing listens any more: the clean end of a stop) or
``reset`` (a connection accepted by the kernel, then dropped without an answer: what a graceful
stop must never do).
"""

import http.client
import threading
from collections import Counter
from pathlib import Path

SEVEN = Path(__file__).resolve().parent.parent / "docs" / "seven.png"
# Like curl in a shell loop: 8 clients, each starting its next request 50 ms after an answer.
CLIENTS = 8
PAUSE_S = 0.05


class LoadDuringStop:
    def __init__(self, host: str, port: int, clients: int = 8, pause_s: float = 0.0):
        self.host, self.port, self.pause_s = host, port, pause_s
        self.outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def __enter__(self) -> "LoadDuringStop":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _record(self, outcome: str) -> None:
        with self._lock:
            self.outcomes[outcome] += 1

    def _client(self) -> None:
        body = SEVEN.read_bytes()
        while not self._stop.is_set():
            connection = http.client.HTTPConnection(self.host, self.port, timeout=20)
            try:
                connection.request("POST", "/predict", body, {"Content-Type": "image/png"})
                response = connection.getresponse()
                response.read()
                self._record(str(response.status))
            except ConnectionRefusedError:
                self._record("refused")
                self._stop.wait(0.05)
            except (ConnectionError, http.client.HTTPException, TimeoutError) as exc:
                # ConnectionResetError, BrokenPipeError, RemoteDisconnected (no answer at all)
                self._record(f"reset ({type(exc).__name__})")
            finally:
                connection.close()
            self._stop.wait(self.pause_s)

    def resets(self) -> dict[str, int]:
        return {k: v for k, v in self.outcomes.items() if k.startswith("reset")}


def few_resets(load: LoadDuringStop) -> bool:
    """Fewer resets than clients. uvicorn's own manager reset every client's connection in
    flight (8-9 with 8 clients); closing its socket copy left 0-4 per run (docs/deploy.md)."""
    return sum(load.resets().values()) < CLIENTS
