"""Inference: the loaded model on its device, and the one place a forward pass happens."""

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.artifacts.architecture import INPUT_SHAPE
from app.artifacts.weights import LoadedWeights, WeightsError, load_weights
from app.runtime.device import DeviceUnavailable, resolve_device
from app.runtime.runtimes import Runtime, RuntimeUnavailable, make_runtime
from app.settings import Settings

# Why a load or reload fails: the settings ask for what this process cannot do, or the weights
# are unusable. Whichever, the served weights stay as they were and the message says why.
LOAD_ERRORS = (DeviceUnavailable, RuntimeUnavailable, WeightsError)


@dataclass(frozen=True)
class ServedModel:
    """Verified weights and the runtime built from them: swapped as one by a reload."""

    weights: LoadedWeights
    runtime: Runtime  # its probabilities are calibrated with the temperature
    temperature: float  # from the card


@dataclass(frozen=True)
class ForwardPass:
    probabilities: np.ndarray  # float32 [N, 10], one row per image, in order
    weights_sha256: str  # the weights that computed them


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """float32 probabilities [N, 10] -> the same softened (T > 1) or sharpened (T < 1) by T.

    softmax(log p / T), computed in float64: a probability of exactly 0 stays 0, the argmax is
    unchanged, and T = 1 returns the input itself. The runtimes apply the weights card's
    temperature inside their graphs; this is its definition, to fit it and to undo it.
    """
    if temperature == 1.0:
        return probabilities
    with np.errstate(divide="ignore"):
        scaled = np.log(probabilities.astype(np.float64)) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def card_temperature(card: dict) -> float:
    """The card's fitted temperature: 1.0 (none) when absent; WeightsError if not a number > 0."""
    temperature = card.get("temperature", 1.0)
    valid = isinstance(temperature, int | float) and not isinstance(temperature, bool)
    if not valid or not math.isfinite(temperature) or temperature <= 0:
        raise WeightsError(f"the card's temperature {temperature!r} is not a number > 0")
    return float(temperature)


class Predictor:
    """Owns the model for the service's lifetime.

    It never fakes readiness: until weights are loaded, verified and warmed up, ``ready`` is
    False and ``error`` says why, so /ready can tell operators what to fix. ``reload`` swaps in
    new weights while serving: a forward pass reads ``self.served`` once, so passes in flight
    finish on the old model (and report its SHA-256) and later ones use the new one; weights
    that fail verification never replace the ones being served.
    """

    def __init__(self, settings: Settings):
        self.weights_path = settings.weights
        self.requested_device = settings.device
        self.requested_runtime = settings.runtime
        self.cpu_threads = settings.cpu_threads
        # A forward pass holds up to batch_max_images, or one request's images if it has more.
        self.largest_batch = max(settings.batch_max_images, settings.max_images)
        self.device = "cpu"  # or "cuda"
        self.served: ServedModel | None = None
        self.error: str | None = "weights not loaded yet"
        self.load_seconds: float | None = None
        self._reload_lock = threading.Lock()  # one reload at a time; the last one wins

    @property
    def ready(self) -> bool:
        return self.served is not None

    @property
    def weights(self) -> LoadedWeights | None:
        served = self.served
        return served.weights if served else None

    @property
    def runtime_name(self) -> str | None:
        served = self.served
        return served.runtime.name if served else None

    def load(self) -> None:
        """Load, verify and warm up the weights; on failure keep serving health and say why."""
        started = time.perf_counter()
        try:
            device = self._resolve_device()
            served = self._load_verified(self.weights_path, device)
        except LOAD_ERRORS as exc:
            self.served, self.error = None, str(exc)
            return
        self.device, self.served, self.error = device, served, None
        self.load_seconds = time.perf_counter() - started

    def reload(self, weights_path: Path | None = None) -> LoadedWeights:
        """Load, verify and warm up ``weights_path`` (default: the current file), then serve it.

        Blocking (run it off the event loop). Raises one of LOAD_ERRORS, leaving the served weights
        as they were, if the new ones are unusable. A successful reload also makes a service
        that started without usable weights ready.
        """
        path = weights_path or self.weights_path
        with self._reload_lock:
            # Weights being served keep their device, so a pass in flight never sees it change;
            # a service with nothing to serve yet picks its device as it did at start-up.
            if self.served is None:
                self.device = self._resolve_device()
            served = self._load_verified(path, self.device)
            self.weights_path, self.served, self.error = path, served, None
        return served.weights

    def _resolve_device(self) -> str:
        try:
            return resolve_device(self.requested_device)
        except DeviceUnavailable as exc:  # say which setting asked for it
            raise DeviceUnavailable(f"S4_DEVICE={self.requested_device}: {exc}") from None

    def _load_verified(self, weights_path: Path, device: str) -> ServedModel:
        weights = load_weights(weights_path)
        dropout = float(weights.card.get("dropout", 0.0))
        temperature = card_temperature(weights.card)
        runtime = make_runtime(
            self.requested_runtime, weights.tensors, device, self.cpu_threads, dropout, temperature
        )
        # The first passes allocate and pick kernels; pay that before /ready says yes. The largest
        # batch also grows ONNX Runtime's memory arena to its final size (that of its largest
        # pass, app/runtime/runtimes.py), so a worker's memory is flat from the start instead of
        # creeping up as ever larger batches first occur.
        for batch_size in (1, self.largest_batch):
            runtime(np.zeros((batch_size, *INPUT_SHAPE[1:]), dtype=np.uint8))
        return ServedModel(weights, runtime, temperature)

    def forward(self, images: np.ndarray) -> ForwardPass:
        """uint8 images [N, 28, 28] (MNIST form: white ink on black) -> their probabilities,
        calibrated with the temperature in the weights card."""
        served = self.served  # one read: a reload may swap it while this pass runs
        if served is None:
            raise WeightsError(self.error or "weights not loaded")
        return ForwardPass(served.runtime(images), served.weights.sha256)
