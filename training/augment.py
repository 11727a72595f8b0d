"""Random affine augmentation for a whole batch at once, on the batch's device.

One affine_grid + grid_sample call warps every image in the batch with its own small rotation,
scale and shift: no per-image Python, no DataLoader workers, and the same code runs on CPU and
CUDA. The warp happens on [0, 1] pixels, before normalisation, so the zeros that grid_sample
pads with are true background rather than a grey border.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from app.model import MNIST_MEAN, MNIST_STD, normalize


@dataclass(frozen=True)
class AugmentConfig:
    degrees: float = 10.0  # rotation drawn uniformly from [-degrees, +degrees]
    shift: float = 2.0  # translation in pixels, uniform in [-shift, +shift] per axis
    scale: float = 0.1  # zoom factor uniform in [1 - scale, 1 + scale]

    @property
    def enabled(self) -> bool:
        return self.degrees > 0 or self.shift > 0 or self.scale > 0


def augment_batch(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """uint8 [B, 1, 28, 28] -> normalised float [B, 1, 28, 28], each image randomly warped.

    Random numbers come only from ``generator`` (which lives on the images' device), so a run
    is reproducible and its augmentation stream can be checkpointed and resumed.
    """
    if not config.enabled:
        return normalize(images)
    batch, _, height, width = images.shape
    u = torch.rand(batch, 4, generator=generator, device=images.device) * 2 - 1
    angle = u[:, 0] * math.radians(config.degrees)
    # affine_grid maps output coordinates to input coordinates, so dividing by the zoom enlarges.
    zoom = 1 + u[:, 1] * config.scale
    shift_x = u[:, 2] * config.shift * 2 / width  # grid coordinates span [-1, 1]
    shift_y = u[:, 3] * config.shift * 2 / height
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], dim=1), torch.stack([sin, cos, shift_y], dim=1)], dim=1
    )
    pixels = images.float() / 255.0
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    warped = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (warped - MNIST_MEAN) / MNIST_STD
