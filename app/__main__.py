"""``python -m app``: serve with uvicorn on the host, port and worker count from the settings.

The worker count is read as WEB_CONCURRENCY (uvicorn's own variable) by the settings, which also
derive each worker's CPU threads (S4_CPU_THREADS) from it, so the two can never disagree.
"""

import asyncio
import ctypes
import socket
import struct
import sys
import time

import uvicorn
from uvicorn.supervisors import Multiprocess

from app.settings import get_settings

SO_ATTACH_FILTER = 26  # Linux, <asm-generic/socket.h>; Python's socket module lacks the name
# On a stop, how long the workers get to accept the connections the kernel had already queued
# (and read their requests) before they stop accepting.
DRAIN_S = 0.5


def refuse_new_connections(sock: socket.socket) -> None:
    """From now on drop every new connection attempt to this listening socket; the connections
    already queued stay, for the workers to accept. Linux only (elsewhere it does nothing).

    The filter is a one-instruction classic BPF program, "accept 0 bytes": the kernel drops the
    SYN, the client retries it a second later and is refused once the socket is closed.
    """
    if sys.platform != "linux":
        return
    program = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))  # BPF_RET|BPF_K 0
    sock_fprog = struct.pack("HL", 1, ctypes.addressof(program))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, sock_fprog)


class DrainingMultiprocess(Multiprocess):
    """uvicorn's worker manager, stopping so that no accepted connection is reset.

    uvicorn's own kept its copy of the listening socket open while the workers shut down: the
    kernel went on queueing connections no worker would take and reset them all when it exited
    (one per client under load: curl's exit 56 on `docker stop`). This one first makes the
    socket refuse new connections, lets the workers take the queued ones, closes its copy, and
    only then stops the workers, which finish what they accepted.
    """

    def terminate_all(self) -> None:
        for sock in self.sockets:
            refuse_new_connections(sock)
        time.sleep(DRAIN_S)
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


class DrainingServer(uvicorn.Server):
    """One worker serving alone, stopping as DrainingMultiprocess does."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            for sock in server.sockets:
                refuse_new_connections(sock)
        await asyncio.sleep(DRAIN_S)
        await super().shutdown(sockets)


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
        DrainingServer(config).run()
        return
    DrainingMultiprocess(config, sockets=[config.bind_socket()]).run()


if __name__ == "__main__":
    main()
