"""The library over HTTP: search (text, an indexed item, an uploaded image, or combined), item
details, thumbnails, the original files and video streams (with range requests), the library's
status, and index runs with their progress as polling or server-sent events.

Every handler is a thin layer over `xmodal.Library`; blocking work (catalog reads, embedding,
decoding) runs on the server's thread pool. Files are reached only through catalogued item ids.
"""

from __future__ import annotations

import json
import mimetypes
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError

from xmodal.library import Library
from xmodal.search import SearchResults
from xmodal.serve.indexing import IndexRunBusyError, IndexRuns, IndexRunState, public_holder
from xmodal.serve.items import catalogued, item_details, library_roots, locate, unchanged_since_indexed, visible_results
from xmodal.serve.multipart import multipart_body, read_form
from xmodal.serve.schemas import ErrorResponse, IndexRunOut, ItemDetails, SearchQuery, SearchResponse
from xmodal.serve.security import require_api_key
from xmodal.serve.state import ServeState
from xmodal.serve.thumbnails import DEFAULT_SIZE, THUMBNAIL_SIZES
from xmodal.store.catalog import display_path

Q = TypeVar("Q", bound=BaseModel)
router = APIRouter(prefix="/api", tags=["library"], dependencies=[Depends(require_api_key)])

ItemId = Annotated[int, Path(ge=1, le=2**62, description="An item id from search results")]
THUMBNAIL_CACHE = "private, max-age=600"  # then revalidated by ETag: a 304 costs no decoding
# Originals open in the browser as themselves, never as a page of this site (an SVG or HTML file
# could otherwise run script with the API's cookie).
FILE_CSP = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox"
EVENTS_TICK = 0.25  # seconds between looks at the index run for the event stream
KEEPALIVE = 15.0
_ERRORS = {401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}


def search_form_schema(schema: type[BaseModel]) -> dict:
    """The OpenAPI description of a multipart search: an example image and `schema`'s fields."""
    fields = {name: {"type": "string", "description": spec.description} for name, spec in schema.model_fields.items()}
    return multipart_body({"image": {"type": "string", "format": "binary", "description": "An example image"}} | fields)


_SEARCH_FORM = search_form_schema(SearchQuery)


def library_state(request: Request) -> ServeState:
    """FastAPI dependency: the server's state, 503 when it serves no library."""
    state: ServeState = request.app.state.xmodal
    if state.library is None:
        if state.embeddings is not None:
            raise HTTPException(503, "this server has no library: it serves an embeddings folder (/api/embeddings)")
        raise HTTPException(503, "this server has no library: it serves machine learning only (--ml-only)")
    return state


Served = Annotated[ServeState, Depends(library_state)]


# -- status and search ---------------------------------------------------------------------
@router.get("/status", summary="Items per type, models, indexes, folders, who is indexing", responses=_ERRORS)
async def status(state: Served) -> dict:
    return await state.run(_public_status, state.library)


def _public_status(library: Library) -> dict:
    """`Library.status()` without the server's own file locations (library folder, catalog, index
    files, model folders): clients see the library's folders and nothing else of the disk."""
    info = library.status()
    info.pop("library", None)
    info["writer"] = public_holder(info["writer"])
    info["catalog"] = {k: v for k, v in info["catalog"].items() if k != "path"}
    info["models"] = [{k: v for k, v in m.items() if k != "source"} for m in info["models"]]
    info["index"] = {key: {k: v for k, v in i.items() if k != "path"} for key, i in info["index"].items()}
    return info


@router.get(
    "/search",
    response_model=SearchResponse,
    summary="Search by text and/or an indexed item",
    responses=_ERRORS,
)
async def search(state: Served, query: Annotated[SearchQuery, Query()]) -> JSONResponse:
    return await _search(state, query, None)


@router.post(
    "/search",
    response_model=SearchResponse,
    summary="Search with an uploaded example image (multipart), optionally with text and an item",
    openapi_extra=_SEARCH_FORM,
    responses={**_ERRORS, 400: {"model": ErrorResponse}, 413: {"model": ErrorResponse}},
)
async def search_with_image(state: Served, request: Request) -> JSONResponse:
    query, image = await search_form(request, SearchQuery)
    return await _search(state, query, image)


