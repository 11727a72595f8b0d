"""Pydantic models for every response the service sends (they are also the OpenAPI docs)."""

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import ErrorDetails


def errors_as_text(errors: Sequence[ErrorDetails], location: tuple[str, ...] = ()) -> str:
    """Pydantic's validation errors as the one-line ``detail`` every error answer carries, e.g.
    ``query top_k: Input should be less than or equal to 10``; ``location`` goes before each
    error's own (FastAPI's errors already start with where, e.g. ``query``)."""
    return "; ".join(
        f"{' '.join(str(part) for part in (*location, *error['loc']))}: {error['msg']}"
        for error in errors
    )


class ErrorDetail(BaseModel):
    """Every error answer: one line that says what went wrong and what to fix."""

    detail: str = Field(description="What went wrong and what to fix.")


class ProtocolErrorBody(BaseModel):
    """An Open Inference Protocol (/v2) error answer, as that protocol specifies it."""

    error: str = Field(description="What went wrong and what to fix.")


def error_responses(model: type[BaseModel] = ErrorDetail, **descriptions: str) -> dict:
    """OpenAPI ``responses`` for error statuses, e.g. ``s422="Bad query."``: each answers
    ``model`` (``{"detail": string}``, ErrorDetail, unless told otherwise)."""
    return {
        int(key[1:]): {"model": model, "description": description}
        for key, description in descriptions.items()
    }


class Health(BaseModel):
    status: str = Field("ok", description="Always `ok` while the process serves requests.")


class Readiness(BaseModel):
    ready: bool = Field(description="True once weights are loaded, verified and warmed up.")
    device: str = Field(description="Where the model runs (`cpu`, `cuda`).")
    runtime: str | None = Field(
        None, description="What runs the forward pass (`onnxruntime`, `torch`), once ready."
    )
    detail: str | None = Field(None, description="Why the service is not ready, if it is not.")


class Layer(BaseModel):
    index: int = Field(description="1-based position in execution order.")
    name: str = Field(description="Row name as in the spec table, e.g. `Conv2d-1`.")
    type: str = Field(description="Module class, e.g. `Conv2d`.")
    output_shape: list[int] = Field(description="Output shape, batch dimension as -1.")
    params: int = Field(description="Number of parameters of this layer.")


class WeightsInfo(BaseModel):
    loaded: bool = Field(description="Whether verified weights are being served.")
    file: str = Field(description="The weights file the service was configured with.")
    sha256: str | None = Field(None, description="SHA-256 of the served weights file.")
    test_accuracy: float | None = Field(
        None,
        description="Final-epoch accuracy on the 10,000 MNIST test images, in percent (card).",
    )
    error: str | None = Field(None, description="Why no weights are loaded, if none are.")
    card: dict[str, Any] | None = Field(
        None, description="The weights card: how the weights were trained and evaluated."
    )


class ModelSummary(BaseModel):
    name: str = Field(description="Model name.")
    input_shape: list[int] = Field(description="Input shape, batch dimension as -1.")
    total_params: int
    trainable_params: int
    non_trainable_params: int
    layers: list[Layer]
    weights: WeightsInfo
    digit_check: "DigitCheckInfo" = Field(
        description="The second, smaller model /read uses: it judges whether a candidate digit is "
        "one whole digit (app/numbers/check.py)."
    )


class DigitCheckInfo(BaseModel):
    loaded: bool
    file: str
    sha256: str | None = None
    parameters: int | None = None
    card: dict | None = Field(None, description="Its card: how it was trained and judged.")
    error: str | None = None


class DigitProbability(BaseModel):
    digit: int = Field(ge=0, le=9)
    probability: float = Field(ge=0, le=1)


class Prediction(BaseModel):
    index: int = Field(description="Position of the image in the request (0-based).")
    filename: str | None = Field(description="The upload's filename, if it had one.")
    digit: int = Field(ge=0, le=9, description="The predicted digit.")
    probability: float = Field(ge=0, le=1, description="The predicted digit's probability.")
    probabilities: list[float] = Field(
        min_length=10, max_length=10, description="Probabilities of digits 0..9; they sum to 1."
    )
    top_k: list[DigitProbability] | None = Field(
        description="The k most likely digits, most likely first; only with `?top_k=k`."
    )
    input_size: tuple[int, int] = Field(description="[width, height] of the uploaded image.")
    model_input: list[list[int]] | None = Field(
        description="The 28x28 image (rows of 0..255, 255 = ink) the model read; only with "
        "`?return_input=true`."
    )


class PredictionResponse(BaseModel):
    predictions: list[Prediction] = Field(description="One per image, in upload order.")
    weights_sha256: str = Field(description="SHA-256 of the weights that made the predictions.")
    device: str = Field(description="Where the forward pass ran (`cpu`, `cuda`).")
    inference_ms: float = Field(
        description="Time the forward pass holding these images took on the device, in ms."
    )


class NumberDigit(BaseModel):
    digit: int = Field(ge=0, le=9, description="The digit read.")
    probability: float = Field(ge=0, le=1, description="Its probability.")
    box: tuple[int, int, int, int] = Field(
        description="[x, y, width, height] of the digit's ink, in the uploaded picture's pixels."
    )
    probabilities: list[float] = Field(
        min_length=10, max_length=10, description="Probabilities of digits 0..9; they sum to 1."
    )


class NumberReading(BaseModel):
    index: int = Field(description="Position of the picture in the request (0-based).")
    filename: str | None = Field(description="The upload's filename, if it had one.")
    text: str = Field(description="The number's digits, left to right.")
    probability: float = Field(
        ge=0,
        le=1,
        description="Calibrated probability that the whole number is read right (every digit, "
        "and no digit missing or extra).",
    )
    needs_review: bool = Field(
        description="True when the reading is uncertain enough that a person should check it: "
        "numbers not flagged are read right at least 99.5 % of the time on the project's bench."
    )
    digits: list[NumberDigit] = Field(description="Each digit, left to right.")
    input_size: tuple[int, int] = Field(description="[width, height] of the uploaded picture.")


class ReadResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "numbers": [
                    {
                        "index": 0,
                        "filename": "meter.png",
                        "text": "42",
                        "probability": 0.995,
                        "needs_review": False,
                        "digits": [
                            {"digit": 4, "probability": 0.999, "box": [12, 10, 30, 52],
                             "probabilities": [0, 0, 0, 0, 0.999, 0, 0, 0, 0.001, 0]},
                            {"digit": 2, "probability": 0.999, "box": [50, 12, 34, 50],
                             "probabilities": [0, 0, 0.999, 0.001, 0, 0, 0, 0, 0, 0]},
                        ],
                        "input_size": [100, 70],
                    }
                ],
                "weights_sha256": "…",
                "device": "cpu",
                "inference_ms": 0.9,
            }
        }
    )  # fmt: skip

    numbers: list[NumberReading] = Field(description="One per picture, in upload order.")
    weights_sha256: str = Field(description="SHA-256 of the weights that read the digits.")
    device: str = Field(description="Where the forward pass ran (`cpu`, `cuda`).")
    inference_ms: float = Field(
        description="Time the forward pass holding these digits took on the device, in ms."
    )
