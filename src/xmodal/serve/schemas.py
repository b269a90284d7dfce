"""Pydantic models of the HTTP API's requests and responses (they also make the OpenAPI document)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorResponse(BaseModel):
    """Every error: a one-line reason (never a stack trace)."""

    detail: str | list[Any]


class Health(BaseModel):
    status: str = "ok"
    version: str


class ModelInfo(BaseModel):
    name: str = Field(description="The name clients use (Immich's modelName)")
    source: str = Field(description="A known model name or a model folder")
    towers: list[str] = Field(description="Loaded towers: textual, visual")
    pinned: bool = Field(description="Preloaded: never unloaded")
    idle_seconds: float
    in_use: int


class ModelsResponse(BaseModel):
    ttl_seconds: float = Field(description="Idle time after which a model is unloaded (0: never)")
    loaded: list[ModelInfo]


class ServerInfo(BaseModel):
    version: str
    library: bool = Field(description="Whether a library is served (false in --ml-only mode)")
    auth: bool = Field(description="Whether an API key is required")
    max_upload_bytes: int
    max_query_chars: int


class SessionRequest(BaseModel):
    api_key: str = Field(max_length=1024)


# -- Immich machine learning -------------------------------------------------------------------
class ImmichModelEntry(BaseModel):
    """One model of an Immich `entries` task/type, e.g. {"modelName": "ViT-B-32__openai", "options": {...}}."""

    model_config = ConfigDict(extra="ignore")
    modelName: str = Field(min_length=1, max_length=256)
    options: dict[str, Any] = Field(default_factory=dict)


class ImmichTextualOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    language: str | None = Field(default=None, max_length=64)


class ImmichClipResponse(BaseModel):
    """Immich's answer shape: the embedding as a JSON-encoded string; for images also their size."""

    clip: str = Field(description='The embedding as a JSON array in a string, e.g. "[0.0123,-0.0456,...]"')
    imageHeight: int | None = None
    imageWidth: int | None = None