async def search_form(request: Request, schema: type[Q]) -> tuple[Q, bytes | None]:
    """A multipart search: its fields as `schema`, and the uploaded example image's bytes."""
    form = await read_form(request)
    image = form.pop("image", None)
    try:
        query = schema.model_validate({name: part.text() for name, part in form.items()})
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    if image is not None and not image.data:
        raise HTTPException(422, "the image part is empty")
    return query, image.data if image is not None else None


async def answer_search(
    state: ServeState, q: str | None, used: list[str], search: Callable[[], SearchResults]
) -> JSONResponse:
    """Check the query's text against the limit, run `search` on the pool, count it in the
    metrics by what it was given (`used`: "text", "item", "image"), answer its JSON."""
    limit = state.settings.max_query_chars
    if q and len(q) > limit:
        raise HTTPException(422, f"q is {len(q):,} characters; the limit is {limit:,} (XMODAL_MAX_QUERY_CHARS)")
    started = time.perf_counter()
    results = await state.run(search)
    state.metrics.observe_search(used[0] if len(used) == 1 else "combined", time.perf_counter() - started)
    return JSONResponse(results.to_dict())


async def _search(state: ServeState, query: SearchQuery, image: bytes | None) -> JSONResponse:
    used = [kind for kind, given in (("text", query.q), ("item", query.item), ("image", image)) if given]
    if not used:
        raise HTTPException(422, "give a text (q), an item id (item) or an image to search with")
    return await answer_search(state, query.q, used, lambda: _run_search(state.library, query, image))


def _run_search(library: Library, query: SearchQuery, image: bytes | None) -> SearchResults:
    if query.model is not None:
        models = {m.name for m in library.catalog.models()} | {m.key for m in library.catalog.models()}
        if query.model not in models:  # never a folder or a name to load: only the library's own models
            raise HTTPException(
                422, f"model {query.model!r} has not indexed this library (its models: {sorted(models)})"
            )
    results = library.search(
        query.q,
        image=image,
        k=query.k,
        type=query.type,
        after=query.after,
        before=query.before,
        item=query.item,
        path_glob=query.path,
        min_score=query.min_score,
        decay_days=query.decay_days,
        model=query.model,
        moments=query.moments,
        path_terms=False,
    )
    return visible_results(results, library_roots(library))


# -- items ---------------------------------------------------------------------------------
@router.get(
    "/items/{item_id}", response_model=ItemDetails, summary="What the library knows of one item", responses=_ERRORS
)
async def item(state: Served, item_id: ItemId) -> dict:
    return await state.run(lambda: item_details(catalogued(state.library, item_id), state.library))


@router.get(
    "/items/{item_id}/thumbnail",
    summary="A photo's or video's thumbnail (WebP), made once and cached",
    response_class=Response,
    responses={**_ERRORS, 200: {"content": {"image/webp": {}}}, 304: {"description": "Not modified (ETag)"}},
)
async def thumbnail(
    state: Served,
    request: Request,
    item_id: ItemId,
    size: Annotated[int, Query(description=f"Longest side in pixels: one of {THUMBNAIL_SIZES}")] = DEFAULT_SIZE,
) -> Response:
    if size not in THUMBNAIL_SIZES:
        raise HTTPException(422, f"invalid size {size}; expected one of {', '.join(map(str, THUMBNAIL_SIZES))}")
    return await state.run(_thumbnail, state, item_id, size, request.headers.get("if-none-match"))


def _thumbnail(state: ServeState, item_id: int, size: int, if_none_match: str | None) -> Response:
    library, cache = state.library, state.thumbnails
    record = catalogued(library, item_id)
    if record.type not in ("image", "video"):
        raise HTTPException(404, f"item {item_id} is a {record.type or 'file'} and has no thumbnail")
    path, found = locate(record, library)
    holds = unchanged_since_indexed(record, found)
    etag = cache.etag(record, size, content_holds=holds, mtime_ns=found.st_mtime_ns)
    headers = {"etag": etag, "cache-control": THUMBNAIL_CACHE}
    if _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    made = cache.get(record, path, size, content_holds=holds, mtime_ns=found.st_mtime_ns)
    return Response(made.data, media_type=made.media_type, headers=headers)


