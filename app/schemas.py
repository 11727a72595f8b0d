"""Pydantic models for every response the service sends (they are also the OpenAPI docs)."""

from typing import Any

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: str = Field("ok", description="Always `ok` while the process serves requests.")


class Readiness(BaseModel):
    ready: bool = Field(description="True once weights are loaded, verified and warmed up.")
    device: str = Field(description="Where the model runs (`cpu`, `cuda`).")
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
        None, description="Final-epoch accuracy on the 10,000 MNIST test images, from the card."
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
