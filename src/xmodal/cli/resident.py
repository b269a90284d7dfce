"""`xmodal search` through a resident server: when `xmodal serve` holds the library open, its
answer comes over the library's local socket (see xmodal.serve.resident) instead of this process
opening the model and the index. Same results, same output; no server, a stale record, or a
query naming local files: None, and the search runs here."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
from pathlib import Path

from xmodal.errors import XmodalError

ADDRESS_FILE = "serve.json"  # what xmodal.serve.resident writes (not imported: it needs FastAPI)
SEARCH_PATH = "/resident/search"
CONNECT_TIMEOUT = 0.5


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(CONNECT_TIMEOUT)
        self.sock.connect(str(self._path))
        self.sock.settimeout(self.timeout)


def resident_search(folder: Path, params: dict, timeout: float = 120.0) -> dict | None:
    """The results (their dict form) of `Library.search(**params)` from the server holding the
    library at `folder`, or None when none answers. A search the server refuses raises XmodalError
    with its message, as a local search would."""
    try:
        record = json.loads((folder / ADDRESS_FILE).read_text())
        os.kill(int(record["pid"]), 0)  # the server recorded is alive
        address = folder / record["socket"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    connection = _UnixConnection(address, timeout)
    try:
        connection.request("POST", SEARCH_PATH, json.dumps(params), {"content-type": "application/json"})
        response = connection.getresponse()
        body = json.loads(response.read())
    except (OSError, http.client.HTTPException, ValueError):
        return None  # gone meanwhile, or not one of ours: search here
    finally:
        connection.close()
    if response.status == 422:
        raise XmodalError(body.get("error", "the server refused the search"))
    return body if response.status == 200 else None


def names_local_files(query: str | None) -> bool:
    """Whether a query may name files (`./ref.jpg`, `~/a.png`, `photo.heic`): those are found from
    this process's folder, so such queries are searched here."""
    return bool(query) and (any(mark in query for mark in "/~\\") or re.search(r"\.\w{2,5}\b", query) is not None)
