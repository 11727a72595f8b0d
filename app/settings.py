"""Service settings, read from the environment (prefix ``S4_``) by pydantic-settings."""

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_torch_threads() -> int:
    """The CPUs this process may use, shared out among uvicorn's worker processes.

    uvicorn takes its worker count from WEB_CONCURRENCY when --workers is not given. Several
    workers that each start one torch thread per core oversubscribe the CPUs and collapse
    throughput, so each worker gets its share (at least one thread).
    """
    workers = max(1, int(os.environ.get("WEB_CONCURRENCY", "1")))
    return max(1, len(os.sched_getaffinity(0)) // workers)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="S4_")

    weights: Path = Field(
        Path("weights/s4net.safetensors"),
        description="Weights file; its card is the .json beside it. Relative to the working dir.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the model runs; auto picks CUDA when it is available."
    )
    host: str = Field("127.0.0.1", description="Address `python -m app` listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port `python -m app` listens on.")
    graceful_shutdown_s: int = Field(
        8,
        ge=0,
        description="On SIGTERM, seconds to let in-flight requests finish before closing them; "
        "under the 10 s `docker stop` waits before it kills.",
    )

    torch_threads: int = Field(
        default_factory=default_torch_threads,
        ge=1,
        description="CPU threads for one forward pass. Default: the CPUs this process may use "
        "divided by the number of uvicorn workers (WEB_CONCURRENCY).",
    )
    max_image_bytes: int = Field(
        1_000_000,
        ge=1,
        description="Largest accepted upload per image, in bytes; larger ones get 413 as soon as "
        "the limit is crossed, without reading the rest.",
    )
    max_images: int = Field(
        64, ge=1, description="Most images accepted in one /predict request; more get 413."
    )
    max_pixels: int = Field(
        16_000_000,
        ge=1,
        description="Most pixels (width x height) an image may decode to; larger ones get 413 "
        "before decoding (decompression bombs). 16 MP fits a 12 MP phone photo.",
    )
    batch_max_images: int = Field(
        256,
        ge=1,
        description="Most images in one forward pass when concurrent requests are batched "
        "together. A single request larger than this still runs, alone.",
    )
    batch_max_wait_ms: float = Field(
        2.0,
        ge=0,
        description="How long a forward pass waits for more requests to join it. An idle "
        "service answers after at most this delay; 0 batches only requests that queued up "
        "while the previous pass ran.",
    )
    batch_queue_images: int = Field(
        2048,
        ge=1,
        description="Most images waiting for a forward pass; beyond that /predict answers 503 "
        "with Retry-After at once instead of letting latency grow without bound.",
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
