"""`python -m training.digit_check`: train the digit check (app/numbers/check.py) for /read.

Numbers are composed from the MNIST training digits before the holdout (training/numbers.py:
both styles, every gap, 1-6 digits), segmented exactly as /read segments them, and every candidate
digit is labelled by the truth the composer kept: whole when at least WHOLE_SHARE of its ink is one
digit's and it holds at least WHOLE_SHARE of that digit's ink. A small CNN learns to tell whole
digits from halves, pairs and digits with a stroke added, from the candidate's view in its context.
The holdout's numbers judge it (its accuracy and log-loss go on the card); the test set is never
used. Writes weights/digit-check.safetensors and its card weights/digit-check.json (atomically).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as training/__main__.py, before torch

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from app.artifacts.weights import atomic_write_bytes, sha256_hex
from app.numbers.check import SIDE, WINDOW, DigitCheck
from app.numbers.segmentation import TooManyMarks, segment
from app.pipeline.errors import BlankImage
from app.pipeline.mnist_form import ink_levels
from training.numbers import COMPOSERS, GAPS, HOLDOUT, STRAY_MARK_SHARE, STRAY_OWNER, Sample

# A candidate is one whole digit when this share of its ink is one digit's, and it holds this
# share of that digit's ink.
WHOLE_SHARE = 0.85


LENGTHS = (1, 2, 3, 4, 5, 6)


def labelled_candidates(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """(views uint8 [N, 2, SIDE, SIDE], whole bool [N]) of every candidate /read would consider."""
    try:
        found = segment(sample.picture, None, keep_context=True)
    except (TooManyMarks, BlankImage):
        found = None
    if found is None or found.levels.shape != sample.picture.shape:  # (scaled: not labelled)
        return np.zeros((0, 2, SIDE, SIDE), np.uint8), np.zeros(0, bool)
    inked = ink_levels(sample.picture) > 0
    digits = len(sample.text)
    owned = np.bincount(sample.owners[inked], minlength=256)  # each digit's ink that shows
    whole = np.zeros(len(found.candidates), dtype=bool)
    for index, (left, top, ink) in enumerate(found.placed):
        area = sample.owners[top : top + ink.shape[0], left : left + ink.shape[1]]
        counts = np.bincount(area[ink > 0], minlength=256)
        counts[0] = 0  # faint edges no digit owns
        counts[digits + 1 : STRAY_OWNER] = 0
        best = int(counts[1 : digits + 1].argmax()) + 1
        share_of_candidate = counts[best] / max(1, counts.sum())
        share_of_digit = counts[best] / max(1, owned[best])
        whole[index] = min(share_of_candidate, share_of_digit) >= WHOLE_SHARE
    return found.views(range(len(found.candidates))), whole


def compose_and_label(job: tuple[str, int, int, int, str]) -> tuple[np.ndarray, np.ndarray]:
    """One worker's share: ``count`` numbers from the MNIST digits of ``split`` (see load)."""
    data_dir, count, seed, _, split = job
    images, labels = load(Path(data_dir), split)
    rng = np.random.default_rng(seed)
    views, whole = [], []
    gaps = list(GAPS)
    for _ in range(count):
        style = list(COMPOSERS)[rng.integers(len(COMPOSERS))]
        sample = COMPOSERS[style](
            images,
            labels,
            int(rng.choice(LENGTHS)),
            gaps[rng.integers(len(gaps))],
            rng,
            stray_mark=rng.random() < STRAY_MARK_SHARE,
        )
        v, w = labelled_candidates(sample)
        views.append(v)
        whole.append(w)
    return np.concatenate(views), np.concatenate(whole)


