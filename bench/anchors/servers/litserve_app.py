"""LitServe: a batched LitAPI reading the multipart upload, as in its docs' file-upload example.

python bench/anchors/servers/litserve_app.py PORT WORKERS MAX_BATCH BATCH_WAIT_MS
"""

import sys

import litserve as ls

from bench.anchors.reading import load_net, mnist_form, read_digits


class S4Digits(ls.LitAPI):
    def setup(self, device):
        self.net = load_net()

    def decode_request(self, request):
        return mnist_form(request["file"].file.read())  # the form's `file` part, as ours reads it

    def predict(self, images):
        return read_digits(self.net, images)

    def encode_response(self, digit):
        return {"digit": digit}


if __name__ == "__main__":
    port, workers, max_batch, wait_ms = map(int, sys.argv[1:5])
    api = S4Digits(max_batch_size=max_batch, batch_timeout=wait_ms / 1000)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=workers)
    server.run(host="127.0.0.1", port=port, generate_client_file=False)
