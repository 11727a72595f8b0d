"""The `s4digits` command: predict reads files as /predict does, export writes the served graph,
train and serve are the training CLI and `python -m app`."""

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.artifacts.weights import card_path_for
from app.cli import main
from app.inference import Predictor
from app.main import create_app
from app.settings import Settings
from bench.servers import running_server

REPO_ROOT = Path(__file__).resolve().parent.parent
S4DIGITS = Path(sys.executable).with_name("s4digits")  # the installed [project.scripts] entry


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory, mnist_test_set) -> list[Path]:
    """Twenty MNIST test digits as users send them: PNG as is, black on white JPEG, RGB PNG."""
    directory = tmp_path_factory.mktemp("digits")
    files = []
    for index, pixels in enumerate(mnist_test_set[0][:20]):
        if index % 3 == 0:
            image, name = Image.fromarray(pixels), f"{index}.png"
        elif index % 3 == 1:
            image = Image.fromarray(255 - pixels).resize((90, 90)).convert("RGB")
            name = f"{index}.jpg"
        else:
            image, name = Image.fromarray(255 - pixels).convert("RGB"), f"{index}.png"
        image.save(directory / name)
        files.append(directory / name)
    return files


def test_predict_gives_predicts_digits_one_line_per_file(
    digit_files, reading_weights, capsys, monkeypatch
):
    monkeypatch.setenv("S4_WEIGHTS", str(reading_weights))
    with TestClient(create_app(Settings(weights=reading_weights, cpu_threads=1))) as client:
        parts = [("file", (file.name, file.read_bytes())) for file in digit_files]
        served = client.post("/predict", files=parts).json()["predictions"]

    assert main(["predict", "--json", *map(str, digit_files)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["file"] for line in lines] == [str(file) for file in digit_files]
    assert [line["digit"] for line in lines] == [p["digit"] for p in served]
    np.testing.assert_allclose(
        [line["probabilities"] for line in lines],
        [p["probabilities"] for p in served],
        atol=1e-6,
    )

    assert main(["predict", str(digit_files[0])]) == 0
    assert capsys.readouterr().out.startswith(f"{digit_files[0]}: {served[0]['digit']} (")


def test_predict_number_gives_reads_numbers(reading_weights, tmp_path, capsys, monkeypatch):
    """--number: each file read as POST /read reads a picture: same number, digits and boxes."""
    monkeypatch.setenv("S4_WEIGHTS", str(reading_weights))
    files = [REPO_ROOT / "docs" / "number.png", REPO_ROOT / "docs" / "seven.png"]
    blank = tmp_path / "blank.png"
    Image.new("L", (200, 60), 255).save(blank)
    with TestClient(create_app(Settings(weights=reading_weights, cpu_threads=1))) as client:
        parts = [("file", (file.name, file.read_bytes())) for file in files]
        served = client.post("/read", files=parts).json()["numbers"]

    assert main(["predict", "--number", "--json", *map(str, files), str(blank)]) == 1
    *lines, refused = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["file"] for line in lines] == [str(file) for file in files]
    assert [line["text"] for line in lines] == [number["text"] for number in served]
    assert [line["input_size"] for line in lines] == [number["input_size"] for number in served]
    for line, number in zip(lines, served, strict=True):
        assert [d["box"] for d in line["digits"]] == [d["box"] for d in number["digits"]]
        np.testing.assert_allclose(line["probability"], number["probability"], atol=1e-6)
    assert refused["file"] == str(blank) and "blank" in refused["error"]

    assert main(["predict", "--number", str(files[0])]) == 0
    assert capsys.readouterr().out.startswith(f"{files[0]}: {served[0]['text']} (")


def test_unreadable_files_fail_with_a_message_and_the_rest_are_read(
    digit_files, reading_weights, tmp_path
):
    text = tmp_path / "notes.txt"
    text.write_text("not a digit")
    missing = tmp_path / "missing.png"
    result = subprocess.run(
        [S4DIGITS, "predict", str(digit_files[0]), str(text), str(missing)],
        capture_output=True,
        text=True,
        env={"S4_WEIGHTS": str(reading_weights), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert result.stdout.startswith(f"{digit_files[0]}: ") and len(result.stdout.splitlines()) == 1
    assert f"image 1 ({text}) is not an image" in result.stderr
    assert f"cannot read {missing}: No such file or directory" in result.stderr


def test_predict_without_weights_says_so(tmp_path, digit_files, capsys):
    assert main(["predict", "--weights", str(tmp_path / "none"), str(digit_files[0])]) == 1
    assert "cannot load the model" in capsys.readouterr().err


def test_export_writes_the_served_graph_with_its_provenance(
    reading_weights, tmp_path, mnist_test_set
):
    path = tmp_path / "s4net.onnx"
    assert main(["export", "--onnx", str(path), "--weights", str(reading_weights)]) == 0
    model = onnx.load(path)
    properties = {entry.key: entry.value for entry in model.metadata_props}
    card = json.loads(card_path_for(reading_weights).read_text())
    assert properties["weights_sha256"] == card["weights_sha256"]
    assert properties["test_accuracy"] == str(card["test_accuracy"])
    assert properties["temperature"] == str(card["temperature"])

    images = mnist_test_set[0]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    exported = session.run(None, {"images": images})[0]
    predictor = Predictor(Settings(weights=reading_weights, cpu_threads=1))
    predictor.load()
    served = predictor.forward(images).probabilities
    assert (exported.argmax(axis=1) == served.argmax(axis=1)).all()
    np.testing.assert_allclose(exported, served, atol=1e-6)  # calibrated as the service serves


def test_train_is_the_training_cli(tmp_path, mnist_dir):
    result = subprocess.run(
        [S4DIGITS, "train", "--help"], capture_output=True, text=True, check=True
    )
    assert "--epochs" in result.stdout and "--holdout" in result.stdout
    out = tmp_path / "run"
    argv = ["--data-dir", str(mnist_dir), "--out-dir", str(out), "--epochs", "1"]
    argv += ["--train-limit", "200", "--test-limit", "100", "--batch-size", "50"]
    assert main(["train", *argv]) == 0
    assert (out / "weights" / "s4net.safetensors").exists()


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["predict"])
    assert exited.value.code == 2
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--nonsense"])
    assert exited.value.code == 2


def test_serve_serves_the_app(reading_weights):
    env = {"S4_WEIGHTS": str(reading_weights), "WEB_CONCURRENCY": "1"}
    with running_server(env, (str(S4DIGITS), "serve"), "/v2/health/ready") as server:
        assert httpx.get(server.url + "/ready").json()["ready"] is True
