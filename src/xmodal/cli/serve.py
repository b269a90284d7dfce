"""`xmodal serve`: the HTTP API, the web page and the Immich-compatible machine-learning endpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from xmodal import settings
from xmodal.cli.console import flag
from xmodal.cli.library import LIBRARY_HELP


def serve(
    library: Path = typer.Option(None, "--library", "-l", help=LIBRARY_HELP),
    host: str = typer.Option(None, "--host", help="Address to listen on (default 127.0.0.1, or $XMODAL_HOST)."),
    port: int = typer.Option(None, "--port", min=1, max=65535, help="Port (default 8000, or $XMODAL_PORT)."),
    api_key: str = typer.Option(
        None,
        "--api-key",
        help="Key clients must send (x-api-key header or Authorization: Bearer); needed to listen beyond"
        " loopback. $XMODAL_API_KEY keeps it out of the process list.",
    ),
    ml_only: bool = flag("Serve only machine learning (Immich's /ping and /predict), without a library.", "--ml-only"),
    embeddings: Path = typer.Option(
        None,
        "--embeddings",
        help="Serve an embeddings folder's built index (xmodal build-index) at /api/embeddings instead of a library.",
    ),
    preload: list[str] = typer.Option(
        None, "--preload", help="Model to load at start and keep loaded: a known name or a model folder (repeatable)."
    ),
    model_ttl: float = typer.Option(
        None, "--model-ttl", min=0, help="Seconds an unused model stays loaded; 0 = forever (default 300)."
    ),
    max_upload: str = typer.Option(None, "--max-upload", help="Largest request body, e.g. 64M (default 64M)."),
    request_timeout: float = typer.Option(
        None, "--request-timeout", min=0, help="Seconds a request may compute before it gets 504; 0 = no limit."
    ),
    cors_origin: list[str] = typer.Option(
        None, "--cors-origin", help="Origin allowed to call the API from a browser (repeatable; default: none)."
    ),
    trusted_network: list[str] = typer.Option(
        None,
        "--trusted-network",
        help="Client network that needs no API key, e.g. the Docker network of an Immich server (repeatable).",
    ),
) -> None:
    """Serve a library over HTTP: a web page to search it at /, a JSON API with OpenAPI docs at /docs,
    /metrics, and an Immich-compatible machine-learning endpoint (point IMMICH_MACHINE_LEARNING_URL
    at it). The library must exist (xmodal index PATH creates one); --ml-only serves without one, and
    --embeddings DIR serves an embeddings folder's index (xmodal build-index) instead."""
    from xmodal.serve import run_server

    config = settings.configure(
        library=library,
        host=host,
        port=port,
        api_key=api_key,
        preload=preload or None,
        model_ttl=model_ttl,
        max_upload_bytes=settings.parse_size(max_upload, "--max-upload") if max_upload is not None else None,
        request_timeout=request_timeout,
        cors_origins=cors_origin or None,
        trusted_networks=trusted_network or None,
    )
    if embeddings is not None and (ml_only or library is not None):
        raise typer.BadParameter("give a library, --embeddings DIR or --ml-only: one of them")
    if ml_only or embeddings is not None:
        run_server(config, embeddings=_open_embeddings(embeddings) if embeddings is not None else None)
        return
    from xmodal.cli.console import say
    from xmodal.errors import LibraryNotFoundError, XmodalError
    from xmodal.library import Library

    with Library(config.library_dir) as served:
        if not served.exists:
            missing = LibraryNotFoundError(served.folder)
            raise XmodalError(f"{missing}; or serve machine learning only: xmodal serve --ml-only")
        items = ", ".join(f"{n} {kind}s" for kind, n in served.status()["items"].items() if n)
        say(f"serving library {served.folder} ({items or 'no items yet'})", err=True)
        run_server(config, library=served)


def _open_embeddings(folder: Path):
    """The folder's index opened memory-mapped and its model loaded, before the server listens."""
    from xmodal.cli.console import say
    from xmodal.scale.index import ShardedIndex, query_model
    from xmodal.serve.state import ServedEmbeddings

    index = ShardedIndex(folder)
    served = ServedEmbeddings(index, query_model(index))
    mapped = "memory-mapped" if index.mapped else "in memory"
    say(f"serving embeddings {index.folder} ({len(index):,} vectors, {index.info['spec']}, {mapped})", err=True)
    return served
