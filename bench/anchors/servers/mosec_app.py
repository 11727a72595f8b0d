"""Mosec: its Rust front end, a decode stage (one process per core) and a batched inference stage.

    python bench/anchors/servers/mosec_app.py --port PORT   (mosec reads its own flags)
Environment: ANCHOR_WORKERS (decode processes), ANCHOR_MAX_BATCH, ANCHOR_BATCH_WAIT_MS.
"""

import os

from mosec import Server, Worker

from bench.anchors.reading import load_net, mnist_form, read_digits


class Decode(Worker):
    def deserialize(self, data: bytes) -> bytes:
        return data  # the body is the PNG itself, not JSON

    def forward(self, data: bytes):
        return mnist_form(data)


class Infer(Worker):
    def __init__(self):
        super().__init__()
        self.net = load_net()

    def forward(self, images: list) -> list[int]:
        return read_digits(self.net, images)

    def serialize(self, digit: int) -> bytes:
        return b'{"digit":%d}' % digit


if __name__ == "__main__":
    server = Server()
    server.append_worker(Decode, num=int(os.environ["ANCHOR_WORKERS"]))
    server.append_worker(
        Infer,
        num=1,
        max_batch_size=int(os.environ["ANCHOR_MAX_BATCH"]),
        max_wait_time=int(os.environ["ANCHOR_BATCH_WAIT_MS"]),
    )
    server.run()
