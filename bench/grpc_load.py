"""Requests per second over gRPC beside HTTP: Triton's own clients against one real server.

    python -m bench.grpc_load [--concurrency 1 8 32] [--seconds 5] [--rounds 2]

Starts `python -m app` (one worker, the committed weights) on free ports, then for each
concurrency runs tritonclient's asyncio gRPC and HTTP clients in turn (interleaved, ``--rounds``
times each), every request one MNIST-form image (`images`, UINT8 [1, 28, 28], binary) to
/v2/models/s4net/infer or ModelInfer, for ``--seconds`` each. Prints req/s per protocol (the
median of the rounds) and gRPC's ratio to HTTP. Client and server share the machine: compare the
ratio, not the absolute figures.
"""

import argparse
import asyncio
import statistics
import sys
import time

import numpy as np
import tritonclient.grpc.aio as grpc_client
import tritonclient.http.aio as http_client

from bench.servers import running_server

IMAGE = np.zeros((1, 28, 28), np.uint8)
IMAGE[0, 8:20, 13:15] = 255  # a "1"


async def requests_per_second(protocol: str, server, concurrency: int, seconds: float) -> float:
    if protocol == "grpc":
        client, module = grpc_client.InferenceServerClient(server.grpc_address), grpc_client
    else:
        address = server.url.removeprefix("http://")
        client = http_client.InferenceServerClient(address, conn_limit=concurrency)
        module = http_client
    tensor = module.InferInput("images", list(IMAGE.shape), "UINT8")
    if protocol == "grpc":
        tensor.set_data_from_numpy(IMAGE)
    else:
        tensor.set_data_from_numpy(IMAGE, binary_data=True)
    outputs = [module.InferRequestedOutput("digit")]
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            result = await client.infer("s4net", [tensor], outputs=outputs)
            assert result.as_numpy("digit")[0] == 1
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await client.close()
    return done / elapsed


async def main(concurrencies: list[int], seconds: float, rounds: int) -> None:
    env = {"WEB_CONCURRENCY": "1", "S4_CPU_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    with running_server(env, (sys.executable, "-m", "app")) as server:
        await requests_per_second("grpc", server, 4, 1.0)  # warm both paths up
        await requests_per_second("http", server, 4, 1.0)
        print(f"{'concurrency':>11}  {'gRPC req/s':>10}  {'HTTP req/s':>10}  {'gRPC/HTTP':>9}")
        for concurrency in concurrencies:
            figures: dict[str, list[float]] = {"grpc": [], "http": []}
            for _ in range(rounds):
                for protocol in figures:
                    rate = await requests_per_second(protocol, server, concurrency, seconds)
                    figures[protocol].append(rate)
            grpc_rate = statistics.median(figures["grpc"])
            http_rate = statistics.median(figures["http"])
            print(
                f"{concurrency:>11}  {grpc_rate:>10.0f}  {http_rate:>10.0f}  "
                f"{grpc_rate / http_rate:>9.2f}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.concurrency, arguments.seconds, arguments.rounds))
