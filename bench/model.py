"""Forward-pass speed of the S4 net: images/s at batch 1, 64 and 1024, and share of peak FLOP/s.

    python bench/model.py [--device cpu|cuda] [--seconds 3] [--peak-gflops N]

The peak defaults to an estimate for this CPU (cores x GHz x FLOP/cycle from its vector units);
pass --peak-gflops to compare against a different figure. Weights do not change the speed, so a
randomly initialised net is timed.
"""

import argparse
import os
import platform
import time
from pathlib import Path

import torch
from torchinfo import summary

from app.inference import resolve_device
from app.model import INPUT_SHAPE, S4Net, normalize


def cpu_peak_gflops() -> float:
    """fp32 GFLOP/s estimate: cores x GHz x 2 (FMA) x vector lanes x 2 FMA units (assumed)."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    ghz = 2.5
    for line in flags.splitlines():
        if line.startswith("model name") and "GHz" in line:
            ghz = float(line.split("@")[-1].strip().removesuffix("GHz"))
            break
    cores = len(os.sched_getaffinity(0))
    return cores * ghz * 2 * lanes * 2


def time_batch(model, images, device, seconds: float) -> float:
    """Images per second for repeated forward passes of ``images`` (warmed up first)."""
    with torch.inference_mode():
        for _ in range(3):
            model(normalize(images.to(device)))
        if device.type == "cuda":
            torch.cuda.synchronize()
        passes, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(normalize(images.to(device))).cpu()
            passes += 1
        elapsed = time.perf_counter() - start
    return passes * images.shape[0] / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per batch size")
    parser.add_argument("--peak-gflops", type=float, help="peak fp32 GFLOP/s to compare against")
    args = parser.parse_args()

    device = resolve_device(args.device)
    # The service's layout (channels_last, see app/inference.py) next to torch's default NCHW.
    layouts = {
        "nchw": (S4Net().to(device).eval(), torch.contiguous_format),
        "nhwc": (S4Net().to(device).eval().to(memory_format=torch.channels_last),
                 torch.channels_last),
    }  # fmt: skip
    macs = summary(S4Net(), input_size=(1, *INPUT_SHAPE), verbose=0).total_mult_adds
    peak = args.peak_gflops or (cpu_peak_gflops() if device.type == "cpu" else None)
    print(
        f"device {device} ({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"{macs / 1e6:.2f} M multiply-adds per image; peak estimate "
        f"{f'{peak:.0f} GFLOP/s' if peak else 'n/a'}"
    )
    print(
        f"{'layout':>6} {'batch':>6} {'images/s':>10} {'ms/batch':>9} {'GFLOP/s':>8} {'of peak':>8}"
    )
    for name, (model, memory_format) in layouts.items():
        for batch in (1, 64, 1024):
            images = torch.randint(0, 256, (batch, *INPUT_SHAPE), dtype=torch.uint8)
            images = images.contiguous(memory_format=memory_format)
            rate = time_batch(model, images, device, args.seconds)
            gflops = rate * macs * 2 / 1e9
            share = f"{gflops / peak:.1%}" if peak else "n/a"
            print(f"{name:>6} {batch:>6} {rate:>10,.0f} {batch / rate * 1e3:>9.3f} "
                  f"{gflops:>8.1f} {share:>8}")  # fmt: skip


if __name__ == "__main__":
    main()
