"""The training loop and its checkpoints.

airbench-style: the whole dataset lives on the training device as one uint8 tensor; each step
indexes a batch out of it and augments the batch in one call (training/augment.py). There is no
DataLoader and no per-image Python. On a 2-core CPU the net's own convolutions dominate a step, so
most of the gain over a plain eager loop (bench/train_speed.py) comes from running the net in
channels_last layout and from the larger batch that cheap whole-batch augmentation allows.

Reproducibility: every random number comes from two sources, torch's global generator (weight
init, dropout) and one torch.Generator on the device (shuffling, augmentation). Both are seeded
from the config and both are saved in the checkpoint written after every epoch, together with the
model, optimiser and scheduler, so a run killed at any moment and resumed with --resume finishes
with bitwise the same weights (on CPU) as a run that was never interrupted.

Checkpoints are a single safetensors file (tensors; no pickle) whose metadata holds the rest as
JSON, written atomically: a crash leaves the previous checkpoint intact, never half of a new one.
"""

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from tqdm import tqdm

from app.artifacts.weights import atomic_write_bytes
from app.model import S4Net, normalize
from app.runtime.device import DeviceUnavailable, resolve_device
from training.augment import augment_batch
from training.config import TrainConfig
from training.mnist import Mnist

EVAL_BATCH = 2000


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float  # percent
    predictions: torch.Tensor  # int64 [N], on the CPU
    labels: torch.Tensor  # int64 [N], on the CPU
    images: torch.Tensor  # uint8 [N, 1, 28, 28], on the CPU (for the misclassified grid)


@dataclass(frozen=True)
class TrainResult:
    model: S4Net
    history: list[dict[str, float]]  # one row per epoch
    final: Evaluation  # the final epoch's weights on the evaluation set, as reported
    evaluated_on: str  # "test" (official test set) or "holdout"
    device: torch.device


def split_data(
    data: Mnist, config: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """(train images, train labels, eval images, eval labels, what the eval set is).

    With --holdout the evaluation set is a seeded random slice of the training set and the test
    set is not touched at all, so hyper-parameters can be tuned without peeking at it.
    """
    train_x, train_y = data.train.images, data.train.labels
    if config.holdout:
        order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(config.seed))
        held, kept = order[: config.holdout], order[config.holdout :]
        eval_x, eval_y, name = train_x[held], train_y[held], "holdout"
        train_x, train_y = train_x[kept], train_y[kept]
    else:
        eval_x, eval_y, name = data.test.images, data.test.labels, "test"
    if config.train_limit is not None:
        train_x, train_y = train_x[: config.train_limit], train_y[: config.train_limit]
    if config.test_limit is not None:
        eval_x, eval_y = eval_x[: config.test_limit], eval_y[: config.test_limit]
    return train_x, train_y, eval_x, eval_y, name


@torch.inference_mode()
def evaluate(model: S4Net, images: torch.Tensor, labels: torch.Tensor) -> Evaluation:
    model.eval()
    total_loss, predictions = 0.0, []
    for start in range(0, len(labels), EVAL_BATCH):
        log_probs = model(normalize(images[start : start + EVAL_BATCH]))
        target = labels[start : start + EVAL_BATCH]
        total_loss += F.nll_loss(log_probs, target, reduction="sum").item()
        predictions.append(log_probs.argmax(dim=1))
    predicted = torch.cat(predictions).cpu()
    truth = labels.cpu()
    return Evaluation(
        loss=total_loss / len(labels),
        accuracy=100.0 * (predicted == truth).float().mean().item(),
        predictions=predicted,
        labels=truth,
        images=images.cpu(),
    )


def build_model(config: TrainConfig, device: torch.device) -> S4Net:
    """The net in channels_last (NHWC) layout, which oneDNN convolves without layout conversions
    and max-pools faster: a batch-256 training step took 97 ms instead of 124 ms on 2 CPU cores.
    """
    return S4Net(dropout=config.dropout).to(device, memory_format=torch.channels_last)