def load(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The training digits before the holdout ("train"), or the holdout ("holdout")."""
    from training.mnist import TRAIN_IMAGES, TRAIN_LABELS, read_idx

    images = read_idx(data_dir / TRAIN_IMAGES.name, TRAIN_IMAGES).numpy()
    labels = read_idx(data_dir / TRAIN_LABELS.name, TRAIN_LABELS).numpy()
    part = slice(None, -HOLDOUT) if split == "train" else slice(-HOLDOUT, None)
    return images[part], labels[part]


def dataset(data_dir: Path, count: int, seed: int, split: str, workers: int):
    """``count`` numbers' labelled candidates, composed by ``workers`` processes, each its share
    from its own seed (spawned, not forked: a fork of a process running threads can hang)."""
    jobs = [(str(data_dir), count // workers, seed * 1000 + k, k, split) for k in range(workers)]
    if workers == 1:
        parts = [compose_and_label(jobs[0])]
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(compose_and_label, jobs))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def build_net():
    import torch
    from torch import nn

    class CheckNet(nn.Module):
        """The check: three 3x3 convolutions (ReLU, 2x2 max pooling), two dense layers."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(2, 16, 3, padding=1)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
            self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
            self.dense1 = nn.Linear(32 * (SIDE // 8) ** 2, 64)
            self.dense2 = nn.Linear(64, 1)

        def forward(self, x):
            for conv in (self.conv1, self.conv2, self.conv3):
                x = torch.max_pool2d(torch.relu(conv(x)), 2)
            return self.dense2(torch.relu(self.dense1(x.flatten(1))))[:, 0]

    return CheckNet()


def train(views, whole, epochs: int, seed: int, log) -> dict[str, np.ndarray]:
    import torch

    torch.manual_seed(seed)
    net = build_net()
    x = torch.from_numpy(views)
    y = torch.from_numpy(whole.astype(np.float32))
    batch = 256
    steps = epochs * (len(x) // batch)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        started, total = time.perf_counter(), 0.0
        for step in range(len(x) // batch):
            pick = order[step * batch : (step + 1) * batch]
            images = x[pick].float() / 255.0
            if torch.rand(1, generator=generator).item() < 0.5:  # mirror: no left-right bias
                images = images.flip(3)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(images), y[pick])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
        log(f"epoch {epoch + 1}/{epochs}: loss {total / max(1, len(x) // batch):.4f}, "
            f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    return {name: t.detach().numpy().copy() for name, t in net.state_dict().items()}


def judge(tensors: dict[str, np.ndarray], views: np.ndarray, whole: np.ndarray) -> dict:
    """Accuracy and log-loss of the check on labelled candidates (the numpy forward, as served)."""
    log_whole = DigitCheck(tensors).log_whole(views)
    p = np.exp(log_whole)
    loss = -np.mean(np.where(whole, log_whole, np.log1p(-np.minimum(p, 1 - 1e-12))))
    return {
        "candidates": len(whole),
        "whole_share": round(float(whole.mean()), 4),
        "accuracy": round(float(np.mean((p >= 0.5) == whole)), 4),
        "log_loss": round(float(loss), 4),
    }


def main(argv: list[str] | None = None) -> None:
    from safetensors.numpy import save

    from training.mnist import resolve_data_dir

    p = argparse.ArgumentParser(prog="python -m training.digit_check", description=__doc__)
    p.add_argument("--data-dir", type=Path, help="MNIST .gz files (else $S4_DATA_DIR, else cache)")
    p.add_argument("--out-dir", type=Path, default=Path("."), help="where weights/ goes")
    p.add_argument("--numbers", type=int, default=8000, help="training numbers to compose")
    p.add_argument("--holdout-numbers", type=int, default=600, help="numbers that judge it")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--workers", type=int, default=2, help="processes composing numbers (each its own seed)"
    )
    args = p.parse_args(argv)
    data_dir = resolve_data_dir(args.data_dir)
    started = time.perf_counter()
    views, whole = dataset(data_dir, args.numbers, args.seed, "train", args.workers)
    held_views, held_whole = dataset(
        data_dir, args.holdout_numbers, args.seed + 1, "holdout", args.workers
    )
    print(f"{len(whole):,} training candidates ({whole.mean():.1%} whole), {len(held_whole):,} "
          f"holdout; composed in {time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    tensors = train(views, whole, args.epochs, args.seed, lambda line: print(line, flush=True))
    figures = judge(tensors, held_views, held_whole)
    print(f"holdout: {figures}")
    path = args.out_dir / "weights" / "digit-check.safetensors"
    data = save(tensors)
    atomic_write_bytes(path, data)
    card = {
        "model": "digit check: P(one whole digit) of a /read candidate in its context",
        "input": f"uint8 [N, 2, {SIDE}, {SIDE}]: all ink and the candidate's, {WINDOW} writing "
        "heights square",
        "parameters": int(sum(t.size for t in tensors.values())),
        "weights_file": path.name,
        "weights_sha256": sha256_hex(data),
        "trained_on": f"{args.numbers} numbers composed from MNIST training digits "
        f"(the last {HOLDOUT} held out)",
        "holdout": figures,
        "config": {
            "numbers": args.numbers,
            "epochs": args.epochs,
            "seed": args.seed,
            "workers": args.workers,  # each composes its share from its own seed
            "whole_share": WHOLE_SHARE,
        },
    }
    atomic_write_bytes(path.with_suffix(".json"), (json.dumps(card, indent=2) + "\n").encode())
    print(f"wrote {path} and its card")


if __name__ == "__main__":
    main()