@router.head("/items/{item_id}/file", include_in_schema=False)
@router.get(
    "/items/{item_id}/file",
    summary="The original file (photos and videos inline), with HTTP range requests",
    response_class=FileResponse,
    responses={
        **_ERRORS,
        206: {"description": "Partial content (Range)"},
        304: {"description": "Not modified (ETag)"},
        416: {"description": "Range not satisfiable"},
    },
)
async def original(state: Served, request: Request, item_id: ItemId) -> Response:
    record, (path, found) = await state.run(lambda: _located(state.library, item_id))
    etag = f'"{found.st_size:x}-{found.st_mtime_ns:x}"'
    headers = {"etag": etag, "cache-control": "private, no-cache", "content-security-policy": FILE_CSP}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    media_type = mimetypes.guess_type(path)[0] if record.type in ("image", "video") else None
    return FileResponse(
        path,
        stat_result=found,
        headers=headers,
        media_type=media_type or "application/octet-stream",
        filename=display_path(os.path.basename(record.path)),
        content_disposition_type="inline" if media_type else "attachment",
    )


def _located(library: Library, item_id: int):
    record = catalogued(library, item_id)
    return record, locate(record, library)


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: '*' or a list of (weak or strong) tags, compared weakly."""
    if not if_none_match:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


# -- index runs ----------------------------------------------------------------------------
def _runs(state: ServeState) -> IndexRuns:
    assert state.index_runs is not None  # every served library has its runs
    return state.index_runs


@router.get("/index", response_model=IndexRunOut, summary="The index run's state and progress", responses=_ERRORS)
async def index_run(state: Served) -> dict:
    runs = _runs(state)
    return {**runs.state.to_dict(), "writer": runs.writer_now(0.0)}  # a non-blocking probe


@router.post(
    "/index",
    status_code=202,
    response_model=IndexRunOut,
    summary="Start an index run of the library's folders (one at a time)",
    responses={**_ERRORS, 409: {"model": ErrorResponse, "description": "A run is going already"}},
)
async def start_index_run(state: Served) -> dict:
    return await _index_action(state, _runs(state).start)


@router.post(
    "/index/cancel",
    status_code=202,
    response_model=IndexRunOut,
    summary="Stop the index run after the batch it is committing (work done is kept)",
    responses={**_ERRORS, 409: {"model": ErrorResponse, "description": "No run is going"}},
)
async def cancel_index_run(state: Served) -> dict:
    return await _index_action(state, _runs(state).cancel)


async def _index_action(state: ServeState, action: Callable[[], IndexRunState]) -> dict:
    """Start or cancel (`action`, on the pool: it reads the catalog); 409 when it cannot be done now."""
    try:
        run = await state.run(action)
    except IndexRunBusyError as exc:
        raise HTTPException(409, str(exc)) from None
    return {**run.to_dict(), "writer": _runs(state).writer_now()}


@router.get(
    "/index/events",
    summary="The index run as server-sent events: an `index` event (IndexRunOut) at every change",
    response_class=StreamingResponse,
    responses={**_ERRORS, 200: {"content": {"text/event-stream": {}}}},
)
async def index_events(state: Served) -> StreamingResponse:
    return StreamingResponse(
        _index_events(state),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def _index_events(state: ServeState) -> AsyncIterator[str]:
    """One event now, then one per change of the run or of the writer lock's holder (another
    process starting or ending a run), comments to keep the connection open meanwhile; ends when
    the server shuts down (the browser's EventSource reconnects by itself)."""
    runs = _runs(state)
    sent: tuple[int, str | None] | None = None
    last = time.monotonic()
    yield "retry: 2000\n\n"
    while not state.closing.is_set():
        run = runs.state
        # Once this server's run ends, look at the lock again at once.
        ended = sent is not None and run.version != sent[0] and run.state != "running"
        writer = runs.writer() if ended else runs.writer_now()
        if (run.version, writer) != sent:
            sent, last = (run.version, writer), time.monotonic()
            yield f"event: index\nid: {run.version}\ndata: {json.dumps({**run.to_dict(), 'writer': writer})}\n\n"
        elif time.monotonic() - last > KEEPALIVE:
            last = time.monotonic()
            yield ": keep-alive\n\n"
        await state.wait_closing(EVENTS_TICK)
