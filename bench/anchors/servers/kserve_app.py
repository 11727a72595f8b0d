"""KServe's Python ModelServer: a kserve.Model on the Open Inference (v2) protocol.

    python bench/anchors/servers/kserve_app.py --http_port PORT --workers N   (kserve's flags)
The upload is the PNG as a v2 UINT8 tensor `image_bytes` (KServe reads binary BYTES tensors as
UTF-8 text); the answer the INT64 `digit`.
"""

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.model_server import parser
from kserve.utils.utils import generate_uuid

from bench.anchors.reading import load_net, mnist_form, read_digits


class S4Digits(Model):
    def __init__(self):
        super().__init__("s4net")
        self.net = load_net()
        self.ready = True

    def predict(self, payload: InferRequest, headers=None) -> InferResponse:
        (tensor,) = payload.inputs
        images = [mnist_form(tensor.as_numpy().tobytes())]
        digits = np.array(read_digits(self.net, images), dtype=np.int64)
        output = InferOutput(name="digit", shape=list(digits.shape), datatype="INT64")
        output.set_data_from_numpy(digits, binary_data=True)
        return InferResponse(
            response_id=payload.id or generate_uuid(), model_name=self.name, infer_outputs=[output]
        )


if __name__ == "__main__":
    args, _ = parser.parse_known_args()
    ModelServer().start([S4Digits()])
