"""Immich-compatible machine learning: `GET /ping` and `POST /predict` exactly as Immich's server
calls them, so `IMMICH_MACHINE_LEARNING_URL` can point at xmodal.

Immich sends multipart/form-data with `entries`, a JSON string naming task -> type -> model:

    {"clip": {"textual": {"modelName": "ViT-B-32__openai", "options": {"language": "de"}}}}  + a `text` field
    {"clip": {"visual": {"modelName": "ViT-B-32__openai"}}}                                  + an `image` blob

and reads back `{"clip": "[0.0123,...]"}` (the embedding serialised as a JSON string), plus
`imageHeight` / `imageWidth` for images. xmodal serves the `clip` task only; facial recognition,
OCR and other tasks get a 400 that names the task.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import PlainTextResponse
from pydantic import TypeAdapter, ValidationError

from xmodal.errors import InvalidArgumentError, MediaError
from xmodal.media.image import decode_image
from xmodal.serve.multipart import Part, multipart_body, read_form
from xmodal.serve.schemas import ErrorResponse, ImmichClipResponse, ImmichModelEntry, ImmichTextualOptions
from xmodal.serve.security import require_api_key
from xmodal.serve.state import ServeState

log = logging.getLogger(__name__)

SERVED_TASK = "clip"
CLIP_TYPES = ("textual", "visual")
_entries_adapter = TypeAdapter(dict[str, dict[str, ImmichModelEntry]])

public = APIRouter(tags=["immich"])
router = APIRouter(tags=["immich"], dependencies=[Depends(require_api_key)])

_PREDICT_BODY = multipart_body(
    {
        "entries": {
            "type": "string",
            "description": 'JSON: {"clip": {"textual"|"visual": {"modelName": NAME, "options": {...}}}}',
            "example": '{"clip":{"textual":{"modelName":"xmodal-tiny-shapes","options":{}}}}',
        },
        "text": {"type": "string", "description": "The text to embed (textual)"},
        "image": {"type": "string", "format": "binary", "description": "The image to embed (visual)"},
    },
    required=("entries",),
)


@public.get("/ping", response_class=PlainTextResponse, summary="Liveness check Immich polls")
async def ping() -> str:
    return "pong"


@router.post(
    "/predict",
    response_model=ImmichClipResponse,
    response_model_exclude_none=True,
    summary="Embed a text or an image as Immich's server asks",
    openapi_extra=_PREDICT_BODY,
    responses={400: {"model": ErrorResponse}, 404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)
async def predict(request: Request) -> ImmichClipResponse:
    state: ServeState = request.app.state.xmodal
    form = await read_form(request)
    tower, entry = parse_entries(form.get("entries"))
    text, image = form.get("text"), form.get("image")
    if (text is None) == (image is None):
        raise HTTPException(400, "send either a text field or an image part")
    if tower == "textual":
        if text is None:
            raise HTTPException(400, "clip textual needs a text field, not an image")
        options = _textual_options(entry)
        vector = await state.run(_embed_text, state, entry.modelName, _query_text(state, text), options.language)
        return ImmichClipResponse(clip=embedding_json(vector))
    if image is None:
        raise HTTPException(400, "clip visual needs an image part, not a text field")
    if not image.data:
        raise HTTPException(422, "the image part is empty")
    vector, height, width = await state.run(_embed_image, state, entry.modelName, image.data)
    return ImmichClipResponse(clip=embedding_json(vector), imageHeight=height, imageWidth=width)


def parse_entries(part: Part | None) -> tuple[str, ImmichModelEntry]:
    """`entries` -> (clip type, model entry); 422 when it is not Immich's shape, 400 for a task
    xmodal does not serve."""
    if part is None:
        raise HTTPException(422, "the form has no entries field")
    try:
        entries = _entries_adapter.validate_json(part.data)
    except ValidationError as exc:
        reason = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in reason["loc"])
        raise HTTPException(422, f"invalid entries{' at ' + where if where else ''}: {reason['msg']}") from None
    unsupported = sorted(task for task in entries if task != SERVED_TASK)
    if unsupported:
        raise HTTPException(
            400, f"task {', '.join(map(repr, unsupported))} is not supported: xmodal serves only {SERVED_TASK!r}"
        )
    types = entries.get(SERVED_TASK) or {}
    unknown = sorted(t for t in types if t not in CLIP_TYPES)
    if unknown or len(types) != 1:
        raise HTTPException(
            422, f"invalid entries: clip needs exactly one of {', '.join(CLIP_TYPES)}, got {sorted(types)}"
        )
    ((tower, entry),) = types.items()
    return tower, entry


def _textual_options(entry: ImmichModelEntry) -> ImmichTextualOptions:
    try:
        return ImmichTextualOptions.model_validate(entry.options)
    except ValidationError as exc:
        raise HTTPException(422, f"invalid entries at clip.textual.options: {exc.errors()[0]['msg']}") from None


def _query_text(state: ServeState, part: Part) -> str:
    text = part.text()
    limit = state.settings.max_query_chars
    if len(text) > limit:
        raise HTTPException(422, f"text is {len(text):,} characters; the limit is {limit:,} (XMODAL_MAX_QUERY_CHARS)")
    return text


def _embed_text(state: ServeState, model: str, text: str, language: str | None) -> np.ndarray:
    started = time.perf_counter()
    with state.models.use(model, "textual") as encoder:
        try:
            vector = encoder.embed_texts([text], language=language)[0]
        except InvalidArgumentError as exc:
            if exc.name != "language":
                raise
            # Immich's own service falls back to English for a language it cannot map.
            log.warning("language %r is not known to %s; embedding as English", language, model)
            vector = encoder.embed_texts([text])[0]
    state.metrics.observe_embedding(model, "text", time.perf_counter() - started)
    return vector


def _embed_image(state: ServeState, model: str, data: bytes) -> tuple[np.ndarray, int, int]:
    started = time.perf_counter()
    with state.models.use(model, "visual") as encoder:
        try:
            decoded = decode_image(data, encoder.decode_options)
        except MediaError as exc:
            raise HTTPException(422, f"image part: {exc.reason}") from None
        vector = encoder.embed_pixels(encoder.preprocess(decoded.image)[None])[0]
    state.metrics.observe_embedding(model, "image", time.perf_counter() - started)
    return vector, decoded.height, decoded.width


def embedding_json(vector: np.ndarray) -> str:
    """float32 values as a JSON array string, each in its shortest form that reads back exactly."""
    values = np.asarray(vector, dtype=np.float32).ravel()
    if not np.isfinite(values).all():
        raise ValueError("the embedding has non-finite values")
    return "[" + ",".join(str(v) for v in values) + "]"
