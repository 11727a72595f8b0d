"""``s4digits``: serve, train, predict and export the S4 net from one command.

    s4digits serve [--host H] [--port P] [--workers N]    python -m app
    s4digits train [python -m training's options]         python -m training
    s4digits predict FILE... [--json] [--number]          offline, no server
    s4digits export --onnx PATH                           the CPU runtime's ONNX graph
    s4digits db upgrade                                   create or migrate the corrections' tables
    s4digits feedback export DIR                          the corrections as MNIST IDX files
    s4digits promote CANDIDATE                            serve better weights, else keep them

Settings come from the environment as for the service (S4_WEIGHTS, S4_DEVICE, ...). Heavy
imports (torch, the app) happen inside each command, so ``train`` sets its thread policy before
torch loads and ``--help`` answers at once.
"""

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from app.feedback.cli import add_parsers as add_feedback_parsers

PROG = "s4digits"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "train":
        return train(extra)  # every option is the training CLI's own
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Read handwritten digits with S4.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_parser = commands.add_parser("serve", help="serve the HTTP API (python -m app)")
    serve_parser.add_argument("--host", help="address to listen on (else S4_HOST)")
    serve_parser.add_argument("--port", type=int, help="port (else S4_PORT)")
    serve_parser.add_argument("--workers", type=int, help="worker processes (else WEB_CONCURRENCY)")
    serve_parser.set_defaults(run=serve)

    # add_help=False: `s4digits train --help` shows the training CLI's own help.
    commands.add_parser(
        "train", add_help=False, help="train the S4 net (python -m training; --help lists options)"
    )

    add_predict_parser(commands)

    export_parser = commands.add_parser("export", help="write the model for other runtimes")
    export_parser.add_argument(
        "--onnx", type=Path, required=True, metavar="PATH", help="write the ONNX graph here"
    )
    export_parser.add_argument("--weights", type=Path, help="weights file (else S4_WEIGHTS)")
    export_parser.set_defaults(run=export)
    add_feedback_parsers(commands)  # db upgrade, feedback export, promote
    return parser


def add_predict_parser(commands: argparse._SubParsersAction) -> None:
    predict_parser = commands.add_parser(
        "predict",
        help="read digits from image files, offline",
        description="Read the digit in each image file, as the service would, without a server. "
        "One line per file; exit status 1 if any file could not be read.",
    )
    predict_parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    predict_parser.add_argument("--json", action="store_true", help="one JSON object per line")
    predict_parser.add_argument(
        "--number",
        action="store_true",
        help="read each file as a whole number (several digits), as POST /read does",
    )
    predict_parser.add_argument("--weights", type=Path, help="weights file (else S4_WEIGHTS)")
    predict_parser.set_defaults(run=predict)


def fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


# serve, train ------------------------------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    for variable, value in [
        ("S4_HOST", args.host),
        ("S4_PORT", args.port),
        ("WEB_CONCURRENCY", args.workers),
    ]:
        if value is not None:
            os.environ[variable] = str(value)
    from app.__main__ import main as serve_main

    serve_main()
    return 0


def train(argv: list[str]) -> int:
    from training.__main__ import main as train_main

    train_main(argv)
    return 0


# predict -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FilePrediction:
    file: Path
    probabilities: list[float] | None  # None when the file could not be read
    error: str | None = None

    @property
    def digit(self) -> int | None:
        return (
            None
            if self.probabilities is None
            else max(range(10), key=self.probabilities.__getitem__)
        )

    def as_json(self) -> dict:
        if self.error is not None:
            return {"file": str(self.file), "error": self.error}
        digit = self.digit
        return {
            "file": str(self.file),
            "digit": digit,
            "probability": self.probabilities[digit],
            "probabilities": self.probabilities,
        }

    def as_text(self) -> str:
        return f"{self.file}: {self.digit} (probability {self.probabilities[self.digit]:.4f})"


def loaded_predictor(settings):
    """The service's Predictor, loaded; raises WeightsError if the weights cannot be served."""
    from app.artifacts.weights import WeightsError
    from app.inference import Predictor

    predictor = Predictor(settings)
    predictor.load()
    if not predictor.ready:
        raise WeightsError(predictor.error)
    return predictor


