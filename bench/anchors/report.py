"""The table: each contender's medians over the rounds, one Markdown row each, and the notes."""

from statistics import median

from bench.anchors.contenders import Contender
from bench.anchors.runner import Sample


def summarize(samples: list[Sample], levels: list[int]) -> dict[str, float]:
    """Medians over the rounds: req/s at each level, p50 and p99 at the highest, CPU ms per
    request at the lowest and the highest, idle MiB, ready s, and the sum of bad answers."""
    low, high = levels[0], levels[-1]
    row = {f"rps {level}": median(s.levels[level].rps for s in samples) for level in levels}
    row |= {
        "p50": median(s.levels[high].p50_ms for s in samples),
        "p99": median(s.levels[high].p99_ms for s in samples),
        "cpu low": median(s.levels[low].cpu_ms for s in samples),
        "cpu high": median(s.levels[high].cpu_ms for s in samples),
        "idle": median(s.idle_mib for s in samples),
        "ready": median(s.ready_s for s in samples),
        "bad": sum(level.bad for s in samples for level in s.levels.values()),
    }
    return row


def format_table(
    results: dict[str, list[Sample]], failures: dict[str, str], levels: list[int]
) -> str:
    """A Markdown table, one row per contender in the order given; failed ones say why."""
    low, high = levels[0], levels[-1]
    header = [
        "server",
        *(f"req/s c={level}" for level in levels),
        f"p50 ms c={high}",
        f"p99 ms c={high}",
        *(f"CPU ms/req c={level}" for level in dict.fromkeys([low, high])),
        "idle MiB",
        "ready s",
    ]
    rows = []
    for name in [*results, *(name for name in failures if name not in results)]:
        if not results.get(name):
            rows.append([name, f"failed: {first_line(failures.get(name, 'no sample'))}"])
            continue
        s = summarize(results[name], levels)
        cells = [
            name + (f" ({s['bad']:.0f} bad answers)" if s["bad"] else ""),
            *(f"{s[f'rps {level}']:,.0f}" for level in levels),
            f"{s['p50']:.1f}",
            f"{s['p99']:.1f}",
            f"{s['cpu low']:.2f}",
            *([f"{s['cpu high']:.2f}"] if high != low else []),
            f"{s['idle']:.0f}",
            f"{s['ready']:.1f}",
        ]
        rows.append(cells)
    full = [row for row in [header, *rows] if len(row) == len(header)]  # failures span columns
    widths = [max(len(row[i]) for row in full) for i in range(len(header))]
    widths[0] = max(widths[0], *(len(row[0]) for row in rows))
    lines = [format_row(header, widths), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [format_row(row, widths) for row in rows]
    return "\n".join(lines)


def format_row(cells: list[str], widths: list[int]) -> str:
    if len(cells) < len(widths):  # a failure: its message spans the figures' columns
        return f"| {cells[0]:<{widths[0]}} | {cells[1]} |"
    figures = zip(cells[1:], widths[1:], strict=True)
    aligned = [f"{cells[0]:<{widths[0]}}", *(f"{cell:>{width}}" for cell, width in figures)]
    return "| " + " | ".join(aligned) + " |"


def first_line(message: str, characters: int = 100) -> str:
    """The message's first line, cut to ``characters`` (the whole message follows the notes)."""
    line = message.strip().splitlines()[0] if message.strip() else "unknown"
    return line if len(line) <= characters else line[: characters - 3] + "..."


def fairness_notes(contenders: list[Contender], batch_wait_ms: int) -> str:
    """Who batches, who parses what, how many workers: one line per contender."""
    lines = [
        "Fairness notes: the same PNG and the same digit check for every server, one server at "
        "a time on the same cores as wrk; every anchor serves the committed S4 weights in the "
        "torch net (one torch thread per process) and prepares each upload with app.pipeline's "
        "decode and to_mnist_form, as ours does; ours runs its ONNX Runtime graph. Batching "
        f"servers batch up to 32 images and wait at most {batch_wait_ms} ms for a batch to fill. "
        "Memory is the resident set of the server's whole process tree (shared pages counted "
        "in each process).",
    ]
    lines += [f"- {contender.name}: {contender.notes}" for contender in contenders]
    return "\n".join(lines)
