# syntax=docker/dockerfile:1
# S4 Digits: the service and the committed weights, on CPU by default.
#
#   CPU:  docker build -t s4digits . && docker run -p 8000:8000 s4digits
#   GPU:  docker build --build-arg TORCH_INDEX_URL=https://pypi.org/simple -t s4digits:gpu .
#         docker run --gpus all -p 8000:8000 s4digits:gpu
#
# Install and start are the scripts and CMD below; `make image-check` runs the same ones outside
# Docker (fresh venv, CMD on loopback, a real /predict), so keep them here rather than inline.

# Both stages must share one base: the venv built in the first is copied into the second as is.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Where torch comes from. Default: PyTorch's CPU-only wheels (hundreds of MB, not several GB of
# CUDA libraries). The GPU build sets PyPI, whose Linux torch is the CUDA build: it bundles the
# CUDA runtime, so the base stays plain python and only the host's NVIDIA driver is needed.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY docker/install.sh docker/
COPY pyproject.toml README.md ./
COPY app/ app/
COPY training/ training/
# The pip cache lives in a BuildKit cache mount: rebuilds reuse downloads, no layer keeps them,
# and only /opt/venv leaves this stage.
RUN --mount=type=cache,target=/root/.cache/pip docker/install.sh /opt/venv

FROM ${PYTHON_IMAGE} AS runtime
# Numeric ids, so Kubernetes' runAsNonRoot can verify the user without resolving names.
RUN groupadd --system --gid 10001 s4digits \
    && useradd --system --uid 10001 --gid s4digits --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin s4digits
COPY --from=build /opt/venv /opt/venv
# The service resolves S4_WEIGHTS (default weights/s4net.safetensors) against this directory.
WORKDIR /srv/s4digits
# --chmod: readable by the service user whatever the modes in the checkout (umask 077, say).
COPY --chmod=0644 docker/healthcheck.py docker/
COPY --chmod=0644 weights/s4net.safetensors weights/s4net.json weights/
# Settings are environment variables (README "Settings" lists them); here only what the image
# changes: listen on every interface inside the container. Workers and CPU threads default to
# the CPUs the container may use (its cgroup quota, e.g. `docker run --cpus 2`): one worker per
# CPU, one thread each, which measured fastest for this tiny net (README "Performance").
# MALLOC_ARENA_MAX=2: glibc's default of one malloc arena per thread let a worker's memory creep
# up under sustained load (+35 MiB in 3 minutes, not levelling off); capped, it settles
# (README "Reliability").
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    S4_HOST=0.0.0.0
# Files stay root-owned and read-only to the service, which never writes.
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "docker/healthcheck.py"]
# Exec form: python is PID 1 and gets docker stop's SIGTERM, which uvicorn turns into a graceful
# shutdown (stop accepting, finish in-flight requests for up to S4_GRACEFUL_SHUTDOWN_S seconds).
CMD ["python", "-m", "app"]
