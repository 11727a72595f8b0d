"""Forward-pass speed of the S4 net: images/s at batch 1, 64 and 1024, and share of peak FLOP/s.

    python bench/forward_pass.py [--device cpu|cuda] [--threads N] [--seconds 3] [--peak-gflops N]

Each runtime the service can use (app/runtime/runtimes.py: ONNX Runtime, PyTorch in
channels_last) is timed from uint8 pixels to probabilities, as the service calls it, next to
plain PyTorch (NCHW, torch's default layout) for reference.

The peak defaults to an estimate for this CPU (cores x GHz x FLOP/cycle from its vector units);
pass --peak-gflops to compare against a different figure. Weights do not change the speed, so a
randomly initialised net is timed.
"""

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from torchinfo import summary

from app.artifacts.architecture import INPUT_SHAPE
from app.model import S4Net
from app.runtime.device import resolve_device
from app.runtime.runtimes import OnnxRuntime
from app.runtime.torch_runtime import TorchRuntime


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


def time_batch(runtime, images: np.ndarray, seconds: float) -> float:
    """Images per second for repeated forward passes of ``images`` (warmed up first)."""
    for _ in range(3):
        runtime(images)
    passes, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        runtime(images)  # returns numpy: a GPU pass has finished when it returns
        passes += 1
    return passes * images.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per batch size")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--peak-gflops", type=float, help="peak fp32 GFLOP/s to compare against")
    args = parser.parse_args()

    device = torch.device(resolve_device(args.device))
    torch.set_num_threads(args.threads)
    net = S4Net().to(device).eval()
    runtimes = {
        "torch nchw": TorchRuntime(net, device, torch.contiguous_format),  # torch's default
        "torch": TorchRuntime(net, device),
    }
    if device.type == "cpu":
        state = {name: t.detach().cpu().numpy() for name, t in net.state_dict().items()}
        runtimes["onnxruntime"] = OnnxRuntime(state, args.threads)
    macs = summary(S4Net(), input_size=(1, *INPUT_SHAPE), verbose=0).total_mult_adds
    peak = args.peak_gflops or (cpu_peak_gflops() if device.type == "cpu" else None)
    print(
        f"device {device} ({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} threads"
    )
    print(
        f"{macs / 1e6:.2f} M multiply-adds per image; peak estimate "
        f"{f'{peak:.0f} GFLOP/s' if peak else 'n/a'}"
    )
    print(f"{'runtime':>11} {'batch':>6} {'images/s':>10} {'ms/batch':>9} {'GFLOP/s':>8} "
          f"{'of peak':>8}")  # fmt: skip
    for name, runtime in runtimes.items():
        for batch in (1, 64, 1024):
            images = np.random.default_rng(0).integers(
                0, 256, (batch, *INPUT_SHAPE[1:]), dtype=np.uint8
            )
            rate = time_batch(runtime, images, args.seconds)
            gflops = rate * macs * 2 / 1e9
            share = f"{gflops / peak:.1%}" if peak else "n/a"
            print(f"{name:>11} {batch:>6} {rate:>10,.0f} {batch / rate * 1e3:>9.3f} "
                  f"{gflops:>8.1f} {share:>8}")  # fmt: skip


if __name__ == "__main__":
    main()
