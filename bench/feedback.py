"""The feedback loop end to end: corrections from writers unlike MNIST make better weights.

    .venv/bin/python -m bench.feedback --data-dir ../shared/data/mnist

1. The population: the --renderings renderings of bench/renderings.py that the committed weights
   read worst, measured on --probe digits of the training set's last 5,000 (never the test set).
2. --corrections digits of the training set's first 55,000, each rendered as one of those
   (seeded), go to a running server (`python -m app`, a SQLite database in the work directory):
   POST /predict, then POST /feedback with the right digit and what /predict said, as a person
   correcting the page would.
3. `python -m training --feedback` fine-tunes the served weights (--init-weights) for --epochs at
   --lr on the first 55,000 training digits and the corrections; `s4digits promote` judges the
   candidate; POST /admin/reload serves it.
4. Before and after, through the server's /predict: the population's unseen digits (--eval
   digits of the last 5,000, which the fine-tuning never sees, rendered the same way) and the
   MNIST test set. Target: the population's error falls by at least a third, MNIST moves by at
   most 0.05 points.
"""

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np

from app.artifacts.weights import card_path_for
from bench.renderings import RENDERINGS
from bench.robustness import load_predictor, prepare_row, read_row
from bench.servers import running_server
from training.mnist import load_mnist, resolve_data_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
COMMITTED = REPO_ROOT / "weights" / "s4net.safetensors"
FINE_TUNE_DIGITS = 55_000  # the rest of the training set is where the population is judged
REQUEST_IMAGES = 64
CONNECTIONS = 8
TOKEN = "bench-feedback"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.feedback", description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, help="MNIST (else $S4_DATA_DIR)")
    p.add_argument("--renderings", type=int, default=3, help="how many of the worst make it up")
    p.add_argument("--probe", type=int, default=1000, help="digits to find the worst renderings")
    p.add_argument("--corrections", type=int, default=2000)
    p.add_argument("--eval", type=int, default=2000, help="the population's unseen digits")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", type=Path, help="kept afterwards (default: a temp dir)")
    return p.parse_args(argv)


def worst_renderings(images: np.ndarray, labels: np.ndarray, count: int, seed: int) -> list:
    """The renderings the committed weights read worst on these (training-set) digits."""
    predictor = load_predictor(COMMITTED)
    scored = []
    for rendering in RENDERINGS[1:]:  # not "MNIST as is"
        accuracy = read_row(predictor, prepare_row(rendering, images, seed), labels).accuracy
        scored.append((accuracy, rendering))
    scored.sort(key=lambda pair: pair[0])
    for accuracy, rendering in scored[:count]:
        print(f"  {rendering.name}: {accuracy:.2f}% with the committed weights")
    return [rendering for _, rendering in scored[:count]]


def population(images: np.ndarray, renderings: list, seed: int) -> list[bytes]:
    """Each digit as one of the population's renderings (seeded): the bytes a person uploads."""
    rng = np.random.default_rng(seed)
    return [renderings[rng.integers(len(renderings))].render(image, rng) for image in images]


async def read_all(url: str, pictures: list[bytes]) -> np.ndarray:
    """/predict's digit for each picture, REQUEST_IMAGES per request."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        gate = asyncio.Semaphore(CONNECTIONS)

        async def read(batch: list[bytes]) -> list[int]:
            files = [("file", (f"{i}.png", data)) for i, data in enumerate(batch)]
            async with gate:
                response = await client.post("/predict", files=files)
            response.raise_for_status()
            return [p["digit"] for p in response.json()["predictions"]]

        chunks = [pictures[i : i + REQUEST_IMAGES] for i in range(0, len(pictures), REQUEST_IMAGES)]
        return np.concatenate(await asyncio.gather(*(read(chunk) for chunk in chunks)))


async def correct_all(url: str, pictures: list[bytes], labels: np.ndarray) -> int:
    """Each picture through /predict, then /feedback with its right digit; how many misread."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        gate = asyncio.Semaphore(CONNECTIONS)

        async def correct(picture: bytes, label: int) -> bool:
            files = {"file": ("digit.png", picture)}
            async with gate:
                said = (await client.post("/predict", files=files)).json()["predictions"][0]
                data = {"digit": str(label), "predicted": str(said["digit"]), "source": "bench"}
                response = await client.post("/feedback", files=files, data=data)
            if response.status_code != 201:
                raise RuntimeError(f"/feedback answered {response.status_code}: {response.text}")
            return said["digit"] != label

        pairs = zip(pictures, labels, strict=True)
        misread = await asyncio.gather(*(correct(picture, int(label)) for picture, label in pairs))
        return sum(misread)


