"""``python -m app``: serve with uvicorn on the host, port and worker count from the settings.

The worker count is read as WEB_CONCURRENCY (uvicorn's own variable) by the settings, which also
derive each worker's CPU threads (S4_CPU_THREADS) from it, so the two can never disagree.
"""

import os
import socket
import sys

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process, logger

from app.feedback import SCHEMA_UP_TO_DATE_ENV, sqlite_schema_is_current
from app.settings import get_settings


def reuse_port_socket(config: uvicorn.Config, port: int) -> socket.socket:
    """A TCP socket on config.host and ``port`` with SO_REUSEPORT, listening, inheritable; exits
    as uvicorn does (STARTUP_FAILURE) if the address cannot be bound."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((config.host, port))
    except OSError as exc:
        logger.error(exc)
        sys.exit(STARTUP_FAILURE)
    sock.listen(config.backlog)
    sock.set_inheritable(True)
    return sock


class BalancedMultiprocess(Multiprocess):
    """uvicorn's worker manager, with one listening socket per worker instead of one for all.

    With one shared socket, whichever worker woke first could accept every connection a client
    opened in a burst, and the other idled for as long as they stayed open (docs/decisions.md).
    Here each worker slot has its own socket, bound to the same port with SO_REUSEPORT, and the
    kernel hashes each new connection to one of them: every worker gets its share, whatever the
    client does. A slot keeps its socket across restarts, so a worker that dies is replaced on
    the same socket and the connections queued there meanwhile are served, not reset.

    uvicorn's health checks, restarts (of a dead or hung worker, and of all on SIGHUP) and
    SIGTERM handling are kept; only the socket each new worker gets differs. On stop, the
    manager closes its own copies of the sockets first: each stops listening as soon as its
    worker closes it, and later clients are refused rather than queued where no worker would
    take them (one reset per client under load: curl's exit 56 on `docker stop`).
    """

    def __init__(self, config: uvicorn.Config) -> None:
        first = reuse_port_socket(config, config.port)
        port = first.getsockname()[1]  # the same port for every slot, even when asked for 0
        others = [reuse_port_socket(config, port) for _ in range(config.workers - 1)]
        super().__init__(config, sockets=[first, *others])
        logger.info("Uvicorn running on http://%s:%d, one socket per worker", config.host, port)

    def worker(self, slot: int) -> Process:
        process = Process(self.config, [self.sockets[slot]])
        process.start()
        return process

    def init_processes(self) -> None:
        self.processes = [self.worker(slot) for slot in range(self.processes_num)]

    def keep_subprocess_alive(self) -> None:
        """uvicorn's: a dead or hung worker is replaced, on its slot's socket."""
        for slot, process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                logger.error(f"Child process [{process.pid}] failed to start, stopping.")
                self.should_exit.set()
                return
            logger.info(f"Child process [{process.pid}] died")
            self.processes[slot] = self.worker(slot)

    def restart_all(self) -> None:
        """SIGHUP: each worker is replaced, its successor ready on its socket before it stops."""
        for slot, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self.worker(slot)
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                logger.error(f"New child process [{new.pid}] was not ready; restart aborted.")
                return
            old.terminate()
            old.join()
            self.processes[slot] = new

    def handle_ttin(self) -> None:
        logger.info("Received SIGTTIN: the worker count is fixed (WEB_CONCURRENCY), ignored.")

    def handle_ttou(self) -> None:
        logger.info("Received SIGTTOU: the worker count is fixed (WEB_CONCURRENCY), ignored.")

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


def upgrade_feedback_schema(database_url: str) -> None:
    """Bring the corrections' database schema up to date once, before any worker starts, and say
    so to the workers: they open the database at their first correction instead of at start-up,
    and one that never gets any never loads SQLAlchemy. A database that cannot be used stops the
    start, as a worker failing to start did. A SQLite file already up to date is only read."""
    shown = database_url  # a SQLite file's URL: no password to hide
    if not sqlite_schema_is_current(database_url):  # else SQLAlchemy is not even imported
        from app.feedback.store import DatabaseError, display_url, upgrade_schema

        try:
            upgrade_schema(database_url)
        except DatabaseError as exc:
            logger.error("Feedback: %s", exc)
            sys.exit(STARTUP_FAILURE)
        shown = display_url(database_url)
    logger.info("Feedback: corrections kept in %s, schema up to date", shown)
    os.environ[SCHEMA_UP_TO_DATE_ENV] = "1"


def main() -> None:
    settings = get_settings()
    config = uvicorn.Config(
        "app.main:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        access_log=False,  # every request is logged once, as JSON, by app.metrics
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
    )
    if config.workers == 1:
        uvicorn.Server(config).run()
    else:
        if settings.feedback:
            upgrade_feedback_schema(settings.database_url)
        BalancedMultiprocess(config).run()


if __name__ == "__main__":
    main()
