"""The FastAPI application: `create_app(settings, library=None)`.

Routes: the web page at `/`, the Immich-compatible `/ping` and `/predict`, `/healthz`, `/metrics`,
`/api/...` and the OpenAPI docs at `/docs` (assets served locally: works offline). Every route but
`/ping`, `/healthz`, the page's static files and `/api/session` needs the API key when one is set.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.middleware.cors import CORSMiddleware

from xmodal import __version__
from xmodal import settings as settings_module
from xmodal.errors import (
    DiskFullError,
    InvalidArgumentError,
    LibraryBusyError,
    LibraryError,
    LibraryNotFoundError,
    MediaError,
    ModelNotFoundError,
    XmodalError,
)
from xmodal.library import Library
from xmodal.serve import embeddings_api, immich, library_api, resident
from xmodal.serve.limits import BodyLimitMiddleware
from xmodal.serve.metrics import MetricsMiddleware
from xmodal.serve.schemas import MAX_HTTP_RESULTS, Health, ModelInfo, ModelsResponse, ServerInfo, SessionRequest
from xmodal.serve.security import COOKIE_NAME, SecurityHeadersMiddleware, key_matches, require_api_key
from xmodal.serve.state import ServedEmbeddings, ServeState
from xmodal.serve.thumbnails import THUMBNAIL_SIZES
from xmodal.settings import Settings

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
DOCS_ASSETS = Path(str(resources.files("fastapi_offline"))) / "static"
# The page needs nothing from elsewhere: scripts, styles and images come from this server only.
PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self'; script-src 'self';"
    " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_ERROR_STATUS: tuple[tuple[type[XmodalError], int], ...] = (
    (ModelNotFoundError, 404),
    (InvalidArgumentError, 422),
    (MediaError, 422),
    (DiskFullError, 507),
    (LibraryBusyError, 409),
    (LibraryNotFoundError, 503),
    (LibraryError, 409),
)


def create_app(
    settings: Settings | None = None, library: Library | None = None, embeddings: ServedEmbeddings | None = None
) -> FastAPI:
    """The server for `settings` (default: the process's) and `library` (shared by every request
    thread; the caller closes it) or an embeddings folder's index; neither serves machine learning only."""
    state = ServeState(settings or settings_module.current(), library, embeddings)
    app = FastAPI(
        title="xmodal",
        version=__version__,
        summary="Search a photo and video library by text or image; Immich-compatible machine learning.",
        lifespan=_lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.xmodal = state
    app.include_router(immich.public)
    app.include_router(immich.router)
    app.include_router(library_api.router)
    app.include_router(embeddings_api.router)
    if library is not None:  # `xmodal search` of this library asks this server (its local socket)
        app.include_router(resident.router)
    _add_service_routes(app)
    _add_page(app)
    _add_error_handlers(app)
    # add_middleware wraps: the last added is the outermost (metrics see every answer, 413s too).
    app.add_middleware(BodyLimitMiddleware, max_bytes=state.settings.max_upload_bytes)
    app.add_middleware(SecurityHeadersMiddleware)
    if state.settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(state.settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["x-api-key", "authorization", "content-type", "range"],
        )
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI):
    state: ServeState = app.state.xmodal
    state.start()
    sweeper: asyncio.Task | None = None
    try:
        for source in state.settings.preload:
            name = await state.run(state.models.preload, source, timeout=False)
            log.info("preloaded %s (served as %s)", source, name)
        if state.library is not None:
            await state.run(_warm_up, state.library, timeout=False)
        if state.settings.model_ttl > 0:
            sweeper = asyncio.create_task(_unload_idle_models(state))
        yield
    finally:
        if sweeper is not None:
            sweeper.cancel()
        state.stop()


def _warm_up(library: Library) -> None:
    """Load the library's model and index before the first search needs them (queries through the
    prepacked text tower a long-lived process wants); a library that cannot search yet (no model, a
    model folder gone) is served anyway, and its searches say why."""
    try:
        encoder = library.encoder()
        library.warm_up()
    except XmodalError as exc:
        log.warning("%s: searches will fail until this is fixed: %s", library.folder, exc)
        return
    log.info("serving library %s with model %s", library.folder, encoder.name)


async def _unload_idle_models(state: ServeState) -> None:
    interval = min(max(state.settings.model_ttl / 4, 0.05), 30.0)
    while True:
        await asyncio.sleep(interval)
        await state.run(state.models.evict_idle, timeout=False)


def _add_service_routes(app: FastAPI) -> None:
    state: ServeState = app.state.xmodal
    protected = [Depends(require_api_key)]

    @app.get("/healthz", response_model=Health, tags=["service"], summary="Liveness (no API key needed)")
    async def healthz() -> Health:
        return Health(version=__version__)

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics", dependencies=protected)
    async def metrics() -> Response:
        # Off the event loop: collecting reads the library's catalog.
        body = await state.run(generate_latest, state.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/info", response_model=ServerInfo, tags=["service"], dependencies=protected)
    async def info() -> ServerInfo:
        return ServerInfo(
            version=__version__,
            library=state.library is not None,
            max_results=MAX_HTTP_RESULTS,
            thumbnail_sizes=list(THUMBNAIL_SIZES),
            auth=bool(state.settings.api_key),
            max_upload_bytes=state.settings.max_upload_bytes,
            max_query_chars=state.settings.max_query_chars,
        )

    @app.get("/api/models", response_model=ModelsResponse, tags=["service"], dependencies=protected)
    async def models() -> ModelsResponse:
        loaded = [ModelInfo(**vars(s)) for s in state.models.states()]
        return ModelsResponse(ttl_seconds=state.settings.model_ttl, loaded=loaded)

    @app.post("/api/session", status_code=204, tags=["service"], summary="Check the API key and keep it in a cookie")
    async def open_session(body: SessionRequest, request: Request, response: Response) -> None:
        if not key_matches(state.settings, body.api_key):
            raise HTTPException(401, "wrong API key")
        if state.settings.api_key:
            response.set_cookie(
                COOKIE_NAME, body.api_key, httponly=True, samesite="strict", secure=request.url.scheme == "https"
            )

    @app.delete("/api/session", status_code=204, tags=["service"], summary="Forget the API key cookie")
    async def close_session(response: Response) -> None:
        response.delete_cookie(COOKIE_NAME, httponly=True, samesite="strict")

    @app.get("/openapi.json", include_in_schema=False, dependencies=protected)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=protected)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="xmodal API",
            swagger_js_url="/static/docs/swagger-ui-bundle.js",
            swagger_css_url="/static/docs/swagger-ui.css",
            swagger_favicon_url="/static/docs/favicon.png",
        )


def _add_page(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"content-security-policy": PAGE_CSP})

    app.mount("/static/docs", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(XmodalError)
    async def xmodal_error(request: Request, exc: XmodalError) -> JSONResponse:
        status = next((code for kind, code in _ERROR_STATUS if isinstance(exc, kind)), 500)
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its traceback by the server; the client learns only that it happened.
        return JSONResponse({"detail": "internal server error"}, status_code=500)
