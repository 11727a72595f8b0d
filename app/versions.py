"""Several weight versions served side by side, and the canary share between them.

A version is the first 12 hex digits of its weights' SHA-256 (the protocol's model_version). The
weights directory is a model repository: S4_WEIGHTS (``weights/s4net.safetensors`` and its card)
is the default version, and others live beside it as ``versions/<version>/s4net.safetensors``
(+ ``s4net.json``). S4_SERVED_VERSIONS names the versions to load (default: only S4_WEIGHTS'); the
first is the primary, which answers every request that names no version, except the share that
S4_CANARY (``<version>:<percent>``) sends to another served version: stable per X-Request-Id
when a request has one, random otherwise. Each version has its own Predictor and MicroBatcher
(its own forward thread); HTTP and gRPC reach them through ``route``.
"""

import asyncio
import hashlib
import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from app.artifacts.weights import sha256_hex
from app.inference import LOAD_ERRORS, Predictor
from app.metrics import Metrics
from app.pipeline.batcher import MicroBatcher
from app.protocols.open_inference import (
    MODEL_NAME,
    VERSION_HEX_DIGITS,
    check_model,
    model_version,
)
from app.settings import Settings

LOG = logging.getLogger("s4.versions")
VERSIONS_DIR = "versions"
DRAIN_TIMEOUT_S = 5.0


class VersionRefused(Exception):
    """A version cannot be loaded, unloaded or made the canary; the message says why."""


@dataclass(frozen=True)
class Served:
    predictor: Predictor
    batcher: MicroBatcher

    @property
    def version(self) -> str | None:
        weights = self.predictor.weights
        return model_version(weights.sha256) if weights else None


@dataclass(frozen=True)
class Canary:
    version: str
    percent: float


def parse_canary(value: str | None) -> Canary | None:
    """``<version>:<percent>`` (percent from 0 to 100), or None for an empty value."""
    if not value:
        return None
    version, _, percent = value.partition(":")
    try:
        share = float(percent)
    except ValueError:
        share = -1.0
    if not version or not 0 <= share <= 100:
        raise VersionRefused(
            f"the canary {value!r} must be <version>:<percent>, the percent from 0 to 100"
        )
    return Canary(version, share)


