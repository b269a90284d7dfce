"""Running the app under uvicorn: `run_server(settings)` is what `xmodal serve` calls."""

from __future__ import annotations

from typing import Any

import uvicorn
from fastapi import FastAPI

from xmodal.errors import XmodalError
from xmodal.library import Library
from xmodal.serve.app import create_app
from xmodal.serve.security import check_bind
from xmodal.serve.state import ServedEmbeddings
from xmodal.settings import Settings


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app when shutdown begins: uvicorn waits for open responses
    before the app's own shutdown runs, and event streams would otherwise hold it up."""

    def __init__(self, config: uvicorn.Config, app: FastAPI):
        super().__init__(config)
        self.app_state = app.state.xmodal

    async def shutdown(self, sockets: Any = None) -> None:
        self.app_state.closing.set()
        await super().shutdown(sockets)


def make_server(app: FastAPI, settings: Settings, **config: Any) -> uvicorn.Server:
    """A uvicorn server for `app` with xmodal's choices: no X-Forwarded-For trust (a client could
    otherwise claim a trusted address), no server header, a bounded graceful shutdown."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "proxy_headers": False,
        "server_header": False,
        "timeout_graceful_shutdown": 10,
        "log_level": "info",
    }
    return _Server(uvicorn.Config(app, **(options | config)), app)


def run_server(settings: Settings, library: Library | None = None, embeddings: ServedEmbeddings | None = None) -> None:
    """Serve until interrupted; refuses an unsafe bind and unknown preload names before listening."""
    check_bind(settings)
    app = create_app(settings, library, embeddings)
    for source in settings.preload:
        app.state.xmodal.models.add_alias(source)
    server = make_server(app, settings)
    if library is None:
        server.run()
    else:
        from xmodal.serve.resident import listening

        with listening(app, library.folder):  # `xmodal search` of this library asks this server
            server.run()
    if not server.started:
        raise XmodalError(f"the server did not start on {settings.host}:{settings.port} (see the log above)")
