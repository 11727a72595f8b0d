"""The contenders: ours and the anchors, each with its environment, command, request and notes.

Every anchor serves the committed S4 weights in the torch net (app.model.S4Net) through
bench/anchors/reading.py, so each does per image what ours does (app.pipeline's decode and
to_mnist_form, one forward pass per batch) and differs only in how it is served. Ours runs its
default ONNX Runtime graph (app.runtime.onnx_graph), as `python -m app` does. Batching servers
all get the same policy: at most MAX_BATCH images per forward pass, and at most `batch_wait_ms`
of waiting for a batch to fill where the server has such a wait.
"""

import json
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = REPO_ROOT / "weights" / "s4net.safetensors"
MAX_BATCH = 32  # the most connections the bench drives at once
CORES = 2  # the machine the figures are for; one worker process per core where a stack has them


@dataclass(frozen=True)
class Launch:
    """What a contender's command is built from: its environment's python and free ports."""

    python: Path
    port: int
    spare_ports: tuple[int, int]  # for servers that open more than one (gRPC, metrics, admin)
    workdir: Path  # a scratch folder of this run (model stores, configs)
    batch_wait_ms: int


@dataclass(frozen=True)
class Contender:
    name: str
    packages: tuple[str, ...]  # its environment's pinned packages; () runs in this checkout's
    command: Callable[[Launch], list[str]]
    request: str  # the body it gets: "multipart", "raw" (the PNG), "v2", "v2-batched", "v2-uint8"
    path: str  # the URL path posted to
    answer: str  # "binary" (v2 binary outputs), or the text every answer holds, with {digit}
    notes: str  # fairness: who batches, who parses what, how many workers
    env: dict[str, str] = field(default_factory=dict)  # "{workdir}" is the run's scratch folder
    setup: Callable[[Launch], None] | None = None  # before the clock starts (archives, configs)

    @property
    def slug(self) -> str:
        """Its name on the command line (--only) and in file names."""
        return self.name.lower().replace(" ", "-")


def module(launch: Launch, name: str, *args: object) -> list[str]:
    return [str(launch.python), "-m", f"bench.anchors.servers.{name}", *map(str, args)]


def torchserve_setup(launch: Launch) -> None:
    """The model archive (the handler, no weights: it reads the committed ones) and the config."""
    import subprocess

    store = launch.workdir / "model-store"
    store.mkdir(parents=True, exist_ok=True)
    archiver = launch.python.parent / "torch-model-archiver"
    handler = REPO_ROOT / "bench" / "anchors" / "servers" / "torchserve_handler.py"
    subprocess.run(
        [str(archiver), "--model-name", "s4net", "--version", "1.0", "--handler", str(handler),
         "--export-path", str(store), "--force"],
        check=True, capture_output=True,
    )  # fmt: skip
    management, metrics = launch.spare_ports
    model = {"marName": "s4net.mar", "minWorkers": CORES, "maxWorkers": CORES,
             "batchSize": MAX_BATCH, "maxBatchDelay": launch.batch_wait_ms,
             "responseTimeout": 120}  # fmt: skip
    (launch.workdir / "config.properties").write_text(
        f"inference_address=http://127.0.0.1:{launch.port}\n"
        f"management_address=http://127.0.0.1:{management}\n"
        f"metrics_address=http://127.0.0.1:{metrics}\n"
        f"model_store={store}\n"
        "load_models=s4net.mar\n"
        f"models={json.dumps({'s4net': {'1.0': model}})}\n"
        "disable_token_authorization=true\n"
        f"default_workers_per_model={CORES}\n"
    )


def torchserve_command(launch: Launch) -> list[str]:
    torchserve = launch.python.parent / "torchserve"
    config = launch.workdir / "config.properties"
    store = launch.workdir / "model-store"
    return [str(torchserve), "--start", "--foreground", "--ncs", "--disable-token-auth",
            "--ts-config", str(config), "--model-store", str(store)]  # fmt: skip


def bentoml_command(launch: Launch) -> list[str]:
    bentoml = launch.python.parent / "bentoml"
    return [str(bentoml), "serve", "bench.anchors.servers.bentoml_service:S4Digits",
            "--host", "127.0.0.1", "--port", str(launch.port)]  # fmt: skip


OURS = Contender(
    name="s4digits",
    packages=(),
    command=lambda launch: [sys.executable, "-m", "app"],
    request="multipart",
    path="/predict",
    answer='"digit":{digit}',
    notes="ours, `python -m app` defaults: 2 uvicorn workers; each parses the multipart body, "
    "decodes, prepares and batches concurrent requests into one ONNX Runtime pass (no wait).",
    env={"S4_WEIGHTS": str(WEIGHTS), "MALLOC_ARENA_MAX": "2"},
)
OURS_V2 = Contender(
    name="s4digits v2",
    packages=(),
    command=OURS.command,
    request="v2",
    path="/v2/models/s4net/infer",
    answer="binary",
    notes="ours again, on the Open Inference (v2) route with the body Triton gets (a BYTES "
    "tensor holding the PNG, binary outputs; KServe gets the PNG as a UINT8 tensor).",
    env=OURS.env,
)

