"""The micro-batcher (app.pipeline): concurrent requests share forward passes, each gets its own
answer."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.inference import ForwardPass
from app.metrics import Metrics
from app.pipeline.batcher import MicroBatcher, batch, unbatch
from app.pipeline.errors import Overloaded
from app.pipeline.prepare import PreparedImage


class EchoPredictor:
    """Stands in for the Predictor: 'predicts' each image's first pixel (0..9) as its digit."""

    def __init__(self, release: threading.Event | None = None, fail_on: int | None = None):
        self.batch_sizes: list[int] = []
        self.release = release
        self.fail_on = fail_on

    def forward(self, images: np.ndarray) -> ForwardPass:
        if self.release is not None:
            self.release.wait(timeout=10)
        digits = images[:, 0, 0]
        if self.fail_on is not None and (digits == self.fail_on).any():
            raise RuntimeError("forward pass failed")
        self.batch_sizes.append(len(images))
        return ForwardPass(np.eye(10, dtype=np.float32)[digits], "echo")


def images_of(digit: int, count: int = 1) -> list[PreparedImage]:
    pixels = np.full((28, 28), digit, dtype=np.uint8)
    return [PreparedImage(input_size=(28, 28), pixels=pixels)] * count


def run_with_batcher(predictor, scenario, max_images=256, max_wait_s=0.05, max_queued=1000):
    """Run ``scenario(batcher)`` on a fresh event loop in its own thread (other suites' fixtures,
    e.g. Playwright's, may leave a loop running in the main thread)."""

    async def main():
        batcher = MicroBatcher(predictor, Metrics(), max_images, max_wait_s, max_queued)
        batcher.start()
        try:
            return await scenario(batcher)
        finally:
            await batcher.stop()

    with ThreadPoolExecutor(max_workers=1) as loop_thread:
        return loop_thread.submit(asyncio.run, main()).result(timeout=30)


def test_concurrent_requests_share_a_forward_pass_and_get_their_own_answers():
    predictor = EchoPredictor()

    async def scenario(batcher):
        return await asyncio.gather(*(batcher.predict(images_of(d, 1 + d % 3)) for d in range(10)))

    results = run_with_batcher(predictor, scenario)
    for digit, result in enumerate(results):
        assert len(result.probabilities) == 1 + digit % 3
        assert (result.probabilities.argmax(axis=1) == digit).all()
    assert predictor.batch_sizes == [sum(1 + d % 3 for d in range(10))]


def test_an_idle_request_does_not_wait_for_a_full_batch():
    async def scenario(batcher):
        started = time.monotonic()
        await batcher.predict(images_of(3))
        return time.monotonic() - started

    assert run_with_batcher(EchoPredictor(), scenario, max_wait_s=0.0) < 0.5


def test_batches_respect_max_images_but_never_split_a_request():
    predictor = EchoPredictor()

    async def scenario(batcher):
        return await asyncio.gather(*(batcher.predict(images_of(d, 3)) for d in range(4)))

    run_with_batcher(predictor, scenario, max_images=5)
    assert predictor.batch_sizes == [3, 3, 3, 3]


def test_a_full_queue_answers_overloaded_at_once():
    release = threading.Event()

    async def scenario(batcher):
        running = asyncio.create_task(batcher.predict(images_of(1, 4)))  # blocks the forward
        await asyncio.sleep(0.1)
        queued = asyncio.create_task(batcher.predict(images_of(2, 4)))  # fills the queue
        await asyncio.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(Overloaded, match="S4_BATCH_QUEUE_IMAGES"):
            await batcher.predict(images_of(3, 1))
        refused_after = time.monotonic() - started
        release.set()
        await asyncio.gather(running, queued)
        return refused_after

    assert run_with_batcher(EchoPredictor(release), scenario, max_queued=4) < 0.05


def test_a_failing_forward_fails_only_its_own_batch():
    async def scenario(batcher):
        with pytest.raises(RuntimeError):
            await batcher.predict(images_of(7))
        return await batcher.predict(images_of(2))

    result = run_with_batcher(EchoPredictor(fail_on=7), scenario)
    assert result.probabilities.argmax() == 2


def test_batch_stacks_every_submission_and_unbatch_splits_it_back():
    submissions = [images_of(1, 2), images_of(2, 1), images_of(3, 3)]
    pixels = batch(submissions)
    assert pixels.shape == (6, 28, 28) and pixels.dtype == np.uint8
    rows = unbatch(pixels[:, 0, 0], [len(images) for images in submissions])
    assert [row.tolist() for row in rows] == [[1, 1], [2], [3, 3, 3]]


def test_a_caller_that_gives_up_does_not_disturb_the_others():
    release = threading.Event()

    async def scenario(batcher):
        first = asyncio.create_task(batcher.predict(images_of(1)))
        await asyncio.sleep(0.1)  # first is in the forward pass, held by `release`
        abandoned = asyncio.create_task(batcher.predict(images_of(5)))
        kept = asyncio.create_task(batcher.predict(images_of(6)))
        await asyncio.sleep(0.01)
        abandoned.cancel()
        release.set()
        return await asyncio.gather(first, kept)

    first, kept = run_with_batcher(EchoPredictor(release), scenario)
    assert first.probabilities.argmax() == 1 and kept.probabilities.argmax() == 6


# Through HTTP, with the real model ------------------------------------------------------------


def test_concurrent_http_requests_each_get_their_own_digit(
    make_client, reading_weights, mnist_test_set, encode_image
):
    images, labels = mnist_test_set
    with make_client(weights=reading_weights, cpu_threads=1, batch_max_wait_ms=20) as client:

        def post(index: int):
            data = encode_image(images[index])
            if index == 5:
                data = b"not an image"
            return client.post("/predict", files=[("file", (f"{index}.png", data, "image/png"))])

        with ThreadPoolExecutor(max_workers=12) as pool:
            responses = list(pool.map(post, range(12)))
    for index, response in enumerate(responses):
        if index == 5:
            assert response.status_code == 415 and "image 0 (5.png)" in response.json()["detail"]
        else:
            assert response.status_code == 200
            assert response.json()["predictions"][0]["digit"] == labels[index]


def test_overload_is_a_fast_503_with_retry_after(make_client, untrained_weights, encode_image):
    release = threading.Event()
    with make_client(weights=untrained_weights, batch_queue_images=1) as client:
        predictor = client.app.state.predictor
        real_forward = predictor.forward

        def slow_forward(images):
            release.wait(timeout=10)
            return real_forward(images)

        predictor.forward = slow_forward
        image = encode_image(np.eye(28, dtype=np.uint8) * 255)
        files = [("file", ("a.png", image, "image/png"))]
        with ThreadPoolExecutor(max_workers=2) as pool:
            running = pool.submit(client.post, "/predict", files=files)  # held in the forward
            time.sleep(0.3)
            queued = pool.submit(client.post, "/predict", files=files)  # fills the queue
            time.sleep(0.3)
            refused = client.post("/predict", files=files)
            release.set()
            assert running.result().status_code == 200 and queued.result().status_code == 200
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert "retry" in refused.json()["detail"]
