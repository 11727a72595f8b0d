"""Inference: the loaded model on its device, and the one place a forward pass happens."""

import threading
import time
from pathlib import Path

import torch

from app.model import INPUT_SHAPE, normalize
from app.settings import Settings
from app.weights import LoadedWeights, WeightsError, load_weights


def resolve_device(requested: str) -> torch.device:
    """``auto`` means CUDA when this process can see a GPU, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise WeightsError("S4_DEVICE=cuda, but torch sees no CUDA device")
    return torch.device(requested)


class Predictor:
    """Owns the model for the service's lifetime.

    It never fakes readiness: until weights are loaded, verified and warmed up, ``ready`` is
    False and ``error`` says why, so /ready can tell operators what to fix. ``reload`` swaps in
    new weights while serving: a forward pass reads ``self.weights`` once, so passes in flight
    finish on the old model and later ones use the new one; weights that fail verification
    never replace the ones being served.
    """

    def __init__(self, settings: Settings):
        self.weights_path = settings.weights
        self.requested_device = settings.device
        self.torch_threads = settings.torch_threads
        self.device = torch.device("cpu")
        self.weights: LoadedWeights | None = None
        self.error: str | None = "weights not loaded yet"
        self.load_seconds: float | None = None
        self._reload_lock = threading.Lock()  # one reload at a time; the last one wins

    @property
    def ready(self) -> bool:
        return self.weights is not None

    def load(self) -> None:
        """Load, verify and warm up the weights; on failure keep serving health and say why.

        The CPU thread count is set here, before the first forward pass, because torch's default
        (one thread per core in every worker process) oversubscribes the CPUs.
        """
        started = time.perf_counter()
        torch.set_num_threads(self.torch_threads)
        try:
            device = resolve_device(self.requested_device)
            weights = self._load_verified(self.weights_path, device)
        except WeightsError as exc:
            self.weights, self.error = None, str(exc)
            return
        self.device, self.weights, self.error = device, weights, None
        self.load_seconds = time.perf_counter() - started

    def reload(self, weights_path: Path | None = None) -> LoadedWeights:
        """Load, verify and warm up ``weights_path`` (default: the current file), then serve it.

        Blocking (run it off the event loop). Raises WeightsError, leaving the served weights
        as they were, if the new ones are unusable. A successful reload also makes a service
        that started without usable weights ready.
        """
        path = weights_path or self.weights_path
        with self._reload_lock:
            # Weights being served keep their device, so a pass in flight never sees it change;
            # a service with nothing to serve yet picks its device as it did at start-up.
            if self.weights is None:
                self.device = resolve_device(self.requested_device)
            weights = self._load_verified(path, self.device)
            self.weights_path, self.weights, self.error = path, weights, None
        return weights

    @staticmethod
    def _load_verified(weights_path: Path, device: torch.device) -> LoadedWeights:
        weights = load_weights(weights_path, device)
        Predictor._warm_up(weights)
        return weights

    @staticmethod
    def _warm_up(weights: LoadedWeights) -> None:
        # channels_last (NHWC) runs this net's narrow convolutions and max-pools about twice as
        # fast on the CPU as torch's default NCHW, with the same predictions (bench/model.py).
        weights.model.to(memory_format=torch.channels_last)
        # The first forward pass allocates and picks kernels; pay that before /ready says yes.
        blank = torch.zeros((8, *INPUT_SHAPE), dtype=torch.uint8)
        device = next(weights.model.parameters()).device
        with torch.inference_mode():
            Predictor._forward(weights.model, blank, device)

    @staticmethod
    def _forward(model: torch.nn.Module, images: torch.Tensor, device: torch.device):
        if device.type == "cuda":
            images = images.pin_memory()  # lets the copy to the GPU run asynchronously
        batch = normalize(images.to(device, non_blocking=True))
        return model(batch.contiguous(memory_format=torch.channels_last))

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [N, 1, 28, 28] (MNIST form: white ink on black) -> probabilities [N, 10]."""
        weights = self.weights  # one read: a reload may swap it while this pass runs
        if weights is None:
            raise WeightsError(self.error or "weights not loaded")
        return self._forward(weights.model, images, self.device).exp().cpu()