def predict_files(files: list[Path], settings) -> list[FilePrediction]:
    """Each file prepared as /predict prepares an upload (app.pipeline), then one pass per batch
    through the service's Predictor. Raises WeightsError if the weights cannot be served."""
    from app.pipeline.errors import ImageRejected
    from app.pipeline.prepare import prepare
    from app.pipeline.uploads import Upload

    predictor = loaded_predictor(settings)
    results: list[FilePrediction | None] = [None] * len(files)
    readable: list[tuple[int, object]] = []
    for index, file in enumerate(files):
        try:
            upload = Upload(index, str(file), file.read_bytes())
            readable.append((index, prepare(upload, settings.max_pixels)))
        except OSError as exc:
            results[index] = FilePrediction(file, None, f"cannot read {file}: {exc.strerror}")
        except ImageRejected as exc:
            results[index] = FilePrediction(file, None, str(exc))
    import numpy as np

    batch = settings.batch_max_images
    for start in range(0, len(readable), batch):
        chunk = readable[start : start + batch]
        forward = predictor.forward(np.stack([image.pixels for _, image in chunk]))
        for (index, _), row in zip(chunk, forward.probabilities, strict=True):
            results[index] = FilePrediction(files[index], row.tolist())
    return results


@dataclass(frozen=True)
class FileNumber:
    file: Path
    answer: dict | None  # /read's answer for this picture; None when it could not be read
    error: str | None = None

    def as_json(self) -> dict:
        if self.error is not None:
            return {"file": str(self.file), "error": self.error}
        return {"file": str(self.file)} | {
            key: value for key, value in self.answer.items() if key not in ("index", "filename")
        }

    def as_text(self) -> str:
        review = ", needs review" if self.answer["needs_review"] else ""
        return (
            f"{self.file}: {self.answer['text']} "
            f"(probability {self.answer['probability']:.4f}{review})"
        )


def read_number_files(files: list[Path], settings) -> list[FileNumber]:
    """Each file read as /read reads a picture (app.numbers.segmentation), its candidate
    digits in one pass through the service's Predictor. Raises WeightsError if the weights
    cannot be served."""
    import numpy as np

    from app.numbers.check import load_check
    from app.numbers.reading import choose, encode_number
    from app.numbers.segmentation import segment_upload
    from app.pipeline.errors import ImageRejected
    from app.pipeline.uploads import Upload

    predictor = loaded_predictor(settings)
    check = load_check(settings.digit_check)
    results = []
    for index, file in enumerate(files):
        try:
            upload = Upload(index, str(file), file.read_bytes())
            found = segment_upload(upload, settings.max_pixels, check)
        except OSError as exc:
            results.append(FileNumber(file, None, f"cannot read {file}: {exc.strerror}"))
            continue
        except ImageRejected as exc:
            results.append(FileNumber(file, None, str(exc)))
            continue
        pixels = np.stack([candidate.pixels for candidate in found.candidates])
        reading = choose(found, predictor.forward(pixels).probabilities)
        results.append(FileNumber(file, encode_number(upload, reading, found.input_size)))
    return results


def predict(args: argparse.Namespace) -> int:
    from app.artifacts.weights import WeightsError
    from app.numbers.check import CheckWeightsError
    from app.settings import Settings

    settings = Settings(weights=args.weights) if args.weights else Settings()
    try:
        results = (read_number_files if args.number else predict_files)(args.files, settings)
    except (WeightsError, CheckWeightsError) as exc:
        return fail(f"cannot load the model: {exc}")
    for result in results:
        if result.error is not None:
            print(f"{PROG}: {result.error}", file=sys.stderr)
        if args.json:
            print(json.dumps(result.as_json()))
        elif result.error is None:
            print(result.as_text())
    return 1 if any(result.error for result in results) else 0


# export ------------------------------------------------------------------------------------


def export(args: argparse.Namespace) -> int:
    from app.artifacts.weights import WeightsError, atomic_write_bytes, load_weights
    from app.inference import card_temperature
    from app.protocols.open_inference import model_version
    from app.runtime.onnx_graph import build_onnx_graph
    from app.settings import Settings

    weights_path = args.weights or Settings().weights
    try:
        weights = load_weights(weights_path)
        temperature = card_temperature(weights.card)
    except WeightsError as exc:
        return fail(f"cannot load the weights: {exc}")
    card = weights.card
    properties = {
        "weights_sha256": weights.sha256,
        "model_version": model_version(weights.sha256),
        "test_accuracy": str(card.get("test_accuracy", "unknown")),
        "evaluated_on": str(card.get("evaluated_on", "unknown")),
        "input": "images: uint8 [batch, 28, 28], MNIST form (white ink on black, 0..255)",
        "output": "probabilities: float32 [batch, 10], calibrated with the temperature",
        "temperature": str(card.get("temperature", 1.0)),
    }
    graph = build_onnx_graph(weights.tensors, properties, temperature)
    atomic_write_bytes(args.onnx, graph)
    print(
        f"wrote {args.onnx}: weights sha256 {weights.sha256[:12]}, "
        f"test accuracy {properties['test_accuracy']}%"
    )
    return 0
