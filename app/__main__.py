"""``python -m app``: serve with uvicorn on the host, port and worker count from the settings.

The worker count is read as WEB_CONCURRENCY (uvicorn's own variable) by the settings, which also
derive each worker's CPU threads (S4_CPU_THREADS) from it, so the two can never disagree.
"""

import uvicorn
from uvicorn.supervisors import Multiprocess

from app.settings import get_settings


class ClosingMultiprocess(Multiprocess):
    """uvicorn's worker manager, closing its own copy of the listening socket when it stops.

    uvicorn's kept the socket listening while the workers drained: the kernel went on queueing
    connections that no worker would take and reset them all when the manager exited (one per
    client under load: curl's exit 56 on `docker stop`). Closed, the socket stops listening as
    soon as the workers close theirs, as with a single worker, and later clients are refused.
    """

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


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
        ClosingMultiprocess(config, sockets=[config.bind_socket()]).run()


if __name__ == "__main__":
    main()
