"""Batch -> forward -> unbatch: concurrent requests share one forward pass on one thread."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from app.pipeline.errors import ModelNotReady, Overloaded
from app.pipeline.prepare import PreparedImage

if TYPE_CHECKING:  # the pipeline itself needs neither torch nor prometheus
    from app.inference import Predictor
    from app.metrics import Metrics


@dataclass(frozen=True)
class BatchResult:
    probabilities: np.ndarray  # float32 [n, 10], one row per submitted image, in order
    weights_sha256: str  # the weights that computed them (a reload may swap them mid-flight)
    inference_ms: float  # how long the forward pass holding these images took on the device


def batch(submissions: Sequence[Sequence[PreparedImage]]) -> np.ndarray:
    """The pixels of every submission's images, in order: uint8 [N, 28, 28]."""
    return np.stack([image.pixels for images in submissions for image in images])


def unbatch(probabilities: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Split one forward pass's rows back into consecutive runs of ``sizes`` rows."""
    ends = list(itertools.accumulate(sizes))
    return [probabilities[end - size : end] for size, end in zip(sizes, ends, strict=True)]


# Makes one request's prepared images; run on the forward thread (see MicroBatcher).
Prepare = Callable[[], Sequence[PreparedImage]]


@dataclass(frozen=True)
class _Job:
    prepare: Prepare
    size: int  # images the job holds, counted against the queue and batch limits
    future: asyncio.Future


class MicroBatcher:
    """Runs every forward pass on one thread, over whatever prepared images are waiting.

    Preparing images (decoding them, bringing them to MNIST form) can run on that thread too
    (``prepare_and_predict``): small images cost a few microseconds there, and on the event loop
    they would contend with the forward thread for the GIL. A request that arrives while the
    service is idle is taken at once (or after ``max_wait_s``);
    under load, the requests that queue up during one pass form the next, up to ``max_images``
    (one larger request runs alone). Past ``max_queued_images`` waiting images, ``predict``
    raises Overloaded at once instead of letting every request's latency grow.
    """

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
        # Jobs for the forward thread, in arrival order; None tells it to stop.
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        # Images put in _jobs and not yet taken: requests add, the forward thread takes away.
        self._queued_images = 0
        self._queued_lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="s4-forward", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    async def stop(self) -> None:
        """Finish the pass under way, then refuse what is still waiting (it is cancelled)."""
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)
        with contextlib.suppress(queue.Empty):
            while True:
                job = self._jobs.get_nowait()
                if job is not None:
                    job.future.cancel()

    async def drain(self, timeout_s: float) -> None:
        """Wait (up to ``timeout_s``) until no image waits to be taken into a forward pass."""
        deadline = time.monotonic() + timeout_s
        while self._queued_images and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def predict(self, images: Sequence[PreparedImage]) -> BatchResult:
        """The probabilities of ``images`` (one request's), read together with other requests'."""
        return await self.prepare_and_predict(len(images), lambda: images)

    async def prepare_and_predict(self, size: int, prepare: Prepare) -> BatchResult:
        """``predict(prepare())``, with ``prepare`` (``size`` images) run on the forward thread;
        what it raises (e.g. ImageRejected) fails this request alone."""
        with self._queued_lock:
            if self._queued_images + size > self.max_queued_images:
                raise Overloaded(
                    f"{self._queued_images} images are already waiting for the model "
                    f"(S4_BATCH_QUEUE_IMAGES={self.max_queued_images}); retry in a moment"
                )
            self._queued_images += size
        job = _Job(prepare, size, self._loop.create_future())
        self._jobs.put(job)
        return await job.future

    # The forward thread ------------------------------------------------------------------------

    def _serve(self) -> None:
        """Take a batch, run it, hand the answers back to the event loop; until told to stop."""
        left_over: _Job | None = None  # taken from the queue, but did not fit in the last batch
        while (first := left_over or self._jobs.get()) is not None:
            jobs, left_over = self._gather(first)
            jobs = [job for job in jobs if not job.future.cancelled()]  # callers that gave up
            if not jobs:
                continue
            outcomes = self._run(jobs)
            self._loop.call_soon_threadsafe(self._hand_back, jobs, outcomes)

    def _gather(self, first: _Job) -> tuple[list[_Job], _Job | None]:
        """``first`` and whole jobs behind it up to max_images, waiting up to max_wait_s for more
        unless the batch is full. Also returns the job it took that did not fit, if any."""
        jobs, images, left_over = [first], first.size, None
        deadline = time.monotonic() + self.max_wait_s
        while images < self.max_images:
            remaining = deadline - time.monotonic()
            try:
                job = (
                    self._jobs.get(timeout=remaining) if remaining > 0 else self._jobs.get_nowait()
                )
            except queue.Empty:
                break
            if job is None:  # stop: after this batch
                self._jobs.put(None)
                break
            if images + job.size > self.max_images:
                left_over = job
                break
            jobs.append(job)
            images += job.size
        with self._queued_lock:
            self._queued_images -= images
        return jobs, left_over

    def _run(self, jobs: list[_Job]) -> list[BatchResult | Exception]:
        """Prepare each job's images, then one forward pass over all that could be prepared."""
        prepared: list[Sequence[PreparedImage] | Exception] = []
        for job in jobs:
            try:
                prepared.append(job.prepare())
            except Exception as exc:  # this request's images are unreadable: fail it alone
                prepared.append(exc)
        readable = [images for images in prepared if not isinstance(images, Exception)]
        if not readable:
            return prepared  # type: ignore[return-value]  # every entry is an exception
        try:
            results = iter(self._forward(readable))
        except Exception as exc:  # the forward pass itself failed: every job in it fails
            return [exc] * len(jobs)
        return [
            outcome if isinstance(outcome, Exception) else next(results) for outcome in prepared
        ]

    def _forward(self, submissions: list[Sequence[PreparedImage]]) -> list[BatchResult]:
        """One forward pass over every submission's images; each gets its own rows."""
        pixels = batch(submissions)
        started = time.perf_counter()
        forward = self.predictor.forward(pixels)
        milliseconds = (time.perf_counter() - started) * 1000.0
        self.metrics.forward_batch_images.observe(len(pixels))
        self.metrics.forward_seconds.observe(milliseconds / 1000.0)
        rows = unbatch(forward.probabilities, [len(images) for images in submissions])
        return [BatchResult(part, forward.weights_sha256, milliseconds) for part in rows]

    def _hand_back(self, jobs: list[_Job], outcomes: list[BatchResult | Exception]) -> None:
        """On the event loop: each job's own answer, or its own error."""
        for job, outcome in zip(jobs, outcomes, strict=True):
            if job.future.done():  # cancelled while its pass ran
                continue
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)


def check_ready(predictor: Predictor) -> None:
    """Raise ModelNotReady, saying why, unless the predictor can run forward passes."""
    if not predictor.ready:
        raise ModelNotReady(f"the model is not ready: {predictor.error}")
