"""BentoML: a service with a batchable API; BentoML receives the multipart upload as a file.

    bentoml serve bench.anchors.servers.bentoml_service:S4Digits --port PORT
Environment: ANCHOR_WORKERS (worker processes), ANCHOR_MAX_BATCH.
"""

import os
from pathlib import Path

import bentoml

from bench.anchors.reading import load_net, mnist_form, read_digits


@bentoml.service(workers=int(os.environ.get("ANCHOR_WORKERS", "2")))
class S4Digits:
    def __init__(self):
        self.net = load_net()

    @bentoml.api(batchable=True, max_batch_size=int(os.environ.get("ANCHOR_MAX_BATCH", "32")))
    def predict(self, file: list[Path]) -> list[dict]:
        images = [mnist_form(path.read_bytes()) for path in file]
        return [{"digit": digit} for digit in read_digits(self.net, images)]
