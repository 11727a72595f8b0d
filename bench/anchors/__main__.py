"""``python -m bench.anchors``: ours and the anchors, side by side, on this machine.

    .venv/bin/python -m bench.anchors                          # all, 1 round, 10 s per level
    .venv/bin/python -m bench.anchors --seconds 5 --rounds 2   # shorter runs, interleaved rounds
    .venv/bin/python -m bench.anchors --only s4digits,mosec,pytriton

Each server is started alone, checked to answer the digit, driven by wrk (bench/serve.py's
run_wrk and bench/request.lua, which checks every answer) at each concurrency level after an
unmeasured warm-up, and stopped before the next starts; rounds alternate the order. The first
run makes each anchor's environment under .cache/anchors/ (minutes; later runs reuse them).
Prints one table of medians over the rounds, then the fairness notes.
"""

import argparse
import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from bench.anchors.contenders import CONTENDERS, Contender
from bench.anchors.environments import EnvironmentFailed, environment_python
from bench.anchors.report import fairness_notes, format_table
from bench.anchors.runner import Sample, ServerFailed, make_route, measure
from bench.serve import prepare_digit


def choose(only: str | None) -> list[Contender]:
    """The contenders named in ``only`` (their slugs, comma-separated), in the table's order."""
    if not only:
        return list(CONTENDERS)
    wanted = [name.strip().lower() for name in only.split(",") if name.strip()]
    known = {contender.slug: contender for contender in CONTENDERS}
    if unknown := [name for name in wanted if name not in known]:
        raise SystemExit(f"unknown --only {', '.join(unknown)}; choose from {', '.join(known)}")
    return [contender for contender in CONTENDERS if contender.slug in wanted]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="timed seconds per level")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured seconds per level")
    parser.add_argument("--levels", default="1,8,32", help="wrk connections, comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (medians)")
    parser.add_argument("--only", help="contenders to run, e.g. s4digits,mosec")
    parser.add_argument(
        "--batch-wait-ms", type=int, default=2, help="the batching servers' longest wait"
    )
    parser.add_argument(
        "--image",
        type=Path,
        help="PNG to post (default: bench.serve's, the first MNIST test digit)",
    )
    parser.add_argument("--digit", type=int, help="the digit --image shows")
    args = parser.parse_args(argv)
    # Stopped (timeout, kill), it still stops the server it is timing: SystemExit runs finally.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if (args.image is None) != (args.digit is None):
        parser.error("--image and --digit go together")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk (Debian's package)")
    contenders = choose(args.only)
    levels = [int(level) for level in args.levels.split(",")]

    failures: dict[str, str] = {}
    pythons: dict[str, Path] = {}
    for contender in contenders:
        try:
            pythons[contender.name] = environment_python(contender)
        except (EnvironmentFailed, OSError) as exc:
            failures[contender.name] = f"environment: {exc}"
    results: dict[str, list[Sample]] = {contender.name: [] for contender in contenders}

    with tempfile.TemporaryDirectory(prefix="s4-anchors-") as scratch:
        if args.image is None:
            image, digit = prepare_digit(Path(scratch))
        else:
            image, digit = args.image, args.digit
        png = image.read_bytes()
        print(f"wrk -t1, levels {levels}, {args.warmup} s warm-up + {args.seconds} s per level, "
              f"{args.rounds} round(s), posting {image.name} (a {digit})", flush=True)  # fmt: skip
        for round_index in range(args.rounds):
            order = contenders if round_index % 2 == 0 else contenders[::-1]
            for contender in order:
                if contender.name not in pythons or (
                    contender.name in failures and not results[contender.name]
                ):
                    continue  # no environment, or it never started: do not retry every round
                workdir = Path(scratch) / f"{contender.slug}-{round_index}"
                workdir.mkdir()
                route = make_route(contender, png, digit)
                try:
                    sample = measure(
                        contender, pythons[contender.name], workdir, route, digit, levels,
                        args.seconds, args.warmup, args.batch_wait_ms,
                    )  # fmt: skip
                except (ServerFailed, OSError, RuntimeError) as exc:
                    failures[contender.name] = str(exc)
                    print(f"round {round_index + 1}: {contender.name} failed: {exc}", flush=True)
                    continue
                results[contender.name].append(sample)
                top = sample.levels[levels[-1]]
                print(f"round {round_index + 1}: {contender.name}: ready {sample.ready_s:.1f} s, "
                      f"{top.rps:,.0f} req/s at c={levels[-1]}", flush=True)  # fmt: skip

    print()
    print(format_table(results, failures, levels))
    print()
    print(fairness_notes(contenders, args.batch_wait_ms))
    print()
    print("command: python -m bench.anchors " + shlex.join(sys.argv[1:] if argv is None else argv))
    for name, message in failures.items():
        print(f"\n{name} failed: {message}")


if __name__ == "__main__":
    main()
