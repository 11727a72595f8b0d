"""Adaptive micro-batching: concurrent /predict requests share one forward pass.

Requests hand their already-preprocessed images to ``MicroBatcher.predict`` and await the answer.
One background task gathers whatever is waiting into a batch and runs the forward pass on a single
dedicated thread, so the event loop never blocks and forward passes never compete for the CPU
threads torch was given. A request that arrives while the service is idle waits at most
``max_wait_s`` for company; under load, requests that queue up during one forward pass form the
next. Past ``max_queued_images`` waiting images, new requests are refused at once (Overloaded)
instead of letting every request's latency grow.
"""

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from app.inference import Predictor
from app.metrics import Metrics


class Overloaded(Exception):
    """Too many images are already waiting for a forward pass; the caller should retry shortly."""


@dataclass(frozen=True)
class BatchResult:
    probabilities: np.ndarray  # float32 [n, 10], one row per submitted image, in order
    inference_ms: float  # how long the forward pass holding these images took on the device


@dataclass(frozen=True)
class _Job:
    images: np.ndarray  # uint8 [n, 28, 28]
    future: asyncio.Future


class MicroBatcher:
    def __init__(
        self,
        predictor: Predictor,
        metrics: Metrics,
        max_images: int,
        max_wait_s: float,
        max_queued_images: int,
    ):
        self.predictor = predictor
        self.metrics = metrics
        self.max_images = max_images
        self.max_wait_s = max_wait_s
        self.max_queued_images = max_queued_images
        self._pending: list[_Job] = []
        self._queued_images = 0
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s4-forward")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="s4-micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in self._pending:
            job.future.cancel()
        self._executor.shutdown(wait=True)

    async def predict(self, images: np.ndarray) -> BatchResult:
        """Probabilities for uint8 images [n, 28, 28], computed together with other requests'."""
        if self._queued_images + len(images) > self.max_queued_images:
            raise Overloaded(
                f"{self._queued_images} images are already waiting for the model "
                f"(S4_BATCH_QUEUE_IMAGES={self.max_queued_images}); retry in a moment"
            )
        job = _Job(images, asyncio.get_running_loop().create_future())
        self._pending.append(job)
        self._queued_images += len(images)
        self._arrived.set()
        return await job.future

    async def _run(self) -> None:
        while True:
            await self._wait_for_work()
            await self._run_batch(self._take_batch())

    async def _wait_for_work(self) -> None:
        """Wait for a first job, then up to max_wait_s for more, unless the batch is full."""
        while not self._pending:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = time.monotonic() + self.max_wait_s
        while self._queued_images < self.max_images:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Job]:
        """Whole jobs in arrival order up to max_images; always at least one job."""
        taken, images = 0, 0
        for job in self._pending:
            if taken and images + len(job.images) > self.max_images:
                break
            taken, images = taken + 1, images + len(job.images)
        batch, self._pending = self._pending[:taken], self._pending[taken:]
        self._queued_images -= images
        return [job for job in batch if not job.future.cancelled()]  # callers that gave up

    async def _run_batch(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        images = np.concatenate([job.images for job in jobs])
        loop = asyncio.get_running_loop()
        try:
            probabilities, seconds = await loop.run_in_executor(
                self._executor, self._forward, images
            )
        except Exception as exc:
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        self.metrics.forward_batch_images.observe(len(images))
        self.metrics.forward_seconds.observe(seconds)
        start = 0
        for job in jobs:
            end = start + len(job.images)
            if not job.future.done():
                job.future.set_result(BatchResult(probabilities[start:end], seconds * 1000.0))
            start = end

    def _forward(self, images: np.ndarray) -> tuple[np.ndarray, float]:
        """Runs on the forward thread: the batch through the Predictor, timed."""
        batch = torch.from_numpy(images).unsqueeze(1)
        started = time.perf_counter()
        probabilities = self.predictor.probabilities(batch)
        return probabilities.numpy(), time.perf_counter() - started
