"""An embeddings folder over HTTP (`xmodal serve --embeddings DIR`): search its built index by
text and/or an uploaded image, and what the folder and its index hold. The index is served
memory-mapped and hits are read from the shards' Parquet files, so a folder far larger than this
machine's memory answers; the hits are the same JSON as a library search's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from xmodal.scale.index import search_embeddings
from xmodal.serve.library_api import answer_search, search_form, search_form_schema
from xmodal.serve.schemas import MAX_HTTP_RESULTS, ErrorResponse, SearchResponse
from xmodal.serve.security import require_api_key
from xmodal.serve.state import ServedEmbeddings, ServeState

router = APIRouter(prefix="/api/embeddings", tags=["embeddings"], dependencies=[Depends(require_api_key)])
_ERRORS = {401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}}


class EmbeddingsQuery(BaseModel):
    """A search of the embeddings folder: text (terms may be combined: ``beach - people``) and/or
    an uploaded example image (POST)."""

    model_config = ConfigDict(extra="forbid")
    q: str | None = Field(default=None, description='Text, or terms: "beach - people", "2:sunset"')
    k: int = Field(default=10, ge=1, le=MAX_HTTP_RESULTS, description="Number of results")
    min_score: float | None = Field(
        default=None, ge=-1, le=1, description="Cosine floor below which nothing counts (default per model)"
    )


_SEARCH_FORM = search_form_schema(EmbeddingsQuery)


def embeddings_state(request: Request) -> ServeState:
    """FastAPI dependency: the server's state, 503 when it serves no embeddings folder."""
    state: ServeState = request.app.state.xmodal
    if state.embeddings is None:
        raise HTTPException(503, "this server serves no embeddings folder (xmodal serve --embeddings DIR)")
    return state


Served = Annotated[ServeState, Depends(embeddings_state)]


@router.get("", summary="The embeddings folder: model, counts, and its index (spec, measured recall)")
async def status(state: Served) -> dict:
    served: ServedEmbeddings = state.embeddings
    manifest, info = served.index.manifest, served.index.info
    return {
        "model": manifest["model"]["name"],
        "counts": manifest["counts"],
        "index": {
            "spec": info["spec"],
            "params": info["params"],
            "count": info["count"],
            "recall_at_10": info["recall_at_10"],
            "bytes": info["index_bytes"],
            "memory_mapped": served.index.mapped,
        },
    }


@router.get("/search", response_model=SearchResponse, summary="Search by text", responses=_ERRORS)
async def search(state: Served, query: Annotated[EmbeddingsQuery, Query()]) -> JSONResponse:
    return await _search(state, query, None)


@router.post(
    "/search",
    response_model=SearchResponse,
    summary="Search with an uploaded example image (multipart), optionally with text",
    openapi_extra=_SEARCH_FORM,
    responses={**_ERRORS, 400: {"model": ErrorResponse}, 413: {"model": ErrorResponse}},
)
async def search_with_image(state: Served, request: Request) -> JSONResponse:
    query, image = await search_form(request, EmbeddingsQuery)
    return await _search(state, query, image)


async def _search(state: ServeState, query: EmbeddingsQuery, image: bytes | None) -> JSONResponse:
    used = [kind for kind, given in (("text", query.q), ("image", image)) if given]
    if not used:
        raise HTTPException(422, "give a text (q) or an image to search with")
    served: ServedEmbeddings = state.embeddings
    return await answer_search(
        state,
        query.q,
        used,
        lambda: search_embeddings(
            served.index, served.encoder, query.q, image, query.k, min_score=query.min_score, path_terms=False
        ),
    )
