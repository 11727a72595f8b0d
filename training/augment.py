"""Random augmentation for a whole batch at once, on the batch's device.

Each image gets its own random draw, but every step is one tensor op over the batch: no per-image
Python, no DataLoader workers, and the same code runs on CPU and CUDA. In order:

1. stroke thickness: blend towards a 3x3 max-pool (thicker, a marker) or min-pool (thinner, a pen);
2. one grid_sample for all geometry: rotation, zoom, aspect (anisotropic scale), shear, shift,
   a small perspective tilt and an elastic distortion (a coarse random displacement field,
   smoothly upsampled), composed into a single sampling grid;
3. blur (a Gaussian) or low resolution (area-downsampled to 8-14 px, then back up), then the
   ink stretched back to full strength, as the service's preprocessing does;
4. clutter: stray marks beside the digit (scattered specks, or a thin solid or dotted line).

Everything happens on [0, 1] pixels, before normalisation, so the zeros that grid_sample pads
with are true background rather than a grey border. Each knob at 0 turns its step off; with all
of the new ones at 0 the result is the plain affine augmentation. The defaults were chosen on the
training holdout and its renderings (bench/robustness.py --split holdout), never the test set.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from app.model import MNIST_MEAN, MNIST_STD, normalize

ELASTIC_GRID = 4  # the displacement field's coarse resolution, before upsampling to 28x28
LOW_RES_SIZES = (8, 10, 12, 14)  # side lengths a low-resolution round trip goes through


@dataclass(frozen=True)
class AugmentConfig:
    degrees: float = 15.0  # rotation drawn uniformly from [-degrees, +degrees]
    shift: float = 2.0  # translation in pixels, uniform in [-shift, +shift] per axis
    scale: float = 0.15  # zoom factor uniform in [1 - scale, 1 + scale]
    aspect: float = 0.25  # width/height ratio log-uniform in [1/(1+aspect), 1+aspect]
    shear: float = 0.2  # horizontal shear factor uniform in [-shear, +shear]
    perspective: float = 0.1  # homography terms uniform in [-perspective, +perspective]
    elastic: float = 1.5  # elastic displacement, at most this many pixels
    thickness: float = 0.5  # probability of a thicker or thinner stroke
    blur: float = 0.15  # probability of a Gaussian blur (sigma 0.5-1.5 px)
    low_res: float = 0.15  # probability of a low-resolution round trip
    clutter: float = 0.3  # probability of stray marks: specks, or a solid or dotted line

    @property
    def enabled(self) -> bool:
        return any(value > 0 for value in vars(self).values())


def augment_batch(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """uint8 [B, 1, 28, 28] -> normalised float [B, 1, 28, 28], each image randomly altered.

    Random numbers come only from ``generator`` (which lives on the images' device), so a run
    is reproducible and its augmentation stream can be checkpointed and resumed.
    """
    if not config.enabled:
        return normalize(images)
    pixels = images.float() / 255.0
    if config.thickness > 0:
        pixels = change_thickness(pixels, config.thickness, generator)
    pixels = F.grid_sample(
        pixels,
        sampling_grid(pixels.shape, config, generator),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    if config.blur > 0 or config.low_res > 0:
        pixels = degrade(pixels, config, generator)
    if config.clutter > 0:
        pixels = add_clutter(pixels, config.clutter, generator)
    return (pixels - MNIST_MEAN) / MNIST_STD


def _uniform(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator):
    """Uniform in [-1, 1]."""
    return torch.rand(shape, generator=generator, device=like.device) * 2 - 1


def _chosen(batch: int, probability: float, like: torch.Tensor, generator: torch.Generator):
    """A [B, 1, 1, 1] boolean mask: True for a random ``probability`` share of the batch."""
    draw = torch.rand((batch, 1, 1, 1), generator=generator, device=like.device)
    return draw < probability


def change_thickness(
    pixels: torch.Tensor, probability: float, generator: torch.Generator
) -> torch.Tensor:
    """Blend a random share of the images part-way towards dilated (max-pool) or eroded strokes."""
    batch = pixels.shape[0]
    amount = _uniform((batch, 1, 1, 1), pixels, generator)  # > 0 thicker, < 0 thinner
    chosen = _chosen(batch, probability, pixels, generator)
    thicker = F.max_pool2d(pixels, 3, stride=1, padding=1)
    thinner = -F.max_pool2d(-pixels, 3, stride=1, padding=1)
    target = torch.where(amount > 0, thicker, thinner)
    changed = pixels + amount.abs() * (target - pixels)
    return torch.where(chosen, changed, pixels)


def sampling_grid(
    shape: torch.Size, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """[B, 28, 28, 2] grid_sample coordinates: output pixel -> where it is read from."""
    batch, _, height, width = shape
    device = generator.device
    u = torch.rand(batch, 6, generator=generator, device=device) * 2 - 1
    angle = u[:, 0] * math.radians(config.degrees)
    zoom = 1 + u[:, 1] * config.scale
    # The grid maps output to input coordinates, so dividing by a factor enlarges along that axis.
    aspect = torch.exp(u[:, 4] * math.log1p(config.aspect))
    zoom_x, zoom_y = zoom * aspect.sqrt(), zoom / aspect.sqrt()
    shear = u[:, 5] * config.shear
    shift_x = u[:, 2] * config.shift * 2 / width  # grid coordinates span [-1, 1]
    shift_y = u[:, 3] * config.shift * 2 / height
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Inverse of (rotate . shear . scale): output -> input.
    a = torch.stack([cos / zoom_x, -sin / zoom_x], dim=1)
    b = torch.stack([sin / zoom_y, cos / zoom_y], dim=1)
    a = a + shear[:, None] * b  # x_in += shear * y_in
    ys = torch.linspace(-1 + 1 / height, 1 - 1 / height, height, device=device)
    xs = torch.linspace(-1 + 1 / width, 1 - 1 / width, width, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    x = grid_x.expand(batch, height, width)
    y = grid_y.expand(batch, height, width)
    if config.perspective > 0:
        tilt = _uniform((batch, 2), grid_x, generator) * config.perspective
        denominator = 1 + tilt[:, 0, None, None] * x + tilt[:, 1, None, None] * y
        x, y = x / denominator, y / denominator
    x_in = a[:, 0, None, None] * x + a[:, 1, None, None] * y + shift_x[:, None, None]
    y_in = b[:, 0, None, None] * x + b[:, 1, None, None] * y + shift_y[:, None, None]
    grid = torch.stack([x_in, y_in], dim=3)
    if config.elastic > 0:
        coarse = _uniform((batch, 2, ELASTIC_GRID, ELASTIC_GRID), grid_x, generator)
        field = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
        grid = grid + field.permute(0, 2, 3, 1) * (config.elastic * 2 / width)
    return grid


def gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    radius = max(1, math.ceil(2 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    return weights / weights.sum()


def blur(pixels: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur, zero-padded (the background is zero)."""
    kernel = gaussian_kernel(sigma, pixels.device)
    radius = len(kernel) // 2
    pixels = F.conv2d(pixels, kernel.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(pixels, kernel.view(1, 1, -1, 1), padding=(radius, 0))


def degrade(pixels: torch.Tensor, config: AugmentConfig, generator: torch.Generator):
    """Blur a random share of the batch and bring another share through a low resolution.

    One blur strength and one low resolution per batch (drawn from the generator), each applied
    to its own random images; the ink is then stretched back to full strength.
    """
    batch, _, height, width = pixels.shape
    draw = torch.rand(3, generator=generator, device=pixels.device).tolist()
    out = pixels
    if config.blur > 0:
        blurred = blur(pixels, 0.5 + draw[0])
        out = torch.where(_chosen(batch, config.blur, pixels, generator), blurred, out)
    if config.low_res > 0:
        side = LOW_RES_SIZES[min(int(draw[1] * len(LOW_RES_SIZES)), len(LOW_RES_SIZES) - 1)]
        small = F.interpolate(pixels, size=(side, side), mode="area")
        mode = "bilinear" if draw[2] < 0.5 else "bicubic"
        restored = F.interpolate(small, size=(height, width), mode=mode, align_corners=False)
        out = torch.where(_chosen(batch, config.low_res, pixels, generator), restored, out)
    peak = out.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-3)
    return (out / peak).clamp(0.0, 1.0)


def add_clutter(pixels: torch.Tensor, probability: float, generator: torch.Generator):
    """Stray marks on a random share of the batch: half get specks (up to 3 % of the pixels),
    half a thin straight line through the frame, solid or dotted, of random brightness."""
    batch, _, height, width = pixels.shape
    device = pixels.device
    u = torch.rand(batch, 7, generator=generator, device=device)
    specks = (
        torch.rand(pixels.shape, generator=generator, device=device)
        < 0.03 * u[:, 0, None, None, None]
    )
    speck_marks = specks * (0.5 + 0.5 * u[:, 1, None, None, None])
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    angle = u[:, 2, None, None] * math.pi
    x0, y0 = u[:, 3, None, None] * width, u[:, 4, None, None] * height
    across = (xs - x0) * torch.sin(angle) - (ys - y0) * torch.cos(angle)
    along = (xs - x0) * torch.cos(angle) + (ys - y0) * torch.sin(angle)
    line = (1 - across.abs() / 0.8).clamp(min=0)
    dotted = u[:, 5, None, None] < 0.5
    line = torch.where(dotted, line * (torch.remainder(along, 3.0) < 1.0), line)
    line_marks = (line * (0.5 + 0.5 * u[:, 1, None, None]))[:, None]
    marks = torch.where(u[:, 6, None, None, None] < 0.5, speck_marks, line_marks)
    chosen = _chosen(batch, probability, pixels, generator)
    return torch.where(chosen, torch.maximum(pixels, marks), pixels)
