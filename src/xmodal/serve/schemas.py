"""Pydantic models of the HTTP API's requests and responses (they also make the OpenAPI document)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
    max_results: int = Field(description="The most hits one search may ask for (k)")
    thumbnail_sizes: list[int]


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


# -- library -----------------------------------------------------------------------------------
MAX_HTTP_RESULTS = 1000  # hits one HTTP search may ask for (the Python API allows more)
ItemType = Literal["image", "video", "text"]


class SearchQuery(BaseModel):
    """A library search: text (terms may be combined: ``beach + #17 - people``, ``2:sunset``), an
    indexed item as the example ("more like this"), an uploaded image (POST), or several at once."""

    model_config = ConfigDict(extra="forbid")
    q: str | None = Field(default=None, description='Text, or terms: "beach + #17 - people", "2:sunset"')
    item: int | None = Field(default=None, ge=1, description="An indexed item's id as the example")
    k: int = Field(default=10, ge=1, le=MAX_HTTP_RESULTS, description="Number of results")
    type: list[ItemType] | None = Field(
        default=None, description="Only items of these types (repeat or comma-separate)"
    )
    after: str | None = Field(default=None, max_length=40, description="Taken at or after: 2024, 2024-06, 2024-06-30")
    before: str | None = Field(default=None, max_length=40, description="Taken before this date")
    path: str | None = Field(default=None, max_length=1000, description="Only paths matching this glob, e.g. */2023/*")
    min_score: float | None = Field(
        default=None, ge=-1, le=1, description="Cosine floor below which nothing counts (default per model family)"
    )
    decay_days: float | None = Field(default=None, gt=0, description="Favour recent items: score × exp(−age/DAYS)")
    moments: int = Field(default=1, ge=0, le=50, description="Best-matching moments per video or text")
    model: str | None = Field(default=None, max_length=256, description="One of the library's models (default: last)")

    @field_validator("type", mode="before")
    @classmethod
    def _split_types(cls, value: Any) -> Any:
        if value is None:
            return None
        values = [value] if isinstance(value, str) else list(value)
        types = [t.strip() for v in values for t in str(v).split(",") if t.strip()]
        return types or None


class MomentOut(BaseModel):
    start: float
    end: float
    score: float


class HitOut(BaseModel):
    """One hit as `SearchResults.to_dict()` writes it (documentation of the shape)."""

    model_config = ConfigDict(extra="allow")
    rank: int
    item_id: int
    type: str
    path: str = Field(description="For display: undecodable bytes and control characters escaped")
    path_bytes: str = Field(description="The exact path: base64 of the file system's bytes")
    score: float = Field(description="What ranks (after decay)")
    similarity: float = Field(description="The raw cosine similarity")
    taken_at: str | None
    timestamp: float | None = Field(description="Videos: the second to play from (the best moment's start)")
    duration: float | None = Field(default=None, description="Videos: the length in seconds")
    moments: list[MomentOut] = Field(description="The best-matching parts, best first (video moments: seconds)")
    offline: bool = Field(description="The file sits under a folder that is offline now")


class SearchResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    hits: list[HitOut]
    model: str | None
    min_score: float | None
    no_good_match: bool = Field(description="The floor removed every candidate: nothing matches well")
    best_score: float | None = Field(description="How close the best candidate came")


class ItemDetails(BaseModel):
    model_config = ConfigDict(extra="allow")
    item_id: int
    type: str | None
    status: str = Field(description="ok, failed (see error) or pending (recorded, not indexed by this version)")
    error: str | None
    path: str
    path_bytes: str
    name: str
    size: int
    modified_at: str | None
    taken_at: str | None
    taken_at_source: str | None = Field(description="exif (photos), metadata (a video's creation_time) or mtime")
    added_at: str | None
    width: int | None
    height: int | None
    duration: float | None
    fps: float | None
    codec: str | None
    rotation: int | None
    details: dict[str, Any]
    models: list[str] = Field(description="The library's models this item is embedded for")
    thumbnail: str | None
    file: str


class IndexRunOut(BaseModel):
    """The server's index run (see GET /api/index/events for the same as a stream)."""

    model_config = ConfigDict(extra="allow")
    state: Literal["idle", "running", "done", "failed", "cancelled"]
    run: int = Field(description="Runs started by this server so far")
    pid: int | None = Field(description="The process the run goes on in")
    phase: str | None = Field(description="scanning (walking the folders), then indexing")
    done: int
    total: int | None
    started_at: float | None
    finished_at: float | None
    cancel_requested: bool
    report: dict[str, Any] | None
    error: str | None
    version: int
    writer: str | None = Field(description="Who holds the library's writer lock now (another process's run too)")