ANCHORS = (
    Contender(
        name="TorchServe",
        # Its Python workers import yaml, which torchserve does not declare.
        packages=("torchserve==0.12.0", "torch-model-archiver==0.12.0", "pyyaml==6.0.3"),
        command=torchserve_command,
        setup=torchserve_setup,
        env={"LOG_LOCATION": "{workdir}/logs", "METRICS_LOCATION": "{workdir}/logs"},  # not ./logs
        request="raw",
        path="/predictions/s4net",
        answer='"digit": {digit}',
        notes="Java (Netty) front end; it batches (up to 32, waiting up to the batch wait) for "
        "2 Python workers, which decode, prepare and run each batch.",
    ),
    Contender(
        name="Mosec",
        packages=("mosec==0.9.8",),
        command=lambda launch: module(
            launch, "mosec_app", "--address", "127.0.0.1", "--port", launch.port
        ),
        request="raw",
        path="/inference",
        answer='"digit":{digit}',
        notes="Rust front end; 2 decode-stage processes (decode + prepare, one image each) feed "
        "1 inference process that it batches for (up to 32, waiting up to the batch wait).",
        env={"ANCHOR_WORKERS": str(CORES), "ANCHOR_MAX_BATCH": str(MAX_BATCH)},
    ),
    Contender(
        name="BentoML",
        packages=("bentoml==1.4.40",),
        command=bentoml_command,
        request="multipart",
        path="/predict",
        answer='"digit": {digit}',  # a list of one: its batchable APIs take and give lists
        notes="a batchable API (adaptive batching, up to 32) in 2 workers; BentoML parses the "
        "multipart body and hands each upload over as a file, the service decodes and prepares.",
        env={"ANCHOR_WORKERS": str(CORES), "ANCHOR_MAX_BATCH": str(MAX_BATCH)},
    ),
    Contender(
        name="KServe",
        packages=("kserve==0.21.0",),
        command=lambda launch: module(
            launch,
            "kserve_app",
            "--http_port",
            launch.port,
            "--grpc_port",
            launch.spare_ports[0],
            "--workers",
            1,
        ),
        # KServe reads a binary BYTES tensor as UTF-8 text, which a PNG is not ("please use
        # binary_data=True"): the file goes as a UINT8 tensor of its bytes instead.
        request="v2-uint8",
        path="/v2/models/s4net/infer",
        answer='"data":[{digit}]',  # it answers JSON although binary outputs are asked for
        notes="ModelServer on the v2 protocol, 1 worker (its default: with --workers 2 its "
        "uvicorn workers died and were restarted every ~5 s, never serving, on this machine); "
        "no batching (its batcher is the Kubernetes agent's, not the server's); it parses the "
        "v2 request (the PNG as a UINT8 tensor: it reads binary BYTES tensors as UTF-8 text) "
        "and answers JSON; the model decodes.",
    ),
    Contender(
        name="PyTriton",
        # PyTriton 0.7 requires numpy < 2, and the service's OpenCV numpy >= 2: the last numpy 1
        # and an OpenCV built for both (the same decoder and image calls).
        packages=("nvidia-pytriton==0.7.0", "numpy==1.26.4", "opencv-python-headless==4.10.0.84"),
        command=lambda launch: module(
            launch,
            "pytriton_app",
            launch.port,
            *launch.spare_ports,
            MAX_BATCH,
            launch.batch_wait_ms,
        ),
        # Triton's Python backend stub embeds libpython: the one of the interpreter the
        # environment is made from, not the system's (whose older 3.11 mismatches its stdlib).
        env={"LD_LIBRARY_PATH": sysconfig.get_config_var("LIBDIR") or ""},
        request="v2-batched",
        path="/v2/models/s4net/infer",
        answer="binary",
        notes="Triton (C++) parses the v2 request and batches dynamically (up to 32, waiting up "
        "to the batch wait) for 1 Python model process, which decodes and prepares the batch "
        "(with numpy 1.26 and OpenCV 4.10: PyTriton 0.7 requires numpy < 2).",
    ),
    Contender(
        name="LitServe",
        packages=("litserve==0.2.19", "python-multipart==0.0.34"),  # it parses forms with it
        command=lambda launch: module(
            launch, "litserve_app", launch.port, CORES, MAX_BATCH, launch.batch_wait_ms
        ),
        request="multipart",
        path="/predict",
        answer='"digit":{digit}',
        notes="a FastAPI front end parses the multipart body; 2 inference workers (its "
        "workers_per_device) batch (up to 32, waiting up to the batch wait), decode and prepare.",
    ),
)

CONTENDERS = (OURS, OURS_V2, *ANCHORS)