def canary_share(request_id: str | None) -> float:
    """Where a request falls in [0, 100): the same for the same X-Request-Id, else random."""
    if request_id is None:
        return random.random() * 100.0
    digest = hashlib.sha256(request_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


class ModelVersions:
    """The served versions, the primary first; loads and unloads while serving."""

    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self.default_path = settings.weights
        self.repository = settings.weights.parent
        self.slots: list[Served] = []
        self.refused: dict[str, str] = {}  # version -> why it is not served
        self.canary: Canary | None = None
        self.load_seconds: float | None = None
        self._lock = threading.Lock()  # one load at a time

    def path_for(self, version: str) -> Path:
        """The weights file of ``version``: S4_WEIGHTS when its bytes are that version."""
        if self._default_version() == version:
            return self.default_path
        if len(version) != VERSION_HEX_DIGITS or not all(c in "0123456789abcdef" for c in version):
            raise VersionRefused(
                f"version {version!r} is not {VERSION_HEX_DIGITS} lowercase hex digits (the "
                "start of the weights' SHA-256)"
            )
        return self.repository / VERSIONS_DIR / version / self.default_path.name

    def _default_version(self) -> str | None:
        try:
            return model_version(sha256_hex(self.default_path.read_bytes()))
        except OSError:
            return None

    def new_slot(self, path: Path) -> Served:
        """A Predictor for ``path`` (not loaded yet) and its MicroBatcher (not started)."""
        predictor = Predictor(self.settings.model_copy(update={"weights": path}))
        settings = self.settings
        batcher = MicroBatcher(
            predictor,
            self.metrics,
            max_images=settings.batch_max_images,
            max_wait_s=settings.batch_max_wait_ms / 1000.0,
            max_queued_images=settings.batch_queue_images,
        )
        return Served(predictor, batcher)

    def load_verified(self, version: str) -> Served:
        """Blocking: load ``version`` and check its bytes are that version; VersionRefused with
        the reason otherwise (the refusal is kept in ``refused``)."""
        with self._lock:
            try:
                if version in self.by_version():
                    raise VersionRefused(f"version {version} is already served")
                slot = self.new_slot(self.path_for(version))
                slot.predictor.reload()
                if slot.version != version:
                    raise VersionRefused(
                        f"{slot.predictor.weights_path} holds version {slot.version}, not "
                        f"{version}: a version's directory is named by its weights' SHA-256"
                    )
            except LOAD_ERRORS as exc:
                self.refused[version] = str(exc)
                raise VersionRefused(str(exc)) from None
            except VersionRefused as exc:
                self.refused[version] = str(exc)
                raise
            self.refused.pop(version, None)
            return slot

    async def start(self) -> None:
        """Load S4_SERVED_VERSIONS (or S4_WEIGHTS alone) and set S4_CANARY. A version that
        fails is refused with the reason and the others serve; a failed primary leaves the
        service not ready, saying why, as a bad S4_WEIGHTS always has."""
        started = time.perf_counter()
        wanted = self.settings.served_versions
        if not wanted:
            primary = self.new_slot(self.default_path)
            await asyncio.to_thread(primary.predictor.load)
            await self.add(primary)
        for index, version in enumerate(wanted):
            try:
                await self.add(await asyncio.to_thread(self.load_verified, version))
            except VersionRefused as exc:
                LOG.warning("version %s is not served: %s", version, exc)
                if index == 0:  # no primary: not ready, and /ready says why
                    primary = self.new_slot(self.default_path)
                    primary.predictor.error = f"S4_SERVED_VERSIONS: version {version}: {exc}"
                    await self.add(primary)
        self.load_seconds = time.perf_counter() - started
        try:
            self.set_canary(parse_canary(self.settings.canary))
        except VersionRefused as exc:
            self.refused["canary"] = f"S4_CANARY: {exc}"
            LOG.warning("no canary: S4_CANARY: %s", exc)

    async def add(self, slot: Served) -> None:
        """Start serving a loaded slot (on the event loop: its batcher takes the running loop)."""
        slot.batcher.start()
        self.slots.append(slot)

    async def load(self, version: str) -> None:
        slot = await asyncio.to_thread(self.load_verified, version)
        await self.add(slot)

    async def unload(self, version: str) -> None:
        """Stop routing to ``version``, let the images it holds be read, then stop it."""
        slot = self.by_version().get(version)
        if slot is None:
            raise VersionRefused(f"version {version} is not served; served: {self.versions()}")
        if slot is self.slots[0]:
            raise VersionRefused(f"version {version} is the primary; it cannot be unloaded")
        if self.canary and self.canary.version == version:
            raise VersionRefused(f"version {version} is the canary; set another canary first")
        self.slots.remove(slot)
        await slot.batcher.drain(DRAIN_TIMEOUT_S)
        await slot.batcher.stop()

    def set_canary(self, canary: Canary | None) -> None:
        if canary is not None:
            served = self.by_version()
            if canary.version not in served:
                raise VersionRefused(
                    f"the canary version {canary.version} is not served; load it first "
                    f"(served: {self.versions()})"
                )
            if served[canary.version] is self.slots[0]:
                raise VersionRefused(f"version {canary.version} is the primary, not a canary")
        self.canary = canary

    async def stop(self) -> None:
        for slot in self.slots:
            await slot.batcher.stop()

    # Routing -----------------------------------------------------------------------------------

    def by_version(self) -> dict[str, Served]:
        """The slots that serve, by version; a slot whose weights failed is left out."""
        return {slot.version: slot for slot in self.slots if slot.version is not None}

    def versions(self) -> list[str]:
        return list(self.by_version())

    @property
    def primary(self) -> Served:
        return self.slots[0]

    def route(self, version: str | None, request_id: str | None) -> Served:
        """The slot to read a request: ``version`` if it names one (ProtocolError 404 if not
        served), else the canary's share of requests to the canary, the rest to the primary."""
        if version:
            served = self.by_version()
            check_model(MODEL_NAME, version, list(served))
            return served[version]
        canary = self.canary
        if canary is not None and canary_share(request_id) < canary.percent:
            slot = self.by_version().get(canary.version)
            if slot is not None:
                return slot
        return self.slots[0]

    def describe(self) -> dict:
        """What /admin/versions answers: the versions, the primary, the canary, the refusals."""
        return {
            "primary": self.primary.version,
            "versions": self.versions(),
            "canary": vars(self.canary) if self.canary else None,
            "refused": dict(self.refused),
        }