def build_optimizer(
    model: S4Net, config: TrainConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with Nesterov momentum under a one-cycle schedule, stepped once per batch."""
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.max_momentum,  # the scheduler sets it from here on
        nesterov=True,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.lr,
        total_steps=total_steps,
        base_momentum=config.base_momentum,
        max_momentum=config.max_momentum,
    )
    return optimizer, scheduler


def train(
    config: TrainConfig,
    data: Mnist,
    checkpoint_path: Path,
    resume: bool,
    feedback: tuple[torch.Tensor, torch.Tensor] | None = None,
    init_weights: dict[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train as ``config`` says, checkpointing after every epoch; return the final epoch's model.

    With ``resume`` and an existing checkpoint, continue from it (a finished run just re-evaluates).
    ``feedback`` (uint8 [N, 1, 28, 28] images, int64 [N] labels) joins the training images,
    ``config.feedback_oversample`` times over, augmented like the rest; ``init_weights`` (a state
    dict) is where the net starts instead of a random initialisation (fine-tuning).
    """
    try:
        device = torch.device(resolve_device(config.device))
    except DeviceUnavailable as exc:
        raise SystemExit(f"--device {config.device}: {exc}") from None
    train_x, train_y, eval_x, eval_y, evaluated_on = split_data(data, config)
    if feedback is not None:
        repeats = config.feedback_oversample
        train_x = torch.cat([train_x, feedback[0].repeat(repeats, 1, 1, 1)])
        train_y = torch.cat([train_y, feedback[1].repeat(repeats)])
    train_x, train_y = train_x.to(device), train_y.to(device)
    eval_x, eval_y = eval_x.to(device), eval_y.to(device)

    torch.manual_seed(config.seed)  # weight init and dropout
    generator = torch.Generator(device=device).manual_seed(config.seed)  # shuffle + augment
    model = build_model(config, device)
    if init_weights is not None:
        model.load_state_dict(init_weights)
    steps_per_epoch = len(train_y) // config.batch_size  # drop the ragged end: BN needs > 1 image
    if steps_per_epoch == 0:
        raise SystemExit(f"--batch-size {config.batch_size} exceeds {len(train_y)} train images")
    optimizer, scheduler = build_optimizer(model, config, config.epochs * steps_per_epoch)

    history: list[dict[str, float]] = []
    if resume and checkpoint_path.exists():
        history = load_checkpoint(checkpoint_path, config, model, optimizer, scheduler, generator)
        print(f"resumed from {checkpoint_path} after epoch {len(history)}/{config.epochs}")

    for epoch in range(len(history) + 1, config.epochs + 1):
        started = time.perf_counter()
        train_loss, train_acc = train_one_epoch(
            model, optimizer, scheduler, generator, train_x, train_y, config, epoch
        )
        evaluation = evaluate(model, eval_x, eval_y)
        seconds = time.perf_counter() - started
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "train_accuracy": train_acc,
                f"{evaluated_on}_loss": evaluation.loss,
                f"{evaluated_on}_accuracy": evaluation.accuracy,
                "seconds": seconds,
            }
        )
        print(
            f"epoch {epoch:2d}/{config.epochs}  train loss {train_loss:.4f}  "
            f"{evaluated_on} loss {evaluation.loss:.4f}  "
            f"{evaluated_on} accuracy {evaluation.accuracy:.2f}%  {seconds:.1f}s",
            flush=True,
        )
        save_checkpoint(checkpoint_path, config, model, optimizer, scheduler, generator, history)

    # Report what the saved weights do as app.artifacts.weights loads and serves them: in the
    # default layout.
    model = model.to(memory_format=torch.contiguous_format)
    final = evaluate(model, eval_x, eval_y)
    return TrainResult(model.cpu(), history, final, evaluated_on, device)


def train_one_epoch(
    model: S4Net,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
    epoch: int,
) -> tuple[float, float]:
    """One pass over a fresh shuffle; returns (mean train loss, train accuracy %)."""
    model.train()
    batch = config.batch_size
    steps = len(labels) // batch
    order = torch.randperm(len(labels), generator=generator, device=images.device)
    # Running sums stay on the device; reading them every step would stall a GPU.
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), dtype=torch.long, device=images.device)
    started = time.perf_counter()
    bar = tqdm(range(steps), desc=f"epoch {epoch}/{config.epochs}", leave=False, unit="batch")
    for step in bar:
        index = order[step * batch : (step + 1) * batch]
        inputs = augment_batch(images[index], config.augment, generator)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
        target = labels[index]
        log_probs = model(inputs)
        # cross_entropy re-applies log_softmax, a no-op on log-probabilities, and adds smoothing.
        loss = F.cross_entropy(log_probs, target, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach()
        correct += (log_probs.argmax(dim=1) == target).sum()
        if step % 20 == 19 or step == steps - 1:
            seen = (step + 1) * batch
            bar.set_postfix(
                loss=f"{loss_sum.item() / (step + 1):.4f}",
                acc=f"{100 * correct.item() / seen:.2f}%",
                img_s=f"{seen / (time.perf_counter() - started):.0f}",
            )
    bar.close()
    return loss_sum.item() / steps, 100.0 * correct.item() / (steps * batch)


def save_checkpoint(
    path: Path,
    config: TrainConfig,
    model: S4Net,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    history: list[dict[str, float]],
) -> None:
    tensors = {f"model.{name}": t.detach().cpu() for name, t in model.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    for param_index, state in optimizer_state["state"].items():
        for key, value in state.items():
            tensors[f"optimizer.{param_index}.{key}"] = value.detach().cpu()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.generator"] = generator.get_state()
    if generator.device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(generator.device)
    meta = {
        "config": asdict(config),
        "history": history,
        "optimizer_param_groups": optimizer_state["param_groups"],
        "scheduler": scheduler.state_dict(),
    }
    tensors = {name: t.contiguous() for name, t in tensors.items()}
    data = save_safetensors(tensors, metadata={"state": json.dumps(meta)})
    atomic_write_bytes(path, data)


def load_checkpoint(
    path: Path,
    config: TrainConfig,
    model: S4Net,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> list[dict[str, float]]:
    """Restore everything save_checkpoint wrote; returns the history (its length = epochs done)."""
    tensors = load_safetensors(path.read_bytes())
    with safe_open(path, framework="pt") as checkpoint:
        meta = json.loads(checkpoint.metadata()["state"])
    if meta["config"] != json.loads(json.dumps(asdict(config))):
        changed = sorted(k for k in meta["config"] if meta["config"][k] != asdict(config).get(k))
        raise SystemExit(
            f"{path} was written with different settings ({', '.join(changed)}); "
            "rerun with the same flags or without --resume"
        )
    model.load_state_dict(
        {name.removeprefix("model."): t for name, t in tensors.items() if name.startswith("model.")}
    )
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        if name.startswith("optimizer."):
            _, param_index, key = name.split(".", 2)
            state.setdefault(int(param_index), {})[key] = t
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer_param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.generator"])
    if "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], generator.device)
    return meta["history"]
