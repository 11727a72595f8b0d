"""The weights format, shared by training (which writes it) and serving (which reads it).

Two files side by side: ``s4net.safetensors`` (the state dict; safetensors, never pickle) and
``s4net.json`` (the card: how the weights were made, how good they are, and the SHA-256 of the
weights file). The loader refuses weights whose bytes do not match the card, so a truncated or
tampered file can never be served by mistake.
"""

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors

from app.artifacts.architecture import tensor_problems

if TYPE_CHECKING:  # training's side only: serving never imports torch
    from app.model import S4Net


class WeightsError(Exception):
    """The weights (or their card) are missing or unusable; the message names file and problem."""


@dataclass(frozen=True)
class LoadedWeights:
    tensors: dict[str, np.ndarray]  # the state dict, checked to fit the S4 net
    path: Path
    sha256: str
    card: dict[str, Any]


def card_path_for(weights_path: Path) -> Path:
    return weights_path.with_suffix(".json")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over ``path``.

    A reader (or a crash) sees either the old file or the new one, never half of one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); these files are meant to be read by the service,
        # which may run as another user (the container's), so give them ordinary data-file modes.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def save_weights(model: "S4Net", weights_path: Path, card: dict[str, Any]) -> dict[str, Any]:
    """Write the weights and their card atomically; returns the card as written.

    The card gains ``weights_file``, ``weights_sha256`` and ``dropout``. The weights go first: a
    crash between the two writes leaves a card whose checksum no longer matches, which the loader
    reports instead of serving mismatched weights.
    """
    from safetensors.torch import save as save_safetensors

    state = {
        name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
    }
    # One metadata key only: safetensors writes several in a random order, which would make the
    # bytes (and so the SHA-256) of identical weights differ from one save to the next.
    data = save_safetensors(state, metadata={"format": "pt"})
    full_card = {
        **card,
        "weights_file": weights_path.name,
        "weights_sha256": sha256_hex(data),
        "dropout": model.dropout,
    }
    atomic_write_bytes(weights_path, data)
    card_bytes = (json.dumps(full_card, indent=2, sort_keys=False) + "\n").encode()
    atomic_write_bytes(card_path_for(weights_path), card_bytes)
    return full_card


def load_weights(weights_path: Path) -> LoadedWeights:
    """Load and verify weights + card, or raise WeightsError saying which file and what is wrong."""
    card_path = card_path_for(weights_path)
    try:
        data = weights_path.read_bytes()
    except FileNotFoundError:
        raise WeightsError(
            f"weights file {weights_path} does not exist; train with `python -m training` "
            "or point S4_WEIGHTS at a weights file"
        ) from None
    except OSError as exc:
        raise WeightsError(f"weights file {weights_path} cannot be read: {exc}") from None
    try:
        card = json.loads(card_path.read_text())
    except FileNotFoundError:
        raise WeightsError(f"weights card {card_path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise WeightsError(f"weights card {card_path} is not valid JSON: {exc}") from None
    if not isinstance(card, dict) or "weights_sha256" not in card:
        raise WeightsError(f"weights card {card_path} has no weights_sha256")

    digest = sha256_hex(data)
    if digest != card["weights_sha256"]:
        raise WeightsError(
            f"weights file {weights_path} has sha256 {digest}, but its card {card_path} says "
            f"{card['weights_sha256']}: the file is truncated, corrupted or was replaced"
        )
    try:
        state = load_safetensors(data)
    except SafetensorError as exc:
        raise WeightsError(
            f"weights file {weights_path} is not a valid safetensors file: {exc}"
        ) from None

    if problems := tensor_problems(state):
        raise WeightsError(
            f"weights file {weights_path} does not fit the S4 net: {'; '.join(problems)}"
        )
    return LoadedWeights(tensors=state, path=weights_path, sha256=digest, card=card)
