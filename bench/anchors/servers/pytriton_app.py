"""NVIDIA PyTriton: a real Triton Inference Server whose dynamic batcher feeds a Python function.

    python bench/anchors/servers/pytriton_app.py HTTP_PORT GRPC_PORT METRICS_PORT MAX_BATCH WAIT_MS
The upload is a v2 BYTES tensor `image_bytes` [1, 1] holding the PNG; the answer INT64 `digit`.
"""

import sys

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from bench.anchors.reading import load_net, mnist_form, read_digits

net = load_net()


@batch
def infer(image_bytes: np.ndarray) -> dict[str, np.ndarray]:
    images = [mnist_form(bytes(row[0])) for row in image_bytes]
    return {"digit": np.array(read_digits(net, images), dtype=np.int64)[:, None]}


if __name__ == "__main__":
    http_port, grpc_port, metrics_port, max_batch, wait_ms = map(int, sys.argv[1:6])
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=http_port,
        grpc_address="127.0.0.1",
        grpc_port=grpc_port,
        metrics_port=metrics_port,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name="s4net",
            infer_func=infer,
            inputs=[Tensor(name="image_bytes", dtype=bytes, shape=(1,))],
            outputs=[Tensor(name="digit", dtype=np.int64, shape=(1,))],
            config=ModelConfig(
                max_batch_size=max_batch,
                batcher=DynamicBatcher(max_queue_delay_microseconds=wait_ms * 1000),
            ),
        )
        triton.serve()
