"""The run's plots: training curves and the misclassified digits, as PNG bytes.

Figures are drawn with matplotlib's Agg canvas directly (no pyplot, no display, no global figure
state) and rendered to bytes, so the caller can write them with atomic_write_bytes: a killed run
never leaves a half-written PNG behind.
"""

import io
import math

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

MAX_MISCLASSIFIED = 100


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def training_curves_png(history: list[dict[str, float]], evaluated_on: str) -> bytes:
    """Loss and error rate (100 - accuracy), train and eval, per epoch; both on log scales.

    The error rate on a log axis keeps 2 % -> 0.5 % as readable as 10 % -> 2 %, which a linear
    accuracy axis squashes into a line at the top.
    """
    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, error_ax = figure.subplots(1, 2)
    loss_ax.plot(epochs, [r["train_loss"] for r in history], "o-", label="train (augmented)")
    loss_ax.plot(epochs, [r[f"{evaluated_on}_loss"] for r in history], "o-", label=evaluated_on)
    loss_ax.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    train_error = [100 - r["train_accuracy"] for r in history]
    eval_error = [100 - r[f"{evaluated_on}_accuracy"] for r in history]
    error_ax.plot(epochs, train_error, "o-", label="train (augmented)")
    error_ax.plot(epochs, eval_error, "o-", label=evaluated_on)
    error_ax.set(xlabel="epoch", ylabel="error (%)", yscale="log", title="error = 100 - accuracy")
    for ax in (loss_ax, error_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    return _png(figure)


def misclassified_png(
    images: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor
) -> bytes:
    """A grid of the misclassified digits (up to MAX_MISCLASSIFIED), titled true -> predicted."""
    wrong = (predictions != labels).nonzero().flatten()
    shown = wrong[:MAX_MISCLASSIFIED]
    columns = 10
    rows = max(1, math.ceil(len(shown) / columns))
    figure = Figure(figsize=(columns * 1.1, rows * 1.3 + 0.6), layout="constrained")
    figure.suptitle(f"{len(wrong)} misclassified of {len(labels)} (true -> predicted)")
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for ax in axes:
        ax.axis("off")
    for ax, index in zip(axes, shown.tolist(), strict=False):
        ax.imshow(images[index, 0].numpy(), cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(f"{labels[index]} -> {predictions[index]}", fontsize=9, color="firebrick")
    return _png(figure)
