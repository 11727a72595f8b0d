"""What each layer of the app's middleware stack costs per request: event-loop CPU time.

    .venv/bin/python -m bench.middleware                 # GET /health, 5 rounds of 5,000
    .venv/bin/python -m bench.middleware --path /predict  # the first MNIST test digit, raw PNG

Builds the app as `python -m app` does (default settings, the committed weights) and runs its
lifespan. The stack is a chain of ASGI apps, outermost first (`app.middleware_stack`, each layer
holding the next in `.app`, down to the router); one request at a time is sent into each layer
in turn, in interleaved rounds, and the time per request entering at a layer less the time
entering at the next one is that layer's cost (the best round of each is kept). The innermost
layer is timed with the router and the route: FastAPI's routes need the scope it sets.
"""

import argparse
import os
import time

import uvloop

from app.main import create_app
from app.settings import Settings
from bench.inprocess import asgi_request, silence_request_log
from bench.renderings import as_is
from bench.serve import COMMITTED_WEIGHTS, MNIST_DIR, TEST_IMAGES, read_idx


async def time_layer(layer, app, path: str, body: bytes, requests: int) -> float:
    async def send(message: dict) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise SystemExit(f"{path} answered {message['status']}")

    started = time.thread_time()  # the event loop's CPU: less disturbed by the machine's load
    for _ in range(requests):
        headers = [(b"content-type", b"image/png")] if body else []
        scope, messages = asgi_request(path, body, headers)
        scope["app"] = app

        async def receive(messages=messages) -> dict:
            return messages.pop() if messages else {"type": "http.disconnect"}

        await layer(scope, receive, send)
    return (time.thread_time() - started) / requests * 1e6


async def measure(path: str, body: bytes, requests: int, rounds: int) -> None:
    app = create_app(Settings(weights=COMMITTED_WEIGHTS))
    with open(os.devnull, "w") as devnull:
        silence_request_log(devnull)
        async with app.router.lifespan_context(app):
            layers = [app]
            layer = app.middleware_stack or app.build_middleware_stack()
            app.middleware_stack = layer
            while layer is not app.router:  # FastAPI's routes need the innermost layer's scope
                layers.append(layer)
                layer = layer.app
            best = [float("inf")] * len(layers)
            for _ in range(rounds):
                for index, layer in enumerate(layers):
                    await time_layer(layer, app, path, body, requests // 10)  # warm-up
                    took = await time_layer(layer, app, path, body, requests)
                    best[index] = min(best[index], took)
    print(f"{path}: µs per request entering at each layer (best of {rounds} x {requests:,})")
    for index, layer in enumerate(layers):
        own = best[index] - best[index + 1] if index + 1 < len(layers) else best[index]
        name = "the app (FastAPI.__call__)" if layer is app else type(layer).__name__
        name += " and the route" if index + 1 == len(layers) else ""
        print(f"  {name:<34} {best[index]:>8.1f} total {own:>7.1f} its own")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", choices=["/health", "/predict"], default="/health")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    body = b""
    if args.path == "/predict":
        digit = read_idx(MNIST_DIR / TEST_IMAGES.name, TEST_IMAGES)[0].numpy()
        body = as_is(digit, None)
    uvloop.run(measure(args.path, body, args.requests, args.rounds))


if __name__ == "__main__":
    main()
