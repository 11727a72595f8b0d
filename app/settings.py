"""Service settings, read from the environment (prefix ``S4_``) by pydantic-settings."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="S4_")

    weights: Path = Field(
        Path("weights/s4net.safetensors"),
        description="Weights file; its card is the .json beside it. Relative to the working dir.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the model runs; auto picks CUDA when it is available."
    )
    host: str = Field("127.0.0.1", description="Address `python -m app` listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port `python -m app` listens on.")


@lru_cache
def get_settings() -> Settings:
    return Settings()
