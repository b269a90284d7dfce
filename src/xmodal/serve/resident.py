"""The resident side of `xmodal search`: a server that holds a library open answers the command
line's searches over a unix socket in the library folder, so a search costs a request instead of
opening the model and the index in a new process.

What a server needs to offer it (`xmodal serve` of a library):

* `router` included in its app, with the served `Library` at `app.state.xmodal.library` and a
  `app.state.xmodal.run(fn, *args)` coroutine running blocking work on its thread pool;
* `listening(app, folder)` around its run: it also serves the app on `<folder>/serve.sock` and
  records that in `<folder>/serve.json` (pid, catalog identity), removed when it stops.

The socket file takes the library folder's permissions: whoever may read the library may search
it, as they could with `xmodal search` itself. The request is `Library.search`'s keyword arguments
as JSON; the answer is `SearchResults.to_dict()`, or 422 with the error's message.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from xmodal.errors import XmodalError

log = logging.getLogger(__name__)

SOCKET_FILE = "serve.sock"
ADDRESS_FILE = "serve.json"
SEARCH_PATH = "/resident/search"
SEARCH_FIELDS = frozenset(
    {
        "text",
        "k",
        "type",
        "after",
        "before",
        "item",
        "path_glob",
        "tags",
        "min_score",
        "decay_days",
        "model",
        "moments",
        "language",
        "combine",
    }
)

router = APIRouter(include_in_schema=False)


@router.post(SEARCH_PATH)
async def search(request: Request) -> JSONResponse:
    state = request.app.state.xmodal
    try:
        params = await request.json()
        if not isinstance(params, dict) or set(params) - SEARCH_FIELDS:
            raise XmodalError(f"search parameters must be among {sorted(SEARCH_FIELDS)}")
        results = await state.run(lambda: state.library.search(**params))
    except (XmodalError, ValueError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=422)
    return JSONResponse(results.to_dict())


@contextmanager
def listening(app: FastAPI, folder: Path) -> Iterator[Path]:
    """Serve `app` on `<folder>/serve.sock` too, in a thread, while the block runs; the socket
    and its record in `<folder>/serve.json` are removed afterwards."""
    socket_path = folder / SOCKET_FILE
    address = folder / ADDRESS_FILE
    socket_path.unlink(missing_ok=True)  # a server killed before it could clean up
    config = uvicorn.Config(app, uds=str(socket_path), log_level="warning", lifespan="off", server_header=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="xmodal-resident", daemon=True)
    thread.start()
    try:
        while not server.started and thread.is_alive():
            thread.join(0.02)
        if not server.started:
            raise XmodalError(f"{socket_path}: cannot serve the library's local socket (see the log above)")
        library = app.state.xmodal.library
        record = {"pid": os.getpid(), "socket": SOCKET_FILE, "catalog_uuid": library.catalog.uuid}
        tmp = address.with_name(f".{ADDRESS_FILE}.{os.getpid()}")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, address)
        log.info("searches of %s from the command line are answered here (%s)", folder, socket_path)
        yield socket_path
    finally:
        server.should_exit = True
        thread.join(10)
        if _recorded_pid(address) == os.getpid():
            address.unlink(missing_ok=True)
        socket_path.unlink(missing_ok=True)


def serve_library(folder: str | os.PathLike, **settings: Any) -> None:
    """Hold the library at `folder` open and answer `xmodal search` on its local socket only (no
    TCP port) until interrupted: what `xmodal serve --library` does for the command line."""
    from xmodal.library import Library
    from xmodal.serve.app import create_app
    from xmodal.settings import Settings

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # terminated like interrupted: the socket and its record go
    with Library(folder) as library:
        app = create_app(Settings.from_env(**settings), library)  # with `router`: a library is served
        state = app.state.xmodal
        state.start()
        try:
            library.warm_up()
            with listening(app, Path(folder)):
                threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            state.stop()


def _recorded_pid(address: Path) -> int | None:
    try:
        return int(json.loads(address.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