def accuracy(url: str, pictures: list[bytes], labels: np.ndarray) -> float:
    return 100.0 * float((asyncio.run(read_all(url, pictures)) == labels).mean())


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    data_dir = resolve_data_dir(args.data_dir, None)
    data = load_mnist(data_dir)
    train_x, train_y = data.train.images[:, 0].numpy(), data.train.labels.numpy()
    test_x, test_y = data.test.images[:, 0].numpy(), data.test.labels.numpy()
    rng = np.random.default_rng(args.seed)
    rest = FINE_TUNE_DIGITS + rng.permutation(len(train_y) - FINE_TUNE_DIGITS)
    probe, unseen = rest[: args.probe], rest[args.probe : args.probe + args.eval]
    corrected = rng.permutation(FINE_TUNE_DIGITS)[: args.corrections]

    print(f"the population: the {args.renderings} renderings the committed weights read worst")
    renderings = worst_renderings(train_x[probe], train_y[probe], args.renderings, args.seed)
    corrections = population(train_x[corrected], renderings, args.seed + 1)
    unseen_pictures = population(train_x[unseen], renderings, args.seed + 2)
    # As they are (PNGs): the same unseen digits, for tuning; the test set, for the record.
    plain_pictures = population(train_x[unseen], [RENDERINGS[0]], 0)
    mnist_pictures = population(test_x, [RENDERINGS[0]], 0)

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="s4-bench-feedback-"))
    served = work / "served" / "s4net.safetensors"
    served.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(COMMITTED, served)
    shutil.copy(card_path_for(COMMITTED), card_path_for(served))
    database = f"sqlite:///{work / 'feedback.db'}"
    env = {"S4_WEIGHTS": str(served), "S4_DATABASE_URL": database, "S4_ADMIN_TOKEN": TOKEN}
    env |= {"WEB_CONCURRENCY": "1", "S4_CPU_THREADS": "1"}
    with running_server(env, command=(sys.executable, "-m", "app")) as server:
        before = accuracy(server.url, unseen_pictures, train_y[unseen])
        plain_before = accuracy(server.url, plain_pictures, train_y[unseen])
        mnist_before = accuracy(server.url, mnist_pictures, test_y)
        misread = asyncio.run(correct_all(server.url, corrections, train_y[corrected]))
        stats = httpx.get(server.url + "/feedback/stats").json()
        print(
            f"{len(corrections)} corrections sent to /feedback, {stats['corrections']} stored (the "
            f"same picture and label is stored once); the served weights had misread {misread} "
            f"({100 * misread / len(corrections):.1f}%)"
        )
        train = [
            *(sys.executable, "-m", "training", "--data-dir", str(data_dir)),
            *("--out-dir", str(work / "candidate"), "--feedback", database),
            *("--init-weights", str(served), "--epochs", str(args.epochs), "--lr", str(args.lr)),
            *("--train-limit", str(FINE_TUNE_DIGITS), "--seed", str(args.seed)),
        ]
        print("$ python", " ".join(train[1:]), flush=True)
        subprocess.run(train, check=True, stderr=subprocess.DEVNULL)
        promote = [Path(sys.executable).with_name("s4digits"), "promote", work / "candidate"]
        promote += ["--weights", served, "--database-url", database, "--data-dir", data_dir]
        verdict = subprocess.run(promote, capture_output=True, text=True)
        print(verdict.stdout + verdict.stderr, end="")
        # Refused, the candidate is still measured (served for the measurement only).
        promoted = verdict.returncode == 0
        reload = {} if promoted else {"weights": str(work / "candidate" / "weights" / served.name)}
        auth = {"Authorization": f"Bearer {TOKEN}"}
        answer = httpx.post(server.url + "/admin/reload", json=reload, headers=auth, timeout=60)
        answer.raise_for_status()
        after = accuracy(server.url, unseen_pictures, train_y[unseen])
        plain_after = accuracy(server.url, plain_pictures, train_y[unseen])
        mnist_after = accuracy(server.url, mnist_pictures, test_y)

    error_cut = 1 - (100 - after) / (100 - before)
    names = ", ".join(r.name for r in renderings)
    after_is = "after (promoted)" if promoted else "the candidate (NOT promoted)"
    print(f"\n| through /predict | before | {after_is} |\n|---|---:|---:|")
    print(f"| population ({names}), {len(unseen)} unseen digits | {before:.2f}% | {after:.2f}% |")
    plain = f"{plain_before:.2f}% | {plain_after:.2f}%"
    print(f"| the same {len(unseen)} digits as MNIST has them | {plain} |")
    print(f"| MNIST test set, 10,000 | {mnist_before:.2f}% | {mnist_after:.2f}% |")
    print(
        f"\npopulation error {100 - before:.2f}% -> {100 - after:.2f}%: cut by {error_cut:.0%} "
        f"(target: a third); MNIST {mnist_after - mnist_before:+.2f} points (target: >= -0.05)"
    )
    print(f"work directory: {work}")
    return 0 if promoted else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
