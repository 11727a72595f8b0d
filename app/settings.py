"""Service settings, read from the environment (prefix ``S4_``) by pydantic-settings."""

import json
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.runtime.device import nvidia_gpu_present, torch_installed

# Each worker is a process with its own model (~100 MiB resident on the CPU); past this many,
# scale out with more machines or replicas rather than filling one host with processes by default.
MAX_DEFAULT_WORKERS = 8


def cgroup_cpu_quota(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """This container's CPU quota in CPUs (e.g. 1.5), or None when it has none.

    cgroup v2 keeps it in cpu.max ("max 100000" or "150000 100000"); cgroup v1 in
    cpu/cpu.cfs_quota_us (-1: none) and cpu/cpu.cfs_period_us.
    """
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for v1_dir in ("cpu", "cpu,cpuacct"):
        try:
            quota_us = int((cgroup_root / v1_dir / "cpu.cfs_quota_us").read_text())
            period_us = int((cgroup_root / v1_dir / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota if any.

    In a container limited with `docker run --cpus 2` (or a Kubernetes CPU limit) the affinity
    mask still lists every core of the host; the cgroup quota (v1 or v2) does not.
    """
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota()
    if quota is None:
        return cpus
    return max(1, min(cpus, math.ceil(quota)))


def default_workers() -> int:
    """One uvicorn worker per available CPU (a GPU host: one, which owns the GPU).

    For a net this small, worker processes scale and CPU threads within one process do not:
    measured in the docs' Performance page (docs/performance.md).
    """
    if torch_installed() and nvidia_gpu_present():  # without importing torch (seconds)
        return 1
    return min(available_cpus(), MAX_DEFAULT_WORKERS)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="S4_", populate_by_name=True)

    weights: Path = Field(
        Path("weights/s4net.safetensors"),
        description="Weights file; its card is the .json beside it. Relative to the working dir.",
    )
    digit_check: Path = Field(
        Path("weights/digit-check.safetensors"),
        description="The digit check /read uses to judge candidate digits (app/numbers/check.py; "
        "`python -m training.digit_check` trains it). Relative to the working dir.",
    )
    # NoDecode: the validator below takes the comma-separated form people write by hand.
    served_versions: Annotated[list[str], NoDecode] = Field(
        [],
        description="Weight versions to serve side by side (the first 12 hex digits of each "
        "one's SHA-256), comma-separated, the first the primary: S4_WEIGHTS' own version, or "
        "versions/<version>/ beside it. Default: S4_WEIGHTS alone.",
    )
    canary: str = Field(
        "",
        description="`<version>:<percent>`: that share of the requests that name no version go "
        "to this served version (stable per X-Request-Id), the rest to the primary.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the model runs; auto picks CUDA when it is available."
    )
    runtime: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto",
        description="What runs the forward pass: `onnxruntime` (CPU only; far faster than "
        "PyTorch for one image) or `torch`; auto picks onnxruntime on the CPU, torch on a GPU.",
    )
    host: str = Field("127.0.0.1", description="Address `python -m app` listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port `python -m app` listens on.")
    grpc: bool = Field(
        True,
        description="Serve the Open Inference Protocol over gRPC too (KServe's "
        "GRPCInferenceService), on S4_GRPC_PORT, from every worker.",
    )
    grpc_port: int = Field(
        8001, ge=0, le=65535, description="Port the gRPC service listens on (Triton's default)."
    )
    graceful_shutdown_s: int = Field(
        8,
        ge=0,
        description="On SIGTERM, seconds to let in-flight requests finish before closing them; "
        "under the 10 s `docker stop` waits before it kills.",
    )

    workers: int = Field(
        default_factory=default_workers,
        ge=1,
        validation_alias="WEB_CONCURRENCY",
        description="uvicorn worker processes for `python -m app` (uvicorn's own variable). "
        f"Default: one per available CPU, at most {MAX_DEFAULT_WORKERS}; one on a GPU host. "
        "Available CPUs respect a container's CPU quota (`docker run --cpus`, a Kubernetes "
        "CPU limit).",
    )
    cpu_threads: int = Field(
        default_factory=lambda data: max(1, available_cpus() // data["workers"]),
        ge=1,
        description="CPU threads for one forward pass, per worker. Default: the available CPUs "
        "shared out among the workers, so that they never oversubscribe the cores.",
    )
    max_image_bytes: int = Field(
        1_000_000,
        ge=1,
        description="Largest accepted upload per image, in bytes; larger ones get 413 as soon as "
        "the limit is crossed, without reading the rest.",
    )
    max_images: int = Field(
        64,
        ge=1,
        description="Most images accepted in one /predict or /read request (more get 413) or "
        "one v2 infer request (more get 400).",
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
        0.0,
        ge=0,
        description="How long a forward pass waits for more requests to join it. The default 0 "
        "batches the requests that queued up while the previous pass ran, so an idle service "
        "answers at once and a busy one still batches (measured: waiting only added latency).",
    )
    batch_queue_images: int = Field(
        2048,
        ge=1,
        description="Most images waiting for a forward pass; beyond that a request answers 503 "
        "with Retry-After at once instead of letting latency grow without bound. Also the most "
        "candidate digits one /read request may hold (more get 413).",
    )
    request_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest time one request may take, from its headers to its answer. A body "
        "still arriving then gets 408 and the connection is closed (slow or stalled clients); "
        "a request still waiting for the model gets 503 with Retry-After.",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Enables POST /admin/reload for callers that send it as a bearer token; "
        "unset or empty, the admin endpoints do not exist (404).",
    )
    opentelemetry: bool = Field(
        False,
        description="FastAPI's own OpenTelemetry spans, metrics and logs for each request, sent "
        "to the tracer and meter providers the process sets up (e.g. opentelemetry-instrument). "
        "Off by default: /metrics and the JSON request log cover every request, and the check "
        "for providers costs every request CPU.",
    )
    # NoDecode: pydantic-settings would parse the value as JSON only; the validator also takes
    # the comma-separated form people write by hand.
    cors_origins: Annotated[list[str], NoDecode] = Field(
        [],
        description="Origins other web pages may call the API from (CORS), comma-separated or a "
        "JSON list; empty (the default) means no CORS: browsers allow same-origin calls only.",
    )

    # POST /feedback and the corrections' database (app/feedback/).
    feedback: bool = Field(
        True, description="POST /feedback and GET /feedback/stats; `off` removes them (404)."
    )
    database_url: str = Field(
        "sqlite:///data/feedback.db",
        description="Where corrections are kept: a SQLite file (relative to the working dir; one "
        "host) or postgresql+psycopg://USER:PASSWORD@HOST/DB (several replicas).",
    )
    feedback_token: SecretStr | None = Field(
        None, description="If set, POST /feedback needs it as a bearer token."
    )
    feedback_keep_originals: bool = Field(
        False, description="Also keep each correction's original picture, not only its 28x28 digit."
    )
    feedback_retention_days: int | None = Field(
        None, ge=1, description="Delete corrections older than this many days (hourly check)."
    )

    @field_validator("cors_origins", "served_versions", mode="before")
    @classmethod
    def split_origins(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if value.lstrip().startswith("["):
            return json.loads(value)
        return [origin.strip() for origin in value.split(",") if origin.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
