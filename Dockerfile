# S4 Digits: the service and the committed weights, on CPU by default.
#
#   CPU:  docker build -t s4digits . && docker run -p 8000:8000 s4digits
#   GPU:  docker build --build-arg EXTRAS=gpu -t s4digits:gpu .
#         docker run --gpus all -p 8000:8000 s4digits:gpu
#
# Builds with BuildKit and with the legacy builder alike (no BuildKit-only syntax, no
# `# syntax` line that would fetch a frontend image from a registry).
#
# Install and start are the scripts and CMD below; `make image-check` runs the same ones outside
# Docker (fresh venv, CMD on loopback, a real /predict), so keep them here rather than inline.

# Both stages must share one base: the venv built in the first is copied into the second as is.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The package's extras. Default none: the CPU image serves through ONNX Runtime and holds no
# torch. `gpu` adds PyPI's torch, the CUDA build: it bundles the CUDA runtime, so the base stays
# plain python and only the host's NVIDIA driver is needed.
ARG EXTRAS=
# binutils: `strip`, with which docker/install.sh drops the extension modules' debug symbols.
# Only this stage has it; the runtime stage takes the venv alone.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY docker/install.sh docker/
COPY pyproject.toml README.md ./
COPY app/ app/
COPY training/ training/
# No pip cache: only /opt/venv leaves this stage.
ENV PIP_NO_CACHE_DIR=1
RUN docker/install.sh /opt/venv

FROM ${PYTHON_IMAGE} AS runtime
# Numeric ids, so Kubernetes' runAsNonRoot can verify the user without resolving names.
# HOME=/tmp: onnxruntime keeps a telemetry id under $HOME/.cache and warns in every worker's log
# when it cannot; /tmp is writable (give a --read-only container --tmpfs /tmp).
RUN groupadd --gid 10001 s4digits \
    && useradd --uid 10001 --gid s4digits --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin s4digits
# The service resolves S4_WEIGHTS (default weights/s4net.safetensors) against this directory.
WORKDIR /srv/s4digits
COPY docker/healthcheck.py docker/
COPY weights/s4net.safetensors weights/s4net.json weights/digit-check.safetensors weights/digit-check.json weights/
# Readable by the service user whatever the modes in the checkout (umask 077, say). data/ holds
# the corrections sent to POST /feedback (S4_DATABASE_URL's default, a SQLite file): a volume the
# service user owns, writable even with a read-only root file system. One container per volume;
# several replicas share a PostgreSQL instead (S4_DATABASE_URL=postgresql+psycopg://...).
RUN chmod -R a+rX /srv/s4digits \
    && mkdir /srv/s4digits/data && chown 10001:10001 /srv/s4digits/data
VOLUME ["/srv/s4digits/data"]
# Settings are environment variables (docs/settings.md lists them); here only what the image
# changes: listen on every interface inside the container. Workers and CPU threads default to
# the CPUs the container may use (its cgroup quota, e.g. `docker run --cpus 2`): one worker per
# CPU, one thread each, which measured fastest for this tiny net (docs/performance.md).
# MALLOC_ARENA_MAX=2: glibc's default of one malloc arena per thread let a worker's memory creep
# up under sustained load (+35 MiB in 3 minutes, not levelling off); capped, it settles
# (docs/reliability.md).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    S4_HOST=0.0.0.0
# Files stay root-owned and read-only to the service, which writes only to data/.
USER 10001:10001
EXPOSE 8000 8001
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "docker/healthcheck.py"]
# Exec form: python is PID 1 and gets docker stop's SIGTERM: the server refuses new connections,
# finishes what it accepted (for up to S4_GRACEFUL_SHUTDOWN_S seconds) and exits.
CMD ["python", "-m", "app"]
# Last, so that no instruction runs on top of the large layer: with the legacy builder on a
# storage driver that copies (vfs), each one would copy the whole image again.
COPY --from=build /opt/venv /opt/venv
