"""TorchServe: a custom handler; TorchServe's Java front end batches requests for it.

The body of each request is the PNG itself (TorchServe hands it over as `data` or `body`).
"""

from ts.torch_handler.base_handler import BaseHandler

from bench.anchors.reading import load_net, mnist_form, read_digits


class S4DigitsHandler(BaseHandler):
    def initialize(self, context):
        self.net = load_net()
        self.initialized = True

    def preprocess(self, requests):
        return [mnist_form(bytes(r.get("data") or r.get("body"))) for r in requests]

    def inference(self, images):
        return read_digits(self.net, images)

    def postprocess(self, digits):
        return [{"digit": digit} for digit in digits]
